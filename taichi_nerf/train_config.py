"""TrainConfig: the trainer's settings, a plain dataclass (no torch, no Taichi), so the CLI
can build a `train` flag for each field without loading the trainer."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional


def _opt(default: Any, help: str) -> Any:
    """A TrainConfig field with its `taichi-nerf train --field-name` help text."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class TrainConfig:
    """Trainer settings (saved in the checkpoint); defaults tuned for a 2-core CPU. Each
    field is a `taichi-nerf train` flag (--field-name) with the help text given here."""

    steps: Optional[int] = _opt(None, "total steps, or")
    time: Optional[float] = _opt(None, "wall-clock budget in seconds (default: 2000 steps)")
    seed: int = _opt(0, "random seed")
    lr: float = _opt(1e-2, "Adam learning rate")
    lr_final_factor: float = _opt(0.1, "the lr decays exponentially over the second half of "
                                       "the budget to lr times this")
    weight_decay: float = _opt(1e-6, "L2 on the MLP weights only")
    target_samples: int = _opt(1 << 16, "samples per step; the ray count adapts to it")
    init_rays: int = _opt(1 << 8, "rays of the first step (the first steps march an "
                                  "empty-looking grid: start small)")
    min_rays: int = _opt(1 << 8, "fewest rays per step")
    max_rays: int = _opt(1 << 16, "most rays per step")
    log2_table: int = _opt(17, "hash table size per level, log2")
    n_levels: int = _opt(16, "levels of the hash grid")
    finest_resolution: int = _opt(2048, "resolution of the finest hash level over the core "
                                        "cube (times the aabb scale, at most 2^15)")
    occ_resolution: int = _opt(128, "occupancy grid cells per side of each cascade")
    occ_cells_per_update: int = _opt(1 << 17, "most occupancy cells one grid update evaluates")
    occ_warmup_steps: int = _opt(256, "steps during which occupancy updates sweep the "
                                      "cells in order (then: half random, half occupied)")
    max_samples_per_ray: int = _opt(1024, "most samples marched along one ray")
    near: float = _opt(0.1, "model units in front of each camera left out (instant-ngp)")
    # never less than instant-ngp's t / 256: a downscaled capture needs no finer steps than
    # its pixels resolve
    footprint_steps: float = _opt(2.0, "cone steps (scenes larger than the unit box) span at "
                                       "least this many pixel footprints of the training "
                                       "images")
    distortion: float = _opt(0.0, "weight of mip-NeRF 360's distortion loss")
    near_grad_distance: float = _opt(0.0, "samples nearer than this (model units) to their "
                                          "camera get gradients scaled by (t / distance)^2 "
                                          "(0: off)")
    coarse_to_fine: Optional[float] = _opt(
        None, "coarse-to-fine: the hash levels above the first --coarse-levels join one after "
              "another over this share of the budget (0: all from the start; default: on for "
              "photos without alpha, whose every pixel is opaque, off for masked/synthetic "
              "data)")
    coarse_levels: int = _opt(4, "hash levels trained from the start with --coarse-to-fine")
    # sparse depth (DS-NeRF-style) on data with structure-from-motion points (COLMAP). beer
    # --downscale 4, 1700 steps, held out: weight 0 18.3 dB, 0.1 22.0, 0.5 23.0, 1.0 23.3
    sparse_depth: float = _opt(1.0, "weight of the sparse-depth loss: the weight of rays "
                                    "through the keypoints that saw a point must sit within "
                                    "+-tolerance (relative) of the point's distance (0: off)")
    sparse_depth_share: float = _opt(0.25, "share of each batch spent on rays through the "
                                           "sparse points' keypoints")
    sparse_depth_tolerance: float = _opt(0.05, "relative distance from a sparse point within "
                                               "which the depth loss is zero")
    pixel_jitter: Optional[bool] = _opt(
        None, "rays through a random point of their pixel instead of its centre (default: on "
              "for photos without alpha, off for masked/synthetic data)")
    # Off (0) by default: beer --downscale 4, 1700 steps, held out: off 23.27 dB / SSIM 0.756,
    # 16 floats 22.77 / 0.779 (the mean code misses each held-out frame's exposure), 16 with
    # L2 1e-2 23.05 / 0.760, a per-image affine colour on the logits 22.20 / 0.754
    appearance: int = _opt(0, "per-image appearance codes of this many floats (NeRF-W, "
                              "nerfacto), for photos whose exposure or white balance differ; "
                              "new views render with the mean code")
    eval_every: int = _opt(0, "validate every N steps (0: only at the end)")

    def budget_progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget used, in [0, 1]."""
        if self.time is not None:
            return min(1.0, elapsed / self.time)
        return min(1.0, step / self.total_steps)

    @property
    def total_steps(self) -> int:
        """Steps of a step-budget run (2000 when neither steps nor time is given)."""
        return self.steps if self.steps is not None else 2000

    def done(self, step: int, elapsed: float) -> bool:
        """True once the step or time budget is spent."""
        if self.time is not None:
            return elapsed >= self.time
        return step >= self.total_steps
