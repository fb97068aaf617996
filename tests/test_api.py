"""The Python API (`import taichi_nerf as tn`): train, load, render, init; cheap import."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import taichi_nerf as tn
from taichi_nerf.data.scene import to_model_space
from taichi_nerf.training.trainer import load_model

# the conftest small_config's sizes as keyword overrides, and a tiny table: seconds on 2 cores
FAST = dict(arch="cpu", progress=False, log2_table=12, target_samples=1 << 15,
            occ_resolution=64, occ_cells_per_update=1 << 16, occ_warmup_steps=64)


def test_train_writes_checkpoint_and_metrics(scene_dir, tmp_path):
    run = tmp_path / "run"
    result = tn.train(scene_dir, out=run, steps=3, **FAST)
    assert result.run == run
    assert (run / "checkpoint.npz").is_file()
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["steps"] == result.metrics["steps"] == 3
    assert np.isfinite(result.metrics["psnr"])
    nerf = tn.load(result)  # a TrainResult is os.fspath-able: its run folder
    assert nerf.config["train"]["log2_table"] == 12  # **config reached the TrainConfig
    assert nerf.config["train"]["steps"] == 3 and nerf.config["train"]["time"] is None


def test_render_matches_the_renderer_on_the_pose_mapped_by_hand(trained):
    run, _ = trained
    nerf = tn.load(run)
    poses = nerf.poses
    assert poses is not None and poses.shape[1:] == (4, 4)
    pose = poses[0]
    img = nerf.render(pose)
    h, w = nerf.height, nerf.width
    assert img["rgb"].shape == (h, w, 3) and img["rgb"].dtype == np.float32
    assert img["depth"].shape == img["opacity"].shape == (h, w)

    cfg, renderer, scene = load_model(nerf.checkpoint)
    dev = renderer.grid.density.device
    model = to_model_space(pose, scene.scale, scene.offset)
    ref = renderer.render_image(torch.from_numpy(model).to(dev),
                                torch.tensor(cfg["intrinsics"], dtype=torch.float32),
                                torch.zeros(4), w, h,
                                torch.tensor(cfg.get("background") or [0.0] * 3,
                                             dtype=torch.float32))
    assert np.abs(img["rgb"] - ref["rgb"].numpy()).max() <= 1e-6
    assert np.abs(img["opacity"] - ref["opacity"].numpy()).max() <= 1e-6
    # depth in world units: the model-space depth divided by the scene scale
    np.testing.assert_allclose(img["depth"], ref["depth"].numpy() / scene.scale,
                               rtol=1e-5, atol=1e-6)
    assert scene.scale != 1.0 and img["opacity"].max() > 0.5  # the check has teeth


def test_render_world_depth_is_the_camera_to_surface_distance(trained):
    # the trained field's surface distance (depth / opacity) against where the camera sits:
    # moving the camera back along its axis by d world units adds d to every surface distance
    nerf = tn.load(trained[0])
    pose = nerf.poses[0].astype(np.float64)
    back = pose.copy()
    d = 0.25 / nerf.scene.scale  # a quarter of a model unit, in world units
    back[:3, 3] += pose[:3, 2] * d  # OpenGL cameras look down -z: +z moves away
    a, b = nerf.render(pose, 32, 32), nerf.render(back, 32, 32)
    hit = (a["opacity"] > 0.99) & (b["opacity"] > 0.99)
    assert hit.sum() > 20
    # pixel rays differ slightly in direction, so compare the median, not every pixel
    extra = np.median(b["depth"][hit] / b["opacity"][hit] - a["depth"][hit] / a["opacity"][hit])
    assert extra == pytest.approx(d, rel=0.15)


def test_render_defaults_scale_the_training_camera(trained):
    nerf = tn.load(trained[0])
    k = nerf.intrinsics(nerf.width * 2, nerf.height)
    fx, fy, cx, cy = nerf.config["intrinsics"]
    np.testing.assert_allclose(k, [2 * fx, fy, 2 * cx, cy], rtol=1e-6)
    with pytest.raises(ValueError, match="c2w"):
        nerf.render(np.eye(3))


def test_unknown_config_name_is_a_type_error(scene_dir, tmp_path):
    with pytest.raises(TypeError, match="no_such_option.*lr_typo|lr_typo.*no_such_option"):
        tn.train(scene_dir, out=tmp_path / "run", steps=1, no_such_option=1, lr_typo=2,
                 arch="cpu", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_bad_option_is_a_value_error(scene_dir, tmp_path):
    with pytest.raises(ValueError, match="log2_table"):
        tn.train(scene_dir, out=tmp_path / "run", steps=1, log2_table=2, arch="cpu",
                 progress=False)


def test_import_loads_neither_taichi_nor_torch():
    code = ("import sys, taichi_nerf as tn; tn.__version__; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'taichi', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_version_and_all():
    assert isinstance(tn.__version__, str) and tn.__version__
    for name in tn.__all__:
        assert getattr(tn, name) is not None, name
    assert tn.init.__module__ == "taichi_nerf.api"
    with pytest.raises(AttributeError):
        tn.no_such_name


def test_no_subpackage_hides_an_api_name():
    """Importing a submodule sets it as an attribute of the package: a subpackage named like an
    API function (a `train/` folder) would replace tn.train once anything imported it."""
    import pkgutil
    import taichi_nerf.training.trainer  # noqa: F401
    subpackages = {m.name for m in pkgutil.iter_modules(tn.__path__)}
    assert subpackages and not subpackages & set(tn.__all__)
    assert callable(tn.train) and callable(tn.load) and callable(tn.init)
