"""What the train_*.py examples share: budget and smoke-test arguments -> a TrainConfig.

Only the arguments are shared: each script keeps its own load / train / evaluate lines,
alike as they are, since those API calls are what a reader opens the example to see.
"""
from __future__ import annotations

import argparse

from taichi_nerf.nn import runtime
from taichi_nerf.training.trainer import TrainConfig

# --quick: a few steps with a small table and grid, seconds on a CPU
QUICK = dict(steps=20, target_samples=1 << 13, log2_table=15, occ_resolution=64,
             occ_cells_per_update=1 << 16, occ_warmup_steps=8)


def add_training_args(p: argparse.ArgumentParser) -> None:
    """--steps | --time budget, --arch, --seed, --quick."""
    p.add_argument("--steps", type=int, default=None, help="training steps")
    p.add_argument("--time", type=float, default=None, help="or a wall-clock budget in seconds")
    p.add_argument("--arch", default="auto", choices=runtime.ARCHS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few steps, small settings (smoke test)")


def training_config(a: argparse.Namespace, default_time: float) -> TrainConfig:
    """TrainConfig from the parsed arguments; neither --steps nor --time: `default_time` s."""
    settings = dict(QUICK) if a.quick else {}
    if a.steps is not None:
        settings["steps"] = a.steps
    if a.time is not None:
        settings.pop("steps", None)
        settings["time"] = a.time
    if "steps" not in settings and "time" not in settings:
        settings["time"] = default_time
    return TrainConfig(seed=a.seed, **settings)
