"""The occupancy grid's rule (instant-ngp's): per-cell EMA of sigma x min step in every cascade,
threshold from cascade 0, max-pooled cascades, unseen cells out for good, warm-up visits."""
import math

import numpy as np
import pytest
import taichi as ti
import torch

from taichi_nerf.kernels import occupancy as occ_k
from taichi_nerf.data.poses import look_at
from taichi_nerf.kernels.specs import MarchSpec, OccupancySpec
from taichi_nerf.nn import reference
from taichi_nerf.nn.occupancy import OccupancyGrid

from conftest import point_cell_index


def ball_density(centre=0.5, radius=0.2, sigma=500.0):
    """sigma inside a ball of the model box, zero outside."""
    def fn(pts: torch.Tensor) -> torch.Tensor:
        inside = (pts - centre).norm(dim=-1) < radius
        return inside.float() * sigma
    return fn


def make_grid(cascades=1, resolution=16, budget=1 << 10, warmup=1 << 20):
    spec = OccupancySpec(n_cascades=cascades, resolution=resolution)
    return OccupancyGrid(spec, MarchSpec.for_occupancy(spec), torch.device("cpu"),
                         warmup_steps=warmup, max_cells_per_update=budget)


def cell_centres(grid: OccupancyGrid, cascade: int = 0) -> torch.Tensor:
    """Model-space centre of every cell of one cascade."""
    r = grid.spec.resolution
    i = torch.arange(r ** 3)
    x, y, z = i % r, (i // r) % r, i // (r * r)
    size = 2.0 ** cascade
    return 0.5 + size * ((torch.stack([x, y, z], -1).float() + 0.5) / r - 0.5)


def visit_all(grid: OccupancyGrid, fn, gen, start=0):
    """Warm-up updates until the cursor has visited every cell once; returns the next step."""
    n_updates = math.ceil(grid.spec.n_cells / grid.max_cells_per_update)
    for step in range(start, start + n_updates):
        grid.update(step, fn, gen)
    return start + n_updates


def test_unvisited_cells_count_as_occupied(cpu_runtime):
    grid = make_grid(cascades=2)
    assert grid.occupied_fraction == 1.0


def test_warm_up_visits_every_cell_and_keeps_the_ball(cpu_runtime, gen):
    grid = make_grid()
    visit_all(grid, ball_density(), gen)
    occ = grid.occupied()
    d = (cell_centres(grid) - 0.5).norm(dim=-1)
    assert occ[d < 0.1].all()            # well inside the ball
    assert not occ[d > 0.35].any()       # well outside: carved once visited
    assert torch.isfinite(grid.density).all() and (grid.density >= 0).all()


def test_same_step_factor_in_every_cascade(cpu_runtime, gen):
    """instant-ngp: optical thickness = sigma * min step whatever the cascade."""
    grid = make_grid(cascades=3, resolution=8, budget=3 * 8 ** 3)   # one update visits all
    sigma = 3.0 + torch.rand(1, generator=gen).item()
    grid.update(0, lambda p: torch.full((len(p),), sigma), gen)
    expect = sigma * grid.march.min_step
    for c in range(3):
        cells = grid.density.reshape(3, -1)[c]
        assert torch.allclose(cells, torch.full_like(cells, expect), rtol=1e-6)
    # and every later update decays all cells by the same factor
    grid.update(1, lambda p: torch.zeros(len(p)), gen)
    assert torch.allclose(grid.density, torch.full_like(grid.density, 0.95 * expect), rtol=1e-6)


def test_threshold_is_the_mean_of_cascade_0_only(cpu_runtime, gen):
    grid = make_grid(cascades=2, resolution=8)
    per = grid.spec.cells_per_cascade
    d = torch.zeros(grid.spec.n_cells)
    d[:per] = torch.rand(per, generator=gen) * 1e-3   # cascade 0: thin everywhere
    d[per:] = 5.0                                      # cascade 1: dense; must not count
    d[0] = -1.0                                        # unseen counts as 0
    grid.density = d
    grid.repack()
    expect = float(d[:per].clamp(min=0).mean())
    assert abs(grid.threshold - expect) < 1e-9
    occ = grid.occupied()
    assert torch.equal(occ[:per], d[:per] > grid.threshold)
    # capped at instant-ngp's minimum optical thickness
    grid.density = torch.full((grid.spec.n_cells,), 1.0)
    grid.repack()
    assert grid.threshold == occ_k.MIN_OPTICAL_THICKNESS


def test_coarser_cascade_is_occupied_above_an_occupied_finer_cell(cpu_runtime, gen):
    R = 8
    grid = make_grid(cascades=3, resolution=R)
    d = torch.zeros(grid.spec.n_cells)
    x, y, z = (torch.randint(0, R, (3,), generator=gen)).tolist()
    d[x + y * R + z * R * R] = 1.0                   # one cascade-0 cell
    grid.density = d
    grid.repack()
    occ = grid.occupied().reshape(3, R, R, R)       # [c, z, y, x]
    assert occ[0].sum() == 1
    # the same point lies in cascade 1's cell (q + x // 2) and cascade 2's (q + (q + x // 2) // 2)
    c1 = [R // 4 + v // 2 for v in (x, y, z)]
    c2 = [R // 4 + v // 2 for v in c1]
    assert occ[1].sum() == 1 and occ[1][c1[2], c1[1], c1[0]]
    assert occ[2].sum() == 1 and occ[2][c2[2], c2[1], c2[0]]


def test_every_cell_decays_at_every_update(cpu_runtime, gen):
    """Cells dense at first and empty later lose 5% per update, visited or not, until under
    the threshold; the ball, resampled as occupied, stays."""
    grid = make_grid(resolution=16, budget=1 << 10, warmup=4)   # 4 updates visit all 4096 cells
    step = visit_all(grid, lambda p: torch.full((len(p),), 500.0), gen)  # all dense at first
    assert grid.occupied_fraction == 1.0
    first = grid.density.clone()
    grid.update(step, ball_density(), gen)
    d = (cell_centres(grid) - 0.5).norm(dim=-1)
    outside = d > 0.35
    assert torch.allclose(grid.density[outside], 0.95 * first[outside])
    for s in range(step + 1, step + 400):
        grid.update(s, ball_density(), gen)
    occ = grid.occupied()
    assert occ[d < 0.1].all()
    assert occ[outside].float().mean() < 0.01


def test_cells_no_camera_sees_are_never_occupied(cpu_runtime, gen):
    """One camera at z = 1.2 (inside cascade 1) looking down -z at the box, 60 degree field of view: cells behind it or
    outside its view hold -1 for good; the ones it sees are visited and can be occupied."""
    grid = make_grid(cascades=2, resolution=16, budget=1 << 14)
    c2w = torch.eye(4)[None, :3].clone()
    c2w[0, :3, 3] = torch.tensor([0.5, 0.5, 1.2])
    w = h = 64
    f = 0.5 * w / math.tan(math.radians(30))
    intr = torch.tensor([[f, f, w / 2, h / 2]])
    grid.mark_unseen(c2w, intr, w, h)
    R = grid.spec.resolution
    pts = torch.cat([cell_centres(grid, 0), cell_centres(grid, 1)])
    v = pts - c2w[0, :3, 3]
    depth = -v[:, 2]
    # a cell is seen when its centre is well inside the frustum, unseen when well outside it
    # (corners decide at the border)
    slope = torch.maximum(v[:, 0].abs(), v[:, 1].abs()) / depth.clamp(min=1e-6)
    half_cell = torch.cat([torch.full((R ** 3,), 0.5 / R), torch.full((R ** 3,), 1.0 / R)])
    margin = 2 * half_cell * math.sqrt(3) / depth.clamp(min=1e-6)
    limit = math.tan(math.radians(30))
    inside = (depth > 0) & (slope < limit - margin)
    outside = (depth <= 0) | (slope > limit + margin)
    unseen = grid.density < 0
    assert inside.any() and outside.any()
    assert not unseen[inside].any()
    assert unseen[outside].all()
    # everything dense: seen cells become occupied, unseen never, and unseen are never updated
    visit_all(grid, lambda p: torch.full((len(p),), 500.0), gen)
    occ = grid.occupied()
    assert occ[inside].all()
    assert not occ[:R ** 3][outside[:R ** 3]].any()
    assert (grid.density[unseen] == occ_k.UNSEEN).all()


def test_rule_is_the_same_on_numpy_and_torch(cpu_runtime, gen):
    """build_bitfield (the one rule) gives the same bits from numpy densities as the grid's."""
    grid = make_grid(cascades=2, resolution=8)
    d = torch.rand(grid.spec.n_cells, generator=gen) * 0.004
    d[::7] = -1.0
    d[::11] = float("inf")
    grid.density = d
    grid.repack()
    bits = np.zeros(grid.spec.n_words, np.int32)
    thr = occ_k.build_bitfield(d.numpy(), 8, 2, bits)
    assert abs(thr - grid.threshold) < 1e-9
    assert np.array_equal(bits, grid.bitfield.numpy())
    assert np.array_equal(occ_k.unpack_bitfield(bits, grid.spec.n_cells), grid.occupied().numpy())
    # after the cells, one bit per empty-space block: set where any cell of the block is
    from test_march import _bitfield
    assert np.array_equal(bits, _bitfield(grid.occupied(), grid.spec).numpy())
    occ = grid.occupied()
    per = grid.spec.cells_per_cascade
    assert occ[d == float("inf")].all()
    # unseen cells are never occupied themselves (a coarse one only above an occupied finer cell)
    assert not occ[:per][d[:per] < 0].any()


@ti.kernel
def _taichi_cell_index(p: ti.types.ndarray(dtype=ti.f32, ndim=2), n_cascades: ti.template(),
                       res: ti.template(), out: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for k in range(p.shape[0]):
        q = ti.Vector([p[k, 0], p[k, 1], p[k, 2]])
        c = occ_k.cascade_of(q, n_cascades)
        out[k] = occ_k.cell_index(c, occ_k.cell_coords(q, c, res), res)


def test_numpy_cell_lookup_equals_the_taichi_rule(arch):
    """point_cell_index (numpy, built from the per-axis axis_cascade/axis_cell that export's
    lookup uses) is the @ti.func rule to the bit, cell and cascade borders included."""
    n, res = 3, 16
    rng = np.random.default_rng(0)
    uniform = rng.uniform(-2.0, 3.0, (20000, 3))       # beyond the outermost cascade too
    # every cell border of every cascade, and the cascade borders among them
    borders = np.concatenate([0.5 + 2.0 ** c * (np.arange(res + 1) / res - 0.5) for c in range(n)])
    on_borders = rng.choice(borders, (5000, 3))
    mixed = np.where(rng.random((5000, 3)) < 0.5, on_borders, uniform[:5000])
    p = np.concatenate([uniform, on_borders, mixed]).astype(np.float32)
    out = np.zeros(len(p), np.int32)
    _taichi_cell_index(p, n, res, out)
    ti.sync()
    np.testing.assert_array_equal(point_cell_index(p, n, res), out)


def test_step_0_evaluates_the_outer_cascades_and_the_cursors_first_share(cpu_runtime, gen):
    """The untrained field must not carve the core cube at once: step 0 visits the outer
    cascades whole and cascade 0's first cursor share; a grid without a warm-up sweeps."""
    grid = make_grid(cascades=2, budget=1 << 9)  # 2 x 16^3 cells, 512 an update
    c0 = grid.spec.cells_per_cascade
    grid.update(0, ball_density(), gen)
    visited = torch.zeros(grid.spec.n_cells, dtype=torch.bool)
    visited[:512] = visited[c0:] = True
    assert torch.isinf(grid.density[~visited]).all() and grid.occupied()[~visited].all()
    assert torch.isfinite(grid.density[visited]).all()
    assert not grid.occupied()[:512].any()  # visited cells of cascade 0 outside the ball
    assert grid.plan_update(1) == (occ_k.CURSOR, 512, 512)
    one = make_grid(budget=1 << 9)
    assert one.plan_update(0) == (occ_k.CURSOR, 512, 0)
    whole = make_grid(cascades=2, budget=1 << 20)
    assert whole.plan_update(0) == (occ_k.CURSOR, 2 * c0, c0)  # every cell once
    no_warmup = make_grid(budget=1 << 9, warmup=0)
    assert no_warmup.plan_update(0) == (occ_k.SWEEP, no_warmup.spec.n_cells, 0)
    assert no_warmup.plan_update(1)[0] == occ_k.RANDOM


def test_schedule_matches_instant_ngp(cpu_runtime):
    grid = make_grid()
    due = [s for s in range(0, 300) if grid.due(s)]
    assert make_grid(warmup=256).warmup_steps == 256
    assert due[:4] == [0, 1, 2, 3]
    assert all(b - a == 16 for a, b in zip(due, due[1:]) if a >= 256)


def test_grid_is_a_module_with_buffers(cpu_runtime, gen):
    """As nerfacc's estimator: state in buffers, so .to / state_dict carry the grid along
    with a model that holds it; cursor and threshold ride as extra state."""
    grid = make_grid(budget=1 << 9, warmup=8)
    step = visit_all(grid, ball_density(), gen)
    grid.update(step, ball_density(), gen)  # past warm-up: random + occupied cells
    assert isinstance(grid, torch.nn.Module) and grid.device == torch.device("cpu")
    assert dict(grid.named_buffers()).keys() == {"density", "bitfield"}

    class Holder(torch.nn.Module):
        def __init__(self, g):
            super().__init__()
            self.grid = g

    sd = Holder(grid).state_dict()
    assert {"grid.density", "grid.bitfield", "grid._extra_state"} <= sd.keys()
    fresh = Holder(make_grid(budget=1 << 9, warmup=8))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.grid.bitfield, grid.bitfield)
    assert torch.equal(fresh.grid.density, grid.density)
    assert fresh.grid.threshold == grid.threshold and fresh.grid._cursor == grid._cursor
    assert grid.to("cpu") is grid
    # its own march is the marcher with its bitfield and specs
    rays_o = torch.tensor([[0.5, 0.5, -1.0], [0.05, 0.05, -1.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    s = grid.sample(rays_o, rays_d)
    counts = s.rays[:, 1].tolist()
    assert counts[0] > 0 and counts[1] == 0  # through the ball; past it, in empty cells
    assert ((s.positions - 0.5).norm(dim=-1) < 0.2 + 2 * math.sqrt(3) / 16).all()


def test_checkpoints_with_the_cells_bits_alone_get_their_blocks(cpu_runtime, gen):
    """A checkpoint saved before the bitfield held empty-space blocks (its cells' words alone)
    loads with the blocks rebuilt; a bitfield of any other length is refused."""
    spec = OccupancySpec(n_cascades=2, resolution=16)
    assert spec.block == 4 and spec.n_words == spec.cell_words + 4  # 2 x 4^3 block bits
    nb, B = spec.blocks_per_axis, spec.block
    busy = torch.rand(2, nb, 1, nb, 1, nb, 1, generator=gen) < 0.3  # whole blocks empty
    d = (torch.rand(2, nb, B, nb, B, nb, B, generator=gen) * 0.004 * busy).reshape(-1)
    full = np.zeros(spec.n_words, np.int32)
    thr = occ_k.build_bitfield(d.numpy(), spec.resolution, spec.n_cascades, full)
    # pack_bitfield alone (the cells, no pooling) leaves every block "may be occupied"
    packed = np.zeros(spec.n_words, np.int32)
    occ_k.pack_bitfield(d.numpy(), thr, packed)
    assert (packed[spec.cell_words:] == -1).all() and packed[:spec.cell_words].any()
    blocks = occ_k.unpack_bitfield(full[spec.cell_words:], spec.n_blocks)
    assert 0 < blocks.mean() < 1
    config = {"occupancy": {"n_cascades": 2, "resolution": 16}}
    for saved in (full, full[:spec.cell_words]):
        got = occ_k.checkpoint_bitfield(config, {"occupancy/bitfield": saved.copy()})
        assert np.array_equal(got, full)
    with pytest.raises(ValueError, match="bitfield has shape"):
        occ_k.checkpoint_bitfield(config, {"occupancy/bitfield": full[:-2]})


def look_at_cameras(n, gen, distance=1.6, centre=0.5):
    """n cameras (n,3,4) at `distance` from the box centre in random directions, looking at it
    (data.poses.look_at, OpenGL axes)."""
    d = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    c = np.full(3, centre)
    return torch.from_numpy(np.stack([
        look_at(c + distance * di, c, (0.0, 1.0, 0.0) if abs(di[2]) > 0.95 else (0.0, 0.0, 1.0))
        for di in d.numpy()])[:, :3]).float()


def ball_masks(c2w, size, f, centre=0.5, radius=0.15, sub=4):
    """Alpha (N, size, size): each pixel's share of sub x sub rays that hit the ball."""
    n = c2w.shape[0]
    s = (torch.arange(size * sub, dtype=torch.float64) + 0.5) / sub
    y, x = torch.meshgrid(s, s, indexing="ij")
    dirs_cam = torch.stack([(x - size / 2) / f, -(y - size / 2) / f, -torch.ones_like(x)], -1)
    out = torch.zeros(n, size, size, dtype=torch.float64)
    for i in range(n):
        d = dirs_cam @ c2w[i, :3, :3].double().T
        d = d / d.norm(dim=-1, keepdim=True)
        oc = c2w[i, :3, 3].double() - centre
        b = (d * oc).sum(-1)
        hit = (b * b - (oc @ oc - radius ** 2)) > 0
        out[i] = hit.double().reshape(size, sub, size, sub).mean(dim=(1, 3))
    return out.float()


def test_transparent_cells_are_carved_and_the_object_never(cpu_runtime, gen):
    """Twelve views of a ball (alpha from 4x4 rays a pixel): no cell touching the ball is
    carved, almost every cell well outside its visual hull is, and the cells the kernel
    carves are those of the float64 reference rule (fresh random cameras)."""
    grid = make_grid(cascades=2, resolution=16)
    c2w = look_at_cameras(12, gen)
    size = 48
    f = 0.5 * size / math.tan(math.radians(25))
    intr = torch.tensor([[f, f, size / 2, size / 2]]).expand(12, 4).contiguous()
    grid.mark_unseen(c2w, intr, size, size)
    unseen = grid.density == occ_k.UNSEEN
    alpha = ball_masks(c2w, size, f)
    share = grid.mark_transparent(c2w, intr, alpha)
    carved = (grid.density == occ_k.UNSEEN) & ~unseen
    assert share == pytest.approx(float(carved.float().mean()))
    R = grid.spec.resolution
    centres = torch.cat([cell_centres(grid, 0), cell_centres(grid, 1)])
    radius = torch.cat([torch.full((R ** 3,), 0.5 / R), torch.full((R ** 3,), 1.0 / R)]) * 3 ** 0.5
    dist = (centres - 0.5).norm(dim=1)
    touching = dist < 0.15 + radius
    assert touching.sum() > 50
    assert not carved[touching].any()
    far = (dist > 0.45) & (dist < 0.9) & ~unseen
    assert carved[far].float().mean() > 0.9
    # the reference, in float64, decides as the kernel does (up to cells on a pixel edge)
    ref = reference.mark_transparent(centres.double(), radius.double(), c2w.double(),
                                     intr.double(), alpha > 0, torch.ones(12, dtype=torch.bool),
                                     1.0) & ~unseen
    assert (ref != carved).float().mean() < 1e-3
    assert ref.sum() > 1000
    # carved cells are out for good, as unseen ones: never occupied, never updated
    visit_all(grid, lambda p: torch.full((len(p),), 500.0), gen)
    for s in range(grid.warmup_steps, grid.warmup_steps + 50):
        grid.update(s, lambda p: torch.full((len(p),), 500.0), gen)
    assert grid.occupied()[~unseen & ~carved].float().mean() > 0.9
    assert not grid.occupied()[carved].any()
    assert (grid.density[carved] == occ_k.UNSEEN).all()


def test_carving_keeps_a_shell_of_free_space_around_the_hull(cpu_runtime, gen):
    """keep_shell against a numpy reference on random carvings of two cascades: a cell carved
    by this call comes back exactly when a cell of its cascade within `shell` cells per axis
    stayed in; cells unseen before never come back. And through mark_transparent: the ball's
    carving with a shell of 2 is the carving without it, minus the cells next to the hull."""
    from taichi_nerf.nn.occupancy import keep_shell
    R, shell = 8, 2
    previous = torch.where(torch.rand(2 * R ** 3, generator=gen) < 0.1,
                           torch.tensor(float(occ_k.UNSEEN)), torch.rand(2 * R ** 3, generator=gen))
    carve = torch.rand(2 * R ** 3, generator=gen) < 0.95
    density = torch.where(carve, torch.tensor(float(occ_k.UNSEEN)), previous)
    got = density.clone()
    keep_shell(previous, got, R, shell)
    kept = (density != occ_k.UNSEEN).numpy().reshape(2, R, R, R)
    want = density.numpy().reshape(2, R, R, R).copy()
    prev = previous.numpy().reshape(2, R, R, R)
    for c, i, j, k in np.ndindex(2, R, R, R):
        lo = [max(0, v - shell) for v in (i, j, k)]
        near = kept[c, lo[0]:i + shell + 1, lo[1]:j + shell + 1, lo[2]:k + shell + 1].any()
        if near and want[c, i, j, k] == occ_k.UNSEEN and prev[c, i, j, k] != occ_k.UNSEEN:
            want[c, i, j, k] = prev[c, i, j, k]
    assert np.array_equal(got.numpy().reshape(2, R, R, R), want)
    assert ((got != occ_k.UNSEEN) & (density == occ_k.UNSEEN)).any()  # some came back

    c2w = look_at_cameras(8, gen)
    size = 48
    f = 0.5 * size / math.tan(math.radians(25))
    intr = torch.tensor([[f, f, size / 2, size / 2]]).expand(8, 4).contiguous()
    alpha = ball_masks(c2w, size, f)
    bare, shelled = make_grid(resolution=16), make_grid(resolution=16)
    for g in (bare, shelled):
        g.mark_unseen(c2w, intr, size, size)
    before = bare.density.clone()
    bare.mark_transparent(c2w, intr, alpha)
    shelled.mark_transparent(c2w, intr, alpha, shell=2)
    want = bare.density.clone()
    keep_shell(before, want, 16, 2)
    assert torch.equal(shelled.density, want)
    n_bare, n_shelled = (int((g.density == occ_k.UNSEEN).sum()) for g in (bare, shelled))
    assert n_shelled < n_bare


def test_carving_is_cautious_with_coarse_masks_and_skips_unusable_cameras(cpu_runtime, gen):
    """Coverage pooled to 16 pixels a side still never carves the ball; no usable camera
    (lens distortion everywhere) carves nothing."""
    c2w = look_at_cameras(8, gen)
    size = 48
    f = 0.5 * size / math.tan(math.radians(25))
    intr = torch.tensor([[f, f, size / 2, size / 2]]).expand(8, 4).contiguous()
    alpha = ball_masks(c2w, size, f)
    fine, coarse, none = (make_grid(resolution=16) for _ in range(3))
    for g in (fine, coarse, none):
        g.mark_unseen(c2w, intr, size, size)
    fine.mark_transparent(c2w, intr, alpha)
    coarse.mark_transparent(c2w, intr, alpha, max_side=16)
    assert none.mark_transparent(c2w, intr, alpha, torch.zeros(8, dtype=torch.bool)) == 0.0
    dist = (cell_centres(fine) - 0.5).norm(dim=1)
    touching = dist < 0.15 + 3 ** 0.5 * 0.5 / 16
    for g in (fine, coarse):
        assert not (g.density[touching] < 0).any()
    n_unseen, n_fine, n_coarse = (int((g.density == occ_k.UNSEEN).sum())
                                  for g in (none, fine, coarse))
    assert n_unseen < n_coarse < n_fine


def test_pooled_coverage_treats_the_padding_past_the_edge_as_covered(cpu_runtime, gen):
    """A 50x50 image pooled by 4 (padded to 52): with every pixel transparent, a cell is
    carved only where its disc lies on the real image, never where it reaches the padding."""
    c2w = look_at_cameras(1, gen, distance=1.2)
    size = 50
    f = 0.5 * size / math.tan(math.radians(40))
    intr = torch.tensor([[f, f, size / 2, size / 2]])
    grid = make_grid(resolution=32)
    grid.mark_unseen(c2w, intr, size, size)
    unseen = grid.density == occ_k.UNSEEN
    grid.mark_transparent(c2w, intr, torch.zeros(1, size, size), max_side=16)
    carved = (grid.density == occ_k.UNSEEN) & ~unseen
    centres = cell_centres(grid).double()
    radius = torch.full((len(centres),), 3 ** 0.5 * 0.5 / 32, dtype=torch.float64)
    cam = (centres - c2w[0, :3, 3].double()) @ c2w[0, :3, :3].double()
    z = -cam[:, 2]
    u = f * cam[:, 0] / z + size / 2
    v = -f * cam[:, 1] / z + size / 2
    r = f * radius / (z - radius) + 4  # one pooled pixel of margin is 4 image pixels
    reaches_padding = (u + r >= 48) | (v + r >= 48)
    assert carved.any() and reaches_padding[~unseen].any()
    assert not carved[reaches_padding].any()
