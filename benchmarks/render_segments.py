"""Rendering benchmark (BENCHMARKS.md section 3b): one frame walked whole vs in segments.

    python benchmarks/render_segments.py RUN [--size 256] [--views 4] [--repeats 2]

Renders `--views` orbit views of a trained run on the cpu three ways and reports the median
frame time, the field evaluations per frame and the largest colour difference from the
whole walk: the whole walk (every sample of every ray, then compositing: the renderer
before segments), segments at the training's early termination (what eval, render and
export use) and segments at the preview's (the viewer).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np


def measure(run: Path, size: int = 256, views: int = 4, repeats: int = 2) -> List[Dict]:
    """Rows (mode, frame_ms, samples_per_frame, max_abs_diff) for `views` orbit views of RUN."""
    import torch

    from taichi_nerf.kernels.specs import PREVIEW_T_THRESHOLD, T_THRESHOLD, checkpoint_path
    from taichi_nerf.nn import runtime
    from taichi_nerf.nn.cameras import generate_rays, pixel_grid
    from taichi_nerf.render.camera_paths import orbit_poses
    from taichi_nerf.training.trainer import load_model

    runtime.init("cpu")
    _, renderer, _ = load_model(checkpoint_path(run))
    lo, hi = renderer.grid.spec.aabb
    centre = 0.5 * (np.asarray(lo, np.float64) + np.asarray(hi, np.float64))
    # a camera outside the unit model box looking at its centre, as a viewer's orbit does
    poses = orbit_poses(views, 1.3, 30.0, centre, np.array([0.0, 0.0, 1.0]))
    pix = pixel_grid(size, size)
    K = torch.tensor([[1.1 * size, 1.1 * size, size / 2, size / 2]], dtype=torch.float32)
    bg = torch.ones(pix.shape[0], 3)
    rays = [generate_rays(pix, torch.zeros(pix.shape[0], dtype=torch.int32), K, torch.zeros(1, 4),
                          torch.from_numpy(np.ascontiguousarray(p[None, :3], np.float32)))
            for p in poses]

    def whole(o, d):
        with torch.no_grad():
            r = renderer.render_rays(o, d, bg[:o.shape[0]])
        return r["rgb"], r["n_samples"]

    def segments(threshold):
        def f(o, d):
            r = renderer.render_rays_segmented(o, d, bg[:o.shape[0]], threshold)
            return r["rgb"], r["n_samples"]
        return f

    modes = [("whole walk", whole), ("segments, T < 1e-4", segments(T_THRESHOLD)),
             (f"segments, T < {PREVIEW_T_THRESHOLD:g} (preview)", segments(PREVIEW_T_THRESHOLD))]
    refs = [whole(o, d)[0] for o, d in rays]  # also compiles every kernel before timing
    for _, f in modes[1:]:
        f(*rays[0])
    rows = []
    for name, f in modes:
        times, samples, diffs = [], [], []
        for _ in range(repeats):
            for (o, d), ref in zip(rays, refs):
                t0 = time.perf_counter()
                rgb, n = f(o, d)
                times.append(time.perf_counter() - t0)
                samples.append(n)
                diffs.append(float((rgb - ref).abs().max()))
        rows.append({"mode": name, "frame_ms": 1e3 * float(np.median(times)),
                     "samples_per_frame": float(np.mean(samples)),
                     "max_abs_diff": max(diffs)})
    return rows


def format_markdown(rows: List[Dict], size: int) -> str:
    """Markdown table of :func:`measure`'s rows, with the speed-up over the first."""
    out = [f"| mode ({size}x{size}) | frame ms | frames/s | field samples per frame | "
           "speed-up | max colour difference |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['mode']} | {r['frame_ms']:.0f} | {1e3 / r['frame_ms']:.2f} | "
                   f"{r['samples_per_frame'] / 1e3:.0f} k | "
                   f"{rows[0]['frame_ms'] / r['frame_ms']:.2f}x | {r['max_abs_diff']:.1e} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    """Command line: print the markdown table."""
    ap = argparse.ArgumentParser(prog="python benchmarks/render_segments.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a folder written by `taichi-nerf train --out`")
    ap.add_argument("--size", type=int, default=256, help="frame width and height in pixels")
    ap.add_argument("--views", type=int, default=4, help="orbit views per repeat")
    ap.add_argument("--repeats", type=int, default=2, help="passes over the views")
    a = ap.parse_args(argv)
    if a.size < 8 or a.views < 1 or a.repeats < 1:
        ap.error("--size must be >= 8, --views and --repeats >= 1")
    print(format_markdown(measure(a.run, a.size, a.views, a.repeats), a.size))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
