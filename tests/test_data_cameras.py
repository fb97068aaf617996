"""load_cameras: a split's cameras from the metadata alone, the same parser load_dataset uses.

Every format is checked on the built-in scene and its variants at 16 px (Blender; instant-ngp
made from it; COLMAP: room; LLFF: forward): load_cameras gives exactly load_dataset's poses,
intrinsics and sizes, and still gives them when every image's pixel data is cut off.
"""
import json
import shutil

import numpy as np
import pytest

from taichi_nerf.nn import runtime
from taichi_nerf.render.camera_paths import resolve_path
from taichi_nerf.data import DataError, builtin, load_cameras, load_dataset
from taichi_nerf.data.images import IMAGE_EXTENSIONS

RES = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Format name -> dataset folder (written once per module)."""
    runtime.init("cpu")
    cache = tmp_path_factory.mktemp("cameras-cache")
    out = {"blender": builtin.ensure_builtin_scene(RES, cache, progress=False),
           "colmap": builtin.ensure_builtin_scene(RES, cache, progress=False, variant="room"),
           "llff": builtin.ensure_builtin_scene(RES, cache, progress=False, variant="forward")}
    # instant-ngp: every Blender frame in one transforms.json; half the frames give w and h
    ngp = tmp_path_factory.mktemp("ngp")
    frames = []
    for split in ("train", "val", "test"):
        shutil.copytree(out["blender"] / split, ngp / split)
        frames += json.loads((out["blender"] / f"transforms_{split}.json").read_text())["frames"]
    for i, f in enumerate(frames):
        if i % 2:
            f["w"], f["h"] = RES, RES
    (ngp / "transforms.json").write_text(json.dumps(
        {"camera_angle_x": builtin.CAMERA_ANGLE_X, "aabb_scale": 2, "frames": frames}))
    out["ngp"] = ngp
    return out


def truncated_copy(folder, dest):
    """A copy of `folder` whose image files keep only their first half: the header (size,
    channels) survives, the pixel data does not."""
    shutil.copytree(folder, dest)
    n = 0
    for p in dest.rglob("*"):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            data = p.read_bytes()
            p.write_bytes(data[:len(data) // 2])
            n += 1
    assert n > 0
    return dest


def assert_same_cameras(cams, ds):
    for name in ("poses", "intrinsics", "distortion"):
        a, b = getattr(cams, name), getattr(ds, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert (cams.width, cams.height) == (ds.width, ds.height)
    assert cams.scene == ds.scene and cams.format == ds.format
    assert [str(f) for f in cams.files] == ds.names
    if ds.depth_obs is None:
        assert cams.depth_obs is None
    else:
        assert np.array_equal(cams.depth_obs, ds.depth_obs)


@pytest.mark.parametrize("fmt", ["blender", "ngp", "colmap", "llff"])
@pytest.mark.parametrize("split, downscale, holdout", [("train", 1, 0), ("test", 2, 8),
                                                       ("all", 1, 3)])
def test_cameras_are_the_datasets_without_decoding(fmt, split, downscale, holdout, folders,
                                                   tmp_path):
    folder = folders[fmt]
    ds = load_dataset(folder, split, downscale, holdout)
    assert_same_cameras(load_cameras(folder, split, downscale, holdout), ds)
    broken = truncated_copy(folder, tmp_path / "broken")
    with pytest.raises(DataError, match="unreadable image"):
        load_dataset(broken, split, downscale, holdout)  # the pixels really are gone
    cams = load_cameras(broken, split, downscale, holdout)
    assert np.array_equal(cams.poses, ds.poses) and np.array_equal(cams.intrinsics, ds.intrinsics)
    assert (cams.width, cams.height) == (ds.width, ds.height)


def test_scene_override_and_bad_arguments(folders):
    train = load_cameras(folders["colmap"], "train", holdout=8)
    test = load_cameras(folders["blender"], "test", scene=train.scene.to_dict())
    assert test.scene == train.scene
    with pytest.raises(DataError, match="downscale must be an integer"):
        load_cameras(folders["blender"], "test", downscale=0)
    with pytest.raises(DataError, match="larger than the image"):
        load_cameras(folders["blender"], "test", downscale=RES + 1)


@pytest.mark.parametrize("split, holdout", [("test", 8), ("train", 8), ("val", 3), ("test", 0)])
def test_render_path_from_data_follows_the_holdout_and_decodes_nothing(split, holdout, folders,
                                                                       tmp_path):
    """`render --path DATA` cameras (camera_paths.resolve_path): the --split frames under
    --holdout (every K-th frame is val/test, as in train), from a folder of unreadable images."""
    full = load_dataset(folders["ngp"], "all")
    broken = truncated_copy(folders["ngp"], tmp_path / "broken")
    path = resolve_path(str(broken), {}, tmp_path / "no-run", frames=1, split=split,
                        holdout=holdout)
    idx = np.arange(len(full))
    held = idx % holdout == 0 if holdout else np.ones(len(full), bool)
    want = idx[~held] if split == "train" and holdout else idx[held]
    assert np.array_equal(path.poses, full.poses[want])
    assert np.array_equal(path.intrinsics, full.intrinsics[want])
    assert path.widths.tolist() == [RES] * len(want)
