"""torch.autograd.Function wrappers around the Taichi kernels (shared buffers, no copies).

Torch tensors go straight into the kernels: where Taichi's arch and the
tensor's device agree (cpu/cpu, cuda/cuda) the kernel reads and writes the
tensor's own memory (on vulkan/metal torch stays on the CPU and Taichi copies).

Backward, per op (tests compare each with the pure-torch reference):
- hash grid, table gradient: hand-written kernels, one task per level on cpu and atomic
  adds elsewhere (cuda, vulkan, metal; ``runtime.table_grad``);
- hash grid, position gradient: Taichi ndarray autodiff (``kernel.grad``), which
  Taichi 1.7.4 offers on cpu/cuda only (elsewhere NotImplementedError);
- compositing: a hand-written backward kernel on every arch (Taichi's autodiff
  gets the loop-carried transmittance wrong, see ``kernels/composite.py``);
- SH encoding, ray-box and marching: not differentiable.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

from taichi_nerf.nn import runtime
from taichi_nerf.kernels import composite as composite_k
from taichi_nerf.kernels import occupancy as occ_k
from taichi_nerf.kernels.hash_grid import hash_grid_kernels
from taichi_nerf.kernels.march import march_kernels, pack_segment
from taichi_nerf.kernels.rays import ray_aabb_kernel
from taichi_nerf.kernels.sh import sh_kernels
from taichi_nerf.kernels.specs import HashGridSpec, MarchSpec, OccupancySpec

# Value checks (ranges, indices, finiteness) read a tensor's contents on the host. For a CPU
# tensor that is a plain memory read; for a CUDA tensor each one waits until the GPU has run
# all queued work (a host sync), several per training step. So they run on CPU tensors only
# (where the cpu, vulkan and metal archs keep torch's tensors): tests and CPU users keep the
# clear errors, while a CUDA step only waits where it must (march_rays' sample count).
# Set CHECK_DEVICE_VALUES = True to run them on GPU tensors too while debugging. Checks of
# shape, dtype and device read metadata only and always run.
CHECK_DEVICE_VALUES = False


def checks_values(x: torch.Tensor) -> bool:
    """True when value checks may read x: x is on the CPU or CHECK_DEVICE_VALUES is set."""
    return x.device.type == "cpu" or CHECK_DEVICE_VALUES


def check_tensor(x: torch.Tensor, name: str, shape: Tuple[Optional[int], ...],
                 dtype: torch.dtype = torch.float32) -> None:
    """Raise ValueError unless x is a contiguous tensor of `dtype` whose shape matches (None = any)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {x.dtype}")
    if x.dim() != len(shape) or any(s is not None and s != xs for s, xs in zip(shape, x.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous; call .contiguous() first")


def _same_device(*tensors: torch.Tensor) -> None:
    devs = {t.device for t in tensors}
    if len(devs) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devs))}")


def _with_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A detached alias of x whose .grad is `grad`, the form Taichi's ndarray autodiff reads."""
    d = x.detach()
    d.grad = grad
    return d


# ---------------------------------------------------------------- hash grid
class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, table, spec, coherent):
        k = hash_grid_kernels(spec, coherent)
        out = torch.empty(pos.shape[0], spec.out_dim, dtype=torch.float32, device=pos.device)
        k.forward(pos.detach(), table.detach(), out)
        ctx.spec = spec
        ctx.save_for_backward(pos, table)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        pos, table = ctx.saved_tensors
        spec = ctx.spec
        grad_out = grad_out.contiguous()
        want_pos = ctx.needs_input_grad[0]
        g_table = torch.zeros_like(table)
        g_pos = torch.zeros_like(pos) if want_pos else None
        rt = runtime.current()
        k = hash_grid_kernels(spec)
        if want_pos:
            if not rt.ndarray_autodiff:
                raise NotImplementedError(
                    f"hash-grid gradients with respect to positions need ndarray autodiff, "
                    f"which Taichi 1.7.4 offers on cpu and cuda only (arch is {rt.arch})")
            out = torch.empty_like(grad_out)
            # the grad kernel consumes (zeroes) out.grad: hand it a copy
            k.forward_ad_pos.grad(_with_grad(pos, g_pos), _with_grad(table, g_table),
                                  _with_grad(out, grad_out.clone()))
        elif rt.table_grad == "by_level":
            # one task per level: no atomics, ~3x faster than autodiff here (docs/design-notes.md)
            k.table_grad_by_level(pos.detach(), grad_out, g_table)
        else:
            k.table_grad_atomic(pos.detach(), grad_out, g_table)
        return g_pos, g_table, None, None


def hash_encode(pos: torch.Tensor, table: torch.Tensor, spec: HashGridSpec,
                check_range: bool = True, coherent: bool = False) -> torch.Tensor:
    """Hash-grid encode pos (N,3) float32 in [0,1] with table (P,F) -> (N, L*F).

    Differentiable to `table`, and to `pos` on cpu/cuda. `coherent`: neighbouring points
    lie close together (a rendered image's samples in pixel order), which picks the
    forward's order on the cpu (``kernels.hash_grid.level_major_forward``); same values.
    """
    runtime.current()  # a clear error (not Taichi's silent default init) before kernels run
    check_tensor(pos, "positions", (None, 3))
    check_tensor(table, "hash table", (spec.n_params, spec.n_features))
    _same_device(pos, table)
    # unchecked (GPU) positions stay memory-safe: the kernels clamp them into [0, 1]^3
    if check_range and pos.numel() and checks_values(pos):
        lo, hi = (float(v) for v in torch.aminmax(pos.detach()))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"positions must lie in [0, 1]^3 (got values in "
                             f"[{lo:.4g}, {hi:.4g}]); map them into the unit box first")
    return _HashEncode.apply(pos, table, spec, coherent)


class HashGrid(torch.nn.Module):
    """Multiresolution hash-grid encoder: forward(pos (N,3) in [0,1]) -> (N, L*F)."""

    def __init__(self, spec: HashGridSpec = HashGridSpec(), init_scale: float = 1e-4,
                 generator: Optional[torch.Generator] = None, device=None):
        super().__init__()
        self.spec = spec
        table = torch.rand(spec.n_params, spec.n_features, generator=generator) * 2 - 1
        self.table = torch.nn.Parameter((table * init_scale).to(device))

    def forward(self, pos: torch.Tensor, coherent: bool = False) -> torch.Tensor:
        """pos (N,3) float32 in [0,1] -> features (N, L*F); coherent: see hash_encode."""
        return hash_encode(pos, self.table, self.spec, coherent=coherent)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"levels={s.n_levels}, features={s.n_features}, log2_table={s.log2_table}, "
                f"resolution={s.base_resolution}..{s.finest_resolution}")


# ---------------------------------------------------------------- SH, AABB
def sh_encode(dirs: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Directions (N,3) float32, unit length -> SH basis (N, degree^2). Not differentiable."""
    runtime.current()
    check_tensor(dirs, "directions", (None, 3))
    k = sh_kernels(degree)
    out = torch.empty(dirs.shape[0], k.dim, dtype=torch.float32, device=dirs.device)
    k.encode(dirs.detach(), out)
    return out


def ray_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, lo, hi) -> Tuple[torch.Tensor, torch.Tensor]:
    """rays (R,3) float32, box corners (3,) -> t_near, t_far (R,); misses have t_far < t_near."""
    runtime.current()
    check_tensor(rays_o, "ray origins", (None, 3))
    check_tensor(rays_d, "ray directions", (rays_o.shape[0], 3))
    box = torch.tensor([*lo, *hi], dtype=torch.float32, device=rays_o.device)
    tn = torch.empty(rays_o.shape[0], dtype=torch.float32, device=rays_o.device)
    tf = torch.empty_like(tn)
    ray_aabb_kernel(rays_o, rays_d, box, tn, tf)
    return tn, tf


# ---------------------------------------------------------------- marching
@dataclasses.dataclass
class PackedSamples:
    """Samples of all rays, packed ray by ray.

    t, dt (M,): interval midpoint and length along the ray; positions (M,3)
    model space; dirs (M,3); ray_index (M,) int32; rays (R,2) int32 = (start, count).
    """

    t: torch.Tensor
    dt: torch.Tensor
    positions: torch.Tensor
    dirs: torch.Tensor
    ray_index: torch.Tensor
    rays: torch.Tensor

    @property
    def n_samples(self) -> int:
        """M."""
        return self.t.shape[0]


def _packed_rows(counts: torch.Tensor) -> torch.Tensor:
    """Packed (start, count) rows (A, 2) int32 of rays that took counts (A,) samples each."""
    return torch.stack([torch.cumsum(counts, 0, dtype=torch.int32) - counts, counts], -1)


def march_rays(rays_o: torch.Tensor, rays_d: torch.Tensor, bitfield: torch.Tensor,
               occ: OccupancySpec, march: MarchSpec,
               jitter: Optional[torch.Tensor] = None) -> PackedSamples:
    """March rays (R,3) (model space, unit directions) through the occupancy bitfield (W,) int32;
    jitter (R,) in [0,1): each ray's start offset in steps (None: 0, as for rendering)."""
    runtime.current()
    check_tensor(rays_o, "ray origins", (None, 3))
    check_tensor(rays_d, "ray directions", (rays_o.shape[0], 3))
    check_tensor(bitfield, "occupancy bitfield", (occ.n_words,), torch.int32)
    R, dev = rays_o.shape[0], rays_o.device
    if jitter is None:
        jitter = torch.zeros(R, dtype=torch.float32, device=dev)
    check_tensor(jitter, "start jitter", (R,))
    _same_device(rays_o, rays_d, bitfield, jitter)
    k = march_kernels(occ, march)
    counts = torch.empty(R, dtype=torch.int32, device=dev)
    k.count(rays_o, rays_d, jitter, bitfield, counts)
    rows = _packed_rows(counts)
    starts = rows[:, 0].contiguous()
    M = int(rows[-1].sum()) if R else 0  # the one host sync: the outputs' size
    t = torch.empty(M, dtype=torch.float32, device=dev)
    dt = torch.empty(M, dtype=torch.float32, device=dev)
    pos = torch.empty(M, 3, dtype=torch.float32, device=dev)
    dirs = torch.empty(M, 3, dtype=torch.float32, device=dev)
    ray_index = torch.empty(M, dtype=torch.int32, device=dev)
    if M:
        k.fill(rays_o, rays_d, jitter, bitfield, starts, counts, t, dt, pos, dirs, ray_index)
    return PackedSamples(t, dt, pos, dirs, ray_index, rows)


def occupied_bounds(bitfield: torch.Tensor, occ: OccupancySpec) -> torch.Tensor:
    """Bitfield (W,) int32 -> (2,3) model-space box around every occupied cell
    (``kernels.occupancy.occupied_bounds``; lo > hi when none is occupied)."""
    runtime.current()
    check_tensor(bitfield, "occupancy bitfield", (occ.n_words,), torch.int32)
    bounds = torch.empty(2, 3, dtype=torch.float32, device=bitfield.device)
    occ_k.occupied_bounds(bitfield, occ.resolution, occ.n_cascades, bounds)
    return bounds


def march_start(rays_o: torch.Tensor, rays_d: torch.Tensor, bounds: torch.Tensor,
                occ: OccupancySpec, march: MarchSpec) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rays (R,3) (model space, unit directions) -> (t, t_far) (R,): where each ray's walk
    starts (jitter 0) and where it can end (the box's exit, or that of the occupied cells'
    `bounds` (2,3) from :func:`occupied_bounds`); the state :func:`march_segment` advances."""
    runtime.current()
    check_tensor(rays_o, "ray origins", (None, 3))
    check_tensor(rays_d, "ray directions", (rays_o.shape[0], 3))
    check_tensor(bounds, "occupied bounds", (2, 3))
    _same_device(rays_o, rays_d, bounds)
    t = torch.empty(rays_o.shape[0], dtype=torch.float32, device=rays_o.device)
    t_far = torch.empty_like(t)
    march_kernels(occ, march).start(rays_o, rays_d, bounds, t, t_far)
    return t, t_far


def march_segment(rays_o: torch.Tensor, rays_d: torch.Tensor, ids: torch.Tensor,
                  t: torch.Tensor, t_far: torch.Tensor, taken: torch.Tensor,
                  bitfield: torch.Tensor, occ: OccupancySpec, march: MarchSpec,
                  limit: int) -> PackedSamples:
    """The next at most `limit` samples of rays ids (A,) int32 (rows of rays_o (R,3)), from
    t (R,) on; t and taken (R,) int32 (samples so far, start at 0) advance in place ->
    PackedSamples whose ray r is ray ids[r]. Walking a ray in segments gives the samples of
    :func:`march_rays` (jitter 0), in order, at most march.max_samples in all."""
    runtime.current()
    R, dev = rays_o.shape[0], rays_o.device
    check_tensor(rays_d, "ray directions", (R, 3))
    check_tensor(ids, "ray ids", (None,), torch.int32)
    check_tensor(t, "ray t", (R,))
    check_tensor(t_far, "ray t_far", (R,))
    check_tensor(taken, "samples taken", (R,), torch.int32)
    check_tensor(bitfield, "occupancy bitfield", (occ.n_words,), torch.int32)
    _same_device(rays_o, rays_d, ids, t, t_far, taken, bitfield)
    A, limit = ids.shape[0], int(limit)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    counts = torch.empty(A, dtype=torch.int32, device=dev)
    bt = torch.empty(A * limit, dtype=torch.float32, device=dev)
    bdt = torch.empty_like(bt)
    bpos = torch.empty(A * limit, 3, dtype=torch.float32, device=dev)
    bdir = torch.empty_like(bpos)
    if A:
        march_kernels(occ, march).segment(rays_o, rays_d, ids, t, t_far, taken, bitfield,
                                          limit, counts, bt, bdt, bpos, bdir)
    rows = _packed_rows(counts)
    M = int(rows[-1].sum()) if A else 0
    out = PackedSamples(torch.empty(M, dtype=torch.float32, device=dev),
                        torch.empty(M, dtype=torch.float32, device=dev),
                        torch.empty(M, 3, dtype=torch.float32, device=dev),
                        torch.empty(M, 3, dtype=torch.float32, device=dev),
                        torch.empty(M, dtype=torch.int32, device=dev),
                        rows)
    if M:
        pack_segment(out.rays, limit, bt, bdt, bpos, bdir, out.t, out.dt, out.positions,
                     out.dirs, out.ray_index)
    return out


# ---------------------------------------------------------------- compositing
class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigmas, rgbs, ts, dts, rays, bg, t_threshold):
        R, dev = rays.shape[0], sigmas.device
        rgb = torch.empty(R, 3, dtype=torch.float32, device=dev)
        depth = torch.empty(R, dtype=torch.float32, device=dev)
        opacity = torch.empty(R, dtype=torch.float32, device=dev)
        n_used = torch.empty(R, dtype=torch.int32, device=dev)
        composite_k.composite_forward(sigmas.detach(), rgbs.detach(), ts, dts, rays, bg,
                                      float(t_threshold), rgb, depth, opacity, n_used)
        ctx.save_for_backward(sigmas, rgbs, ts, dts, rays, bg, n_used, rgb, depth, opacity)
        ctx.mark_non_differentiable(n_used)
        return rgb, depth, opacity, n_used

    @staticmethod
    def backward(ctx, g_rgb, g_depth, g_opacity, _g_n):
        sigmas, rgbs, ts, dts, rays, bg, n_used, rgb, depth, opacity = ctx.saved_tensors
        gs = torch.empty_like(sigmas)
        gc = torch.empty_like(rgbs)
        # detached: Taichi inspects tensors that require grad on every launch, which cost
        # ~17 ms here for the saved outputs
        composite_k.composite_backward(sigmas.detach(), rgbs.detach(), ts, dts, rays, n_used, bg,
                                       rgb.detach(), depth.detach(), opacity.detach(),
                                       g_rgb.contiguous(), g_depth.contiguous(),
                                       g_opacity.contiguous(), gs, gc)
        return gs, gc, None, None, None, None, None


def composite(sigmas: torch.Tensor, rgbs: torch.Tensor, ts: torch.Tensor, dts: torch.Tensor,
              rays: torch.Tensor, bg: torch.Tensor, t_threshold: float = 1e-4
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite packed samples -> rgb (R,3), depth (R,), opacity (R,), n_used (R,) int32.

    sigmas (M,), rgbs (M,3), ts, dts (M,) float32; rays (R,2) int32 (start, count),
    packed (samples of ray r at start..start+count-1); bg (R,3). Differentiable to
    sigmas and rgbs (not to ts, dts or bg). Samples after the one that drops the
    transmittance below `t_threshold` are ignored (n_used counts the rest).
    """
    runtime.current()
    check_tensor(sigmas, "sigmas", (None,))
    M = sigmas.shape[0]
    check_tensor(rgbs, "rgbs", (M, 3))
    check_tensor(ts, "ts", (M,))
    check_tensor(dts, "dts", (M,))
    check_tensor(rays, "rays", (None, 2), torch.int32)
    check_tensor(bg, "background", (rays.shape[0], 3))
    _same_device(sigmas, rgbs, ts, dts, rays, bg)
    # unchecked (GPU, see CHECK_DEVICE_VALUES) rays must be valid: march_rays' are
    if rays.shape[0] and checks_values(rays):
        end = int((rays[:, 0].long() + rays[:, 1].long()).max())
        if int(rays.min()) < 0 or end > M:
            raise ValueError(f"rays (start, count) must index inside the {M} samples "
                             f"(largest start+count is {end})")
    return _Composite.apply(sigmas, rgbs, ts, dts, rays, bg, t_threshold)


def composite_resume(sigmas: torch.Tensor, rgbs: torch.Tensor, samples: PackedSamples,
                     ids: torch.Tensor, T: torch.Tensor, colour: torch.Tensor,
                     depth: torch.Tensor, t_threshold: float = 1e-4) -> None:
    """Rendering in pieces (no gradients): composite the next samples (M,) of rays ids (A,)
    int32 onto their running T (N,), premultiplied colour (N,3) and depth (N,), in place.
    From T = 1, colour = depth = 0, a ray's segments in order give :func:`composite`'s
    values: rgb = colour + T * bg, opacity = 1 - T."""
    runtime.current()
    M, N = sigmas.shape[0], T.shape[0]
    check_tensor(sigmas, "sigmas", (M,))
    check_tensor(rgbs, "rgbs", (M, 3))
    check_tensor(ids, "ray ids", (samples.rays.shape[0],), torch.int32)
    check_tensor(T, "transmittance", (N,))
    check_tensor(colour, "colour", (N, 3))
    check_tensor(depth, "depth", (N,))
    _same_device(sigmas, rgbs, samples.t, ids, T, colour, depth)
    if samples.t.shape[0] != M:
        raise ValueError(f"{M} sigmas for {samples.t.shape[0]} samples")
    composite_k.composite_resume(sigmas.detach(), rgbs.detach(), samples.t, samples.dt,
                                 samples.rays, ids, float(t_threshold), T, colour, depth)


def resume_weights(sigmas: torch.Tensor, samples: PackedSamples, ids: torch.Tensor,
                   T: torch.Tensor, t_threshold: float = 1e-4) -> torch.Tensor:
    """The weights (M,) that :func:`composite_resume` will give the next samples (M,) of rays
    ids (A,) int32 from their running T (N,) (unchanged); 0 after a ray ends."""
    runtime.current()
    M = sigmas.shape[0]
    check_tensor(sigmas, "sigmas", (M,))
    check_tensor(ids, "ray ids", (samples.rays.shape[0],), torch.int32)
    check_tensor(T, "transmittance", (T.shape[0],))
    _same_device(sigmas, samples.t, ids, T)
    if samples.t.shape[0] != M:
        raise ValueError(f"{M} sigmas for {samples.t.shape[0]} samples")
    w = torch.zeros(M, dtype=torch.float32, device=sigmas.device)  # rows no ray covers: 0
    composite_k.resume_weights(sigmas.detach(), samples.dt, samples.rays, ids,
                               float(t_threshold), T, w)
    return w
