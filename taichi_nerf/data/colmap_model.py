"""Readers for COLMAP sparse models (cameras, images and 3D points; text or binary)."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .errors import DataError

# COLMAP's camera model ids, names and parameter counts (src/colmap/sensor/models.h).
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_PARAMS = {name: n for name, n in CAMERA_MODELS.values()}


@dataclass
class ColmapCamera:
    """One COLMAP camera: model name, size in pixels, raw params."""

    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass
class ColmapImage:
    """One registered image: world-to-camera rotation quaternion (w, x, y, z), translation,
    camera id, file name, and its keypoints that see a 3D point: pixel xy (K, 2) float64
    (COLMAP's convention, pixel centres at +0.5) with their point3D ids (K,) int64."""

    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class ColmapPoints:
    """Sparse points: ids (P,) int64, world xyz (P, 3) float64, mean reprojection error (P,)
    in pixels, track length (P,) int64 (how many images see each point)."""

    ids: np.ndarray
    xyz: np.ndarray
    error: np.ndarray
    track: np.ndarray


def _data_lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read: {e}") from None
    return text.splitlines()


def _records(path: Path):
    """(line number, whitespace-split fields) of each data line (no blanks, no # comments)."""
    for n, line in enumerate(_data_lines(path), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield n, line.split()


def read_cameras_text(path: Path) -> Dict[int, ColmapCamera]:
    """Parse ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`` per line."""
    cams = {}
    for n, el in _records(path):
        try:
            cam_id, model, w, h = int(el[0]), el[1], int(el[2]), int(el[3])
            params = np.array([float(v) for v in el[4:]])
        except (IndexError, ValueError):
            raise DataError(path, f"line {n}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'") from None
        if model in MODEL_PARAMS and len(params) != MODEL_PARAMS[model]:
            raise DataError(path, f"line {n}: {model} takes {MODEL_PARAMS[model]} params, got {len(params)}")
        cams[cam_id] = ColmapCamera(model, w, h, params)
    return cams


def read_images_text(path: Path) -> List[ColmapImage]:
    """Parse ``images.txt``: a header line ``ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then a (maybe empty) points line."""
    lines = _data_lines(path)
    images = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        el = line.split(maxsplit=9)
        try:
            q = np.array([float(v) for v in el[1:5]])
            t = np.array([float(v) for v in el[5:8]])
            im = ColmapImage(q, t, int(el[8]), el[9])
        except (IndexError, ValueError):
            raise DataError(path, f"line {i}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'") from None
        # the POINTS2D line follows every header, even when empty
        if i < len(lines) and lines[i].strip():
            try:
                obs = np.array([float(v) for v in lines[i].split()]).reshape(-1, 3)
            except ValueError:
                raise DataError(path, f"line {i + 1}: expected POINTS2D triples 'X Y POINT3D_ID'") from None
            seen = obs[:, 2] >= 0  # -1: a keypoint with no 3D point
            im.xys, im.point_ids = obs[seen, :2], obs[seen, 2].astype(np.int64)
        images.append(im)
        i += 1
    return images


# one keypoint of images.bin: f64 x, f64 y, i64 point3D_id (-1 when it has none)
POINT2D_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise DataError(path, f"cannot read: {e}") from None
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise DataError(self.path, f"truncated binary file (needed {size} bytes at offset {self.pos})")
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return vals

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DataError(self.path, f"truncated binary file (unterminated name at offset {self.pos})")
        s = self.data[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return s

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise DataError(self.path, f"truncated binary file (needed {n} bytes at offset {self.pos})")
        self.pos += n


def read_cameras_binary(path: Path) -> Dict[int, ColmapCamera]:
    """Parse ``cameras.bin`` (little-endian: u64 count; per camera i32 id, i32 model, u64 w, u64 h, f64 params)."""
    r = _Reader(path)
    cams = {}
    (count,) = r.take("<Q")
    for _ in range(count):
        cam_id, model_id, w, h = r.take("<iiQQ")
        if model_id not in CAMERA_MODELS:
            raise DataError(path, f"camera {cam_id}: unknown camera model id {model_id}")
        name, n = CAMERA_MODELS[model_id]
        cams[cam_id] = ColmapCamera(name, w, h, np.array(r.take(f"<{n}d")))
    return cams


def read_images_binary(path: Path) -> List[ColmapImage]:
    """Parse ``images.bin`` (u64 count; per image i32 id, f64 qvec[4], f64 tvec[3], i32 camera, name, points)."""
    r = _Reader(path)
    images = []
    (count,) = r.take("<Q")
    for _ in range(count):
        vals = r.take("<i7di")
        name = r.cstring()
        (n_points,) = r.take("<Q")
        start = r.pos
        r.skip(24 * n_points)
        obs = np.frombuffer(r.data, dtype=POINT2D_DTYPE, count=n_points, offset=start)
        seen = obs["id"] >= 0  # -1: a keypoint with no 3D point
        images.append(ColmapImage(np.array(vals[1:5]), np.array(vals[5:8]), vals[8], name,
                                  xys=np.stack([obs["x"][seen], obs["y"][seen]], 1),
                                  point_ids=obs["id"][seen].astype(np.int64)))
    return images


def read_points_text(path: Path) -> ColmapPoints:
    """Parse ``points3D.txt``: one ``POINT3D_ID X Y Z R G B ERROR TRACK[]`` line per point."""
    rows = []
    for n, el in _records(path):
        try:
            rows.append((int(el[0]), float(el[1]), float(el[2]), float(el[3]), float(el[7]),
                         (len(el) - 8) // 2))
        except (IndexError, ValueError):
            raise DataError(path, f"line {n}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK...'") from None
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return ColmapPoints(a[:, 0].astype(np.int64), a[:, 1:4], a[:, 4], a[:, 5].astype(np.int64))


def read_points_binary(path: Path) -> ColmapPoints:
    """Parse ``points3D.bin`` (u64 count; per point u64 id, f64 xyz, u8 rgb, f64 error, track)."""
    r = _Reader(path)
    (count,) = r.take("<Q")
    ids = np.empty(count, np.int64)
    xyz = np.empty((count, 3), np.float64)
    error = np.empty(count, np.float64)
    track = np.empty(count, np.int64)
    for i in range(count):
        vals = r.take("<Q3d3Bd")
        ids[i], xyz[i], error[i] = vals[0], vals[1:4], vals[7]
        (track[i],) = r.take("<Q")
        r.skip(8 * track[i])  # (i32 image_id, i32 point2D_idx) each: the images list them too
    return ColmapPoints(ids, xyz, error, track)


def camera_intrinsics(cam: ColmapCamera, where: Path, cam_id: int) -> Tuple[np.ndarray, np.ndarray]:
    """(fx, fy, cx, cy) in pixels and OpenCV (k1, k2, p1, p2), float64 (4,) each; DataError naming ``where`` otherwise."""
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        return np.array([p[0], p[0], p[1], p[2]]), np.zeros(4)
    if cam.model == "PINHOLE":
        return np.array(p[:4]), np.zeros(4)
    if cam.model == "SIMPLE_RADIAL":
        return np.array([p[0], p[0], p[1], p[2]]), np.array([p[3], 0, 0, 0])
    if cam.model == "RADIAL":
        return np.array([p[0], p[0], p[1], p[2]]), np.array([p[3], p[4], 0, 0])
    if cam.model == "OPENCV":
        return np.array(p[:4]), np.array(p[4:8])
    raise DataError(where, f"camera {cam_id}: unsupported camera model {cam.model} (supported: "
                           "SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV)")
