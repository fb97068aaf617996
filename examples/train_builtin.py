"""Train on the built-in procedural scene with the Python API (no CLI), then evaluate.

    python examples/train_builtin.py --out runs/builtin [--steps N | --time S] [--res R]
                                     [--arch cpu] [--quick]

The scene is rendered once by the project's own Taichi ray tracer into a cache
folder (nothing is downloaded), loaded as a Blender-format dataset, trained,
and evaluated on its test views. `--quick` is a smoke test: a few steps with a
small table, seconds on a CPU.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from taichi_nerf.nn import runtime
from taichi_nerf.data import builtin, load_dataset
from taichi_nerf.training.trainer import Trainer, run_training

from _training_args import add_training_args, training_config


def main(argv: Optional[List[str]] = None) -> dict:
    """Train and evaluate; returns the metrics dict written to RUN/metrics.json."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/builtin"))
    p.add_argument("--res", type=int, default=builtin.DEFAULT_RESOLUTION, help="image side, pixels")
    add_training_args(p)
    a = p.parse_args(argv)

    rt = runtime.init(a.arch, verbose=True)
    scene_dir = builtin.ensure_builtin_scene(a.res)  # cached after the first run
    train = load_dataset(scene_dir, "train")
    # evaluate in the training scene's frame (the transform is saved in the checkpoint)
    test = load_dataset(scene_dir, "test", scene=train.scene)
    cfg = training_config(a, default_time=150.0)  # the CLI's default budget
    metrics = run_training(Trainer(train, cfg), a.out, val=test, progress=not a.quick)
    print(f"{rt.arch}: {metrics['steps']} steps in {metrics['train_seconds']:.1f} s, "
          f"test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} -> {a.out}")
    return metrics


if __name__ == "__main__":
    main()
