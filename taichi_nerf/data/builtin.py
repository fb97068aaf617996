"""The built-in procedural scene: analytic primitives ray traced by Taichi, cached as a Blender dataset.

One table (:data:`PRIMITIVES`) describes the scene. The Taichi kernel renders
it (images for training) and the numpy functions below evaluate it exactly
(ground truth for depth, occupancy and mesh tests), so the two cannot drift.

World frame: z up, like Blender/NeRF-synthetic. Every primitive lies within a
radius of 1.35 of the origin (inside the Blender scene box [-1.5, 1.5]^3): from
a camera at radius 4 with NeRF-synthetic's field of view, that is the largest
sphere never cut by the image border, so every object is fully in every view
and the image border is transparent. The origin is inside the central sphere,
so every camera's centre pixel is opaque.
"""
# No `from __future__ import annotations`: Taichi reads the ti.func annotations as objects.

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import taichi as ti

from taichi_nerf.atomic import atomic_write_json
from taichi_nerf.kernels import runtime as ti_runtime

from .poses import look_at

# Bump when the scene, cameras or renderer change in a way that alters the
# images; the fingerprint below also catches edits that forget to bump it.
SCENE_VERSION = 1
DEFAULT_RESOLUTION = 128
# NeRF-synthetic's field of view: at radius 4 a sphere of radius
# 4 * sin(CAMERA_ANGLE_X / 2) = 1.355 around the origin stays inside the frame.
CAMERA_ANGLE_X = 0.6911112070083618
CAMERA_RADIUS = 4.0
N_TRAIN, N_VAL, N_TEST = 80, 10, 10
# Lowest camera elevation as z / radius: a little below the horizon.
CAMERA_MIN_Z = -0.25
CAMERA_SEED = 0
# Odd, so the pixel centre is one of the sub-samples: an opaque pixel then
# always has an analytic hit through its centre (the depth tests rely on it).
SAMPLES_PER_AXIS = 3
MARKER_NAME = "builtin_scene.json"

SPHERE, BOX, TORUS, CYLINDER, ROOM = 0, 1, 2, 3, 4
# a room is a box seen from inside (its walls are hit on the way out) that casts no shadow,
# so that the light still reaches what stands in it
KINDS = {"sphere": SPHERE, "box": BOX, "torus": TORUS, "cylinder": CYLINDER, "room": ROOM}
TEX_SOLID, TEX_LATLONG_CHECKER, TEX_CHECKER3D, TEX_ANGULAR_STRIPES, TEX_BANDS = 0, 1, 2, 3, 4
TEXTURES = {"solid": TEX_SOLID, "latlong_checker": TEX_LATLONG_CHECKER,
            "checker3d": TEX_CHECKER3D, "angular_stripes": TEX_ANGULAR_STRIPES,
            "bands": TEX_BANDS}

# Lighting (directional light + sky-like ambient). Shading is done in linear
# light and written as sRGB.
LIGHT_DIR = tuple((np.array([0.4, 0.3, 1.0]) / np.linalg.norm([0.4, 0.3, 1.0])).tolist())
AMBIENT_DOWN, AMBIENT_UP = 0.12, 0.30
DIFFUSE = 0.85
NO_HIT = 1e10  # Taichi-side "miss"; turned into inf on the way out.


@dataclasses.dataclass(frozen=True)
class Primitive:
    """One solid: kind, placement (centre, xyz Euler degrees) and material.

    params (world units): sphere (radius,), box (half-x, half-y, half-z),
    torus (major radius, tube radius) around local z, cylinder (radius,
    half-height) along local z, capped. texture_freq: cells per unit length,
    or per turn for angular textures (latlong: (around, pole to pole)).
    """

    name: str
    kind: str
    center: Tuple[float, float, float]
    rotation_deg: Tuple[float, float, float]
    params: Tuple[float, ...]
    color_a: Tuple[float, float, float]
    color_b: Tuple[float, float, float]
    texture: str
    texture_freq: Tuple[float, float]
    specular: float
    shininess: float

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) local-to-world rotation (world = R @ local + center)."""
        rx, ry, rz = np.radians(self.rotation_deg)
        cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
        mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        return mz @ my @ mx


PRIMITIVES: Tuple[Primitive, ...] = (
    Primitive("ball", "sphere", (0.0, 0.0, 0.0), (0.0, 0.0, 20.0), (0.44,),
              (0.85, 0.15, 0.12), (0.95, 0.92, 0.80), "latlong_checker", (12.0, 6.0), 0.5, 50.0),
    # half-extent x freq = 1.5: faces sit mid-cell, never on a checker edge.
    Primitive("box", "box", (0.64, 0.48, -0.28), (15.0, -10.0, 30.0), (0.24, 0.24, 0.24),
              (0.15, 0.35, 0.80), (0.92, 0.92, 0.92), "checker3d", (6.25, 6.25), 0.35, 40.0),
    Primitive("ring", "torus", (-0.68, -0.52, -0.28), (60.0, 0.0, 35.0), (0.32, 0.104),
              (0.95, 0.75, 0.20), (0.10, 0.45, 0.20), "angular_stripes", (14.0, 0.0), 0.6, 80.0),
    Primitive("pillar", "cylinder", (-0.40, 0.60, 0.12), (10.0, 0.0, 0.0), (0.16, 0.36),
              (0.55, 0.25, 0.70), (0.95, 0.85, 0.30), "bands", (6.875, 0.0), 0.25, 20.0),
    Primitive("bead", "sphere", (0.36, -0.60, 0.40), (0.0, 0.0, 0.0), (0.20,),
              (0.10, 0.70, 0.70), (0.10, 0.70, 0.70), "solid", (0.0, 0.0), 0.9, 150.0),
)

# Column layout of the packed table the Taichi kernel reads.
_C_KIND, _C_CENTER, _C_ROT, _C_PARAMS = 0, 1, 4, 13
_C_COLA, _C_COLB, _C_TEX, _C_FREQ, _C_SPEC, _C_SHIN = 17, 20, 23, 24, 26, 27
TABLE_COLUMNS = 28


def primitive_table(primitives: Sequence[Primitive] = PRIMITIVES) -> np.ndarray:
    """(P, 28) float32 packed primitive table: kind, centre, world-to-local rotation, params, material."""
    table = np.zeros((len(primitives), TABLE_COLUMNS), np.float32)
    for k, p in enumerate(primitives):
        table[k, _C_KIND] = KINDS[p.kind]
        table[k, _C_CENTER:_C_CENTER + 3] = p.center
        table[k, _C_ROT:_C_ROT + 9] = p.rotation.T.reshape(-1)  # world-to-local
        table[k, _C_PARAMS:_C_PARAMS + len(p.params)] = p.params
        table[k, _C_COLA:_C_COLA + 3] = p.color_a
        table[k, _C_COLB:_C_COLB + 3] = p.color_b
        table[k, _C_TEX] = TEXTURES[p.texture]
        table[k, _C_FREQ:_C_FREQ + 2] = p.texture_freq
        table[k, _C_SPEC] = p.specular
        table[k, _C_SHIN] = p.shininess
    return table


# ----------------------------------------------------------------------------
# Analytic geometry (numpy, float64; no Taichi)
# ----------------------------------------------------------------------------

def _to_local(points: np.ndarray, prim: Primitive) -> np.ndarray:
    return (points - np.asarray(prim.center)) @ prim.rotation  # row-vector form of R^T (p - c)


def primitive_sdf(points: np.ndarray, prim: Primitive) -> np.ndarray:
    """(N,) exact signed distance (world units) from (N, 3) world points to one primitive."""
    p = _to_local(np.asarray(points, np.float64).reshape(-1, 3), prim)
    if prim.kind == "sphere":
        return np.linalg.norm(p, axis=1) - prim.params[0]
    if prim.kind in ("box", "room"):
        q = np.abs(p) - np.asarray(prim.params[:3])
        d = np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
        return -d if prim.kind == "room" else d  # a room's solid is everything outside it
    if prim.kind == "torus":
        major, tube = prim.params[:2]
        q = np.stack([np.hypot(p[:, 0], p[:, 1]) - major, p[:, 2]], axis=1)
        return np.linalg.norm(q, axis=1) - tube
    if prim.kind == "cylinder":
        radius, half = prim.params[:2]
        d = np.stack([np.hypot(p[:, 0], p[:, 1]) - radius, np.abs(p[:, 2]) - half], axis=1)
        return np.minimum(d.max(axis=1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=1)
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def scene_sdf(points_world: np.ndarray,
              primitives: Sequence[Primitive] = PRIMITIVES) -> np.ndarray:
    """(N,) signed distance (world units, negative inside) from (N, 3) world points to the scene."""
    pts = np.asarray(points_world, np.float64).reshape(-1, 3)
    return np.min([primitive_sdf(pts, p) for p in primitives], axis=0)


def inside(points: np.ndarray) -> np.ndarray:
    """(N,) bool: which of the (N, 3) world points lie inside some primitive."""
    return scene_sdf(points) < 0.0


def _safe(d: np.ndarray) -> np.ndarray:
    # Axis-parallel rays: a tiny signed value keeps slab maths finite (no 0 * inf).
    return np.where(np.abs(d) < 1e-12, np.where(d < 0, -1e-12, 1e-12), d)


def _first_positive(t_near: np.ndarray, t_far: np.ndarray, valid: np.ndarray) -> np.ndarray:
    t = np.where(t_near > 0, t_near, t_far)
    return np.where(valid & (t_far > 0), t, np.inf)


def _sphere_interval(o, d, radius):
    b = np.einsum("ij,ij->i", o, d)
    c = np.einsum("ij,ij->i", o, o) - radius * radius
    disc = b * b - c
    sq = np.sqrt(np.maximum(disc, 0.0))
    return -b - sq, -b + sq, disc >= 0


def _torus_hit(o: np.ndarray, d: np.ndarray, major: float, tube: float) -> np.ndarray:
    """First t > 0 on the torus (axis z) from the real roots of its quartic."""
    t0, t1, ok = _sphere_interval(o, d, major + tube + 1e-6)
    ok &= t1 > 0
    out = np.full(len(o), np.inf)
    if not ok.any():
        return out
    # Start the quartic at the bounding-sphere entry so its roots are O(1).
    shift = np.maximum(t0[ok], 0.0)
    oo, dd = o[ok] + shift[:, None] * d[ok], d[ok]
    s = np.einsum("ij,ij->i", oo, dd)
    g = np.einsum("ij,ij->i", oo, oo) + major ** 2 - tube ** 2
    a2 = dd[:, 0] ** 2 + dd[:, 1] ** 2
    a1 = oo[:, 0] * dd[:, 0] + oo[:, 1] * dd[:, 1]
    a0 = oo[:, 0] ** 2 + oo[:, 1] ** 2
    c3 = 4 * s
    c2 = 4 * s * s + 2 * g - 4 * major ** 2 * a2
    c1 = 4 * s * g - 8 * major ** 2 * a1
    c0 = g * g - 4 * major ** 2 * a0
    comp = np.zeros((len(oo), 4, 4))
    comp[:, 0, :] = -np.stack([c3, c2, c1, c0], axis=1)
    comp[:, 1, 0] = comp[:, 2, 1] = comp[:, 3, 2] = 1.0
    roots = np.linalg.eigvals(comp).real
    coef = np.stack([np.ones_like(c3), c3, c2, c1, c0], axis=1)[:, None, :]
    for _ in range(3):  # Newton polish: eigenvalues of near-double roots are imprecise
        val = (((coef[..., 0] * roots + coef[..., 1]) * roots + coef[..., 2]) * roots
               + coef[..., 3]) * roots + coef[..., 4]
        der = ((4 * coef[..., 0] * roots + 3 * coef[..., 1]) * roots
               + 2 * coef[..., 2]) * roots + coef[..., 3]
        step = np.where(np.abs(der) > 1e-12, val / np.where(der == 0, 1.0, der), 0.0)
        roots = roots - np.clip(step, -0.1, 0.1)
    # Real parts of complex pairs are not hits; keep roots that lie on the surface.
    pts = oo[:, None, :] + roots[..., None] * dd[:, None, :]
    q = np.stack([np.hypot(pts[..., 0], pts[..., 1]) - major, pts[..., 2]], axis=-1)
    on_surface = np.abs(np.linalg.norm(q, axis=-1) - tube) < 1e-7
    t = roots + shift[:, None]
    t = np.where(on_surface & (t > 0), t, np.inf).min(axis=1)
    out[np.flatnonzero(ok)] = t
    return out


def primitive_ray_depth(origins: np.ndarray, dirs: np.ndarray, prim: Primitive) -> np.ndarray:
    """(N,) distance along unit (N, 3) dirs from (N, 3) origins to one primitive's first surface crossing, inf on miss."""
    o = _to_local(origins, prim)
    d = dirs @ prim.rotation
    if prim.kind == "sphere":
        tn, tf, ok = _sphere_interval(o, d, prim.params[0])
        return _first_positive(tn, tf, ok)
    if prim.kind in ("box", "room"):
        h = np.asarray(prim.params[:3])
        inv = 1.0 / _safe(d)
        ta, tb = (-h - o) * inv, (h - o) * inv
        tn, tf = np.minimum(ta, tb).max(axis=1), np.maximum(ta, tb).min(axis=1)
        return _first_positive(tn, tf, tn <= tf)
    if prim.kind == "torus":
        return _torus_hit(o, d, *prim.params[:2])
    if prim.kind == "cylinder":
        radius, half = prim.params[:2]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - radius * radius
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        parallel = a < 1e-12
        a_safe = np.where(parallel, 1.0, a)
        ts0 = np.where(parallel, -np.inf, (-b - sq) / a_safe)
        ts1 = np.where(parallel, np.inf, (-b + sq) / a_safe)
        side_ok = np.where(parallel, c <= 0, disc >= 0)
        dz = _safe(d[:, 2])
        za, zb = (-half - o[:, 2]) / dz, (half - o[:, 2]) / dz
        tn, tf = np.maximum(ts0, np.minimum(za, zb)), np.minimum(ts1, np.maximum(za, zb))
        return _first_positive(tn, tf, side_ok & (tn <= tf))
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def ray_depth(origins: np.ndarray, dirs: np.ndarray,
              primitives: Sequence[Primitive] = PRIMITIVES) -> np.ndarray:
    """(N,) t of the first surface hit (origins + t * dirs), inf on miss; (N, 3) world origins and dirs (any length)."""
    o = np.asarray(origins, np.float64).reshape(-1, 3)
    d = np.asarray(dirs, np.float64).reshape(-1, 3)
    norm = np.linalg.norm(d, axis=1)
    u = d / norm[:, None]
    dist = np.min([primitive_ray_depth(o, u, p) for p in primitives], axis=0)
    return dist / norm


# ----------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------

def camera_positions(n: int = N_TRAIN + N_VAL + N_TEST, radius: float = CAMERA_RADIUS,
                     min_z: float = CAMERA_MIN_Z) -> np.ndarray:
    """(n, 3) world positions on a Fibonacci spiral over the sphere cap z/radius >= min_z."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n * (1.0 - min_z)  # never exactly at the pole, where look_at's up is degenerate
    rho = np.sqrt(1.0 - z * z)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return radius * np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def builtin_cameras() -> Dict[str, np.ndarray]:
    """Split name -> (V, 4, 4) float64 camera-to-world matrices (train 80, val 10, test 10; fixed seed)."""
    poses = np.stack([look_at(p) for p in camera_positions()])
    perm = np.random.default_rng(CAMERA_SEED).permutation(len(poses))
    test, val, train = np.split(perm, [N_TEST, N_TEST + N_VAL])
    return {"train": poses[np.sort(train)], "val": poses[np.sort(val)], "test": poses[np.sort(test)]}


def focal_length(width: int, camera_angle_x: float = CAMERA_ANGLE_X) -> float:
    """Focal length in pixels for an image `width` pixels wide."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def pixel_rays(c2w: np.ndarray, width: int, height: int,
               camera_angle_x: float = CAMERA_ANGLE_X) -> Tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres: (H*W, 3) world origins and unit dirs, row-major from the top-left pixel."""
    f = focal_length(width, camera_angle_x)
    j, i = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    cam = np.stack([(i - 0.5 * width) / f, -(j - 0.5 * height) / f, -np.ones_like(i)], axis=-1)
    dirs = cam.reshape(-1, 3) @ np.asarray(c2w, np.float64)[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.broadcast_to(np.asarray(c2w, np.float64)[:3, 3], dirs.shape).copy()
    return origins, dirs


def depth_map(c2w: np.ndarray, width: int, height: int,
              camera_angle_x: float = CAMERA_ANGLE_X) -> np.ndarray:
    """(H, W) ground-truth distance (world units) along each pixel-centre ray, inf where it misses."""
    o, d = pixel_rays(c2w, width, height, camera_angle_x)
    return ray_depth(o, d).reshape(height, width)


# ----------------------------------------------------------------------------
# Taichi renderer
# ----------------------------------------------------------------------------

@ti.func
def _row3(table: ti.template(), k, col):
    return ti.Vector([table[k, col], table[k, col + 1], table[k, col + 2]])


@ti.func
def _safe_div(a, b):
    bs = ti.select(ti.abs(b) < 1e-9, ti.select(b < 0, -1e-9, 1e-9), b)
    return a / bs


@ti.func
def _torus_sdf(p, major, tube):
    return ti.Vector([ti.sqrt(p.x * p.x + p.y * p.y) - major, p.z]).norm() - tube


@ti.func
def _hit_local(table: ti.template(), k, ol, dl, tmin):
    """vec4(t, local normal) of primitive k for a local-frame ray; t = NO_HIT on miss."""
    kind = ti.cast(table[k, _C_KIND], ti.i32)
    p0 = table[k, _C_PARAMS]
    p1 = table[k, _C_PARAMS + 1]
    p2 = table[k, _C_PARAMS + 2]
    t = NO_HIT
    n = ti.Vector([0.0, 0.0, 1.0])
    if kind == SPHERE:
        # Move the origin next to the sphere first: f32 b*b - c cancels badly at distance 4.
        tc = -ol.dot(dl)
        oc = ol + tc * dl
        disc = p0 * p0 - oc.dot(oc)
        if disc >= 0:
            sq = ti.sqrt(disc)
            tn, tf = tc - sq, tc + sq
            if tf > tmin:
                t = ti.select(tn > tmin, tn, tf)
                n = (ol + t * dl).normalized()
    elif kind == BOX or kind == ROOM:
        h = ti.Vector([p0, p1, p2])
        ta = _safe_div(-h - ol, dl)
        tb = _safe_div(h - ol, dl)
        tlo = ti.min(ta, tb)
        thi = ti.max(ta, tb)
        tn = ti.max(tlo.x, tlo.y, tlo.z)
        tf = ti.min(thi.x, thi.y, thi.z)
        if tn <= tf and tf > tmin:
            entering = tn > tmin
            t = ti.select(entering, tn, tf)
            axis = 0
            for a in ti.static(range(3)):
                if entering and tlo[a] == tn:
                    axis = a
                if not entering and thi[a] == tf:
                    axis = a
            n = ti.Vector([0.0, 0.0, 0.0])
            for a in ti.static(range(3)):
                if a == axis:
                    n[a] = ti.select(entering, -1.0, 1.0) * ti.select(dl[a] < 0, -1.0, 1.0)
    elif kind == CYLINDER:
        a = dl.x * dl.x + dl.y * dl.y
        b = ol.x * dl.x + ol.y * dl.y
        c = ol.x * ol.x + ol.y * ol.y - p0 * p0
        ts0, ts1 = -NO_HIT, NO_HIT
        side_ok = c <= 0
        if a > 1e-12:
            disc = b * b - a * c
            side_ok = disc >= 0
            sq = ti.sqrt(ti.max(disc, 0.0))
            ts0, ts1 = (-b - sq) / a, (-b + sq) / a
        za = _safe_div(-p1 - ol.z, dl.z)
        zb = _safe_div(p1 - ol.z, dl.z)
        tz0, tz1 = ti.min(za, zb), ti.max(za, zb)
        tn, tf = ti.max(ts0, tz0), ti.min(ts1, tz1)
        if side_ok and tn <= tf and tf > tmin:
            entering = tn > tmin
            t = ti.select(entering, tn, tf)
            p = ol + t * dl
            cap = ti.select(entering, tz0 >= ts0, tz1 <= ts1)
            if cap:
                n = ti.Vector([0.0, 0.0, ti.select(p.z < 0, -1.0, 1.0)])
            else:
                n = ti.Vector([p.x, p.y, 0.0]).normalized()
    elif kind == TORUS:
        # Sphere tracing inside the bounding sphere: the torus SDF is exact, so
        # steps never overshoot; grazing rays that do not converge count as misses.
        rb = p0 + p1 + 1e-4
        tc = -ol.dot(dl)
        oc = ol + tc * dl
        disc = rb * rb - oc.dot(oc)
        if disc >= 0:
            sq = ti.sqrt(disc)
            t_end = tc + sq
            tt = ti.max(tc - sq, tmin)
            for _ in range(512):
                if tt > t_end:
                    break
                dist = _torus_sdf(ol + tt * dl, p0, p1)
                if dist < 1e-5:
                    t = tt
                    break
                tt += dist
            if t < NO_HIT:
                p = ol + t * dl
                rxy = ti.sqrt(p.x * p.x + p.y * p.y)
                ring = ti.Vector([p.x, p.y, 0.0]) * (p0 / ti.max(rxy, 1e-9))
                n = (p - ring).normalized()
    return ti.Vector([t, n.x, n.y, n.z])


@ti.func
def _closest_hit(table: ti.template(), o, d, tmin, shadow: ti.template()):
    """(t, primitive index, world normal) of the closest hit over all primitives (a shadow
    ray ignores rooms)."""
    best_t = NO_HIT
    best_k = -1
    best_n = ti.Vector([0.0, 0.0, 1.0])
    for k in range(table.shape[0]):
        if ti.static(shadow):
            if ti.cast(table[k, _C_KIND], ti.i32) == ROOM:
                continue
        c = _row3(table, k, _C_CENTER)
        m = ti.Matrix.rows([_row3(table, k, _C_ROT), _row3(table, k, _C_ROT + 3),
                            _row3(table, k, _C_ROT + 6)])
        h = _hit_local(table, k, m @ (o - c), m @ d, tmin)
        if h[0] < best_t:
            best_t = h[0]
            best_k = k
            best_n = m.transpose() @ ti.Vector([h[1], h[2], h[3]])
    return best_t, best_k, best_n


@ti.func
def _parity(x):
    return ti.cast(ti.floor(x), ti.i32) & 1


@ti.func
def _albedo(table: ti.template(), k, pl):
    """sRGB base colour of primitive k at local point pl."""
    tex = ti.cast(table[k, _C_TEX], ti.i32)
    f0 = table[k, _C_FREQ]
    f1 = table[k, _C_FREQ + 1]
    sel = 0
    if tex == TEX_LATLONG_CHECKER:
        u = ti.atan2(pl.y, pl.x) / (2 * math.pi) + 0.5
        v = ti.acos(ti.math.clamp(pl.z / ti.max(pl.norm(), 1e-9), -1.0, 1.0)) / math.pi
        sel = (_parity(u * f0) + _parity(v * f1)) & 1
    elif tex == TEX_CHECKER3D:
        # +64 keeps floor's argument positive; faces sit mid-cell by construction.
        sel = (_parity(pl.x * f0 + 64.0) + _parity(pl.y * f0 + 64.0) + _parity(pl.z * f0 + 64.0)) & 1
    elif tex == TEX_ANGULAR_STRIPES:
        sel = _parity((ti.atan2(pl.y, pl.x) / (2 * math.pi) + 0.5) * f0)
    elif tex == TEX_BANDS:
        sel = _parity(pl.z * f0 + 64.0)
    return ti.select(sel == 0, _row3(table, k, _C_COLA), _row3(table, k, _C_COLB))


@ti.kernel
def _render_kernel(table: ti.types.ndarray(dtype=ti.f32, ndim=2),
                   c2w: ti.types.ndarray(dtype=ti.f32, ndim=2),
                   focal: ti.f32, n_sub: ti.i32,
                   rgba: ti.types.ndarray(dtype=ti.f32, ndim=3),
                   depth: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    height, width = rgba.shape[0], rgba.shape[1]
    light = ti.Vector([LIGHT_DIR[0], LIGHT_DIR[1], LIGHT_DIR[2]])
    origin = ti.Vector([c2w[0, 3], c2w[1, 3], c2w[2, 3]])
    for j, i in ti.ndrange(height, width):
        col_sum = ti.Vector([0.0, 0.0, 0.0])
        hits = 0
        centre_t = NO_HIT
        for sj, si in ti.ndrange(n_sub, n_sub):
            x = (i + (si + 0.5) / n_sub - 0.5 * width) / focal
            y = -(j + (sj + 0.5) / n_sub - 0.5 * height) / focal
            d = ti.Vector([c2w[0, 0] * x + c2w[0, 1] * y - c2w[0, 2],
                           c2w[1, 0] * x + c2w[1, 1] * y - c2w[1, 2],
                           c2w[2, 0] * x + c2w[2, 1] * y - c2w[2, 2]]).normalized()
            t, k, n = _closest_hit(table, origin, d, 0.0, False)
            if 2 * sj + 1 == n_sub and 2 * si + 1 == n_sub:
                centre_t = t
            if k >= 0:
                hits += 1
                if n.dot(d) > 0:
                    n = -n
                p = origin + t * d
                c = _row3(table, k, _C_CENTER)
                m = ti.Matrix.rows([_row3(table, k, _C_ROT), _row3(table, k, _C_ROT + 3),
                                    _row3(table, k, _C_ROT + 6)])
                albedo = ti.pow(_albedo(table, k, m @ (p - c)), 2.2)  # sRGB -> linear (gamma 2.2)
                ndl = n.dot(light)
                lit = 0.0
                if ndl > 0:
                    ts, ks, ns = _closest_hit(table, p + 1e-3 * n, light, 0.0, True)
                    lit = ti.select(ks < 0, 1.0, 0.0)
                ambient = AMBIENT_DOWN + (AMBIENT_UP - AMBIENT_DOWN) * (0.5 + 0.5 * n.z)
                half = (light - d).normalized()
                spec = table[k, _C_SPEC] * ti.pow(ti.max(n.dot(half), 0.0), table[k, _C_SHIN])
                lin = albedo * (ambient + DIFFUSE * ti.max(ndl, 0.0) * lit) + spec * lit
                col_sum += ti.pow(ti.math.clamp(lin, 0.0, 1.0), 1.0 / 2.2)
        alpha = hits / (n_sub * n_sub)
        # Straight (not premultiplied) colour, as in NeRF-synthetic PNGs.
        col = col_sum / ti.max(hits, 1)
        for ch in ti.static(range(3)):
            rgba[j, i, ch] = col[ch]
        rgba[j, i, 3] = alpha
        depth[j, i] = centre_t


def _ensure_runtime() -> None:
    """Start Taichi (arch auto) unless it runs already: the renderer needs it, and nothing in
    the data layer needs torch. Nothing here outlives a later ``init`` on another arch: the
    kernel takes numpy arrays only and Taichi compiles it again for the new runtime."""
    if ti_runtime.current() is None:
        ti_runtime.init("auto")


def render_view(c2w: np.ndarray, width: int, height: int,
                camera_angle_x: float = CAMERA_ANGLE_X,
                samples_per_axis: int = SAMPLES_PER_AXIS,
                primitives: Sequence[Primitive] = PRIMITIVES) -> Tuple[np.ndarray, np.ndarray]:
    """Ray trace one view: (H, W, 4) float32 straight sRGB + alpha in [0, 1], (H, W) centre-ray distance (inf on miss)."""
    if samples_per_axis < 1 or samples_per_axis % 2 == 0:
        raise ValueError(f"samples_per_axis must be odd and >= 1, got {samples_per_axis}")
    _ensure_runtime()
    rgba = np.zeros((height, width, 4), np.float32)
    depth = np.zeros((height, width), np.float32)
    _render_kernel(primitive_table(primitives), np.ascontiguousarray(c2w, np.float32),
                   focal_length(width, camera_angle_x), samples_per_axis, rgba, depth)
    depth = depth.astype(np.float32)
    depth[depth >= 0.5 * NO_HIT] = np.inf
    return rgba, depth


# ----------------------------------------------------------------------------
# Dataset cache
# ----------------------------------------------------------------------------

def cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    """Folder holding cached scenes: cache_dir, else $TAICHI_NERF_CACHE, else $XDG_CACHE_HOME or ~/.cache, /taichi-nerf."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("TAICHI_NERF_CACHE"):
        return Path(os.environ["TAICHI_NERF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "taichi-nerf"


DEFAULT_VARIANT = "object"


def builtin_scene_path(resolution: int = DEFAULT_RESOLUTION,
                       cache_dir: Optional[os.PathLike] = None,
                       variant: str = DEFAULT_VARIANT) -> Path:
    """Where the built-in scene (or variant) at `resolution` x `resolution` pixels lives (may not exist yet)."""
    kind = "" if variant == DEFAULT_VARIANT else f"{variant}-"
    return cache_root(cache_dir) / f"builtin-{kind}v{SCENE_VERSION}-{int(resolution)}"


def _fingerprint(resolution: int, variant: str = DEFAULT_VARIANT) -> str:
    data = {"version": SCENE_VERSION, "resolution": resolution,
            "table": primitive_table().round(6).tolist(),
            "cameras": {k: v.round(9).tolist() for k, v in builtin_cameras().items()},
            "camera_angle_x": CAMERA_ANGLE_X, "spp": SAMPLES_PER_AXIS,
            "light": [LIGHT_DIR, AMBIENT_DOWN, AMBIENT_UP, DIFFUSE]}
    if variant != DEFAULT_VARIANT:
        from .builtin_variants import fingerprint_data, variant as get_variant
        data.update(fingerprint_data(get_variant(variant)))
    blob = json.dumps(data, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_complete(path: os.PathLike, resolution: int = DEFAULT_RESOLUTION,
                variant: str = DEFAULT_VARIANT) -> bool:
    """True if `path` holds a finished render of this scene version at `resolution`."""
    try:
        marker = json.loads((Path(path) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("fingerprint") == _fingerprint(resolution, variant)


def write_builtin_scene(out_dir: os.PathLike, resolution: int = DEFAULT_RESOLUTION,
                        progress: bool = True, variant: str = DEFAULT_VARIANT) -> None:
    """Render the scene into an existing folder: the default as a Blender dataset
    (transforms_*.json + RGBA PNGs), the variants as COLMAP (room) or LLFF (forward)."""
    out = Path(out_dir)
    if variant != DEFAULT_VARIANT:
        from .builtin_variants import write_variant
        write_variant(out, variant, resolution, progress)
    else:
        _write_blender(out, resolution, progress)
    # Written last: its presence (after the atomic rename) means "complete".
    marker = {"scene": "taichi-nerf builtin" + ("" if variant == DEFAULT_VARIANT else f" {variant}"),
              "version": SCENE_VERSION, "resolution": resolution,
              "fingerprint": _fingerprint(resolution, variant)}
    if variant == DEFAULT_VARIANT:
        marker.update({"world_up": [0, 0, 1],
                       "primitives": [dataclasses.asdict(p) for p in PRIMITIVES]})
    atomic_write_json(out / MARKER_NAME, marker)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8, rounded to nearest."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _write_blender(out: Path, resolution: int, progress: bool) -> None:
    import imageio.v3 as iio
    from tqdm import tqdm

    cams = builtin_cameras()
    total = sum(len(v) for v in cams.values())
    with tqdm(total=total, desc=f"rendering built-in scene {resolution}x{resolution}",
              unit="view", disable=not progress) as bar:
        for split, poses in cams.items():
            (out / split).mkdir(parents=True, exist_ok=True)
            frames: List[dict] = []
            for idx, c2w in enumerate(poses):
                rgba, _ = render_view(c2w, resolution, resolution)
                iio.imwrite(out / split / f"r_{idx}.png", to_uint8(rgba))
                frames.append({"file_path": f"./{split}/r_{idx}",
                               "transform_matrix": c2w.tolist()})
                bar.update(1)
            meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
            atomic_write_json(out / f"transforms_{split}.json", meta)


def ensure_builtin_scene(resolution: int = DEFAULT_RESOLUTION,
                         cache_dir: Optional[os.PathLike] = None,
                         progress: bool = True, variant: str = DEFAULT_VARIANT) -> Path:
    """Path of the cached built-in scene (or variant: "room", "forward"), rendering it first
    if missing or stale."""
    resolution = int(resolution)
    if resolution < 8:
        raise ValueError(f"built-in scene resolution must be >= 8 pixels, got {resolution}")
    final = builtin_scene_path(resolution, cache_dir, variant)
    if is_complete(final, resolution, variant):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # Render beside the target and rename: readers never see a half-written
    # scene, and an interrupted render leaves the old one (or nothing) behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write_builtin_scene(tmp, resolution, progress, variant)
        stale = None
        if final.exists():
            if is_complete(final, resolution, variant):  # another process finished first
                return final
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale-", dir=final.parent))
            os.replace(final, stale / "old")
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final, resolution, variant):
                raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
