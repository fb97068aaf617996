"""Scene transform: how world positions map into the model's box.

model_pos = world_pos * scale + offset. The unit cube [0, 1]^3 is the core
region; the model box is the cube of side ``aabb_scale`` centred at 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

# instant-ngp's NERF_SCALE: colmap2nerf puts cameras at mean distance 4 from the
# look-at point and instant-ngp scales by 0.33, so cameras sit ~1.32 from the
# box centre. COLMAP/LLFF scenes are normalised to the same placement.
NGP_SCALE = 0.33
CAMERA_DISTANCE = 4.0 * NGP_SCALE
MAX_AABB_SCALE = 128  # instant-ngp's largest
WELL_POSED = 1e-2  # smallest eigenvalue of mean(I - d d^T) for a trusted axes intersection


@dataclass(frozen=True, eq=False)
class SceneTransform:
    """World->model map: ``scale`` (float), ``offset`` (3,) float32, ``aabb_scale`` (power of two)."""

    scale: float
    offset: np.ndarray = field(default_factory=lambda: np.full(3, 0.5, np.float32))
    aabb_scale: int = 1

    def __post_init__(self) -> None:
        offset = np.asarray(self.offset, dtype=np.float32).reshape(3)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "aabb_scale", int(self.aabb_scale))
        if not (np.isfinite(self.scale) and self.scale > 0 and np.all(np.isfinite(offset))):
            raise ValueError(f"scene transform must be finite with scale > 0, got {self}")
        if not is_power_of_two(self.aabb_scale):
            raise ValueError(f"aabb_scale must be a power of two, got {self.aabb_scale}")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SceneTransform) and self.scale == other.scale
                and self.aabb_scale == other.aabb_scale and np.array_equal(self.offset, other.offset))

    def to_dict(self) -> dict:
        """Plain-JSON form: ``{"scale": float, "offset": [3 floats], "aabb_scale": int}``."""
        return {"scale": self.scale, "offset": [float(v) for v in self.offset],
                "aabb_scale": self.aabb_scale}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SceneTransform":
        """Inverse of ``to_dict``."""
        return cls(scale=d["scale"], offset=d["offset"], aabb_scale=d["aabb_scale"])


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, ..."""
    return n >= 1 and (n & (n - 1)) == 0


def to_model_space(poses: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
    """Map camera-to-world poses (..., 4, 4) to model space: rotation kept, translation * scale + offset."""
    out = np.array(poses, dtype=np.float32, copy=True)
    out[..., :3, 3] = out[..., :3, 3] * np.float32(scale) + np.asarray(offset, np.float32)
    return out


def project_pinhole(points: np.ndarray, c2w: np.ndarray, fx: float, fy: float, cx: float,
                    cy: float) -> tuple:
    """World points (K, 3) seen by the OpenGL camera c2w (4|3, 4) -> (pixels (K, 2) float u, v
    with centres at +0.5, depth (K,) along the view axis; <= 0 behind the camera)."""
    cam = (np.asarray(points, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]  # OpenGL camera axes
    z = -cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([fx * cam[:, 0] / z + cx, -fy * cam[:, 1] / z + cy], -1)
    return uv, z


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) turning unit direction ``a`` onto unit direction ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-9:
        # Opposite directions: any half turn about an axis perpendicular to a.
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def up_alignment(c2w: np.ndarray) -> np.ndarray:
    """World rotation (4, 4) that turns the cameras' mean up vector (OpenGL +y) into +z."""
    up = c2w[:, :3, 1].sum(axis=0)
    rot = np.eye(4)
    # Cameras facing every way (up vectors cancel out) give no usable up.
    if np.linalg.norm(up) > 1e-6 * len(c2w):
        rot[:3, :3] = rotation_between(up, np.array([0.0, 0.0, 1.0]))
    return rot


def look_at_centre(c2w: np.ndarray, depth_hint: Optional[float] = None) -> np.ndarray:
    """World point (3,) nearest, in least squares, to all cameras' optical axes."""
    centres = c2w[:, :3, 3]
    dirs = -c2w[:, :3, 2]  # OpenGL cameras look down -z
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    a = proj.sum(axis=0)
    b = np.einsum("nij,nj->i", proj, centres)
    if depth_hint is None:
        spread = np.sqrt(np.mean(np.sum((centres - centres.mean(0)) ** 2, axis=1)))
        depth_hint = spread if spread > 1e-9 else 1.0
    # Nearly parallel axes (forward-facing captures, spread under ~6 degrees)
    # leave the depth undetermined: a weak pull toward the point `depth_hint`
    # in front of the average camera fixes it.
    n = len(c2w)
    if np.linalg.eigvalsh(a)[0] >= WELL_POSED * n:
        return np.linalg.solve(a, b)
    prior = centres.mean(0) + dirs.mean(0) * depth_hint
    lam = WELL_POSED * n
    return np.linalg.solve(a + lam * np.eye(3), b + lam * prior)


def fit_scene(c2w: np.ndarray, depth_hint: Optional[float] = None,
              extra_points: Optional[np.ndarray] = None) -> SceneTransform:
    """Scene transform placing the look-at centre at 0.5 and cameras at mean distance 1.32 (model units).

    ``c2w`` (N, 4, 4) OpenGL camera-to-world; ``extra_points`` (M, 3) world
    points (e.g. far scene content) that, like the cameras, must fit in the box.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    centre = look_at_centre(c2w, depth_hint)
    dist = np.linalg.norm(c2w[:, :3, 3] - centre, axis=1).mean()
    scale = CAMERA_DISTANCE / dist if dist > 1e-9 else 1.0
    offset = 0.5 - centre * scale
    pts = c2w[:, :3, 3]
    if extra_points is not None and len(extra_points):
        pts = np.concatenate([pts, np.asarray(extra_points, np.float64).reshape(-1, 3)])
    half = np.abs(pts * scale + offset - 0.5).max()
    # 10% margin so cameras are inside the box, not on its faces.
    aabb = 1
    while aabb < MAX_AABB_SCALE and aabb / 2 < 1.1 * half:
        aabb *= 2
    return SceneTransform(scale=scale, offset=offset, aabb_scale=aabb)
