"""Rays -> samples (occupancy-grid marching) -> field -> compositing; training and inference."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from taichi_nerf.nn import losses, ops, profiling
from taichi_nerf.nn.cameras import generate_rays, pixel_grid
from taichi_nerf.nn.field import NGPField
from taichi_nerf.kernels.composite import needs_colour
from taichi_nerf.kernels.march import renders_whole, segment_continues, segment_length
from taichi_nerf.kernels.specs import ROUND_SAMPLES, T_THRESHOLD
from taichi_nerf.nn.occupancy import OccupancyGrid


class Renderer:
    """Renders rays given in model space through a field and its occupancy grid."""

    def __init__(self, field: NGPField, grid: OccupancyGrid):
        self.field, self.grid = field, grid  # the grid's own MarchSpec steps the rays
        lo, hi = grid.spec.aabb
        self.lo = lo[0]
        self.size = hi[0] - lo[0]

    def occupied_bounds(self) -> torch.Tensor:
        """(2,3) model-space box of the grid's occupied cells, recomputed only when the
        bitfield changed (training replaces or updates it)."""
        b = self.grid.bitfield
        key = (b.data_ptr(), b._version)
        if getattr(self, "_bounds_key", None) != key:
            self._bounds, self._bounds_key = ops.occupied_bounds(b, self.grid.spec), key
        return self._bounds

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
                    image: Optional[torch.Tensor] = None,
                    t_threshold: float = T_THRESHOLD,
                    coherent: bool = False) -> Dict[str, torch.Tensor]:
        """rays (R,3) model space, bg (R,3) -> rgb (R',3), depth (R',) model units, opacity (R',),
        n_samples, n_used (R',) samples before termination, n_rays = R'. With `max_samples`,
        only the first R' rays whose samples fit are rendered (at least one): a batch never
        balloons when the occupancy grid changes. jitter (R,): start offsets (training).
        near_grad_distance > 0: gradients of samples nearer than that (model units) shrink
        as (t / distance)^2 (training). image (R,): training-image index of each ray, for
        the field's appearance codes (None: the mean code, as for any new view). A ray ends
        once its transmittance is below t_threshold. coherent: neighbouring rays are
        neighbouring pixels (an image, not a training batch): the hash grid's order."""
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
        sigma, rgb = self.field(self.to_unit(s.positions), s.dirs, per_sample, coherent)
        if near_grad_distance > 0:
            # a point near the lens covers many pixels of one view and gets their gradients
            # summed; without the scale, photos grow floaters right in front of the cameras
            k = losses.near_gradient_scale(s.t, near_grad_distance)
            sigma, rgb = losses.scale_gradient(sigma, k), losses.scale_gradient(rgb, k)
        out_rgb, depth, opacity, n_used = ops.composite(sigma, rgb, s.t, s.dt, s.rays, bg,
                                                        t_threshold)
        return {"rgb": out_rgb, "depth": depth, "opacity": opacity,
                "n_samples": s.n_samples, "n_used": n_used, "n_rays": n_rays,
                "sigma": sigma, "samples": s}

    @torch.no_grad()
    def render_rays_segmented(self, rays_o: torch.Tensor, rays_d: torch.Tensor, bg: torch.Tensor,
                              t_threshold: float = T_THRESHOLD,
                              round_samples: int = ROUND_SAMPLES,
                              min_weight: float = 0.0) -> Dict[str, torch.Tensor]:
        """Inference: rays (R,3) model space, bg (R,3) -> rgb (R,3), depth (R,) model units,
        opacity (R,), n_samples (field evaluations), n_coloured (colour evaluations). The
        rays are walked a few samples at a time and a ray leaves the batch as soon as it
        ends, so samples behind a surface are never evaluated (instant-ngp's compaction);
        with the same t_threshold the values are render_rays' (jitter 0). Only samples that
        weigh more than min_weight get a colour (the others count as black: with 0, the
        samples after a ray's end within its segment and any whose weight rounds to 0, which
        count for nothing). The hash grid is read in its order for coherent points: rays
        are taken to be an image's, in pixel order (any order gives the same values)."""
        dev, R = rays_o.device, rays_o.shape[0]
        occ, march = self.grid.spec, self.grid.march
        t, t_far = ops.march_start(rays_o, rays_d, self.occupied_bounds(), occ, march)
        T = torch.ones(R, dtype=torch.float32, device=dev)
        colour = torch.zeros(R, 3, dtype=torch.float32, device=dev)
        depth = torch.zeros(R, dtype=torch.float32, device=dev)
        taken = torch.zeros(R, dtype=torch.int32, device=dev)
        ids = torch.arange(R, dtype=torch.int32, device=dev)
        n_samples = n_coloured = 0
        while ids.shape[0]:
            # few samples per ray while many rays are alive, more as they end
            limit = segment_length(ids.shape[0], march, round_samples)
            with profiling.stage(profiling.MARCH):
                s = ops.march_segment(rays_o, rays_d, ids, t, t_far, taken, self.grid.bitfield,
                                      occ, march, limit)
            counts = s.rays[:, 1]
            if s.n_samples:
                # an image's rays in pixel order: neighbouring samples share table rows
                sigma, h = self.field.density(self.to_unit(s.positions), coherent=True)
                keep = needs_colour(ops.resume_weights(sigma, s, ids, T, t_threshold),
                                    min_weight).nonzero().squeeze(1)
                if keep.shape[0] == s.n_samples:
                    rgb = self.field.colour(h, s.dirs)
                else:
                    rgb = torch.zeros(s.n_samples, 3, dtype=torch.float32, device=dev)
                    if keep.shape[0]:
                        rgb[keep] = self.field.colour(h[keep], s.dirs[keep])
                ops.composite_resume(sigma, rgb, s, ids, T, colour, depth, t_threshold)
                n_samples += s.n_samples
                n_coloured += keep.shape[0]
            ids = ids[segment_continues(counts, limit, T[ids.long()], t_threshold)]
        return {"rgb": colour + T[:, None] * bg, "depth": depth, "opacity": 1.0 - T,
                "n_samples": n_samples, "n_coloured": n_coloured}

    @torch.no_grad()
    def render_image(self, c2w: torch.Tensor, intrinsics: torch.Tensor, distortion: torch.Tensor,
                     width: int, height: int, bg: torch.Tensor, chunk: int = 1 << 16,
                     t_threshold: float = T_THRESHOLD,
                     min_weight: float = 0.0) -> Dict[str, torch.Tensor]:
        """One view: c2w (3|4,4) model space, intrinsics (4,), distortion (4,), bg (3,)
        -> rgb (H,W,3), depth (H,W) model units along the ray, opacity (H,W); `chunk` rays at
        a time. A t_threshold above the training's T_THRESHOLD ends rays earlier, and a
        min_weight above 0 colours only the samples that weigh more (previews; see
        render_rays_segmented; chunks few enough to be walked whole colour every sample)."""
        dev = self.grid.device
        pix = pixel_grid(width, height, device=dev)
        cam = torch.zeros(pix.shape[0], dtype=torch.int32, device=dev)
        o, d = generate_rays(pix, cam, intrinsics.reshape(1, 4).contiguous(),
                             distortion.reshape(1, 4).contiguous(),
                             c2w[None, :3].contiguous())
        outs = {"rgb": [], "depth": [], "opacity": []}
        for i in range(0, o.shape[0], chunk):
            oc, dc = o[i:i + chunk], d[i:i + chunk]
            bgc = bg.reshape(1, 3).expand(oc.shape[0], 3)
            if renders_whole(oc.shape[0], self.grid.march):  # few rays: one pass is cheaper
                r = self.render_rays(oc, dc, bgc.contiguous(), t_threshold=t_threshold,
                                     coherent=True)
            else:
                r = self.render_rays_segmented(oc, dc, bgc, t_threshold,
                                               min_weight=min_weight)
            for k in outs:
                outs[k].append(r[k])
        return {"rgb": torch.cat(outs["rgb"]).reshape(height, width, 3),
                "depth": torch.cat(outs["depth"]).reshape(height, width),
                "opacity": torch.cat(outs["opacity"]).reshape(height, width)}
