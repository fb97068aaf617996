"""Blender / NeRF-synthetic loader on small synthetic folders."""
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.data import DataError, detect_format, load_dataset

ANGLE = 0.69


def pose(i):
    m = np.eye(4)
    c, s = math.cos(i), math.sin(i)
    m[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    m[:3, 3] = [4 * c, 4 * s, 1.0 + i]
    return m


def make_blender(root, splits=("train", "val"), n=3, size=(16, 12), ext=False):
    """NeRF-synthetic-like folder: RGBA PNGs, file_path without extension, camera_angle_x."""
    rng = np.random.default_rng(0)
    w, h = size
    for s in splits:
        (root / s).mkdir(parents=True)
        frames = []
        for i in range(n):
            iio.imwrite(root / s / f"r_{i}.png", rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
            frames.append({"file_path": f"./{s}/r_{i}" + (".png" if ext else ""), "rotation": 0.1,
                           "transform_matrix": pose(i + 10 * len(s)).tolist()})
        (root / f"transforms_{s}.json").write_text(json.dumps({"camera_angle_x": ANGLE, "frames": frames}))
    return root


def test_blender_train_split_values(tmp_path):
    root = make_blender(tmp_path)
    assert detect_format(root) == "blender"
    ds = load_dataset(root, "train", downscale=2)
    assert ds.format == "blender" and len(ds) == 3
    assert ds.images.shape == (3, 6, 8, 4) and ds.images.dtype == np.float32
    assert (ds.width, ds.height) == (8, 6)
    fx = 0.5 * 16 / math.tan(ANGLE / 2) / 2
    np.testing.assert_allclose(ds.intrinsics, [[fx, fx, 4.0, 3.0]] * 3, rtol=1e-6)
    np.testing.assert_array_equal(ds.distortion, 0)
    np.testing.assert_allclose(ds.poses, np.stack([pose(i + 50) for i in range(3)]), atol=1e-6)
    assert ds.scene_scale == pytest.approx(1 / 3)
    np.testing.assert_allclose(ds.scene_offset, 0.5)
    assert ds.aabb_scale == 1
    np.testing.assert_array_equal(ds.background, [1, 1, 1])
    assert ds.names[0].endswith("r_0.png")
    full = iio.imread(root / "train" / "r_1.png").astype(np.float64) / 255
    np.testing.assert_allclose(ds.images[1, 0, 0, 3], full[:2, :2, 3].mean(), atol=1e-6)


def test_blender_world_box_maps_to_unit_cube(tmp_path):
    ds = load_dataset(make_blender(tmp_path, n=1), "train")
    corners = np.array([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
    np.testing.assert_allclose(corners * ds.scene_scale + ds.scene_offset, [[0, 0, 0], [1, 1, 1]], atol=1e-6)


def test_blender_val_and_all_splits_and_extensions(tmp_path):
    root = make_blender(tmp_path, ext=True)
    assert len(load_dataset(root, "val")) == 3
    ds = load_dataset(root, "all")
    assert len(ds) == 6 and ds.names[3].endswith("val/r_0.png")


def test_blender_missing_split_names_file_and_present_splits(tmp_path):
    root = make_blender(tmp_path, splits=("train", "val"), n=1)
    with pytest.raises(DataError) as e:
        load_dataset(root, "test")
    msg = str(e.value)
    assert msg.startswith(str(root / "transforms_test.json") + ":")
    assert "train, val" in msg and "\n" not in msg


def test_blender_folder_with_only_test_split(tmp_path):
    root = make_blender(tmp_path, splits=("test",), n=2)
    ds = load_dataset(root, "test")
    assert len(ds) == 2 and ds.scene_scale == pytest.approx(1 / 3)


def test_blender_empty_split_is_an_error(tmp_path):
    root = make_blender(tmp_path, splits=("train",), n=1)
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": ANGLE, "frames": []}))
    with pytest.raises(DataError, match="no frames") as e:
        load_dataset(root, "train")
    assert str(root / "transforms_train.json") in str(e.value)
