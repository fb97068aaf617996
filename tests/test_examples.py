"""Every example runs: quick mode in a subprocess; the particle simulation also in-process."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import taichi as ti

from taichi_nerf.data import builtin

ROOT = Path(__file__).resolve().parents[1]
# examples/own_field.py, 150 steps at 64x64 on cpu: 27.7 dB (an untrained field is far below)
FLOOR_OWN_FIELD = 24.0
EXAMPLES = ROOT / "examples"


def _load(name: str):
    """Import examples/<name>.py as a module (from its file, so Taichi can read kernel source)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@ti.kernel
def _occluded(scene: ti.template(), pts: ti.types.ndarray(dtype=ti.f32, ndim=2),
              out: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for i in range(pts.shape[0]):
        out[i] = scene.occluded(ti.Vector([pts[i, 0], pts[i, 1], pts[i, 2]]))


def test_particles_come_to_rest_on_the_field(trained, tmp_path):
    run, _ = trained
    ex = _load("particles_in_nerf")
    shot = tmp_path / "particles.png"
    sim = ex.main(["--run", str(run), "--headless", "--frames", "8", "--particles", "1500",
                   "--width", "64", "--height", "64", "--screenshot", str(shot), "--arch", "cpu"])
    x = sim.x.to_numpy()
    assert np.isfinite(x).all()
    # nothing ended inside the field's solid density
    inside = np.ones(len(x), np.int32)
    _occluded(sim.scene, x, inside)
    assert inside.sum() == 0
    # they were dropped just above surfaces and stopped there: most sit near the analytic
    # geometry (the field's surface is soft, so "near" is a few hundredths of a unit)
    sdf = builtin.scene_sdf(x)
    above_floor = x @ sim.up - sim.floor_height > 0.02
    assert above_floor.mean() > 0.5
    assert np.median(np.abs(sdf[above_floor])) < 0.06
    # and hardly inside the true objects: the field's soft shell lets a few sink a little
    assert (sdf > -0.05).mean() > 0.95
    img = iio.imread(shot)
    assert img.shape == (64, 64, 3) and img.max() > 0


def test_particles_run_without_torch(trained, tmp_path):
    """With --run the simulation example is torch-free, as the kernels layer it builds on."""
    run, _ = trained
    shot = tmp_path / "shot.png"
    code = ("import runpy, sys\n"
            "sys.modules['torch'] = None  # from here on, any `import torch` raises ImportError\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "particles_in_nerf.py"),
                           "--run", str(run), "--headless", "--frames", "2", "--particles", "100",
                           "--width", "32", "--height", "32", "--screenshot", str(shot),
                           "--arch", "cpu"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert iio.imread(shot).shape == (32, 32, 3)


def test_particles_are_hidden_behind_the_field(trained, cpu_runtime):
    """A particle between camera and ball is drawn; one behind the ball is not."""
    run, _ = trained
    ex = _load("particles_in_nerf")
    sim = ex.build(run, 2, 64, 64)
    eye, fwd = sim.c2w[:3, 3], -sim.c2w[:3, 2]
    dist_to_ball = np.linalg.norm(eye)                # the orbit looks at the ball's centre
    nerf = sim.nerf_rgb.to_numpy().transpose(1, 0, 2)[::-1]
    behind = eye + fwd * (dist_to_ball + 0.2)         # inside/behind the ball: hidden
    sim.x.from_numpy(np.stack([behind, behind]).astype(np.float32))
    assert np.array_equal(sim.frame_image(radius=1), nerf)
    front = eye + fwd * (dist_to_ball - 1.0)          # in front of the ball: drawn
    sim.x.from_numpy(np.stack([front, behind]).astype(np.float32))
    img = sim.frame_image(radius=1)
    changed = np.argwhere(np.any(img != nerf, axis=-1))
    assert len(changed) > 0
    assert np.all(np.abs(changed - np.array([32, 32])) <= 2)   # at the image centre


def _ngp_copy_of(scene_dir: Path, dest: Path, n_frames: int = 24) -> Path:
    """An instant-ngp folder (one transforms.json) over the built-in scene's training images."""
    meta = json.loads((scene_dir / "transforms_train.json").read_text())
    dest.mkdir()
    (dest / "train").symlink_to(scene_dir / "train", target_is_directory=True)
    frames = meta["frames"][:n_frames]
    (dest / "transforms.json").write_text(json.dumps(
        {"camera_angle_x": meta["camera_angle_x"], "aabb_scale": 1, "frames": frames}))
    return dest


@pytest.mark.parametrize("script", ["train_builtin", "train_blender", "train_ngp",
                                    "particles_in_nerf"])
def test_example_runs_in_quick_mode(script, trained, scene_dir, tmp_path):
    """Each script as a user runs it (a fresh process), with a tiny budget."""
    out = tmp_path / "run"
    args = {
        # the scene the fixture rendered (builtin-v<version>-<res>): found in the cache below
        "train_builtin": ["--quick", "--res", scene_dir.name.rsplit("-", 1)[1]],
        "train_blender": [str(scene_dir), "--quick"],
        "train_ngp": [str(_ngp_copy_of(scene_dir, tmp_path / "ngp")), "--quick", "--holdout", "4"],
        "particles_in_nerf": ["--steps", "20", "--headless", "--frames", "2", "--particles", "200",
                              "--width", "32", "--height", "32",
                              "--screenshot", str(tmp_path / "shot.png")],
    }[script]
    # the built-in scene comes from the session's cache, rendered by the fixture
    env = dict(os.environ, TAICHI_NERF_CACHE=str(scene_dir.parent))
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{script}.py"), *args, "--out", str(out),
                           "--arch", "cpu"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (out / "checkpoint.npz").exists()
    if script == "particles_in_nerf":
        assert iio.imread(tmp_path / "shot.png").shape == (32, 32, 3)
    else:
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["steps"] == 20 and np.isfinite(metrics["psnr"])


def test_own_field_example_trains_with_the_building_blocks(cpu_runtime):
    """examples/own_field.py: a user's own field around taichi_nerf.nn's blocks learns the
    built-in scene (a real PSNR floor, well above an untrained field's)."""
    psnr = _load("own_field").main(["--steps", "150", "--res", "64", "--arch", "cpu"])
    assert psnr > FLOOR_OWN_FIELD
