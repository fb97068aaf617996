"""The torch building blocks: kernel ops with autograd, the field, the occupancy grid, the renderer.

For people who bring their own field (as with nerfacc; examples/own_field.py trains one)::

    from taichi_nerf import nn as tnn
    grid = tnn.OccupancyGrid(occ_spec, march_spec, device)     # an nn.Module with buffers
    samples = grid.sample(rays_o, rays_d)                      # march the occupied cells
    sigma, rgb = my_field(samples.positions)                   # (M,), (M,3)
    rgb_out, depth, opacity, n_used = tnn.composite(sigma, rgb, samples.t, samples.dt,
                                                    samples.rays, bg)
    grid.update(step, lambda pts: my_field(pts)[0])            # every few steps

Names resolve lazily (torch and Taichi load on first use), so importing one submodule,
such as the numpy checkpoint writer, does not load the others.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "HashGrid": "ops", "hash_encode": "ops", "sh_encode": "ops", "ray_aabb": "ops",
    "march_rays": "ops", "PackedSamples": "ops", "composite": "ops",
    "NGPField": "field", "FieldConfig": "field",
    "OccupancyGrid": "occupancy", "Renderer": "renderer",
    "generate_rays": "cameras", "pixel_grid": "cameras",
    "distortion_loss": "losses", "sparse_depth_loss": "losses",
    "Runtime": "runtime", "init": "runtime",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_WHERE))
