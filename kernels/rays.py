"""Ray-AABB intersection (@ti.func building block and batch kernel), and reading a ray's row."""
import taichi as ti

RAY_EPS = 1e-12


@ti.func
def safe_inv(d):
    """Componentwise 1/d with zeros replaced by a huge value of the same sign."""
    inv = ti.Vector([0.0, 0.0, 0.0])
    for k in ti.static(range(3)):
        dk = d[k]
        if ti.abs(dk) < RAY_EPS:
            dk = RAY_EPS if dk >= 0.0 else -RAY_EPS
        inv[k] = 1.0 / dk
    return inv


@ti.func
def row3(a: ti.template(), r):
    """Row r of an (N, 3) array as a vec3: how every batch kernel reads a ray's origin or
    direction (or a sample's colour) from its ndarray arguments."""
    return ti.Vector([a[r, 0], a[r, 1], a[r, 2]])


@ti.func
def ray_aabb(o, d, box_min, box_max):
    """Slab test: (t_near, t_far) of ray o + t d against the box; t_far < t_near on a miss."""
    inv = safe_inv(d)
    t0 = (box_min - o) * inv
    t1 = (box_max - o) * inv
    tmin = ti.min(t0, t1)
    tmax = ti.max(t0, t1)
    return ti.max(tmin[0], tmin[1], tmin[2]), ti.min(tmax[0], tmax[1], tmax[2])


@ti.kernel
def ray_aabb_kernel(rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    box: ti.types.ndarray(dtype=ti.f32, ndim=1),
                    t_near: ti.types.ndarray(dtype=ti.f32, ndim=1),
                    t_far: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """rays (R,3), box (6,) = lo xyz, hi xyz -> t_near, t_far (R,); misses have t_far < t_near."""
    lo = ti.Vector([box[0], box[1], box[2]])
    hi = ti.Vector([box[3], box[4], box[5]])
    for r in range(rays_o.shape[0]):
        tn, tf = ray_aabb(row3(rays_o, r), row3(rays_d, r), lo, hi)
        t_near[r] = tn
        t_far[r] = tf
