"""Train on a Blender / NeRF-synthetic folder with the Python API (no CLI), then evaluate.

    python examples/train_blender.py DATA --out runs/lego [--downscale 4] [--steps N | --time S]
                                     [--arch cpu] [--quick]

DATA holds transforms_{train,val,test}.json and the images they name (e.g.
NeRF-synthetic's lego). Evaluation uses the val split on the dataset's
background (white for NeRF-synthetic). `--quick` is a smoke test.
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
    p.add_argument("data", type=Path, help="Blender-format dataset folder")
    p.add_argument("--out", type=Path, default=Path("runs/blender"))
    p.add_argument("--downscale", type=int, default=1, help="shrink images by this factor")
    add_training_args(p)
    a = p.parse_args(argv)

    try:
        if detect_format(a.data) != "blender":
            sys.exit(f"{a.data}: not a Blender dataset (no transforms_{{train,val,test}}.json)")
        rt = runtime.init(a.arch, verbose=True)
        train = load_dataset(a.data, "train", a.downscale)
        val = load_dataset(a.data, "val", a.downscale, scene=train.scene)
    except DataError as e:  # one clear line naming the file, never a traceback
        sys.exit(str(e))
    cfg = training_config(a, default_time=300.0)
    metrics = run_training(Trainer(train, cfg), a.out, val=val, progress=not a.quick)
    print(f"{rt.arch}: {metrics['steps']} steps in {metrics['train_seconds']:.1f} s, "
          f"val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} -> {a.out}")
    return metrics


if __name__ == "__main__":
    main()
