"""A trained scene as @ti.func building blocks for your own Taichi kernels (simulation, rendering).

:class:`NerfScene` loads a checkpoint with numpy only (no torch), uploads the
hash table, the MLP weights and the occupancy bitfield into Taichi fields, and
offers ``@ti.func`` methods that any kernel can call, on every arch:

- ``density(p)``: sigma at world point p (per world unit of length),
- ``radiance(p, d)``: RGB in (0, 1) seen along unit direction d,
- ``normal(p)``: unit outward normal (minus the normalised density gradient),
- ``occupied(p)`` / ``occluded(p)``: occupancy-grid test / occupancy and
  ``density > threshold``,
- ``march(o, d)``: one ray -> (colour, depth, opacity), the training renderer's
  stepping rule, compositing rule and early termination,
- ``march_depth(o, d)``: the same walk with the density network only.

All positions, directions and distances are in WORLD units (the dataset's
frame); the scene transform saved in the checkpoint maps them into the model
box (model = world * scale + offset). The pipeline's building blocks are
re-exported here: :func:`make_level_funcs` (hash-grid lookup of one level),
:func:`occupied_at` (occupancy test in model space) and
:func:`accumulate_sample` (one compositing step).

Example (see docs/kernels.md for a complete one)::

    from taichi_nerf.kernels import runtime

    runtime.init("cpu")
    scene = NerfScene.load("runs/builtin")

    @ti.kernel
    def probe(pts: ti.types.ndarray(dtype=ti.math.vec3, ndim=1),
              sigma: ti.types.ndarray(dtype=ti.f32, ndim=1)):
        for i in pts:
            sigma[i] = scene.density(pts[i])
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import taichi as ti

from .composite import accumulate_sample
from .hash_grid import checkpoint_table, level_lookup_at, level_params, make_level_funcs
from .checkpoint_io import read_checkpoint
from .inference import _linear_layers, color_layers
from .march import make_march_funcs
from .mlp import activate
from .occupancy import checkpoint_bitfield, occupied_at
from .sh import make_sh_func
from .specs import (CHECKPOINT_NAME, T_THRESHOLD, HashGridSpec, MarchSpec,
                    OccupancySpec, checkpoint_path)

__all__ = ["NerfScene", "make_level_funcs", "occupied_at", "accumulate_sample",
           "DEFAULT_DENSITY_THRESHOLD", "CHECKPOINT_NAME"]

# sigma (per world unit) that counts as "solid" for occluded() and collisions:
# optical depth 1 over half a world unit. A briefly trained field has a soft
# shell (measured on the 500-step test run: 5% of points just inside the
# surface stay under 2.4) so a low level keeps particles out of it; a sharp
# field's surfaces exceed it by orders of magnitude. Tune per scene.
DEFAULT_DENSITY_THRESHOLD = 2.0
# normal(): central-difference step as a fraction of the model box side. Finer
# steps see the hash grid's high-frequency noise; coarser ones round corners.
NORMAL_STEP_FRACTION = 1.0 / 256.0


@ti.dataclass
class _Accumulated:
    """march()'s running sums along a ray: transmittance, premultiplied colour, weighted t."""
    T: ti.f32
    colour: ti.math.vec3
    depth: ti.f32


@ti.data_oriented
class NerfScene:
    """A trained radiance field in Taichi fields, with @ti.func queries in world units.

    Create it after ``taichi_nerf.kernels.runtime.init`` (its fields belong to that
    runtime). ``density_threshold`` (sigma per world unit) is the level that
    ``occluded`` calls solid; change it at run time with :meth:`set_threshold`.
    ``normal_step`` (world units) is the central-difference step of ``normal``.
    """

    def __init__(self, config: Dict, arrays: Dict[str, np.ndarray],
                 density_threshold: float = DEFAULT_DENSITY_THRESHOLD,
                 normal_step: Optional[float] = None):
        f = config["field"]
        self.config = config
        self.grid_spec = HashGridSpec(**f["grid"])
        self.occ = OccupancySpec(**config["occupancy"])
        self.march_spec = MarchSpec(**config["march"])
        self.sh_degree = int(f["sh_degree"])
        self.scale = float(config["scene"]["scale"])
        self.offset = np.asarray(config["scene"]["offset"], np.float32).reshape(3)
        self.background = np.asarray(config.get("background") or [0, 0, 0], np.float32)
        lo, hi = self.occ.aabb
        self._lo, self._size = float(lo[0]), float(hi[0] - lo[0])
        self._inv_size = 1.0 / self._size
        self._offset = tuple(float(v) for v in self.offset)
        self._inv_scale = 1.0 / self.scale
        eps_world = (normal_step if normal_step is not None
                     else self._size * NORMAL_STEP_FRACTION / self.scale)
        self.normal_step = float(eps_world)            # world units
        self._eps_model = self.normal_step * self.scale

        # ---- hash table: one (n_params, n_features) field, the batch kernels' layout
        spec = self.grid_spec
        table = checkpoint_table(arrays, spec)
        self.table = ti.field(ti.f32, shape=table.shape)
        self.table.from_numpy(table)
        # per level, for _encode: the integer and the float arguments of level_lookup_at
        params = level_params(spec)
        self._levels = ti.field(ti.i32, shape=(spec.n_levels, 5))
        self._levels.from_numpy(np.array([lp[:5] for lp in params], np.int32))
        self._level_scales = ti.field(ti.f32, shape=(spec.n_levels, 4))
        self._level_scales.from_numpy(np.array([lp[5:] for lp in params], np.float32))
        self._sh = make_sh_func(self.sh_degree)

        # ---- MLPs: one field per weight and bias (torch.nn.Linear layout, (out, in))
        nets = [_linear_layers(arrays, "field/density_net."),
                color_layers(arrays)]
        if not nets[0] or not nets[1]:
            raise ValueError("checkpoint has no field/density_net.* or field/color_net.* weights")
        self._weights: List[List] = []
        self._biases: List[List] = []
        self._dims: List[List[Tuple[int, int]]] = []
        for layers in nets:
            ws, bs, dims = [], [], []
            for w, b in layers:
                w = np.ascontiguousarray(w, np.float32)
                wf = ti.field(ti.f32, shape=w.shape)
                wf.from_numpy(w)
                bf = ti.field(ti.f32, shape=(w.shape[0],))
                bf.from_numpy(np.ascontiguousarray(b, np.float32))
                ws.append(wf)
                bs.append(bf)
                dims.append((int(w.shape[0]), int(w.shape[1])))
            self._weights.append(ws)
            self._biases.append(bs)
            self._dims.append(dims)
        self._n_layers = (len(nets[0]), len(nets[1]))
        # hidden layers ReLU; heads: raw (log density + features) and sigmoid (RGB)
        self._acts = (["relu"] * (len(nets[0]) - 1) + ["none"],
                      ["relu"] * (len(nets[1]) - 1) + ["sigmoid"])
        self.geo_dim = self._dims[0][-1][0]
        if self._dims[0][0][1] != spec.out_dim:
            raise ValueError(f"density MLP takes {self._dims[0][0][1]} inputs, the grid gives "
                             f"{spec.out_dim}")
        if self._dims[1][0][1] != self.geo_dim + self.sh_degree ** 2 or self._dims[1][-1][0] != 3:
            raise ValueError(f"colour MLP shape {self._dims[1]} does not match "
                             f"{self.geo_dim} + {self.sh_degree ** 2} inputs -> 3")
        # every activation vector is padded to the widest layer, so one local
        # ti.Vector type serves all layers (Taichi locals cannot change shape)
        self._width = max(max(max(o, i) for o, i in d) for d in self._dims)
        self._dynamic_inputs = ti.lang.impl.current_cfg().arch in (ti.x64, ti.arm64)

        # ---- occupancy bitfield, packed exactly as the torch renderer packs it
        bits = checkpoint_bitfield(config, arrays)
        self.bitfield = ti.field(ti.i32, shape=(self.occ.n_words,))
        self.bitfield.from_numpy(bits)

        self.threshold = ti.field(ti.f32, shape=())
        self.threshold[None] = float(density_threshold)
        # the batch marcher's walk: the same samples as the renderer's, by construction
        self._walk_ray = make_march_funcs(self.occ, self.march_spec).walk_ray

    # ------------------------------------------------------------------ python side
    @classmethod
    def load(cls, path: "os.PathLike[str] | str", **kwargs) -> "NerfScene":
        """Load RUN/checkpoint.npz, or RUN (the folder `train --out` wrote); after runtime.init."""
        return cls(*read_checkpoint(checkpoint_path(path)), **kwargs)

    def set_threshold(self, sigma_world: float) -> None:
        """Set the density (per world unit) that occluded() treats as solid."""
        self.threshold[None] = float(sigma_world)

    def world_to_model(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> model-space points (..., 3)."""
        return np.asarray(points, np.float32) * np.float32(self.scale) + self.offset

    def model_to_world(self, points: np.ndarray) -> np.ndarray:
        """Model-space points (..., 3) -> world points (..., 3)."""
        return (np.asarray(points, np.float32) - self.offset) / np.float32(self.scale)

    @property
    def box_world(self) -> Tuple[np.ndarray, np.ndarray]:
        """(lo (3,), hi (3,)) of the model box (outermost occupancy cascade) in world units."""
        lo, hi = self.occ.aabb
        return self.model_to_world(np.asarray(lo)), self.model_to_world(np.asarray(hi))

    # ------------------------------------------------------------------ internals (model space)
    @ti.func
    def _to_model(self, p):
        off = ti.Vector([self._offset[0], self._offset[1], self._offset[2]])
        return p * self.scale + off

    @ti.func
    def _dense(self, x, net: ti.template(), li: ti.template(), act: ti.template()):
        """One Linear layer + activation on a padded vector; dynamic loop over the outputs.

        Unrolling both loops (~9,400 multiply-adds for the two MLPs) took LLVM
        over 5 minutes; a dynamic loop over outputs keeps the code small. The
        inputs are a dynamic loop too on the CPU (measured: compiles faster and
        runs 2x faster), but unrolled elsewhere: on Vulkan (lavapipe) a
        dynamically indexed read of the local vector gave wrong results.
        """
        w = ti.static(self._weights[net][li])
        b = ti.static(self._biases[net][li])
        n_out, n_in = ti.static(self._dims[net][li])
        y = ti.Vector.zero(ti.f32, self._width)
        for o in range(n_out):
            acc = b[o]
            if ti.static(self._dynamic_inputs):
                for k in range(n_in):
                    acc += w[o, k] * x[k]
            else:
                # blocks of 32 stay under Taichi's unrolling warning
                for k0 in ti.static(range(0, n_in, 32)):
                    for k in ti.static(range(k0, min(k0 + 32, n_in))):
                        acc += w[o, k] * x[k]
            y[o] = activate(acc, act)
        return y

    @ti.func
    def _encode(self, u):
        """Hash-grid features of u in [0,1]^3 (padded vector), with a dynamic loop over levels.

        The batch kernels' lookup (``hash_grid.level_lookup_at``), fed with each level's
        constants read from small fields instead of Python constants: unrolling
        16 levels x 8 corners cost ~7.5 s of LLVM time per inlined copy on the CPU,
        and a dynamic loop makes each copy cheap.
        """
        F = ti.static(self.grid_spec.n_features)
        x = ti.Vector.zero(ti.f32, self._width)
        for l in range(self.grid_spec.n_levels):
            feat = level_lookup_at(self.table, u, F, self._levels[l, 0], self._levels[l, 1],
                                   self._levels[l, 2], self._levels[l, 3], self._levels[l, 4],
                                   self._level_scales[l, 0], self._level_scales[l, 1],
                                   self._level_scales[l, 2], self._level_scales[l, 3])
            for f in ti.static(range(F)):
                x[l * F + f] = feat[f]
        return x

    @ti.func
    def _geo(self, pm):
        """Model-space point -> density MLP outputs (padded vector; [0] = log sigma_model)."""
        h = self._encode((pm - self._lo) * self._inv_size)
        for li in ti.static(range(self._n_layers[0])):
            h = self._dense(h, 0, li, self._acts[0][li])
        return h

    @ti.func
    def _colour(self, geo, d):
        """Density MLP outputs + unit direction -> RGB in (0, 1)."""
        G = ti.static(self.geo_dim)
        sh = self._sh(d)
        x = ti.Vector.zero(ti.f32, self._width)
        for k in ti.static(range(G)):
            x[k] = geo[k]
        for k in ti.static(range(self.sh_degree ** 2)):
            x[G + k] = sh[k]
        h = x
        for li in ti.static(range(self._n_layers[1])):
            h = self._dense(h, 1, li, self._acts[1][li])
        return ti.Vector([h[0], h[1], h[2]])

    @ti.func
    def _composite_sample(self, ctx: ti.template(), n, t_mid, dt, p, d):
        """walk_ray's callback for march / march_depth: ctx = (_Accumulated, with_colour);
        True (stop) once the transmittance is below the renderer's T_THRESHOLD."""
        acc, with_colour = ti.static(ctx)  # static: aliases, where a plain assignment copies
        geo = self._geo(p)
        w, T_next = accumulate_sample(acc.T, ti.exp(geo[0]), dt)
        if ti.static(with_colour):
            acc.colour += w * self._colour(geo, d)
        acc.depth += w * t_mid
        acc.T = T_next
        return acc.T < T_THRESHOLD

    @ti.func
    def _march(self, o_world, d_world, with_colour: ti.template()):
        """Shared body of march / march_depth (model-space walk, world-unit depth)."""
        o = self._to_model(o_world)
        d = d_world / ti.max(d_world.norm(), 1e-12)
        acc = _Accumulated(T=1.0, colour=ti.Vector([0.0, 0.0, 0.0]), depth=0.0)
        # jitter 0: rendering starts at the near point, as the renderer's march_rays(jitter=None)
        self._walk_ray(o, d, 0.0, self.bitfield, ti.static(self.march_spec.max_samples),
                       self._composite_sample, (acc, with_colour))
        return acc.colour, acc.depth * self._inv_scale, 1.0 - acc.T

    # ------------------------------------------------------------------ public @ti.funcs
    @ti.func
    def density(self, p):
        """World point p (vec3) -> sigma (f32) per world unit of length (>= 0)."""
        return ti.exp(self._geo(self._to_model(p))[0]) * self.scale

    @ti.func
    def radiance(self, p, d):
        """World point p, direction d (vec3, any length) -> RGB vec3 in (0, 1) seen along d."""
        dn = d / ti.max(d.norm(), 1e-12)
        return self._colour(self._geo(self._to_model(p)), dn)

    @ti.func
    def normal(self, p):
        """World point p -> unit outward normal vec3: -grad(sigma) normalised (central differences).

        Differences of log sigma have the same direction as those of sigma but
        do not let one huge sample dominate. One dynamic loop over the six
        probes inlines the network once (compile time).
        """
        pm = self._to_model(p)
        g = ti.Vector([0.0, 0.0, 0.0])
        for s in range(6):
            a = s // 2
            sign = 1.0 - 2.0 * ti.cast(s % 2, ti.f32)
            e = ti.Vector([0.0, 0.0, 0.0])
            e[a] = sign * self._eps_model
            g[a] += sign * self._geo(pm + e)[0]
        n = -g
        return n / ti.max(n.norm(), 1e-20)

    @ti.func
    def occupied(self, p) -> ti.i32:
        """1 if world point p lies in an occupied cell of the occupancy grid (cheap), else 0."""
        return occupied_at(self.bitfield, self._to_model(p), ti.static(self.occ.n_cascades),
                           ti.static(self.occ.resolution))

    @ti.func
    def occluded(self, p) -> ti.i32:
        """1 if world point p is solid: occupied cell and density(p) > threshold, else 0."""
        hit = 0
        if self.occupied(p):
            if self.density(p) > self.threshold[None]:
                hit = 1
        return hit

    @ti.func
    def march(self, o, d):
        """Ray o + t d (world, d any length) -> (colour vec3, depth f32, opacity f32).

        colour is premultiplied (add background * (1 - opacity)); depth is the
        weighted sum of sample distances in world units along the normalised d
        (divide by opacity for the expected hit distance), as the renderer's.
        """
        return self._march(o, d, True)

    @ti.func
    def march_depth(self, o, d):
        """Ray o + t d (world) -> (depth f32 world units, opacity f32); density network only."""
        _, depth, opacity = self._march(o, d, False)
        return depth, opacity
