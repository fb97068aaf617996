"""The torch-free inference path (Taichi MLP + kernels) against the torch renderer."""
import numpy as np
import pytest
import torch

from taichi_nerf import runtime
from taichi_nerf.data import load_dataset
from taichi_nerf.kernels import mlp as mlp_k
from taichi_nerf.kernels.inference import NerfModel
from taichi_nerf.metrics import psnr
from taichi_nerf.trainer import load_model

from conftest import RES, rel_err


@pytest.mark.parametrize("act", ["relu", "sigmoid", "none"])
def test_taichi_mlp_equals_torch_mlp(arch, gen, act):
    net = torch.nn.Sequential(torch.nn.Linear(31, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 3))
    x = torch.randn(1000, 31, generator=gen)
    layers = [(m.weight.detach().contiguous().numpy(), m.bias.detach().numpy())
              for m in net if isinstance(m, torch.nn.Linear)]
    y = mlp_k.mlp_forward(x.numpy(), layers, ["relu", "relu", act],
                          lambda shape: np.zeros(shape, np.float32))
    with torch.no_grad():
        ref = net.double()(x.double())
        ref = {"relu": ref.relu(), "sigmoid": ref.sigmoid(), "none": ref}[act]
    assert rel_err(torch.from_numpy(y), ref) < 1e-5


def test_torch_free_render_matches_torch_render(trained, scene_dir, arch):
    out, _ = trained
    runtime.init("cpu")
    _, renderer, scene = load_model(out / "checkpoint.npz")
    test = load_dataset(scene_dir, "test", scene=scene)
    pose = test.transform_poses()[0]
    ref = renderer.render_image(torch.from_numpy(pose), torch.from_numpy(test.intrinsics[0]),
                                torch.from_numpy(test.distortion[0]), RES, RES, torch.ones(3))
    runtime.init(arch)
    model = NerfModel.load(str(out / "checkpoint.npz"))
    img = model.render_image(pose, test.intrinsics[0], RES, RES, bg=np.ones(3, np.float32))
    assert psnr(img["rgb"], ref["rgb"].numpy()) >= 40.0
    assert np.abs(img["opacity"] - ref["opacity"].numpy()).max() < 1e-3
    runtime.init("cpu")
