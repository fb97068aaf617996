"""Named ranges of a training step for torch's profiler: `taichi-nerf bench --profile` reads them.

Stages that run as a `torch.autograd.Function` (hash encoding, compositing) or as torch ops (the
MLPs, Adam) are named by torch itself; these ranges name what torch cannot see: Taichi kernels
called outside a Function (ray generation, marching, the SH basis) and groups of small ops.
"""
from __future__ import annotations

from torch.profiler import record_function

PREFIX = "taichi_nerf."
RAYS = "rays"            # a step's ray batch: pixel draw, camera rays, targets
MARCH = "march"          # occupancy-grid marching into packed samples (and the batch's cut)
SH = "sh"                # the direction encoding's SH basis (no gradient)
OCCUPANCY = "occupancy"  # the occupancy grid's update (density of sampled cells, EMA, bitfield)
LOSS = "loss"            # photometric loss and regularisers (forward)
STAGES = (RAYS, MARCH, SH, OCCUPANCY, LOSS)


def stage(name: str) -> record_function:
    """A profiler range named PREFIX + name; about 4 us a range when no profiler runs."""
    return record_function(PREFIX + name)
