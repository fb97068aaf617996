"""Bring your own field: taichi_nerf.nn's building blocks around a radiance field you write.

    python examples/own_field.py [--steps N] [--res R] [--arch cpu]

The field here is deliberately not the project's NGPField: a hash-grid encoding
(`tnn.HashGrid`) and one small torch MLP that outputs density and a view-independent
colour. Everything around it comes from `taichi_nerf.nn`: camera rays
(`tnn.generate_rays`), the occupancy grid (`tnn.OccupancyGrid`, an nn.Module with
buffers) that skips empty space while marching, and differentiable compositing
(`tnn.composite`). It trains on the built-in scene (rendered locally on first use)
and prints the PSNR on its test views.
"""
from __future__ import annotations

import argparse
import math
from typing import List, Optional, Tuple

import torch

from taichi_nerf import nn as tnn
from taichi_nerf.data import builtin, load_dataset
from taichi_nerf.kernels.specs import HashGridSpec, MarchSpec, OccupancySpec


class TinyField(torch.nn.Module):
    """Positions (N,3) in the model box [0,1]^3 -> density sigma (N,), colour (N,3) in [0,1]."""

    def __init__(self, grid: HashGridSpec, hidden: int = 64):
        super().__init__()
        self.encoding = tnn.HashGrid(grid, generator=torch.Generator().manual_seed(0))
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(grid.n_levels * grid.n_features, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, 4))

    def forward(self, pos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(self.encoding(pos))
        # exp of a clamped logit: densities from ~0 to ~e^8 without overflow
        return torch.exp(out[:, 0].clamp(max=8.0)), torch.sigmoid(out[:, 1:])


def render(field: TinyField, grid: tnn.OccupancyGrid, rays_o: torch.Tensor,
           rays_d: torch.Tensor, bg: torch.Tensor, jitter: Optional[torch.Tensor] = None
           ) -> torch.Tensor:
    """Rays (R,3) in model space, background (R,3) -> rendered colour (R,3)."""
    s = grid.sample(rays_o, rays_d, jitter)               # packed samples in occupied cells
    sigma, rgb = field(s.positions.clamp(0.0, 1.0))
    colour, _depth, _opacity, _n = tnn.composite(sigma, rgb, s.t, s.dt, s.rays, bg)
    return colour


def main(argv: Optional[List[str]] = None) -> float:
    """Train TinyField on the built-in scene -> PSNR (dB) on its test views."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rays", type=int, default=2048, help="rays per step")
    p.add_argument("--res", type=int, default=builtin.DEFAULT_RESOLUTION, help="image side")
    p.add_argument("--arch", default="auto")
    a = p.parse_args(argv)

    rt = tnn.init(a.arch)
    dev = rt.torch_device
    scene_dir = builtin.ensure_builtin_scene(a.res)
    train = load_dataset(scene_dir, "train")
    test = load_dataset(scene_dir, "test", scene=train.scene)
    assert train.aabb_scale == 1, "this sketch covers the unit model box only"

    occ = OccupancySpec(n_cascades=1, resolution=64)
    grid = tnn.OccupancyGrid(occ, MarchSpec.for_occupancy(occ), dev).to(dev)
    field = TinyField(HashGridSpec(n_levels=12, log2_table=15, finest_resolution=512)).to(dev)
    opt = torch.optim.Adam(field.parameters(), lr=1e-2, eps=1e-15)

    def cameras(ds):
        return (torch.from_numpy(ds.transform_poses()[:, :3]).contiguous().to(dev),
                torch.from_numpy(ds.intrinsics).to(dev), torch.from_numpy(ds.distortion).to(dev))

    poses, intr, dist = cameras(train)
    n, h, w, c = train.images.shape
    pixels = torch.from_numpy(train.images.reshape(-1, c)).to(dev)
    gen = torch.Generator().manual_seed(0)
    for step in range(a.steps):
        if step % 16 == 0:  # refresh the occupancy grid with the field's current density
            grid.update(step, lambda pts: field(pts.clamp(0.0, 1.0))[0], gen)
        img = torch.randint(0, n, (a.rays,), generator=gen)
        xy = torch.stack([torch.randint(0, w, (a.rays,), generator=gen),
                          torch.randint(0, h, (a.rays,), generator=gen)], -1)
        rays_o, rays_d = tnn.generate_rays((xy.float() + 0.5).to(dev),
                                           img.to(torch.int32).to(dev), intr, dist, poses)
        target = pixels[((img * h + xy[:, 1]) * w + xy[:, 0]).to(dev)]
        bg = torch.rand(a.rays, 3, generator=gen).to(dev)  # alpha: composite on random colours
        target = target[:, :3] * target[:, 3:] + bg * (1 - target[:, 3:])
        colour = render(field, grid, rays_o, rays_d, bg, torch.rand(a.rays, generator=gen).to(dev))
        loss = torch.nn.functional.mse_loss(colour, target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    # test views, rendered on their white background as the dataset defines them
    poses, intr, dist = cameras(test)
    pix = tnn.pixel_grid(test.width, test.height, device=dev)
    mse = []
    with torch.no_grad():
        for i in range(len(test.images)):
            cam = torch.full((pix.shape[0],), i, dtype=torch.int32, device=dev)
            rays_o, rays_d = tnn.generate_rays(pix, cam, intr, dist, poses)
            target = torch.from_numpy(test.images[i].reshape(-1, c)).to(dev)
            target = target[:, :3] * target[:, 3:] + (1 - target[:, 3:])
            colour = render(field, grid, rays_o, rays_d, torch.ones_like(rays_o))
            mse.append(float(torch.mean((colour - target) ** 2)))
    psnr = -10.0 * math.log10(sum(mse) / len(mse))
    print(f"{rt.arch}: {a.steps} steps, test PSNR {psnr:.2f} dB on {len(mse)} views, "
          f"{grid.occupied_fraction:.1%} of the cells occupied")
    return psnr


if __name__ == "__main__":
    main()
