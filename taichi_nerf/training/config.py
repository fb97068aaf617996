"""TrainConfig: the trainer's settings, a plain dataclass (no torch, no Taichi), so the CLI
can build a `train` flag for each field without loading the trainer.

Each field carries its help text and its valid range; :func:`check_setting` is the one rule
that both ``TrainConfig(...)`` (the Python API) and the generated `train` flags apply.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Dict, Mapping, Optional

from taichi_nerf.kernels.runtime import ARCH_DEFAULTS  # imports no Taichi
from taichi_nerf.kernels.specs import MAX_LOG2_TABLE, MAX_RESOLUTION
from taichi_nerf.options import OptionError

__all__ = ["ARCH_DEFAULTS", "MAX_APPEARANCE", "OptionError", "RESUME_KEEPS", "TrainConfig",
           "arch_defaults", "check_setting", "range_help", "settings_for", "value_kind"]

MAX_APPEARANCE = 256  # floats per image; nerfacto uses 32


def _opt(default: Any, help: str, lo: Optional[float] = None, hi: Optional[float] = None,
         lo_open: bool = False, multiple_of: Optional[int] = None) -> Any:
    """A TrainConfig field: its `taichi-nerf train --field-name` help text and valid range
    (lo, hi inclusive; lo excluded when lo_open; a multiple of `multiple_of`)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "multiple_of": multiple_of})


def value_kind(annotation: Any) -> Optional[type]:
    """int, float or bool for an annotation of one of them or Optional[one]; else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and len(args) == 2 and type(None) in args:
        annotation = args[0] if args[1] is type(None) else args[1]
    return annotation if annotation in (int, float, bool) else None


def _range_text(m: typing.Mapping[str, Any]) -> str:
    lo, hi = m["lo"], m["hi"]
    if lo is not None and hi is not None:
        text = f"in {'(' if m['lo_open'] else '['}{lo:g}, {hi:g}]"
    elif lo is not None:
        text = f"{'>' if m['lo_open'] else '>='} {lo:g}"
    else:
        text = f"<= {hi:g}"
    return text + (f" and a multiple of {m['multiple_of']}" if m["multiple_of"] else "")


def check_setting(name: str, value: Any) -> None:
    """OptionError(name, ...) unless `value` has field `name`'s type and lies in its range
    (None is the default of an optional field)."""
    f = _FIELDS[name]
    if value is None:
        if typing.get_origin(_HINTS[name]) is typing.Union:
            return
        raise OptionError(name, "must be set, got None")
    kind = value_kind(_HINTS[name])
    if kind is bool:
        if not isinstance(value, bool):
            raise OptionError(name, f"must be True or False, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise OptionError(name, f"must be {'a number' if kind is float else 'a whole number'}, "
                                f"got {value!r}")
    m = f.metadata
    if not math.isfinite(value):
        raise OptionError(name, f"must be finite, got {value}")
    lo, hi = m.get("lo"), m.get("hi")
    if (lo is not None and (value <= lo if m["lo_open"] else value < lo)) \
            or (hi is not None and value > hi) \
            or (m.get("multiple_of") and value % m["multiple_of"]):
        raise OptionError(name, f"must be {_range_text(m)}, got {value}")


def arch_defaults(arch: str) -> Dict[str, Any]:
    """The settings whose default on Taichi arch `arch` differs from the field's own."""
    return dict(ARCH_DEFAULTS.get(arch, {}))


# settings a resumed run keeps from its checkpoint when not given again: those whose default
# depends on the data (finest_resolution) or on the arch (ARCH_DEFAULTS), so that a run
# resumed elsewhere, or after a default changed, builds the model it was trained with
RESUME_KEEPS = ("finest_resolution",) + tuple(
    sorted({name for d in ARCH_DEFAULTS.values() for name in d}))


def settings_for(arch: Optional[str], given: Mapping[str, Any],
                 saved: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """TrainConfig keyword settings: each one `given` (None = not given); else a resumed
    run's `saved` value of a RESUME_KEEPS setting; else `arch`'s own default (none when arch
    is None). max_rays, when not given, is never below min_rays."""
    out = {k: v for k, v in given.items() if v is not None}
    for name in RESUME_KEEPS:
        if name not in out and saved and saved.get(name) is not None:
            out[name] = saved[name]
    for name, value in (arch_defaults(arch) if arch else {}).items():
        out.setdefault(name, value)
    if given.get("max_rays") is None:
        out["max_rays"] = max(out.get("max_rays", _FIELDS["max_rays"].default),
                              out.get("min_rays", _FIELDS["min_rays"].default))
    return out


def arch_default_help(name: str) -> str:
    """'; 19 on cuda' style words for field `name`'s arch defaults ('' when it has none)."""
    return "".join(f"; {v} on {a}" for a, d in ARCH_DEFAULTS.items() for k, v in d.items()
                   if k == name)


def range_help(name: str) -> str:
    """The valid range of field `name` in words ('' when any value of its type is valid)."""
    m = _FIELDS[name].metadata
    return _range_text(m) if m.get("lo") is not None or m.get("hi") is not None else ""


@dataclasses.dataclass
class TrainConfig:
    """Trainer settings (saved in the checkpoint); defaults tuned for a 2-core CPU. Each
    field is a `taichi-nerf train` flag (--field-name) with the help text given here."""

    steps: Optional[int] = _opt(None, "total steps, or", lo=1)
    time: Optional[float] = _opt(None, "wall-clock budget in seconds (default: 2000 steps)",
                                 lo=0, lo_open=True)
    seed: int = _opt(0, "random seed")
    lr: float = _opt(1e-2, "Adam learning rate", lo=0, lo_open=True)
    lr_final_factor: float = _opt(0.1, "the lr decays exponentially over the second half of "
                                       "the budget to lr times this", lo=0, lo_open=True)
    weight_decay: float = _opt(1e-6, "L2 on the MLP weights only", lo=0)
    # 2^14: more, smaller steps reach a given PSNR sooner on 2 cores at every budget
    # measured (20-300 s; BENCHMARKS 2j); a GPU likely wants far more (instant-ngp: 2^18)
    target_samples: int = _opt(1 << 14, "samples per step; the ray count adapts to it", lo=1)
    init_rays: int = _opt(1 << 8, "rays of the first step (the first steps march an "
                                  "empty-looking grid: start small)", lo=1)
    min_rays: int = _opt(1 << 8, "fewest rays per step", lo=1)
    max_rays: int = _opt(1 << 16, "most rays per step", lo=1)
    log2_table: int = _opt(17, "hash table size per level, log2", lo=4, hi=MAX_LOG2_TABLE)
    n_levels: int = _opt(16, "levels of the hash grid", lo=1, hi=32)
    finest_resolution: Optional[int] = _opt(
        None, "resolution of the finest hash level over the core cube (times the aabb scale, "
              "at most 2^15; default: what the training images resolve, 2 cells per pixel at "
              "the camera nearest the box centre, a power of two in [128, 2048])",
        lo=16, hi=MAX_RESOLUTION)
    occ_resolution: int = _opt(128, "occupancy grid cells per side of each cascade", lo=4,
                               hi=512, multiple_of=4)
    occ_cells_per_update: int = _opt(1 << 17, "most occupancy cells one grid update evaluates",
                                     lo=1)
    occ_warmup_steps: int = _opt(256, "steps during which occupancy updates sweep the "
                                      "cells in order (then: half random, half occupied)", lo=0)
    max_samples_per_ray: int = _opt(1024, "most samples marched along one ray", lo=1)
    near: float = _opt(0.1, "model units in front of each camera left out (instant-ngp)", lo=0)
    # never less than instant-ngp's t / 256: a downscaled capture needs no finer steps than
    # its pixels resolve
    footprint_steps: float = _opt(2.0, "cone steps (scenes larger than the unit box) span at "
                                       "least this many pixel footprints of the training "
                                       "images", lo=0, lo_open=True)
    distortion: float = _opt(0.0, "weight of mip-NeRF 360's distortion loss", lo=0)
    near_grad_distance: float = _opt(0.0, "samples nearer than this (model units) to their "
                                          "camera get gradients scaled by (t / distance)^2 "
                                          "(0: off)", lo=0)
    coarse_to_fine: Optional[float] = _opt(
        None, "coarse-to-fine: the hash levels above the first --coarse-levels join one after "
              "another over this share of the budget (0: all from the start; default: on for "
              "photos without alpha, whose every pixel is opaque, off for masked/synthetic "
              "data)", lo=0, hi=1)
    coarse_levels: int = _opt(4, "hash levels trained from the start with --coarse-to-fine",
                              lo=1, hi=32)
    # sparse depth (DS-NeRF-style) on data with structure-from-motion points (COLMAP). beer
    # --downscale 4, 1700 steps, held out: weight 0 18.3 dB, 0.1 22.0, 0.5 23.0, 1.0 23.3
    sparse_depth: float = _opt(1.0, "weight of the sparse-depth loss: the weight of rays "
                                    "through the keypoints that saw a point must sit within "
                                    "+-tolerance (relative) of the point's distance (0: off)",
                               lo=0)
    sparse_depth_share: float = _opt(0.25, "share of each batch spent on rays through the "
                                           "sparse points' keypoints", lo=0, hi=1)
    sparse_depth_tolerance: float = _opt(0.05, "relative distance from a sparse point within "
                                               "which the depth loss is zero", lo=0)
    # Lego --downscale 4 after 10 s: 18.6-21.8 dB on four seeds with it, 16.2-17.7 without
    # (the first steps no longer march a grid that is still all occupied); the hull alone
    # cost 0.2 dB later, the hull with a shell of free space (trainer.CARVE_SHELL) did not
    # (BENCHMARKS 10d)
    alpha_carving: bool = _opt(True, "cells that a training view sees whole through fully "
                                     "transparent pixels (alpha 0) are empty from the start: "
                                     "the visual hull of RGBA data (cameras with lens "
                                     "distortion are not used), with a shell of free "
                                     "space kept around it: a much faster start")
    pixel_jitter: Optional[bool] = _opt(
        None, "rays through a random point of their pixel instead of its centre (default: on "
              "for photos without alpha, off for masked/synthetic data)")
    # Off (0) by default: beer --downscale 4, 1700 steps, held out: off 23.27 dB / SSIM 0.756,
    # 16 floats 22.77 / 0.779 (the mean code misses each held-out frame's exposure), 16 with
    # L2 1e-2 23.05 / 0.760, a per-image affine colour on the logits 22.20 / 0.754
    appearance: int = _opt(0, "per-image appearance codes of this many floats (NeRF-W, "
                              "nerfacto), for photos whose exposure or white balance differ; "
                              "new views render with the mean code", lo=0, hi=MAX_APPEARANCE)
    eval_every: int = _opt(0, "validate every N steps (0: only at the end); the time these "
                              "validations take does not count against --time", lo=0)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name))
        if self.min_rays > self.max_rays:
            raise OptionError("min_rays", f"must be <= max_rays ({self.max_rays}), got "
                                          f"{self.min_rays}")

    def budget_progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget used, in [0, 1]."""
        if self.time is not None:
            return min(1.0, elapsed / self.time)
        return min(1.0, step / self.total_steps)

    def lr_at(self, step: int, elapsed: float) -> float:
        """The learning rate at `step` after `elapsed` seconds: lr, decaying exponentially to
        lr * lr_final_factor over the second half of the budget. (A start at twice lr, falling
        to lr over 500 steps, reached 18.6 dB sooner but lost 0.2-0.35 dB later: BENCHMARKS
        10b.)"""
        p = self.budget_progress(step, elapsed)
        return self.lr * self.lr_final_factor ** max(0.0, (p - 0.5) / 0.5)

    @property
    def total_steps(self) -> int:
        """Steps of a step-budget run (2000 when neither steps nor time is given)."""
        return self.steps if self.steps is not None else 2000

    def done(self, step: int, elapsed: float) -> bool:
        """True once the step or time budget is spent."""
        if self.time is not None:
            return elapsed >= self.time
        return step >= self.total_steps


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
