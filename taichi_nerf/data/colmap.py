"""COLMAP format: ``sparse/0/{cameras,images}.{bin,txt}`` plus an ``images/`` folder.

World: COLMAP's world rotated so the cameras' mean up vector is +z (as
colmap2nerf does); cameras converted from OpenCV to OpenGL axes. The scene
transform comes from ``scene.fit_scene`` over all registered images, so every
split of a folder shares one world and one transform.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .dataset import Dataset
from .errors import DataError
from .colmap_model import (camera_intrinsics, qvec_to_rotmat, read_cameras_binary,
                           read_cameras_text, read_images_binary, read_images_text,
                           read_points_binary, read_points_text)
from .images import load_images
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
    rot = qvec_to_rotmat(qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T
    c2w[:3, 3] = -rot.T @ np.asarray(tvec, dtype=np.float64)
    return c2w @ OPENCV_TO_OPENGL


# share of the sparse points the model box must hold: the rest are outliers, mismatches or
# far background that the outer cascades cover anyway
POINTS_KEPT = 0.95


def scene_points(folder: Path, ext: str, align: np.ndarray) -> Optional[np.ndarray]:
    """The sparse points (P, 3) nearest the cameras' centroid (POINTS_KEPT of them), in the
    aligned world; None when the model has no points3D file."""
    path = folder / f"points3D.{ext}"
    if not path.is_file():
        return None
    pts = read_points_binary(path) if ext == "bin" else read_points_text(path)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        return None
    pts = pts @ align[:3, :3].T + align[:3, 3]
    d = np.linalg.norm(pts - pts.mean(0), axis=1)
    return pts[d <= np.quantile(d, POINTS_KEPT)]


def load_colmap(root: Path, split: str = "train", downscale: int = 1, holdout: int = 0) -> Dataset:
    """Load a COLMAP model; images sorted by name; frames with index % holdout == 0 form val/test."""
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
    scene = fit_scene(c2w, extra_points=scene_points(folder, ext, align))

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
    pixels, _ = load_images(paths, downscale, sizes)
    return Dataset(
        images=pixels, intrinsics=np.stack(intr) / downscale, distortion=np.stack(dist),
        poses=c2w[sel], width=pixels.shape[2], height=pixels.shape[1],
        scene_scale=scene.scale, scene_offset=scene.offset, aabb_scale=scene.aabb_scale,
        background=np.ones(3, np.float32) if pixels.shape[3] == 4 else None,
        names=[str(p) for p in paths], format="colmap")
