import math

import pytest
import torch

from taichi_nerf.nn import ops, reference
from conftest import rel_err


def _packed(gen, n_rays=400, max_count=48, sigma_scale=30.0):
    counts = torch.randint(0, max_count + 1, (n_rays,), generator=gen, dtype=torch.int32)
    counts[:3] = torch.tensor([0, 1, max_count], dtype=torch.int32)
    starts = torch.cumsum(counts, 0, dtype=torch.int32) - counts
    M = int(counts.sum())
    sigmas = torch.rand(M, generator=gen) * sigma_scale
    rgbs = torch.rand(M, 3, generator=gen)
    dts = torch.rand(M, generator=gen) * 0.02 + 1e-3
    # t increases along each ray
    ts = torch.cumsum(dts, 0)
    bg = torch.rand(n_rays, 3, generator=gen)
    return sigmas, rgbs, ts, dts, torch.stack([starts, counts], -1), bg


def test_hand_computed_transmittance(arch):
    """Four samples with alpha = 0, 0.3, 0.8, 0.8: T = 1, 1, 0.7, 0.14 before each."""
    alphas = torch.tensor([0.0, 0.3, 0.8, 0.8])
    dts = torch.full((4,), 0.5)
    sigmas = (-torch.log1p(-alphas) / dts).float()
    rgbs = torch.eye(3).repeat(2, 1)[:4].contiguous()
    ts = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rays = torch.tensor([[0, 4]], dtype=torch.int32)
    bg = torch.tensor([[0.5, 0.5, 0.5]])
    rgb, depth, opacity, n_used = ops.composite(sigmas, rgbs, ts, dts, rays, bg)
    w = torch.tensor([0.0, 0.3, 0.56, 0.112])  # T * alpha
    assert torch.allclose(opacity, w.sum()[None], atol=1e-6)
    assert torch.allclose(depth, (w * ts).sum()[None], atol=1e-5)
    expect = (w[:, None] * rgbs).sum(0) + (1 - w.sum()) * 0.5
    assert torch.allclose(rgb[0], expect, atol=1e-6)
    assert n_used.tolist() == [4]


def test_early_termination_stops_after_threshold(arch):
    """T drops to 0.01 after the second sample: with threshold 0.05 the rest is ignored."""
    sigmas = torch.tensor([math.log(10.0), math.log(10.0), 5.0, 5.0])
    dts = torch.ones(4)
    rgbs = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    ts = torch.arange(4.0)
    rays = torch.tensor([[0, 4]], dtype=torch.int32)
    bg = torch.zeros(1, 3)
    rgb, _, opacity, n_used = ops.composite(sigmas, rgbs, ts, dts, rays, bg, t_threshold=0.05)
    assert n_used.item() == 2
    assert torch.allclose(rgb[0], torch.tensor([0.9, 0.09, 0.0]), atol=1e-6)
    assert opacity.item() == pytest.approx(0.99, abs=1e-6)


@pytest.mark.parametrize("threshold", [1e-4, 0.2])
def test_forward_matches_reference(arch, gen, threshold):
    sig, rgb, ts, dts, rays, bg = _packed(gen)
    out = ops.composite(sig, rgb, ts, dts, rays, bg, t_threshold=threshold)[:3]
    ref = reference.composite(sig.double(), rgb.double(), ts.double(), dts.double(), rays,
                              bg.double(), t_threshold=threshold)
    for o, r in zip(out, ref):
        assert rel_err(o, r) < 1e-5


@pytest.mark.parametrize("threshold", [1e-4, 0.2])
def test_gradients_match_reference(arch, gen, threshold):
    sig, rgb, ts, dts, rays, bg = _packed(gen)
    R = rays.shape[0]
    g_rgb, g_d, g_o = (torch.randn(R, 3, generator=gen), torch.randn(R, generator=gen),
                       torch.randn(R, generator=gen))
    s, c = sig.clone().requires_grad_(), rgb.clone().requires_grad_()
    out = ops.composite(s, c, ts, dts, rays, bg, t_threshold=threshold)
    torch.autograd.backward(out[:3], (g_rgb, g_d, g_o))
    s64, c64 = sig.double().requires_grad_(), rgb.double().requires_grad_()
    ref = reference.composite(s64, c64, ts.double(), dts.double(), rays, bg.double(),
                              t_threshold=threshold)
    torch.autograd.backward(ref, (g_rgb.double(), g_d.double(), g_o.double()))
    assert rel_err(s.grad, s64.grad) < 1e-4
    assert rel_err(c.grad, c64.grad) < 1e-4


def test_invalid_inputs(cpu_runtime, gen):
    sig, rgb, ts, dts, rays, bg = _packed(gen, n_rays=8)
    with pytest.raises(ValueError, match="rgbs"):
        ops.composite(sig, rgb[:-1].contiguous(), ts, dts, rays, bg)
    with pytest.raises(ValueError, match="int32"):
        ops.composite(sig, rgb, ts, dts, rays.long(), bg)
    bad = rays.clone()
    bad[-1, 1] += 5
    with pytest.raises(ValueError, match="inside"):
        ops.composite(sig, rgb, ts, dts, bad, bg)
