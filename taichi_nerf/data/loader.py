"""Format detection and the two entry points: ``load_cameras`` (metadata only) and
``load_dataset`` (those cameras plus their decoded images)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from .blender import blender_cameras, split_files
from .colmap import colmap_cameras, find_model
from .dataset import Cameras, Dataset
from .errors import DataError
from .images import load_images
from .llff import llff_cameras
from .ngp import ngp_cameras
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


def load_cameras(path: Union[str, os.PathLike], split: str = "train", downscale: int = 1,
                 holdout: int = 0,
                 scene: Optional[Union[SceneTransform, Mapping[str, Any]]] = None) -> Cameras:
    """The cameras of a dataset folder's split (format detected) -> Cameras, from the metadata
    alone: no image is decoded (a header is read where the metadata gives no size). The
    arguments are those of :func:`load_dataset`, and so are the poses, intrinsics and sizes."""
    root = Path(path)
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise DataError(root, f"downscale must be an integer >= 1, got {downscale!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0:
        raise DataError(root, f"holdout must be an integer >= 0, got {holdout!r}")
    fmt = detect_format(root)
    if fmt == "blender":
        cams = blender_cameras(root, split, downscale)  # has its own splits: no holdout
    elif fmt == "ngp":
        cams = ngp_cameras(root, split, downscale, holdout)
    elif fmt == "llff":
        cams = llff_cameras(root, split, downscale, holdout)
    else:
        cams = colmap_cameras(root, split, downscale, holdout)
    if scene is not None:
        if not isinstance(scene, SceneTransform):
            scene = SceneTransform.from_dict(scene)
        cams = dataclasses.replace(cams, scene=scene)
    return cams


def load_dataset(path: Union[str, os.PathLike], split: str = "train", downscale: int = 1,
                 holdout: int = 0,
                 scene: Optional[Union[SceneTransform, Mapping[str, Any]]] = None) -> Dataset:
    """Load a dataset folder (format detected) -> Dataset; see the package docstring for splits.

    ``scene`` (a SceneTransform or its ``to_dict()``), when given, replaces the
    loader's own scene transform, e.g. the one saved in a checkpoint.
    """
    cams = load_cameras(path, split, downscale, holdout, scene)
    pixels, _ = load_images(cams.files, cams.decode_factor, cams.expected_sizes)
    # NeRF-synthetic is evaluated on white; so are other formats' RGBA images (synthetic
    # scenes); photos have no background
    white = cams.format == "blender" or pixels.shape[3] == 4
    return Dataset(
        images=pixels, intrinsics=cams.intrinsics, distortion=cams.distortion, poses=cams.poses,
        width=cams.width, height=cams.height, scene_scale=cams.scene.scale,
        scene_offset=cams.scene.offset, aabb_scale=cams.scene.aabb_scale,
        background=np.ones(3, np.float32) if white else None,
        names=[str(f) for f in cams.files], format=cams.format, depth_obs=cams.depth_obs)
