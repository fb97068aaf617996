"""The torch-free training step (kernels/field_train.py) against the torch path on the same
inputs and weights: loss, every gradient, and the parameters after an Adam step."""
import numpy as np
import pytest
import torch

from taichi_nerf.kernels.field_train import DeviceAdam, FieldTrainingStep
from taichi_nerf.kernels.specs import HashGridSpec, MarchSpec, OccupancySpec
from taichi_nerf.nn import ops
from taichi_nerf.nn.field import FieldConfig, NGPField

from conftest import count_transfers, rel_err
from test_march import _bitfield, _rays

SPEC = HashGridSpec(n_levels=4, n_features=2, log2_table=10, base_resolution=4,
                    finest_resolution=64)
OCC = OccupancySpec(n_cascades=1, resolution=16)


def _inputs(gen):
    """A torch field with trained-looking weights, marched samples and targets."""
    field = NGPField(FieldConfig(grid=SPEC, hidden=32, geo_features=8, sh_degree=3),
                     generator=gen)
    with torch.no_grad():  # a table of the size training gives, not the tiny initial one
        field.grid.table.copy_(torch.randn(field.grid.table.shape, generator=gen) * 0.5)
    o, d = _rays(gen, 96)
    full = _bitfield(torch.ones(OCC.n_cells, dtype=torch.bool), OCC)
    s = ops.march_rays(o, d, full, OCC, MarchSpec(min_step=0.04, max_step=0.04, max_samples=64),
                       torch.rand(o.shape[0], generator=gen))
    bg = torch.rand(o.shape[0], 3, generator=gen)
    target = torch.rand(o.shape[0], 3, generator=gen)
    return field, s, bg, target


def _nd(x: torch.Tensor, dtype=np.float32):
    import taichi as ti
    a = np.ascontiguousarray(x.detach().numpy().astype(dtype))
    nd = ti.ndarray(ti.i32 if dtype == np.int32 else ti.f32, shape=a.shape)
    nd.from_numpy(a)
    return nd


def _layers(net):
    return [(m.weight.detach().numpy(), m.bias.detach().numpy())
            for m in net if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("active", [None, 2.4])
def test_taichi_step_equals_torch_step(arch, gen, active):
    """One step on the same samples and weights; active: coarse-to-fine, the first 2 levels
    on, the third at 0.4, the fourth off (None: all on)."""
    field, s, bg, target = _inputs(gen)
    if active is not None:
        field.set_level_weights((active - torch.arange(SPEC.n_levels)).clamp(0.0, 1.0))
    pos = s.positions.clamp(0.0, 1.0).contiguous()  # the box is the unit cube here
    # torch path: the trainer's loss on the same samples
    sigma, rgb = field(pos, s.dirs)
    out, _, _, _ = ops.composite(sigma, rgb, s.t, s.dt, s.rays, bg)
    loss = torch.nn.functional.mse_loss(out, target)
    params = [field.grid.table] + [p for net in (field.density_net, field.color_net)
                                   for m in net if isinstance(m, torch.nn.Linear)
                                   for p in (m.weight, m.bias)]
    ref_grads = torch.autograd.grad(loss, params)

    step = FieldTrainingStep(SPEC, 3, field.grid.table.detach().numpy(),
                             _layers(field.density_net), _layers(field.color_net))
    if active is not None:
        step.set_active_levels(active)
    t_loss, grads = step.gradients(_nd(pos), _nd(s.dirs), _nd(s.t), _nd(s.dt),
                                   _nd(s.rays, np.int32), _nd(bg), _nd(target))
    assert abs(float(t_loss.to_numpy()[0]) - float(loss)) <= 1e-5 * float(loss)
    assert len(grads) == len(params)
    for i, (g, ref) in enumerate(zip(grads, ref_grads)):
        # float32 sums in another order (batch reductions, table rows shared by samples)
        assert rel_err(torch.from_numpy(g.to_numpy()), ref) < 1e-4, f"parameter {i}"
    assert float(ref_grads[0].abs().max()) > 0  # the table was reached

    # one Adam step on each side, the trainer's settings (weight decay on weights only)
    decays = [0.0] + [1e-6 if k % 2 == 0 else 0.0 for k in range(len(params) - 1)]
    opt = torch.optim.Adam([{"params": [p], "weight_decay": w} for p, w in zip(params, decays)],
                           lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    for p, g in zip(params, ref_grads):
        p.grad = g
    opt.step()
    adam = DeviceAdam(step.params, 1e-2, decays)
    adam.step(grads)
    for i, (p, ref, g) in enumerate(zip(step.params, params, ref_grads)):
        got = torch.from_numpy(p.to_numpy())
        # Adam moves every element by about lr whatever its gradient's size, so elements
        # whose gradient is float32 noise may move either way: compare the others
        clear = g.abs() > 1e-3 * g.abs().max()
        assert float((got - ref.detach())[clear].abs().max()) < 1e-5, f"parameter {i}"


def test_adam_needs_a_decay_per_parameter(arch):
    import taichi as ti
    a = ti.ndarray(ti.f32, shape=(3,))
    try:
        DeviceAdam([a, a], 1e-2, [0.0])
    except ValueError as e:
        assert "2 parameters" in str(e)
    else:
        raise AssertionError("no error for a missing weight decay")


def test_table_shape_is_checked(arch):
    import pytest
    with pytest.raises(ValueError, match="table shape"):
        FieldTrainingStep(SPEC, 3, np.zeros((7, 2), np.float32), [], [])


def test_density_equals_torch_density(arch, gen):
    field, s, _, _ = _inputs(gen)
    pos = torch.rand(500, 3, generator=gen)
    ref, _ = field.density(pos)
    step = FieldTrainingStep(SPEC, 3, field.grid.table.detach().numpy(),
                             _layers(field.density_net), _layers(field.color_net))
    assert rel_err(torch.from_numpy(step.density(_nd(pos)).to_numpy()), ref.detach()) < 1e-5


def test_a_step_moves_no_data_between_host_and_device(arch, gen, monkeypatch):
    """Gradients and the Adam step run on device arrays only: no ndarray is read or written
    from the host until the caller reads the loss (issue: the loss readout only)."""
    field, s, bg, target = _inputs(gen)
    pos = s.positions.clamp(0.0, 1.0).contiguous()
    step = FieldTrainingStep(SPEC, 3, field.grid.table.detach().numpy(),
                             _layers(field.density_net), _layers(field.color_net))
    adam = DeviceAdam(step.params, 1e-2, [0.0] * len(step.params))
    inputs = (_nd(pos), _nd(s.dirs), _nd(s.t), _nd(s.dt), _nd(s.rays, np.int32), _nd(bg),
              _nd(target))
    moved = count_transfers(monkeypatch)
    losses = []
    for _ in range(2):
        loss, grads = step.gradients(*inputs)
        adam.step(grads)
        assert moved == []
        losses.append(float(loss.to_numpy()[0]))  # the one readout
        assert moved == ["to_numpy"]
        moved.clear()
    assert losses[1] < losses[0]  # and the step learns


def test_sparse_depth_term_equals_the_torch_loss(arch, gen):
    """The device step's sparse-depth loss and its sigma gradient against the host trainer's
    loss (taichi_nerf.nn.losses) under torch autograd, on rays with and without depth."""
    import taichi as ti

    from taichi_nerf.kernels.field_train import sparse_depth_term
    from taichi_nerf.nn.losses import sparse_depth_loss

    _, s, _, _ = _inputs(gen)
    M, R = s.t.shape[0], s.rays.shape[0]
    sigma = (torch.rand(M, generator=gen) * 30).requires_grad_()
    sigma.data[::17] = 5e4  # opaque samples: tau past TAU_MAX passes no gradient
    n_depth = R // 3
    depth = s.t[s.rays[:n_depth, 0].long() + s.rays[:n_depth, 1].long() // 2].clone()
    depth *= 1 + 0.2 * (torch.rand(n_depth, generator=gen) - 0.5)
    ref = 0.7 * sparse_depth_loss(sigma, s.t, s.dt, s.rays, s.ray_index, depth, 0.05)
    ref_g, = torch.autograd.grad(ref, sigma)
    loss, g = ti.ndarray(ti.f32, shape=(1,)), ti.ndarray(ti.f32, shape=(M,))
    loss.fill(0.0)
    g.fill(0.0)
    full_depth = torch.zeros(R)
    full_depth[:n_depth] = depth
    sparse_depth_term(_nd(sigma), _nd(s.t), _nd(s.dt), _nd(s.rays, np.int32), _nd(full_depth),
                      n_depth, 0.05, 0.7, loss, g)
    ref = float(ref.detach())
    assert abs(float(loss.to_numpy()[0]) - ref) < 1e-5 * max(1.0, abs(ref))
    assert rel_err(torch.from_numpy(g.to_numpy()), ref_g) < 1e-4
    assert float(ref_g.abs().max()) > 0
