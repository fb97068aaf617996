"""The built-in procedural scene: dataset layout, cache behaviour, and renderer vs analytic geometry."""
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.nn import runtime
from taichi_nerf.data import builtin

RES = 32  # tiny: the whole 100-view render takes well under a second


@pytest.fixture(scope="module")
def cpu():
    runtime.init("cpu")


@pytest.fixture(scope="module")
def scene_dir(cpu, tmp_path_factory) -> Path:
    return builtin.ensure_builtin_scene(RES, cache_dir=tmp_path_factory.mktemp("cache"),
                                        progress=False)


def _load_split(scene_dir: Path, split: str):
    meta = json.loads((scene_dir / f"transforms_{split}.json").read_text())
    return meta, [np.asarray(f["transform_matrix"], np.float64) for f in meta["frames"]]


def test_dataset_layout(scene_dir):
    assert scene_dir.name == f"builtin-v{builtin.SCENE_VERSION}-{RES}"
    for split, count in (("train", 80), ("val", 10), ("test", 10)):
        meta, poses = _load_split(scene_dir, split)
        assert meta["camera_angle_x"] == pytest.approx(builtin.CAMERA_ANGLE_X)
        assert len(meta["frames"]) == count
        for idx, (frame, c2w) in enumerate(zip(meta["frames"], poses)):
            assert frame["file_path"] == f"./{split}/r_{idx}"
            assert (scene_dir / split / f"r_{idx}.png").is_file()
            assert c2w.shape == (4, 4)
            np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
            np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-9)
            # On the sphere of radius 4, looking (down its -z axis) at the origin.
            pos = c2w[:3, 3]
            assert np.linalg.norm(pos) == pytest.approx(builtin.CAMERA_RADIUS)
            np.testing.assert_allclose(-c2w[:3, 2], -pos / np.linalg.norm(pos), atol=1e-9)
    # Splits are disjoint views.
    all_pos = np.concatenate([np.stack(_load_split(scene_dir, s)[1])[:, :3, 3]
                              for s in ("train", "val", "test")])
    assert len(np.unique(all_pos.round(6), axis=0)) == 100


def test_images_rgba_with_transparent_border_and_opaque_centre(scene_dir):
    for split in ("train", "val", "test"):
        for png in sorted((scene_dir / split).glob("r_*.png")):
            img = iio.imread(png)
            assert img.shape == (RES, RES, 4) and img.dtype == np.uint8, png
            alpha = img[..., 3]
            assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0, png
            assert alpha[RES // 2, RES // 2] == 255, png
            assert (img[alpha == 0][:, :3] == 0).all()
            # Anti-aliased edges: some fractional alpha in every view.
            assert ((alpha > 0) & (alpha < 255)).any(), png


def test_cache_is_reused(scene_dir, monkeypatch):
    marker = scene_dir / builtin.MARKER_NAME
    png = scene_dir / "train" / "r_0.png"
    before = (marker.stat().st_mtime_ns, png.stat().st_mtime_ns)

    def fail(*args, **kwargs):
        raise AssertionError("the cached scene was rendered again")

    monkeypatch.setattr(builtin, "write_builtin_scene", fail)
    again = builtin.ensure_builtin_scene(RES, cache_dir=scene_dir.parent, progress=False)
    assert again == scene_dir
    assert (marker.stat().st_mtime_ns, png.stat().st_mtime_ns) == before


def test_stale_cache_is_rendered_again(cpu, tmp_path, monkeypatch):
    calls = []
    original = builtin.write_builtin_scene

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(builtin, "write_builtin_scene", counting)
    path = builtin.ensure_builtin_scene(16, cache_dir=tmp_path, progress=False)
    assert builtin.builtin_scene_path(16, tmp_path) == path
    assert len(calls) == 1
    marker = path / builtin.MARKER_NAME
    meta = json.loads(marker.read_text())
    meta["fingerprint"] = "from-an-older-version"
    marker.write_text(json.dumps(meta))
    assert not builtin.is_complete(path, 16)
    assert builtin.ensure_builtin_scene(16, cache_dir=tmp_path, progress=False) == path
    assert len(calls) == 2
    assert builtin.is_complete(path, 16)
    # Temporary and stale folders are gone; only the finished scene remains.
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_failed_marker_write_keeps_the_old_marker(tmp_path, monkeypatch):
    """The marker means "complete": a write that fails part-way leaves the previous one whole."""
    import os

    monkeypatch.setattr(builtin, "_write_blender", lambda *a, **k: None)  # no rendering
    marker = tmp_path / builtin.MARKER_NAME
    marker.write_text('{"fingerprint": "previous"}')

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        builtin.write_builtin_scene(tmp_path, 8, progress=False)
    assert json.loads(marker.read_text()) == {"fingerprint": "previous"}
    assert [p.name for p in tmp_path.iterdir()] == [builtin.MARKER_NAME]


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TAICHI_NERF_CACHE", str(tmp_path))
    assert builtin.builtin_scene_path(64) == tmp_path / f"builtin-v{builtin.SCENE_VERSION}-64"
    assert builtin.builtin_scene_path(64, cache_dir=tmp_path / "x").parent == tmp_path / "x"


def test_analytic_depth_agrees_with_rendered_alpha(scene_dir):
    meta, poses = _load_split(scene_dir, "test")
    checked = 0
    for frame, c2w in list(zip(meta["frames"], poses))[:3]:
        alpha = iio.imread(scene_dir / (frame["file_path"] + ".png"))[..., 3] / 255.0
        depth = builtin.depth_map(c2w, RES, RES, meta["camera_angle_x"])
        assert np.isfinite(depth[alpha > 0.99]).all()
        assert np.isinf(depth[alpha < 0.01]).all()
        checked += (alpha > 0.99).sum()
        # Hits lie on the surface and in front of the camera, within the scene.
        o, d = builtin.pixel_rays(c2w, RES, RES, meta["camera_angle_x"])
        t = depth.reshape(-1)
        hit = np.isfinite(t)
        pts = o[hit] + t[hit, None] * d[hit]
        np.testing.assert_allclose(builtin.scene_sdf(pts), 0.0, atol=1e-7)
        assert (t[hit] > builtin.CAMERA_RADIUS - 1.36).all()
    assert checked > 50


def test_taichi_render_depth_matches_analytic(cpu):
    # The Taichi renderer (float32, sphere-traced torus) and the numpy geometry
    # (float64, quartic torus) read the same table: their centre-ray depths
    # agree except at a few grazing silhouette rays.
    rng = np.random.default_rng(1)
    cams = builtin.builtin_cameras()["train"]
    for c2w in cams[rng.choice(len(cams), 2, replace=False)]:
        rgba, depth = builtin.render_view(c2w, 64, 48)
        assert rgba.shape == (48, 64, 4) and rgba.dtype == np.float32
        assert rgba.min() >= 0.0 and rgba.max() <= 1.0
        truth = builtin.depth_map(c2w, 64, 48)
        assert (np.isfinite(truth) == np.isfinite(depth)).mean() > 0.999
        both = np.isfinite(truth) & np.isfinite(depth)
        assert (np.abs(truth[both] - depth[both]) < 1e-3).mean() > 0.999
        assert np.median(np.abs(truth[both] - depth[both])) < 1e-5


def test_ray_depth_scales_with_direction_length():
    o = np.array([[0.0, 0.0, 4.0], [4.0, 0.0, 0.0], [0.0, 4.0, 4.0]])
    d = -o / np.linalg.norm(o, axis=1, keepdims=True)
    t = builtin.ray_depth(o, d)
    ball = builtin.PRIMITIVES[0]
    np.testing.assert_allclose(t, 4.0 * np.array([1, 1, np.sqrt(2)]) - ball.params[0])
    np.testing.assert_allclose(builtin.ray_depth(o, 2.5 * d), t / 2.5)
    # Rays pointing away from everything miss.
    assert np.isinf(builtin.ray_depth(o, -d)).all()


def test_inside_and_sdf_signs():
    rng = np.random.default_rng(2)
    pts = rng.uniform(-1.5, 1.5, (200_000, 3))
    sdf = builtin.scene_sdf(pts)
    assert (builtin.inside(pts) == (sdf < 0)).all()
    # Several solids, all within the radius that stays inside every camera's frame.
    assert 0.01 < (sdf < 0).mean() < 0.3
    assert np.linalg.norm(pts[sdf < 0], axis=1).max() < 4.0 * np.sin(0.5 * builtin.CAMERA_ANGLE_X)
    assert builtin.inside(np.zeros((1, 3)))[0]
    corners = np.array(np.meshgrid(*[[-1.5, 1.5]] * 3)).reshape(3, -1).T
    assert not builtin.inside(corners).any()
    # Each primitive is a solid: a point in its material is inside the scene.
    for prim in builtin.PRIMITIVES:
        local = np.array([prim.params[0], 0.0, 0.0]) if prim.kind == "torus" else np.zeros(3)
        p = (prim.rotation @ local + np.asarray(prim.center))[None]
        assert builtin.inside(p)[0], prim.name
        assert builtin.primitive_sdf(p, prim)[0] < 0, prim.name
    # The primitives do not touch, so each is its own closed surface.
    per_prim = np.stack([builtin.primitive_sdf(pts, p) for p in builtin.PRIMITIVES])
    assert ((per_prim < 0).sum(axis=0) <= 1).all()


def test_primitive_table_is_the_scene():
    table = builtin.primitive_table()
    assert table.shape == (len(builtin.PRIMITIVES), builtin.TABLE_COLUMNS)
    assert 3 <= len(builtin.PRIMITIVES) <= 5
    assert {p.kind for p in builtin.PRIMITIVES} >= {"sphere", "box", "torus"}
    for row, prim in zip(table, builtin.PRIMITIVES):
        np.testing.assert_allclose(row[1:4], prim.center, atol=1e-7)
        np.testing.assert_allclose(row[4:13].reshape(3, 3), prim.rotation.T, atol=1e-7)


# The fingerprints of the scene as it is cached on users' machines (SCENE_VERSION 1, model
# version 2 of the variants). A refactor of the camera or pose code that moved any pose (to
# 9 decimals) or changed the table would change them and silently re-render every cache and
# shift training results. Update them only together with a deliberate scene change that bumps
# SCENE_VERSION / MODEL_VERSION.
CACHED_FINGERPRINTS = {("object", 128): "8991e486f1b42108", ("object", 64): "885f33396f757b0c",
                       ("room", 128): "66700e1014ae63b1", ("forward", 128): "cb598b434af2d895"}


@pytest.mark.parametrize("variant, resolution", sorted(CACHED_FINGERPRINTS))
def test_cached_scenes_keep_their_fingerprint(variant, resolution):
    assert builtin._fingerprint(resolution, variant) == CACHED_FINGERPRINTS[variant, resolution]


def test_one_look_at_for_the_scene_and_the_camera_paths():
    """The built-in cameras are made by the look_at that camera paths and orbits use: one
    definition (data.poses), float64 in, float64 out, an exact rotation."""
    from taichi_nerf.render import camera_paths
    from taichi_nerf.data import builtin_variants, poses

    assert builtin.look_at is poses.look_at is camera_paths.look_at is builtin_variants.look_at
    cams = builtin.builtin_cameras()
    pos = builtin.camera_positions()
    every = np.concatenate(list(cams.values()))
    assert every.dtype == np.float64 and len(every) == len(pos)
    for c2w in cams["val"]:
        assert np.array_equal(c2w, poses.look_at(c2w[:3, 3]))
        np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
        # looking down -z at the origin
        np.testing.assert_allclose(-c2w[:3, 2], -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]),
                                   atol=1e-12)


def test_the_renderer_starts_taichi_without_torch():
    """data/ starts Taichi through the torch-free kernels.runtime when nothing has yet."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "from taichi_nerf.data import builtin\n"
            "from taichi_nerf.kernels import runtime\n"
            "assert runtime.current() is None\n"
            "rgba, _ = builtin.render_view(builtin.builtin_cameras()['test'][0], 8, 8)\n"
            "assert runtime.current().arch == 'cpu' and runtime.current().by_auto\n"
            "assert rgba.shape == (8, 8, 4) and rgba[..., 3].max() > 0\n")
    env = dict(__import__("os").environ, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_render_survives_a_new_taichi_runtime(cpu):
    """Nothing of the renderer belongs to one ti.init: after Taichi starts again (another
    arch, or here other settings) the same view renders the same."""
    from taichi_nerf.kernels import runtime as ti_runtime

    c2w = builtin.builtin_cameras()["val"][0]
    before = builtin.render_view(c2w, 16, 16)
    first = ti_runtime.current().generation
    try:
        assert ti_runtime.init("cpu", cpu_threads=1).generation > first
        after = builtin.render_view(c2w, 16, 16)
    finally:
        runtime.init("cpu")
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_torch_auto_chooses_again_after_the_renderer_took_cuda(cpu, monkeypatch):
    """On a CUDA machine whose torch has no CUDA, the renderer's `auto` (torch-free, so it
    cannot know) starts Taichi on CUDA; the torch side's `auto` must then move to the CPU
    rather than fail, while a CUDA the user named is kept (and refused, as before)."""
    import torch
    from taichi_nerf.kernels import runtime as ti_runtime

    real = ti_runtime._try_init
    # CUDA "starts" (nothing is initialised, nothing runs on it in this test)
    monkeypatch.setattr(ti_runtime, "_try_init",
                        lambda arch, *a: True if arch == "cuda" else real(arch, *a))
    monkeypatch.setattr(ti_runtime, "default_auto_order", lambda: ("cuda",))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        ti_runtime._current = None  # as in a fresh process
        builtin._ensure_runtime()
        assert ti_runtime.current().arch == "cuda" and ti_runtime.current().by_auto
        rt = runtime.current()  # the torch side takes over without an init of its own
        assert rt.arch == "cpu" and rt.torch_device.type == "cpu"
        assert "no CUDA-enabled torch" in rt.reason
        assert ti_runtime.current().arch == "cpu" and ti_runtime.current().by_auto
        assert runtime.init("auto") is rt  # nothing to choose again
        ti_runtime._current = None
        ti_runtime.init("cuda")  # named: kept by a later auto, so torch refuses it clearly
        with pytest.raises(runtime.ArchUnavailableError, match="no CUDA support"):
            runtime.init("auto")
    finally:
        ti_runtime._current = None
        runtime.init("cpu")
