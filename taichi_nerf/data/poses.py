"""Pose maths shared by the loaders, the built-in scene and camera paths (numpy only).

Camera-to-world matrices use OpenGL axes (x right, y up, looking down -z);
quaternions are (w, x, y, z). This module sits low in the layers (beside the
loaders) so that the built-in scene's writers and :mod:`taichi_nerf.render.camera_paths`
use one definition without importing each other.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def look_at(eye: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0),
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world (4,4) float64, OpenGL axes, at `eye` looking at `center` with `up`
    upright (world units); ValueError when the view direction is zero or parallel to up."""
    eye = np.asarray(eye, np.float64).reshape(3)
    fwd = np.asarray(center, np.float64).reshape(3) - eye
    up = np.asarray(up, np.float64).reshape(3)
    if np.linalg.norm(fwd) == 0 or np.linalg.norm(up) == 0:
        raise ValueError("look_at needs eye != center and a non-zero up vector")
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-9 * np.linalg.norm(up):
        raise ValueError(f"view direction {fwd.tolist()} is parallel to up {up.tolist()}")
    right /= np.linalg.norm(right)
    true_up = np.cross(right, fwd)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, -fwd, eye
    return m


def rotation_to_quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrix (3,3) (re-orthonormalised by SVD) -> unit quaternion (4,) w, x, y, z."""
    u, _, vt = np.linalg.svd(np.asarray(r, np.float64))
    r = u @ vt
    if np.linalg.det(r) < 0:
        r = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    t = np.trace(r)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def quat_to_rotation(q: np.ndarray) -> np.ndarray:
    """Quaternion (4,) w, x, y, z (normalised here) -> rotation matrix (3,3) float64 (COLMAP's
    qvec, camera paths)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    # the COLMAP loader's order of operations, kept to the bit: its poses feed training
    return np.array([
        [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * x * z + 2 * w * y],
        [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
        [2 * x * z - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
    ])
