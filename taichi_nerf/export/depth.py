"""Depth maps from a trained run: per view, the distance along each pixel's ray from the camera centre to
the surface in world units (rendered depth / opacity / scale), unknown where
the opacity is below 0.5.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from taichi_nerf.atomic import atomic_write_json
from taichi_nerf.data.scene import SceneTransform, to_model_space
from taichi_nerf.export.errors import ExportError
from taichi_nerf.render.camera_paths import CameraPath

MIN_OPACITY = 0.5            # depth is unknown where a pixel is less opaque than this
DEPTH_UNITS_PER_COUNT = 1e-3  # png16 default: 1 count = 1/1000 world unit (millimetres for metres)


@torch.no_grad()
def render_depth(renderer, scene: SceneTransform, path: CameraPath, progress: bool = False,
                 min_opacity: float = MIN_OPACITY) -> List[np.ndarray]:
    """Per camera of `path` (world units): depth (H,W) float32 along each pixel ray from the camera
    centre in world units, NaN where the opacity is below min_opacity."""
    from tqdm import tqdm

    device = renderer.grid.device
    model = to_model_space(path.poses, scene.scale, scene.offset)
    bg = torch.zeros(3, device=device)
    out = []
    for i in tqdm(range(len(path)), desc="depth", disable=not progress, leave=False):
        r = renderer.render_image(torch.from_numpy(np.ascontiguousarray(model[i])).to(device),
                                  torch.from_numpy(path.intrinsics[i]).to(device),
                                  torch.from_numpy(path.distortion[i]).to(device),
                                  int(path.widths[i]), int(path.heights[i]), bg)
        alpha = r["opacity"].cpu().numpy()
        d = r["depth"].cpu().numpy() / np.maximum(alpha, 1e-6) / scene.scale
        out.append(np.where(alpha >= min_opacity, d, np.nan).astype(np.float32))
    return out


def depth_units_per_count(depths: List[np.ndarray]) -> float:
    """png16 scale (world units per count): 1e-3, or the smallest 1/2/5 x 10^k that fits the largest depth."""
    finite = [float(np.nanmax(d)) for d in depths if np.isfinite(d).any()]
    top = max(finite) if finite else 0.0
    scale = DEPTH_UNITS_PER_COUNT
    while top / scale > 65535:
        for m in (2.0, 2.5, 2.0):  # 1 -> 2 -> 5 -> 10
            scale *= m
            if top / scale <= 65535:
                break
    return scale


def write_depth(out_dir: Union[str, os.PathLike], depths: List[np.ndarray], path: CameraPath,
                fmt: str = "png16") -> Dict[str, Any]:
    """Write depth_NNNN.png (uint16, 0 = unknown, depth = count * units_per_count) or depth_NNNN.npy
    (float32, NaN = unknown), plus cameras.json (the camera path) and depth_scale.json -> its content."""
    import imageio.v3 as iio

    from taichi_nerf.render.camera_paths import save_camera_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    meta: Dict[str, Any] = {
        "depth": "distance along each pixel's ray from the camera centre, world units",
        "cameras": "cameras.json", "format": fmt, "min_opacity": MIN_OPACITY}
    if fmt == "png16":
        scale = depth_units_per_count(depths)
        meta.update(units_per_count=scale, invalid_value=0,
                    note="depth = value * units_per_count; value 0 = no surface")
        for i, d in enumerate(depths):
            counts = np.where(np.isfinite(d), np.clip(np.round(np.nan_to_num(d) / scale), 1,
                                                      65535), 0).astype(np.uint16)
            names.append(f"depth_{i:04d}.png")
            iio.imwrite(out / names[-1], counts)
    elif fmt == "npy":
        meta.update(units_per_count=None, invalid_value="NaN",
                    note="float32 depth in world units; NaN = no surface")
        for i, d in enumerate(depths):
            names.append(f"depth_{i:04d}.npy")
            np.save(out / names[-1], d.astype(np.float32))
    else:
        raise ExportError(f"unknown depth format {fmt!r} (png16 or npy)")
    meta["frames"] = names
    save_camera_path(out / "cameras.json", path)
    # written last and atomically: a complete depth_scale.json means every frame it names is there
    atomic_write_json(out / "depth_scale.json", meta, indent=1)
    return meta


def read_depth(out_dir: Union[str, os.PathLike], index: int) -> np.ndarray:
    """Depth (H,W) float32 world units (NaN = unknown) of frame `index` written by :func:`write_depth`."""
    import imageio.v3 as iio

    out = Path(out_dir)
    meta = json.loads((out / "depth_scale.json").read_text())
    name = meta["frames"][index]
    if name.endswith(".npy"):
        return np.load(out / name)
    counts = iio.imread(out / name).astype(np.float64)
    return np.where(counts > 0, counts * meta["units_per_count"], np.nan).astype(np.float32)


