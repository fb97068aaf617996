"""Multiresolution hash-grid encoding (instant-ngp) as Taichi building blocks and batch kernels.

Table layout: one array of shape (spec.n_params, spec.n_features); level l
occupies rows [level_offsets[l], level_offsets[l] + level_sizes[l]).
Positions are in [0, 1]^3 (clamped inside the building blocks so that any
caller stays in bounds). Output: (N, n_levels * n_features), level-major.
"""

import functools
from typing import Dict, List, NamedTuple, Tuple

import numpy as np
import taichi as ti

from . import runtime
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


def level_params(spec: HashGridSpec) -> List[Tuple[int, int, int, int, int, float, float,
                                                   float, float]]:
    """Per level: (resolution, first table row, rows, dense 0/1, splits, s1, s2, 1/s1, 1/s2),
    the arguments of :func:`level_corners_at` / :func:`level_lookup_at` after the point.
    The inverses are exact (powers of two): a kernel multiplies by them instead of dividing
    by a scale that is a run-time value in the cpu's level-class loop."""
    out = []
    for r, o, n, d in zip(spec.resolutions, spec.level_offsets, spec.level_sizes, spec.dense):
        splits, s1, s2 = split_scales(int(r))
        out.append((int(r), int(o), int(n), int(d), splits, s1, s2, 1.0 / s1, 1.0 / s2))
    return out


@ti.func
def level_corners_at(p, res: ti.i32, first_row: ti.i32, size: ti.i32, dense: ti.i32,
                     splits: ti.i32, s1: ti.f32, s2: ti.f32, inv_s1: ti.f32, inv_s2: ti.f32,
                     wide: ti.template()):
    """Table rows (8 ints) and trilinear weights (8 floats) of one level at p in [0,1]^3.

    The level comes as values (see :func:`level_params`): compile-time constants in the
    batch kernels (Taichi folds the branches away), values read from a field in
    ``NerfScene``'s dynamic loop over levels. One function, so both agree exactly.
    With `wide` (static; :func:`wide_products`) p * res is one float64 product instead.
    """
    # p * res in float32 rounds to 1 ulp of res (1.5e-5 at 256), which moves the
    # trilinear weights by as much: measured up to 1.5e-5 relative error against the
    # float64 reference. So p * res is formed exactly: as one float64 product (24 x 20
    # significant bits fit float64's 53) where float64 is cheap, else summed from float32
    # pieces that are each exact.
    pc = ti.math.clamp(p, 0.0, 1.0)
    res_f = ti.cast(res, ti.f32)
    cell_f = ti.Vector.zero(ti.f32, 3)
    frac = ti.Vector.zero(ti.f32, 3)
    if ti.static(wide):
        q = ti.cast(pc, ti.f64) * ti.cast(res, ti.f64)
        cell_d = ti.floor(q)
        cell_f = ti.cast(cell_d, ti.f32)    # exact: below 2^24
        frac = ti.cast(q - cell_d, ti.f32)
    elif splits == 0:
        q = pc * res_f                      # a power of two: exact as it is
        cell_f = ti.floor(q)
        frac = q - cell_f
    else:
        # p_hi (<= 23 - bits(res) significant bits, s1 = 2^that) times res is exact;
        # the rest r = p - p_hi < 1/s1 is exact too
        p_hi = ti.floor(pc * s1) * inv_s1   # exact: 1/s1 is a power of two
        q_hi = p_hi * res_f
        cell_f = ti.floor(q_hi)
        frac = q_hi - cell_f
        r = pc - p_hi
        if splits == 2:
            # r * res may exceed one cell (fine levels, res > 2^11): split r once more
            # so that r_hi * res is exact and the sum with frac stays exact (quanta
            # of 1/s2, below 2^10): then only the last remainder rounds
            r_hi = ti.floor(r * s2) * inv_s2
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
                    s1: ti.f32, s2: ti.f32, inv_s1: ti.f32, inv_s2: ti.f32):
    """The level's trilinearly interpolated n_features vector at p in [0,1]^3 (level as values,
    see :func:`level_corners_at`); table is a (n_params, n_features) field or ndarray."""
    rows, weights = level_corners_at(p, res, first_row, size, dense, splits, s1, s2, inv_s1,
                                     inv_s2, False)
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
        return level_corners_at(p, *ti.static(params[l]), False)

    @ti.func
    def level_lookup(table: ti.template(), p, l: ti.template()):
        return level_lookup_at(table, p, F, *ti.static(params[l]))

    return level_corners, level_lookup


class LevelClass(NamedTuple):
    """Levels that share their branches in :func:`level_corners_at` (dense or hashed, the
    number of splits, the table rows of a hashed level), with each one's varying values."""

    dense: int
    splits: int
    size: int                      # rows of a hashed level (0 for dense: unused there)
    levels: Tuple[int, ...]
    resolutions: Tuple[int, ...]
    first_rows: Tuple[int, ...]
    s1: Tuple[float, ...]
    s2: Tuple[float, ...]
    inv_s1: Tuple[float, ...]
    inv_s2: Tuple[float, ...]


def level_classes(spec: HashGridSpec, per_class: bool = True) -> Tuple[LevelClass, ...]:
    """The spec's levels grouped by branch structure (3-4 classes for 16 levels), or with
    per_class=False one class per level.

    The batch kernels unroll the classes and loop over each class's levels at run time: the
    branches stay compile-time constants, but the kernel holds 3-4 level bodies instead of
    16. Unrolled per level, the forward and the table gradient took 8-10 s each to compile
    on the CPU and most of a warm start's Python-to-IR time; per class, about 1 s each."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    params = level_params(spec)
    for l, (_res, _row, size, dense, splits, *_scales) in enumerate(params):
        key = (dense, splits, 0 if dense else size) if per_class else (dense, splits, size, l)
        groups.setdefault(key, []).append(l)
    return tuple(LevelClass(key[0], key[1], key[2], tuple(ls),
                            *(tuple(params[l][k] for l in ls) for k in (0, 1, 5, 6, 7, 8)))
                 for key, ls in groups.items())


def loops_per_class(arch: str) -> bool:
    """Whether the batch kernels on `arch` loop over each level class at run time (cpu) or
    unroll every level (cuda, vulkan, metal). On lavapipe the run-time loop moved the split
    arithmetic's results by up to 5e-4 (levels above 2^11 cells; cause not found), and CUDA
    could not be checked here: the GPUs keep the unrolled kernels they were tested with."""
    return arch == "cpu"


def table_grad_method(arch: str) -> str:
    """Hash-table gradient kernel for `arch`: "by_level" (few CPU cores: one task per level,
    no atomics) or "atomic" (GPUs, Vulkan/Metal included: one thread per point and level;
    hand-written, so it needs no autodiff, which Vulkan/Metal lack for ndarrays)."""
    return "by_level" if arch == "cpu" else "atomic"


def wide_products(arch: str) -> bool:
    """Whether the batch kernels on `arch` form p * res as one float64 product (cpu: scalar
    float64 costs what float32 does, and the forward and the table gradient ran 5-8% faster
    than with the float32 pieces, BENCHMARKS 3h) or from exact float32 pieces (the GPUs:
    Metal has no float64, consumer CUDA cards run it at 1/32-1/64 rate, lavapipe's Vulkan
    was not tested with it). Either way the product is exact: every arch gets the same cells."""
    return arch == "cpu"


def make_class_corners(spec: HashGridSpec, per_class: bool = True, wide: bool = False):
    """(classes, @ti.func ``class_level(c, j)`` -> (level, resolution, first row, s1, s2,
    1/s1, 1/s2) of the j-th level (a run-time index) of level class c (static), @ti.func
    ``corners_in(p, c, *those values but the level)`` -> (rows: 8 ints, weights: 8 floats)).
    Two steps, so that a loop over points reads a level's values once. A class of one
    level passes its values as constants, as an unrolled kernel does; the levels of a larger
    class are read from small fields made here (so under the running Taichi program): local
    vectors indexed at run time were rebuilt on the stack at every lookup, 15-30% slower."""
    classes = level_classes(spec, per_class)
    members = ints = floats = None  # only classes of several levels read them
    if any(len(k.levels) > 1 for k in classes):
        params = level_params(spec)
        members = ti.field(ti.i32, shape=(len(classes), max(len(k.levels) for k in classes)))
        ints = ti.field(ti.i32, shape=(spec.n_levels, 2))     # resolution, first row
        floats = ti.field(ti.f32, shape=(spec.n_levels, 4))   # s1, s2, 1/s1, 1/s2
        m = np.zeros(members.shape, np.int32)
        for c, k in enumerate(classes):
            m[c, :len(k.levels)] = k.levels
        members.from_numpy(m)
        ints.from_numpy(np.array([lp[:2] for lp in params], np.int32))
        floats.from_numpy(np.array([lp[5:] for lp in params], np.float32))

    @ti.func
    def class_level(c: ti.template(), j):
        """(level, resolution, first row, s1, s2, 1/s1, 1/s2) of class c's j-th level."""
        k = ti.static(classes[c])
        level, res, first = 0, 0, 0
        s1, s2, inv1, inv2 = 1.0, 1.0, 1.0, 1.0
        if ti.static(len(k.levels) == 1):
            level, res, first = k.levels[0], k.resolutions[0], k.first_rows[0]
            s1, s2, inv1, inv2 = k.s1[0], k.s2[0], k.inv_s1[0], k.inv_s2[0]
        else:
            level = members[c, j]
            res, first = ints[level, 0], ints[level, 1]
            s1, s2 = floats[level, 0], floats[level, 1]
            inv1, inv2 = floats[level, 2], floats[level, 3]
        return level, res, first, s1, s2, inv1, inv2

    @ti.func
    def corners_in(p, c: ti.template(), res, first, s1, s2, inv1, inv2):
        """level_corners_at for a level of class c, its values from class_level."""
        k = ti.static(classes[c])
        return level_corners_at(p, res, first, ti.static(k.size), ti.static(k.dense),
                                ti.static(k.splits), s1, s2, inv1, inv2, wide)

    return classes, class_level, corners_in


class HashGridKernels:
    """Compiled hash-grid kernels for one spec (get them with :func:`hash_grid_kernels`).
    With per_class (the cpu's form) the batch kernels loop over each level class at run
    time; without it they unroll every level (see :func:`level_classes`).

    - ``forward(pos (N,3), table (P,F), out (N,L*F))``: plain forward, any arch; with
      level_major (:func:`level_major_forward`) all points look up one level before the next,
      else each point looks up its levels in turn.
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

    def __init__(self, spec: HashGridSpec, per_class: bool = True,
                 level_major: bool = False, wide: bool = False):
        self.spec, self.level_major = spec, level_major
        L, F = spec.n_levels, spec.n_features
        self.corners, self.lookup = corners, lookup = make_level_funcs(spec)
        classes, class_level, corners_in = make_class_corners(spec, per_class, wide)
        self.classes = classes
        C = len(classes)

        @ti.func
        def encode_point(pos: ti.template(), table: ti.template(), out: ti.template(), i):
            # every level unrolled: only for Taichi's autodiff (forward_ad_pos), which
            # wants static loops; compiled only when a position gradient is asked for
            p = ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]])
            for l in ti.static(range(L)):
                feat = lookup(table, p, l)
                for f in ti.static(range(F)):
                    out[i, l * F + f] = feat[f]

        @ti.func
        def encode_level(pos: ti.template(), table: ti.template(), out: ti.template(), i,
                         c: ti.template(), j):
            """Point i's features of the j-th level of class c into its row of out."""
            l, res, first, s1, s2, inv1, inv2 = class_level(c, j)
            p = ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]])
            rows, weights = corners_in(p, c, res, first, s1, s2, inv1, inv2)
            feat = ti.Vector.zero(ti.f32, F)
            for k in ti.static(range(8)):
                for f in ti.static(range(F)):
                    feat[f] += weights[k] * table[rows[k], f]
            for f in ti.static(range(F)):
                out[i, l * F + f] = feat[f]


        @ti.kernel
        def forward(pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    table: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            if ti.static(level_major):
                # every point looks up one level before the next (instant-ngp's order): the
                # reads stay in one level's rows, a core's L2, not the whole table
                for c in ti.static(range(C)):
                    for j, i in ti.ndrange(ti.static(len(classes[c].levels)), pos.shape[0]):
                        encode_level(pos, table, out, i, c, j)
            else:
                for i in range(pos.shape[0]):
                    for c in ti.static(range(C)):
                        for j in range(ti.static(len(classes[c].levels))):
                            encode_level(pos, table, out, i, c, j)

        @ti.kernel
        def forward_ad_pos(pos: ti.types.ndarray(dtype=ti.f32, ndim=2, needs_grad=True),
                           table: ti.types.ndarray(dtype=ti.f32, ndim=2, needs_grad=True),
                           out: ti.types.ndarray(dtype=ti.f32, ndim=2, needs_grad=True)):
            for i in range(pos.shape[0]):
                encode_point(pos, table, out, i)

        @ti.func
        def has_grad(grad_out: ti.template(), i, l):
            # samples behind a ray's end (transmittance below the threshold) get exactly
            # zero gradient: about half of a training step's samples once the grid has
            # settled (Lego, steps 601-1200: 46% used). Adding their zeros changes nothing, so
            # skipping them saves the corner hashing and the scattered writes
            nz = 0
            for f in ti.static(range(F)):
                nz |= grad_out[i, l * F + f] != 0.0
            return nz

        @ti.kernel
        def table_grad_by_level(pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                                grad_out: ti.types.ndarray(dtype=ti.f32, ndim=2),
                                grad_table: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            ti.loop_config(block_dim=1)
            for task in range(L):
                for c in ti.static(range(C)):
                    for j in range(ti.static(len(classes[c].levels))):
                        l, res, first, s1, s2, inv1, inv2 = class_level(c, j)
                        if l == task:
                            for i in range(pos.shape[0]):
                                if has_grad(grad_out, i, l):
                                    rows, weights = corners_in(
                                        ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]]), c, res,
                                        first, s1, s2, inv1, inv2)
                                    for k in ti.static(range(8)):
                                        for f in ti.static(range(F)):
                                            # plain load/store on purpose: `+=` on a global
                                            # would compile to an atomic add
                                            grad_table[rows[k], f] = (
                                                grad_table[rows[k], f]
                                                + weights[k] * grad_out[i, l * F + f])

        @ti.kernel
        def table_grad_atomic(pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                              grad_out: ti.types.ndarray(dtype=ti.f32, ndim=2),
                              grad_table: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            for i in range(pos.shape[0]):
                p = ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]])
                for c in ti.static(range(C)):
                    for j in range(ti.static(len(classes[c].levels))):
                        l, res, first, s1, s2, inv1, inv2 = class_level(c, j)
                        if has_grad(grad_out, i, l):
                            rows, weights = corners_in(p, c, res, first, s1, s2, inv1, inv2)
                            for k in ti.static(range(8)):
                                for f in ti.static(range(F)):
                                    ti.atomic_add(grad_table[rows[k], f],
                                                  weights[k] * grad_out[i, l * F + f])

        self.encode_point = encode_point
        self.forward = forward
        self.forward_ad_pos = forward_ad_pos
        self.table_grad_by_level = table_grad_by_level
        self.table_grad_atomic = table_grad_atomic


# a hashed level at least this large (bytes) is encoded level-major on the cpu: measured
# (BENCHMARKS 3d, 2^18 points, 2-core EPYC with 1 MiB L2 per core) equal at 512 KiB a level,
# 1.3-2.7x faster at 1 MiB (the default 2^17 rows x 2 features), slower (0.8-0.9x) below,
# where the whole table fits the caches anyway and the order only costs output traffic.
# Coherent points (a rendered image's samples, ray by ray in pixel order) are the exception:
# neighbours share most corners, so point by point reuses them from cache; on a trained Lego
# run's preview frames the point-major forward took 158-172 ms against 220-231 level-major
# (BENCHMARKS 3h)
LEVEL_MAJOR_MIN_BYTES = 1 << 20


def level_major_forward(spec: HashGridSpec, arch: str, coherent: bool = False) -> bool:
    """Whether the forward on `arch` runs level-major: on the cpu for levels of at least
    LEVEL_MAJOR_MIN_BYTES, unless the points are `coherent` (neighbours close together: an
    image's samples in pixel order). The GPUs keep the point-major order they were
    measured with."""
    level_bytes = spec.table_size * spec.n_features * 4
    return arch == "cpu" and level_bytes >= LEVEL_MAJOR_MIN_BYTES and not coherent


@functools.lru_cache(maxsize=None)
def _kernels(spec: HashGridSpec, per_class: bool, level_major: bool, wide: bool,
             generation: int) -> HashGridKernels:
    return HashGridKernels(spec, per_class, level_major, wide)


def hash_grid_kernels(spec: HashGridSpec, coherent: bool = False) -> HashGridKernels:
    """The kernels for `spec` on the running arch, made once per spec and Taichi program (the
    cpu's level-class kernels hold fields): level classes on cpu, every level unrolled else;
    `coherent`: for points whose neighbours lie close together (:func:`level_major_forward`).
    Taichi compiles a kernel at its first call, so a form nobody calls costs nothing."""
    rt = runtime.current()
    arch = "cpu" if rt is None else rt.arch
    return _kernels(spec, loops_per_class(arch), level_major_forward(spec, arch, coherent),
                    wide_products(arch), 0 if rt is None else rt.generation)


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
