"""instant-ngp transforms.json loader on small synthetic folders."""
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.data import DataError, detect_format, load_dataset


def pose(i):
    m = np.eye(4)
    m[:3, 3] = [i, -2.0 * i, 0.5]
    return m


def make_ngp(root, n=5, size=(16, 8), meta=None, frame_extra=None, ext=".jpg"):
    """Folder with transforms.json (global intrinsics + distortion) and n images."""
    w, h = size
    (root / "images").mkdir(parents=True)
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), (40 * i) % 256, np.uint8)
        iio.imwrite(root / "images" / f"{i:04d}{ext}", img)
        fr = {"file_path": f"images/{i:04d}{ext}", "sharpness": 30.0, "transform_matrix": pose(i).tolist()}
        fr.update((frame_extra or {}).get(i, {}))
        frames.append(fr)
    data = {"fl_x": 20.0, "fl_y": 22.0, "cx": 7.5, "cy": 4.25, "w": float(w), "h": float(h),
            "k1": 0.05, "k2": -0.08, "p1": -0.001, "p2": 0.0002, "aabb_scale": 4, "frames": frames}
    data.update(meta or {})
    (root / "transforms.json").write_text(json.dumps(data))
    return root


def test_ngp_values_after_downscale(tmp_path):
    root = make_ngp(tmp_path)
    assert detect_format(root) == "ngp"
    ds = load_dataset(root, "train", downscale=4)
    assert ds.format == "ngp" and len(ds) == 5
    assert ds.images.shape == (5, 2, 4, 3)
    np.testing.assert_allclose(ds.images[3], 120 / 255, atol=2 / 255)  # flat JPEG survives
    np.testing.assert_allclose(ds.intrinsics[0], [5.0, 5.5, 7.5 / 4, 4.25 / 4], rtol=1e-6)
    np.testing.assert_allclose(ds.distortion[0], [0.05, -0.08, -0.001, 0.0002], rtol=1e-6)
    np.testing.assert_allclose(ds.poses, np.stack([pose(i) for i in range(5)]), atol=1e-6)
    # instant-ngp defaults: scale 0.33, offset 0.5; aabb_scale from the file.
    assert ds.scene_scale == pytest.approx(0.33) and ds.aabb_scale == 4
    np.testing.assert_allclose(ds.scene_offset, 0.5)
    assert ds.background is None


def test_ngp_places_points_like_nerf_matrix_to_ngp(tmp_path):
    # instant-ngp: ngp = cycle(p * scale + offset), cycle (x, y, z) -> (y, z, x). The
    # cycle maps the cube around 0.5 onto itself, so box membership is the same.
    root = make_ngp(tmp_path, n=1, meta={"scale": 0.2, "offset": [0.1, 0.5, 0.9], "aabb_scale": 2})
    ds = load_dataset(root)
    p = np.array([[2.0, -1.0, 3.0], [-4.0, 0.0, 2.9], [7.6, 0.0, -7.0]])
    ours = p * ds.scene_scale + ds.scene_offset
    ngp = (p * 0.2 + [0.1, 0.5, 0.9])[:, [1, 2, 0]]
    inside = lambda q: np.all(np.abs(q - 0.5) <= ds.aabb_scale / 2, axis=1)
    np.testing.assert_array_equal(inside(ours), inside(ngp))
    np.testing.assert_array_equal(inside(ours), [True, False, False])
    m = ds.transform_poses()
    np.testing.assert_allclose(m[0, :3, 3], pose(0)[:3, 3] * 0.2 + [0.1, 0.5, 0.9], atol=1e-6)


def test_ngp_aabb_key_and_scalar_offset(tmp_path):
    root = make_ngp(tmp_path, n=1, meta={"aabb": [[-1, -2, 0], [3, 2, 1]]})
    ds = load_dataset(root)
    assert ds.scene_scale == pytest.approx(0.25)
    np.testing.assert_allclose(np.array([1, 0, 0.5]) * ds.scene_scale + ds.scene_offset, 0.5, atol=1e-6)
    root2 = make_ngp(tmp_path / "b", n=1, meta={"offset": 0.25})
    np.testing.assert_allclose(load_dataset(root2).scene_offset, 0.25)


def test_ngp_per_frame_intrinsics_and_camera_angles(tmp_path):
    extra = {1: {"fl_x": 30.0, "fl_y": 31.0, "cx": 8.0, "cy": 4.0, "k1": 0.5}}
    meta = {"fl_x": None, "fl_y": None, "cx": None, "cy": None, "camera_angle_x": 1.0}
    root = make_ngp(tmp_path, n=2, meta=meta, frame_extra=extra)
    ds = load_dataset(root)
    f = 0.5 * 16 / math.tan(0.5)
    np.testing.assert_allclose(ds.intrinsics[0], [f, f, 8.0, 4.0], rtol=1e-6)  # fl_y copies fl_x
    np.testing.assert_allclose(ds.intrinsics[1], [30.0, 31.0, 8.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(ds.distortion[:, 0], [0.05, 0.5], rtol=1e-6)


def test_ngp_camera_angle_y_only_and_size_from_images(tmp_path):
    meta = {"fl_x": None, "fl_y": None, "w": None, "h": None, "cx": None, "cy": None,
            "camera_angle_y": 0.8}
    ds = load_dataset(make_ngp(tmp_path, n=1, meta=meta))
    f = 0.5 * 8 / math.tan(0.4)
    np.testing.assert_allclose(ds.intrinsics[0], [f, f, 8.0, 4.0], rtol=1e-6)


@pytest.mark.parametrize("holdout,train,val", [(0, 10, 10), (3, 6, 4), (2, 5, 5)])
def test_ngp_holdout_split_sizes(tmp_path, holdout, train, val):
    root = make_ngp(tmp_path, n=10, size=(4, 4), ext=".png")
    tr = load_dataset(root, "train", holdout=holdout)
    va = load_dataset(root, "val", holdout=holdout)
    te = load_dataset(root, "test", holdout=holdout)
    assert (len(tr), len(va), len(te)) == (train, val, val)
    assert len(load_dataset(root, "all", holdout=holdout)) == 10
    if holdout:
        assert va.names[1].endswith(f"{holdout:04d}.png") and tr.names[0].endswith("0001.png")
        assert va.scene == tr.scene


def test_ngp_scene_override(tmp_path):
    from taichi_nerf.data import SceneTransform
    root = make_ngp(tmp_path, n=1)
    ds = load_dataset(root, scene=SceneTransform(0.5, [0.1, 0.2, 0.3], 16))
    assert ds.scene_scale == 0.5 and ds.aabb_scale == 16
    ds2 = load_dataset(root, scene=ds.scene.to_dict())
    assert ds2.scene == ds.scene


def test_ngp_rgba_gets_white_background(tmp_path):
    root = make_ngp(tmp_path, n=1, size=(4, 4), ext=".png")
    iio.imwrite(root / "images" / "0000.png", np.zeros((4, 4, 4), np.uint8))
    np.testing.assert_array_equal(load_dataset(root).background, [1, 1, 1])


def test_ngp_unsupported_distortion_is_an_error(tmp_path):
    root = make_ngp(tmp_path, n=1, meta={"k3": 0.1})
    with pytest.raises(DataError, match="k3") as e:
        load_dataset(root)
    assert str(e.value).startswith(str(root / "transforms.json") + ":")


@pytest.mark.parametrize("value", [3, 0, 256, "4"])
def test_ngp_bad_aabb_scale(tmp_path, value):
    root = make_ngp(tmp_path, n=1, meta={"aabb_scale": value})
    with pytest.raises(DataError, match="aabb_scale"):
        load_dataset(root)
