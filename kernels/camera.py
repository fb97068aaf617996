"""Camera rays: pinhole model with OpenCV radial/tangential distortion (k1, k2, p1, p2).

Conventions: camera-to-world poses with OpenGL axes (x right, y up,
looking down -z); pixel (u, v) has u to the right and v down the image rows,
pixel centres at +0.5 (the caller adds the 0.5 or a jitter). Distortion is
OpenCV's and is defined in OpenCV normalised coordinates (x right, y *down*):

    x = (u - cx) / fx,  y = (v - cy) / fy          (distorted, from the image)
    r2 = x^2 + y^2,  radial = 1 + k1 r2 + k2 r2^2
    xd = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    yd = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

The image is distorted, so a pixel gives (xd, yd) and we solve for the
undistorted (x, y) with Newton's method (as instant-ngp's iterative
undistortion does), then flip y into OpenGL axes: direction (x, -y, -1).
Newton converges where the distortion map is monotonic in r (true inside the
image for real lenses); outside that region the result is undefined.
"""
import taichi as ti

# Newton converges quadratically from (xd, yd); 8 steps reach float32 precision
# for any lens whose distortion stays monotonic over the image.
NEWTON_ITERS = 8
DET_EPS = 1e-12


@ti.func
def distort(x, y, k1, k2, p1, p2):
    """OpenCV normalised (x, y) (y down) -> distorted (xd, yd) as a ti.Vector of 2."""
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + k2 * r2)
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return ti.Vector([xd, yd])


@ti.func
def undistort(xd, yd, k1, k2, p1, p2):
    """Distorted OpenCV normalised (xd, yd) -> undistorted (x, y) by Newton's method."""
    x = xd
    y = yd
    if k1 != 0.0 or k2 != 0.0 or p1 != 0.0 or p2 != 0.0:
        for _ in range(NEWTON_ITERS):
            r2 = x * x + y * y
            radial = 1.0 + r2 * (k1 + k2 * r2)
            g = k1 + 2.0 * k2 * r2  # d radial / d r2
            ex = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd
            ey = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - yd
            # The Jacobian of the OpenCV model is symmetric (j01 == j10).
            j00 = radial + 2.0 * x * x * g + 2.0 * p1 * y + 6.0 * p2 * x
            j01 = 2.0 * x * y * g + 2.0 * p1 * x + 2.0 * p2 * y
            j11 = radial + 2.0 * y * y * g + 6.0 * p1 * y + 2.0 * p2 * x
            det = j00 * j11 - j01 * j01
            if ti.abs(det) > DET_EPS:
                x -= (j11 * ex - j01 * ey) / det
                y -= (j00 * ey - j01 * ex) / det
    return ti.Vector([x, y])


@ti.func
def camera_dir(u, v, fx, fy, cx, cy, k1, k2, p1, p2):
    """Pixel (u, v) -> camera-space direction (x, y, -1), OpenGL axes, not normalised."""
    xy = undistort((u - cx) / fx, (v - cy) / fy, k1, k2, p1, p2)
    return ti.Vector([xy[0], -xy[1], -1.0])


@ti.func
def camera_ray(u, v, intr, dist, rot, origin):
    """Pixel (u, v), intr = (fx, fy, cx, cy), dist = (k1, k2, p1, p2), c2w rotation (3x3)
    and translation (3) -> (origin, unit direction) in the pose's space."""
    d_cam = camera_dir(u, v, intr[0], intr[1], intr[2], intr[3],
                       dist[0], dist[1], dist[2], dist[3])
    d = rot @ d_cam
    return origin, d / d.norm()


@ti.func
def pose_ray(u, v, c, intrinsics: ti.template(), distortion: ti.template(), c2w: ti.template()):
    """Pixel (u, v) of camera c, whose intrinsics (N,4) fx fy cx cy, distortion (N,4) and pose
    c2w (N,3|4,4) are rows of arrays -> (origin, unit direction) in the pose's space."""
    intr = ti.Vector([intrinsics[c, 0], intrinsics[c, 1], intrinsics[c, 2], intrinsics[c, 3]])
    dist = ti.Vector([distortion[c, 0], distortion[c, 1], distortion[c, 2], distortion[c, 3]])
    rot = ti.Matrix([[c2w[c, 0, 0], c2w[c, 0, 1], c2w[c, 0, 2]],
                     [c2w[c, 1, 0], c2w[c, 1, 1], c2w[c, 1, 2]],
                     [c2w[c, 2, 0], c2w[c, 2, 1], c2w[c, 2, 2]]])
    t = ti.Vector([c2w[c, 0, 3], c2w[c, 1, 3], c2w[c, 2, 3]])
    return camera_ray(u, v, intr, dist, rot, t)


# Where a ray with an out-of-range camera index starts, and its direction: far outside any
# model box (at most MAX_AABB_SCALE wide around 0.5) and pointing away from it, so marching
# finds no sample. Finite on purpose: NaN rays could walk forever (NaN never ends a walk,
# and fast math does not promise NaN comparisons).
MISS_ORIGIN = 1.0e6
MISS_DIR = 0.5773502691896258  # 1 / sqrt(3): a unit (1, 1, 1) direction


@ti.kernel
def generate_rays(pix: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  cam_index: ti.types.ndarray(dtype=ti.i32, ndim=1),
                  intrinsics: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  distortion: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  c2w: ti.types.ndarray(dtype=ti.f32, ndim=3),
                  rays_o: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  rays_d: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  bad_count: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    """pix (R,2) pixel coords (u, v) incl. the +0.5, cam_index (R,), intrinsics (N,4)
    fx fy cx cy, distortion (N,4) k1 k2 p1 p2, c2w (N,3,4) or (N,4,4)
    -> rays_o, rays_d (R,3), unit directions, in c2w's space. A camera index outside
    [0, N) reads nothing: its ray starts at MISS_ORIGIN (x, y, z) pointing away from the
    scene, and bad_count[0] (1,) grows by one (callers read it when a host sync is cheap)."""
    n_cams = intrinsics.shape[0]
    for r in range(pix.shape[0]):
        c = cam_index[r]
        if c < 0 or c >= n_cams:
            ti.atomic_add(bad_count[0], 1)
            for k in ti.static(range(3)):
                rays_o[r, k] = MISS_ORIGIN
                rays_d[r, k] = MISS_DIR
        else:
            o, d = pose_ray(pix[r, 0], pix[r, 1], c, intrinsics, distortion, c2w)
            for k in ti.static(range(3)):
                rays_o[r, k] = o[k]
                rays_d[r, k] = d[k]
