"""A training step's rays drawn on the device, and the samples that fit its budget.

For the on-device training path (Vulkan, Metal): nothing of a step's batch is made on
the host. The draws come from :mod:`kernels.rng` (the same on every arch), so the host
can reproduce them (tests). The rules are the host trainer's (``taichi_nerf.training``):
a random image, pixel and background per ray, targets with alpha blended over that
background, a start jitter in [0, 1) steps; and a step renders only the first rays whose
samples fit its sample budget (at least one ray).
"""
import taichi as ti

from .camera import pose_ray
from .rng import uniform

DRAWS_PER_RAY = 16  # index space each ray owns in its step's stream (10 draws used)


@ti.kernel
def draw_rays(seed: ti.u32, stream: ti.u32,
              pixels: ti.types.ndarray(dtype=ti.f32, ndim=2),
              n_images: ti.i32, height: ti.i32, width: ti.i32, pixel_jitter: ti.i32,
              intrinsics: ti.types.ndarray(dtype=ti.f32, ndim=2),
              distortion: ti.types.ndarray(dtype=ti.f32, ndim=2),
              c2w: ti.types.ndarray(dtype=ti.f32, ndim=3),
              depth_obs: ti.types.ndarray(dtype=ti.f32, ndim=2), n_depth: ti.i32,
              rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
              rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
              bg: ti.types.ndarray(dtype=ti.f32, ndim=2),
              target: ti.types.ndarray(dtype=ti.f32, ndim=2),
              jitter: ti.types.ndarray(dtype=ti.f32, ndim=1),
              image: ti.types.ndarray(dtype=ti.i32, ndim=1),
              depth: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """R = rays_o.shape[0] rays of stream `stream`: pixels (N*H*W, C) RGB or RGBA in [0,1],
    cameras intrinsics (N,4), distortion (N,4), c2w (N,3|4,4) model space -> rays_o, rays_d
    (R,3) unit directions, bg (R,3), target (R,3) (alpha over bg), jitter (R,), image (R,).
    The pixel is hit at its centre, or at a random point of it with pixel_jitter. The first
    n_depth rays look through random sparse points of depth_obs (K,4) (image, u, v, distance
    in model units) instead, depth (R,) their distances (sparse-depth loss)."""
    n_ch = pixels.shape[1]
    for r in range(rays_o.shape[0]):
        base = r * DRAWS_PER_RAY
        img = ti.min(ti.cast(uniform(seed, stream, base) * n_images, ti.i32), n_images - 1)
        x = ti.min(ti.cast(uniform(seed, stream, base + 1) * width, ti.i32), width - 1)
        y = ti.min(ti.cast(uniform(seed, stream, base + 2) * height, ti.i32), height - 1)
        u = ti.cast(x, ti.f32) + 0.5
        v = ti.cast(y, ti.f32) + 0.5
        if pixel_jitter:
            u = ti.cast(x, ti.f32) + uniform(seed, stream, base + 3)
            v = ti.cast(y, ti.f32) + uniform(seed, stream, base + 4)
        depth[r] = 0.0
        if r < n_depth:
            n_obs = depth_obs.shape[0]
            j = ti.min(ti.cast(uniform(seed, stream, base + 9) * n_obs, ti.i32), n_obs - 1)
            img = ti.cast(depth_obs[j, 0], ti.i32)
            u, v = depth_obs[j, 1], depth_obs[j, 2]
            x = ti.math.clamp(ti.cast(u, ti.i32), 0, width - 1)
            y = ti.math.clamp(ti.cast(v, ti.i32), 0, height - 1)
            depth[r] = depth_obs[j, 3]
        o, d = pose_ray(u, v, img, intrinsics, distortion, c2w)
        flat = (img * height + y) * width + x
        a = 1.0
        if n_ch == 4:
            a = pixels[flat, 3]
        for k in ti.static(range(3)):
            b = uniform(seed, stream, base + 5 + k)
            rays_o[r, k] = o[k]
            rays_d[r, k] = d[k]
            bg[r, k] = b
            target[r, k] = pixels[flat, k] * a + b * (1.0 - a)
        jitter[r] = uniform(seed, stream, base + 8)
        image[r] = img


@ti.kernel
def fit_samples(counts: ti.types.ndarray(dtype=ti.i32, ndim=1), budget: ti.i32,
                offsets: ti.types.ndarray(dtype=ti.i32, ndim=1),
                fitted: ti.types.ndarray(dtype=ti.i32, ndim=1),
                rays: ti.types.ndarray(dtype=ti.i32, ndim=2),
                readout: ti.types.ndarray(dtype=ti.f32, ndim=1), slot: ti.i32):
    """counts (R,) samples per ray -> the first R' rays whose samples fit `budget` in all
    (at least one): offsets (R,), fitted (R,) counts (0 after R'), rays (R,2) [start, count];
    readout[slot] = R' and readout[slot + 1] = their samples M (exact below 2^24)."""
    for _ in range(1):  # one thread: a running sum (R is at most a few 10^4)
        total, n_fit, full = 0, 0, 0
        for r in range(counts.shape[0]):
            c = counts[r]
            if full == 0 and (r == 0 or total + c <= budget):
                n_fit += 1
            else:
                full, c = 1, 0
            offsets[r] = total
            fitted[r] = c
            rays[r, 0] = total
            rays[r, 1] = c
            total += c
        readout[slot] = ti.cast(n_fit, ti.f32)
        readout[slot + 1] = ti.cast(total, ti.f32)


@ti.kernel
def to_unit(pos: ti.types.ndarray(dtype=ti.f32, ndim=2), lo: ti.f32, size: ti.f32):
    """Model-space positions (M,3) -> hash-grid coordinates in [0,1]^3 over the model box
    [lo, lo + size]^3, in place (the rule of ``Renderer.to_unit``)."""
    for i, a in ti.ndrange(pos.shape[0], 3):
        pos[i, a] = ti.math.clamp((pos[i, a] - lo) / size, 0.0, 1.0)


@ti.kernel
def store_scalar(src: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 readout: ti.types.ndarray(dtype=ti.f32, ndim=1), slot: ti.i32):
    """readout[slot] = src[0] (gathering a step's values into one array to read)."""
    readout[slot] = src[0]


@ti.kernel
def count_non_finite(a: ti.types.ndarray(dtype=ti.f32),
                     readout: ti.types.ndarray(dtype=ti.f32, ndim=1), slot: ti.i32):
    """readout[slot] += the number of inf/NaN entries of `a` (any shape)."""
    for I in ti.grouped(a):
        # exponent bits all set = inf or NaN (fast math may fold NaN comparisons away)
        if ti.bit_cast(a[I], ti.u32) & ti.u32(0x7F800000) == ti.u32(0x7F800000):
            ti.atomic_add(readout[slot], 1.0)
