"""Occupancy grid on the torch side: density EMA per cell, packed bitfield, update schedule."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from taichi_nerf.kernels import occupancy as occ_k
from taichi_nerf.kernels.specs import MarchSpec, OccupancySpec


class OccupancyGrid:
    """instant-ngp's occupancy grid: cells hold an EMA of optical thickness (sigma x min step).

    Cells start unvisited (density -1, counted as occupied). :meth:`update`
    samples cells (while warming up, every cell in turn; later a random share
    plus a share of occupied cells), evaluates the density there, and marks
    occupied the cells above min(threshold, mean of visited cells).
    """

    def __init__(self, spec: OccupancySpec, march: MarchSpec, device: torch.device,
                 decay: float = 0.95, threshold: float = 0.01, warmup_steps: int = 256,
                 max_cells_per_update: int = 1 << 18):
        self.spec, self.march, self.device = spec, march, device
        self.decay, self.threshold, self.warmup_steps = decay, threshold, warmup_steps
        self.max_cells_per_update = max_cells_per_update
        self.density = torch.full((spec.n_cells,), -1.0, device=device)
        self.bitfield = torch.empty(spec.n_words, dtype=torch.int32, device=device)
        self._cursor = 0  # warm-up visits the cells in a fixed order, all within a few updates
        self.repack()

    def current_threshold(self) -> float:
        """min(threshold, mean optical thickness of the visited cells)."""
        visited = self.density[self.density >= 0]
        mean = float(visited.mean()) if visited.numel() else self.threshold
        return min(self.threshold, mean)

    def repack(self) -> None:
        """Rebuild the bitfield from the densities."""
        occ_k.pack_bitfield(self.density, self.current_threshold(), self.bitfield)

    def due(self, step: int) -> bool:
        """instant-ngp's schedule: update every min(16, step // 16 + 1) steps."""
        return step % min(16, step // 16 + 1) == 0

    def occupied(self) -> torch.Tensor:
        """bool (n_cells,): cells the marcher samples (above threshold, or unvisited)."""
        return (self.density > self.current_threshold()) | (self.density < 0)

    @property
    def occupied_fraction(self) -> float:
        """Share of cells currently marked occupied."""
        return float(self.occupied().float().mean())

    def update(self, step: int, density_fn: Callable[[torch.Tensor], torch.Tensor],
               generator: Optional[torch.Generator] = None) -> None:
        """Sample cells, evaluate density_fn(model-space points (K,3)) -> sigma (K,), EMA, repack."""
        n = self.spec.n_cells
        budget = min(n, self.max_cells_per_update)
        if step == 0:
            idx = torch.arange(n, device=self.device)  # one full pass carves empty space early
        elif step < self.warmup_steps:
            idx = (torch.arange(budget) + self._cursor) % n
            self._cursor = (self._cursor + budget) % n
            idx = idx.to(self.device)
        else:
            uniform = torch.randint(0, n, (budget // 2,), generator=generator).to(self.device)
            occupied = torch.nonzero(self.occupied())[:, 0]
            if occupied.numel():
                pick = torch.randint(0, occupied.numel(), (budget // 2,),
                                     generator=generator).to(self.device)
                idx = torch.cat([uniform, occupied[pick]])
            else:
                idx = uniform
        idx = idx.to(torch.int32).contiguous()
        jitter = torch.rand(idx.numel(), 3, generator=generator).to(self.device)
        pts = torch.empty(idx.numel(), 3, device=self.device)
        occ_k.cell_centers(self.spec.resolution, idx, jitter, pts)
        with torch.no_grad():
            sigma = density_fn(pts)
        cascade = (idx.long() // self.spec.cells_per_cascade).float()
        thickness = sigma * self.march.min_step * torch.pow(2.0, cascade)
        # EMA on the sampled cells; duplicates keep the largest new value
        new = torch.zeros(n, device=self.device).scatter_reduce(
            0, idx.long(), thickness, reduce="amax", include_self=False)
        hit = torch.zeros(n, dtype=torch.bool, device=self.device)
        hit[idx.long()] = True
        decayed = torch.where(self.density < 0, torch.zeros_like(self.density),
                              self.density * self.decay)
        self.density = torch.where(hit, torch.maximum(decayed, new), self.density)
        self.repack()
