"""Camera paths: orbits, smooth paths through a dataset's cameras, and a JSON file form.

A :class:`CameraPath` is a list of pinhole cameras in WORLD units (the units of
the training data, before the scene transform): camera-to-world poses with
OpenGL axes (x right, y up, looking down -z), intrinsics fx fy cx cy in pixels
(pixel centres at +0.5) and an image size per frame.

JSON form (``render --path FILE.json`` reads it, ``export --camera-path FILE.json``
writes it)::

    {"version": 1,
     "frames": [{"c2w": [[r00, r01, r02, tx], [r10, r11, r12, ty], [r20, r21, r22, tz],
                         [0, 0, 0, 1]],
                 "fx": 555.5, "fy": 555.5, "cx": 400.0, "cy": 400.0,
                 "width": 800, "height": 800},
                ...]}

``c2w`` is 4x4 (or 3x4: the last row is implied). ``fx fy cx cy width height``
are optional per frame; a missing one is taken from the same key at the top
level of the file, else from the run's training camera (fx and cx scaled by
width / training width, fy and cy by height / training height). Unknown keys
are ignored. Problems raise :class:`CameraPathError`, a one-line
``"<file>: <problem>"`` message.

This module needs numpy only (no torch, no taichi).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from taichi_nerf.atomic import atomic_write_json
from taichi_nerf.data.errors import DataError
# the pose maths lives beside the loaders, where the built-in scene's writers use it too
from taichi_nerf.data.poses import look_at, quat_to_rotation, rotation_to_quat
from taichi_nerf.options import OptionError

PATH_VERSION = 1
INTRINSIC_KEYS = ("fx", "fy", "cx", "cy")
MAX_IMAGE_SIDE = 1 << 14
ORTHONORMAL_TOL = 1e-3  # |R^T R - I| allowed in a file's c2w rotation (then re-orthonormalised)
CONVENTION = ("c2w: camera-to-world 4x4 in world units of the training data, OpenGL axes "
              "(x right, y up, looking down -z); fx fy cx cy in pixels, pixel centres at +0.5")


class CameraPathError(DataError):
    """A camera path file is missing or malformed: ``str(e)`` is ``"<file>: <problem>"``."""


@dataclass
class CameraPath:
    """N cameras in world units.

    poses       float32 (N, 4, 4) camera-to-world, OpenGL axes, world units
    intrinsics  float32 (N, 4) fx, fy, cx, cy in pixels
    widths      int64 (N,) image widths in pixels
    heights     int64 (N,) image heights in pixels
    distortion  float32 (N, 4) OpenCV k1 k2 p1 p2 (zeros unless from a dataset)
    """

    poses: np.ndarray
    intrinsics: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    distortion: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.poses = np.asarray(self.poses, np.float32).reshape(-1, 4, 4)
        n = len(self.poses)
        self.intrinsics = np.asarray(self.intrinsics, np.float32).reshape(n, 4)
        self.widths = np.broadcast_to(np.asarray(self.widths, np.int64), (n,)).copy()
        self.heights = np.broadcast_to(np.asarray(self.heights, np.int64), (n,)).copy()
        if self.distortion is None:
            self.distortion = np.zeros((n, 4), np.float32)
        self.distortion = np.asarray(self.distortion, np.float32).reshape(n, 4)

    def __len__(self) -> int:
        return len(self.poses)

    def resized(self, width: Optional[int], height: Optional[int]) -> "CameraPath":
        """Same cameras at a new image size (None keeps that side); intrinsics scale along."""
        if width is None and height is None:
            return self
        w = self.widths if width is None else np.full(len(self), int(width))
        h = self.heights if height is None else np.full(len(self), int(height))
        sx, sy = w / self.widths, h / self.heights
        k = self.intrinsics.astype(np.float64).copy()
        k[:, 0] *= sx
        k[:, 2] *= sx
        k[:, 1] *= sy
        k[:, 3] *= sy
        return CameraPath(self.poses, k, w, h, self.distortion)


def default_camera(cfg: Mapping[str, Any]) -> Dict[str, float]:
    """The training camera of a checkpoint config -> {fx, fy, cx, cy (pixels), width, height}."""
    fx, fy, cx, cy = (float(v) for v in cfg["intrinsics"])
    return {"fx": fx, "fy": fy, "cx": cx, "cy": cy,
            "width": int(cfg["width"]), "height": int(cfg["height"])}


def _scaled_intrinsics(cam: Mapping[str, float], width: int, height: int) -> np.ndarray:
    sx, sy = width / cam["width"], height / cam["height"]
    return np.array([cam["fx"] * sx, cam["fy"] * sy, cam["cx"] * sx, cam["cy"] * sy], np.float32)


# ---------------------------------------------------------------- orbit
def horizontal_basis(up) -> Tuple[np.ndarray, np.ndarray]:
    """Orthonormal (e1, e2) (3,) float64 spanning the plane normal to unit `up`: the azimuth
    frame of orbit_poses. For up = +z it is (x, y), so azimuth 0 sits on +x as in Blender."""
    up = np.asarray(up, np.float64)
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = helper - up * np.dot(helper, up)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(up, e1)


def orbit_poses(n: int, radius: float, elevation_deg: float,
                center: Sequence[float] = (0.0, 0.0, 0.0), up: Sequence[float] = (0.0, 0.0, 1.0),
                start_azimuth_deg: float = 0.0) -> np.ndarray:
    """`n` camera-to-world poses (n,4,4) float32, OpenGL axes, evenly spaced in azimuth on a
    circle of `radius` at `elevation_deg` above the plane normal to `up`, looking at `center`."""
    if n < 1:
        raise ValueError(f"need at least one pose, got n={n}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if not -90.0 < elevation_deg < 90.0:
        raise ValueError(f"elevation must lie strictly between -90 and 90 degrees, got {elevation_deg}")
    up_v = np.asarray(up, np.float64).reshape(3)
    if np.linalg.norm(up_v) == 0:
        raise ValueError("up must be a non-zero vector")
    up_v = up_v / np.linalg.norm(up_v)
    e1, e2 = horizontal_basis(up_v)
    c = np.asarray(center, np.float64).reshape(3)
    el = math.radians(elevation_deg)
    out = np.empty((n, 4, 4), np.float32)
    for i in range(n):
        az = math.radians(start_azimuth_deg) + 2.0 * math.pi * i / n
        eye = c + radius * (math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2)
                            + math.sin(el) * up_v)
        out[i] = look_at(eye, c, up_v)
    return out


def orbit(cfg: Mapping[str, Any], frames: int, elevation: float = 30.0,
          radius: Optional[float] = None, width: Optional[int] = None,
          height: Optional[int] = None) -> CameraPath:
    """`frames` cameras circling the checkpoint's orbit (centre, up; radius in world units, default the
    training cameras' mean distance) at `elevation` degrees, with the training camera scaled to width x height."""
    o = cfg["orbit"]
    poses = orbit_poses(frames, float(radius if radius is not None else o["radius"]), elevation,
                        center=o["center"], up=o["up"])
    cam = default_camera(cfg)
    w, h = int(width or cam["width"]), int(height or cam["height"])
    return CameraPath(poses, np.tile(_scaled_intrinsics(cam, w, h), (frames, 1)), w, h)


# ---------------------------------------------------------------- quaternions (w, x, y, z)
def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def slerp(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation a (4,) -> b (4,) unit quaternions at u (u outside [0,1] extrapolates)."""
    if np.dot(a, b) < 0:
        b = -b
    rel = _qmul(a * np.array([1, -1, -1, -1]), b)                 # a^-1 b
    v = rel[1:]
    n = np.linalg.norm(v)
    if n < 1e-12:
        return a.copy()
    angle = math.atan2(n, rel[0]) * u
    step = np.concatenate([[math.cos(angle)], v / n * math.sin(angle)])
    out = _qmul(a, step)
    return out / np.linalg.norm(out)


# ---------------------------------------------------------------- splines
def _barry_goldman(p: Sequence[Any], knots: Sequence[float], t: float, interp) -> Any:
    """Catmull-Rom value at t in [knots[1], knots[2]] from 4 control values, via pairwise `interp`."""
    t0, t1, t2, t3 = knots

    def mix(x, y, ta, tb):
        return interp(x, y, (t - ta) / (tb - ta))

    a1, a2, a3 = mix(p[0], p[1], t0, t1), mix(p[1], p[2], t1, t2), mix(p[2], p[3], t2, t3)
    b1, b2 = mix(a1, a2, t0, t2), mix(a2, a3, t1, t3)
    return mix(b1, b2, t1, t2)


def _lerp(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    return a + (b - a) * u


def catmull_rom(points: np.ndarray, n: int, closed: bool = False,
                alpha: float = 0.5) -> np.ndarray:
    """Centripetal (alpha 0.5) Catmull-Rom spline through points (K,3) -> n samples (n,3), evenly spaced in
    segment parameter, passing through every point; closed loops back to points[0]."""
    return _spline(np.asarray(points, np.float64), None, n, closed, alpha)[0]


def _spline(points: np.ndarray, quats: Optional[np.ndarray], n: int, closed: bool,
            alpha: float = 0.5) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    k = len(points)
    if k == 1 or n == 1:
        return (np.repeat(points[:1], n, 0), None if quats is None else np.repeat(quats[:1], n, 0))
    if quats is not None:  # one hemisphere along the chain, so slerp takes the short way
        quats = quats.copy()
        for i in range(1, k):
            if np.dot(quats[i], quats[i - 1]) < 0:
                quats[i] = -quats[i]
    if closed:
        pts = np.concatenate([points[-1:], points, points[:2]])
        qs = None if quats is None else np.concatenate([quats[-1:], quats, quats[:2]])
        segments = k
    else:
        pts = np.concatenate([2 * points[:1] - points[1:2], points,
                              2 * points[-1:] - points[-2:-1]])
        qs = None if quats is None else np.concatenate(
            [slerp(quats[0], quats[1], -1.0)[None], quats, slerp(quats[-2], quats[-1], 2.0)[None]])
        segments = k - 1
    scale = max(float(np.linalg.norm(np.diff(points, axis=0), axis=1).max()), 1e-12)
    # centripetal knots; a tiny floor keeps repeated points from collapsing a segment
    gaps = np.maximum(np.linalg.norm(np.diff(pts, axis=0), axis=1), 1e-6 * scale) ** alpha
    knots = np.concatenate([[0.0], np.cumsum(gaps)])
    s = np.arange(n) * (segments / n if closed else segments / (n - 1))
    out_p = np.empty((n, 3))
    out_q = None if qs is None else np.empty((n, 4))
    for j, sj in enumerate(s):
        seg = min(int(sj), segments - 1)
        u = sj - seg
        kn = knots[seg:seg + 4]
        out_p[j] = _barry_goldman(pts[seg:seg + 4], kn, kn[1] + u * (kn[2] - kn[1]), _lerp)
        if qs is not None:
            out_q[j] = _barry_goldman(qs[seg:seg + 4], (0.0, 1.0, 2.0, 3.0), 1.0 + u, slerp)
    return out_p, out_q


def smooth_path(poses: np.ndarray, frames: int, closed: bool = False) -> np.ndarray:
    """Camera-to-world keyframes (K,4,4) -> (frames,4,4) float32 through every keyframe in order:
    positions on a centripetal Catmull-Rom spline, rotations on its slerp (quaternion) analogue."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    if len(poses) == 0 or frames < 1:
        raise ValueError(f"need at least one keyframe and one frame, got {len(poses)} and {frames}")
    quats = np.stack([rotation_to_quat(p[:3, :3]) for p in poses])
    pos, q = _spline(poses[:, :3, 3], quats, frames, closed)
    out = np.tile(np.eye(4), (frames, 1, 1))
    out[:, :3, 3] = pos
    for i in range(frames):
        out[i, :3, :3] = quat_to_rotation(q[i])
    return out.astype(np.float32)


def order_around(poses: np.ndarray, center: Sequence[float],
                 up: Sequence[float]) -> Tuple[np.ndarray, bool]:
    """Order cameras (N,4,4) by azimuth about the `up` axis through `center` -> (indices (N,), closed):
    closed is True when they surround the centre (no azimuth gap over 90 degrees)."""
    up_v = np.asarray(up, np.float64) / np.linalg.norm(up)
    rel = np.asarray(poses, np.float64)[:, :3, 3] - np.asarray(center, np.float64)
    e1, e2 = horizontal_basis(up_v)
    az = np.arctan2(rel @ e2, rel @ e1)
    order = np.argsort(az, kind="stable")
    if len(order) < 3:
        return order, False
    sorted_az = az[order]
    gaps = np.diff(np.concatenate([sorted_az, sorted_az[:1] + 2 * math.pi]))
    closed = bool(gaps.max() < math.pi / 2)
    if not closed:  # start right after the largest gap so the open path does not cross it
        start = (int(np.argmax(gaps)) + 1) % len(order)
        order = np.roll(order, -start)
    return order, closed


def dataset_path(poses: np.ndarray, cfg: Mapping[str, Any], frames: int, keyframes: int = 12,
                 width: Optional[int] = None, height: Optional[int] = None) -> CameraPath:
    """Smooth path through up to `keyframes` of the cameras (N,4,4) world c2w, taken in azimuth order
    about the checkpoint's orbit centre (a closed loop when they surround it) -> `frames` cameras."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    if len(poses) == 0:
        raise ValueError("no cameras to build a path through")
    o = cfg["orbit"]
    order, closed = order_around(poses, o["center"], o["up"])
    k = min(keyframes, len(order))
    pick = order[np.round(np.arange(k) * (len(order) / k if closed else
                                          (len(order) - 1) / max(k - 1, 1))).astype(int)]
    path = smooth_path(poses[pick], frames, closed=closed)
    cam = default_camera(cfg)
    w, h = int(width or cam["width"]), int(height or cam["height"])
    return CameraPath(path, np.tile(_scaled_intrinsics(cam, w, h), (frames, 1)), w, h)


def training_poses(checkpoint: Union[str, os.PathLike]) -> np.ndarray:
    """World c2w (N,4,4) float32 of the training cameras saved in a checkpoint (``cameras/poses``)."""
    from taichi_nerf.kernels.checkpoint_io import load_checkpoint

    _, arrays = load_checkpoint(checkpoint, required_arrays=["cameras/poses"])
    poses = np.asarray(arrays["cameras/poses"], np.float32)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or not len(poses) \
            or not np.isfinite(poses).all():
        from taichi_nerf.kernels.checkpoint_io import CheckpointError
        raise CheckpointError(f"checkpoint {os.fspath(checkpoint)}: cameras/poses must be finite "
                              f"(N, 4, 4) with N > 0, got {poses.shape}")
    return poses


# ---------------------------------------------------------------- JSON
def to_json(path: CameraPath) -> Dict[str, Any]:
    """CameraPath -> the documented JSON object (version 1, every key written out)."""
    frames = []
    for i in range(len(path)):
        fx, fy, cx, cy = (float(v) for v in path.intrinsics[i])
        frames.append({"c2w": [[float(v) for v in row] for row in path.poses[i]],
                       "fx": fx, "fy": fy, "cx": cx, "cy": cy,
                       "width": int(path.widths[i]), "height": int(path.heights[i])})
    return {"version": PATH_VERSION, "convention": CONVENTION, "frames": frames}


def save_camera_path(file: Union[str, os.PathLike], path: CameraPath) -> None:
    """Write `path` as camera-path JSON (temporary file + rename); OSError if unwritable."""
    atomic_write_json(file, to_json(path), indent=1)


def _number(file, where: str, key: str, value: Any, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CameraPathError(file, f"{where}: {key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise CameraPathError(file, f"{where}: {key} must be finite, got {value!r}")
    if integer:
        if value != int(value) or not 1 <= value <= MAX_IMAGE_SIDE:
            raise CameraPathError(file, f"{where}: {key} must be a whole number in "
                                        f"[1, {MAX_IMAGE_SIDE}], got {value!r}")
        return int(value)
    if key in ("fx", "fy") and value <= 0:
        raise CameraPathError(file, f"{where}: {key} must be > 0, got {value!r}")
    return float(value)


def _c2w(file, where: str, value: Any) -> np.ndarray:
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CameraPathError(file, f"{where}: c2w must be a 4x4 (or 3x4) array of numbers") \
            from None
    if m.shape not in ((4, 4), (3, 4)):
        raise CameraPathError(file, f"{where}: c2w must be 4x4 (or 3x4), got shape "
                                    f"{'x'.join(map(str, m.shape)) or 'scalar'}")
    if not np.isfinite(m).all():
        raise CameraPathError(file, f"{where}: c2w has non-finite values")
    if m.shape == (4, 4) and not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise CameraPathError(file, f"{where}: c2w last row must be [0, 0, 0, 1], got "
                                    f"{m[3].tolist()}")
    r = m[:3, :3]
    if np.abs(r.T @ r - np.eye(3)).max() > ORTHONORMAL_TOL or np.linalg.det(r) <= 0:
        raise CameraPathError(file, f"{where}: c2w rotation (upper-left 3x3) is not a rotation "
                                    f"(orthonormal, determinant +1)")
    out = np.eye(4)
    out[:3, :3] = quat_to_rotation(rotation_to_quat(r))  # exactly orthonormal
    out[:3, 3] = m[:3, 3]
    return out


def parse_camera_path(data: Any, defaults: Optional[Mapping[str, float]] = None,
                      file: Union[str, os.PathLike] = "<camera path>") -> CameraPath:
    """Validated CameraPath from a decoded JSON object; `defaults` = default_camera(cfg) fills missing keys."""
    if not isinstance(data, dict):
        raise CameraPathError(file, f"top level must be a JSON object with \"frames\", got "
                                    f"{type(data).__name__}")
    version = data.get("version", PATH_VERSION)
    if version != PATH_VERSION:
        raise CameraPathError(file, f"version {version!r} is not supported (this version reads "
                                    f"{PATH_VERSION})")
    frames = data.get("frames")
    if not isinstance(frames, list):
        raise CameraPathError(file, "missing \"frames\" (a list of {\"c2w\": 4x4, ...})")
    if not frames:
        raise CameraPathError(file, "\"frames\" is empty")
    top = {}
    for key in INTRINSIC_KEYS + ("width", "height"):
        if key in data:
            top[key] = _number(file, "top level", key, data[key], key in ("width", "height"))
    poses, intr, ws, hs = [], [], [], []
    for i, f in enumerate(frames):
        where = f"frame {i}"
        if not isinstance(f, dict):
            raise CameraPathError(file, f"{where}: must be an object, got {type(f).__name__}")
        if "c2w" not in f:
            raise CameraPathError(file, f"{where}: missing \"c2w\"")
        poses.append(_c2w(file, where, f["c2w"]))
        vals = dict(top)
        for key in INTRINSIC_KEYS + ("width", "height"):
            if key in f:
                vals[key] = _number(file, where, key, f[key], key in ("width", "height"))
        missing = [k for k in INTRINSIC_KEYS + ("width", "height") if k not in vals]
        if missing and defaults is None:
            raise CameraPathError(file, f"{where}: missing {', '.join(missing)} and no run "
                                        f"to take defaults from")
        w = int(vals.get("width", defaults["width"] if defaults else 0))
        h = int(vals.get("height", defaults["height"] if defaults else 0))
        k = _scaled_intrinsics(defaults, w, h) if defaults else np.zeros(4, np.float32)
        for j, key in enumerate(INTRINSIC_KEYS):
            if key in vals:
                k[j] = vals[key]
        intr.append(k)
        ws.append(w)
        hs.append(h)
    return CameraPath(np.stack(poses), np.stack(intr), np.array(ws), np.array(hs))


def load_camera_path(file: Union[str, os.PathLike],
                     defaults: Optional[Mapping[str, float]] = None) -> CameraPath:
    """Read and validate a camera-path JSON file -> CameraPath (world units); CameraPathError if bad."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CameraPathError(file, "camera path file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CameraPathError(file, f"cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CameraPathError(file, f"malformed JSON ({e.msg} at line {e.lineno} column "
                                    f"{e.colno})") from None
    return parse_camera_path(data, defaults, file)


# ---------------------------------------------------------------- --path resolution
def is_camera_path_file(spec: str) -> bool:
    """True when a --path value names a camera-path JSON file (by its .json suffix)."""
    return str(spec).lower().endswith(".json")


def check_path_options(frames: Optional[int] = None, elevation: float = 30.0,
                       width: Optional[int] = None, height: Optional[int] = None,
                       radius: Optional[float] = None) -> None:
    """OptionError naming the first bad one of resolve_path's options (counts, sizes in pixels,
    radius in world units, elevation in degrees); None means the default."""
    for name, value in (("frames", frames), ("width", width), ("height", height)):
        if value is not None and not value > 0:
            raise OptionError(name, f"must be > 0, got {value}")
    if radius is not None and not (math.isfinite(radius) and radius > 0):
        raise OptionError("radius", f"must be a positive number of world units, got {radius}")
    if not -90.0 < elevation < 90.0:
        raise OptionError("elevation", f"must lie strictly between -90 and 90 degrees, got "
                                       f"{elevation}")


def resolve_path(spec: str, cfg: Mapping[str, Any], checkpoint: Union[str, os.PathLike],
                 frames: int, elevation: float = 30.0, split: str = "test",
                 width: Optional[int] = None, height: Optional[int] = None,
                 radius: Optional[float] = None, holdout: int = 8) -> CameraPath:
    """A --path value -> CameraPath: 'orbit', 'dataset' (smooth path through the training cameras),
    FILE.json (a camera path file) or a DATA folder (that split's cameras, at their own size;
    for formats without split files every `holdout`-th frame is val/test, as in `train`)."""
    check_path_options(frames, elevation, width, height, radius)
    if spec in ("orbit", "dataset") and not isinstance(cfg.get("orbit"), Mapping):
        from taichi_nerf.kernels.checkpoint_io import CheckpointError
        raise CheckpointError(f"checkpoint {os.fspath(checkpoint)}: its config has no 'orbit' "
                              f"(an older checkpoint?); give --path DATA or FILE.json instead")
    if spec == "orbit":
        return orbit(cfg, frames, elevation, radius=radius, width=width, height=height)
    if spec == "dataset":
        return dataset_path(training_poses(checkpoint), cfg, frames, width=width, height=height)
    if is_camera_path_file(spec):
        return load_camera_path(spec, default_camera(cfg)).resized(width, height)
    from taichi_nerf.data import load_cameras

    # the metadata alone: a render needs the poses, not the dataset's decoded images
    cams = load_cameras(Path(spec), split, holdout=holdout)
    path = CameraPath(cams.poses, cams.intrinsics, cams.width, cams.height, cams.distortion)
    return path.resized(width, height)
