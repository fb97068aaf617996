"""The shared real datasets (lego, fox), each paired with a synthetic stand-in that always runs."""
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.data import detect_format, load_dataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEGO, FOX = DATA / "lego", DATA / "fox"
needs = lambda p: pytest.mark.skipif(
    not p.exists(), reason="../shared/data absent: real-data loader test needs the shared datasets")


def check_lego_like(ds, n, size, angle):
    assert ds.format == "blender" and len(ds) == n
    assert ds.images.shape == (n, size, size, 4) and ds.images.dtype == np.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    f = 0.5 * size / math.tan(angle / 2)
    np.testing.assert_allclose(ds.intrinsics[:, :2], f, rtol=1e-5)
    np.testing.assert_allclose(ds.intrinsics[:, 2:], size / 2, rtol=1e-6)
    np.testing.assert_array_equal(ds.background, [1, 1, 1])
    model = ds.transform_poses()
    assert np.all(np.abs(model[:, :3, 3] - 0.5).max(axis=1) > 0.5)  # cameras outside the unit cube


def check_fox_like(ds, size):
    assert ds.format == "ngp" and ds.aabb_scale == 4
    assert ds.images.shape[1:] == size + (3,) and ds.background is None
    assert np.all(ds.distortion[:, :2] != 0)
    model = ds.transform_poses()
    assert np.all(np.abs(model[:, :3, 3] - 0.5) <= ds.aabb_scale / 2)


@needs(LEGO)
def test_real_lego_train_downscale_8():
    meta = json.loads((LEGO / "transforms_train.json").read_text())
    ds = load_dataset(LEGO, "train", downscale=8)
    check_lego_like(ds, 75, 100, meta["camera_angle_x"])
    np.testing.assert_allclose(ds.poses[0], meta["frames"][0]["transform_matrix"], atol=1e-6)


def test_synthetic_lego_like(tmp_path):
    angle = 0.6911112070083618
    (tmp_path / "train").mkdir()
    rng = np.random.default_rng(0)
    frames = []
    for i in range(3):
        iio.imwrite(tmp_path / "train" / f"r_{i}.png", rng.integers(0, 256, (32, 32, 4), dtype=np.uint8))
        m = np.eye(4)
        m[:3, 3] = [4.0 * math.cos(i), 4.0 * math.sin(i), 1.0]
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": m.tolist()})
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    check_lego_like(load_dataset(tmp_path, "train", downscale=8), 3, 4, angle)


@needs(FOX)
def test_real_fox_downscale_8():
    assert detect_format(FOX) == "ngp"
    ds = load_dataset(FOX, "val", downscale=8, holdout=8)  # 6 of 43 frames keeps it quick
    assert len(ds) == 6
    check_fox_like(ds, (240, 135))
    np.testing.assert_allclose(ds.intrinsics[0], [1375.52 / 8, 1374.49 / 8, 554.558 / 8, 965.268 / 8],
                               rtol=1e-5)


def test_synthetic_fox_like(tmp_path):
    (tmp_path / "images").mkdir()
    frames = []
    for i in range(3):
        iio.imwrite(tmp_path / "images" / f"{i:04d}.jpg", np.full((64, 32, 3), 90, np.uint8))
        m = np.eye(4)
        m[:3, 3] = [3.0 * math.cos(i), 3.0 * math.sin(i), -1.0]
        frames.append({"file_path": f"images/{i:04d}.jpg", "sharpness": 30.0, "transform_matrix": m.tolist()})
    meta = {"fl_x": 40.0, "fl_y": 40.0, "cx": 16.0, "cy": 32.0, "w": 32.0, "h": 64.0, "k1": 0.06,
            "k2": -0.08, "p1": -0.001, "p2": 0.0002, "aabb_scale": 4, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    check_fox_like(load_dataset(tmp_path, "all", downscale=8), (8, 4))
