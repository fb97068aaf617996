"""`taichi-nerf render`: a camera path (orbit, dataset tour, DATA cameras, JSON file) to PNGs or video."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from taichi_nerf.data.scene import SceneTransform, to_model_space
from taichi_nerf.kernels.specs import checkpoint_path
from taichi_nerf.nn.renderer import Renderer

VIDEO_SUFFIXES = (".gif", ".mp4")


class RenderError(ValueError):
    """A render cannot be made as asked (bad options, unwritable output); one line."""


def to_image(mode: str, out: Dict[str, torch.Tensor]) -> np.ndarray:
    """Rendered view -> uint8 image (H,W,3) for rgb, (H,W) for depth (near=bright) and opacity."""
    if mode == "rgb":
        img = out["rgb"].clamp(0, 1).cpu().numpy()
    elif mode == "opacity":
        img = out["opacity"].clamp(0, 1).cpu().numpy()
    else:
        depth, alpha = out["depth"].cpu().numpy(), out["opacity"].cpu().numpy()
        # depth is the weighted sum of t: divide by opacity for the surface distance
        d = np.where(alpha > 0.5, depth / np.maximum(alpha, 1e-6), np.nan)
        if np.isfinite(d).any():
            lo, hi = np.nanpercentile(d, 1), np.nanpercentile(d, 99)
            img = np.where(np.isfinite(d), 1 - (d - lo) / max(hi - lo, 1e-6), 0).clip(0, 1)
        else:
            img = np.zeros_like(depth)
    return (img * 255 + 0.5).astype(np.uint8)


def render_frames(a: argparse.Namespace, cfg: Dict[str, Any], renderer: Renderer,
                  scene: SceneTransform) -> None:
    """Render the requested path (orbit, dataset, DATA or FILE.json) and write frames or a video to a.out."""
    from tqdm import tqdm

    from taichi_nerf.render.camera_paths import check_path_options, is_camera_path_file, \
        resolve_path

    check_path_options(a.frames, a.elevation, a.width, a.height, a.radius)
    if a.fps <= 0:
        raise RenderError(f"--fps must be > 0, got {a.fps}")
    check_video_destination(a.out)  # fail before rendering, not after
    keyword = a.path in ("orbit", "dataset") or is_camera_path_file(a.path)
    if not keyword and (a.width or a.height):
        raise RenderError("--width/--height apply to orbit, dataset and camera-path-file paths; a "
                          "dataset folder renders at the dataset's own camera sizes")
    ckpt = Path(checkpoint_path(a.run))
    path = resolve_path(a.path, cfg, ckpt, a.frames, a.elevation, a.split, a.width, a.height,
                        a.radius, holdout=a.holdout)
    sizes = sorted({(int(w), int(h)) for w, h in zip(path.widths, path.heights)})
    if a.out.suffix.lower() in VIDEO_SUFFIXES and len(sizes) > 1:
        raise RenderError(f"{a.path}: frames have different sizes {sizes[:3]}; a video needs one "
                          f"size (give --width and --height, or write a folder of PNGs)")
    model = to_model_space(path.poses, scene.scale, scene.offset)
    bg = cfg.get("background") or [0.0, 0.0, 0.0]
    device = renderer.grid.device
    bg_t = torch.tensor(bg, dtype=torch.float32, device=device)
    frames = []
    for i in tqdm(range(len(model)), desc="render", disable=a.quiet):
        out = renderer.render_image(torch.from_numpy(np.ascontiguousarray(model[i])).to(device),
                                    torch.from_numpy(path.intrinsics[i]).to(device),
                                    torch.from_numpy(path.distortion[i]).to(device),
                                    int(path.widths[i]), int(path.heights[i]), bg_t)
        frames.append(to_image(a.mode, out))
    write_frames(a.out, frames, a.fps)
    if not a.quiet:
        size = "x".join(map(str, sizes[0])) if len(sizes) == 1 else "mixed sizes"
        print(f"wrote {len(frames)} {a.mode} frames ({size}) to {a.out}")


def check_video_destination(out: Path) -> None:
    """RenderError unless a .gif/.mp4 `out` can be created (imageio would fail late and noisily)."""
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        return
    if not out.parent.is_dir():
        raise RenderError(f"{out}: cannot write video, {out.parent} is not an existing folder")
    if out.is_dir():
        raise RenderError(f"{out}: cannot write video, a folder has this name")


def write_frames(out: Path, frames, fps: int) -> None:
    """PNG files in a folder, or one .gif/.mp4 file (by suffix)."""
    import imageio.v3 as iio

    if out.suffix.lower() in VIDEO_SUFFIXES:
        check_video_destination(out)
        try:
            if out.suffix.lower() == ".gif":
                iio.imwrite(out, np.stack(frames), duration=1000 / fps, loop=0)
            else:
                iio.imwrite(out, np.stack(frames), fps=fps, codec="libx264")
        except (ImportError, ValueError, OSError) as e:
            raise RenderError(f"{out}: cannot write video ({str(e).splitlines()[0]}); for .mp4 "
                              f"install imageio-ffmpeg, or write .gif or a folder of PNGs") \
                from None
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            iio.imwrite(out / f"frame_{i:04d}.png", f)
    except OSError as e:
        raise RenderError(f"{out}: cannot write frames ({e.strerror or e})") from None
