"""Blender / NeRF-synthetic format: ``transforms_{train,val,test}.json``."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from .dataset import Dataset
from .errors import DataError
from .splits import check_split
from .transforms import Frame, load_frames, parse_frames, read_json

BLENDER_SPLITS = ("train", "val", "test")
# NeRF-synthetic objects live in [-1.5, 1.5]^3: scale 1/3 and offset 0.5 map that onto [0, 1]^3.
BLENDER_SCALE = 1.0 / 3.0
BLENDER_OFFSET = (0.5, 0.5, 0.5)


def split_files(root: Path) -> List[str]:
    """Names of the splits whose ``transforms_<split>.json`` exists in ``root``."""
    return [s for s in BLENDER_SPLITS if (root / f"transforms_{s}.json").is_file()]


def load_blender(root: Path, split: str = "train", downscale: int = 1) -> Dataset:
    """Load one split (or "all": every split file present, in train, val, test order)."""
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
    images, intr, dist, poses = load_frames(frames, downscale)
    return Dataset(
        images=images, intrinsics=intr, distortion=dist, poses=poses,
        width=images.shape[2], height=images.shape[1],
        scene_scale=BLENDER_SCALE, scene_offset=np.array(BLENDER_OFFSET), aabb_scale=1,
        background=np.ones(3, np.float32), names=[str(f.image) for f in frames], format="blender")
