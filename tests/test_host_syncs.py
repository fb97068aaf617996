"""Host syncs of the per-step ops: on a GPU every read of a tensor's value on the host
(.item(), int(t), float(t), `if t`) waits for all queued GPU work, so the training path
may read only what it cannot do without (march_rays' sample count, the outputs' size).

This machine has no GPU, so "on a GPU" is simulated: value checks are switched off the way
a CUDA tensor switches them off (ops.checks_values -> False), and every host read of a
tensor is counted. The checks themselves are tested where they run, on CPU tensors
(test_hash_grid, test_cameras, test_composite).
"""
import contextlib

import pytest
import torch

from taichi_nerf.nn import cameras, losses, ops
from taichi_nerf.kernels.specs import HashGridSpec, MarchSpec, OccupancySpec

SYNCS = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__")


@pytest.fixture
def as_on_gpu(monkeypatch):
    """Value checks behave as for tensors off the CPU (with CHECK_DEVICE_VALUES unset)."""
    for mod in (ops, cameras):  # cameras imported the name
        monkeypatch.setattr(mod, "checks_values", lambda x: ops.CHECK_DEVICE_VALUES)


@pytest.fixture
def count_syncs(monkeypatch):
    """count_syncs() -> context manager whose `.n` counts host reads of tensor values inside."""
    @contextlib.contextmanager
    def counting():
        box = type("Count", (), {"n": 0})()
        originals = {name: getattr(torch.Tensor, name) for name in SYNCS}

        def wrap(name):
            def counted(self, *a, **kw):
                box.n += 1
                return originals[name](self, *a, **kw)
            return counted
        with monkeypatch.context() as m:
            for name in SYNCS:
                m.setattr(torch.Tensor, name, wrap(name))
            yield box
    return counting


def _step_inputs(gen, n_rays=64):
    """A small step's worth of rays through a fully occupied grid (model space, unit dirs)."""
    d = torch.randn(n_rays, 3, generator=gen)
    d = (d / d.norm(dim=-1, keepdim=True)).contiguous()
    o = (torch.rand(n_rays, 3, generator=gen) * 0.8 + 0.1 - 2.0 * d).contiguous()
    occ = OccupancySpec(n_cascades=1, resolution=16)
    full = torch.full((occ.n_words,), -1, dtype=torch.int32)
    return o, d, full, occ, MarchSpec(min_step=0.02, max_step=0.02, max_samples=256)


def test_training_ops_read_the_host_once(cpu_runtime, gen, as_on_gpu, count_syncs):
    """One step's ops (rays, marching, encoding, compositing, losses; forward and backward)
    read one value on the host: the packed samples' count."""
    o, d, full, occ, march = _step_inputs(gen)
    spec = HashGridSpec(n_levels=4, n_features=2, log2_table=10, base_resolution=4,
                        finest_resolution=32)
    table = (torch.rand(spec.n_params, spec.n_features, generator=gen) * 1e-2).requires_grad_()
    intr = torch.tensor([[20.0, 20.0, 8.0, 8.0]])
    c2w = torch.eye(4)[None, :3].contiguous()
    pix = torch.rand(64, 2, generator=gen) * 16
    cam = torch.zeros(64, dtype=torch.int32)
    bg = torch.rand(64, 3, generator=gen)
    with count_syncs() as rays_syncs:
        cameras.generate_rays(pix, cam, intr, torch.zeros(1, 4), c2w)
    with count_syncs() as march_syncs:
        s = ops.march_rays(o, d, full, occ, march, torch.rand(64, generator=gen))
    assert s.n_samples > 0
    with count_syncs() as rest:
        feat = ops.hash_encode(s.positions.clamp(0, 1).contiguous(), table, spec)
        sigma = feat.sum(-1).exp()
        rgb = torch.sigmoid(feat[:, :3]).contiguous()
        out, _, _, _ = ops.composite(sigma, rgb, s.t, s.dt, s.rays, bg)
        loss = (out - bg).square().mean()
        loss = loss + losses.distortion_loss(sigma, s.t, s.dt, s.rays, s.ray_index)
        depth = s.t[s.rays[:16, 0].long()] + 0.3
        loss = loss + losses.sparse_depth_loss(sigma, s.t, s.dt, s.rays, s.ray_index, depth, 0.05)
        loss.backward()
    assert (rays_syncs.n, march_syncs.n, rest.n) == (0, 1, 0)
    assert table.grad.abs().sum() > 0


def test_bad_values_raise_on_cpu_and_with_the_debug_switch(cpu_runtime, gen, as_on_gpu,
                                                            monkeypatch):
    """Off the CPU the value checks are skipped unless CHECK_DEVICE_VALUES asks for them."""
    spec = HashGridSpec(n_levels=2, n_features=2, log2_table=8, base_resolution=4,
                        finest_resolution=8)
    table = torch.zeros(spec.n_params, spec.n_features)
    outside = torch.full((4, 3), 1.5)
    ops.hash_encode(outside, table, spec)  # as on a GPU: unchecked (the kernel clamps)
    monkeypatch.setattr(ops, "CHECK_DEVICE_VALUES", True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ops.hash_encode(outside, table, spec)
    with pytest.raises(ValueError, match="camera indices"):
        cameras.generate_rays(torch.zeros(2, 2), torch.tensor([0, 1], dtype=torch.int32),
                              torch.ones(1, 4), torch.zeros(1, 4),
                              torch.eye(4)[None, :3].contiguous())
    with pytest.raises(ValueError, match="index inside"):
        ops.composite(torch.zeros(3), torch.zeros(3, 3), torch.zeros(3), torch.zeros(3),
                      torch.tensor([[0, 4]], dtype=torch.int32), torch.zeros(1, 3))


def test_checks_values_follows_the_device(monkeypatch):
    """CPU tensors are always checked; the switch adds the others."""
    x = torch.zeros(2)
    assert ops.checks_values(x)
    monkeypatch.setattr(ops, "CHECK_DEVICE_VALUES", False)
    assert ops.checks_values(torch.zeros(2, device="meta")) is False
    monkeypatch.setattr(ops, "CHECK_DEVICE_VALUES", True)
    assert ops.checks_values(torch.zeros(2, device="meta"))


def test_bad_camera_index_off_the_cpu_reads_nothing_and_is_counted(cpu_runtime, gen, as_on_gpu,
                                                                    count_syncs):
    """Unchecked (as on a GPU), an out-of-range camera index costs no host sync: the kernel
    reads no camera for it, aims its ray away from any model box (no samples) and counts it
    for cameras.bad_camera_indices; good rows are untouched."""
    cpu = torch.device("cpu")
    intr = torch.tensor([[20.0, 20.0, 8.0, 8.0], [30.0, 30.0, 8.0, 8.0]])
    dist = torch.zeros(2, 4)
    c2w = torch.eye(4)[None, :3].repeat(2, 1, 1).contiguous()
    pix = torch.rand(6, 2, generator=gen) * 16
    cam = torch.tensor([0, 2, -1, 1, 1 << 30, 0], dtype=torch.int32)
    good = (cam >= 0) & (cam < 2)
    cameras.bad_camera_indices(cpu)  # start from zero
    with count_syncs() as syncs:
        o, d = cameras.generate_rays(pix, cam, intr, dist, c2w)
    assert syncs.n == 0
    ref_o, ref_d = cameras.generate_rays_reference(pix[good], cam[good], intr, dist, c2w)
    assert torch.allclose(o[good].double(), ref_o) and torch.allclose(d[good].double(), ref_d,
                                                                      atol=1e-6)
    assert torch.isfinite(o).all() and torch.isfinite(d).all()
    # the widest model box there is (aabb_scale 128: 8 cascades), fully occupied
    occ = OccupancySpec(n_cascades=8, resolution=16)
    full = torch.full((occ.n_words,), -1, dtype=torch.int32)
    s = ops.march_rays(o[~good].contiguous(), d[~good].contiguous(), full, occ,
                       MarchSpec(min_step=0.02, max_step=0.02, max_samples=256),
                       torch.rand(3, generator=gen))
    assert s.n_samples == 0
    assert cameras.bad_camera_indices(cpu) == 3
    assert cameras.bad_camera_indices(cpu) == 0  # reading resets
