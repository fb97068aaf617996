"""Train on an instant-ngp folder (one transforms.json) with the Python API (no CLI).

    python examples/train_ngp.py DATA --out runs/fox [--downscale 8] [--holdout 8]
                                 [--steps N | --time S] [--arch cpu] [--quick]

DATA holds transforms.json as instant-ngp's colmap2nerf.py writes it (global or
per-frame intrinsics, distortion, aabb_scale, scale/offset). The file has no
splits: every --holdout-th frame is kept back for validation. `--quick` is a
smoke test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from taichi_nerf.nn import runtime
from taichi_nerf.data import DataError, detect_format, load_dataset
from taichi_nerf.training.trainer import Trainer, run_training

from _training_args import add_training_args, training_config


def main(argv: Optional[List[str]] = None) -> dict:
    """Train and evaluate; returns the metrics dict written to RUN/metrics.json."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="instant-ngp dataset folder (transforms.json)")
    p.add_argument("--out", type=Path, default=Path("runs/ngp"))
    p.add_argument("--downscale", type=int, default=1, help="shrink images by this factor")
    p.add_argument("--holdout", type=int, default=8, help="validate on every K-th frame")
    add_training_args(p)
    a = p.parse_args(argv)

    try:
        if detect_format(a.data) != "ngp":
            sys.exit(f"{a.data}: not an instant-ngp dataset (no transforms.json)")
        rt = runtime.init(a.arch, verbose=True)
        train = load_dataset(a.data, "train", a.downscale, a.holdout)
        val = load_dataset(a.data, "val", a.downscale, a.holdout, scene=train.scene)
    except DataError as e:  # one clear line naming the file, never a traceback
        sys.exit(str(e))
    cfg = training_config(a, default_time=300.0)
    metrics = run_training(Trainer(train, cfg), a.out, val=val, progress=not a.quick)
    print(f"{rt.arch}: {metrics['steps']} steps in {metrics['train_seconds']:.1f} s, "
          f"aabb_scale {train.aabb_scale}, val PSNR {metrics['psnr']:.2f} dB, "
          f"SSIM {metrics['ssim']:.3f} -> {a.out}")
    return metrics


if __name__ == "__main__":
    main()
