"""Occupancy grid on the torch side: density EMA per cell, packed bitfield, update schedule."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from taichi_nerf.kernels import occupancy as occ_k
from taichi_nerf.kernels.specs import MarchSpec, OccupancySpec
from taichi_nerf.nn.ops import PackedSamples, march_rays


class OccupancyGrid(torch.nn.Module):
    """instant-ngp's occupancy grid: cells hold an EMA of optical thickness (sigma x min step).

    An ``nn.Module`` whose state is two buffers, as nerfacc's estimator: ``density``
    (n_cells,) float32 and ``bitfield`` (n_words,) int32, so ``.to(device)``, ``state_dict()``
    and ``load_state_dict()`` carry the grid with a field it belongs to; the warm-up cursor
    and the current threshold travel as the module's extra state.

    The rule for "occupied" is :func:`taichi_nerf.kernels.occupancy.build_bitfield`
    (density above min(0.01, mean of cascade 0), max-pooled into coarser cascades);
    the checkpoint saves the resulting bitfield, so every renderer samples the
    same cells. Cells that no training camera sees (:meth:`mark_unseen`), or that one
    sees through fully transparent pixels (:meth:`mark_transparent`), hold -1 and are
    never occupied or updated; cells not evaluated yet hold +inf and
    count as occupied until an update evaluates them: the first evaluates the outer
    cascades whole, and warm-up updates visit the cells in turn, a bounded share per
    update (a CPU cannot afford instant-ngp's every cell at every update of the first
    256 steps).
    """

    density: torch.Tensor
    bitfield: torch.Tensor

    def __init__(self, spec: OccupancySpec, march: MarchSpec, device: Optional[torch.device] = None,
                 decay: float = 0.95, warmup_steps: int = 256,
                 max_cells_per_update: int = 1 << 18):
        super().__init__()
        self.spec, self.march = spec, march
        self.decay, self.warmup_steps = decay, warmup_steps
        self.max_cells_per_update = max_cells_per_update
        self.register_buffer("density", torch.full((spec.n_cells,), occ_k.UNVISITED,
                                                   device=device))
        self.register_buffer("bitfield", torch.empty(spec.n_words, dtype=torch.int32,
                                                     device=device))
        self.threshold = 0.0
        self.repack()
        self._cursor = 0  # warm-up visits the cells in a fixed order, all within a few updates

    @property
    def device(self) -> torch.device:
        """Where the grid's buffers live (they move with ``.to``)."""
        return self.density.device

    def get_extra_state(self) -> dict:
        """The warm-up cursor and the current threshold (for ``state_dict``)."""
        return {"cursor": self._cursor, "threshold": self.threshold}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` returned."""
        self._cursor, self.threshold = int(state["cursor"]), float(state["threshold"])

    def sample(self, rays_o: torch.Tensor, rays_d: torch.Tensor,
               jitter: Optional[torch.Tensor] = None) -> PackedSamples:
        """March rays (R,3) (model space, unit directions) through the occupied cells ->
        PackedSamples (see :func:`taichi_nerf.nn.ops.march_rays`; jitter (R,) in [0,1))."""
        return march_rays(rays_o, rays_d, self.bitfield, self.spec, self.march, jitter)

    def mark_unseen(self, c2w: torch.Tensor, intrinsics: torch.Tensor, width: int,
                    height: int) -> None:
        """Mark cells outside every camera's view (c2w (N,3|4,4) model space, intrinsics (N,4)
        fx fy cx cy, image size in pixels) as never occupied; the others start unvisited."""
        occ_k.mark_unseen(self.spec.resolution, c2w.contiguous(), intrinsics.contiguous(),
                          int(width), int(height), self.density)
        self.repack()

    def mark_transparent(self, c2w: torch.Tensor, intrinsics: torch.Tensor, alpha: torch.Tensor,
                         usable: Optional[torch.Tensor] = None, max_side: int = 256,
                         shell: int = 0) -> float:
        """Mark cells that some camera sees whole through fully transparent pixels as never
        occupied (the visual hull of the alpha masks) -> share of cells so marked.

        c2w (N,3|4,4) model space, intrinsics (N,4) fx fy cx cy in pixels of alpha (N,H,W)
        in [0,1]; usable (N,) bool (default all): cameras whose pinhole projection is exact
        (lens distortion would move the pixels). Each image's coverage (alpha > 0) is
        max-pooled to at most `max_side` pixels a side first (coarser is more cautious) and
        each cell's bounding sphere gets one pooled pixel of margin. shell > 0 leaves the
        cells within `shell` cells (per axis, same cascade) of a cell that stays in:
        see :func:`keep_shell`."""
        n, h, w = alpha.shape
        k = max(1, -(-max(h, w) // max_side))
        covered = (alpha > 0).to(device=self.device, dtype=torch.uint8)
        if k > 1:
            # rows and columns past the image's edge count as covered: nothing is known there
            covered = torch.nn.functional.pad(covered, (0, -w % k, 0, -h % k), value=1)
            covered = covered.reshape(n, covered.shape[1] // k, k, covered.shape[2] // k, k)
            covered = covered.amax(dim=(2, 4))
        table = torch.zeros(n, covered.shape[1] + 1, covered.shape[2] + 1, dtype=torch.int32,
                            device=self.device)
        table[:, 1:, 1:] = covered.to(torch.int32).cumsum(1).cumsum(2)
        use = torch.ones(n, dtype=torch.int32) if usable is None else usable.to(torch.int32)
        before = int((self.density == occ_k.UNSEEN).sum())
        previous = self.density.clone() if shell > 0 else None
        occ_k.mark_transparent(self.spec.resolution, c2w.contiguous(),
                               (intrinsics / k).contiguous(), table, use.to(self.device).contiguous(),
                               1.0, self.density)
        if previous is not None:
            keep_shell(previous, self.density, self.spec.resolution, shell)
        self.repack()
        return (int((self.density == occ_k.UNSEEN).sum()) - before) / self.spec.n_cells

    def repack(self) -> None:
        """Rebuild the bitfield from the densities (the one rule, in kernels.occupancy)."""
        self.threshold = occ_k.build_bitfield(self.density, self.spec.resolution,
                                              self.spec.n_cascades, self.bitfield)

    def due(self, step: int) -> bool:
        """instant-ngp's schedule: update every min(16, step // 16 + 1) steps."""
        return step % min(16, step // 16 + 1) == 0

    def occupied(self) -> torch.Tensor:
        """bool (n_cells,): the cells the marcher samples (bits of the bitfield)."""
        shifts = torch.arange(32, dtype=torch.int32, device=self.device)
        bits = (self.bitfield[:, None] >> shifts[None, :]) & 1
        return bits.reshape(-1)[:self.spec.n_cells].bool()

    @property
    def occupied_fraction(self) -> float:
        """Share of cells currently marked occupied."""
        return float(self.occupied().float().mean())

    def occupied_per_cascade(self) -> list:
        """Share of occupied cells in each cascade, finest first."""
        occ = self.occupied().reshape(self.spec.n_cascades, -1).float().mean(1)
        return [float(v) for v in occ]

    def plan_update(self, step: int):
        """Which cells the update at `step` visits -> (mode, count, first): CURSOR `count`
        cells in order from cell `first`, mod n (warm-up; advances the cursor), SWEEP every
        cell (step 0 without a warm-up), or RANDOM count/2 uniform cells and count/2
        occupied ones. Both the host update and the device trainer's follow it."""
        n = self.spec.n_cells
        budget = min(n, self.max_cells_per_update)
        if step < self.warmup_steps:
            first, count = self._cursor, budget
            if step == 0:
                # Every cell of the outer cascades, then the cursor's first share of cascade
                # 0 (the core cube, where the object is): the untrained field's densities
                # carve at random, which clears background fog early but also carved the
                # object's cells (Lego: all but 0.6% of the grid empty by step 3). BENCHMARKS 2o.
                first = self.spec.cells_per_cascade % n
                count = min(n, (n - first) % n + budget)
            self._cursor = (first + count) % n
            return occ_k.CURSOR, count, first
        if step == 0:
            return occ_k.SWEEP, n, 0
        return occ_k.RANDOM, 2 * (budget // 2), 0

    def update(self, step: int, density_fn: Callable[[torch.Tensor], torch.Tensor],
               generator: Optional[torch.Generator] = None) -> None:
        """Sample cells, evaluate density_fn(model-space points (K,3)) -> sigma (K,), EMA, repack.

        instant-ngp's update: every cell decays by `decay`, sampled cells take the max of
        that and their new optical thickness sigma * min_step (the same factor in every
        cascade); unseen cells (-1) stay as they are."""
        n = self.spec.n_cells
        mode, count, first = self.plan_update(step)
        if mode == occ_k.SWEEP:
            idx = torch.arange(n, device=self.device)
        elif mode == occ_k.CURSOR:
            idx = ((torch.arange(count) + first) % n).to(self.device)
        else:
            uniform = torch.randint(0, n, (count // 2,), generator=generator).to(self.device)
            occupied = torch.nonzero(self.occupied())[:, 0]
            if occupied.numel():
                pick = torch.randint(0, occupied.numel(), (count // 2,),
                                     generator=generator).to(self.device)
                idx = torch.cat([uniform, occupied[pick]])
            else:
                idx = uniform
        idx = idx[self.density[idx] >= 0]  # unseen cells are never evaluated
        idx = idx.to(torch.int32).contiguous()
        new = torch.zeros(n, device=self.device)
        if idx.numel():
            jitter = torch.rand(idx.numel(), 3, generator=generator).to(self.device)
            pts = torch.empty(idx.numel(), 3, device=self.device)
            occ_k.cell_centers(self.spec.resolution, idx, jitter, pts)
            with torch.no_grad():
                sigma = density_fn(pts)
            # duplicates keep the largest new value
            new.scatter_reduce_(0, idx.long(), sigma * self.march.min_step, reduce="amax")
        seen = self.density >= 0
        fresh = torch.zeros(n, dtype=torch.bool, device=self.device)
        fresh[idx.long()] = True
        decayed = torch.maximum(self.density * self.decay, new)
        # a cell's first visit replaces "unknown" (inf) by what it holds
        decayed = torch.where(fresh & torch.isinf(self.density), new, decayed)
        self.density = torch.where(seen, decayed, self.density)
        self.repack()


def keep_shell(previous: torch.Tensor, density: torch.Tensor, resolution: int,
               shell: int) -> None:
    """Undo, in place, the carving (previous (n_cells,) -> density (n_cells,)) of every cell
    within `shell` cells per axis of a cell of its cascade that is not unseen (-1) after it:
    the carved hull keeps a shell of free space around it. Lego at 2400 steps: carving alone
    lost 0.2-0.4 dB against no carving, inside the object; with a shell of 2 it matched or
    passed no carving (BENCHMARKS 10d), so the field seems to need free space next to the
    hull to learn where the surface ends."""
    r3 = resolution ** 3
    for c in range(density.shape[0] // r3):
        now, before = density[c * r3:(c + 1) * r3], previous[c * r3:(c + 1) * r3]
        kept = (now != occ_k.UNSEEN).float().reshape(1, 1, resolution, resolution, resolution)
        near = torch.nn.functional.max_pool3d(kept, 2 * shell + 1, 1, shell).reshape(-1) > 0
        back = near & (now == occ_k.UNSEEN) & (before != occ_k.UNSEEN)
        now[back] = before[back]
