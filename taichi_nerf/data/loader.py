"""Format detection and the one entry point, ``load_dataset``."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .blender import load_blender, split_files
from .colmap import find_model, load_colmap
from .dataset import Dataset
from .errors import DataError
from .llff import load_llff
from .ngp import load_ngp
from .scene import SceneTransform

FORMATS = ("blender", "ngp", "llff", "colmap")
EXPECTED_FILES = ("transforms_{train,val,test}.json (Blender), transforms.json (instant-ngp), "
                  "poses_bounds.npy (LLFF) or sparse/0/cameras.{bin,txt} (COLMAP)")


def detect_format(path: Union[str, os.PathLike]) -> str:
    """One of FORMATS for a dataset folder; checked in that order, the first match wins."""
    root = Path(path)
    if not root.exists():
        raise DataError(root, "dataset folder not found")
    if not root.is_dir():
        raise DataError(root, "not a folder (expected a dataset folder)")
    if split_files(root):
        return "blender"
    if (root / "transforms.json").is_file():
        return "ngp"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    if find_model(root) is not None:
        return "colmap"
    raise DataError(root, f"unknown dataset format: expected {EXPECTED_FILES}")


def load_dataset(path: Union[str, os.PathLike], split: str = "train", downscale: int = 1,
                 holdout: int = 0,
                 scene: Optional[Union[SceneTransform, Mapping[str, Any]]] = None) -> Dataset:
    """Load a dataset folder (format detected) -> Dataset; see the package docstring for splits.

    ``scene`` (a SceneTransform or its ``to_dict()``), when given, replaces the
    loader's own scene transform, e.g. the one saved in a checkpoint.
    """
    root = Path(path)
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise DataError(root, f"downscale must be an integer >= 1, got {downscale!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0:
        raise DataError(root, f"holdout must be an integer >= 0, got {holdout!r}")
    fmt = detect_format(root)
    if fmt == "blender":
        ds = load_blender(root, split, downscale)  # has its own splits: holdout does not apply
    elif fmt == "ngp":
        ds = load_ngp(root, split, downscale, holdout)
    elif fmt == "llff":
        ds = load_llff(root, split, downscale, holdout)
    else:
        ds = load_colmap(root, split, downscale, holdout)
    if scene is not None:
        if not isinstance(scene, SceneTransform):
            scene = SceneTransform.from_dict(scene)
        ds = dataclasses.replace(ds, scene_scale=scene.scale, scene_offset=scene.offset,
                                 aabb_scale=scene.aabb_scale)
    return ds
