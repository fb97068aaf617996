"""Camera ray generation: Taichi kernel vs float64 reference, known cases, distortion, helpers."""
import math

import numpy as np
import pytest
import torch

from taichi_nerf.nn import cameras
from taichi_nerf.render.camera_paths import orbit_poses
from conftest import rel_err


def random_rotations(n, gen):
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[torch.det(q) < 0, :, 0] *= -1  # proper rotations only
    return q


def random_cameras(n, gen, width, height, c2w_rows=4):
    """Intrinsics, moderate distortion (monotonic over the image) and random model-space poses."""
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)
    f = 300 + 300 * u(n, 2)
    c = torch.tensor([width / 2, height / 2]) + 20 * (u(n, 2) - 0.5)
    intr = torch.cat([f, c], dim=1)
    dist = torch.stack([0.2 * (u(n) - 0.5), 0.1 * (u(n) - 0.5),
                        0.02 * (u(n) - 0.5), 0.02 * (u(n) - 0.5)], dim=1)
    c2w = torch.zeros(n, c2w_rows, 4, dtype=torch.float64)
    c2w[:, :3, :3] = random_rotations(n, gen)
    c2w[:, :3, 3] = 2 * u(n, 3) - 1
    if c2w_rows == 4:
        c2w[:, 3, 3] = 1
    return intr.float(), dist.float(), c2w.float()


@pytest.mark.parametrize("c2w_rows", [4, 3])
def test_rays_match_reference(arch, gen, c2w_rows):
    W, H, N, R = 320, 240, 5, 4000
    intr, dist, c2w = random_cameras(N, gen, W, H, c2w_rows)
    dist[0] = 0  # one camera without distortion takes the kernel's no-Newton branch
    pix = torch.rand(R, 2, generator=gen) * torch.tensor([W, H], dtype=torch.float32)
    idx = torch.randint(0, N, (R,), generator=gen, dtype=torch.int32)
    o, d = cameras.generate_rays(pix, idx, intr, dist, c2w)
    ro, rd = cameras.generate_rays_reference(pix, idx, intr, dist, c2w)
    assert o.shape == d.shape == (R, 3) and o.dtype == d.dtype == torch.float32
    assert rel_err(o, ro) < 1e-5
    assert rel_err(d, rd) < 1e-5
    assert torch.allclose(d.norm(dim=-1), torch.ones(R), atol=1e-6)


def test_hand_computed_pinhole(arch):
    """Centre pixel looks down the camera's -z; the edge pixels sit at half the FOV."""
    W = H = 100
    fx = fy = 80.0
    intr = torch.tensor([[fx, fy, W / 2, H / 2]])
    dist = torch.zeros(1, 4)
    # camera at (1, 2, 3) turned 90 degrees about world x: it looks along world +y, up is +z
    c2w = torch.eye(4)[None].clone()
    c2w[0, :3, :3] = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    c2w[0, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
    pix = torch.tensor([[50.0, 50.0], [0.0, 50.0], [100.0, 50.0], [50.0, 0.0], [0.0, 0.0]])
    o, d = cameras.generate_rays(pix, torch.zeros(5, dtype=torch.int32), intr, dist, c2w)
    assert torch.allclose(o, torch.tensor([1.0, 2.0, 3.0]).expand(5, 3))
    back = -c2w[0, :3, 2]  # the camera's -z axis in world space: (0, 1, 0)
    right, up = c2w[0, :3, 0], c2w[0, :3, 1]
    assert torch.allclose(d[0], back, atol=1e-6)
    half_fov = math.atan(W / 2 / fx)
    # left edge: angle half_fov from the axis, towards -right
    assert math.isclose(float(d[1] @ back), math.cos(half_fov), abs_tol=1e-6)
    assert float(d[1] @ right) < 0 and abs(float(d[1] @ up)) < 1e-6
    assert math.isclose(float(d[2] @ right), math.sin(half_fov), abs_tol=1e-6)
    # row 0 is the top of the image: its ray points up (the y flip against OpenCV)
    assert math.isclose(float(d[3] @ up), math.sin(half_fov), abs_tol=1e-6)
    corner = torch.tensor([-0.5 * W / fx, 0.5 * H / fy, -1.0])
    corner = c2w[0, :3, :3] @ (corner / corner.norm())
    assert torch.allclose(d[4], corner, atol=1e-6)


def test_distortion_round_trip(arch, gen):
    """Distort known points with the OpenCV formula; the ray through that pixel is the original direction."""
    fx, fy, cx, cy = 400.0, 420.0, 200.0, 150.0
    k1, k2, p1, p2 = -0.25, 0.08, 0.004, -0.003
    xy = (torch.rand(2000, 2, generator=gen, dtype=torch.float64) - 0.5) * torch.tensor([1.0, 0.75])
    x, y = xy[:, 0], xy[:, 1]  # OpenCV normalised, y down
    r2 = x * x + y * y
    rad = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    pix = torch.stack([fx * xd + cx, fy * yd + cy], dim=1).float()
    intr = torch.tensor([[fx, fy, cx, cy]])
    dist = torch.tensor([[k1, k2, p1, p2]])
    _, d = cameras.generate_rays(pix, torch.zeros(2000, dtype=torch.int32), intr, dist,
                                 torch.eye(4)[None].contiguous())
    want = torch.stack([x, -y, -torch.ones_like(x)], dim=1)
    want = want / want.norm(dim=1, keepdim=True)
    assert (d.double() - want).abs().max() < 1e-5
    # the reference's distort/undistort pair agrees with the formula above too
    back = cameras.undistort_points(torch.stack([xd, yd], 1),
                                   torch.tensor([k1, k2, p1, p2], dtype=torch.float64))
    assert (back - xy).abs().max() < 1e-12


def test_generate_rays_validates_inputs(cpu_runtime):
    intr = torch.tensor([[100.0, 100.0, 50.0, 50.0]] * 2)
    dist = torch.zeros(2, 4)
    c2w = torch.eye(4).repeat(2, 1, 1)
    pix = torch.zeros(3, 2)
    idx = torch.zeros(3, dtype=torch.int32)
    with pytest.raises(ValueError, match="pixel coordinates must have dtype"):
        cameras.generate_rays(pix.double(), idx, intr, dist, c2w)
    with pytest.raises(ValueError, match="camera indices must have dtype torch.int32"):
        cameras.generate_rays(pix, idx.long(), intr, dist, c2w)
    with pytest.raises(ValueError, match=r"camera indices must have shape \(3\)"):
        cameras.generate_rays(pix, idx[:2], intr, dist, c2w)
    with pytest.raises(ValueError, match=r"distortion must have shape \(2, 4\)"):
        cameras.generate_rays(pix, idx, intr, dist[:1], c2w)
    with pytest.raises(ValueError, match=r"c2w must have shape \(2, 3, 4\) or \(2, 4, 4\)"):
        cameras.generate_rays(pix, idx, intr, dist, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"camera indices must lie in \[0, 2\)"):
        cameras.generate_rays(pix, torch.tensor([0, 2, 1], dtype=torch.int32), intr, dist, c2w)
    bad = intr.clone()
    bad[1, 0] = 0
    with pytest.raises(ValueError, match="focal lengths"):
        cameras.generate_rays(pix, idx, bad, dist, c2w)
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        cameras.generate_rays(pix, idx, bad, dist, c2w)
    with pytest.raises(ValueError, match="contiguous"):
        cameras.generate_rays(torch.zeros(2, 3)[:, :2], idx[:2], intr, dist, c2w)
    o, d = cameras.generate_rays(torch.zeros(0, 2), idx[:0], intr, dist, c2w)
    assert o.shape == d.shape == (0, 3)


def test_pixel_grid():
    g = cameras.pixel_grid(3, 2)
    assert g.shape == (6, 2) and g.dtype == torch.float32
    assert g.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5]]
    assert cameras.pixel_grid(5, 4).reshape(4, 5, 2)[3, 1].tolist() == [1.5, 3.5]
    with pytest.raises(ValueError, match="at least 1x1"):
        cameras.pixel_grid(0, 4)


def test_orbit_poses_look_at_center_upright():
    center = np.array([0.1, -0.2, 0.3])
    poses = orbit_poses(8, 2.5, 30.0, center=center)
    assert poses.shape == (8, 4, 4) and poses.dtype == np.float32
    for p in poses.astype(np.float64):
        R, eye = p[:3, :3], p[:3, 3]
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-6) and np.isclose(np.linalg.det(R), 1, atol=1e-6)
        assert np.allclose(p[3], [0, 0, 0, 1])
        assert np.isclose(np.linalg.norm(eye - center), 2.5, atol=1e-5)
        assert np.isclose(eye[2] - center[2], 2.5 * math.sin(math.radians(30)), atol=1e-5)
        to_center = (center - eye) / np.linalg.norm(center - eye)
        assert np.allclose(-R[:, 2], to_center, atol=1e-6)  # looks down -z at the centre
        assert abs(R[2, 0]) < 1e-6 and R[2, 1] > 0  # horizontal x axis, y axis upward
    # evenly spaced azimuths; azimuth 0 on +x for a z-up world
    assert np.allclose(poses[0, :3, 3] - center, [2.5 * math.cos(math.radians(30)), 0, 1.25], atol=1e-5)
    assert np.isclose(poses[2, 1, 3] - center[1], 2.5 * math.cos(math.radians(30)), atol=1e-5)
    y_up = orbit_poses(4, 1.0, -20.0, up=(0, 1, 0))
    assert np.all(y_up[:, 1, 1] > 0) and np.allclose(y_up[:, 1, 3], -math.sin(math.radians(20)), atol=1e-6)
    for bad in [dict(n=0), dict(radius=0.0), dict(elevation_deg=90.0)]:
        kw = dict(n=4, radius=1.0, elevation_deg=10.0) | bad
        with pytest.raises(ValueError):
            orbit_poses(**kw)


def test_orbit_rays_hit_center(cpu_runtime):
    """Centre pixels of orbit cameras (through the Taichi kernel) pass through the orbit centre."""
    poses = torch.from_numpy(orbit_poses(6, 3.0, 15.0, center=(0.5, 0.5, 0.5)))
    intr = torch.tensor([[50.0, 50.0, 32.0, 32.0]]).repeat(6, 1)
    o, d = cameras.generate_rays(torch.full((6, 2), 32.0), torch.arange(6, dtype=torch.int32),
                                 intr, torch.zeros(6, 4), poses)
    hit = o + 3.0 * d
    assert torch.allclose(hit, torch.full((6, 3), 0.5), atol=1e-5)
