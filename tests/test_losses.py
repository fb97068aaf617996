"""Regularisers on packed samples against per-ray float64 brute force."""
import pytest
import torch

from taichi_nerf.nn.losses import distortion_loss, sample_weights, sparse_depth_loss


def _packed(gen, counts):
    counts = torch.tensor(counts, dtype=torch.int32)
    starts = torch.cumsum(counts, 0, dtype=torch.int32) - counts
    rays = torch.stack([starts, counts], -1)
    ray_index = torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int32), counts.long())
    m = int(counts.sum())
    dt = 0.01 + 0.05 * torch.rand(m, generator=gen)
    t = torch.zeros(m)
    for r, (s, c) in enumerate(rays.tolist()):
        t0 = float(torch.rand(1, generator=gen))
        edges = t0 + torch.cumsum(dt[s:s + c], 0) - dt[s:s + c]
        t[s:s + c] = edges + 0.5 * dt[s:s + c]
    sigma = 30 * torch.rand(m, generator=gen) ** 3
    return sigma, t, dt, rays, ray_index


def _brute(sigma, t, dt, rays):
    total, weights = 0.0, []
    for s, c in rays.tolist():
        sg, tt, d = sigma[s:s + c].double(), t[s:s + c].double(), dt[s:s + c].double()
        alpha = 1 - torch.exp(-sg * d)
        T = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), 1 - alpha[:-1]]), 0)
        w = T * alpha
        weights.append(w)
        total = total + (w[:, None] * w[None, :] * (tt[:, None] - tt[None, :]).abs()).sum() \
            + (w * w * d).sum() / 3
    return total / len(rays), torch.cat(weights)


def test_weights_and_distortion_match_brute_force(gen):
    sigma, t, dt, rays, ray_index = _packed(gen, [5, 0, 17, 1, 40, 3])
    sigma.requires_grad_(True)
    loss = distortion_loss(sigma, t, dt, rays, ray_index)
    ref, w_ref = _brute(sigma, t, dt, rays)
    w = sample_weights(sigma, dt, rays, ray_index)
    assert torch.allclose(w.double(), w_ref, rtol=1e-5, atol=1e-7)
    assert abs(float(loss) - float(ref)) <= 1e-5 * float(ref)
    g, = torch.autograd.grad(loss, sigma)
    g_ref, = torch.autograd.grad(ref, sigma)
    assert torch.allclose(g.double(), g_ref.double(), rtol=1e-4, atol=1e-6)


def test_distortion_prefers_one_surface_to_fog():
    # the same total opacity on one ray, gathered in one sample or spread as fog
    n = 64
    dt = torch.full((n,), 0.02)
    t = (torch.arange(n) + 0.5) * 0.02
    rays = torch.tensor([[0, n]], dtype=torch.int32)
    idx = torch.zeros(n, dtype=torch.int32)
    surface = torch.zeros(n)
    surface[30] = 200.0
    fog = torch.full((n,), 200.0 / n)
    assert distortion_loss(surface, t, dt, rays, idx) < 0.2 * distortion_loss(fog, t, dt, rays, idx)


def test_infinite_density_stays_finite():
    sigma = torch.tensor([1.0, float("inf"), 3.0, float("inf"), 2.0], requires_grad=True)
    t = torch.arange(5.0) * 0.1
    dt = torch.full((5,), 0.1)
    rays = torch.tensor([[0, 2], [2, 3]], dtype=torch.int32)
    idx = torch.tensor([0, 0, 1, 1, 1], dtype=torch.int32)
    loss = distortion_loss(sigma, t, dt, rays, idx)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(sigma.grad).all()
    w = sample_weights(sigma, dt, rays, idx)
    assert float(w[2:].sum()) == pytest.approx(1.0)


def test_distortion_of_no_samples_is_zero_with_a_gradient():
    sigma = torch.zeros(0, requires_grad=True)
    rays = torch.zeros(2, 2, dtype=torch.int32)
    loss = distortion_loss(sigma, torch.zeros(0), torch.zeros(0), rays, torch.zeros(0, dtype=torch.int32))
    assert float(loss) == 0.0
    loss.backward()


def test_near_gradient_scale_shrinks_only_gradients_near_the_camera(gen):
    from taichi_nerf.nn.losses import near_gradient_scale, scale_gradient
    t = torch.rand(50, generator=gen, dtype=torch.float64) * 3
    k = near_gradient_scale(t, 1.5)
    assert torch.allclose(k, torch.clamp((t / 1.5) ** 2, max=1.0))
    x = torch.randn(50, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.randn(50, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    gx, gc = torch.randn(50, generator=gen, dtype=torch.float64), torch.randn(50, 3, generator=gen, dtype=torch.float64)
    y, z = scale_gradient(x, k), scale_gradient(c, k)
    assert torch.equal(y, x) and torch.equal(z, c)           # forward unchanged
    torch.autograd.backward([y, z], [gx, gc])
    assert torch.allclose(x.grad, gx * k) and torch.allclose(c.grad, gc * k[:, None])


def _brute_sparse_depth(sigma, t, dt, rays, depth, tol):
    terms = []
    for r, d in enumerate(depth.double().tolist()):
        s, c = rays[r].tolist()
        sg, tt, dd = sigma[s:s + c].double(), t[s:s + c].double(), dt[s:s + c].double()
        alpha = 1 - torch.exp(-sg * dd)
        T = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), 1 - alpha[:-1]]), 0)
        w = T * alpha
        front = w[tt < d * (1 - tol)].sum()
        reach = w[tt <= d * (1 + tol)].sum()
        terms.append(front + 0.5 * (1 - reach))
    return torch.stack(terms).mean()


def test_sparse_depth_matches_brute_force(gen):
    """Only the first D rays count; value and density gradient equal a float64 per-ray loop."""
    sigma, t, dt, rays, ray_index = _packed(gen, [9, 0, 30, 4, 25, 12])
    depth = t[rays[:4, 0].long().clamp(max=len(t) - 1)] + 0.5 * torch.rand(4, generator=gen)
    sigma.requires_grad_(True)
    loss = sparse_depth_loss(sigma, t, dt, rays, ray_index, depth, 0.05)
    ref = _brute_sparse_depth(sigma, t, dt, rays, depth, 0.05)
    assert abs(float(loss) - float(ref)) <= 1e-5 * float(ref)
    g, = torch.autograd.grad(loss, sigma)
    g_ref, = torch.autograd.grad(ref, sigma)
    assert torch.allclose(g.double(), g_ref.double(), rtol=1e-4, atol=1e-7)
    assert g[int(rays[4, 0]):].abs().sum() == 0  # rays past the first D get no gradient


def test_sparse_depth_rewards_the_surface_at_the_point():
    """A ray whose weight sits at its point costs ~0, a floater in front of it ~1, an empty
    ray 0.5; the floater's density is pushed down, the point's up."""
    t = torch.arange(100, dtype=torch.float32) * 0.02 + 0.01  # 0..2 in steps of 0.02
    dt = torch.full((100,), 0.02)
    rays = torch.tensor([[0, 100]], dtype=torch.int32)
    ri = torch.zeros(100, dtype=torch.int32)
    depth = torch.tensor([1.5])
    at_point = torch.where((t - 1.5).abs() < 0.03, 1e3, 0.0)
    floater = torch.where((t - 0.3).abs() < 0.03, 1e3, 0.0)
    assert float(sparse_depth_loss(at_point, t, dt, rays, ri, depth, 0.05)) < 1e-6
    assert abs(float(sparse_depth_loss(floater, t, dt, rays, ri, depth, 0.05)) - 1.0) < 1e-6
    assert abs(float(sparse_depth_loss(torch.zeros(100), t, dt, rays, ri, depth, 0.05)) - 0.5) < 1e-6
    sigma = (floater * 1e-3 + torch.where((t - 1.5).abs() < 0.03, 1.0, 0.0)).requires_grad_(True)
    g, = torch.autograd.grad(sparse_depth_loss(sigma, t, dt, rays, ri, depth, 0.05), sigma)
    assert g[(t - 0.3).abs() < 0.03].min() > 0 and g[(t - 1.5).abs() < 0.03].max() < 0
