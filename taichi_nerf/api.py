"""The Python API (``import taichi_nerf as tn``): ``init``, ``train``, ``load`` -> ``Nerf.render``.

The CLI's ``train`` and ``view --train`` build their trainer through :func:`prepare_training`
too, so the two front ends share defaults, checks and messages. Problems raise library
errors with one-line messages: :class:`taichi_nerf.data.DataError` for bad input data,
:class:`OptionError` (a ValueError) for bad options, TypeError for unknown config names.
Taichi and torch are imported when a function runs, never when this module is imported.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

import numpy as np

from taichi_nerf.kernels.specs import CHECKPOINT_NAME, checkpoint_path
from taichi_nerf.options import OptionError

if TYPE_CHECKING:  # pragma: no cover
    from taichi_nerf.data import Dataset
    from taichi_nerf.nn.runtime import Runtime
    from taichi_nerf.training.trainer import Trainer

BUILTIN = "builtin"
DEFAULT_TIME = 150.0  # seconds: the built-in scene reaches >= 30 dB in this on 2 CPU cores
PathLike = Union[str, "os.PathLike[str]"]


def init(arch: str = "auto", **kwargs: Any) -> "Runtime":
    """Start Taichi on arch (auto|cpu|cuda|vulkan|metal, as the CLI's --arch) -> the Runtime chosen."""
    from taichi_nerf.nn import runtime
    return runtime.init(arch, **kwargs)


def is_builtin(data: Optional[str]) -> bool:
    """True for 'builtin' and 'builtin:<variant>'."""
    return data is not None and (data == BUILTIN or data.startswith(BUILTIN + ":"))


def resolve_data(data: PathLike, progress: bool = True) -> Path:
    """A dataset folder, or the built-in scene ('builtin') or one of its variants
    ('builtin:room', 'builtin:forward'), rendered into the cache on first use."""
    data = os.fspath(data)
    if is_builtin(data):
        from taichi_nerf.data.builtin import DEFAULT_VARIANT, ensure_builtin_scene
        from taichi_nerf.data.builtin_variants import VARIANTS
        name = data.partition(":")[2] or DEFAULT_VARIANT
        if name != DEFAULT_VARIANT and name not in VARIANTS:
            raise OptionError(None, f"{data}: unknown built-in scene; choose {BUILTIN} or "
                              + ", ".join(f"{BUILTIN}:{v}" for v in VARIANTS))
        return ensure_builtin_scene(progress=progress, variant=name)
    return Path(data)


def default_run_folder(data: str) -> Path:
    """runs/<data name> (runs/builtin-room for 'builtin:room', runs/clip for clip.mp4)."""
    if is_builtin(data):
        return Path("runs") / data.replace(":", "-")
    p = Path(data).resolve()
    return Path("runs") / (p.stem if p.is_file() else p.name)


def train_config(steps: Optional[int] = None, time: Optional[float] = None, seed: int = 0,
                 arch: Optional[str] = None, saved: Optional[Dict[str, Any]] = None,
                 **config: Any):
    """TrainConfig with the CLI's budget default (time 150 s when neither steps nor time is
    given) and checked overrides, over a resumed run's `saved` settings and `arch`'s own
    defaults (training.config.settings_for); unknown field names -> TypeError naming them."""
    from taichi_nerf.training.config import TrainConfig, settings_for

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise TypeError(f"unknown training config name{'s' if len(unknown) > 1 else ''}: "
                        f"{', '.join(unknown)} (TrainConfig has {', '.join(sorted(fields))})")
    # TrainConfig checks each value against its field's range (train/config.py)
    return TrainConfig(steps=steps, time=time if time or steps else DEFAULT_TIME, seed=seed,
                       **settings_for(arch, config, saved))


def saved_train_settings(checkpoint: Path) -> Dict[str, Any]:
    """The RESUME_KEEPS settings as the checkpoint's run used them; None for each one the
    file has no valid value for (an unreadable checkpoint fails later, where it is loaded)."""
    from taichi_nerf.kernels.checkpoint_io import CheckpointError, load_checkpoint
    from taichi_nerf.training.config import RESUME_KEEPS, check_setting

    try:
        train = load_checkpoint(checkpoint, arrays=False)[0]["train"]
    except (CheckpointError, KeyError, TypeError):
        train = None
    out: Dict[str, Any] = {}
    for name in RESUME_KEEPS:
        try:
            value = train[name]
            check_setting(name, value)
        except (KeyError, TypeError, OptionError):
            value = None
        out[name] = value
    return out


def prepare_training(data: Optional[PathLike] = None, out: Optional[PathLike] = None, *,
                     steps: Optional[int] = None, time: Optional[float] = None,
                     downscale: int = 1, holdout: int = 8, seed: int = 0,
                     resume: bool = False, aabb_scale: Optional[int] = None,
                     arch: str = "auto", progress: bool = True, print_arch: bool = True,
                     **config: Any) -> Tuple["Trainer", "Dataset", Path]:
    """Check options, load the train/val splits, start Taichi on arch and build the Trainer
    -> (trainer, val dataset, run folder). config: TrainConfig overrides (None = default)."""
    from taichi_nerf.data import detect_format, load_dataset
    from taichi_nerf.data.blender import split_files
    from taichi_nerf.data.scene import MAX_AABB_SCALE, is_power_of_two

    data = BUILTIN if data is None else os.fspath(data)
    train_config(steps, time, seed, **config)  # options fail before any data loads
    if aabb_scale is not None and not (1 <= aabb_scale <= MAX_AABB_SCALE
                                       and is_power_of_two(aabb_scale)):
        raise OptionError("aabb_scale", f"must be a power of two in [1, {MAX_AABB_SCALE}], "
                                        f"got {aabb_scale}")
    out = Path(out) if out is not None else default_run_folder(data)
    if resume and not (out / CHECKPOINT_NAME).exists():
        raise OptionError(None, f"{out / CHECKPOINT_NAME}: no checkpoint to resume from")
    root = resolve_data(data, progress)
    if not is_builtin(data):
        from taichi_nerf.process import needs_processing, process_for_training
        if needs_processing(root):  # a video or bare photos: made a COLMAP folder in RUN/data
            root = process_for_training(root, out / "data", progress=progress)
    fmt = detect_format(root)
    train = load_dataset(root, "train", downscale, holdout)
    if aabb_scale is not None:
        train = dataclasses.replace(train, aabb_scale=aabb_scale)
    if fmt == "blender":
        # validate on val, or on test when there is no val split; a broken val split is an error
        vsplit = "val" if data != BUILTIN and "val" in split_files(root) else "test"
        val = load_dataset(root, vsplit, downscale, scene=train.scene)
    else:
        val = load_dataset(root, "val", downscale, holdout, scene=train.scene)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptionError(None, f"{out}: cannot create the run folder ({e.strerror or e})") \
            from None
    rt = init(arch, verbose=print_arch)
    # the arch's own defaults; a resumed run builds the model it was trained with (a default
    # may have been an older rule's or another arch's; a checkpoint that disagrees fails on
    # load, naming the flag)
    cfg = train_config(steps, time, seed, arch=rt.arch,
                       saved=saved_train_settings(out / CHECKPOINT_NAME) if resume else None,
                       **config)
    from taichi_nerf.training.device import make_trainer
    trainer = make_trainer(train, cfg)
    trainer.data_source = {"data": data if is_builtin(data) else str(Path(root).resolve()),
                           "downscale": downscale, "holdout": holdout}
    if progress:
        print(f"training on {root} ({fmt}, {len(train)} images {train.width}x{train.height}, "
              f"{len(val)} validation views) -> {out}")
        if cfg.appearance:
            print(f"appearance: a code of {cfg.appearance} floats per training image; "
                  f"validation views use the mean code")
        if trainer.depth_obs is not None:
            print(f"sparse depth: {len(trainer.depth_obs)} keypoints with a triangulated point "
                  f"(weight {cfg.sparse_depth:g})")
    return trainer, val, out


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the run folder (``os.fspath``-able, so ``load(result)``
    works) and its metrics (the contents of RUN/metrics.json)."""

    run: Path
    metrics: Dict[str, Any]

    def __fspath__(self) -> str:
        return os.fspath(self.run)


def train(data: Optional[PathLike] = None, out: Optional[PathLike] = None, *,
          steps: Optional[int] = None, time: Optional[float] = None, downscale: int = 1,
          holdout: int = 8, seed: int = 0, resume: bool = False,
          aabb_scale: Optional[int] = None, arch: str = "auto", progress: bool = True,
          **config: Any) -> TrainResult:
    """Train on data (folder, None/'builtin' or 'builtin:<variant>'; time in seconds, default
    150 s) as `taichi-nerf train` does -> TrainResult(run folder, metrics). config: TrainConfig
    fields."""
    from taichi_nerf.training.trainer import run_training

    trainer, val, run = prepare_training(data, out, steps=steps, time=time, downscale=downscale,
                                         holdout=holdout, seed=seed, resume=resume,
                                         aabb_scale=aabb_scale, arch=arch, progress=progress,
                                         print_arch=progress, **config)
    metrics = run_training(trainer, run, val=val, progress=progress, resume=resume)
    return TrainResult(run, metrics)


class Nerf:
    """A trained radiance field loaded from a run folder (or its checkpoint.npz), rendered
    from cameras in WORLD units (the training data's coordinates, OpenGL axes)."""

    def __init__(self, run: PathLike, arch: str = "auto") -> None:
        from taichi_nerf.training.trainer import load_model

        self.checkpoint = Path(checkpoint_path(os.fspath(run)))
        if not self.checkpoint.exists():
            raise FileNotFoundError(f"{self.checkpoint}: no checkpoint (train one with "
                                    f"`taichi_nerf.training(data, out=RUN)`)")
        init(arch)
        self.config, self.renderer, self.scene = load_model(self.checkpoint)
        self._poses: Optional[np.ndarray] = None

    @property
    def width(self) -> int:
        """Training image width (pixels): the default render width."""
        return int(self.config["width"])

    @property
    def height(self) -> int:
        """Training image height (pixels): the default render height."""
        return int(self.config["height"])

    @property
    def poses(self) -> Optional[np.ndarray]:
        """World c2w (N,4,4) float32 of the training cameras, or None for a checkpoint without them."""
        if self._poses is None:
            from taichi_nerf.render.camera_paths import training_poses
            from taichi_nerf.kernels.checkpoint_io import CheckpointError
            try:
                self._poses = training_poses(self.checkpoint)
            except CheckpointError:
                return None
        return self._poses

    def intrinsics(self, width: Optional[int] = None, height: Optional[int] = None) -> np.ndarray:
        """fx fy cx cy (4,) float32 pixels: the training camera scaled to width x height."""
        from taichi_nerf.render.camera_paths import _scaled_intrinsics, default_camera
        return _scaled_intrinsics(default_camera(self.config), width or self.width,
                                  height or self.height)

    def render(self, c2w: Any, width: Optional[int] = None, height: Optional[int] = None,
               intrinsics: Optional[Any] = None,
               background: Optional[Any] = None) -> Dict[str, np.ndarray]:
        """c2w (4,4)|(3,4) world camera-to-world (OpenGL), size default the training one,
        intrinsics fx fy cx cy px, background (3,) -> rgb (H,W,3), depth (H,W) world units
        along the ray (opacity-weighted: divide by opacity for the surface distance),
        opacity (H,W); float32 numpy."""
        import torch

        from taichi_nerf.data.scene import to_model_space

        w, h = int(width or self.width), int(height or self.height)
        if w <= 0 or h <= 0:
            raise ValueError(f"width and height must be > 0, got {w}x{h}")
        pose = np.asarray(c2w, np.float64)
        if pose.shape not in ((4, 4), (3, 4)) or not np.isfinite(pose).all():
            raise ValueError(f"c2w must be a finite 4x4 or 3x4 matrix, got shape {pose.shape}")
        if pose.shape == (3, 4):
            pose = np.concatenate([pose, [[0.0, 0.0, 0.0, 1.0]]])
        k = self.intrinsics(w, h) if intrinsics is None else np.asarray(intrinsics, np.float32)
        if k.shape != (4,) or not np.isfinite(k).all():
            raise ValueError(f"intrinsics must be 4 finite numbers fx fy cx cy, got {k.shape}")
        bg = background if background is not None else (self.config.get("background")
                                                         or [0.0, 0.0, 0.0])
        bg = np.asarray(bg, np.float32)
        if bg.shape != (3,):
            raise ValueError(f"background must be 3 numbers (rgb), got shape {bg.shape}")
        model = to_model_space(pose, self.scene.scale, self.scene.offset)
        dev = self.renderer.grid.device
        out = self.renderer.render_image(
            torch.from_numpy(np.ascontiguousarray(model)).to(dev),
            torch.from_numpy(np.ascontiguousarray(k)).to(dev),
            torch.zeros(4, dtype=torch.float32, device=dev), w, h,
            torch.from_numpy(bg).to(dev))
        return {"rgb": out["rgb"].cpu().numpy(),
                "depth": out["depth"].cpu().numpy() / np.float32(self.scene.scale),
                "opacity": out["opacity"].cpu().numpy()}


def load(run: PathLike, arch: str = "auto") -> Nerf:
    """Load a trained run (folder or checkpoint.npz; starts Taichi on arch if not started) -> Nerf."""
    return Nerf(run, arch)
