"""LLFF format: ``poses_bounds.npy`` plus ``images/`` (or pre-shrunk ``images_K/``).

Each row holds a 3x5 matrix [R | t | (h, w, focal)] whose rotation columns are
LLFF's camera axes (down, right, back), then the near and far depth bounds.
World: LLFF's world rotated so the mean camera up is +z, as for COLMAP. The
scene transform comes from ``scene.fit_scene`` over all frames with the median
mid-depth as the look-at depth (forward-facing captures have nearly parallel
axes) and each camera's far-bound point required to fit in the model box.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from .dataset import Cameras
from .errors import DataError
from .images import IMAGE_EXTENSIONS, check_downscale, image_size
from .scene import fit_scene, up_alignment
from .splits import holdout_indices


def list_images(folder: Path) -> List[Path]:
    """Image files directly in ``folder``, sorted by name (LLFF's frame order)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def llff_to_c2w(rows: np.ndarray) -> np.ndarray:
    """LLFF 3x4 [down, right, back | t] (N, 3, 4) -> camera-to-world (N, 4, 4), OpenGL axes."""
    c2w = np.tile(np.eye(4), (len(rows), 1, 1))
    c2w[:, :3, 0] = rows[:, :, 1]   # right
    c2w[:, :3, 1] = -rows[:, :, 0]  # up = -down
    c2w[:, :3, 2] = rows[:, :, 2]   # back
    c2w[:, :3, 3] = rows[:, :, 3]
    return c2w


def llff_cameras(root: Path, split: str = "train", downscale: int = 1, holdout: int = 0) -> Cameras:
    """Cameras of an LLFF scene; frames with index % holdout == 0 form val/test (holdout 0: all)."""
    path = root / "poses_bounds.npy"
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read: {e}") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
        raise DataError(path, f"expected an (N, 17) array, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    bad = np.where(~np.all(np.isfinite(arr), axis=1))[0]
    if len(bad):
        raise DataError(path, f"frame {bad[0]}: pose or bounds not finite")
    mats = arr[:, :15].reshape(-1, 3, 5)
    hwf, bounds = mats[:, :, 4], arr[:, 15:17]

    full = root / "images"
    if not full.is_dir():
        raise DataError(full, "image folder not found")
    # Pre-shrunk images_K (LLFF's own resizes) skip decoding full-size photos.
    small = root / f"images_{downscale}"
    folder, k = full, downscale
    if downscale > 1 and small.is_dir() and len(list_images(small)) == len(arr):
        folder, k = small, 1
    files = list_images(folder)
    if len(files) != len(arr):
        raise DataError(path, f"has {len(arr)} poses but {folder} holds {len(files)} images")

    c2w = llff_to_c2w(mats[:, :, :4])
    c2w = up_alignment(c2w) @ c2w
    dirs = -c2w[:, :3, 2]
    far_points = c2w[:, :3, 3] + dirs * bounds[:, 1:2]
    scene = fit_scene(c2w, depth_hint=float(np.median(bounds.mean(axis=1))), extra_points=far_points)

    sel = holdout_indices(len(arr), split, holdout, path)
    # the size from the first chosen image's header: decoding checks the others against it
    w0, h0 = image_size(files[sel[0]])
    check_downscale(files[sel[0]], (w0, h0), k)
    # hwf describes the full-size photos; rescale focal to the size actually read.
    ratio_w, ratio_h = w0 / hwf[sel, 1], h0 / hwf[sel, 0]
    if np.any(np.abs(ratio_w - ratio_h) > 0.01 * ratio_w):
        raise DataError(files[sel[0]], f"image is {w0}x{h0}, which does not match the aspect of "
                                       f"h, w = {hwf[sel[0], 0]:g}, {hwf[sel[0], 1]:g} in {path.name}")
    f = hwf[sel, 2] * ratio_w / k
    intr = np.stack([f, f, np.full_like(f, w0 / 2 / k), np.full_like(f, h0 / 2 / k)], axis=1)
    return Cameras(poses=c2w[sel], intrinsics=intr, distortion=np.zeros((len(sel), 4)),
                   width=w0 // k, height=h0 // k, scene=scene,
                   files=[files[i] for i in sel], decode_factor=k, format="llff")
