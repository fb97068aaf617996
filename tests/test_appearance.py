"""Per-image appearance codes: which code a sample gets, the mean code for new views, and
every renderer (torch, torch-free NerfModel, NerfScene) agreeing on the mean code."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from taichi_nerf.nn import runtime
from taichi_nerf.data import load_dataset
from taichi_nerf.nn.field import FieldConfig, NGPField
from taichi_nerf.kernels import mlp as mlp_k
from taichi_nerf.kernels.inference import NerfModel, color_layers
from taichi_nerf.kernels.scene import NerfScene
from taichi_nerf.kernels.specs import HashGridSpec
from taichi_nerf.nn.checkpoint import state_dict_to_arrays
from taichi_nerf.training.metrics import psnr
from taichi_nerf.nn.ops import sh_encode
from taichi_nerf.training.trainer import Trainer, appearance_note, evaluate, load_model

from conftest import rel_err, small_config
from test_scene_kernels import radiance_at

SMALL_GRID = HashGridSpec(n_levels=4, n_features=2, log2_table=10, base_resolution=4,
                          finest_resolution=32)


def _field(gen, n_images=5, dim=4) -> NGPField:
    f = NGPField(FieldConfig(grid=SMALL_GRID, appearance_dim=dim, n_images=n_images),
                 generator=gen)
    with torch.no_grad():
        f.appearance.copy_(torch.randn(n_images, dim, generator=gen))
    return f


def _photos(ds):
    """The same views as opaque photos (no alpha), what appearance codes are for."""
    rgb = ds.images[..., :3] * ds.images[..., 3:] + 0.3 * (1 - ds.images[..., 3:])
    return dataclasses.replace(ds, images=np.ascontiguousarray(rgb), background=None)


def test_each_sample_gets_its_images_code_and_new_views_the_mean(cpu_runtime, gen):
    f = _field(gen)
    pos = torch.rand(64, 3, generator=gen)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=-1)
    image = torch.randint(0, 5, (64,), generator=gen)
    net64 = copy.deepcopy(f.color_net).double()
    codes64 = f.appearance.detach().double()

    def by_hand(codes):  # float64 colour MLP on the field's own inputs
        _, h = f.density(pos)
        x = torch.cat([h.double(), sh_encode(dirs, 4).double(), codes], -1)
        return torch.sigmoid(net64(x))

    with torch.no_grad():
        _, rgb = f(pos, dirs, image)
        _, mean_rgb = f(pos, dirs)
        assert rel_err(rgb, by_hand(codes64[image])) < 1e-5
        assert rel_err(mean_rgb, by_hand(codes64.mean(0).expand(64, -1))) < 1e-5
        assert (rgb - mean_rgb).abs().max() > 1e-3  # the codes matter
    # only the codes of the images in the batch get gradients
    _, rgb = f(pos, dirs, torch.where(image < 2, 1, 3))
    rgb.sum().backward()
    touched = f.appearance.grad.abs().sum(1) > 0
    assert touched.tolist() == [False, True, False, True, False]


def test_folded_mean_code_equals_the_torch_colour_mlp(arch, gen):
    f = _field(gen, n_images=7, dim=8)
    arrays = state_dict_to_arrays("field", f.state_dict())
    layers = color_layers(arrays)
    assert layers[0][0].shape[1] == f.color_net[0].in_features - 8
    x = torch.randn(500, layers[0][0].shape[1], generator=gen)
    y = mlp_k.mlp_forward(x.numpy(), layers, ["relu", "relu", "sigmoid"],
                          lambda shape: np.zeros(shape, np.float32))
    net = f.color_net.double()
    with torch.no_grad():
        mean = f.appearance.double().mean(0).expand(500, -1)
        ref = torch.sigmoid(net(torch.cat([x.double(), mean], -1)))
    assert rel_err(torch.from_numpy(y), ref) < 1e-5
    # no codes: the layers are the checkpoint's as they are
    plain = {k: v for k, v in arrays.items() if k != "field/appearance"}
    assert color_layers(plain)[0][0].shape == arrays["field/color_net.0.weight"].shape
    bad = dict(arrays, **{"field/appearance": np.zeros((7, 500), np.float32)})
    with pytest.raises(ValueError, match="appearance"):
        color_layers(bad)


@pytest.fixture(scope="module")
def photo_run(scene_dir, tmp_path_factory):
    """A few steps on the built-in scene as photos, then clearly different codes per image."""
    runtime.init("cpu")
    ds = _photos(load_dataset(scene_dir, "train"))
    t = Trainer(ds, small_config(steps=40, appearance=6))
    for _ in range(40):
        t.train_step()
    with torch.no_grad():
        t.field.appearance.copy_(torch.randn(t.field.appearance.shape,
                                             generator=torch.Generator().manual_seed(5)) * 10)
    path = tmp_path_factory.mktemp("appearance") / "checkpoint.npz"
    t.save(path)
    return path, ds


def test_off_by_default_one_code_per_image_and_saved(photo_run, cpu_runtime):
    path, ds = photo_run
    assert Trainer(ds, small_config(steps=1)).field.config.appearance_dim == 0
    t = Trainer(ds, small_config(steps=1, appearance=6))
    assert t.field.appearance.shape == (len(ds), 6)
    # resume restores the codes and their optimizer state
    t.load(path)
    _, renderer, _ = load_model(path)
    assert torch.equal(t.field.appearance, renderer.field.appearance)
    assert any(p is t.field.appearance for g in t.optimizer.param_groups for p in g["params"])
    t.train_step()
    # evaluation says which code new views got
    assert appearance_note(renderer.field) == f"mean of {len(ds)} training-image codes"
    assert evaluate(renderer, ds)["appearance"] == appearance_note(renderer.field)
    assert appearance_note(NGPField(FieldConfig(grid=SMALL_GRID))) is None


def test_every_renderer_uses_the_mean_code(photo_run, arch):
    path, ds = photo_run
    runtime.init("cpu")
    _, renderer, _ = load_model(path)
    pose, intr = ds.transform_poses()[0], ds.intrinsics[0]
    ref = renderer.render_image(torch.from_numpy(pose), torch.from_numpy(intr),
                                torch.from_numpy(ds.distortion[0]), 32, 32, torch.zeros(3))
    runtime.init(arch)
    model = NerfModel.load(str(path))
    img = model.render_image(pose, intr, 32, 32, bg=np.zeros(3, np.float32))
    assert psnr(img["rgb"], ref["rgb"].numpy()) >= 40.0
    # the same view with the first image's own code differs: the mean code is what matched
    with torch.no_grad():
        first = renderer.render_rays(*_rays(renderer, pose, intr, ds), torch.zeros(32 * 32, 3),
                                     image=torch.zeros(32 * 32, dtype=torch.long))["rgb"]
    assert psnr(first.reshape(32, 32, 3).numpy(), ref["rgb"].numpy()) < 30.0
    runtime.init("cpu")


def _rays(renderer, pose, intr, ds):
    from taichi_nerf.nn.cameras import generate_rays, pixel_grid
    pix = pixel_grid(32, 32)
    cam = torch.zeros(pix.shape[0], dtype=torch.int32)
    return generate_rays(pix, cam, torch.from_numpy(intr).reshape(1, 4).contiguous(),
                         torch.from_numpy(ds.distortion[0]).reshape(1, 4).contiguous(),
                         torch.from_numpy(pose)[None, :3].contiguous())


def test_scene_radiance_uses_the_mean_code(photo_run, cpu_runtime):
    path, _ = photo_run
    _, renderer, _ = load_model(path)
    scene = NerfScene.load(path.parent)
    rng = np.random.default_rng(0)
    lo, hi = scene.box_world
    pts = rng.uniform(lo, hi, (1000, 3)).astype(np.float32)
    dirs = rng.normal(size=pts.shape).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rgb = np.zeros_like(pts)
    radiance_at(scene, pts, dirs, rgb)
    with torch.no_grad():
        model = torch.from_numpy(scene.world_to_model(pts))
        _, ref = renderer.field(renderer.to_unit(model).contiguous(), torch.from_numpy(dirs))
    assert np.abs(rgb - ref.double().numpy()).max() < 1e-5
