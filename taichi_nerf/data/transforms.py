"""Parsing shared by the Blender and instant-ngp ``transforms*.json`` formats: frames -> Cameras."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .dataset import Cameras
from .errors import DataError
from .images import IMAGE_EXTENSIONS, check_downscale, image_size
from .scene import SceneTransform

# Keys a frame may override from the file's top level (instant-ngp allows both).
CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
               "x_fov", "y_fov", "k1", "k2", "k3", "k4", "p1", "p2", "is_fisheye")


@dataclass
class Frame:
    """One JSON frame: resolved image path, float64 (4, 4) OpenGL c2w, camera keys, JSON file."""

    image: Path
    c2w: np.ndarray
    camera: dict
    source: Path
    label: str


def read_json(path: Path) -> dict:
    """Parse a JSON object file; DataError naming ``path`` when absent or malformed."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read: {e}") from None
    if not isinstance(meta, dict):
        raise DataError(path, f"expected a JSON object at the top level, found {type(meta).__name__}")
    return meta


def resolve_image(base: Path, file_path: str) -> Path:
    """Image path for a frame's ``file_path``; adds an extension when it has none (as instant-ngp does)."""
    rel = Path(file_path.replace("\\", "/"))
    path = rel if rel.is_absolute() else base / rel
    if not path.suffix and not path.exists():
        for ext in IMAGE_EXTENSIONS:
            for cand in (path.with_suffix(ext), path.with_suffix(ext.upper())):
                if cand.is_file():
                    return cand
    return path


def _matrix(value: Any, source: Path, label: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(source, f"{label}: transform_matrix is not a numeric matrix") from None
    if m.shape not in ((4, 4), (3, 4)):
        raise DataError(source, f"{label}: transform_matrix has shape {m.shape}, expected 4x4 or 3x4")
    if not np.all(np.isfinite(m)):
        raise DataError(source, f"{label}: transform_matrix is not finite (NaN or inf)")
    out = np.eye(4)
    out[:3] = m[:3]
    return out


def parse_frames(meta: Mapping[str, Any], source: Path) -> List[Frame]:
    """Frames of a transforms JSON, in file order; camera keys merged (frame over top level)."""
    frames = meta.get("frames")
    if frames is None:
        raise DataError(source, "missing key 'frames'")
    if not isinstance(frames, list):
        raise DataError(source, "'frames' must be a list")
    out = []
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise DataError(source, f"frame {i}: expected an object")
        fp = fr.get("file_path")
        if not isinstance(fp, str) or not fp:
            raise DataError(source, f"frame {i}: missing key 'file_path'")
        label = f"frame {i} ({fp})"
        if "transform_matrix" not in fr:
            raise DataError(source, f"{label}: missing key 'transform_matrix'")
        camera = {k: fr.get(k, meta.get(k)) for k in CAMERA_KEYS}
        out.append(Frame(resolve_image(source.parent, fp), _matrix(fr["transform_matrix"], source, label),
                         camera, source, label))
    return out


def _num(cam: Mapping[str, Any], key: str, frame: Frame) -> Optional[float]:
    v = cam.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataError(frame.source, f"{frame.label}: '{key}' must be a finite number, got {v!r}")
    return float(v)


def expected_size(frame: Frame) -> Tuple[Optional[int], Optional[int]]:
    """(w, h) the JSON claims for this frame's image, each None when absent."""
    w, h = _num(frame.camera, "w", frame), _num(frame.camera, "h", frame)
    return (None if w is None else int(round(w)), None if h is None else int(round(h)))


def frame_camera(frame: Frame, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """(fx, fy, cx, cy) in full-resolution pixels and (k1, k2, p1, p2), both float64 (4,)."""
    cam = frame.camera
    w = _num(cam, "w", frame) or float(width)
    h = _num(cam, "h", frame) or float(height)

    def focal(axis: str, res: float) -> Optional[float]:
        # Same precedence as instant-ngp: <axis>_fov (degrees), fl_<axis>, camera_angle_<axis> (radians).
        fov = _num(cam, f"{axis}_fov", frame)
        if fov is not None:
            return 0.5 * res / math.tan(math.radians(fov) / 2)
        fl = _num(cam, f"fl_{axis}", frame)
        if fl is not None:
            return fl
        ang = _num(cam, f"camera_angle_{axis}", frame)
        return None if ang is None else 0.5 * res / math.tan(ang / 2)

    fx, fy = focal("x", w), focal("y", h)
    if fx is None and fy is None:
        raise DataError(frame.source, f"{frame.label}: no focal length (need fl_x, fl_y, "
                                      "camera_angle_x or camera_angle_y)")
    fx = fy if fx is None else fx
    fy = fx if fy is None else fy
    if fx <= 0 or fy <= 0:
        raise DataError(frame.source, f"{frame.label}: focal length must be positive")
    cx = _num(cam, "cx", frame)
    cy = _num(cam, "cy", frame)
    intr = np.array([fx, fy, w / 2 if cx is None else cx, h / 2 if cy is None else cy])
    if cam.get("is_fisheye"):
        raise DataError(frame.source, f"{frame.label}: fisheye cameras are not supported")
    for key in ("k3", "k4"):
        if _num(cam, key, frame):
            raise DataError(frame.source, f"{frame.label}: distortion '{key}' is not supported "
                                          "(only k1 k2 p1 p2)")
    dist = np.array([_num(cam, k, frame) or 0.0 for k in ("k1", "k2", "p1", "p2")])
    return intr, dist


def frames_cameras(frames: Sequence[Frame], downscale: int, scene: SceneTransform,
                   fmt: str) -> Cameras:
    """The Cameras of JSON frames, their images downscaled by ``downscale``, without decoding an
    image: the full-resolution size is the JSON's ``w`` and ``h`` of frame 0, else its image
    header (all frames share it; decoding checks that)."""
    for f in frames:  # malformed camera keys fail before any image file is opened
        frame_camera(f, 1, 1)
    w0, h0 = expected_size(frames[0])
    if w0 is None or h0 is None:
        w0, h0 = image_size(frames[0].image)
    check_downscale(frames[0].image, (w0, h0), downscale)
    cams = [frame_camera(f, w0, h0) for f in frames]
    return Cameras(poses=np.stack([f.c2w for f in frames]),
                   intrinsics=np.stack([c[0] for c in cams]) / downscale,
                   distortion=np.stack([c[1] for c in cams]),
                   width=w0 // downscale, height=h0 // downscale, scene=scene,
                   files=[f.image for f in frames], decode_factor=downscale,
                   expected_sizes=[expected_size(f) for f in frames], format=fmt)
