"""Viewer benchmark (issue: preview frames/s): static full-resolution and moving frames."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np


def run_viewer_benchmark(run: Path, arch: str, sizes=(256, 512), frames: int = 20,
                         target_fps: float = 15.0) -> List[Dict[str, Any]]:
    """Frames/s of the headless viewer on `run`: camera moving (dynamic resolution) and static."""
    from taichi_nerf.nn import runtime
    from taichi_nerf.viewer.app import viewer_for_run

    runtime.init(arch)
    rows = []
    for size in sizes:
        v = viewer_for_run(Path(run), arch, headless=True, width=size, height=size)
        v.target_fps = target_fps
        v.open()
        try:
            v.frame()  # compile + first full frame
            t0 = time.perf_counter()
            for _ in range(max(2, frames // 5)):
                v.image = v.render_frame(moving=False)
                v.frame()
            static = (time.perf_counter() - t0) / max(2, frames // 5)
            times = []
            for _ in range(frames):
                v.camera.orbit(3.0, 0.0)
                t = time.perf_counter()
                v.image = v.render_frame(moving=True)
                v.canvas.set_image(np.ascontiguousarray(v.image[::-1].transpose(1, 0, 2)))
                times.append(time.perf_counter() - t)
            moving = float(np.median(times[frames // 2:]))  # after the scale settled
            rows.append({"arch": arch, "size": size, "static_fps": 1.0 / static,
                         "moving_fps": 1.0 / moving, "moving_scale": v.res_scale,
                         "backend": type(v.preview).__name__})
        finally:
            v.close()
    return rows


def format_viewer_markdown(rows: List[Dict[str, Any]], run: str) -> str:
    """Markdown table for BENCHMARKS.md."""
    out = [f"Run: `{run}`", "",
           "| arch | preview backend | size | static full-res frames/s | moving frames/s "
           "(dynamic res) | render scale while moving |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['arch']} | {r['backend']} | {r['size']}x{r['size']} | "
                   f"{r['static_fps']:.2f} | {r['moving_fps']:.1f} | {r['moving_scale']:.2f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys
    run_dir, archs = sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 else ["cpu"]
    rows = []
    for a in archs:
        rows += run_viewer_benchmark(Path(run_dir), a, frames=20 if a == "cpu" else 6)
    print(format_viewer_markdown(rows, run_dir))
