import math

import numpy as np
import pytest
import torch

from taichi_nerf.nn import ops, reference
from taichi_nerf.kernels.specs import MarchSpec, OccupancySpec

from conftest import rel_err

OCC = OccupancySpec(n_cascades=1, resolution=32)


def _bitfield(occupied: torch.Tensor, occ: OccupancySpec) -> torch.Tensor:
    """bool (n_cells,) -> packed int32 words (n_words,): the cells' bits, then each empty-space
    block's (any of its cells set), built in numpy (independent of the kernels)."""
    C, R, B = occ.n_cascades, occ.resolution, occ.block
    nb = R // B
    cells = occupied.numpy()
    blocks = cells.reshape(C, nb, B, nb, B, nb, B).any(axis=(2, 4, 6)).reshape(-1)
    bits = np.zeros(occ.n_words * 32, dtype=np.uint64)
    bits[:cells.size] = cells
    bits[cells.size:cells.size + blocks.size] = blocks
    words = (bits.reshape(-1, 32) << np.arange(32, dtype=np.uint64)).sum(1)
    return torch.from_numpy(words.astype(np.uint32).view(np.int32).copy())


def _rays(gen, n=300):
    """Rays from outside the box aimed at random points inside it."""
    d = torch.randn(n, 3, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True)
    target = torch.rand(n, 3, generator=gen) * 0.8 + 0.1
    o = target - 2.0 * d
    return o.contiguous(), d.contiguous()


def test_ray_aabb_matches_reference(arch, gen):
    o = torch.randn(500, 3, generator=gen) * 2
    d = torch.randn(500, 3, generator=gen)
    d[:5, 0] = 0.0  # axis-parallel rays
    tn, tf = ops.ray_aabb(o, d, (0, 0, 0), (1, 1, 1))
    rn, rf = reference.ray_aabb(o.double(), d.double(), (0, 0, 0), (1, 1, 1))
    hit = rf > rn
    assert torch.equal(tf > tn, hit)
    assert rel_err(tn[hit], rn[hit]) < 1e-5 and rel_err(tf[hit], rf[hit]) < 1e-5


def test_full_grid_gives_uniform_samples(arch, gen):
    march = MarchSpec(min_step=0.01, max_step=0.01, max_samples=1024)
    o, d = _rays(gen)
    full = _bitfield(torch.ones(OCC.n_cells, dtype=torch.bool), OCC)
    s = ops.march_rays(o, d, full, OCC, march)
    tn, tf = reference.ray_aabb(o.double(), d.double(), *OCC.aabb)
    checked = 0
    for r in range(o.shape[0]):
        start, count = s.rays[r].tolist()
        # expected: midpoints t0 + (k + 1/2) dt while inside the box
        n_expect = math.ceil((tf[r] - tn[r]).item() / 0.01 - 0.5)
        frac = (tf[r] - tn[r]).item() / 0.01 - 0.5
        if abs(frac - round(frac)) < 1e-3:
            continue  # midpoint on the exit face: float rounding decides
        checked += 1
        assert count == n_expect
        t = s.t[start:start + count].double()
        expect = tn[r] + (torch.arange(count, dtype=torch.float64) + 0.5) * 0.01
        assert torch.allclose(t, expect, atol=1e-5)
        assert torch.all(s.dt[start:start + count] == np.float32(0.01))
        assert torch.all(s.ray_index[start:start + count] == r)
    assert checked > 0.95 * o.shape[0]
    # positions = o + t d, dirs = d
    ri = s.ray_index.long()
    assert torch.allclose(s.positions, o[ri] + s.t[:, None] * d[ri], atol=1e-5)
    assert torch.equal(s.dirs, d[ri])


def test_empty_grid_gives_no_samples(arch, gen):
    o, d = _rays(gen)
    empty = torch.zeros(OCC.n_words, dtype=torch.int32)
    s = ops.march_rays(o, d, empty, OCC, MarchSpec())
    assert s.n_samples == 0
    assert torch.all(s.rays[:, 1] == 0)


def test_random_grid_samples_only_in_occupied_cells(arch, gen):
    R = OCC.resolution
    # blocks of 4^3 cells, a third of them occupied
    coarse = torch.rand(R // 4, R // 4, R // 4, generator=gen) < 0.33
    occ3 = coarse.repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    occupied = occ3.permute(2, 1, 0).reshape(-1)  # index x + y R + z R^2
    march = MarchSpec(min_step=0.004, max_step=0.004)
    o, d = _rays(gen, 500)
    s = ops.march_rays(o, d, _bitfield(occupied, OCC), OCC, march)
    assert s.n_samples > 1000
    p = s.positions
    assert torch.all((p >= 0) & (p <= 1))
    cell = (p * R).floor().long().clamp(0, R - 1)
    assert torch.all(occ3[cell[:, 0], cell[:, 1], cell[:, 2]])
    # per ray: t strictly increasing, contiguous packing
    starts, counts = s.rays[:, 0], s.rays[:, 1]
    assert torch.equal(starts[1:], (starts + counts)[:-1])
    same_ray = s.ray_index[1:] == s.ray_index[:-1]
    assert torch.all(s.t[1:][same_ray] > s.t[:-1][same_ray])
    # and the reference marcher finds the same samples (float64 vs float32 may
    # move a sample across a cell face; allow a few)
    ref = reference.march_rays(o.double(), d.double(), occupied, OCC, march)
    agree = (ref.rays[:, 1] == s.rays[:, 1].long()).float().mean()
    assert agree > 0.97


def test_max_samples_caps_each_ray(arch, gen):
    o, d = _rays(gen, 50)
    full = _bitfield(torch.ones(OCC.n_cells, dtype=torch.bool), OCC)
    s = ops.march_rays(o, d, full, OCC, MarchSpec(min_step=0.001, max_step=0.001, max_samples=16))
    assert s.rays[:, 1].max() == 16


def test_cascades_cone_steps_grow_with_distance(arch, gen):
    occ = OccupancySpec(n_cascades=3, resolution=32)
    march = MarchSpec.for_occupancy(occ, max_samples=4096)
    full = _bitfield(torch.ones(occ.n_cells, dtype=torch.bool), occ)
    o = torch.tensor([[0.5, 0.5, 0.5]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    s = ops.march_rays(o, d, full, occ, march)
    assert s.n_samples > 0
    # the ray starts at the centre and leaves the box (side 4) at t = 2
    assert s.t[-1] < 2.0 and s.t[-1] + s.dt[-1] > 2.0
    assert torch.all(s.dt[1:] >= s.dt[:-1])
    assert s.dt[0] == pytest.approx(march.min_step)
    t_start = (s.t - 0.5 * s.dt).double()
    expect = (t_start * march.cone).clamp(march.min_step, march.max_step)
    assert torch.allclose(s.dt.double(), expect, rtol=1e-5)
    assert s.dt[-1] > 4 * march.min_step  # the cone step took over
    ref = reference.march_rays(o.double(), d.double(), torch.ones(occ.n_cells, dtype=torch.bool),
                               occ, march)
    assert abs(ref.t.numel() - s.n_samples) <= 1


def test_invalid_inputs(cpu_runtime):
    o = torch.zeros(4, 3)
    d = torch.ones(4, 3)
    with pytest.raises(ValueError, match="bitfield"):
        ops.march_rays(o, d, torch.zeros(5, dtype=torch.int32), OCC, MarchSpec())
    with pytest.raises(ValueError, match="int32"):
        ops.march_rays(o, d, torch.zeros(OCC.n_words, dtype=torch.int64), OCC, MarchSpec())
    with pytest.raises(ValueError, match="directions"):
        ops.march_rays(o, d[:3].contiguous(), torch.zeros(OCC.n_words, dtype=torch.int32), OCC,
                       MarchSpec())
    with pytest.raises(ValueError):
        MarchSpec(min_step=0.1, max_step=0.01)


def test_start_jitter_moves_each_ray_and_count_matches_fill(arch, gen):
    """Each ray starts `jitter` steps past its entry; the count and fill passes agree."""
    march = MarchSpec(min_step=0.01, max_step=0.01, max_samples=1024)
    o, d = _rays(gen, 200)
    full = _bitfield(torch.ones(OCC.n_cells, dtype=torch.bool), OCC)
    jitter = torch.rand(o.shape[0], generator=gen)
    s0 = ops.march_rays(o, d, full, OCC, march)
    s = ops.march_rays(o, d, full, OCC, march, jitter)
    # count and fill ran with the same offsets: every ray's samples are all written, packed
    starts, counts = s.rays[:, 0], s.rays[:, 1]
    assert torch.equal(starts[1:], (starts + counts)[:-1])
    assert torch.equal(s.ray_index, torch.repeat_interleave(torch.arange(o.shape[0]),
                                                            counts.long()).to(torch.int32))
    first = s.t[starts.long()].double()
    first0 = s0.t[s0.rays[:, 0].long()].double()
    # the first midpoint moves by jitter * dt
    assert torch.allclose(first - first0, jitter.double() * 0.01, atol=1e-5)
    ref = reference.march_rays(o.double(), d.double(), torch.ones(OCC.n_cells, dtype=torch.bool),
                               OCC, march, jitter.double())
    agree = (ref.rays[:, 1] == counts.long()).float().mean()
    assert agree > 0.97


def test_near_distance_skips_space_in_front_of_the_camera(arch, gen):
    march = MarchSpec(min_step=0.01, max_step=0.01, max_samples=1024, near=0.1)
    o = torch.full((64, 3), 0.5)  # cameras inside the box
    d = torch.randn(64, 3, generator=gen)
    d = (d / d.norm(dim=-1, keepdim=True)).contiguous()
    full = _bitfield(torch.ones(OCC.n_cells, dtype=torch.bool), OCC)
    s = ops.march_rays(o, d, full, OCC, march)
    assert (s.t - 0.5 * s.dt).min() >= 0.1 - 1e-6
    assert torch.allclose(s.t[s.rays[:, 0].long()], torch.full((64,), 0.105), atol=1e-5)


def test_fill_writes_exactly_the_counted_rows(arch, gen):
    # count and fill are separate compiled loops: if the fill finds fewer samples than the
    # count said, its rows must still be written (empty intervals), never left as garbage
    from taichi_nerf.kernels.march import march_kernels
    march = MarchSpec(min_step=0.01, max_step=0.01, max_samples=1024)
    o, d = _rays(gen, 64)
    full = _bitfield(torch.ones(OCC.n_cells, dtype=torch.bool), OCC)
    jitter = torch.rand(64, generator=gen)
    ref = ops.march_rays(o, d, full, OCC, march, jitter)
    counts = ref.rays[:, 1].clone()
    counts[::2] += 3                          # ask for more rows than there are samples
    counts[1::4] = (counts[1::4] - 2).clamp(min=0)  # and for fewer
    starts = (torch.cumsum(counts, 0) - counts).to(torch.int32)
    M = int(counts.sum())
    out = [torch.full((M,), float("nan")), torch.full((M,), float("nan")),
           torch.full((M, 3), float("nan")), torch.full((M, 3), float("nan")),
           torch.full((M,), -1, dtype=torch.int32)]
    march_kernels(OCC, march).fill(o, d, jitter, full, starts, counts.contiguous(), *out)
    t, dt, pos, dirs, ray_index = out
    for r in range(64):
        s, c = int(starts[r]), int(counts[r])
        s0, c0 = ref.rays[r].tolist()
        k = min(c, c0)
        assert torch.equal(t[s:s + k], ref.t[s0:s0 + k]) and torch.equal(dt[s:s + k], ref.dt[s0:s0 + k])
        assert torch.all(ray_index[s:s + c] == r)
        assert torch.all(dt[s + k:s + c] == 0)  # the padding weighs nothing
        assert torch.isfinite(pos[s:s + c]).all() and torch.isfinite(dirs[s:s + c]).all()
        lo, hi = OCC.aabb
        assert torch.all(pos[s:s + c] >= lo[0] - 1e-5) and torch.all(pos[s:s + c] <= hi[0] + 1e-5)


def test_cone_step_follows_the_pixel_footprint_of_the_training_images():
    """Downscaled captures step by footprint_steps pixel footprints, full-size ones keep
    instant-ngp's t / 256; one cascade keeps its fixed step (no cone)."""
    from taichi_nerf.training.trainer import TrainConfig, _specs, pixel_angle
    occ = OccupancySpec(n_cascades=3, resolution=32)
    coarse = MarchSpec.for_occupancy(occ, pixel_angle=1 / 100, footprint_steps=2.0)
    assert coarse.cone == pytest.approx(0.02)
    fine = MarchSpec.for_occupancy(occ, pixel_angle=1 / 1000, footprint_steps=2.0)
    assert fine.cone == pytest.approx(1 / 256)
    assert MarchSpec.for_occupancy(OccupancySpec(n_cascades=1), pixel_angle=1 / 10,
                                   footprint_steps=2.0).cone == 0.0
    huge = MarchSpec.for_occupancy(occ, pixel_angle=1.0, footprint_steps=2.0)
    assert huge.cone <= huge.max_step
    intr = torch.tensor([[180.0, 172.0, 67.5, 120.0], [175.0, 175.0, 67.5, 120.0]]).numpy()
    assert pixel_angle(intr) == pytest.approx(1 / 172)
    _, _, march = _specs(TrainConfig(footprint_steps=3.0, finest_resolution=512), 4, 1 / 172)
    assert march.cone == pytest.approx(3 / 172)


def test_fixed_step_spans_the_same_finest_cells_at_every_grid_resolution():
    """The fixed step is STEP_FINEST_CELLS cells of the finest hash level: instant-ngp's
    sqrt(3)/1024 at 2048, 4x that at 512 (Lego 200x200), never above one coarsest cell."""
    from taichi_nerf.kernels.specs import STEP_FINEST_CELLS
    from taichi_nerf.training.trainer import TrainConfig, _specs
    one = OccupancySpec(n_cascades=1, resolution=128)
    assert MarchSpec.for_occupancy(one).min_step == pytest.approx(math.sqrt(3) / 1024)
    assert MarchSpec.for_occupancy(one, finest_resolution=2048).min_step == pytest.approx(
        math.sqrt(3) / 1024)
    at512 = MarchSpec.for_occupancy(one, finest_resolution=512)
    assert at512.min_step == pytest.approx(4 * math.sqrt(3) / 1024)
    assert at512.min_step * 512 == pytest.approx(STEP_FINEST_CELLS)
    coarse = MarchSpec.for_occupancy(one, finest_resolution=64)
    assert coarse.min_step == coarse.max_step == pytest.approx(math.sqrt(3) / 128)
    with pytest.raises(ValueError, match="finest_resolution"):
        MarchSpec.for_occupancy(one, finest_resolution=0)
    # the trainer's rule reads the core cube's finest resolution, not the grid's (x aabb_scale)
    for scale in (1, 4):
        _, _, march = _specs(TrainConfig(finest_resolution=512), scale, 1 / 172)
        assert march.min_step == pytest.approx(STEP_FINEST_CELLS / 512)


def test_walk_ray_callback_gets_the_batch_samples_and_can_stop(arch, gen):
    """walk_ray, the one walk behind the batch passes and NerfScene.march, called from a user
    kernel: its callback sees the fill pass's samples (t, dt), gets its context by reference,
    and a true return ends the walk after that sample (the walk's n counts the calls)."""
    import taichi as ti
    from taichi_nerf.kernels.march import make_march_funcs
    occ = OccupancySpec(n_cascades=3, resolution=32)
    march = MarchSpec.for_occupancy(occ, max_samples=1024)
    bitfield = _bitfield(torch.rand(occ.n_cells, generator=gen) < 0.4, occ)
    o, d = _rays(gen, 400)
    jitter = torch.rand(o.shape[0], generator=gen)
    ref = ops.march_rays(o, d, bitfield, occ, march, jitter)
    starts, counts = ref.rays[:, 0], ref.rays[:, 1]
    # odd rays stop after half their samples (0: never)
    stop_at = torch.where(torch.arange(o.shape[0]) % 2 == 1, (counts // 2).clamp(min=1),
                          torch.zeros_like(counts)).to(torch.int32)
    walk_ray = make_march_funcs(occ, march).walk_ray

    @ti.func
    def record(ctx: ti.template(), n, t_mid, dt, p, d):
        base, out_t, out_dt, stop = ti.static(ctx)
        out_t[base + n] = t_mid
        out_dt[base + n] = dt
        return n + 1 == stop

    @ti.kernel
    def walk(rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
             rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
             jitter: ti.types.ndarray(dtype=ti.f32, ndim=1),
             bits: ti.types.ndarray(dtype=ti.i32, ndim=1),
             starts: ti.types.ndarray(dtype=ti.i32, ndim=1),
             stop_at: ti.types.ndarray(dtype=ti.i32, ndim=1),
             out_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
             out_dt: ti.types.ndarray(dtype=ti.f32, ndim=1),
             n_walked: ti.types.ndarray(dtype=ti.i32, ndim=1)):
        for r in range(rays_o.shape[0]):
            o = ti.Vector([rays_o[r, 0], rays_o[r, 1], rays_o[r, 2]])
            d = ti.Vector([rays_d[r, 0], rays_d[r, 1], rays_d[r, 2]])
            n, _, _ = walk_ray(o, d, jitter[r], bits, 1024, record,
                               (starts[r], out_t, out_dt, stop_at[r]))
            n_walked[r] = n

    M = ref.n_samples
    t, dt = torch.zeros(M), torch.zeros(M)
    n_walked = torch.zeros(o.shape[0], dtype=torch.int32)
    walk(o, d, jitter, bitfield, starts.contiguous(), stop_at, t, dt, n_walked)
    stops = stop_at > 0
    assert torch.equal(n_walked[~stops], counts[~stops])
    assert torch.equal(n_walked[stops], stop_at[stops])
    assert (counts[stops] > stop_at[stops]).float().mean() > 0.5  # the stop cut most of them
    for r in range(o.shape[0]):
        s, n = int(starts[r]), int(n_walked[r])
        # the same walk compiled into another loop: measured bit-identical on cpu and vulkan
        assert torch.equal(t[s:s + n], ref.t[s:s + n]) and torch.equal(dt[s:s + n], ref.dt[s:s + n])


def _cell_by_cell(bitfield: torch.Tensor, occ: OccupancySpec) -> torch.Tensor:
    """The same cells with every empty-space block marked as holding one: no block skipped."""
    out = bitfield.clone()
    out[occ.cell_words:] = -1
    return out


@pytest.mark.parametrize("cone", [0.0, 0.02])
def test_empty_blocks_are_crossed_with_the_samples_of_a_cell_by_cell_walk(arch, gen, cone):
    """A walk skips an empty block in one jump and takes the samples a walk cell by cell takes
    (up to float rounding of a sample sitting on a cell's face); the block bits are read."""
    occ = OccupancySpec(n_cascades=2, resolution=32)
    assert occ.block == 8
    C, R, B = occ.n_cascades, occ.resolution, occ.block
    nb = R // B
    # a few busy blocks among empty ones, cells at random inside them (coarser cascade unpooled)
    busy = torch.rand(C, nb, 1, nb, 1, nb, 1, generator=gen) < 0.25
    cells = (torch.rand(C, nb, B, nb, B, nb, B, generator=gen) < 0.3) & busy
    occupied = cells.reshape(-1)
    bitfield = _bitfield(occupied, occ)
    march = MarchSpec(min_step=0.3 / R, max_step=2.0 / R, cone=cone, max_samples=1024)
    o, d = _rays(gen, 400)  # from outside both cascades, through the outer one's shell
    got = ops.march_rays(o, d, bitfield, occ, march)
    want = ops.march_rays(o, d, _cell_by_cell(bitfield, occ), occ, march)
    assert want.n_samples > 500
    same = got.rays[:, 1] == want.rays[:, 1]
    assert float(same.float().mean()) >= 0.98
    assert abs(got.n_samples - want.n_samples) <= 0.01 * want.n_samples
    for r in torch.nonzero(same)[:, 0].tolist():
        (a, k), (b, _) = got.rays[r].tolist(), want.rays[r].tolist()
        assert torch.allclose(got.t[a:a + k], want.t[b:b + k], rtol=0, atol=1e-5), f"ray {r}"
    # the walk does read the block bits: marked empty, a busy block is left at its first
    # empty cell
    no_blocks = bitfield.clone()
    no_blocks[occ.cell_words:] = 0
    assert ops.march_rays(o, d, no_blocks, occ, march).n_samples < 0.8 * want.n_samples


def test_a_step_out_of_an_empty_cell_lands_on_the_first_midpoint_past_it(arch):
    """Samples are looked up at step midpoints: leaving an empty cell, the walk goes to the first
    step whose midpoint is past the cell's face, not its start (which lost that sample)."""
    occ = OccupancySpec(n_cascades=1, resolution=16)
    cells = torch.zeros(16, 16, 16, dtype=torch.bool)  # (z, y, x)
    cells[:, :, 9:] = True  # x >= 9/16 = 0.5625 occupied
    march = MarchSpec(min_step=0.01, max_step=0.01, max_samples=1024)
    o = torch.tensor([[-0.5, 0.53, 0.47]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    s = ops.march_rays(o, d, _bitfield(cells.reshape(-1), occ), occ, march)
    # the ray enters the box at t = 0.5; midpoints sit at x = 0.005, 0.015, ...
    x = torch.arange(100, dtype=torch.float64) * 0.01 + 0.005
    expect = 0.5 + x[x >= 0.5625]
    assert s.n_samples == expect.numel() == 44
    assert torch.allclose(s.t.double(), expect, atol=1e-5)
    ref = reference.march_rays(o.double(), d.double(), cells.reshape(-1), occ, march)
    assert torch.allclose(ref.t, expect, atol=1e-9)
