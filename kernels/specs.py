"""Small spec dataclasses shared by the Taichi kernels and the torch side."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Tuple, Union

# instant-ngp's spatial-hash primes (the first is 1: x enters unscrambled).
HASH_PRIMES = (1, 2654435761, 805459861)
MAX_LOG2_TABLE = 24
MAX_RESOLUTION = 1 << 15  # the hash multiply splits coordinates into 16 bits
T_THRESHOLD = 1e-4  # a ray stops once its transmittance drops below this (instant-ngp)
# the viewer's rays stop earlier: what is left is at most 1% of the light, 2-3 levels of
# 8-bit colour at most (measured in BENCHMARKS.md section 3)
PREVIEW_T_THRESHOLD = 1e-2
# the viewer evaluates the colour MLP only for samples that weigh more than this; the rest
# count as black, so a pixel darkens by at most the weight they carry together (measured
# in BENCHMARKS.md section 3f); frames small enough to be walked whole colour every sample
PREVIEW_MIN_WEIGHT = 1e-3
# Rendering in segments: sample slots per round (about a training batch, where the field
# runs at full speed) shared by the rays still going, at least SEGMENT_MIN each: short
# segments while most rays are alive (few samples behind a surface are wasted), long ones
# for the last rays (few rounds; each round costs several kernel launches). Measured on
# Lego 256x256 (BENCHMARKS.md 3b): a cap of 64 samples per segment was 10% slower; 2^16
# slots, or 2^15 with a minimum of 2, 10-30% slower.
ROUND_SAMPLES = 1 << 17
SEGMENT_MIN = 4
# ...but a render whose rays fit this many samples at max_samples each walks them whole in
# one pass (march.renders_whole): a small frame (a moving preview's) is dominated by what
# each round costs (lavapipe, 26x26 frames: 3.1-3.5 fps in segments, 4.0-4.1 walked whole)
WHOLE_WALK_SLOTS = 1 << 20
# the density is exp(raw); its gradient uses exp(min(raw, 15)), which keeps it finite
# (instant-ngp's truncated exp)
TRUNC_EXP_MAX = 15.0
# past this optical depth a sample is opaque to double precision: the sparse-depth loss clamps
# sigma * dt there (an untrained field's exp can be inf) and passes no gradient through it
TAU_MAX = 50.0
# Cells per side of an empty-space block, at most: the bitfield also holds one bit per block
# (set when any of its cells is), so a walk crosses an empty block in one skip instead of
# cell by cell (a 256x256 Lego preview frame spent 70 of its 90 ms of marching in front of
# the object). See OccupancySpec.block.
OCCUPANCY_BLOCK = 8
CHECKPOINT_NAME = "checkpoint.npz"  # what `taichi-nerf train --out RUN` writes in RUN


def checkpoint_path(run: Union[str, "os.PathLike[str]"]) -> str:
    """A run folder -> the checkpoint file in it; a file path is returned as given."""
    path = os.fspath(run)
    return os.path.join(path, CHECKPOINT_NAME) if os.path.isdir(path) else path


@dataclasses.dataclass(frozen=True)
class HashGridSpec:
    """Multiresolution hash grid: L levels x F features, 2^log2_table rows per hashed level."""

    n_levels: int = 16
    n_features: int = 2
    log2_table: int = 19
    base_resolution: int = 16
    finest_resolution: int = 2048

    def __post_init__(self) -> None:
        if not 1 <= self.n_levels <= 32:
            raise ValueError(f"n_levels must be in [1, 32], got {self.n_levels}")
        if self.n_features not in (1, 2, 4, 8):
            raise ValueError(f"n_features must be 1, 2, 4 or 8, got {self.n_features}")
        if not 4 <= self.log2_table <= MAX_LOG2_TABLE:
            raise ValueError(f"log2_table must be in [4, {MAX_LOG2_TABLE}], got {self.log2_table}")
        if not 1 <= self.base_resolution <= self.finest_resolution <= MAX_RESOLUTION:
            raise ValueError("need 1 <= base_resolution <= finest_resolution <= "
                             f"{MAX_RESOLUTION}, got {self.base_resolution}, "
                             f"{self.finest_resolution}")

    @property
    def table_size(self) -> int:
        """Rows of a hashed level's table (2^log2_table)."""
        return 1 << self.log2_table

    @property
    def per_level_scale(self) -> float:
        """Geometric growth factor of the resolution from one level to the next."""
        if self.n_levels == 1:
            return 1.0
        return math.exp(math.log(self.finest_resolution / self.base_resolution)
                        / (self.n_levels - 1))

    @property
    def resolutions(self) -> Tuple[int, ...]:
        """Cells per side at each level (grid vertices per side = resolution + 1)."""
        b = self.per_level_scale
        # The epsilon keeps exact powers (e.g. the finest level) from flooring down.
        return tuple(int(math.floor(self.base_resolution * b ** l + 1e-6))
                     for l in range(self.n_levels))

    @property
    def dense(self) -> Tuple[bool, ...]:
        """Per level: True where every grid vertex gets its own row (no hashing)."""
        return tuple((r + 1) ** 3 <= self.table_size for r in self.resolutions)

    @property
    def level_sizes(self) -> Tuple[int, ...]:
        """Rows used by each level: (res+1)^3 rounded up to 8 when dense, else 2^log2_table."""
        return tuple(((r + 1) ** 3 + 7) // 8 * 8 if d else self.table_size
                     for r, d in zip(self.resolutions, self.dense))

    @property
    def level_offsets(self) -> Tuple[int, ...]:
        """First table row of each level."""
        offs, acc = [], 0
        for s in self.level_sizes:
            offs.append(acc)
            acc += s
        return tuple(offs)

    @property
    def n_params(self) -> int:
        """Rows of the whole table (all levels); the table is (n_params, n_features)."""
        return sum(self.level_sizes)

    @property
    def out_dim(self) -> int:
        """Features per encoded point: n_levels * n_features."""
        return self.n_levels * self.n_features


def block_cells(resolution: int) -> int:
    """Cells per side of the occupancy grid's empty-space blocks (OccupancySpec.block)."""
    return math.gcd(OCCUPANCY_BLOCK, resolution // 4)


@dataclasses.dataclass(frozen=True)
class OccupancySpec:
    """Occupancy grid: `n_cascades` grids of resolution^3 cells, cascade c spans 2^c around 0.5."""

    n_cascades: int = 1
    resolution: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.n_cascades <= 8:
            raise ValueError(f"n_cascades must be in [1, 8], got {self.n_cascades}")
        if self.resolution < 2 or self.resolution % 4 or self.resolution > 512:
            raise ValueError(f"resolution must be a multiple of 4 in [4, 512], got {self.resolution}")

    @property
    def cells_per_cascade(self) -> int:
        """resolution^3."""
        return self.resolution ** 3

    @property
    def n_cells(self) -> int:
        """Cells over all cascades."""
        return self.n_cascades * self.cells_per_cascade

    @property
    def cell_words(self) -> int:
        """32-bit words of the cells' bits (the resolution is a multiple of 4: no partial word)."""
        return self.n_cells // 32

    @property
    def block(self) -> int:
        """Cells per side of an empty-space block: OCCUPANCY_BLOCK where it divides a quarter of
        the resolution, so blocks tile each cascade and none straddles the finer cascade's
        cube (which spans the middle half); else the largest divisor of both."""
        return block_cells(self.resolution)

    @property
    def blocks_per_axis(self) -> int:
        """Empty-space blocks along each axis of a cascade."""
        return self.resolution // self.block

    @property
    def n_blocks(self) -> int:
        """Empty-space blocks over all cascades."""
        return self.n_cascades * self.blocks_per_axis ** 3

    @property
    def n_words(self) -> int:
        """32-bit words of the packed bitfield: the cells' bits, then one bit per block."""
        return self.cell_words + (self.n_blocks + 31) // 32

    @property
    def aabb(self) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
        """Box of the outermost cascade in model space: ([lo]*3, [hi]*3)."""
        h = 0.5 * 2.0 ** (self.n_cascades - 1)
        return (0.5 - h,) * 3, (0.5 + h,) * 3


# The fixed step spans this many cells of the hash grid's finest level: instant-ngp's
# sqrt(3)/1024 at its finest 2048. A step fixed in model units instead oversampled coarser
# grids (Lego 200x200, finest 512: 31 samples a ray; 4x the step gave +1.7 dB at 120 s).
STEP_FINEST_CELLS = 2.0 * math.sqrt(3.0)


@dataclasses.dataclass(frozen=True)
class MarchSpec:
    """Ray-marching step rule: fixed min step, cone step t*cone clamped to [min, max]."""

    min_step: float = STEP_FINEST_CELLS / 2048  # instant-ngp's sqrt(3)/1024
    cone: float = 0.0            # dt = t * cone; 1/256 for scenes larger than the unit box
    max_step: float = 1.0 / 128  # at most one cell of the outermost cascade
    max_samples: int = 1024
    near: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.min_step <= self.max_step:
            raise ValueError(f"need 0 < min_step <= max_step, got {self.min_step}, {self.max_step}")
        if self.cone < 0:
            raise ValueError(f"cone must be >= 0, got {self.cone}")
        if self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")

    @staticmethod
    def for_occupancy(occ: OccupancySpec, max_samples: int = 1024, near: float = 0.0,
                      pixel_angle: float = 0.0, footprint_steps: float = 0.0,
                      finest_resolution: int = 2048) -> "MarchSpec":
        """instant-ngp's rule: fixed step of STEP_FINEST_CELLS cells of the hash grid's finest
        level in the unit box (finest_resolution cells a side; sqrt(3)/1024 at 2048), cone
        step 1/256 when cascades > 1; with pixel_angle (radians per pixel of the training
        images, 1 / focal in pixels) the cone is at least footprint_steps pixel footprints
        (steps of the image's own scale)."""
        if finest_resolution < 1:
            raise ValueError(f"finest_resolution must be >= 1, got {finest_resolution}")
        cone = 0.0
        if occ.n_cascades > 1:
            cone = max(1.0 / 256.0, footprint_steps * pixel_angle)
        max_step = 2.0 ** (occ.n_cascades - 1) / occ.resolution * math.sqrt(3.0)
        min_step = min(STEP_FINEST_CELLS / finest_resolution, max_step)
        return MarchSpec(min_step=min_step, cone=min(cone, max_step),
                         max_step=max_step, max_samples=max_samples, near=near)
