"""Multiresolution hash-grid encoding (instant-ngp) as Taichi building blocks and batch kernels.

Table layout: one array of shape (spec.n_params, spec.n_features); level l
occupies rows [level_offsets[l], level_offsets[l] + level_sizes[l]).
Positions are in [0, 1]^3 (clamped inside the building blocks so that any
caller stays in bounds). Output: (N, n_levels * n_features), level-major.
"""

import functools
from typing import List, Tuple

import numpy as np
import taichi as ti

from .specs import HASH_PRIMES, HashGridSpec

_P1_LO, _P1_HI = HASH_PRIMES[1] & 0xFFFF, HASH_PRIMES[1] >> 16
_P2_LO, _P2_HI = HASH_PRIMES[2] & 0xFFFF, HASH_PRIMES[2] >> 16


@ti.func
def mul_mod_pow2(a: ti.u32, p_lo: ti.u32, p_hi: ti.u32, mask: ti.u32) -> ti.u32:
    """(a * (p_hi * 2^16 + p_lo)) mod 2^k for mask = 2^k - 1, a < 2^16, k <= 24.

    The spatial hash wants u32 wrap-around; computing only the low k bits from
    16-bit halves never overflows, so Taichi's debug mode stays quiet.
    """
    lo = (a * p_lo) & mask
    hi = ((a * p_hi) & (mask >> 16)) << 16
    return (lo + hi) & mask


@ti.func
def grid_index(x: ti.u32, y: ti.u32, z: ti.u32, res: ti.i32, size: ti.i32,
               dense: ti.i32) -> ti.i32:
    """Row (within a level) of grid vertex (x, y, z): dense stride or spatial hash."""
    idx = ti.u32(0)
    if dense:
        side = ti.cast(res + 1, ti.u32)
        idx = x + y * side + z * (side * side)
    else:
        mask = ti.cast(size - 1, ti.u32)
        idx = (x & mask) ^ mul_mod_pow2(y, _P1_LO, _P1_HI, mask) ^ mul_mod_pow2(z, _P2_LO, _P2_HI, mask)
    return ti.cast(idx, ti.i32)


def split_scales(res: int) -> Tuple[int, float, float]:
    """(splits, s1, s2): how :func:`level_corners_at` splits p for resolution res.

    No split (0) for a power-of-two res: p * res is exact as it is. Otherwise p is cut
    at multiples of 1/s1, and, where that remainder can exceed one cell (res > 2^11),
    once more at 1/s2 (2 splits). Unused scales are 1.0, so that no division by zero
    is left even in the branches Taichi folds away.
    """
    if res & (res - 1) == 0:
        return 0, 1.0, 1.0
    k = 23 - int(res).bit_length()
    s1 = float(2 ** k)
    return (2, s1, float(2 ** (2 * k))) if s1 < res else (1, s1, 1.0)


def level_params(spec: HashGridSpec) -> List[Tuple[int, int, int, int, int, float, float]]:
    """Per level: (resolution, first table row, rows, dense 0/1, splits, s1, s2), the
    arguments of :func:`level_corners_at` / :func:`level_lookup_at` after the point."""
    return [(int(r), int(o), int(n), int(d)) + split_scales(int(r))
            for r, o, n, d in zip(spec.resolutions, spec.level_offsets, spec.level_sizes,
                                  spec.dense)]


@ti.func
def level_corners_at(p, res: ti.i32, first_row: ti.i32, size: ti.i32, dense: ti.i32,
                     splits: ti.i32, s1: ti.f32, s2: ti.f32):
    """Table rows (8 ints) and trilinear weights (8 floats) of one level at p in [0,1]^3.

    The level comes as values (see :func:`level_params`): compile-time constants in the
    batch kernels (Taichi folds the branches away), values read from a field in
    ``NerfScene``'s dynamic loop over levels. One function, so both agree exactly.
    """
    # p * res in float32 rounds to 1 ulp of res (1.5e-5 at 256), which moves the
    # trilinear weights by as much: measured up to 1.5e-5 relative error against the
    # float64 reference. So p * res is summed from pieces that are each exact.
    pc = ti.math.clamp(p, 0.0, 1.0)
    res_f = ti.cast(res, ti.f32)
    cell_f = ti.Vector.zero(ti.f32, 3)
    frac = ti.Vector.zero(ti.f32, 3)
    if splits == 0:
        q = pc * res_f                      # a power of two: exact as it is
        cell_f = ti.floor(q)
        frac = q - cell_f
    else:
        # p_hi (<= 23 - bits(res) significant bits, s1 = 2^that) times res is exact;
        # the rest r = p - p_hi < 1/s1 is exact too
        p_hi = ti.floor(pc * s1) / s1
        q_hi = p_hi * res_f
        cell_f = ti.floor(q_hi)
        frac = q_hi - cell_f
        r = pc - p_hi
        if splits == 2:
            # r * res may exceed one cell (fine levels, res > 2^11): split r once more
            # so that r_hi * res is exact and the sum with frac stays exact (quanta
            # of 1/s2, below 2^10): then only the last remainder rounds
            r_hi = ti.floor(r * s2) / s2
            g = frac + r_hi * res_f
            whole = ti.floor(g)
            cell_f += whole
            frac = g - whole
            r = r - r_hi
        frac += r * res_f
        whole = ti.floor(frac)              # the remainder crossed into later cells
        cell_f += whole
        frac -= whole
    top = cell_f > res_f - 1.0              # p == 1: the last cell, at its far face
    frac += ti.select(top, cell_f - (res_f - 1.0), 0.0)
    cell = ti.cast(ti.min(cell_f, res_f - 1.0), ti.i32)
    rows = ti.Vector.zero(ti.i32, 8)
    weights = ti.Vector.zero(ti.f32, 8)
    for c in ti.static(range(8)):
        cx, cy, cz = ti.static(c & 1, (c >> 1) & 1, (c >> 2) & 1)
        weights[c] = ((frac[0] if cx else 1.0 - frac[0])
                      * (frac[1] if cy else 1.0 - frac[1])
                      * (frac[2] if cz else 1.0 - frac[2]))
        rows[c] = first_row + grid_index(
            ti.cast(cell[0] + cx, ti.u32), ti.cast(cell[1] + cy, ti.u32),
            ti.cast(cell[2] + cz, ti.u32), res, size, dense)
    return rows, weights


@ti.func
def level_lookup_at(table: ti.template(), p, n_features: ti.template(), res: ti.i32,
                    first_row: ti.i32, size: ti.i32, dense: ti.i32, splits: ti.i32,
                    s1: ti.f32, s2: ti.f32):
    """The level's trilinearly interpolated n_features vector at p in [0,1]^3 (level as values,
    see :func:`level_corners_at`); table is a (n_params, n_features) field or ndarray."""
    rows, weights = level_corners_at(p, res, first_row, size, dense, splits, s1, s2)
    feat = ti.Vector.zero(ti.f32, n_features)
    for c in ti.static(range(8)):
        for f in ti.static(range(n_features)):
            feat[f] += weights[c] * table[rows[c], f]
    return feat


def make_level_funcs(spec: HashGridSpec):
    """@ti.funcs ``level_corners(p, l)`` -> (rows: 8 ints, weights: 8 floats) and
    ``level_lookup(table, p, l)`` -> n_features vector, for p in [0,1]^3 and static level l:
    :func:`level_corners_at` / :func:`level_lookup_at` with the level's constants."""
    F = spec.n_features
    params = level_params(spec)

    @ti.func
    def level_corners(p, l: ti.template()):
        return level_corners_at(p, *ti.static(params[l]))

    @ti.func
    def level_lookup(table: ti.template(), p, l: ti.template()):
        return level_lookup_at(table, p, F, *ti.static(params[l]))

    return level_corners, level_lookup


class HashGridKernels:
    """Compiled hash-grid kernels for one spec (get them with :func:`hash_grid_kernels`).

    - ``forward(pos (N,3), table (P,F), out (N,L*F))``: plain forward, any arch.
    - ``forward_ad_pos``: same body with ``needs_grad`` annotations, for ``kernel.grad``
      on cpu/cuda (table and position gradients).
    - ``table_grad_by_level(pos, grad_out, grad_table)``: hand-written table gradient
      (accumulates into grad_table) with one task per level, so no two threads touch
      the same row and the adds need no atomics: the fast path on the CPU.
    - ``table_grad_atomic(pos, grad_out, grad_table)``: the same gradient with one thread
      per point and atomic adds: the path of CUDA, Vulkan and Metal. Taichi's autodiff of
      the 16-level encoder took minutes to compile for CUDA (measured on an H100) and
      6.6 min for Vulkan on lavapipe (field autodiff, the path before); this compiles like
      the forward.
    """

    def __init__(self, spec: HashGridSpec):
        self.spec = spec
        L, F = spec.n_levels, spec.n_features
        self.corners, self.lookup = corners, lookup = make_level_funcs(spec)

        @ti.func
        def encode_point(pos: ti.template(), table: ti.template(), out: ti.template(), i):
            p = ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]])
            for l in ti.static(range(L)):
                feat = lookup(table, p, l)
                for f in ti.static(range(F)):
                    out[i, l * F + f] = feat[f]

        @ti.kernel
        def forward(pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    table: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            for i in range(pos.shape[0]):
                encode_point(pos, table, out, i)

        @ti.kernel
        def forward_ad_pos(pos: ti.types.ndarray(dtype=ti.f32, ndim=2, needs_grad=True),
                           table: ti.types.ndarray(dtype=ti.f32, ndim=2, needs_grad=True),
                           out: ti.types.ndarray(dtype=ti.f32, ndim=2, needs_grad=True)):
            for i in range(pos.shape[0]):
                encode_point(pos, table, out, i)

        @ti.kernel
        def table_grad_by_level(pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                                grad_out: ti.types.ndarray(dtype=ti.f32, ndim=2),
                                grad_table: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            ti.loop_config(block_dim=1)
            for task in range(L):
                for l in ti.static(range(L)):
                    if task == l:
                        for i in range(pos.shape[0]):
                            rows, weights = corners(
                                ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]]), l)
                            for c in ti.static(range(8)):
                                for f in ti.static(range(F)):
                                    # plain load/store on purpose: `+=` on a global
                                    # would compile to an atomic add
                                    grad_table[rows[c], f] = (grad_table[rows[c], f]
                                                              + weights[c] * grad_out[i, l * F + f])

        @ti.kernel
        def table_grad_atomic(pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                              grad_out: ti.types.ndarray(dtype=ti.f32, ndim=2),
                              grad_table: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            for i in range(pos.shape[0]):
                p = ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]])
                for l in ti.static(range(L)):
                    rows, weights = corners(p, l)
                    for c in ti.static(range(8)):
                        for f in ti.static(range(F)):
                            ti.atomic_add(grad_table[rows[c], f],
                                          weights[c] * grad_out[i, l * F + f])

        self.encode_point = encode_point
        self.forward = forward
        self.forward_ad_pos = forward_ad_pos
        self.table_grad_by_level = table_grad_by_level
        self.table_grad_atomic = table_grad_atomic


@functools.lru_cache(maxsize=None)
def hash_grid_kernels(spec: HashGridSpec) -> HashGridKernels:
    """The compiled kernels for `spec` (made once per spec; Taichi recompiles per arch)."""
    return HashGridKernels(spec)


def table_with_level_weights(table, spec: HashGridSpec, weights):
    """The hash table (n_params, F) numpy with each level's rows scaled by weights (L,).

    The encoding is linear in the table, so this equals scaling each level's features
    (how training masks fine levels early on); renderers that read a checkpoint apply it
    once at load instead of per sample."""
    out = np.array(table, np.float32, copy=True)
    w = np.asarray(weights, np.float32).reshape(-1)
    if w.shape != (spec.n_levels,):
        raise ValueError(f"level weights have shape {w.shape}, expected ({spec.n_levels},)")
    for off, size, wl in zip(spec.level_offsets, spec.level_sizes, w):
        if wl != 1.0:
            out[off:off + size] *= wl
    return out


def checkpoint_table(arrays, spec: HashGridSpec):
    """The (n_params, F) float32 hash table a checkpoint's renderers use: the saved table,
    its levels scaled by the saved level weights (coarse-to-fine training), shape checked."""
    table = np.ascontiguousarray(arrays["field/grid.table"], np.float32)
    if table.shape != (spec.n_params, spec.n_features):
        raise ValueError(f"hash table shape {table.shape} does not match the config "
                         f"({spec.n_params}, {spec.n_features})")
    if "field/level_weights" in arrays:
        table = table_with_level_weights(table, spec, arrays["field/level_weights"])
    return table
