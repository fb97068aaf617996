"""instant-ngp format: one ``transforms.json`` (as written by instant-ngp's colmap2nerf.py).

Scene transform, as instant-ngp's ``nerf_matrix_to_ngp``: position * scale +
offset (defaults 0.33 and 0.5; or an explicit ``aabb`` fitted into the unit
cube). instant-ngp then cycles the axes (x, y, z) <- (y, z, x) and flips the
camera's y and z columns to its own OpenCV-style camera. We keep the world
axes and OpenGL cameras instead: the cycle is a rotation that maps the cube
centred at 0.5 onto itself, so exactly the same world points fall inside the
unit cube and inside the aabb_scale box as in instant-ngp.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Tuple

import numpy as np

from .dataset import Cameras
from .errors import DataError
from .scene import MAX_AABB_SCALE, NGP_SCALE, SceneTransform, is_power_of_two
from .splits import holdout_indices
from .transforms import frames_cameras, parse_frames, read_json


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ngp_scene(meta: dict, path: Path) -> Tuple[float, np.ndarray, int]:
    """(scale, offset (3,), aabb_scale) from the file's ``scale``, ``offset``, ``aabb``, ``aabb_scale``."""
    scale = meta.get("scale", NGP_SCALE)
    if not _finite(scale) or scale <= 0:
        raise DataError(path, f"'scale' must be a positive number, got {scale!r}")
    offset = meta.get("offset", 0.5)
    if _finite(offset):
        offset = [offset] * 3
    if not (isinstance(offset, list) and len(offset) == 3 and all(_finite(v) for v in offset)):
        raise DataError(path, f"'offset' must be a number or a list of 3 numbers, got {offset!r}")
    offset = np.asarray(offset, dtype=np.float64)
    if "aabb" in meta:
        try:
            box = np.asarray(meta["aabb"], dtype=np.float64).reshape(2, 3)
        except (TypeError, ValueError):
            raise DataError(path, "'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]]") from None
        if not np.all(np.isfinite(box)):
            raise DataError(path, "'aabb' is not finite")
        # instant-ngp: isotropic fit of the given box into the unit cube, its centre at 0.5.
        scale = 1.0 / max(1e-6, float(np.abs(box[1] - box[0]).max()))
        offset = 0.5 - box.mean(axis=0) * scale
    aabb_scale = meta.get("aabb_scale", 1)
    if not (isinstance(aabb_scale, (int, float)) and not isinstance(aabb_scale, bool)
            and float(aabb_scale).is_integer() and is_power_of_two(int(aabb_scale))
            and aabb_scale <= MAX_AABB_SCALE):
        raise DataError(path, f"'aabb_scale' must be a power of two from 1 to {MAX_AABB_SCALE}, "
                              f"got {aabb_scale!r}")
    return float(scale), offset, int(aabb_scale)


def ngp_cameras(root: Path, split: str = "train", downscale: int = 1, holdout: int = 0) -> Cameras:
    """Cameras of ``root/transforms.json``; frames with index % holdout == 0 form val/test (holdout 0: all)."""
    path = root / "transforms.json"
    meta = read_json(path)
    scale, offset, aabb_scale = ngp_scene(meta, path)
    frames = parse_frames(meta, path)
    if not frames:
        raise DataError(path, "no frames")
    frames = [frames[i] for i in holdout_indices(len(frames), split, holdout, path)]
    return frames_cameras(frames, downscale, SceneTransform(scale, offset, aabb_scale), "ngp")
