"""Training benchmark (BENCHMARKS.md section 2): a timed run on a scene, then held-out metrics."""
from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

from taichi_nerf.bench.common import machine_info


def run_training_benchmark(data: Optional[str] = None, time_budget: float = 60.0,
                           downscale: int = 1, holdout: int = 8,
                           out_dir: Optional[Path] = None, progress: bool = True) -> Dict[str, Any]:
    """Train on `data` (default: built-in scene) for `time_budget` s; return speed and quality figures."""
    from taichi_nerf.nn import runtime
    from taichi_nerf.data import detect_format, load_dataset
    from taichi_nerf.data.builtin import ensure_builtin_scene
    from taichi_nerf.training.trainer import TrainConfig, Trainer, run_training

    rt = runtime.current()
    root = Path(data) if data else ensure_builtin_scene(progress=progress)
    fmt = detect_format(root)
    train = load_dataset(root, "train", downscale, holdout)
    split = "test" if data is None else "val"
    val = load_dataset(root, split, downscale, holdout, scene=train.scene)
    from taichi_nerf.training.config import settings_for
    trainer = Trainer(train, TrainConfig(time=time_budget, **settings_for(rt.arch, {})))
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="taichi-nerf-bench-"))
    t0 = time.perf_counter()
    m = run_training(trainer, out, val=val, progress=progress)
    wall = time.perf_counter() - t0
    return {
        "machine": machine_info(rt.arch), "data": str(root), "format": fmt,
        "downscale": downscale, "time_budget": time_budget, "wall_seconds": wall,
        "image_size": [train.width, train.height], "train_views": len(train),
        "eval_split": split, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **{k: v for k, v in m.items() if k != "history"},
    }


def format_training_markdown(r: Dict[str, Any]) -> str:
    """Markdown table row block for BENCHMARKS.md."""
    mach = r["machine"]
    return "\n".join([
        f"### Training: {Path(r['data']).name} ({r['image_size'][0]}x{r['image_size'][1]}, "
        f"{r['train_views']} views), --time {r['time_budget']:g}",
        f"Machine: {mach.get('cpu_model')}, {mach.get('cpu_count')} cores, arch {mach.get('arch')}, "
        f"commit {mach.get('commit')}, {mach.get('date')}",
        "",
        "| steps | rays/s | samples/s | samples/ray | occupied per cascade | PSNR | SSIM | "
        "eval split | s/view | peak RSS |",
        "|---:|---:|---:|---:|---|---:|---:|---|---:|---:|",
        f"| {r['steps']} | {r['rays_per_second']:.0f} | {r['samples_per_second']:.0f} | "
        f"{r['mean_samples_per_ray']:.1f} | "
        f"{' / '.join(f'{100 * v:.1f}%' for v in r['occupied_per_cascade'])} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
        f"{r['eval_split']} ({r['views']} views) | {r['seconds_per_view']:.2f} | "
        f"{r['peak_rss_mib']:.0f} MiB |",
        "",
    ])
