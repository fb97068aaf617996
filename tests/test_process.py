"""`taichi-nerf process`: video / photos -> COLMAP folder (frames, pycolmap SfM, report, errors).

The end-to-end test renders an orbit of the built-in primitives standing on a textured floor
with the project's own ray tracer, writes it as an mp4, runs the real pipeline (imageio-ffmpeg
decoding, pycolmap SIFT / matching / mapping: nothing mocked), aligns the recovered camera
centres to the true ones by a similarity transform and trains briefly on the result.
pycolmap and imageio-ffmpeg are in the `test` extra, so none of this is skipped in CI.
"""
import json
import math
import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import taichi_nerf as tn
from taichi_nerf.nn import runtime
from taichi_nerf.cli import main
from taichi_nerf.data import detect_format
from taichi_nerf.data.builtin import PRIMITIVES, Primitive, look_at, render_view
from taichi_nerf.process import MissingDependency, ProcessError, needs_processing, process
from taichi_nerf.process.frames import extract_video_frames, select_sharpest, sharpness

from conftest import assert_one_line_error, cli

# ------------------------------------------------------------------ the synthetic capture
# the built-in primitives on a checkered floor (a box under them): the floor gives SIFT
# texture all around and a ground plane; the sky is black. On the primitives alone (black
# all around) the mapper once joined two halves of the orbit at a wrong pose.
FLOOR = Primitive("floor", "box", (0.0, 0.0, -0.8), (0.0, 0.0, 0.0), (2.5, 2.5, 0.1),
                  (0.85, 0.80, 0.65), (0.30, 0.40, 0.60), "checker3d", (2.5, 2.5), 0.0, 1.0)
RADIUS = 3.2
N_FRAMES = 40  # 40 frames over 0.4 turn: 3.6 degrees apart, every frame registers
TURN = 0.4
RES = 256  # SIFT finds ~1000 features a frame at this size
# measured (pycolmap 4.2.1, seed 0, 2 threads): 40 of 40 registered; camera centres after a
# similarity alignment: RMS 0.79 % and max 1.3 % of the orbit radius
MIN_REGISTERED = 38
MAX_RMS_ERROR = 0.03  # of the radius
MAX_ERROR = 0.06
# training on the result: 64 px (--downscale 4), 300 steps, 5 held-out frames. Measured over 7
# runs 16.7-17.6 dB, SSIM 0.53-0.58 (SfM's output varies a little with thread timing);
# the same training with every image moved 4 frames (14 degrees) off its pose: 16.1 dB, SSIM
# 0.42. The floors leave margin for that variation; SSIM separates right from wrong poses
# better than PSNR this early in training.
TRAIN_STEPS = 300
PSNR_FLOOR = 15.5
SSIM_FLOOR = 0.47


def orbit_positions(n: int = N_FRAMES) -> np.ndarray:
    """(n, 3) camera centres on part of a circle around the primitives, gently bobbing."""
    phi = 2 * math.pi * TURN * np.arange(n) / n
    return np.stack([RADIUS * np.cos(phi), RADIUS * np.sin(phi),
                     RADIUS * (0.35 + 0.1 * np.sin(2 * phi))], axis=1)


@pytest.fixture(scope="module")
def orbit_frames():
    """(N, RES, RES, 3) uint8 frames of the orbit and the true camera centres (N, 3)."""
    runtime.init("cpu")
    pos = orbit_positions()
    frames = []
    for p in pos:
        rgba, _ = render_view(look_at(p), RES, RES, primitives=PRIMITIVES + (FLOOR,))
        rgb = rgba[..., :3] * rgba[..., 3:]  # over a black sky
        frames.append(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8))
    return np.stack(frames), pos


@pytest.fixture(scope="module")
def orbit_video(orbit_frames, tmp_path_factory):
    """(mp4 path, true camera centres (N, 3)) of the rendered orbit."""
    frames, pos = orbit_frames
    path = tmp_path_factory.mktemp("orbit") / "orbit.mp4"
    iio.imwrite(path, frames, plugin="FFMPEG", fps=10, quality=9)
    return path, pos


@pytest.fixture(scope="module")
def processed(orbit_video, tmp_path_factory):
    """(DATA folder, stdout) of `taichi-nerf process orbit.mp4 --out DATA --frames 40`."""
    video, _ = orbit_video
    data = tmp_path_factory.mktemp("processed") / "data"
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["process", str(video), "--out", str(data), "--frames", str(N_FRAMES)])
    assert rc == 0, buf.getvalue()
    return data, buf.getvalue()


def umeyama(src: np.ndarray, dst: np.ndarray):
    """Similarity (s, R, t) minimising sum |s R src_i + t - dst_i|^2 (Umeyama 1991)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sv, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2, 2] = -1.0  # a rotation, never a reflection
    r = u @ d @ vt
    s = np.trace(np.diag(sv) @ d) / ((a ** 2).sum() / len(src))
    return s, r, md - s * r @ ms


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    r = q * np.sign(np.linalg.det(q))
    s, r2, t = umeyama(src, 2.5 * src @ r.T + [1.0, -2.0, 0.5])
    assert s == pytest.approx(2.5) and np.allclose(r2, r) and np.allclose(t, [1.0, -2.0, 0.5])


# ------------------------------------------------------------------ frame selection
def _box_blur(img: np.ndarray, k: int = 7) -> np.ndarray:
    pad = np.pad(img.astype(np.float32), ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), "edge")
    c = pad.cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    h, w = img.shape[:2]
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return np.clip(np.rint(s / (k * k)), 0, 255).astype(np.uint8)


def test_sharpness_ranks_blurred_below_sharp():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    gray = lambda a: a.astype(np.float32).mean(2)  # noqa: E731
    assert sharpness(gray(img)) > 10 * sharpness(gray(_box_blur(img)))
    assert select_sharpest([1, 5, 2, 9, 0, 3, 4], 3) == [1, 3, 6]  # windows [0,2) [2,4) [4,7)


def test_video_frame_selection_picks_the_sharp_frame_of_each_window(tmp_path):
    """61 frames, 10 windows of 6-7 frames: all blurred with a box filter but one per window
    at a random place; the picked frames are exactly those, spread over the clip."""
    rng = np.random.default_rng(2)
    n, windows = 61, 10
    bounds = (np.arange(windows + 1) * n) // windows
    sharp = [int(rng.integers(bounds[k], bounds[k + 1])) for k in range(windows)]
    base = rng.integers(0, 256, (128 // 4, 160 // 4, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(base, 4, 0), 4, 1)  # 4-pixel blocks survive H.264
    frames = []
    for i in range(n):
        f = np.roll(base, i, axis=1)  # every frame differs (a moving camera)
        frames.append(f if i in sharp else _box_blur(f))
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, np.stack(frames), plugin="FFMPEG", fps=30, quality=10)
    out = tmp_path / "images"
    out.mkdir()
    fs = extract_video_frames(video, out, windows)
    assert fs.source_frames == sharp
    assert len(fs.names) == windows and fs.video_frames == n
    assert fs.names == sorted(fs.names)  # name order = time order (the COLMAP loader sorts)
    assert sorted(p.name for p in out.iterdir()) == fs.names
    assert iio.imread(out / fs.names[0]).shape == (128, 160, 3) and fs.size == (160, 128)
    # --downscale K shrinks what is written, not what is scored
    out2 = tmp_path / "half"
    out2.mkdir()
    fs2 = extract_video_frames(video, out2, windows, downscale=2)
    assert fs2.source_frames == sharp and iio.imread(out2 / fs2.names[0]).shape == (64, 80, 3)


# ------------------------------------------------------------------ the whole chain
def test_process_recovers_the_orbit(processed, orbit_video):
    data, stdout = processed
    _, true_pos = orbit_video
    assert detect_format(data) == "colmap"
    for f in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (data / "sparse" / "0" / f).is_file(), f
    assert not (data / "database.db").exists()  # removed unless --keep-database
    report = json.loads((data / "process.json").read_text())
    assert report["frames_extracted"] == N_FRAMES and report["kind"] == "video"
    assert report["images_registered"] >= MIN_REGISTERED
    assert report["images_registered"] + len(report["not_registered"]) == N_FRAMES
    assert report["sparse_points"] > 500 and 0 < report["mean_reprojection_error"] < 1.5
    assert set(report["seconds"]) == {"frames", "features", "matching", "mapping", "total"}
    assert report["pycolmap_version"] and report["matching"] == "sequential"
    assert report["suspect_pose_jumps"] == []  # 3.6 degrees a frame: no jump to flag
    for k in range(1, 5):
        assert f"stage {k}/4" in stdout
    assert f"registered {report['images_registered']} of {N_FRAMES}" in stdout

    import pycolmap  # an independent reader of what process wrote
    rec = pycolmap.Reconstruction(str(data / "sparse" / "0"))
    names = sorted(im.name for im in rec.images.values())
    est = np.array([next(im for im in rec.images.values() if im.name == nm).projection_center()
                    for nm in names])
    true = true_pos[[int(nm[len("frame_"):-len(".jpg")]) for nm in names]]
    s, r, t = umeyama(est, true)
    err = np.linalg.norm(s * est @ r.T + t - true, axis=1) / RADIUS
    assert math.sqrt((err ** 2).mean()) < MAX_RMS_ERROR, err
    assert err.max() < MAX_ERROR, err


def test_training_on_the_processed_folder(processed, tmp_path):
    data, _ = processed
    result = tn.train(data, out=tmp_path / "run", steps=TRAIN_STEPS, downscale=4, holdout=8,
                      arch="cpu", progress=False, log2_table=14, target_samples=1 << 13,
                      occ_resolution=64, occ_cells_per_update=1 << 16, occ_warmup_steps=32)
    assert result.metrics["views"] == 5  # every 8th of 40 frames held out
    print("trained on the processed orbit:", result.metrics["psnr"], result.metrics["ssim"])
    assert result.metrics["psnr"] >= PSNR_FLOOR, result.metrics
    assert result.metrics["ssim"] >= SSIM_FLOOR, result.metrics


def test_train_on_a_video_uses_the_processed_folder_in_the_run(processed, orbit_video, tmp_path,
                                                             capsys):
    """`train VIDEO --out RUN` trains on RUN/data; an earlier process of the same video there
    is reused (as on --resume) instead of running SfM again."""
    data, _ = processed
    video, _ = orbit_video
    run = tmp_path / "run"
    shutil.copytree(data, run / "data")
    assert needs_processing(video) and not needs_processing(data)
    rc, out, err = cli(capsys, "train", video, "--out", run, "--steps", "1", "--downscale", "4",
                       "--log2-table", "12", "--arch", "cpu")
    assert rc == 0, err
    assert "was processed into" in out and str(run / "data") in out
    assert json.loads((run / "metrics.json").read_text())["steps"] == 1


def test_photo_folder_is_matched_exhaustively(orbit_frames, tmp_path):
    """12 photos (PNG, the first 12 orbit frames, 43 degrees of arc) -> all registered, the
    photos copied unchanged, exhaustive matching, the report has no video part."""
    frames, _ = orbit_frames
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        iio.imwrite(photos / f"IMG_{i:04d}.png", frames[i])
    report = process(photos, tmp_path / "data", progress=False)
    assert report["kind"] == "images" and report["matching"] == "exhaustive"
    assert report["images_registered"] == 12 and "video" not in report
    assert (tmp_path / "data" / "images" / "IMG_0003.png").read_bytes() == \
        (photos / "IMG_0003.png").read_bytes()
    assert detect_format(tmp_path / "data") == "colmap"


def test_photos_with_an_exif_rotation_are_written_upright(tmp_path):
    from PIL import Image

    from taichi_nerf.process.frames import copy_images

    photos = tmp_path / "photos"
    photos.mkdir()
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(photos / "a.jpg", exif=exif, quality=95)
    Image.fromarray(np.rot90(pixels, -1).copy()).save(photos / "b.jpg", quality=95)
    out = tmp_path / "images"
    out.mkdir()
    fs = copy_images(sorted(photos.iterdir()), out)
    assert fs.size == (20, 40) and fs.names == ["a.jpg", "b.jpg"]
    a, b = iio.imread(out / "a.jpg"), iio.imread(out / "b.jpg")
    assert a.shape == b.shape == (40, 20, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3  # a is now upright like b
    Image.fromarray(pixels).save(photos / "c.jpg")  # 40x20 without a rotation: another size
    with pytest.raises(ProcessError, match="one size"):
        copy_images(sorted(photos.iterdir()), tmp_path / "images")


# ------------------------------------------------------------------ bad input
def test_missing_input(tmp_path, capsys):
    rc, _, err = cli(capsys, "process", tmp_path / "nope.mp4", "--out", tmp_path / "d")
    assert_one_line_error(rc, err, "process", "nope.mp4", "not found")


def test_folder_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    rc, _, err = cli(capsys, "process", tmp_path / "empty", "--out", tmp_path / "d")
    assert_one_line_error(rc, err, "process", "no images")


def test_unreadable_video_and_not_a_video(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\0not a video" * 100)
    rc, _, err = cli(capsys, "process", bad, "--out", tmp_path / "d")
    assert_one_line_error(rc, err, "process", "broken.mp4", "cannot read the video")
    txt = tmp_path / "clip.txt"
    txt.write_text("x")
    with pytest.raises(ProcessError, match="not a video file"):
        process(txt, tmp_path / "d2", progress=False)


def _noise_photos(folder: Path, n: int = 5) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):  # independent noise: features everywhere, nothing that matches
        iio.imwrite(folder / f"img{i}.png", rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    return folder


def test_existing_output_needs_force(tmp_path, capsys):
    photos = _noise_photos(tmp_path / "photos")
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = cli(capsys, "process", photos, "--out", out)
    assert_one_line_error(rc, err, "process", "not empty", "--force")
    inner = _noise_photos(out / "images")
    with pytest.raises(ProcessError, match="inside --out"):  # --force must not eat the input
        process(inner, out, force=True, progress=False)
    with pytest.raises(ProcessError, match="inside --out"):  # nor when found as DATA/images
        process(out, out, force=True, progress=False)
    assert (inner / "img0.png").is_file() and (out / "keep.txt").is_file()


def test_sfm_that_registers_nothing_fails_clearly(tmp_path, capsys):
    photos = _noise_photos(tmp_path / "photos")
    rc, _, err = cli(capsys, "process", photos, "--out", tmp_path / "d", "--quiet")
    line = assert_one_line_error(rc, err, "process", "structure from motion", "try",
                                 "--frames", "--camera-model")
    assert "exhaustive" not in line.split("try", 1)[1]  # photos were matched exhaustively
    report = json.loads((tmp_path / "d" / "process.json").read_text())
    assert "structure from motion" in report["error"] and report["frames_extracted"] == 5


def test_train_on_bare_photos_runs_process_first(tmp_path, capsys):
    """A folder of photos without a dataset layout goes through process into RUN/data; here
    SfM fails, and train says why in one line."""
    photos = _noise_photos(tmp_path / "photos")
    assert needs_processing(photos)
    rc, out, err = cli(capsys, "train", photos, "--out", tmp_path / "run", "--steps", "1",
                       "--arch", "cpu", "--quiet")
    assert_one_line_error(rc, err, "train", "structure from motion", str(tmp_path / "run"))
    assert (tmp_path / "run" / "data" / "images" / "img0.png").is_file()


def test_without_pycolmap_the_pip_command_is_printed(tmp_path, capsys, monkeypatch):
    photos = _noise_photos(tmp_path / "photos")
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # `import pycolmap` raises ImportError
    rc, _, err = cli(capsys, "process", photos, "--out", tmp_path / "d")
    assert_one_line_error(rc, err, "process", "pycolmap", 'pip install "taichi-nerf[process]"')
    assert not (tmp_path / "d").exists()  # nothing written before the check
    with pytest.raises(MissingDependency):
        process(photos, tmp_path / "d", progress=False)


def test_bad_options(tmp_path):
    photos = _noise_photos(tmp_path / "photos")
    with pytest.raises(ProcessError, match="--frames"):
        process(photos, tmp_path / "d", frames=2)
    with pytest.raises(ProcessError, match="--downscale"):
        process(photos, tmp_path / "d", downscale=0)
    with pytest.raises(ProcessError, match="OPENCV_FISHEYE.*choose"):
        process(photos, tmp_path / "d", camera_model="OPENCV_FISHEYE")


def test_process_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["process", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--out", "--frames", "--matching", "--camera-model", "--downscale", "--force"):
        assert flag in out
