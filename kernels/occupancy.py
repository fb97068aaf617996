"""Occupancy grid: per-cell density (EMA) and a packed bitfield, with cascades.

Cascade c covers the cube of side 2^c centred at 0.5 (cascade 0 is the unit
box [0,1]^3). Cells are indexed c * res^3 + x + y * res + z * res^2; bit i of
the bitfield lives in 32-bit word i // 32 (stored as int32). After the cells' bits come
the empty-space blocks' (block^3 cells each, indexed alike after the n_cells
bits; OccupancySpec.block): a block's bit is set when any of its cells is, so marchers
cross empty blocks in one skip. Whatever writes cell bits rebuilds the blocks' with
:func:`derive_coarse_bits`.
"""
import numpy as np
import taichi as ti

from .rng import uniform
from .specs import OccupancySpec, block_cells


@ti.func
def cascade_of(p, n_cascades: ti.template()) -> ti.i32:
    """Smallest cascade whose cube contains p (clamped to the outermost)."""
    m = ti.max(ti.abs(p[0] - 0.5), ti.abs(p[1] - 0.5), ti.abs(p[2] - 0.5)) * 2.0
    c = 0
    if m > 1.0:
        c = ti.cast(ti.ceil(ti.log(m) / ti.log(2.0) - 1e-6), ti.i32)
    return ti.min(ti.max(c, 0), n_cascades - 1)


@ti.func
def cell_coords(p, c, res: ti.template()):
    """Integer cell (vec3 i32, clamped) of point p in cascade c's grid."""
    scale = 1.0 / ti.cast(1 << c, ti.f32)  # cascade c spans 2^c
    q = ((p - 0.5) * scale + 0.5) * res
    return ti.math.clamp(ti.cast(ti.floor(q), ti.i32), 0, res - 1)


@ti.func
def cell_index(c, cell, res: ti.template()) -> ti.i32:
    """Flat index of a cell of cascade c."""
    return c * res * res * res + cell[0] + cell[1] * res + cell[2] * res * res


@ti.func
def is_occupied(bitfield: ti.template(), idx) -> ti.i32:
    """1 if flat cell `idx` is marked occupied in the packed bitfield, else 0."""
    word = ti.cast(bitfield[idx >> 5], ti.u32)
    return ti.cast((word >> ti.cast(idx & 31, ti.u32)) & ti.u32(1), ti.i32)


@ti.func
def block_bit(c, cell, n_cascades: ti.template(), res: ti.template()) -> ti.i32:
    """Bitfield index of the empty-space block holding `cell` (vec3 i32) of cascade c."""
    B = ti.static(block_cells(res))
    nb = ti.static(res // B)
    b = cell // B
    return n_cascades * res * res * res + c * nb * nb * nb + b[0] + b[1] * nb + b[2] * nb * nb


@ti.func
def occupied_at(bitfield: ti.template(), p, n_cascades: ti.template(), res: ti.template()) -> ti.i32:
    """1 if model-space point p lies in an occupied cell (0 outside the outermost cascade)."""
    c = cascade_of(p, n_cascades)
    half = 0.5 * ti.cast(1 << c, ti.f32)
    inside = (ti.abs(p[0] - 0.5) <= half) and (ti.abs(p[1] - 0.5) <= half) and (ti.abs(p[2] - 0.5) <= half)
    occ = 0
    if inside:
        occ = is_occupied(bitfield, cell_index(c, cell_coords(p, c, res), res))
    return occ


def axis_cascade(x, n_cascades: int) -> np.ndarray:
    """numpy twin of :func:`cascade_of`, per coordinate: x (...) -> int64 (...) cascade whose
    extent holds x along its axis; a point's cascade is the largest of its three."""
    m = np.abs(np.asarray(x, np.float32) - np.float32(0.5)) * np.float32(2.0)
    # float32 throughout, in cascade_of's order of operations, so both round alike
    c = np.ceil(np.log(np.maximum(m, np.float32(1.0))) / np.log(np.float32(2.0))
                - np.float32(1e-6))
    return np.clip(c, 0, n_cascades - 1).astype(np.int64)


def axis_cell(x, c, res: int) -> np.ndarray:
    """numpy twin of :func:`cell_coords`, per coordinate: x (...) in cascades c (broadcast with
    x) -> int64 cell along that axis, clamped to [0, res)."""
    scale = np.float32(1.0) / np.left_shift(1, np.asarray(c, np.int64)).astype(np.float32)
    q = ((np.asarray(x, np.float32) - np.float32(0.5)) * scale + np.float32(0.5)) * np.float32(res)
    return np.clip(np.floor(q), 0, res - 1).astype(np.int64)


@ti.func
def cell_of_index(i, res):
    """Flat cell index -> (cascade, vec3 i32 cell): the inverse of :func:`cell_index`."""
    per = res * res * res
    r = i % per
    return i // per, ti.Vector([r % res, (r // res) % res, r // (res * res)])


# instant-ngp's NERF_MIN_OPTICAL_THICKNESS: the threshold never exceeds it.
MIN_OPTICAL_THICKNESS = 0.01
# Density of a cell that no training camera sees, or that one sees through fully transparent
# pixels (:func:`mark_transparent`): never occupied, never updated.
UNSEEN = -1.0
# Density of a cell not evaluated yet: occupied (nothing is known), counted as 0 in the mean.
UNVISITED = float("inf")


@ti.func
def _pack_words(density: ti.template(), threshold, bitfield: ti.template()):
    n = density.shape[0]
    for w in range(bitfield.shape[0]):
        bits = ti.u32(0)
        for b in range(32):
            i = w * 32 + b
            # past the cells (empty-space blocks): "may be occupied" until derive_coarse_bits
            if i >= n or density[i] > threshold:
                bits |= ti.u32(1) << ti.cast(b, ti.u32)
        bitfield[w] = ti.cast(bits, ti.i32)


@ti.kernel
def pack_bitfield(density: ti.types.ndarray(dtype=ti.f32, ndim=1), threshold: ti.f32,
                  bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    """density (n_cells,) -> bitfield (n_words,): a cell's bit set where density > threshold,
    every block's bit set (marches cell by cell); :func:`build_bitfield` does the whole rule."""
    _pack_words(density, threshold, bitfield)


@ti.kernel
def _pack_bitfield_at(density: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      threshold: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    _pack_words(density, threshold[0], bitfield)


@ti.kernel
def _pool_into_coarser(bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1), c: ti.i32,
                       res: ti.i32):
    # The inner half of cascade c covers cascade c-1 with 2x2x2 children per cell.
    q, h = res // 4, res // 2
    for x, y, z in ti.ndrange(h, h, h):
        any_child = 0
        for i, j, k in ti.static(ti.ndrange(2, 2, 2)):
            child = cell_index(c - 1, ti.Vector([2 * x + i, 2 * y + j, 2 * z + k]), res)
            any_child |= is_occupied(bitfield, child)
        if any_child:
            idx = cell_index(c, ti.Vector([x + q, y + q, z + q]), res)
            ti.atomic_or(bitfield[idx >> 5], ti.cast(ti.u32(1) << ti.cast(idx & 31, ti.u32), ti.i32))


@ti.func
def _any_bit(bitfield: ti.template(), start, count) -> ti.i32:
    # bits start .. start+count-1 (count < 32) span at most two words
    off = ti.cast(start & 31, ti.u32)
    bits = ti.cast(bitfield[start >> 5], ti.u32) >> off
    if off + ti.cast(count, ti.u32) > ti.u32(32):
        bits |= ti.cast(bitfield[(start >> 5) + 1], ti.u32) << (ti.u32(32) - off)
    mask = (ti.u32(1) << ti.cast(count, ti.u32)) - ti.u32(1)
    return ti.cast((bits & mask) != ti.u32(0), ti.i32)


@ti.kernel
def _mark_blocks(bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1), res: ti.template(),
                 n_cascades: ti.template()):
    B = ti.static(block_cells(res))
    nb = ti.static(res // B)
    n_blocks = n_cascades * nb * nb * nb
    first_word = n_cascades * res * res * res // 32
    for w in range(first_word, bitfield.shape[0]):
        bits = ti.u32(0)
        for k in range(32):
            i = (w - first_word) * 32 + k
            if i < n_blocks:
                c, r = i // (nb * nb * nb), i % (nb * nb * nb)
                x0, y0, z0 = (r % nb) * B, ((r // nb) % nb) * B, (r // (nb * nb)) * B
                found = 0
                for z in range(z0, z0 + B):
                    for y in range(y0, y0 + B):
                        if not found:
                            found = _any_bit(bitfield, cell_index(c, ti.Vector([x0, y, z]), res),
                                             B)
                if found:
                    bits |= ti.u32(1) << ti.cast(k, ti.u32)
        bitfield[w] = ti.cast(bits, ti.i32)


def derive_coarse_bits(bitfield, resolution: int, n_cascades: int) -> None:
    """Complete a bitfield (n_words,) whose cells' bits are set: each coarser cascade's cells
    over a set finer cell, then the empty-space blocks' bits. Arrays as build_bitfield's."""
    for c in range(1, n_cascades):
        _pool_into_coarser(bitfield, c, resolution)
    _mark_blocks(bitfield, resolution, n_cascades)


def occupancy_threshold(density, cells_per_cascade: int) -> float:
    """The occupied rule's threshold: min(0.01, mean of cascade 0 = the first cells), with
    unseen (-1) and unvisited (inf) cells counted as 0 (instant-ngp)."""
    head = density[:cells_per_cascade]
    if hasattr(head, "clamp"):  # a torch tensor (this layer never imports torch)
        mean = float(head.nan_to_num(posinf=0.0).clamp(min=0.0).mean())
    else:
        head = np.nan_to_num(np.asarray(head, np.float32), posinf=0.0)
        mean = float(np.maximum(head, 0.0).mean(dtype=np.float64))
    return min(MIN_OPTICAL_THICKNESS, mean)


def build_bitfield(density, resolution: int, n_cascades: int, bitfield) -> float:
    """The one rule for "occupied" (instant-ngp's): density (n_cells,) -> bitfield (n_words,)
    set where density > threshold (unvisited cells included, unseen ones never), then each
    coarser cascade also above a set finer cell; returns the threshold. Arrays may be numpy,
    torch or Taichi ndarrays."""
    threshold = occupancy_threshold(density, resolution ** 3)
    pack_bitfield(density, threshold, bitfield)
    derive_coarse_bits(bitfield, resolution, n_cascades)
    return threshold


_SUM_BLOCK = 1024  # cells per partial sum of the device threshold


@ti.kernel
def _threshold_on_device(density: ti.types.ndarray(dtype=ti.f32, ndim=1), n_head: ti.i32,
                         partials: ti.types.ndarray(dtype=ti.f32, ndim=1),
                         out: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    # float32 sums in blocks, then of the blocks, in a fixed order: one running float32 sum
    # of 2M cells is off by ~1e-3 relative, and an untrained field's cells all sit near
    # the mean, so that error alone marked every cell occupied (measured)
    for blk in range(partials.shape[0]):
        total = 0.0
        for i in range(blk * _SUM_BLOCK, ti.min((blk + 1) * _SUM_BLOCK, n_head)):
            v = density[i]
            if 0.0 < v < 3.0e38:  # unseen (-1) and unvisited (inf) count as 0
                total += v
        partials[blk] = total
    for _ in range(1):
        total = 0.0
        for blk in range(partials.shape[0]):
            total += partials[blk]
        out[0] = ti.min(MIN_OPTICAL_THICKNESS, total / ti.cast(n_head, ti.f32))


def threshold_partials(resolution: int):
    """The scratch array (blocks,) that :func:`build_bitfield_on_device` sums into."""
    return ti.ndarray(ti.f32, shape=(-(-resolution ** 3 // _SUM_BLOCK),))


def build_bitfield_on_device(density, resolution: int, n_cascades: int, bitfield,
                             threshold, partials) -> None:
    """:func:`build_bitfield` with the threshold computed into and read from `threshold`
    (1,) on the device, nothing brought to the host (the device training path); partials
    from :func:`threshold_partials`."""
    _threshold_on_device(density, resolution ** 3, partials, threshold)
    _pack_bitfield_at(density, threshold, bitfield)
    derive_coarse_bits(bitfield, resolution, n_cascades)


@ti.kernel
def occupied_bounds(bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1), res: ti.i32,
                    n_cascades: ti.i32, bounds: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """bounds (2,3) = a model-space box around every occupied cell of every cascade, one
    finest cell wider on each side (float rounding of a slab test); lo > hi when no cell is
    occupied. Every sample a walk takes lies inside it (segmented rendering ends rays there)."""
    for a in range(3):
        bounds[0, a] = 1.0e30
        bounds[1, a] = -1.0e30
    margin = 1.0 / ti.cast(res, ti.f32)
    for w in range(n_cascades * res * res * res // 32):  # the cells' words, not the blocks'
        word = ti.cast(bitfield[w], ti.u32)
        if word != ti.u32(0):
            for b in range(32):
                if (word >> ti.cast(b, ti.u32)) & ti.u32(1):
                    c, cell = cell_of_index(w * 32 + b, res)
                    size = ti.cast(1 << c, ti.f32)
                    for a in ti.static(range(3)):
                        lo = 0.5 + size * (ti.cast(cell[a], ti.f32) / res - 0.5)
                        ti.atomic_min(bounds[0, a], lo - margin)
                        ti.atomic_max(bounds[1, a], lo + size / res + margin)


def unpack_bitfield(bitfield: np.ndarray, n_cells: int) -> np.ndarray:
    """bool (n_cells,) from a packed bitfield (n_words,) int32 (bit i in word i // 32)."""
    words = np.asarray(bitfield).astype(np.uint32)
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)[None, :]) & 1
    return bits.reshape(-1)[:n_cells].astype(bool)


@ti.func
def project(c2w: ti.template(), intrinsics: ti.template(), cam, p):
    """Model-space point p -> (u, v, z): its pixel coordinates in camera `cam` (c2w (N,3|4,4)
    model space, OpenGL axes: looking down -z; intrinsics (N,4) fx fy cx cy, pixel centres
    at +0.5) and its depth along the view axis (<= 0: behind the camera)."""
    v = p - ti.Vector([c2w[cam, 0, 3], c2w[cam, 1, 3], c2w[cam, 2, 3]])
    # camera axes are the columns of c2w's rotation
    cx = v[0] * c2w[cam, 0, 0] + v[1] * c2w[cam, 1, 0] + v[2] * c2w[cam, 2, 0]
    cy = v[0] * c2w[cam, 0, 1] + v[1] * c2w[cam, 1, 1] + v[2] * c2w[cam, 2, 1]
    z = -(v[0] * c2w[cam, 0, 2] + v[1] * c2w[cam, 1, 2] + v[2] * c2w[cam, 2, 2])
    zs = ti.max(z, 1e-12)
    return (intrinsics[cam, 0] * cx / zs + intrinsics[cam, 2],
            -intrinsics[cam, 1] * cy / zs + intrinsics[cam, 3], z)


@ti.kernel
def mark_unseen(res: ti.i32, c2w: ti.types.ndarray(dtype=ti.f32, ndim=3),
                intrinsics: ti.types.ndarray(dtype=ti.f32, ndim=2), width: ti.i32, height: ti.i32,
                density: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """Set density to UNSEEN for every cell none of whose corners any camera sees, the others
    to UNVISITED: c2w (N,3|4,4) model space, intrinsics (N,4) fx fy cx cy, image size in pixels (pinhole:
    lens distortion moves points near the border by a few pixels at most)."""
    for i in range(density.shape[0]):
        c, cell = cell_of_index(i, res)
        size = ti.cast(1 << c, ti.f32)
        lo = 0.5 + size * (ti.cast(cell, ti.f32) / res - 0.5)
        seen = 0
        for cam in range(c2w.shape[0]):
            if seen:
                break
            for k in ti.static(range(8)):
                corner = lo + size / res * ti.Vector([k & 1, (k >> 1) & 1, (k >> 2) & 1])
                u, w, z = project(c2w, intrinsics, cam, corner)
                dist = (corner - ti.Vector([c2w[cam, 0, 3], c2w[cam, 1, 3],
                                            c2w[cam, 2, 3]])).norm()
                if z > 1e-4 * dist and 0.0 < u < width and 0.0 < w < height:
                    seen = 1
        density[i] = UNVISITED if seen else UNSEEN


@ti.kernel
def mark_transparent(res: ti.i32, c2w: ti.types.ndarray(dtype=ti.f32, ndim=3),
                     intrinsics: ti.types.ndarray(dtype=ti.f32, ndim=2),
                     covered: ti.types.ndarray(dtype=ti.i32, ndim=3),
                     usable: ti.types.ndarray(dtype=ti.i32, ndim=1), margin: ti.f32,
                     density: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """Set density to UNSEEN for every cell that some usable camera sees whole through pixels
    that are all fully transparent: covered (N, H+1, W+1) int32 is each image's summed-area
    table of its pixels with alpha > 0 (covered[n, y, x] counts those above row y and left of
    column x), intrinsics in the pixels of that table, usable (N,) int32 (0: skip the camera),
    margin in pixels added around each cell's projected bounding sphere. Cells not whole in
    a view (behind, too near, or off its image) learn nothing from it."""
    h = covered.shape[1] - 1
    w = covered.shape[2] - 1
    for i in range(density.shape[0]):
        if density[i] >= 0.0:
            c, cell = cell_of_index(i, res)
            size = ti.cast(1 << c, ti.f32)
            centre = 0.5 + size * ((ti.cast(cell, ti.f32) + 0.5) / res - 0.5)
            radius = 0.5 * ti.sqrt(3.0) * size / res
            for cam in range(c2w.shape[0]):
                if usable[cam] == 0:
                    continue
                u, v, z = project(c2w, intrinsics, cam, centre)
                if z <= 2.0 * radius:
                    continue
                # a sphere of radius r at depth z projects inside r / (z - r) focal lengths
                r = ti.max(intrinsics[cam, 0], intrinsics[cam, 1]) * radius / (z - radius) \
                    + margin
                x0 = ti.cast(ti.floor(u - r), ti.i32)
                x1 = ti.cast(ti.floor(u + r), ti.i32)
                y0 = ti.cast(ti.floor(v - r), ti.i32)
                y1 = ti.cast(ti.floor(v + r), ti.i32)
                if x0 >= 0 and y0 >= 0 and x1 < w and y1 < h:
                    n = (covered[cam, y1 + 1, x1 + 1] - covered[cam, y0, x1 + 1]
                         - covered[cam, y1 + 1, x0] + covered[cam, y0, x0])
                    if n == 0:
                        density[i] = UNSEEN
                        break


@ti.func
def cell_point(i, jitter, res):
    """Flat cell i, offset jitter (vec3 in [0,1) cell units) -> model-space point."""
    c, cell = cell_of_index(i, res)
    size = ti.cast(1 << c, ti.f32)
    return 0.5 + size * ((ti.cast(cell, ti.f32) + jitter) / res - 0.5)


@ti.kernel
def cell_centers(res: ti.i32, idx: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 jitter: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """Model-space points in cells `idx` (K,) at offset jitter (K,3) in [0,1) cell units -> out (K,3)."""
    for k in range(idx.shape[0]):
        p = cell_point(idx[k], ti.Vector([jitter[k, 0], jitter[k, 1], jitter[k, 2]]), res)
        for a in ti.static(range(3)):
            out[k, a] = p[a]


# ---------------------------------------------------------------- updates on the device
# The host grid (``taichi_nerf.nn.occupancy.OccupancyGrid.update``) picks cells with torch's
# generator; the device training path picks them here with counter-based draws (kernels.rng)
# and applies the same EMA. Its picks of occupied cells are by rejection (instant-ngp's way):
# up to OCCUPIED_TRIES random cells, the first occupied one, else the last one tried.
SWEEP, CURSOR, RANDOM = 0, 1, 2  # which cells an update visits (see OccupancyGrid.update)
OCCUPIED_TRIES = 32
_DRAWS_PER_PICK = OCCUPIED_TRIES + 3


@ti.kernel
def pick_cells(mode: ti.i32, first: ti.i32, cursor: ti.i32, half: ti.i32, seed: ti.u32,
               stream: ti.u32, density: ti.types.ndarray(dtype=ti.f32, ndim=1),
               bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1), res: ti.i32, lo: ti.f32,
               size: ti.f32, idx: ti.types.ndarray(dtype=ti.i32, ndim=1),
               unit: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """Picks first.. first+K-1 of an update (K = idx.shape[0]): SWEEP cell j, CURSOR cell
    (j + cursor) mod n, RANDOM a uniform cell for j < half and an occupied one after ->
    idx (K,) (-1 for an unseen cell: not evaluated) and a random point of each cell in
    hash-grid coordinates over the box [lo, lo + size]^3 -> unit (K,3)."""
    n = density.shape[0]
    for k in range(idx.shape[0]):
        j = first + k
        base = j * _DRAWS_PER_PICK
        cell = j
        if mode == CURSOR:
            cell = (j + cursor) % n
        elif mode == RANDOM:
            cell = ti.min(ti.cast(uniform(seed, stream, base) * n, ti.i32), n - 1)
            if j >= half:
                for t in range(OCCUPIED_TRIES):
                    cell = ti.min(ti.cast(uniform(seed, stream, base + t) * n, ti.i32), n - 1)
                    if is_occupied(bitfield, cell):
                        break
        jit = ti.Vector([uniform(seed, stream, base + OCCUPIED_TRIES + a) for a in ti.static(range(3))])
        p = cell_point(cell, jit, res)
        idx[k] = cell if density[cell] >= 0.0 else -1
        for a in ti.static(range(3)):
            unit[k, a] = ti.math.clamp((p[a] - lo) / size, 0.0, 1.0)


@ti.kernel
def gather_new(idx: ti.types.ndarray(dtype=ti.i32, ndim=1),
               sigma: ti.types.ndarray(dtype=ti.f32, ndim=1), min_step: ti.f32,
               new: ti.types.ndarray(dtype=ti.f32, ndim=1),
               fresh: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    """new[c] = max over picks of cell c of sigma * min_step (zero it first), fresh[c] = 1."""
    for k in range(idx.shape[0]):
        c = idx[k]
        if c >= 0:
            ti.atomic_max(new[c], sigma[k] * min_step)
            fresh[c] = 1


@ti.kernel
def apply_ema(density: ti.types.ndarray(dtype=ti.f32, ndim=1),
              new: ti.types.ndarray(dtype=ti.f32, ndim=1),
              fresh: ti.types.ndarray(dtype=ti.i32, ndim=1), decay: ti.f32):
    """The update's EMA (OccupancyGrid.update's rule): seen cells take max(density * decay,
    new), a first visit of an unvisited cell takes new; then new and fresh are zeroed."""
    for i in range(density.shape[0]):
        d = density[i]
        if d >= 0.0:
            v = ti.max(d * decay, new[i])
            if fresh[i] and d > 3.0e38:
                v = new[i]
            density[i] = v
        new[i] = 0.0
        fresh[i] = 0


def checkpoint_bitfield(config: dict, arrays: dict) -> np.ndarray:
    """The bitfield (n_words,) int32 a checkpoint's renderers sample: the cells it saved (the
    cells training sampled last), else rebuilt from its densities with :func:`build_bitfield`."""
    spec = OccupancySpec(**config["occupancy"])
    if "occupancy/bitfield" in arrays:
        saved = np.ascontiguousarray(arrays["occupancy/bitfield"], np.int32)
        if saved.shape not in ((spec.n_words,), (spec.cell_words,)):
            raise ValueError(f"occupancy bitfield has shape {saved.shape}, the config says "
                             f"({spec.n_words},)")
        # the cells' bits are what was trained; the derived bits are rebuilt from them, so a
        # checkpoint from before the empty-space blocks (cells only) loads alike
        bits = np.zeros(spec.n_words, np.int32)
        bits[:spec.cell_words] = saved[:spec.cell_words]
        derive_coarse_bits(bits, spec.resolution, spec.n_cascades)
        return bits
    density = np.ascontiguousarray(arrays["occupancy/density"], np.float32)
    if density.shape != (spec.n_cells,):
        raise ValueError(f"occupancy grid has {density.shape} cells, the config says "
                         f"{spec.n_cells}")
    bits = np.zeros(spec.n_words, np.int32)
    build_bitfield(density, spec.resolution, spec.n_cascades, bits)
    return bits


def checkpoint_occupied(config: dict, arrays: dict) -> np.ndarray:
    """bool (n_cells,): the cells of :func:`checkpoint_bitfield` (viewer overlays, examples)."""
    spec = OccupancySpec(**config["occupancy"])
    return unpack_bitfield(checkpoint_bitfield(config, arrays), spec.n_cells)
