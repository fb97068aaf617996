"""The `taichi-nerf` command line (the contract in README.md and `--help`): train, eval, render, help, bad input.

Everything runs in-process through ``main(argv)`` (the exit code it returns is
what the console script exits with), except one subprocess test of the
installed entry point. Bad input must give a non-zero exit (2) and exactly one
stderr line ``taichi-nerf <cmd>: error: <file>: <problem>``, never a traceback.
The bad datasets are copies of the 32px built-in scene with one thing broken.
"""
import contextlib
import gc
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.nn import runtime
from taichi_nerf.nn.checkpoint import load_checkpoint
from taichi_nerf.cli import main
from taichi_nerf.data import builtin

from conftest import assert_one_line_error, cli

RES = 32
TRAIN_STEPS = 3
# Small hash table, CPU, no progress bar: a run trains in a few seconds on 2 cores.
FAST = ["--log2-table", "12", "--arch", "cpu", "--quiet"]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def scene32(tmp_path_factory):
    """The built-in scene at 32x32 in a temporary cache (train 80, val 10, test 10 views)."""
    runtime.init("cpu")
    return builtin.ensure_builtin_scene(RES, cache_dir=tmp_path_factory.mktemp("cli-cache"),
                                        progress=False)


@pytest.fixture(scope="session")
def trained_run(scene32, tmp_path_factory):
    """(RUN folder, stdout) of `taichi-nerf train <scene32> --out RUN --steps 3`."""
    run = tmp_path_factory.mktemp("cli-run")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", str(scene32), "--out", str(run), "--steps", str(TRAIN_STEPS), *FAST])
    assert rc == 0, buf.getvalue()
    return run, buf.getvalue()


@pytest.fixture
def data(scene32, tmp_path):
    """A private, valid copy of the 32px scene, to break one thing in."""
    d = tmp_path / "scene"
    shutil.copytree(scene32, d)
    return d


def n_frames(folder: Path, split: str) -> int:
    return len(json.loads((folder / f"transforms_{split}.json").read_text())["frames"])


def edit_json(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))  # json writes NaN as the NaN token, which json.load reads


# ------------------------------------------------------------------ help / entry point
def test_console_script_help_lists_commands():
    exe = Path(sys.executable).with_name("taichi-nerf")
    cmd = str(exe) if exe.exists() else shutil.which("taichi-nerf")
    assert cmd, "console script taichi-nerf is not installed"
    p = subprocess.run([cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for sub in ("train", "eval", "render", "bench"):
        assert sub in p.stdout


def test_train_help_mentions_budget_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--steps" in out and "--time" in out


def test_steps_and_time_are_exclusive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--steps", "3", "--time", "1"])
    assert e.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


# ------------------------------------------------------------------ train
def test_train_writes_metrics(trained_run):
    run, stdout = trained_run
    assert (run / "checkpoint.npz").is_file()
    m = json.loads((run / "metrics.json").read_text())
    for key in ("psnr", "ssim", "steps", "train_seconds", "samples_per_second"):
        assert key in m, key
    assert m["steps"] == TRAIN_STEPS
    assert math.isfinite(m["psnr"]) and 0 < m["ssim"] <= 1
    assert m["train_seconds"] > 0 and m["samples_per_second"] > 0
    assert m["views"] == 10  # validated on the 10 val views of the scene
    assert f"done: {TRAIN_STEPS} steps" in stdout and "metrics.json" in stdout


def _missing_folder(d):
    shutil.rmtree(d)
    return d, ["dataset folder not found"]


def _empty_folder(d):
    shutil.rmtree(d)
    d.mkdir()
    return d, ["unknown dataset format"]


def _random_files(d):
    shutil.rmtree(d)
    d.mkdir()
    (d / "notes.txt").write_text("not a dataset\n")
    (d / "picture.png").write_bytes(np.random.default_rng(0).bytes(200))
    (d / "sub").mkdir()
    return d, ["unknown dataset format"]


def _malformed_json(d):
    p = d / "transforms_train.json"
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    return p, ["malformed JSON"]


def _malformed_val_json(d):
    # a broken val split must be reported, not silently replaced by the test split
    p = d / "transforms_val.json"
    p.write_text('{"camera_angle_x": 0.69, "frames": [')
    return p, ["malformed JSON"]


def _missing_image(d):
    edit_json(d / "transforms_train.json",
              lambda m: m["frames"][3].update(file_path="./train/missing.png"))
    return d / "train" / "missing.png", ["image file not found"]


def _unreadable_image(d):
    p = d / "train" / "r_2.png"
    p.write_bytes(b"\x89PNG garbage" + np.random.default_rng(1).bytes(300))
    return p, ["unreadable image"]


def _wrong_size(d):
    p = d / "train" / "r_4.png"
    iio.imwrite(p, np.zeros((16, 16, 4), np.uint8))
    return p, ["16x16", f"{RES}x{RES}"]


def _nan_pose(d):
    def poison(m):
        m["frames"][1]["transform_matrix"][0][3] = float("nan")
    edit_json(d / "transforms_train.json", poison)
    return d / "transforms_train.json", ["frame 1", "not finite"]


def _empty_split(d):
    edit_json(d / "transforms_train.json", lambda m: m.update(frames=[]))
    return d / "transforms_train.json", ["no frames"]


@pytest.mark.parametrize("corrupt", [
    _missing_folder, _empty_folder, _random_files, _malformed_json, _malformed_val_json,
    _missing_image, _unreadable_image, _wrong_size, _nan_pose, _empty_split,
], ids=lambda f: f.__name__.lstrip("_"))
def test_train_bad_data_is_one_clear_line(corrupt, data, tmp_path, capsys):
    named, problems = corrupt(data)
    run = tmp_path / "run"
    rc, _, err = cli(capsys, "train", data, "--out", run, "--steps", TRAIN_STEPS, *FAST)
    assert_one_line_error(rc, err, "train", named, *problems)
    assert not (run / "checkpoint.npz").exists()


def test_train_resume_without_checkpoint(data, tmp_path, capsys):
    run = tmp_path / "run"
    rc, _, err = cli(capsys, "train", data, "--out", run, "--steps", TRAIN_STEPS, "--resume",
                     *FAST)
    assert_one_line_error(rc, err, "train", run / "checkpoint.npz", "no checkpoint")


def test_train_resume_with_other_table_size(trained_run, scene32, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    fast = [a if a != "12" else "11" for a in FAST]  # --log2-table 11 instead of 12
    rc, _, err = cli(capsys, "train", scene32, "--out", run, "--steps", TRAIN_STEPS + 1,
                     "--resume", *fast)
    assert_one_line_error(rc, err, "train", run / "checkpoint.npz", "log2_table 12",
                          "--log2-table 12")


def test_train_resume_names_every_differing_shape_flag(trained_run, scene32, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    rc, _, err = cli(capsys, "train", scene32, "--out", run, "--steps", TRAIN_STEPS + 1,
                     "--resume", "--n-levels", "8", "--occ-resolution", "32", *FAST)
    assert_one_line_error(rc, err, "train", "n_levels 16", "--n-levels 16",
                          "--occ-resolution")


def test_train_resume_keeps_the_runs_finest_resolution(scene32, tmp_path, capsys):
    """--resume without --finest-resolution builds the grid the checkpoint was trained with,
    even where today's default for the data differs (an older rule's run)."""
    from taichi_nerf.kernels.checkpoint_io import load_checkpoint
    run = tmp_path / "run"
    rc, _, err = cli(capsys, "train", scene32, "--out", run, "--steps", TRAIN_STEPS,
                     "--finest-resolution", "384", *FAST)
    assert rc == 0, err
    rc, _, err = cli(capsys, "train", scene32, "--out", run, "--steps", TRAIN_STEPS + 1,
                     "--resume", *FAST)
    assert rc == 0, err
    cfg, _ = load_checkpoint(run / "checkpoint.npz")
    assert cfg["step"] == TRAIN_STEPS + 1
    assert cfg["train"]["finest_resolution"] == 384
    assert cfg["field"]["grid"]["finest_resolution"] == 384


def _usage_error(capsys, *argv) -> str:
    """argparse's error line for `taichi-nerf argv...`, which must exit 2 while parsing."""
    with pytest.raises(SystemExit) as e:
        cli(capsys, *argv)
    assert e.value.code == 2
    return capsys.readouterr().err.rstrip("\n").splitlines()[-1]


def test_train_bad_table_size(data, tmp_path, capsys):
    line = _usage_error(capsys, "train", data, "--out", tmp_path / "run", "--steps", TRAIN_STEPS,
                        "--arch", "cpu", "--quiet", "--log2-table", "2")
    assert line == "taichi-nerf train: error: argument --log2-table: must be in [4, 24], got 2"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value, problem", [("-1", "must be >= 0, got -1.0"),
                                            ("nan", "must be finite, got nan")])
def test_train_bad_sparse_depth(data, tmp_path, capsys, value, problem):
    line = _usage_error(capsys, "train", data, "--out", tmp_path / "run", "--steps",
                        TRAIN_STEPS, "--sparse-depth", value, *FAST)
    assert line == f"taichi-nerf train: error: argument --sparse-depth: {problem}"


@pytest.mark.parametrize("value", ["-1", "257"])
def test_train_bad_appearance(data, tmp_path, capsys, value):
    line = _usage_error(capsys, "train", data, "--out", tmp_path / "run", "--steps",
                        TRAIN_STEPS, "--appearance", value, *FAST)
    assert line == ("taichi-nerf train: error: argument --appearance: must be in [0, 256], "
                    f"got {value}")


@pytest.mark.parametrize("value", ["3", "0", "256"])
def test_train_bad_aabb_scale(data, tmp_path, capsys, value):
    rc, _, err = cli(capsys, "train", data, "--out", tmp_path / "run", "--steps", TRAIN_STEPS,
                     "--aabb-scale", value, *FAST)
    assert_one_line_error(rc, err, "train", "--aabb-scale", f"got {value}", "power of two")


def test_train_aabb_scale_overrides_the_dataset(data, tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "train", data, "--out", run, "--steps", 1, "--aabb-scale", "4",
                       *FAST)
    assert rc == 0, err
    cfg, _ = load_checkpoint(run / "checkpoint.npz")
    assert cfg["scene"]["aabb_scale"] == 4 and cfg["occupancy"]["n_cascades"] == 3


def test_train_unwritable_out(data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = cli(capsys, "train", data, "--out", blocker / "run", "--steps", TRAIN_STEPS,
                     *FAST)
    assert_one_line_error(rc, err, "train", blocker / "run", "cannot create")


# ------------------------------------------------------------------ eval
def test_eval_on_a_test_only_folder(trained_run, scene32, tmp_path, capsys):
    run, _ = trained_run
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    shutil.copy(scene32 / "transforms_test.json", only_test)
    shutil.copytree(scene32 / "test", only_test / "test")
    out_json = tmp_path / "eval.json"
    rc, out, err = cli(capsys, "eval", run, "--data", only_test, "--json", out_json,
                       "--arch", "cpu", "--quiet")
    assert rc == 0, err
    m = json.loads(out_json.read_text())
    assert {"psnr", "ssim", "views", "seconds_per_view"} <= set(m)
    assert m["views"] == n_frames(scene32, "test")
    assert math.isfinite(m["psnr"]) and 0 < m["ssim"] <= 1 and m["seconds_per_view"] > 0
    assert "PSNR" in out


def test_eval_truncated_checkpoint(trained_run, scene32, tmp_path, capsys):
    run, _ = trained_run
    broken = tmp_path / "broken_run"
    broken.mkdir()
    blob = (run / "checkpoint.npz").read_bytes()
    (broken / "checkpoint.npz").write_bytes(blob[: len(blob) // 2])
    rc, _, err = cli(capsys, "eval", broken, "--data", scene32, "--arch", "cpu", "--quiet")
    assert_one_line_error(rc, err, "eval", broken / "checkpoint.npz", "truncated")


def test_eval_missing_run(scene32, tmp_path, capsys):
    rc, _, err = cli(capsys, "eval", tmp_path / "no_run", "--data", scene32, "--arch", "cpu",
                     "--quiet")
    assert_one_line_error(rc, err, "eval", tmp_path / "no_run", "not found")


def test_eval_json_into_missing_folder(trained_run, scene32, tmp_path, capsys):
    run, _ = trained_run
    target = tmp_path / "missing" / "eval.json"
    rc, _, err = cli(capsys, "eval", run, "--data", scene32, "--json", target, "--arch", "cpu",
                     "--quiet")
    assert_one_line_error(rc, err, "eval", target, "does not exist")


def test_eval_save_images_unwritable(trained_run, scene32, tmp_path, capsys):
    run, _ = trained_run
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = cli(capsys, "eval", run, "--data", scene32, "--save-images", blocker / "imgs",
                     "--arch", "cpu", "--quiet")
    assert_one_line_error(rc, err, "eval", blocker / "imgs", "cannot create")


# ------------------------------------------------------------------ render
ORBIT = ["--frames", "2", "--width", "24", "--height", "16", "--arch", "cpu", "--quiet"]


@pytest.mark.parametrize("mode,channels", [("rgb", (3,)), ("depth", ()), ("opacity", ())])
def test_render_orbit_to_pngs(mode, channels, trained_run, tmp_path, capsys):
    run, _ = trained_run
    out = tmp_path / "frames"
    rc, _, err = cli(capsys, "render", run, "--out", out, "--mode", mode, *ORBIT)
    assert rc == 0, err
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    for p in pngs:
        img = iio.imread(p)
        assert img.shape == (16, 24) + channels and img.dtype == np.uint8


def test_render_gif(trained_run, tmp_path, capsys):
    run, _ = trained_run
    out = tmp_path / "orbit.gif"
    rc, _, err = cli(capsys, "render", run, "--out", out, *ORBIT)
    assert rc == 0, err
    assert out.read_bytes()[:4] == b"GIF8"
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (2, 16, 24)


def test_render_dataset_cameras(trained_run, scene32, tmp_path, capsys):
    run, _ = trained_run
    out = tmp_path / "test_views"
    rc, _, err = cli(capsys, "render", run, "--out", out, "--path", scene32, "--arch", "cpu",
                     "--quiet")
    assert rc == 0, err
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == n_frames(scene32, "test")
    assert iio.imread(pngs[0]).shape == (RES, RES, 3)


@pytest.mark.parametrize("split, holdout, frames", [("test", None, 2), ("train", None, 8),
                                                    ("test", "0", 10)])
def test_render_data_without_splits_holds_out_like_train(split, holdout, frames, trained_run,
                                                         scene32, tmp_path, capsys):
    """--path DATA of a format without split files (instant-ngp: one transforms.json) takes
    --split from every --holdout-th frame (default 8, as train and eval do), reading the
    cameras only: the images' pixel data is cut off here."""
    run, _ = trained_run
    ngp = tmp_path / "ngp"
    shutil.copytree(scene32 / "test", ngp / "test")
    (ngp / "transforms.json").write_text((scene32 / "transforms_test.json").read_text())
    for png in (ngp / "test").glob("*.png"):
        png.write_bytes(png.read_bytes()[:png.stat().st_size // 2])
    out = tmp_path / "views"
    extra = [] if holdout is None else ["--holdout", holdout]
    rc, _, err = cli(capsys, "render", run, "--out", out, "--path", ngp, "--split", split,
                     *extra, "--arch", "cpu", "--quiet")
    assert rc == 0, err
    assert len(list(out.glob("*.png"))) == frames  # 10 frames: 0 and 8 held out


@pytest.mark.parametrize("name", ["frames", "orbit.gif", "dir.gif"])
def test_render_unwritable_out(name, trained_run, tmp_path, capsys, monkeypatch):
    run, _ = trained_run
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / name
    if name == "dir.gif":  # a folder where the video file should go
        out = tmp_path / name
        out.mkdir()
    # imageio writers that failed to open print "Exception ignored ... Traceback" when
    # garbage-collected: in the console that is a traceback after the error line
    stray = []
    monkeypatch.setattr(sys, "unraisablehook", stray.append)
    rc, _, err = cli(capsys, "render", run, "--out", out, *ORBIT)
    gc.collect()
    assert_one_line_error(rc, err, "render", out, "cannot write")
    assert not stray, [str(u.exc_value) for u in stray]


def test_render_bad_fps(trained_run, tmp_path, capsys):
    run, _ = trained_run
    rc, _, err = cli(capsys, "render", run, "--out", tmp_path / "x.gif", "--fps", "0", *ORBIT)
    assert_one_line_error(rc, err, "render", "--fps")


def test_render_orbit_radius_moves_the_camera(trained_run, tmp_path, capsys):
    """A larger --radius puts the camera farther away: the scene covers fewer pixels."""
    run, _ = trained_run
    cover = []
    for radius in ("2", "8"):
        out = tmp_path / f"r{radius}"
        rc, _, err = cli(capsys, "render", run, "--out", out, "--mode", "opacity",
                         "--radius", radius, *ORBIT)
        assert rc == 0, err
        cover.append(np.mean([iio.imread(p).astype(float).mean() for p in out.glob("*.png")]))
    assert cover[1] < 0.6 * cover[0], cover


@pytest.mark.parametrize("radius", ["0", "-1", "nan"])
def test_render_bad_radius(radius, trained_run, tmp_path, capsys):
    run, _ = trained_run
    rc, _, err = cli(capsys, "render", run, "--out", tmp_path / "f", "--radius", radius, *ORBIT)
    assert_one_line_error(rc, err, "render", "--radius")


def test_bench_viewer_without_checkpoint_is_one_line(tmp_path, capsys):
    rc, _, err = cli(capsys, "bench", "--viewer", tmp_path, "--arch", "cpu")
    assert_one_line_error(rc, err, "bench", "checkpoint.npz")


def test_bench_quick_training_is_refused_not_skipped(capsys):
    # --quick alone is kernels only; with --training it used to drop the training part silently
    rc, out, err = cli(capsys, "bench", "--quick", "--training", "--arch", "cpu")
    assert_one_line_error(rc, err, "bench", "--quick", "--training --time")
    assert out == ""  # refused before anything ran


def test_bench_json_is_written_whole(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc, stdout, _ = cli(capsys, "bench", "--quick", "--arch", "cpu", "--json", out)
    assert rc == 0 and "|" in stdout
    assert "kernels" in json.loads(out.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]  # no temporary left


def test_bench_training_bad_data_is_one_line(tmp_path, capsys):
    rc, _, err = cli(capsys, "bench", "--training", "--data", tmp_path / "nowhere", "--time",
                     "1", "--arch", "cpu")
    assert_one_line_error(rc, err, "bench", "nowhere")


@pytest.mark.parametrize("flags, problem", [
    (["--radius", "-1"], "--radius must be a positive number of world units, got -1.0"),
    (["--elevation", "90"], "--elevation must lie strictly between -90 and 90 degrees, got 90.0"),
    (["--frames", "0"], "--frames must be > 0, got 0"),
    (["--width", "0"], "--width must be > 0, got 0"),
])
def test_render_and_export_check_path_options_alike(trained_run, tmp_path, capsys, flags,
                                                    problem):
    """One rule (camera_paths.check_path_options) for both commands' camera-path options."""
    run, _ = trained_run
    lines = {}
    for command, out in (("render", ["--out", tmp_path / "f"]),
                         ("export", ["--camera-path", tmp_path / "c.json"])):
        rc, _, err = cli(capsys, command, run, *out, "--arch", "cpu", "--quiet", *flags)
        assert_one_line_error(rc, err, command, problem)
        lines[command] = err.split(": error: ", 1)[1]
    assert lines["render"] == lines["export"]


def test_eval_defaults_to_the_data_the_run_was_trained_on(trained_run, scene32, tmp_path,
                                                          capsys):
    run, _ = trained_run
    cfg, _ = load_checkpoint(run / "checkpoint.npz")
    assert cfg["data"] == {"data": str(scene32.resolve()), "downscale": 1, "holdout": 8}
    out_json = tmp_path / "eval.json"
    rc, out, err = cli(capsys, "eval", run, "--json", out_json, "--arch", "cpu", "--quiet")
    assert rc == 0, err
    assert "built-in" not in err
    m = json.loads(out_json.read_text())
    assert m["views"] == n_frames(scene32, "test")
    explicit = tmp_path / "explicit.json"
    rc, _, err = cli(capsys, "eval", run, "--data", scene32, "--json", explicit, "--arch", "cpu",
                     "--quiet")
    assert rc == 0, err
    assert json.loads(explicit.read_text())["psnr"] == m["psnr"]  # the same views


def test_eval_names_a_missing_training_folder(trained_run, tmp_path, capsys):
    from taichi_nerf.nn.checkpoint import save_checkpoint
    run, _ = trained_run
    cfg, arrays = load_checkpoint(run / "checkpoint.npz")
    gone = tmp_path / "moved_away"
    cfg["data"] = {"data": str(gone), "downscale": 2, "holdout": 8}
    moved = tmp_path / "moved_run"
    moved.mkdir()
    save_checkpoint(moved / "checkpoint.npz", cfg, arrays)
    rc, _, err = cli(capsys, "eval", moved, "--arch", "cpu", "--quiet")
    assert_one_line_error(rc, err, "eval", gone, "pass --data")


def test_the_cli_sets_passive_openmp_waiting_before_torch_loads():
    """OMP_WAIT_POLICY is read once, when torch loads libgomp: the CLI sets it first."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; import taichi_nerf.cli; "
            "print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "PASSIVE"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own setting stays
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "ACTIVE"]
