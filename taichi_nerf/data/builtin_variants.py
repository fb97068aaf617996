"""Built-in variants shaped like real captures, written in the formats real captures come in.

- ``room``: the built-in primitives inside a textured room, cameras *inside* it looking at
  the primitives and at the walls, written as a COLMAP text model with sparse points on the
  surfaces (what a phone capture of a room gives after structure from motion);
- ``forward``: the primitives in front of a back wall, cameras on a small plane all
  facing one way, written as LLFF ``poses_bounds.npy`` with per-view depth bounds.

Nothing is placed by hand in model space: the loaders' automatic scene placement
(``scene.fit_scene``) decides the box, as it does for a user's own capture. The
images come from the same Taichi ray tracer and the geometry from the same analytic
functions as the default scene (:mod:`taichi_nerf.data.builtin`).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from taichi_nerf.atomic import atomic_file, atomic_write_text

from . import builtin
from .builtin import PRIMITIVES, Primitive, pixel_rays, ray_depth, render_view
from .poses import look_at, rotation_to_quat
from .scene import project_pinhole

VARIANTS = ("room", "forward")

# half extents x freq land mid-cell (x.5) on every face, as for the default box
ROOM = Primitive("room", "room", (0.0, 0.0, 0.6), (0.0, 0.0, 0.0), (3.0, 3.0, 1.4),
                 (0.80, 0.78, 0.70), (0.35, 0.45, 0.55), "checker3d", (2.5, 2.5), 0.0, 1.0)
# the wall faces +y, where the light comes from, and the cameras look at it from +y
BACK_WALL = Primitive("wall", "box", (0.0, -3.0, 0.3), (0.0, 0.0, 0.0), (5.0, 0.2, 4.0),
                      (0.85, 0.80, 0.65), (0.30, 0.40, 0.60), "checker3d", (2.5, 2.5), 0.0, 1.0)
FLOOR_Z = ROOM.center[2] - ROOM.params[2]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant: its primitives, horizontal field of view (radians) and camera count."""

    name: str
    primitives: Tuple[Primitive, ...]
    camera_angle_x: float
    n_views: int
    holdout: int = 8  # every K-th view is held out by the loaders' default --holdout


SPECS: Dict[str, Variant] = {
    "room": Variant("room", PRIMITIVES + (ROOM,), 1.2, 64),
    "forward": Variant("forward", PRIMITIVES + (BACK_WALL,), 0.9, 40),
}


def variant(name: str) -> Variant:
    """The Variant called ``name`` (one of VARIANTS); ValueError otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown built-in variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return SPECS[name]


def room_cameras(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) OpenGL camera-to-world poses inside the room: on a ring around the primitives,
    three in four looking across them, one in four looking out at a wall."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        phi = 2 * math.pi * (i + rng.uniform(-0.3, 0.3)) / n
        r = rng.uniform(1.9, 2.4)
        pos = np.array([r * math.cos(phi), r * math.sin(phi), rng.uniform(-0.1, 0.9)])
        if i % 4 == 3:
            out = pos[:2] / np.linalg.norm(pos[:2])
            side = np.array([-out[1], out[0]]) * rng.uniform(-0.8, 0.8)
            target = np.array([*(pos[:2] + out + side), pos[2] + rng.uniform(-0.3, 0.1)])
        else:
            target = np.array([*rng.uniform(-0.5, 0.5, 2), rng.uniform(-0.3, 0.2)])
        poses.append(look_at(pos, target))
    return np.stack(poses)


def forward_cameras(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) poses on a 1.4 x 0.9 plane at y = 4, all facing -y (up +z), like a hand-held
    forward-facing capture: small sideways steps, nearly parallel axes."""
    rng = np.random.default_rng(seed)
    cols = int(math.ceil(math.sqrt(n * 1.5)))
    poses = []
    for i in range(n):
        gx, gz = i % cols, i // cols
        rows = int(math.ceil(n / cols))
        x = -0.7 + 1.4 * (gx + 0.5) / cols + rng.uniform(-0.05, 0.05)
        z = -0.2 + 0.9 * (gz + 0.5) / rows + rng.uniform(-0.05, 0.05)
        pos = np.array([x, 4.0, z])
        aim = np.array([rng.uniform(-0.03, 0.03), -1.0, rng.uniform(-0.03, 0.03)])
        poses.append(look_at(pos, pos + aim))
    return np.stack(poses)


def cameras(v: Variant) -> np.ndarray:
    """(n_views, 4, 4) world camera-to-world poses of the variant."""
    return room_cameras(v.n_views) if v.name == "room" else forward_cameras(v.n_views)


# bumped when the written model changes (2: images list the keypoints that see each point)
MODEL_VERSION = 2


def fingerprint_data(v: Variant) -> dict:
    """Everything that decides the variant's files (for the cache fingerprint)."""
    return {"variant": v.name, "model_version": MODEL_VERSION,
            "table": builtin.primitive_table(v.primitives).round(6).tolist(),
            "cameras": cameras(v).round(9).tolist(), "camera_angle_x": v.camera_angle_x}


# ------------------------------------------------------------------ writers
def surface_points(poses: np.ndarray, v: Variant, per_view: int = 12) -> np.ndarray:
    """(P, 3) world points where a per_view x per_view grid of rays of each view hits a surface
    (the sparse points structure from motion would triangulate)."""
    pts = []
    for c2w in poses:
        o, d = pixel_rays(c2w, per_view, per_view, v.camera_angle_x)
        t = ray_depth(o, d, v.primitives)
        hit = np.isfinite(t)
        pts.append(o[hit] + t[hit, None] * d[hit])
    return np.concatenate(pts)


def observations(poses: np.ndarray, v: Variant, points: np.ndarray,
                 resolution: int) -> List[np.ndarray]:
    """Per view (K, 3) rows x, y (pixels, centres at +0.5), point index: the points of
    (P, 3) that the view sees unoccluded inside its image, as SfM's keypoints would."""
    f = builtin.focal_length(resolution, v.camera_angle_x)
    out = []
    for c2w in poses:
        uv, z = project_pinhole(points, c2w, f, f, resolution / 2, resolution / 2)
        x, y = uv[:, 0], uv[:, 1]
        inside = (z > 1e-6) & (x >= 0) & (x < resolution) & (y >= 0) & (y < resolution)
        idx = np.flatnonzero(inside)
        dist = np.linalg.norm(points[idx] - c2w[:3, 3], axis=1)
        hit = ray_depth(np.broadcast_to(c2w[:3, 3], (len(idx), 3)), points[idx] - c2w[:3, 3],
                        v.primitives)
        seen = idx[np.abs(hit - 1.0) * dist < 1e-6 + 1e-5 * dist]  # nothing in front of it
        out.append(np.column_stack([x[seen], y[seen], seen]))
    return out


def _write_rgb(path: Path, rgba: np.ndarray) -> None:
    import imageio.v3 as iio
    iio.imwrite(path, builtin.to_uint8(rgba[..., :3] * rgba[..., 3:]))  # photos: no alpha


def _render_all(out: Path, v: Variant, poses: np.ndarray, resolution: int, bar) -> List[str]:
    (out / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i, c2w in enumerate(poses):
        rgba, _ = render_view(c2w, resolution, resolution, v.camera_angle_x,
                              primitives=v.primitives)
        names.append(f"view_{i:03d}.png")
        _write_rgb(out / "images" / names[-1], rgba)
        bar.update(1)
    return names


def write_colmap_text(out: Path, poses: np.ndarray, names: Sequence[str], focal: float,
                      resolution: int, points: np.ndarray, obs: List[np.ndarray]) -> None:
    """COLMAP text model (one PINHOLE camera, images with their keypoints ``obs`` as given by
    :func:`observations`, points with their tracks) under out/sparse/0."""
    folder = out / "sparse" / "0"
    folder.mkdir(parents=True, exist_ok=True)
    c = resolution / 2
    atomic_write_text(folder / "cameras.txt",
                      "# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]\n"
                      f"1 PINHOLE {resolution} {resolution} {focal!r} {focal!r} {c!r} {c!r}\n")
    lines = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    gl_to_cv = np.diag([1.0, -1.0, -1.0])
    for i, (c2w, name) in enumerate(zip(poses, names), 1):
        r_w2c = (c2w[:3, :3] @ gl_to_cv).T
        t = -r_w2c @ c2w[:3, 3]
        q = rotation_to_quat(r_w2c)
        lines.append(f"{i} " + " ".join(repr(float(x)) for x in (*q, *t)) + f" 1 {name}")
        lines.append(" ".join(f"{float(x)!r} {float(y)!r} {int(k) + 1}" for x, y, k in obs[i - 1]))
    atomic_write_text(folder / "images.txt", "\n".join(lines) + "\n")
    tracks: List[List[str]] = [[] for _ in points]
    for i, rows in enumerate(obs, 1):
        for j, k in enumerate(rows[:, 2].astype(int)):
            tracks[k].append(f"{i} {j}")
    lines = ["# POINT3D_ID X Y Z R G B ERROR TRACK[]"]
    lines += [f"{i} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} 128 128 128 0.5 "
              + " ".join(tr) for i, (p, tr) in enumerate(zip(points, tracks), 1)]
    atomic_write_text(folder / "points3D.txt", "\n".join(lines) + "\n")


def write_llff(out: Path, poses: np.ndarray, focal: float, resolution: int, v: Variant) -> None:
    """poses_bounds.npy: per view LLFF's [down, right, back | t | h w f] and near/far depth
    bounds (the 1st and 99th percentile of the view's surface depths, with a margin, as
    LLFF's imgs2poses takes them from COLMAP's points)."""
    rows = []
    for c2w in poses:
        o, d = pixel_rays(c2w, 24, 24, v.camera_angle_x)
        t = ray_depth(o, d, v.primitives)
        z = (t * (d @ -c2w[:3, 2]))[np.isfinite(t)]  # depth along the optical axis
        near, far = np.percentile(z, 1) * 0.9, np.percentile(z, 99) * 1.1
        m = np.stack([-c2w[:3, 1], c2w[:3, 0], c2w[:3, 2], c2w[:3, 3],
                      [resolution, resolution, focal]], axis=1)  # [down, right, back, t, hwf]
        rows.append(np.concatenate([m.reshape(-1), [near, far]]))
    with atomic_file(out / "poses_bounds.npy") as f:
        np.save(f, np.asarray(rows, np.float64))


def write_variant(out: Path, name: str, resolution: int, progress: bool = True) -> None:
    """Render variant ``name`` at resolution x resolution into the existing folder ``out``."""
    from tqdm import tqdm

    v = variant(name)
    poses = cameras(v)
    focal = builtin.focal_length(resolution, v.camera_angle_x)
    with tqdm(total=len(poses), desc=f"rendering built-in {name} scene {resolution}x{resolution}",
              unit="view", disable=not progress) as bar:
        names = _render_all(out, v, poses, resolution, bar)
    if name == "room":
        pts = surface_points(poses, v)
        write_colmap_text(out, poses, names, focal, resolution, pts,
                          observations(poses, v, pts, resolution))
    else:
        write_llff(out, poses, focal, resolution, v)
