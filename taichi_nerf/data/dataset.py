"""The records the loaders return: Cameras (metadata only) and Dataset (cameras + pixels)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .scene import SceneTransform, to_model_space


@dataclass
class Dataset:
    """Posed images plus the world->model scene transform.

    images      float32 (N, H, W, C) sRGB in [0, 1]; C = 3, or 4 (straight alpha)
    intrinsics  float32 (N, 4) fx, fy, cx, cy in pixels of ``images`` (pixel centres at +0.5)
    distortion  float32 (N, 4) OpenCV k1, k2, p1, p2 (zeros when none)
    poses       float32 (N, 4, 4) camera-to-world, OpenGL axes (x right, y up, looking down -z)
    model_pos = world_pos * scene_scale + scene_offset; the model box is the cube
    of side aabb_scale centred at 0.5, with [0, 1]^3 the core region.
    background  float32 (3,) colour to composite RGBA images on for evaluation, or None
    near        near plane in model units
    depth_obs   float32 (K, 4) or None: sparse depth observations (structure from motion's
                points), each image index, pixel x, pixel y (pixels of ``images``) and the
                distance from that camera's centre to the point seen there, in world units
    """

    images: np.ndarray
    intrinsics: np.ndarray
    distortion: np.ndarray
    poses: np.ndarray
    width: int
    height: int
    scene_scale: float
    scene_offset: np.ndarray
    aabb_scale: int = 1
    background: Optional[np.ndarray] = None
    near: float = 0.0
    names: List[str] = field(default_factory=list)
    format: str = ""
    depth_obs: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        n = self.images.shape[0]
        self.intrinsics = np.asarray(self.intrinsics, dtype=np.float32).reshape(n, 4)
        self.distortion = np.asarray(self.distortion, dtype=np.float32).reshape(n, 4)
        self.poses = np.asarray(self.poses, dtype=np.float32).reshape(n, 4, 4)
        self.scene_offset = np.asarray(self.scene_offset, dtype=np.float32).reshape(3)
        self.scene_scale = float(self.scene_scale)
        self.width, self.height, self.aabb_scale = int(self.width), int(self.height), int(self.aabb_scale)
        if self.background is not None:
            self.background = np.asarray(self.background, dtype=np.float32).reshape(3)
        if self.images.ndim != 4 or self.images.shape[1:3] != (self.height, self.width) \
                or self.images.shape[3] not in (3, 4):
            raise ValueError(f"images {self.images.shape} do not match (N, {self.height}, "
                             f"{self.width}, 3|4)")
        if self.depth_obs is not None:
            self.depth_obs = np.asarray(self.depth_obs, dtype=np.float32).reshape(-1, 4)
            idx = self.depth_obs[:, 0]
            if not (np.all(np.isfinite(self.depth_obs)) and np.all((idx >= 0) & (idx < n))
                    and np.all(self.depth_obs[:, 3] > 0)):
                raise ValueError("depth_obs must be finite rows (image index < N, x, y, distance > 0)")
        if len(self.names) not in (0, n):
            raise ValueError(f"{len(self.names)} names for {n} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def scene(self) -> SceneTransform:
        """The scene transform (scale, offset, aabb_scale), e.g. to save in a checkpoint."""
        return SceneTransform(self.scene_scale, self.scene_offset, self.aabb_scale)

    @property
    def has_alpha(self) -> bool:
        """True when images carry an alpha channel (C == 4)."""
        return self.images.shape[3] == 4

    def transform_poses(self, poses: Optional[np.ndarray] = None) -> np.ndarray:
        """World camera-to-world (..., 4, 4) -> model space (rotation kept); defaults to ``self.poses``."""
        return to_model_space(self.poses if poses is None else poses, self.scene_scale, self.scene_offset)


@dataclass
class Cameras:
    """A dataset split's cameras, read from its metadata without decoding an image: what every
    format's loader produces first and ``load_dataset`` turns into a :class:`Dataset`.

    poses, intrinsics, distortion, width, height, depth_obs, format: as in :class:`Dataset`
                    (intrinsics and sizes of the images downscaled by the requested factor)
    scene           the world -> model transform (Dataset's scene_scale, scene_offset, aabb_scale)
    files           image file of each camera, in order
    decode_factor   area-downscale factor to apply while decoding ``files`` (1 where the
                    format keeps pre-shrunk copies, as LLFF's images_K)
    expected_sizes  per file, the (w, h) the metadata claims (either may be None), or None
    """

    poses: np.ndarray
    intrinsics: np.ndarray
    distortion: np.ndarray
    width: int
    height: int
    scene: SceneTransform
    files: List[Path]
    decode_factor: int = 1
    expected_sizes: Optional[List[Optional[Tuple[Optional[int], Optional[int]]]]] = None
    format: str = ""
    depth_obs: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.files = [Path(f) for f in self.files]
        n = len(self.files)
        self.intrinsics = np.asarray(self.intrinsics, dtype=np.float32).reshape(n, 4)
        self.distortion = np.asarray(self.distortion, dtype=np.float32).reshape(n, 4)
        self.poses = np.asarray(self.poses, dtype=np.float32).reshape(n, 4, 4)
        self.width, self.height = int(self.width), int(self.height)

    def __len__(self) -> int:
        return len(self.files)
