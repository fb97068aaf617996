"""Structure from motion through pycolmap: SIFT features, matching, incremental mapping.

pycolmap (COLMAP's own Python bindings, a pip wheel) is imported inside the functions, so
``import taichi_nerf`` and every other command work without it. The API used here (the
``FeatureExtractionOptions`` / ``FeatureMatchingOptions`` / pairing-options arguments, the
camera model on ``ImageReaderOptions``) is pycolmap 4's; 3.x spelled the arguments
differently, hence ``pycolmap>=4.0`` in pyproject.toml.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .errors import MissingDependency, ProcessError

# camera models written by process: exactly those taichi_nerf.data.colmap_model reads
# (camera_intrinsics); the fisheye and thin-prism ones would load as errors
CAMERA_MODELS = ("SIMPLE_RADIAL", "OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "RADIAL")
MATCHING = ("sequential", "exhaustive")
MIN_REGISTERED = 3  # fewer registered images give no usable model (no triangulation check)
# SIFT on the CPU: COLMAP's default (3200 px, 8192 features) spends minutes per 100 frames on
# 2 cores; 1600 px keeps phone frames (720p-1080p) at full size and photos at a size where
# SIFT still finds thousands of features. Measured on the beer clip: see the issue report.
MAX_IMAGE_SIZE = 1600
MAX_FEATURES = 8192
# sequential matching pairs each frame with the next OVERLAP frames: COLMAP's default 10 covers
# a hand-held clip sampled at ~100 frames. COLMAP's quadratic overlap (also frames i + 2^k) is
# off: on the beer clip (a can on a tiled floor, white tiled walls) those far pairs matched the
# repetitive tiles across the can, and mapping put three stretches of frames on the wrong side
# of the can, turned ~170 degrees (the author's COLMAP model has the same three breaks); without
# them all 100 frames register with no break, mapping took 10 s instead of 33 s, and each
# stretch agrees with the author's model within 3 % (centres) and 2 degrees (rotations)
OVERLAP = 10
QUADRATIC_OVERLAP = False
SEED = 0  # RANSAC and mapper seed: the same input gives the same model (up to thread timing)
# consecutive video frames (a fraction of a second apart) whose cameras turn by more than this
# are flagged: the failure QUADRATIC_OVERLAP describes turned cameras by 160-180 degrees
JUMP_DEGREES = 90.0


def load_pycolmap():
    """The pycolmap module, or MissingDependency carrying the pip command."""
    try:
        import pycolmap
    except ImportError:
        raise MissingDependency("pycolmap") from None
    return pycolmap


def thread_count() -> int:
    """CPU threads this process may use (its affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Stages:
    """Times the pipeline's stages and prints ``stage k/n: name ...`` / ``done in X s``."""

    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.total, self.say, self.k = total, say, 0
        self.seconds: Dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], object], detail: str = "") -> object:
        """Run fn() as the next stage, print its line, record its seconds under ``name``."""
        self.k += 1
        self.say(f"stage {self.k}/{self.total}: {name}{' (' + detail + ')' if detail else ''} ...")
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        self.say(f"stage {self.k}/{self.total}: {name} done in {self.seconds[name]:.1f} s")
        return out


@dataclass
class SfmResult:
    """What mapping produced: registered / unregistered image names, the names registered only
    in smaller models that were dropped, the models' sizes, the kept model's mean
    reprojection error (pixels), sparse point count, camera (model name, params) and the
    consecutive registered images (name order) whose rotations differ by > JUMP_DEGREES."""

    registered: List[str]
    unregistered: List[str]
    dropped: List[str] = field(default_factory=list)
    model_sizes: List[int] = field(default_factory=list)
    reprojection_error: float = float("nan")
    points: int = 0
    camera_model: str = ""
    camera_params: List[float] = field(default_factory=list)
    rotation_jumps: List[Tuple[str, str, float]] = field(default_factory=list)


def rotation_jumps(rec, max_degrees: float = JUMP_DEGREES) -> List[Tuple[str, str, float]]:
    """(name, next name, degrees) for registered images, in name order, whose camera rotation
    differs from the previous one's by more than max_degrees."""
    ims = sorted((rec.images[i] for i in rec.reg_image_ids()), key=lambda im: im.name)
    out = []
    for a, b in zip(ims, ims[1:]):
        rel = b.cam_from_world().rotation.matrix() @ a.cam_from_world().rotation.matrix().T
        deg = float(np.degrees(np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0))))
        if deg > max_degrees:
            out.append((a.name, b.name, round(deg, 1)))
    return out


def _hints(matching: str, camera_model: str) -> str:
    """What to try after a failed reconstruction, naming only options not already in use."""
    tips = ["more frames (--frames 200) or photos with more overlap"]
    if matching != "exhaustive":
        tips.append("exhaustive matching (--matching exhaustive)")
    tips.append("a different camera model (--camera-model "
                + ("OPENCV" if camera_model != "OPENCV" else "SIMPLE_RADIAL") + ")")
    return "try " + ", ".join(tips[:-1]) + " or " + tips[-1]


def run_sfm(data: Path, names: List[str], matching: str, camera_model: str,
            stages: Stages, threads: Optional[int] = None,
            max_image_size: int = MAX_IMAGE_SIZE, max_features: int = MAX_FEATURES,
            overlap: int = OVERLAP) -> SfmResult:
    """SIFT, matching and incremental mapping on ``data/images/<names>`` with one shared camera;
    writes the largest model to ``data/sparse/0`` (binary) -> SfmResult. Uses (and leaves)
    ``data/database.db``; ProcessError when no model of >= MIN_REGISTERED images comes out."""
    pycolmap = load_pycolmap()
    if camera_model not in CAMERA_MODELS:
        raise ProcessError(f"--camera-model {camera_model}: not one the COLMAP loader reads; "
                           f"choose {', '.join(CAMERA_MODELS)}")
    if matching not in MATCHING:
        raise ProcessError(f"--matching {matching}: choose sequential or exhaustive")
    threads = threads or thread_count()
    pycolmap.set_random_seed(SEED)
    images, db = data / "images", data / "database.db"
    if db.exists():
        db.unlink()  # features of earlier images would be matched and mapped too

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = threads
    extraction.max_image_size = max_image_size
    extraction.sift.max_num_features = max_features
    stages.run("features", lambda: pycolmap.extract_features(
        db, images, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu),
        f"SIFT on {len(names)} images, CPU, {threads} threads")

    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = SEED
    if matching == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = overlap
        pairing.quadratic_overlap = QUADRATIC_OVERLAP
        pairing.num_threads = threads
        match = lambda: pycolmap.match_sequential(  # noqa: E731
            db, matching_options=options, pairing_options=pairing,
            verification_options=verification, device=pycolmap.Device.cpu)
    else:
        match = lambda: pycolmap.match_exhaustive(  # noqa: E731
            db, matching_options=options, verification_options=verification,
            device=pycolmap.Device.cpu)
    stages.run("matching", match, matching)

    mapper = pycolmap.IncrementalPipelineOptions()
    mapper.num_threads = threads
    mapper.random_seed = SEED
    mapper.min_model_size = MIN_REGISTERED  # COLMAP's 10 would discard small photo sets
    models_dir = data / ".sfm-models"  # pycolmap writes every model; the largest is kept
    shutil.rmtree(models_dir, ignore_errors=True)
    models_dir.mkdir()
    try:
        recs = stages.run("mapping", lambda: pycolmap.incremental_mapping(
            db, images, models_dir, mapper), "incremental")
    finally:
        shutil.rmtree(models_dir, ignore_errors=True)

    recs = sorted(recs.values(), key=lambda r: r.num_reg_images(), reverse=True)
    if not recs or recs[0].num_reg_images() < MIN_REGISTERED:
        got = recs[0].num_reg_images() if recs else 0
        what = (f"registered only {got} of {len(names)} images (at least {MIN_REGISTERED} "
                f"needed)" if got else "found no model (no two images could be matched and "
                                       "triangulated)")
        raise ProcessError(f"{data}: structure from motion {what}; "
                           f"{_hints(matching, camera_model)}")
    rec = recs[0]
    registered = sorted(rec.images[i].name for i in rec.reg_image_ids())
    in_others = {rec2.images[i].name for rec2 in recs[1:] for i in rec2.reg_image_ids()}
    sparse = data / "sparse" / "0"
    sparse.mkdir(parents=True, exist_ok=True)
    rec.write_binary(str(sparse))
    cam = next(iter(rec.cameras.values()))
    return SfmResult(
        registered=registered,
        unregistered=sorted(set(names) - set(registered)),
        dropped=sorted(in_others - set(registered)),
        model_sizes=[r.num_reg_images() for r in recs],
        reprojection_error=float(rec.compute_mean_reprojection_error()),
        points=int(rec.num_points3D()),
        camera_model=str(cam.model_name),
        camera_params=[float(v) for v in cam.params],
        rotation_jumps=rotation_jumps(rec))
