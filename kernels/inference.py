"""Torch-free rendering of a trained checkpoint: every step a Taichi kernel, arrays in Taichi.

Used where torch cannot run on the device (Vulkan, Metal previews) and by
simulation code. The pipeline is the training renderer's: camera rays ->
occupancy-grid marching -> hash grid -> density MLP -> SH + colour MLP ->
compositing, with the MLPs as :mod:`kernels.mlp` kernels.
"""
from typing import Dict, List, Tuple

import numpy as np
import taichi as ti

from . import composite as composite_k
from .camera import generate_rays
from .checkpoint_io import read_checkpoint
from .field_arrays import Temporaries, colour_forward, field_forward, upload
from .hash_grid import checkpoint_table
from .march import (march_kernels, pack_segment, renders_whole, segment_continues,
                    segment_length)
from .occupancy import checkpoint_bitfield, occupied_bounds
from .specs import T_THRESHOLD, HashGridSpec, MarchSpec, OccupancySpec


def _linear_layers(arrays: Dict[str, np.ndarray], prefix: str) -> List[Tuple[np.ndarray, np.ndarray]]:
    idx = sorted({int(k[len(prefix):].split(".")[0]) for k in arrays
                  if k.startswith(prefix) and k.endswith(".weight")})
    return [(arrays[f"{prefix}{i}.weight"], arrays[f"{prefix}{i}.bias"]) for i in idx]


def color_layers(arrays: Dict[str, np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(weight (out, in), bias (out,)) of the colour MLP's layers; with per-image appearance
    codes (field/appearance (N, A)), the mean code is folded into the first layer's bias, so
    renderers here see the same MLP as the training renderer does for a new view."""
    layers = _linear_layers(arrays, "field/color_net.")
    codes = arrays.get("field/appearance")
    if codes is None or not layers:
        return layers
    a = codes.shape[1]
    w, b = (np.asarray(v, np.float64) for v in layers[0])
    if codes.ndim != 2 or w.shape[1] <= a:
        raise ValueError(f"field/appearance {codes.shape} does not fit the colour MLP's first "
                         f"layer {w.shape}")
    b = b + w[:, -a:] @ np.asarray(codes, np.float64).mean(0)
    return [(w[:, :-a].astype(np.float32), b.astype(np.float32))] + layers[1:]


@ti.kernel
def _to_unit(pos: ti.types.ndarray(dtype=ti.f32, ndim=2), lo: ti.f32, inv_size: ti.f32,
             out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    for i, k in ti.ndrange(pos.shape[0], 3):
        out[i, k] = ti.math.clamp((pos[i, k] - lo) * inv_size, 0.0, 1.0)


def _packed_rows(counts: np.ndarray) -> np.ndarray:
    """Packed (start, count) rows (A, 2) int32 of rays that took counts (A,) samples each."""
    c = counts.astype(np.int32)
    return np.stack([np.cumsum(c, dtype=np.int32) - c, c], -1)


@ti.kernel
def _gather_rows(rows: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 src: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 dst: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """dst[j] = src[rows[j]] for the rows (K,) of src (M, C) -> dst (K, C)."""
    for j, k in ti.ndrange(rows.shape[0], src.shape[1]):
        dst[j, k] = src[rows[j], k]


@ti.kernel
def _scatter_rows(rows: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  at: ti.types.ndarray(dtype=ti.i32, ndim=1),
                  dst: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """dst[at[j]] = rows[j] for rows (K, C) into dst (M, C)."""
    for j, k in ti.ndrange(at.shape[0], rows.shape[1]):
        dst[at[j], k] = rows[j, k]


@ti.kernel
def _fill_rows(a: ti.types.ndarray(dtype=ti.f32, ndim=2), v: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    for i, k in ti.ndrange(a.shape[0], a.shape[1]):
        a[i, k] = v[k]


class NerfModel:
    """A trained radiance field held in Taichi ndarrays; renders images without torch."""

    def __init__(self, config: Dict, arrays: Dict[str, np.ndarray]):
        f = config["field"]
        self.grid_spec = HashGridSpec(**f["grid"])
        self.sh_degree = int(f["sh_degree"])
        self.occ = OccupancySpec(**config["occupancy"])
        self.march = MarchSpec(**config["march"])
        self._tmp = Temporaries()
        self._live = self._tmp.live  # temporaries of the current call (see _new)
        self.scene_scale = float(config["scene"]["scale"])
        self.scene_offset = np.asarray(config["scene"]["offset"], np.float32)
        self.background = np.asarray(config.get("background") or [0, 0, 0], np.float32)
        self.config = config
        self.table = upload(checkpoint_table(arrays, self.grid_spec))
        self.density_layers = [(upload(w), upload(b))
                               for w, b in _linear_layers(arrays, "field/density_net.")]
        self.color_layers = [(upload(w), upload(b))
                             for w, b in color_layers(arrays)]
        self.bitfield = ti.ndarray(ti.i32, shape=(self.occ.n_words,))
        self.bitfield.from_numpy(checkpoint_bitfield(config, arrays))
        self.bounds = ti.ndarray(ti.f32, shape=(2, 3))
        occupied_bounds(self.bitfield, self.occ.resolution, self.occ.n_cascades,
                        self.bounds)
        lo, hi = self.occ.aabb
        self.lo, self.size = lo[0], hi[0] - lo[0]

    @classmethod
    def load(cls, path: str) -> "NerfModel":
        """Load a checkpoint written by `taichi-nerf train` (after ``kernels.runtime.init``)."""
        return cls(*read_checkpoint(path))

    def world_to_model(self, c2w_world: np.ndarray) -> np.ndarray:
        """World camera-to-world (4,4) -> model space (rotation kept, position scaled + offset)."""
        m = np.array(c2w_world, np.float32, copy=True)
        m[:3, 3] = m[:3, 3] * self.scene_scale + self.scene_offset
        return m

    def _new(self, dtype, shape) -> object:
        """A temporary ndarray, kept alive until :meth:`_release` (see field_arrays.Temporaries)."""
        return self._tmp.new(dtype, shape)

    def _release(self) -> None:
        """Wait for the launched kernels, then drop the temporaries of the last call."""
        self._tmp.release()

    def field(self, pos, dirs) -> Tuple[object, object]:
        """Model-space positions, unit dirs (M,3) ndarrays -> sigma (M,), rgb (M,3) ndarrays."""
        sigma, h = self.density(pos)
        return sigma, self.colour(h, dirs)

    def density(self, pos, coherent: bool = False) -> Tuple[object, object]:
        """Model-space positions (M,3) ndarray -> sigma (M,), geometry features (M, G);
        coherent: neighbouring points lie close together (an image's samples in pixel order)."""
        unit = self._new(ti.f32, (pos.shape[0], 3))
        _to_unit(pos, self.lo, 1.0 / self.size, unit)
        p = field_forward(self.grid_spec, self.table, self.density_layers, unit, self._tmp,
                          coherent=coherent)
        return p.sigma, p.density_outs[-1]

    def colour(self, h, dirs):
        """Geometry features h (M, G) from :meth:`density`, unit dirs (M,3) -> rgb (M,3)."""
        return colour_forward(h, dirs, self._tmp, self.sh_degree, self.color_layers)[1][-1]

    def _coloured(self, sigma, h, dirs, s_dt, rays, ids, T, t_threshold: float,
                  min_weight: float) -> Tuple[object, int]:
        """rgb (M,3) of a segment's samples: the colour MLP only where the weight the samples
        will be composited with exceeds min_weight, black elsewhere -> (rgb, how many)."""
        M = h.shape[0]
        w = self._new(ti.f32, (M,))
        composite_k.resume_weights(sigma, s_dt, rays, ids, float(t_threshold), T, w)
        kept = np.flatnonzero(composite_k.needs_colour(w.to_numpy(), min_weight)).astype(np.int32)
        if kept.size == M:
            return self.colour(h, dirs), M
        rgb = self._new(ti.f32, (M, 3))
        rgb.fill(0.0)
        if kept.size:
            at = self._new(ti.i32, (kept.size,))
            at.from_numpy(kept)
            h_k = self._new(ti.f32, (kept.size, h.shape[1]))
            d_k = self._new(ti.f32, (kept.size, 3))
            _gather_rows(at, h, h_k)
            _gather_rows(at, dirs, d_k)
            _scatter_rows(self.colour(h_k, d_k), at, rgb)
        return rgb, int(kept.size)

    def render_rays(self, rays_o, rays_d, bg: np.ndarray, t_threshold: float = T_THRESHOLD,
                    min_weight: float = 0.0) -> Dict[str, np.ndarray]:
        """Model-space rays (R,3) ndarrays, bg (3,) -> numpy rgb (R,3), depth (R,), opacity (R,);
        a ray ends once its transmittance is below t_threshold. The rays are walked in
        segments and each leaves the batch when it ends, as the torch renderer's
        ``render_rays_segmented`` does (the same kernels and rules, min_weight included: only
        samples weighing more get a colour); few rays (``march.renders_whole``) are walked
        whole in one pass, every sample coloured. Segmented walks also return n_samples and
        n_coloured."""
        R = rays_o.shape[0]
        if renders_whole(R, self.march):
            return self._render_rays_whole(rays_o, rays_d, bg, t_threshold)
        k = march_kernels(self.occ, self.march)
        t, t_far = self._new(ti.f32, (R,)), self._new(ti.f32, (R,))
        k.start(rays_o, rays_d, self.bounds, t, t_far)
        T = self._new(ti.f32, (R,))
        T.fill(1.0)
        colour = self._new(ti.f32, (R, 3))
        colour.fill(0.0)
        depth = self._new(ti.f32, (R,))
        depth.fill(0.0)
        taken = self._new(ti.i32, (R,))
        taken.fill(0)
        going = np.arange(R, dtype=np.int32)
        T_np = np.ones(R, np.float32)
        n_samples = n_coloured = 0
        while going.size:
            A = going.size
            limit = segment_length(A, self.march)
            ids = self._new(ti.i32, (A,))
            ids.from_numpy(going)
            counts = self._new(ti.i32, (A,))
            slots = [self._new(ti.f32, (A * limit,)), self._new(ti.f32, (A * limit,)),
                     self._new(ti.f32, (A * limit, 3)), self._new(ti.f32, (A * limit, 3))]
            k.segment(rays_o, rays_d, ids, t, t_far, taken, self.bitfield, limit, counts, *slots)
            c = counts.to_numpy()
            M = int(c.sum())
            if M:
                rays = self._new(ti.i32, (A, 2))
                rays.from_numpy(_packed_rows(c))
                s_t, s_dt = self._new(ti.f32, (M,)), self._new(ti.f32, (M,))
                s_pos, s_dir = self._new(ti.f32, (M, 3)), self._new(ti.f32, (M, 3))
                pack_segment(rays, limit, *slots, s_t, s_dt, s_pos, s_dir,
                             self._new(ti.i32, (M,)))
                sigma, h = self.density(s_pos, coherent=True)  # rays in pixel order
                rgb, n = self._coloured(sigma, h, s_dir, s_dt, rays, ids, T, t_threshold,
                                        min_weight)
                n_samples, n_coloured = n_samples + M, n_coloured + n
                composite_k.composite_resume(sigma, rgb, s_t, s_dt, rays, ids, float(t_threshold),
                                             T, colour, depth)
                T_np = T.to_numpy()
            # this round's temporaries go once its kernels are done (Vulkan, see _new); the
            # rays' running state stays referenced here
            self._release()
            going = going[segment_continues(c, limit, T_np[going], t_threshold)]
        # T_np is current: T changes only where a round had samples, which then read it
        out = {"rgb": colour.to_numpy() + T_np[:, None] * np.asarray(bg, np.float32)[None, :],
               "depth": depth.to_numpy(), "opacity": 1.0 - T_np,
               "n_samples": n_samples, "n_coloured": n_coloured}
        self._release()
        return out

    def _render_rays_whole(self, rays_o, rays_d, bg: np.ndarray,
                           t_threshold: float) -> Dict[str, np.ndarray]:
        """render_rays in one pass: every ray walked whole, then composited (few rays)."""
        R = rays_o.shape[0]
        k = march_kernels(self.occ, self.march)
        counts = self._new(ti.i32, (R,))
        no_jitter = self._new(ti.f32, (R,))
        no_jitter.fill(0.0)
        k.count(rays_o, rays_d, no_jitter, self.bitfield, counts)
        c = counts.to_numpy()
        packed = _packed_rows(c)
        M = int(c.sum())
        if M == 0:
            self._release()
            return {"rgb": np.broadcast_to(np.asarray(bg, np.float32), (R, 3)).copy(),
                    "depth": np.zeros(R, np.float32), "opacity": np.zeros(R, np.float32)}
        rgb, depth, opacity = self._new(ti.f32, (R, 3)), self._new(ti.f32, (R,)), \
            self._new(ti.f32, (R,))
        bg_rows = self._new(ti.f32, (R, 3))
        _fill_rows(bg_rows, np.asarray(bg, np.float32))
        starts = self._new(ti.i32, (R,))
        starts.from_numpy(np.ascontiguousarray(packed[:, 0]))
        t, dt = self._new(ti.f32, (M,)), self._new(ti.f32, (M,))
        pos, dirs = self._new(ti.f32, (M, 3)), self._new(ti.f32, (M, 3))
        ray_index = self._new(ti.i32, (M,))
        k.fill(rays_o, rays_d, no_jitter, self.bitfield, starts, counts, t, dt, pos, dirs,
               ray_index)
        sigma, colour = self.field(pos, dirs)
        rays = self._new(ti.i32, (R, 2))
        rays.from_numpy(packed)
        n_used = self._new(ti.i32, (R,))
        composite_k.composite_forward(sigma, colour, t, dt, rays, bg_rows, float(t_threshold),
                                      rgb, depth, opacity, n_used)
        out = {"rgb": rgb.to_numpy(), "depth": depth.to_numpy(), "opacity": opacity.to_numpy()}
        self._release()
        return out

    def render_image(self, c2w_model: np.ndarray, intrinsics, width: int, height: int,
                     bg=None, distortion=(0.0, 0.0, 0.0, 0.0),
                     chunk: int = 1 << 14,
                     t_threshold: float = T_THRESHOLD,
                     min_weight: float = 0.0) -> Dict[str, np.ndarray]:
        """One view: c2w (4,4) model space, intrinsics fx fy cx cy -> rgb (H,W,3), depth, opacity
        (H,W); t_threshold and min_weight as in render_rays."""
        j, i = np.meshgrid(np.arange(height, dtype=np.float32) + 0.5,
                           np.arange(width, dtype=np.float32) + 0.5, indexing="ij")
        pix = np.stack([i.ravel(), j.ravel()], -1)
        intr = np.asarray(intrinsics, np.float32).reshape(1, 4)
        dist = np.asarray(distortion, np.float32).reshape(1, 4)
        c2w = np.ascontiguousarray(np.asarray(c2w_model, np.float32)[None, :3])
        parts = []
        # chunks bound the per-sample buffers (MLP activations) whatever the image size
        for start in range(0, pix.shape[0], chunk):
            p = np.ascontiguousarray(pix[start:start + chunk])
            R = p.shape[0]
            rays_o = self._new(ti.f32, (R, 3))
            rays_d = self._new(ti.f32, (R, 3))
            generate_rays(p, np.zeros(R, np.int32), intr, dist, c2w, rays_o, rays_d,
                          np.zeros(1, np.int32))  # one camera, index 0: never bad
            parts.append(self.render_rays(rays_o, rays_d, self.background if bg is None else bg,
                                          t_threshold, min_weight))
        out = {k: np.concatenate([q[k] for q in parts]) for k in ("rgb", "depth", "opacity")}
        return {"rgb": out["rgb"].reshape(height, width, 3),
                "depth": out["depth"].reshape(height, width),
                "opacity": out["opacity"].reshape(height, width)}
