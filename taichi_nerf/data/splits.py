"""Frame selection for formats without split files."""
from __future__ import annotations

import os

import numpy as np

from .errors import DataError

SPLITS = ("train", "val", "test", "all")


def holdout_indices(n: int, split: str, holdout: int, path: os.PathLike) -> np.ndarray:
    """Indices (M,) of the frames in ``split`` out of n; every ``holdout``-th frame (i % K == 0) is val/test.

    holdout=0: no frames are held out, so train, val and test are all n frames.
    ``path`` names the dataset in errors.
    """
    check_split(split, path)
    idx = np.arange(n)
    if holdout < 0:
        raise DataError(path, f"holdout must be >= 0, got {holdout}")
    if split == "all" or holdout == 0:
        sel = idx
    elif split == "train":
        sel = idx[idx % holdout != 0]
    else:
        sel = idx[idx % holdout == 0]
    if len(sel) == 0:
        raise DataError(path, f"split '{split}' is empty ({n} frames, holdout {holdout})")
    return sel


def check_split(split: str, path: os.PathLike) -> None:
    """Raise DataError unless ``split`` is one of train, val, test, all."""
    if split not in SPLITS:
        raise DataError(path, f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
