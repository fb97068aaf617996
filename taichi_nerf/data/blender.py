"""Blender / NeRF-synthetic format: ``transforms_{train,val,test}.json``."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from .dataset import Cameras
from .errors import DataError
from .splits import check_split
from .scene import SceneTransform
from .transforms import Frame, frames_cameras, parse_frames, read_json

BLENDER_SPLITS = ("train", "val", "test")
# NeRF-synthetic objects live in [-1.5, 1.5]^3: scale 1/3 and offset 0.5 map that onto [0, 1]^3.
BLENDER_SCALE = 1.0 / 3.0
BLENDER_OFFSET = (0.5, 0.5, 0.5)


def split_files(root: Path) -> List[str]:
    """Names of the splits whose ``transforms_<split>.json`` exists in ``root``."""
    return [s for s in BLENDER_SPLITS if (root / f"transforms_{s}.json").is_file()]


def blender_cameras(root: Path, split: str = "train", downscale: int = 1) -> Cameras:
    """Cameras of one split (or "all": every split file present, in train, val, test order)."""
    check_split(split, root)
    present = split_files(root)
    if split == "all":
        wanted = present
    elif split in present:
        wanted = [split]
    else:
        raise DataError(root / f"transforms_{split}.json",
                        f"split file not found (splits present: {', '.join(present) or 'none'})")
    frames: List[Frame] = []
    for s in wanted:
        path = root / f"transforms_{s}.json"
        parsed = parse_frames(read_json(path), path)
        if not parsed:
            raise DataError(path, f"split '{s}' has no frames")
        frames += parsed
    scene = SceneTransform(BLENDER_SCALE, np.array(BLENDER_OFFSET), aabb_scale=1)
    return frames_cameras(frames, downscale, scene, "blender")
