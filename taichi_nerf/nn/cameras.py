"""Camera rays on the torch side: the Taichi kernel wrapper, a float64 reference, helpers.

Conventions (see :mod:`taichi_nerf.kernels.camera`): camera-to-world poses with
OpenGL axes (x right, y up, looking down -z), pixel (u, v) with v down the
rows and pixel centres at +0.5, OpenCV distortion (k1, k2, p1, p2) defined in
OpenCV normalised coordinates (y down). Poses given to :func:`generate_rays`
must already be in model space (``Dataset.transform_poses`` does that); rays
come back in the same space as the poses.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from taichi_nerf.nn import runtime
from taichi_nerf.kernels import camera as camera_k
from taichi_nerf.nn.ops import check_tensor, checks_values

REFERENCE_NEWTON_ITERS = 20


def _check_cameras(intrinsics: torch.Tensor, distortion: torch.Tensor, c2w: torch.Tensor,
                   dtype: torch.dtype) -> int:
    check_tensor(intrinsics, "intrinsics", (None, 4), dtype)
    n = intrinsics.shape[0]
    check_tensor(distortion, "distortion", (n, 4), dtype)
    check_tensor(c2w, "c2w", (n, None, 4), dtype)
    if c2w.shape[1] not in (3, 4):
        raise ValueError(f"c2w must have shape ({n}, 3, 4) or ({n}, 4, 4), got {tuple(c2w.shape)}")
    if n == 0:
        raise ValueError("no cameras: intrinsics has 0 rows")
    # N is small (one row per camera), so the reads are cheap, but on a GPU each one is a
    # host sync in every training step: see ops.CHECK_DEVICE_VALUES
    if not all(checks_values(t) for t in (intrinsics, distortion, c2w)):
        return n
    if not bool(torch.isfinite(intrinsics).all() and torch.isfinite(distortion).all()
                and torch.isfinite(c2w).all()):
        raise ValueError("intrinsics, distortion and c2w must be finite")
    if not bool((intrinsics[:, :2] > 0).all()):
        raise ValueError("focal lengths fx, fy (intrinsics[:, :2]) must be > 0")
    return n


def _check_rays(pix: torch.Tensor, cam_index: torch.Tensor, n_cams: int,
                dtype: torch.dtype) -> None:
    check_tensor(pix, "pixel coordinates", (None, 2), dtype)
    check_tensor(cam_index, "camera indices", (pix.shape[0],), torch.int32)
    # unchecked (GPU, see ops.CHECK_DEVICE_VALUES) indices are guarded in the kernel
    # instead: a bad one reads nothing and is counted (bad_camera_indices)
    if cam_index.numel() and checks_values(cam_index):
        lo, hi = (int(v) for v in torch.aminmax(cam_index))
        if lo < 0 or hi >= n_cams:
            raise ValueError(f"camera indices must lie in [0, {n_cams}), got values in "
                             f"[{lo}, {hi}]")


# Per device, how many rays had a camera index outside [0, N) where indices go unchecked
# (off the CPU): the kernel counts them on the device, so making rays never waits for it.
_bad_counts: Dict[torch.device, torch.Tensor] = {}


def _bad_counter(device: torch.device) -> torch.Tensor:
    if device not in _bad_counts:
        _bad_counts[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return _bad_counts[device]


def bad_camera_indices(device: Optional[torch.device] = None) -> int:
    """How many rays made on `device` (default: the runtime's) since the last call had a
    camera index outside [0, N), and resets the count. Such indices are checked on the host
    only for CPU tensors (or with ops.CHECK_DEVICE_VALUES); elsewhere the kernel gives those
    rays a start far outside the scene, pointing away (no samples), and counts them. Reading
    the count waits for the device: call it where a host sync is paid anyway (logging,
    checkpoints)."""
    counter = _bad_counter(torch.device(device) if device is not None else runtime.device())
    n = int(counter[0])
    counter.zero_()
    return n


def generate_rays(pix: torch.Tensor, cam_index: torch.Tensor, intrinsics: torch.Tensor,
                  distortion: torch.Tensor, c2w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixels: pix (R,2) float32 (u, v) incl. +0.5, cam_index (R,) int32,
    intrinsics (N,4) fx fy cx cy, distortion (N,4) k1 k2 p1 p2, c2w (N,3|4,4) model space
    -> rays_o, rays_d (R,3) float32, unit directions. Not differentiable. A camera index
    outside [0, N) raises on the CPU; elsewhere see :func:`bad_camera_indices`."""
    n = _check_cameras(intrinsics, distortion, c2w, torch.float32)
    _check_rays(pix, cam_index, n, torch.float32)
    tensors = (pix, cam_index, intrinsics, distortion, c2w)
    devs = {t.device for t in tensors}
    if len(devs) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devs))}")
    runtime.current()  # a clear error instead of Taichi's silent default ti.init
    R = pix.shape[0]
    rays_o = torch.empty(R, 3, dtype=torch.float32, device=pix.device)
    rays_d = torch.empty(R, 3, dtype=torch.float32, device=pix.device)
    if R:
        camera_k.generate_rays(pix.detach(), cam_index, intrinsics.detach(), distortion.detach(),
                               c2w.detach(), rays_o, rays_d, _bad_counter(pix.device))
    return rays_o, rays_d


# ---------------------------------------------------------------- reference
def distort_points(xy: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
    """OpenCV model: undistorted normalised xy (...,2) (y down), distortion (...,4) broadcastable
    k1 k2 p1 p2 -> distorted xy (...,2)."""
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2 = distortion.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + k2 * r2)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort_points(xy_d: torch.Tensor, distortion: torch.Tensor,
                     iters: int = REFERENCE_NEWTON_ITERS) -> torch.Tensor:
    """Inverse of :func:`distort_points` by Newton's method: distorted xy (...,2) -> undistorted."""
    k1, k2, p1, p2 = distortion.unbind(-1)
    xy = xy_d.clone()
    for _ in range(iters):
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + k2 * r2)
        g = k1 + 2 * k2 * r2
        e = distort_points(xy, distortion) - xy_d
        j00 = radial + 2 * x * x * g + 2 * p1 * y + 6 * p2 * x
        j01 = 2 * x * y * g + 2 * p1 * x + 2 * p2 * y
        j11 = radial + 2 * y * y * g + 6 * p1 * y + 2 * p2 * x
        det = j00 * j11 - j01 * j01
        step = torch.stack([j11 * e[..., 0] - j01 * e[..., 1],
                            j00 * e[..., 1] - j01 * e[..., 0]], dim=-1) / det[..., None]
        xy = xy - step
    return xy


def generate_rays_reference(pix: torch.Tensor, cam_index: torch.Tensor, intrinsics: torch.Tensor,
                            distortion: torch.Tensor,
                            c2w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch float64 version of :func:`generate_rays` (same shapes) -> rays_o, rays_d (R,3)."""
    f64 = torch.float64
    idx = cam_index.long()
    intr = intrinsics.to(f64)[idx]                                       # [R, 4]
    dist = distortion.to(f64)[idx]                                       # [R, 4]
    pose = c2w.to(f64)[idx]                                              # [R, 3|4, 4]
    p = pix.to(f64)
    xy_d = (p - intr[:, 2:4]) / intr[:, 0:2]                             # OpenCV, y down
    xy = undistort_points(xy_d, dist)
    d_cam = torch.stack([xy[:, 0], -xy[:, 1], -torch.ones_like(xy[:, 0])], dim=-1)
    d = (pose[:, :3, :3] @ d_cam[..., None])[..., 0]
    return pose[:, :3, 3].clone(), d / d.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------- helpers
def pixel_grid(width: int, height: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Pixel centres (H*W, 2) float32 (u, v) = (col + 0.5, row + 0.5), row-major (reshape to (H, W, 2))."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be at least 1x1, got {width}x{height}")
    u = torch.arange(width, dtype=torch.float32, device=device) + 0.5
    v = torch.arange(height, dtype=torch.float32, device=device) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1).reshape(-1, 2).contiguous()
