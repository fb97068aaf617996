"""The occupancy grid's update rule: warm-up visits, EMA with decay, threshold, bitfield."""
import torch

from taichi_nerf.kernels.specs import MarchSpec, OccupancySpec
from taichi_nerf.occupancy import OccupancyGrid


def ball_density(centre=0.5, radius=0.2, sigma=500.0):
    """sigma inside a ball of the model box, zero outside."""
    def fn(pts: torch.Tensor) -> torch.Tensor:
        inside = (pts - centre).norm(dim=-1) < radius
        return inside.float() * sigma
    return fn


def make_grid(cascades=1, resolution=16, budget=1 << 10, warmup=4):
    spec = OccupancySpec(n_cascades=cascades, resolution=resolution)
    return OccupancyGrid(spec, MarchSpec.for_occupancy(spec), torch.device("cpu"),
                         warmup_steps=warmup, max_cells_per_update=budget)


def cell_centres(grid: OccupancyGrid) -> torch.Tensor:
    """Model-space centre of every cell of cascade 0."""
    r = grid.spec.resolution
    i = torch.arange(r ** 3)
    x, y, z = i % r, (i // r) % r, i // (r * r)
    return (torch.stack([x, y, z], -1).float() + 0.5) / r


def test_unvisited_cells_count_as_occupied(cpu_runtime):
    grid = make_grid()
    assert grid.occupied_fraction == 1.0


def test_first_update_visits_every_cell_and_keeps_the_ball(cpu_runtime):
    grid = make_grid()
    g = torch.Generator().manual_seed(0)
    grid.update(0, ball_density(), g)
    occ = grid.occupied()
    d = (cell_centres(grid) - 0.5).norm(dim=-1)
    assert occ[d < 0.1].all()            # well inside the ball
    assert not occ[d > 0.35].any()       # well outside: carved on the first pass
    assert (grid.density >= 0).all()


def test_resampled_cells_decay_and_empty_ones_are_pruned(cpu_runtime):
    """Cells dense at first and empty later lose 5% per visit until under threshold; the
    ball, resampled as occupied, stays."""
    grid = make_grid(resolution=16, budget=1 << 12, warmup=1)
    g = torch.Generator().manual_seed(0)
    grid.update(0, lambda p: torch.full((len(p),), 500.0), g)   # everything dense at first
    assert grid.occupied_fraction == 1.0
    first = grid.density.clone()
    grid.update(1, ball_density(), g)
    seen = grid.density != first
    d = (cell_centres(grid) - 0.5).norm(dim=-1)
    outside = seen & (d > 0.35)
    assert outside.any()
    assert torch.allclose(grid.density[outside], 0.95 * first[outside])
    for step in range(2, 400):
        grid.update(step, ball_density(), g)
    occ = grid.occupied()
    assert occ[d < 0.1].all()
    assert occ[d > 0.35].float().mean() < 0.01


def test_schedule_matches_instant_ngp(cpu_runtime):
    grid = make_grid()
    due = [s for s in range(0, 300) if grid.due(s)]
    assert due[:4] == [0, 1, 2, 3]
    assert all(b - a == 16 for a, b in zip(due, due[1:]) if a >= 256)
