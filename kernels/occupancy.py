"""Occupancy grid: per-cell density (EMA) and a packed bitfield, with cascades.

Cascade c covers the cube of side 2^c centred at 0.5 (cascade 0 is the unit
box [0,1]^3). Cells are indexed c * res^3 + x + y * res + z * res^2; bit i of
the bitfield lives in 32-bit word i // 32 (stored as int32).
"""
import taichi as ti


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
def occupied_at(bitfield: ti.template(), p, n_cascades: ti.template(), res: ti.template()) -> ti.i32:
    """1 if model-space point p lies in an occupied cell (0 outside the outermost cascade)."""
    c = cascade_of(p, n_cascades)
    half = 0.5 * ti.cast(1 << c, ti.f32)
    inside = (ti.abs(p[0] - 0.5) <= half) and (ti.abs(p[1] - 0.5) <= half) and (ti.abs(p[2] - 0.5) <= half)
    occ = 0
    if inside:
        occ = is_occupied(bitfield, cell_index(c, cell_coords(p, c, res), res))
    return occ


@ti.kernel
def pack_bitfield(density: ti.types.ndarray(dtype=ti.f32, ndim=1), threshold: ti.f32,
                  bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    """density (n_cells,) -> bitfield (n_words,): bit set where density > threshold or < 0 (unvisited)."""
    n = density.shape[0]
    for w in range(bitfield.shape[0]):
        bits = ti.u32(0)
        for b in range(32):
            i = w * 32 + b
            if i < n and (density[i] > threshold or density[i] < 0.0):
                bits |= ti.u32(1) << ti.cast(b, ti.u32)
        bitfield[w] = ti.cast(bits, ti.i32)


@ti.kernel
def cell_centers(res: ti.i32, idx: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 jitter: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """Model-space points in cells `idx` (K,) at offset jitter (K,3) in [0,1) cell units -> out (K,3)."""
    for k in range(idx.shape[0]):
        i = idx[k]
        per = res * res * res
        c = i // per
        r = i % per
        x, y, z = r % res, (r // res) % res, r // (res * res)
        size = ti.cast(1 << c, ti.f32)
        for a in ti.static(range(3)):
            coord = x if a == 0 else (y if a == 1 else z)
            out[k, a] = 0.5 + size * ((ti.cast(coord, ti.f32) + jitter[k, a]) / res - 0.5)
