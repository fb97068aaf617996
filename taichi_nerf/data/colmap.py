"""COLMAP format: ``sparse/0/{cameras,images}.{bin,txt}`` plus an ``images/`` folder.

World: COLMAP's world rotated so the cameras' mean up vector is +z (as
colmap2nerf does); cameras converted from OpenCV to OpenGL axes. The scene
transform comes from ``scene.fit_scene`` over all registered images, so every
split of a folder shares one world and one transform.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .dataset import Cameras
from .errors import DataError
from .colmap_model import (ColmapImage, ColmapPoints, camera_intrinsics, read_cameras_binary,
                           read_cameras_text, read_images_binary, read_images_text,
                           read_points_binary, read_points_text)
from .images import check_downscale
from .poses import quat_to_rotation
from .scene import fit_scene, up_alignment
from .splits import holdout_indices

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def find_model(root: Path) -> Optional[Tuple[Path, str]]:
    """(model folder, "bin" or "txt") for ``root/sparse/0`` or ``root/sparse``; None if absent."""
    for folder in (root / "sparse" / "0", root / "sparse"):
        for ext in ("bin", "txt"):  # binary first: full double precision
            if (folder / f"cameras.{ext}").is_file():
                return folder, ext
    return None


def colmap_to_c2w(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """COLMAP world-to-camera (qvec w,x,y,z; tvec), OpenCV axes -> camera-to-world (4, 4), OpenGL axes."""
    rot = quat_to_rotation(qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T
    c2w[:3, 3] = -rot.T @ np.asarray(tvec, dtype=np.float64)
    return c2w @ OPENCV_TO_OPENGL


# share of the sparse points the model box must hold: the rest are outliers, mismatches or
# far background that the outer cascades cover anyway
POINTS_KEPT = 0.95
# sparse points trusted as depth observations: seen by at least this many images, with a
# mean reprojection error of at most this many pixels (full-size images)
DEPTH_MIN_TRACK = 3
DEPTH_MAX_ERROR = 2.0


def scene_points(folder: Path, ext: str, align: np.ndarray) -> Optional[ColmapPoints]:
    """The sparse points nearest their centroid (POINTS_KEPT of them), xyz in the aligned
    world; None when the model has no points3D file or no finite point."""
    path = folder / f"points3D.{ext}"
    if not path.is_file():
        return None
    pts = read_points_binary(path) if ext == "bin" else read_points_text(path)
    ok = np.all(np.isfinite(pts.xyz), axis=1)
    if not ok.any():
        return None
    xyz = pts.xyz[ok] @ align[:3, :3].T + align[:3, 3]
    d = np.linalg.norm(xyz - xyz.mean(0), axis=1)
    keep = d <= np.quantile(d, POINTS_KEPT)
    return ColmapPoints(pts.ids[ok][keep], xyz[keep], pts.error[ok][keep], pts.track[ok][keep])


def depth_observations(chosen: List[ColmapImage], c2w: np.ndarray, points: Optional[ColmapPoints],
                       downscale: int, sizes: List[Tuple[int, int]]) -> Optional[np.ndarray]:
    """Sparse depth (K, 4) float32 of the chosen images: image index, pixel x, pixel y (in the
    downscaled images, centres at +0.5) and distance (world units) from the camera centre to
    the trusted sparse point that pixel sees; None without points."""
    if points is None:
        return None
    good = (points.track >= DEPTH_MIN_TRACK) & (points.error <= DEPTH_MAX_ERROR)
    if not good.any():
        return None
    order = np.argsort(points.ids[good])
    ids, xyz = points.ids[good][order], points.xyz[good][order]
    rows = []
    for j, im in enumerate(chosen):
        k = np.clip(np.searchsorted(ids, im.point_ids), 0, len(ids) - 1)
        hit = ids[k] == im.point_ids
        w, h = sizes[j]
        xy = im.xys[hit]
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        dist = np.linalg.norm(xyz[k[hit]][inside] - c2w[j, :3, 3], axis=1)
        rows.append(np.column_stack([np.full(len(dist), j), xy[inside] / downscale, dist]))
    return np.concatenate(rows).astype(np.float32) if rows else None


def colmap_cameras(root: Path, split: str = "train", downscale: int = 1, holdout: int = 0) -> Cameras:
    """Cameras of a COLMAP model; images sorted by name; frames with index % holdout == 0 form val/test."""
    found = find_model(root)
    if found is None:
        raise DataError(root / "sparse" / "0", "no COLMAP model (cameras.bin or cameras.txt) found")
    folder, ext = found
    cam_path, img_path = folder / f"cameras.{ext}", folder / f"images.{ext}"
    if not img_path.is_file():
        raise DataError(img_path, "file not found (the COLMAP model needs it next to "
                                  f"{cam_path.name})")
    cams = read_cameras_binary(cam_path) if ext == "bin" else read_cameras_text(cam_path)
    images = read_images_binary(img_path) if ext == "bin" else read_images_text(img_path)
    if not images:
        raise DataError(img_path, "no registered images")
    images.sort(key=lambda im: im.name)

    c2w = []
    for im in images:
        if im.camera_id not in cams:
            raise DataError(img_path, f"image {im.name}: camera {im.camera_id} is not in {cam_path.name}")
        if not (np.all(np.isfinite(im.qvec)) and np.all(np.isfinite(im.tvec))
                and np.linalg.norm(im.qvec) > 0):
            raise DataError(img_path, f"image {im.name}: pose is not finite")
        c2w.append(colmap_to_c2w(im.qvec, im.tvec))
    align = up_alignment(np.stack(c2w))
    c2w = align @ np.stack(c2w)
    points = scene_points(folder, ext, align)
    scene = fit_scene(c2w, extra_points=None if points is None else points.xyz)

    sel = holdout_indices(len(images), split, holdout, img_path)
    chosen = [images[i] for i in sel]
    intr, dist = [], []
    for im in chosen:
        k, d = camera_intrinsics(cams[im.camera_id], cam_path, im.camera_id)
        if not (np.all(np.isfinite(k)) and np.all(np.isfinite(d))):
            raise DataError(cam_path, f"camera {im.camera_id}: parameters are not finite")
        intr.append(k)
        dist.append(d)
    paths = [root / "images" / im.name for im in chosen]
    sizes = [(cams[im.camera_id].width, cams[im.camera_id].height) for im in chosen]
    for path, size in zip(paths, sizes):
        if size != sizes[0]:
            raise DataError(path, f"is {size[0]}x{size[1]} in {cam_path.name} but "
                                  f"{paths[0].name} is {sizes[0][0]}x{sizes[0][1]}; all images "
                                  f"must have one size")
    check_downscale(paths[0], sizes[0], downscale)
    # the cameras file gives every image's size: decoding checks the files against it
    return Cameras(poses=c2w[sel], intrinsics=np.stack(intr) / downscale,
                   distortion=np.stack(dist), width=sizes[0][0] // downscale,
                   height=sizes[0][1] // downscale, scene=scene, files=paths,
                   decode_factor=downscale, expected_sizes=sizes, format="colmap",
                   depth_obs=depth_observations(chosen, c2w[sel], points, downscale, sizes))
