"""Mesh export from a trained run: marching cubes on the density, vertex colours from the field.

The density sigma (per model unit) is sampled on a regular grid over the
occupied part of the model box (the bounding box of the occupancy grid's
occupied cells, padded by a cell) and only inside occupied cells (dilated by one
cell): elsewhere the renderer never samples, so neither does the mesh. The
volume is padded with zeros, so every surface is closed. Marching cubes
(scikit-image, Lewiner) extracts the level set sigma = threshold; vertices go
back to WORLD units ((model - offset) / scale); faces are counter-clockwise
seen from outside (normals point out of the object). Vertex colours are what a
camera looking straight at the vertex (along -normal) sees there: the radiance
field volume-rendered along a short segment through the vertex.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch

from taichi_nerf.atomic import atomic_file
from taichi_nerf.data.scene import SceneTransform
from taichi_nerf.export.errors import ExportError
from taichi_nerf.kernels.occupancy import axis_cascade, axis_cell

DEFAULT_RESOLUTION = 256
MAX_RESOLUTION = 1024        # 1024^3 float32 samples = 4 GiB; marching cubes needs about as much again
DEFAULT_THRESHOLD = 10.0     # sigma per model unit; see tests/test_export.py for the measurement
MESH_SUFFIXES = (".ply", ".obj")
DENSITY_CHUNK = 1 << 18

DensityFn = Callable[[torch.Tensor], torch.Tensor]      # model points (K,3) -> sigma (K,)
# origins (K,3), unit dirs (K,3), segment length -> rgb (K,3) in [0,1] seen along the segment
ColorFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass
class Mesh:
    """Triangle mesh: vertices (V,3) float32, faces (F,3) int64 (CCW from outside), colors (V,3) uint8 or None."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: Optional[np.ndarray] = None


# ---------------------------------------------------------------- occupancy
def occupied_cells(grid, dilate: int = 1) -> torch.Tensor:
    """bool (n_cascades, R, R, R) indexed [c, z, y, x]: the grid's occupied cells, dilated by `dilate` cells."""
    spec = grid.spec
    res = spec.resolution
    occ = grid.occupied().reshape(spec.n_cascades, res, res, res)
    if dilate > 0:
        k = 2 * dilate + 1
        occ = torch.nn.functional.max_pool3d(occ.float()[:, None], k, stride=1,
                                             padding=dilate)[:, 0] > 0
    return occ


def occupied_bounds(grid, pad_cells: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Model-space box (lo (3,), hi (3,)) of the occupied cells (each cascade outside the finer one),
    padded by `pad_cells` cells and clipped to the model box; ExportError if none is occupied."""
    spec = grid.spec
    res = spec.resolution
    occ = occupied_cells(grid, 0).cpu().numpy()
    lo_all, hi_all = [], []
    for c in range(spec.n_cascades):
        size = 2.0 ** c
        idx = np.nonzero(occ[c])                                         # z, y, x
        if not len(idx[0]):
            continue
        xyz = np.stack(idx[::-1], 1).astype(np.float64)                  # x, y, z cell coords
        lo_c = 0.5 + size * (xyz / res - 0.5)
        hi_c = lo_c + size / res
        if c > 0:  # cells inside the finer cascade's box are never used by the marcher
            inner = 2.0 ** (c - 1) * 0.5
            centre = (lo_c + hi_c) / 2 - 0.5
            keep = np.abs(centre).max(1) > inner
            lo_c, hi_c = lo_c[keep], hi_c[keep]
            if not len(lo_c):
                continue
        pad = pad_cells * size / res
        lo_all.append(lo_c.min(0) - pad)
        hi_all.append(hi_c.max(0) + pad)
    if not lo_all:
        raise ExportError("the occupancy grid has no occupied cell (an untrained run?)")
    box_lo, box_hi = (np.asarray(v, np.float64) for v in spec.aabb)
    lo = np.maximum(np.min(lo_all, 0), box_lo)
    hi = np.minimum(np.max(hi_all, 0), box_hi)
    return lo, hi


# ---------------------------------------------------------------- sampling + marching cubes
def grid_shape(lo: np.ndarray, hi: np.ndarray, resolution: int) -> Tuple[Tuple[int, int, int], float]:
    """Samples per axis (nx, ny, nz) and the (isotropic) spacing in model units: `resolution` samples
    along the box's longest side, proportionally fewer along the others."""
    ext = np.asarray(hi, np.float64) - np.asarray(lo, np.float64)
    h = float(ext.max()) / (resolution - 1)
    shape = tuple(int(max(2, np.ceil(e / h - 1e-9) + 1)) for e in ext)
    return shape, h


def occupancy_on_grid(occupied: np.ndarray, lo: np.ndarray, shape: Tuple[int, int, int],
                      spacing: float, x_range: Tuple[int, int]) -> np.ndarray:
    """bool (b, ny, nz) for grid samples lo + spacing * (i, j, k), i in x_range: inside an occupied
    cell of `occupied` (C, R, R, R) [c, z, y, x] (a point's cascade: the finest that holds it)."""
    n_cascades, res = occupied.shape[0], occupied.shape[1]
    # the lookup is separable: a sample's cascade is the largest of its coordinates' cascades,
    # and its cell along an axis depends on that coordinate only, so look up each axis once
    # (finest cascade (n,) and cell in every cascade (n_cascades, n)) instead of every sample
    axes = []
    for a, (start, stop) in enumerate([x_range, (0, shape[1]), (0, shape[2])]):
        coords = (np.float64(lo[a]) + np.arange(start, stop) * np.float64(spacing)).astype(np.float32)
        axes.append((axis_cascade(coords, n_cascades),
                     axis_cell(coords[None], np.arange(n_cascades)[:, None], res)))
    (cx, ix), (cy, iy), (cz, iz) = axes
    cas = np.maximum(np.maximum(cx[:, None, None], cy[None, :, None]), cz[None, None, :])
    out = np.zeros(cas.shape, bool)
    for c in np.unique(cas):
        look = occupied[c][iz[c][None, None, :], iy[c][None, :, None], ix[c][:, None, None]]
        sel = cas == c
        out[sel] = look[sel]
    return out


@torch.no_grad()
def sample_density(density_fn: DensityFn, lo: np.ndarray, shape: Tuple[int, int, int],
                   spacing: float, device: Optional[torch.device] = None,
                   occupied: Optional[np.ndarray] = None, chunk: int = DENSITY_CHUNK,
                   progress: bool = False) -> np.ndarray:
    """Density at lo + spacing * (i, j, k) (model units) -> float32 volume (nx, ny, nz); samples
    outside the cells marked in `occupied` (C, R, R, R) get 0 without evaluating density_fn."""
    from tqdm import tqdm

    nx, ny, nz = shape
    vol = np.zeros(shape, np.float32)
    lo64 = np.asarray(lo, np.float64)
    slabs = max(1, (4 * chunk) // (ny * nz))
    with tqdm(total=nx * ny * nz, desc="density", unit="pt", unit_scale=True,
              disable=not progress, leave=False) as bar:
        for i0 in range(0, nx, slabs):
            i1 = min(nx, i0 + slabs)
            if occupied is None:
                mask = np.ones((i1 - i0, ny, nz), bool)
            else:
                mask = occupancy_on_grid(occupied, lo64, shape, spacing, (i0, i1))
            ijk = np.stack(np.nonzero(mask), 1)
            ijk[:, 0] += i0
            block = np.empty(len(ijk), np.float32)
            for s in range(0, len(ijk), chunk):
                pts = torch.from_numpy((lo64 + ijk[s:s + chunk] * spacing).astype(np.float32))
                block[s:s + chunk] = density_fn(pts.to(device).contiguous()).float().cpu().numpy()
            vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = block
            bar.update((i1 - i0) * ny * nz)
    return vol


def clean_mesh(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Merge identical vertices, drop faces with a repeated vertex and unused vertices -> (V',3), (F',3)."""
    uniq, inverse = np.unique(vertices, axis=0, return_inverse=True)
    f = inverse.reshape(-1)[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    used, f = np.unique(f, return_inverse=True)
    return uniq[used], f.reshape(-1, 3).astype(np.int64)


def fill_cavities(volume: np.ndarray, threshold: float) -> np.ndarray:
    """Raise the empty pockets (<= threshold) that no path of empty samples joins to the border to
    just above threshold: the unseen inside of a solid then has no surface."""
    from scipy import ndimage

    solid = volume > threshold
    pockets = ndimage.binary_fill_holes(solid) & ~solid
    if not pockets.any():
        return volume
    out = volume.copy()
    out[pockets] = np.float32(threshold) + max(abs(np.float32(threshold)) * 1e-3, 1e-3)
    return out


def marching_cubes(volume: np.ndarray, threshold: float, lo: np.ndarray, spacing: float,
                   fill: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Level set volume == threshold of a (nx,ny,nz) volume sampled at lo + spacing * index, higher
    inside -> vertices (V,3) float64 in the same units as lo, faces (F,3) CCW from outside (closed);
    with `fill`, surfaces of enclosed empty pockets (see :func:`fill_cavities`) are left out."""
    from skimage import measure

    if not np.isfinite(volume).all():
        volume = np.nan_to_num(volume, nan=0.0, posinf=np.finfo(np.float32).max, neginf=0.0)
    if not volume.max() > threshold:
        raise ExportError(f"the density never exceeds the threshold {threshold:g} in the sampled "
                          f"region (max {float(volume.max()):.3g}); lower --threshold")
    if not volume.min() < threshold:
        raise ExportError(f"the density exceeds the threshold {threshold:g} everywhere in the "
                          f"sampled region; raise --threshold")
    volume = volume.astype(np.float32)
    if fill:
        volume = fill_cavities(volume, threshold)
    # a border of empty space closes surfaces that touch the sampled box
    padded = np.pad(volume, 1, constant_values=min(0.0, float(volume.min())))
    verts, faces, _, _ = measure.marching_cubes(padded, level=threshold, spacing=(spacing,) * 3,
                                                gradient_direction="descent")
    verts = verts - spacing + np.asarray(lo, np.float64)
    verts, faces = clean_mesh(verts.astype(np.float64), faces)
    # skimage's winding: make it counter-clockwise from outside (positive signed volume)
    if signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (units^3) of a closed mesh, > 0 when faces are counter-clockwise from outside."""
    v = np.asarray(vertices, np.float64)[faces]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V,3) float64 of a CCW mesh (outward)."""
    v = np.asarray(vertices, np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 0, n / np.maximum(norm, 1e-30), np.array([0.0, 0.0, 1.0]))


@torch.no_grad()
def vertex_colors(color_fn: ColorFn, vertices: np.ndarray, normals: np.ndarray, offset: float,
                  device: Optional[torch.device] = None, chunk: int = 1 << 15) -> np.ndarray:
    """Colour (V,3) uint8 seen along -normal on the segment from vertex + offset * normal to
    vertex - offset * normal (model units)."""
    out = np.empty((len(vertices), 3), np.uint8)
    for s in range(0, len(vertices), chunk):
        n = torch.from_numpy(normals[s:s + chunk]).float().to(device)
        o = torch.from_numpy(vertices[s:s + chunk]).float().to(device) + offset * n
        rgb = color_fn(o.contiguous(), (-n).contiguous(), 2.0 * offset).clamp(0, 1)
        out[s:s + chunk] = (rgb.cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return out


def field_color_fn(renderer, samples: int = 8) -> ColorFn:
    """ColorFn of a Renderer's field: volume rendering of `samples` points on each short segment
    (origins, dirs (K,3), length) -> rgb (K,3), normalised by the segment's opacity."""
    @torch.no_grad()
    def fn(o: torch.Tensor, d: torch.Tensor, length: float) -> torch.Tensor:
        k = o.shape[0]
        dt = length / samples
        t = (torch.arange(samples, device=o.device, dtype=o.dtype) + 0.5) * dt
        pts = (o[:, None, :] + t[None, :, None] * d[:, None, :]).reshape(-1, 3)
        dirs = d[:, None, :].expand(k, samples, 3).reshape(-1, 3)
        sigma, rgb = renderer.field(renderer.to_unit(pts).contiguous(), dirs.contiguous())
        alpha = 1.0 - torch.exp(-sigma.reshape(k, samples) * dt)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], 1),
                              1)
        w = alpha * trans + 1e-6  # a faint segment falls back to the plain mean
        return (w[..., None] * rgb.reshape(k, samples, 3)).sum(1) / w.sum(1, keepdim=True)
    return fn


def extract_mesh(density_fn: DensityFn, lo: np.ndarray, hi: np.ndarray, scene: SceneTransform,
                 resolution: int = DEFAULT_RESOLUTION, threshold: float = DEFAULT_THRESHOLD,
                 occupied: Optional[np.ndarray] = None, color_fn: Optional[ColorFn] = None,
                 device: Optional[torch.device] = None, progress: bool = False) -> Mesh:
    """Mesh (world units) of the level set density_fn == threshold over the model box [lo, hi] (3,),
    `resolution` samples along its longest side, only inside `occupied` cells (C,R,R,R) when
    given; colours from color_fn (model space) when given."""
    if not 8 <= resolution <= MAX_RESOLUTION:
        raise ExportError(f"--resolution must be in [8, {MAX_RESOLUTION}], got {resolution}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ExportError(f"--threshold must be a finite density > 0, got {threshold}")
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    shape, h = grid_shape(lo, hi, resolution)
    vol = sample_density(density_fn, lo, shape, h, device=device, occupied=occupied,
                         progress=progress)
    verts, faces = marching_cubes(vol, threshold, lo, h)
    colors = None
    if color_fn is not None and len(verts):
        # look straight at the surface from two samples outside to two samples inside
        colors = vertex_colors(color_fn, verts, vertex_normals(verts, faces), 2.0 * h, device)
    world = (verts - scene.offset.astype(np.float64)) / scene.scale
    return Mesh(world.astype(np.float32), faces, colors)


def mesh_of_run(renderer, scene: SceneTransform, resolution: int = DEFAULT_RESOLUTION,
                threshold: float = DEFAULT_THRESHOLD, colors: bool = True,
                progress: bool = False) -> Mesh:
    """Mesh (world units) of a trained Renderer over its occupied region, optionally vertex-coloured."""
    grid = renderer.grid
    lo, hi = occupied_bounds(grid)
    return extract_mesh(renderer.density, lo, hi, scene, resolution, threshold,
                        occupied=occupied_cells(grid, dilate=1).cpu().numpy(),
                        color_fn=field_color_fn(renderer) if colors else None,
                        device=grid.device, progress=progress)


# ---------------------------------------------------------------- writers
def write_ply(path: Union[str, os.PathLike], mesh: Mesh, binary: bool = True) -> None:
    """PLY (binary little-endian or ascii): float x y z, uchar red green blue, int vertex_indices."""
    path = Path(path)
    v = np.asarray(mesh.vertices, "<f4")
    f = np.asarray(mesh.faces, "<i4")
    col = mesh.colors is not None
    head = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
            "comment taichi-nerf mesh, world units", f"element vertex {len(v)}",
            "property float x", "property float y", "property float z"]
    if col:
        head += ["property uchar red", "property uchar green", "property uchar blue"]
    head += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    header = ("\n".join(head) + "\n").encode("ascii")

    def write(fh):
        fh.write(header)
        if binary:
            vt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
            if col:
                vt += [("r", "u1"), ("g", "u1"), ("b", "u1")]
            va = np.empty(len(v), vt)
            va["x"], va["y"], va["z"] = v[:, 0], v[:, 1], v[:, 2]
            if col:
                c = np.asarray(mesh.colors, np.uint8)
                va["r"], va["g"], va["b"] = c[:, 0], c[:, 1], c[:, 2]
            fh.write(va.tobytes())
            fa = np.empty(len(f), [("n", "u1"), ("i", "<i4", (3,))])
            fa["n"], fa["i"] = 3, f
            fh.write(fa.tobytes())
        else:
            if col:
                c = np.asarray(mesh.colors, np.uint8)
                lines = (f"{a:.7g} {b:.7g} {z:.7g} {r} {g} {bl}\n"
                         for (a, b, z), (r, g, bl) in zip(v.tolist(), c.tolist()))
            else:
                lines = (f"{a:.7g} {b:.7g} {z:.7g}\n" for a, b, z in v.tolist())
            fh.write("".join(lines).encode("ascii"))
            fh.write("".join(f"3 {a} {b} {c}\n" for a, b, c in f.tolist()).encode("ascii"))
    with atomic_file(path, "wb") as fh:
        write(fh)


def write_obj(path: Union[str, os.PathLike], mesh: Mesh) -> None:
    """Wavefront OBJ: `v x y z [r g b]` (colours as floats in [0,1]) and 1-based `f a b c` lines."""
    path = Path(path)
    v = np.asarray(mesh.vertices, np.float64)

    def write(fh):
        fh.write("# taichi-nerf mesh, world units\n")
        if mesh.colors is not None:
            c = np.asarray(mesh.colors, np.float64) / 255.0
            fh.write("".join(f"v {a:.7g} {b:.7g} {z:.7g} {r:.4f} {g:.4f} {bl:.4f}\n"
                             for (a, b, z), (r, g, bl) in zip(v.tolist(), c.tolist())))
        else:
            fh.write("".join(f"v {a:.7g} {b:.7g} {z:.7g}\n" for a, b, z in v.tolist()))
        fh.write("".join(f"f {a} {b} {c}\n" for a, b, c in (mesh.faces + 1).tolist()))
    with atomic_file(path, "w") as fh:
        write(fh)


def write_mesh(path: Union[str, os.PathLike], mesh: Mesh, binary: bool = True) -> None:
    """Write by suffix: .ply (binary unless binary=False) or .obj."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        write_ply(path, mesh, binary)
    elif suffix == ".obj":
        write_obj(path, mesh)
    else:
        raise ExportError(f"{path}: mesh file must end in .ply or .obj")
