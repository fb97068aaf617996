"""Occupancy-grid ray marching with packed output.

Every marcher walks rays with one @ti.func, ``walk_ray`` of :func:`make_march_funcs`
(start point, step rule, cascade choice, empty-space skipping), and differs only
in its per-sample callback: NerfScene composites, and the batch kernels here
run two passes, a count pass that gives each ray's number of samples, the
caller turning counts into offsets (exclusive prefix sum), and a fill pass that
writes each ray's samples contiguously at its offset. Samples represent
intervals [t, t + dt]; the reported t and position are at the interval's midpoint.
"""
import functools
from typing import Any, NamedTuple

import taichi as ti

from .occupancy import block_bit, cascade_of, cell_coords, cell_index, is_occupied
from .rays import ray_aabb, row3, safe_inv
from .specs import ROUND_SAMPLES, SEGMENT_MIN, WHOLE_WALK_SLOTS, MarchSpec, OccupancySpec


class MarchFuncs(NamedTuple):
    """The @ti.funcs of one grid and step rule (see :func:`make_march_funcs`)."""
    step_size: Any
    ray_start: Any
    walk_from: Any
    walk_ray: Any
    march_ray: Any
    cell_exit_t: Any
    write_sample: Any


def make_march_funcs(occ: OccupancySpec, march: MarchSpec) -> MarchFuncs:
    """@ti.funcs for one grid/step rule: ``step_size(t)``, ``ray_start`` and ``walk_from`` (the
    one walk, with a per-sample callback, resumable), ``walk_ray`` (both in one),
    ``march_ray(...)`` (the batch passes' use of it), ``cell_exit_t(o, inv_d, p, c, t)`` and
    ``write_sample`` (the callback that stores samples). The walk reads the bitfield's cells and
    its empty-space blocks (kernels.occupancy)."""
    C, R = occ.n_cascades, occ.resolution
    lo, hi = occ.aabb
    min_step, max_step, cone = march.min_step, march.max_step, march.cone
    near = march.near

    @ti.func
    def step_size(t):
        return ti.math.clamp(t * cone, min_step, max_step)

    @ti.func
    def exit_t(o, inv_d, p, c, t, span: ti.template()):
        """t at which the ray leaves the box of span^3 cells (aligned to multiples of span)
        of cascade c that holds p; at least t."""
        size = ti.cast(1 << c, ti.f32)
        q = ((p - 0.5) / size + 0.5) * R / span    # position in units of the box
        box = ti.floor(q)
        tx = ti.Vector([0.0, 0.0, 0.0])
        for a in ti.static(range(3)):
            # next boundary along axis a, back in model space
            b = (box[a] + (1.0 if inv_d[a] > 0 else 0.0)) * span
            wb = (b / R - 0.5) * size + 0.5
            tx[a] = (wb - o[a]) * inv_d[a]
        return ti.max(ti.min(tx[0], tx[1], tx[2]), t)

    @ti.func
    def cell_exit_t(o, inv_d, p, c, t):
        """t at which the ray leaves the current cell of cascade c."""
        return exit_t(o, inv_d, p, c, t, 1)

    @ti.func
    def ray_start(o, d, jitter):
        """Ray o + t d (model space, unit d) -> (t of its first step, t_far where it leaves the
        box): the near point, then `jitter` (in [0,1)) steps further."""
        box_lo = ti.Vector([lo[0], lo[1], lo[2]])
        box_hi = ti.Vector([hi[0], hi[1], hi[2]])
        t_near, t_far = ray_aabb(o, d, box_lo, box_hi)
        t = ti.max(t_near, near)
        # a random start per ray and step, so that training rays do not all sample the same
        # shells around each camera (instant-ngp: advance_n_steps(tmin, cone, random))
        t += jitter * step_size(t)
        return t, t_far

    @ti.func
    def walk_from(o, d, t_start, t_far, bitfield: ti.template(), limit, visit: ti.template(),
                  ctx: ti.template()):
        """Walk ray o + t d from t_start (a ray_start, or where an earlier walk_from stopped)
        to t_far: ``visit(ctx, n, t_mid, dt, p, d)`` per sample, at most `limit`, a true return
        ends the walk after that sample. -> (n, t where it stopped). The walk's only state is
        t, so walking in pieces gives exactly the samples of one whole walk."""
        t = t_start + 0.0  # a local copy: the argument may be a caller's variable
        inv_d = safe_inv(d)
        n = 0
        while n < limit:
            dt = step_size(t)
            if t + 0.5 * dt >= t_far:
                break
            p = o + (t + 0.5 * dt) * d
            c = 0
            if ti.static(C > 1):
                c = ti.max(cascade_of(p, C), 0)
                # a step larger than this cascade's cell uses the coarser cascade
                while c < C - 1 and dt * R > ti.cast(1 << c, ti.f32):
                    c += 1
            cell = cell_coords(p, c, R)
            if is_occupied(bitfield, cell_index(c, cell, R)):
                stop = visit(ctx, n, t + 0.5 * dt, dt, p, d)
                n += 1
                t += dt
                if stop:
                    break
            else:
                # skip the empty cell, or its whole block when no cell of that is occupied, in
                # whole steps, so samples stay on the step lattice
                t_exit = -1.0  # not past the block: the cell's exit below
                if ti.static(occ.block > 1):
                    if not is_occupied(bitfield, block_bit(c, cell, C, R)):
                        t_exit = exit_t(o, inv_d, p, c, t, occ.block)
                        # every point up to there would be looked up in cascade c or a finer
                        # one (empty there too: coarser cells pool finer ones) unless the
                        # cone step outgrows cascade c's cells on the way
                        if c < C - 1 and step_size(t_exit) * R > ti.cast(1 << c, ti.f32):
                            t_exit = -1.0
                if t_exit < 0.0:
                    t_exit = cell_exit_t(o, inv_d, p, c, t)
                # to the first step whose midpoint (where a sample is looked up) is past it
                if ti.static(cone > 0.0):
                    # steps grow with t: walk them (cheap, no lookups), so a skip lands where
                    # a walk step by step would, however far it jumps
                    t += dt
                    while t + 0.5 * step_size(t) < t_exit:
                        t += step_size(t)
                else:
                    t += ti.max(ti.ceil((t_exit - t) / dt - 0.5), 1.0) * dt
        return n, t

    @ti.func
    def walk_ray(o, d, jitter, bitfield: ti.template(), limit, visit: ti.template(),
                 ctx: ti.template()):
        """Walk ray o + t d (model space, unit d) through the occupied cells, starting `jitter`
        (in [0,1)) steps past the near point; call ``visit(ctx, n, t_mid, dt, p, d)`` for each
        sample (n samples before it, interval [t_mid - dt/2, t_mid + dt/2], p at t_mid), at most
        `limit`; a true return ends the walk after that sample. -> (n, t where it stopped,
        t_far). `visit` and `ctx` are templates: ctx (e.g. a tuple of locals, ti.dataclass
        values and arrays) reaches visit by reference; unpack it with ti.static(ctx), as a
        plain assignment copies."""
        t0, t_far = ray_start(o, d, jitter)
        n, t = walk_from(o, d, t0, t_far, bitfield, limit, visit, ctx)
        return n, t, t_far

    @ti.func
    def count_sample(out: ti.template(), n, t_mid, dt, p, d):
        return False  # the count pass only needs walk_ray's n

    @ti.func
    def write_sample(out: ti.template(), n, t_mid, dt, p, d):
        base, out_t, out_dt, out_pos, out_dir = ti.static(out)  # static: no copies
        row = base + n
        out_t[row] = t_mid
        out_dt[row] = dt
        for a in ti.static(range(3)):
            out_pos[row, a] = p[a]
            out_dir[row, a] = d[a]
        return False

    @ti.func
    def march_ray(o, d, jitter, bitfield: ti.template(), write: ti.template(), base, limit,
                  out_t: ti.template(), out_dt: ti.template(), out_pos: ti.template(),
                  out_dir: ti.template()) -> ti.i32:
        """March one ray whose first step starts `jitter` (in [0,1)) steps past the near point,
        at most `limit` samples; if `write`, store exactly `limit` rows at base.. of the
        outputs (the count pass's number) and return it, else return the count."""
        n, t, t_far = walk_ray(o, d, jitter, bitfield, limit,
                               write_sample if ti.static(write) else count_sample,
                               (base, out_t, out_dt, out_pos, out_dir))
        if ti.static(write):
            # the count and the fill pass are separate compiled loops whose float rounding may
            # differ, so a fill may find a sample fewer than its count: pad with empty
            # intervals (dt = 0 weighs nothing) rather than leave rows unwritten
            t_end = ti.min(t, t_far)
            while n < limit:
                row = base + n
                out_t[row] = t_end
                out_dt[row] = 0.0
                for a in ti.static(range(3)):
                    out_pos[row, a] = o[a] + t_end * d[a]
                    out_dir[row, a] = d[a]
                n += 1
        return n

    return MarchFuncs(step_size, ray_start, walk_from, walk_ray, march_ray, cell_exit_t,
                      write_sample)


class MarchKernels:
    """Compiled marching kernels for one occupancy spec and step rule.

    - ``count(rays_o (R,3), rays_d (R,3), jitter (R,), bitfield (W,) i32, counts (R,) i32)``
    - ``fill(rays_o, rays_d, jitter, bitfield, offsets (R,) i32, counts (R,) i32, t (M,),
      dt (M,), pos (M,3), dir (M,3), ray_index (M,) i32)``: exactly counts[r] rows per ray

    ``jitter`` is each ray's start offset in steps, in [0, 1): zeros for rendering, uniform
    random for training; count and fill must be given the same values.

    Marching in pieces (rendering, where most rays end long before they leave the box):

    - ``start(rays_o, rays_d, bounds (2,3), t (R,), t_far (R,))``: each ray's first t
      (jitter 0) and where its walk can end: the box's exit, or earlier the exit of
      ``bounds`` (``occupancy.occupied_bounds``: every occupied cell lies inside);
    - ``segment(rays_o, rays_d, ids (A,) i32, t, t_far, taken (R,) i32, bitfield, limit,
      counts (A,) i32, t (A*limit,), dt, pos (A*limit,3), dir)``: the next at most `limit`
      samples of the rays ids[i], at rows i*limit.., counts[i] of them; t[ids] advances to
      where each stopped and taken[ids] (samples so far) by counts; a ray's walk ends at
      max_samples in all, as in march_ray.
    """

    def __init__(self, occ: OccupancySpec, march: MarchSpec):
        self.occ, self.march = occ, march
        funcs = make_march_funcs(occ, march)
        self.step_size, march_ray = funcs.step_size, funcs.march_ray
        self.march_ray = march_ray
        max_samples = march.max_samples

        @ti.kernel
        def count(rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  jitter: ti.types.ndarray(dtype=ti.f32, ndim=1),
                  bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1),
                  counts: ti.types.ndarray(dtype=ti.i32, ndim=1)):
            for r in range(rays_o.shape[0]):
                counts[r] = march_ray(row3(rays_o, r), row3(rays_d, r), jitter[r], bitfield, False,
                                      0, max_samples, counts, counts, counts, counts)

        @ti.kernel
        def fill(rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 jitter: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 offsets: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 counts: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 out_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 out_dt: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 out_pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 out_dir: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 ray_index: ti.types.ndarray(dtype=ti.i32, ndim=1)):
            for r in range(rays_o.shape[0]):
                base = offsets[r]
                n = march_ray(row3(rays_o, r), row3(rays_d, r), jitter[r], bitfield, True, base,
                              counts[r], out_t, out_dt, out_pos, out_dir)
                for k in range(n):
                    ray_index[base + k] = r

        ray_start, walk_from, write_sample = funcs.ray_start, funcs.walk_from, funcs.write_sample

        @ti.kernel
        def start(rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  bounds: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                  t_far: ti.types.ndarray(dtype=ti.f32, ndim=1)):
            for r in range(rays_o.shape[0]):
                o, d = row3(rays_o, r), row3(rays_d, r)
                t0, t1 = ray_start(o, d, 0.0)
                # past the occupied cells' box a walk finds no sample: it ends there (a
                # ray that misses the box ends at once); the samples stay those of the walk
                b0, b1 = ray_aabb(o, d, ti.Vector([bounds[0, 0], bounds[0, 1], bounds[0, 2]]),
                                  ti.Vector([bounds[1, 0], bounds[1, 1], bounds[1, 2]]))
                if b1 < b0 or b1 < t0:
                    t1 = t0
                t[r] = t0
                t_far[r] = ti.min(t1, b1)

        @ti.kernel
        def segment(rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    ids: ti.types.ndarray(dtype=ti.i32, ndim=1),
                    t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                    t_far: ti.types.ndarray(dtype=ti.f32, ndim=1),
                    taken: ti.types.ndarray(dtype=ti.i32, ndim=1),
                    bitfield: ti.types.ndarray(dtype=ti.i32, ndim=1),
                    limit: ti.i32,
                    counts: ti.types.ndarray(dtype=ti.i32, ndim=1),
                    out_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                    out_dt: ti.types.ndarray(dtype=ti.f32, ndim=1),
                    out_pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    out_dir: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            for i in range(ids.shape[0]):
                r = ids[i]
                # a whole walk's limit (max_samples) holds across segments too
                n, t_end = walk_from(row3(rays_o, r), row3(rays_d, r), t[r], t_far[r], bitfield,
                                     ti.min(limit, max_samples - taken[r]), write_sample,
                                     (i * limit, out_t, out_dt, out_pos, out_dir))
                t[r] = t_end
                taken[r] += n
                counts[i] = n

        self.count = count
        self.fill = fill
        self.start = start
        self.segment = segment


@ti.kernel
def pack_segment(rays: ti.types.ndarray(dtype=ti.i32, ndim=2), limit: ti.i32,
                 t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 dt: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 dirs: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 out_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 out_dt: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 out_pos: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 out_dirs: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 ray_index: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    """A segment's samples packed: ray i wrote rays[i, 1] samples into the slots from row
    i*limit on (``MarchKernels.segment``); they go to rows rays[i, 0].. of the outputs (M,)
    (rays (A,2) = packed (start, count)), in order, with ray_index = i. Both renderers' one
    packing step."""
    for i in range(rays.shape[0]):
        for n in range(rays[i, 1]):
            src, dst = i * limit + n, rays[i, 0] + n
            out_t[dst] = t[src]
            out_dt[dst] = dt[src]
            for a in ti.static(range(3)):
                out_pos[dst, a] = pos[src, a]
                out_dirs[dst, a] = dirs[src, a]
            ray_index[dst] = i


def renders_whole(n_rays: int, march: MarchSpec) -> bool:
    """Whether a render of `n_rays` rays walks them whole in one pass (count, fill, then
    composite) rather than in segments: when they fit WHOLE_WALK_SLOTS at max_samples each."""
    return n_rays * march.max_samples <= WHOLE_WALK_SLOTS


def segment_continues(counts, limit: int, T, t_threshold: float):
    """Which rays of a segment go on (numpy or torch arrays alike): those whose walk filled
    the segment (neither left the box nor reached max_samples) and that are not opaque yet
    (T, their transmittance, at or above t_threshold)."""
    return (counts == limit) & (T >= t_threshold)


def segment_length(n_going: int, march: MarchSpec, round_samples: int = ROUND_SAMPLES) -> int:
    """Samples per ray in the next segment of a render walked in pieces, `n_going` rays
    still going: the round's slots shared out, at least SEGMENT_MIN, at most max_samples."""
    return min(march.max_samples, max(SEGMENT_MIN, round_samples // max(n_going, 1)))


@functools.lru_cache(maxsize=None)
def march_kernels(occ: OccupancySpec, march: MarchSpec) -> MarchKernels:
    """The compiled marching kernels for this grid and step rule."""
    return MarchKernels(occ, march)
