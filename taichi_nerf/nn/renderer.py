"""Rays -> samples (occupancy-grid marching) -> field -> compositing; training and inference."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from taichi_nerf.nn import losses, ops, profiling
from taichi_nerf.nn.cameras import generate_rays, pixel_grid
from taichi_nerf.nn.field import NGPField
from taichi_nerf.kernels.specs import T_THRESHOLD
from taichi_nerf.nn.occupancy import OccupancyGrid


class Renderer:
    """Renders rays given in model space through a field and its occupancy grid."""

    def __init__(self, field: NGPField, grid: OccupancyGrid):
        self.field, self.grid = field, grid  # the grid's own MarchSpec steps the rays
        lo, hi = grid.spec.aabb
        self.lo = lo[0]
        self.size = hi[0] - lo[0]

    def to_unit(self, pos: torch.Tensor) -> torch.Tensor:
        """Model-space positions (M,3) -> hash-grid coordinates in [0,1]^3 over the model box."""
        return ((pos - self.lo) / self.size).clamp_(0.0, 1.0)

    @torch.no_grad()
    def density(self, pts: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        """sigma (K,) at model-space points (K,3), in chunks (for occupancy updates)."""
        out = [self.field.density(self.to_unit(pts[i:i + chunk]).contiguous())[0]
               for i in range(0, pts.shape[0], chunk)]
        return torch.cat(out) if out else pts.new_zeros(0)

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, bg: torch.Tensor,
                    max_samples: Optional[int] = None,
                    jitter: Optional[torch.Tensor] = None,
                    near_grad_distance: float = 0.0,
                    image: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """rays (R,3) model space, bg (R,3) -> rgb (R',3), depth (R',) model units, opacity (R',),
        n_samples, n_used (R',) samples before termination, n_rays = R'. With `max_samples`,
        only the first R' rays whose samples fit are rendered (at least one): a batch never
        balloons when the occupancy grid changes. jitter (R,): start offsets (training).
        near_grad_distance > 0: gradients of samples nearer than that (model units) shrink
        as (t / distance)^2 (training). image (R,): training-image index of each ray, for
        the field's appearance codes (None: the mean code, as for any new view)."""
        with profiling.stage(profiling.MARCH):
            s = self.grid.sample(rays_o, rays_d, jitter)
            n_rays = rays_o.shape[0]
            if max_samples is not None and s.n_samples > max_samples:
                ends = s.rays[:, 0].long() + s.rays[:, 1].long()
                n_rays = max(1, int(torch.searchsorted(ends, max_samples, right=True)))
                m = int(ends[n_rays - 1])
                # samples are packed ray by ray, so the first rays' samples are a prefix
                s = ops.PackedSamples(s.t[:m], s.dt[:m], s.positions[:m], s.dirs[:m],
                                      s.ray_index[:m], s.rays[:n_rays])
                bg = bg[:n_rays]
        # the per-sample gather only when the field has codes: training always passes image
        per_sample = (image[s.ray_index.long()]
                      if image is not None and self.field.config.appearance_dim else None)
        sigma, rgb = self.field(self.to_unit(s.positions), s.dirs, per_sample)
        if near_grad_distance > 0:
            # a point near the lens covers many pixels of one view and gets their gradients
            # summed; without the scale, photos grow floaters right in front of the cameras
            k = losses.near_gradient_scale(s.t, near_grad_distance)
            sigma, rgb = losses.scale_gradient(sigma, k), losses.scale_gradient(rgb, k)
        out_rgb, depth, opacity, n_used = ops.composite(sigma, rgb, s.t, s.dt, s.rays, bg,
                                                        T_THRESHOLD)
        return {"rgb": out_rgb, "depth": depth, "opacity": opacity,
                "n_samples": s.n_samples, "n_used": n_used, "n_rays": n_rays,
                "sigma": sigma, "samples": s}

    @torch.no_grad()
    def render_image(self, c2w: torch.Tensor, intrinsics: torch.Tensor, distortion: torch.Tensor,
                     width: int, height: int, bg: torch.Tensor,
                     chunk: int = 1 << 14, max_samples: int = 1 << 19) -> Dict[str, torch.Tensor]:
        """One view: c2w (3|4,4) model space, intrinsics (4,), distortion (4,), bg (3,)
        -> rgb (H,W,3), depth (H,W) model units along the ray, opacity (H,W)."""
        dev = self.grid.device
        pix = pixel_grid(width, height, device=dev)
        cam = torch.zeros(pix.shape[0], dtype=torch.int32, device=dev)
        o, d = generate_rays(pix, cam, intrinsics.reshape(1, 4).contiguous(),
                             distortion.reshape(1, 4).contiguous(),
                             c2w[None, :3].contiguous())
        outs = {"rgb": [], "depth": [], "opacity": []}
        i = 0
        while i < o.shape[0]:
            oc, dc = o[i:i + chunk], d[i:i + chunk]
            r = self.render_rays(oc, dc, bg.reshape(1, 3).expand(oc.shape[0], 3).contiguous(),
                                 max_samples=max_samples)
            for k in outs:
                outs[k].append(r[k])
            i += r["n_rays"]
        return {"rgb": torch.cat(outs["rgb"]).reshape(height, width, 3),
                "depth": torch.cat(outs["depth"]).reshape(height, width),
                "opacity": torch.cat(outs["opacity"]).reshape(height, width)}
