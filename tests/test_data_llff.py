"""LLFF poses_bounds.npy loader on small synthetic folders."""
import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.data import DataError, detect_format, load_dataset
from taichi_nerf.data.poses import look_at


def to_llff_rows(c2w_gl, hwf, bounds):
    """OpenGL c2w (N, 4, 4) -> poses_bounds rows: [down, right, back, t, hwf] then near, far."""
    x, y, z, t = (c2w_gl[:, :3, i] for i in range(4))
    mats = np.stack([-y, x, z, t, np.broadcast_to(hwf, t.shape)], axis=2)  # (N, 3, 5)
    return np.concatenate([mats.reshape(-1, 15), bounds], axis=1)


EYES = [[0, -4, 0.5], [4, 0, 0.5], [0, 4, 0.5], [-4, 0, 0.5], [0.1, -4, 0.5]]


def make_llff(root, size=(16, 12), hwf=(24, 32, 40.0), small=None):
    poses = np.stack([look_at(e, [0, 0, 0.5]) for e in EYES])
    bounds = np.tile([2.0, 6.0], (len(EYES), 1))
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", to_llff_rows(poses, hwf, bounds))
    w, h = size
    for folder, (fw, fh), value in [("images", (w, h), 10)] + ([(f"images_{small}", (w // small, h // small), 200)]
                                                                if small else []):
        (root / folder).mkdir()
        for i in range(len(EYES)):
            iio.imwrite(root / folder / f"IMG_{i:02d}.png", np.full((fh, fw, 3), value + i, np.uint8))
    return root, poses


def test_llff_poses_intrinsics_and_scene(tmp_path):
    root, poses = make_llff(tmp_path)
    assert detect_format(root) == "llff"
    ds = load_dataset(root, "all", downscale=2)
    assert ds.format == "llff" and ds.images.shape == (5, 6, 8, 3)
    # hwf says 32 wide with focal 40; the images are 16 wide -> focal 20, then /2.
    np.testing.assert_allclose(ds.intrinsics, [[10.0, 10.0, 4.0, 3.0]] * 5, rtol=1e-6)
    np.testing.assert_allclose(ds.poses, poses, atol=1e-6)  # up is already +z
    np.testing.assert_allclose(-ds.poses[0, :3, 2], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(np.array([0, 0, 0.5]) * ds.scene_scale + ds.scene_offset, 0.5, atol=1e-3)
    model = ds.transform_poses()
    assert np.all(np.abs(model[:, :3, 3] - 0.5) <= ds.aabb_scale / 2)
    np.testing.assert_allclose(ds.images[:, 0, 0, 0] * 255, 10 + np.arange(5), atol=1e-3)


def test_llff_uses_preshrunk_images_folder(tmp_path):
    root, _ = make_llff(tmp_path, small=4)
    ds = load_dataset(root, "train", downscale=4)
    assert ds.images.shape == (5, 3, 4, 3)
    np.testing.assert_allclose(ds.images[:, 0, 0, 0] * 255, 200 + np.arange(5), atol=1e-3)
    np.testing.assert_allclose(ds.intrinsics[0], [5.0, 5.0, 2.0, 1.5], rtol=1e-6)
    ds2 = load_dataset(root, "train", downscale=2)  # no images_2: area filter on images/
    np.testing.assert_allclose(ds2.images[:, 0, 0, 0] * 255, 10 + np.arange(5), atol=1e-3)


def test_llff_holdout(tmp_path):
    root, poses = make_llff(tmp_path)
    tr, te = load_dataset(root, "train", holdout=2), load_dataset(root, "test", holdout=2)
    assert (len(tr), len(te)) == (2, 3) and tr.scene == te.scene
    assert te.names[1].endswith("IMG_02.png")


def test_llff_count_mismatch(tmp_path):
    root, _ = make_llff(tmp_path)
    (root / "images" / "IMG_04.png").unlink()
    with pytest.raises(DataError, match="5 poses but") as e:
        load_dataset(root)
    assert str(e.value).startswith(str(root / "poses_bounds.npy") + ":")


def test_llff_bad_shape_and_nonfinite(tmp_path):
    root, _ = make_llff(tmp_path)
    np.save(root / "poses_bounds.npy", np.zeros((5, 15)))
    with pytest.raises(DataError, match=r"\(N, 17\)"):
        load_dataset(root)
    rows = np.ones((5, 17))
    rows[3, 3] = np.nan
    np.save(root / "poses_bounds.npy", rows)
    with pytest.raises(DataError, match="frame 3.*not finite") as e:
        load_dataset(root)
    assert str(root / "poses_bounds.npy") in str(e.value)
