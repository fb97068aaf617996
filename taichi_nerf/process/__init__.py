"""`taichi-nerf process`: a phone video or a folder of photos -> a COLMAP dataset folder.

``process(input, out)`` writes ``out/images/`` (sharp video frames or the photos),
``out/sparse/0/{cameras,images,points3D}.bin`` (pycolmap's SIFT, matching and incremental
mapping, one shared camera) and ``out/process.json`` (what came out and how long each stage
took), a folder that ``taichi-nerf train out`` reads as COLMAP data. It sits at the data
layer: numpy, imageio and ``taichi_nerf.data`` / ``atomic`` only; pycolmap and imageio-ffmpeg
(the optional ``process`` extra) are imported when a function needs them.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Union

from taichi_nerf.atomic import atomic_write_json

from .errors import MissingDependency, ProcessError
from .frames import VIDEO_EXTENSIONS, copy_images, extract_video_frames, image_folder, \
    is_video, list_images
from .sfm import CAMERA_MODELS, MATCHING, MIN_REGISTERED, Stages, load_pycolmap, run_sfm

__all__ = ["CAMERA_MODELS", "DEFAULT_FRAMES", "MATCHING", "MissingDependency", "ProcessError",
           "REPORT_NAME", "needs_processing", "process", "process_for_training"]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_FRAMES = 100
REPORT_NAME = "process.json"
# what process writes into --out; --force replaces exactly these, nothing else of the folder
OUTPUTS = ("images", "sparse", "database.db", REPORT_NAME, ".sfm-models")


def _tqdm(enabled: bool, desc: str) -> Callable[[Iterable, int], Iterable]:
    def wrap(it: Iterable, total: int) -> Iterable:
        if not enabled:
            return it
        from tqdm import tqdm
        return tqdm(it, total=total, desc=desc, unit="frame", leave=False)
    return wrap


def _check_input(path: Path) -> str:
    """'video' or 'images' for a valid input; ProcessError naming the problem otherwise."""
    if not path.exists():
        raise ProcessError(f"{path}: not found (give a video file or a folder of photos)")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ProcessError(f"{path}: not a video file (expected "
                               f"{', '.join(VIDEO_EXTENSIONS[:5])}, ...) or a folder of photos")
        return "video"
    if image_folder(path) is None:
        raise ProcessError(f"{path}: no images in this folder (nor in its images/ subfolder); "
                           f"expected .jpg or .png photos, or give a video file")
    return "images"


def _prepare_out(out: Path, source: Path, force: bool) -> None:
    """Make ``out`` ready: refuse a non-empty folder unless force, then clear process's own
    outputs in it; never a folder that holds the input."""
    if out.exists() and not out.is_dir():
        raise ProcessError(f"{out}: exists and is not a folder; choose another --out")
    for name in OUTPUTS:
        target = (out / name).resolve()
        if source == target or target in source.parents:
            raise ProcessError(f"{source}: the input lies inside --out's {name}, which process "
                               f"writes; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ProcessError(f"{out}: folder exists and is not empty; choose another --out, "
                               f"or add --force to replace its images/, sparse/ and "
                               f"{REPORT_NAME}")
        for name in OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ProcessError(f"{out}: cannot create the output folder ({e.strerror or e})") \
            from None


def process(input: PathLike, out: PathLike, *, frames: Optional[int] = None, downscale: int = 1,
            matching: Optional[str] = None, camera_model: str = "SIMPLE_RADIAL",
            force: bool = False, keep_database: bool = False, progress: bool = True,
            verbose: bool = False, say: Callable[[str], None] = print) -> Dict[str, Any]:
    """Video or photo folder ``input`` -> COLMAP folder ``out`` (images/, sparse/0/*.bin,
    process.json) -> the report written to process.json. frames: how many sharp frames a
    video gives (default 100; photos are all used); matching: sequential (video default) or
    exhaustive (photos default); verbose: COLMAP's own log lines too. ProcessError (one line,
    with what to try) on any failure."""
    source = Path(input).expanduser().resolve()
    out = Path(out).expanduser()
    kind = _check_input(source)
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int)
                               or frames < MIN_REGISTERED):
        raise ProcessError(f"--frames must be a whole number >= {MIN_REGISTERED}, got {frames}")
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise ProcessError(f"--downscale must be a whole number >= 1, got {downscale}")
    if matching is not None and matching not in MATCHING:
        raise ProcessError(f"--matching must be one of {', '.join(MATCHING)}, got {matching}")
    if camera_model not in CAMERA_MODELS:
        raise ProcessError(f"--camera-model {camera_model}: not one the COLMAP loader reads; "
                           f"choose {', '.join(CAMERA_MODELS)}")
    pycolmap = load_pycolmap()  # a missing dependency fails before any work is done
    if kind == "video":
        from .frames import _ffmpeg
        _ffmpeg()
    matching = matching or ("sequential" if kind == "video" else "exhaustive")
    photos_dir = image_folder(source) if kind == "images" else None
    _prepare_out(out, photos_dir or source, force)
    say = say if progress else (lambda s: None)

    t_start = time.perf_counter()
    stages = Stages(4, say)
    if kind == "video":
        n = frames or DEFAULT_FRAMES
        fs = stages.run("frames", lambda: extract_video_frames(
            source, out / "images", n, downscale, _tqdm(progress, "decoding")),
            f"the sharpest of each of {n} windows")
    else:
        photos = list_images(photos_dir)
        fs = stages.run("frames", lambda: copy_images(
            photos, out / "images", downscale, _tqdm(progress, "copying")),
            f"{len(photos)} photos")
    if len(fs.names) < MIN_REGISTERED:
        raise ProcessError(f"{source}: only {len(fs.names)} image(s); structure from motion "
                           f"needs at least {MIN_REGISTERED}"
                           + (" (the video is too short; try a longer clip)"
                              if kind == "video" else " (add more photos)"))

    report: Dict[str, Any] = {
        "input": str(source), "kind": kind, "frames_extracted": len(fs.names),
        "image_size": list(fs.size), "downscale": downscale, "matching": matching,
        "camera_model": camera_model, "pycolmap_version": str(pycolmap.__version__),
    }
    if kind == "video":
        report["video"] = {"frames": fs.video_frames, "fps": fs.fps,
                           "source_frames": fs.source_frames,
                           "times": [round(t, 4) for t in fs.times]}
    try:
        with _quiet_colmap(pycolmap, verbose):
            res = run_sfm(out, fs.names, matching, camera_model, stages)
    except ProcessError as e:
        # the images stay for a look; the report says what failed; a rerun needs --force
        report.update(error=str(e), seconds=dict(stages.seconds))
        atomic_write_json(out / REPORT_NAME, report)
        raise ProcessError(str(e) if force else f"{e} (rerun into this --out with --force)") \
            from None
    finally:
        if not keep_database:
            # the database holds every image's SIFT descriptors (~100 MB for 100 frames) and
            # every match: nothing train reads, and sparse/0 has all it needs; kept on request
            # (--keep-database) for COLMAP's GUI or a rerun of one stage
            for p in (out / "database.db", out / "database.db-wal", out / "database.db-shm"):
                if p.exists():
                    p.unlink()
    seconds = dict(stages.seconds)
    seconds["total"] = round(time.perf_counter() - t_start, 3)
    report.update({
        "images_registered": len(res.registered), "registered": res.registered,
        "not_registered": res.unregistered, "dropped_with_smaller_models": res.dropped,
        "model_sizes": res.model_sizes,
        "mean_reprojection_error": round(res.reprojection_error, 4),
        "sparse_points": res.points, "camera_params": res.camera_params, "seconds": seconds,
    })
    if kind == "video":
        # frames a fraction of a second apart cannot turn this much: mis-registered poses
        report["suspect_pose_jumps"] = [{"from": a, "to": b, "degrees": d}
                                        for a, b, d in res.rotation_jumps]
    atomic_write_json(out / REPORT_NAME, report)
    say(f"registered {len(res.registered)} of {len(fs.names)} images, {res.points} sparse "
        f"points, mean reprojection error {res.reprojection_error:.2f} px "
        f"({seconds['total']:.0f} s); wrote {out}")
    if res.dropped:
        say(f"structure from motion made {len(res.model_sizes)} models "
            f"({', '.join(map(str, res.model_sizes))} images); kept the largest, dropped "
            f"{len(res.dropped)} image(s) registered only in the others: "
            f"{_names(res.dropped)}")
    if res.unregistered:
        say(f"not registered ({len(res.unregistered)}): {_names(res.unregistered)}")
    if kind == "video" and res.rotation_jumps:
        a, b, d = max(res.rotation_jumps, key=lambda j: j[2])
        say(f"warning: the camera turns by more than 90 degrees between consecutive frames "
            f"{len(res.rotation_jumps)} time(s) (largest {a} -> {b}: {d:.0f} degrees): some "
            f"poses are likely wrong (a symmetric or repetitive scene); see "
            f"suspect_pose_jumps in {REPORT_NAME}. More varied texture in view helps")
    return report


def _names(names, shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)"
                                       if len(names) > shown else "")


class _quiet_colmap:
    """COLMAP's own log lines (thousands per run) off while process runs, unless verbose."""

    def __init__(self, pycolmap: Any, verbose: bool) -> None:
        self.logging, self.quiet = pycolmap.logging, not verbose

    def __enter__(self) -> None:
        self.saved = self.logging.minloglevel
        if self.quiet:
            # fatal only: a failed stage comes back as process's own one-line ProcessError,
            # and COLMAP's "E... Failed to create any sparse model" line before it is noise
            self.logging.minloglevel = 3

    def __exit__(self, *exc: Any) -> None:
        self.logging.minloglevel = self.saved


def needs_processing(path: PathLike) -> bool:
    """True when ``path`` is a video file, or a folder with photos but no dataset layout that
    taichi_nerf.data recognises: what `train` runs process on first."""
    from taichi_nerf.data import DataError, detect_format
    p = Path(path)
    if p.is_file():
        return is_video(p)
    if not p.is_dir():
        return False
    try:
        detect_format(p)
        return False
    except DataError:
        return image_folder(p) is not None


def process_for_training(input: PathLike, data: PathLike, progress: bool = True,
                         say: Callable[[str], None] = print) -> Path:
    """Process ``input`` into the folder ``data`` for `train` (or reuse an earlier result there
    for the same input, e.g. on --resume) -> the COLMAP folder."""
    from taichi_nerf.data.colmap import find_model
    source, data = Path(input).expanduser().resolve(), Path(data)
    report = data / REPORT_NAME
    try:
        done = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        done = {}
    if done.get("input") == str(source) and "error" not in done and find_model(data):
        if progress:
            say(f"{source.name} was processed into {data} before; training on that")
        return data
    if progress:
        say(f"{source} is a {'video' if source.is_file() else 'folder of photos'}, not a "
            f"dataset: running `taichi-nerf process` into {data} first")
    try:
        process(source, data, force=True, progress=progress, say=say)
    except ProcessError as e:
        if source.is_file():
            raise
        # the folder may be a dataset gone wrong rather than photos: say both readings
        from taichi_nerf.data.loader import EXPECTED_FILES
        raise ProcessError(f"{source}: unknown dataset format (expected {EXPECTED_FILES}); "
                           f"taken as a folder of photos: {e}") from None
    return data
