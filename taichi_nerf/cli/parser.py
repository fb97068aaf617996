"""`taichi-nerf`'s arguments (argparse: standard, no extra dependency); `train`'s trainer
settings are generated from TrainConfig, with its help texts and value ranges."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, List, Sequence

from taichi_nerf.api import BUILTIN, DEFAULT_TIME  # numpy-only imports
from taichi_nerf.kernels.runtime import ARCHS  # imports no Taichi
from taichi_nerf.training.config import (OptionError, arch_default_help, check_setting,
                                         range_help, value_kind)


def _arch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="auto", choices=ARCHS,
                   help="Taichi backend (default: auto = CUDA if available, else Metal on "
                        "macOS, else CPU; Vulkan only when asked for)")


def _aabb_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aabb-scale", type=int, default=None,
                   help="side of the model box in units of the core cube, a power of two up to "
                        "128 (default: the dataset's own, or chosen from the extent of the "
                        "cameras and of COLMAP's sparse points / LLFF's far bounds)")


# TrainConfig fields that `train` declares by hand (the budget, the seed, validation and the
# settings with their own wording or metavar); every other field gets a generated flag
TRAIN_HAND_FLAGS = ("steps", "time", "seed", "eval_every", "log2_table", "sparse_depth",
                    "appearance")
# ... and those `view --train` declares by hand or leaves out (no validation runs there)
VIEW_HAND_FLAGS = ("steps", "time", "seed", "eval_every")
CONFIG_GROUP = "training settings (TrainConfig)"


def checked_value(name: str, kind: type) -> Callable[[str], Any]:
    """argparse type for TrainConfig field `name`: parse as `kind`, then TrainConfig's own
    range check (check_setting), so a bad value exits 2 before anything loads."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "a number" if kind is float else "a whole number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        try:
            check_setting(name, value)
        except OptionError as e:
            raise argparse.ArgumentTypeError(e.problem) from None
        return value
    return parse


def _config_args(parser: argparse.ArgumentParser, config_cls: type,
                 skip: Sequence[str] = ()) -> List[str]:
    """Add --field-name (default None: the dataclass's default) for each field of config_cls
    not in skip, in the argument group CONFIG_GROUP -> the field names added."""
    group = parser.add_argument_group(
        CONFIG_GROUP, "every other trainer setting; unset ones keep the trainer's default")
    hints = typing.get_type_hints(config_cls)
    added = []
    for f in dataclasses.fields(config_cls):
        kind = value_kind(hints[f.name])
        # a field of another type (none today) would need its own parsing: it gets no flag,
        # and tests/test_cli_config.py fails until it is declared by hand or listed there
        if f.name in skip or kind is None:
            continue
        text = f.metadata.get("help", "").replace("%", "%%")
        if range_help(f.name):
            text += f"; {range_help(f.name)}"
        if f.default is not None:
            text += (f" (default {f.default:g}" if kind is float else f" (default {f.default}") \
                + arch_default_help(f.name) + ")"
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        else:
            group.add_argument(flag, type=checked_value(f.name, kind), default=None,
                               metavar=kind.__name__.upper(),
                               help=text)
        added.append(f.name)
    return added


def _parser() -> argparse.ArgumentParser:
    from taichi_nerf.process.sfm import CAMERA_MODELS, MATCHING  # names only, no pycolmap
    from taichi_nerf.training.config import TrainConfig  # a plain dataclass: no torch

    ap = argparse.ArgumentParser(
        prog="taichi-nerf",
        description="Instant-NGP-style neural radiance fields on Taichi kernels "
                    "(CPU, CUDA, Vulkan, Metal).")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a radiance field on posed images",
                       description="Train on DATA (a Blender, instant-ngp, COLMAP or LLFF folder; "
                                   "default: the built-in procedural scene). Writes RUN/"
                                   "checkpoint.npz and RUN/metrics.json.")
    t.add_argument("data", nargs="?", default=BUILTIN,
                   help="dataset folder, or 'builtin' (default) for the built-in scene; "
                        "'builtin:room' (cameras inside a room, COLMAP) and 'builtin:forward' "
                        "(a forward-facing capture, LLFF) are its real-capture-shaped variants; "
                        "a video file or a folder of photos is run through `process` into "
                        "RUN/data first")
    t.add_argument("--out", type=Path, default=None,
                   help="run folder to write (default: runs/<data name>)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=checked_value("steps", int),
                        help="number of training steps")
    budget.add_argument("--time", type=checked_value("time", float),
                        help=f"wall-clock training budget in seconds (default {DEFAULT_TIME:g} "
                             f"when --steps is not given)")
    t.add_argument("--downscale", type=int, default=1, help="shrink images by this integer factor")
    t.add_argument("--holdout", type=int, default=8,
                   help="for formats without splits: keep every K-th frame for validation "
                        "(0: train and validate on all frames; default 8)")
    t.add_argument("--seed", type=checked_value("seed", int), default=0,
                   help="random seed (runs are repeatable on CPU with --steps)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.npz")
    t.add_argument("--eval-every", type=checked_value("eval_every", int), default=0,
                   help="validate every N steps")
    t.add_argument("--log2-table", type=checked_value("log2_table", int), default=None,
                   help=f"hash table size per level, log2 (default {TrainConfig.log2_table}"
                        f"{arch_default_help('log2_table')})")
    t.add_argument("--sparse-depth", type=checked_value("sparse_depth", float), default=None,
                   metavar="WEIGHT",
                   help="weight of the depth loss on rays through COLMAP's sparse points "
                        "(default %(default)s = the trainer's, 0 turns it off; data without "
                        "points is unaffected)")
    t.add_argument("--appearance", type=checked_value("appearance", int), default=None, metavar="N",
                   help="learn a code of N floats per training image for exposure and white "
                        "balance that differ between photos (e.g. 16); new views use the mean "
                        "code (default 0: off)")
    _aabb_arg(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--view", action="store_true",
                   help="watch training live in a GGUI window (training continues without "
                        "the window once it is closed, until the budget is spent)")
    _arch_arg(t)
    _config_args(t, TrainConfig, skip=TRAIN_HAND_FLAGS)

    v = sub.add_parser("view", help="live GGUI viewer of a run, or of training in the loop",
                       description="Open RUN (a folder written by `train`) in a window: drag "
                                   "with the left mouse button to orbit, right to pan; W/A/S/D/"
                                   "Q/E fly, =/- zoom, 1/2/3 rgb/depth/opacity, C cameras, "
                                   "O occupancy grid, R reset to a dataset camera, N nearest "
                                   "training view, P screenshot, H panel, space pauses "
                                   "training. With --train, DATA is trained between frames.")
    v.add_argument("source", nargs="?", default=BUILTIN,
                   help="run folder, or with --train a dataset folder / 'builtin'")
    v.add_argument("--train", action="store_true", help="train SOURCE (a dataset) in the loop")
    v.add_argument("--headless", action="store_true",
                   help="render offscreen (no display needed), for tests and servers")
    v.add_argument("--frames", type=int, help="stop after N frames (default: until closed)")
    v.add_argument("--screenshot", type=Path, help="save the last frame as PNG")
    v.add_argument("--width", type=int, help="window width (default: the training width)")
    v.add_argument("--height", type=int, help="window height (default: the training height)")
    v.add_argument("--steps-per-frame", type=int, default=4)
    v.add_argument("--out", type=Path, default=None, help="with --train: run folder to write")
    vb = v.add_mutually_exclusive_group()
    vb.add_argument("--steps", type=checked_value("steps", int))
    vb.add_argument("--time", type=checked_value("time", float))
    v.add_argument("--downscale", type=int, default=1)
    v.add_argument("--holdout", type=int, default=8)
    v.add_argument("--seed", type=checked_value("seed", int), default=0)
    _aabb_arg(v)
    v.add_argument("--quiet", action="store_true")
    _arch_arg(v)
    # with --train, every trainer setting as for `train` (validation is `train`'s alone)
    _config_args(v, TrainConfig, skip=VIEW_HAND_FLAGS)

    e = sub.add_parser("eval", help="evaluate a trained run on a dataset",
                       description="Render every view of a split of DATA with the run's model "
                                   "and report PSNR and SSIM.")
    e.add_argument("run", type=Path, help="run folder written by `train`")
    e.add_argument("--data", default=None,
                   help="dataset folder or builtin[:variant] (default: what the run was "
                        "trained on, as its checkpoint records)")
    e.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    e.add_argument("--holdout", type=int, default=None,
                   help="for formats without splits: every K-th frame is val/test (as in "
                        "`train`; 0: all frames; default: the run's when DATA is its data, else 8)")
    e.add_argument("--downscale", type=int, default=None,
                   help="shrink images by this integer factor (default: the run's when DATA "
                        "is its data, else 1)")
    e.add_argument("--json", type=Path, help="write {psnr, ssim, views, seconds_per_view} here")
    e.add_argument("--save-images", type=Path, help="also write the rendered views as PNGs here")
    e.add_argument("--quiet", action="store_true")
    _arch_arg(e)

    r = sub.add_parser("render", help="render views of a trained run",
                       description="Render an orbit around the scene, or the cameras of a "
                                   "dataset, to PNG frames (a folder) or a .gif / .mp4 file.")
    r.add_argument("run", type=Path)
    r.add_argument("--out", type=Path, required=True, help="folder for PNGs, or FILE.gif/.mp4")
    r.add_argument("--path", default="orbit", metavar="orbit|dataset|DATA|FILE.json",
                   help="cameras to render: orbit (default), dataset (a smooth tour through the "
                        "training cameras), a DATA folder (its --split cameras) or a camera "
                        "path FILE.json (format: docs/camera-paths.md)")
    r.add_argument("--split", default="test", help="split of --path DATA (default test)")
    r.add_argument("--holdout", type=int, default=8,
                   help="for --path DATA in formats without splits: every K-th frame is val/"
                        "test (as in `train`; 0: all frames)")
    r.add_argument("--frames", type=int, default=60,
                   help="frames of an orbit or dataset path (default 60)")
    r.add_argument("--width", type=int, help="image width (default: the training width)")
    r.add_argument("--height", type=int, help="image height (default: the training height)")
    r.add_argument("--elevation", type=float, default=30.0, help="orbit elevation in degrees")
    r.add_argument("--radius", type=float,
                   help="orbit radius in world units (default: the training cameras' mean "
                        "distance from the centre)")
    r.add_argument("--mode", default="rgb", choices=["rgb", "depth", "opacity"])
    r.add_argument("--fps", type=int, default=24)
    r.add_argument("--quiet", action="store_true")
    _arch_arg(r)

    x = sub.add_parser(
        "export", help="export a mesh, depth maps or a camera path from a trained run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export from RUN (a folder written by `train`), in the world units of the "
                    "training data:\n"
                    "  --mesh FILE.ply|.obj   triangle mesh of the density level set sigma = "
                    "--threshold\n"
                    "                         (marching cubes over the occupied region; closed, "
                    "outward\n"
                    "                         normals, vertex colours as seen from outside)\n"
                    "  --depth OUT_DIR        one depth map per camera of --path: distance along "
                    "the pixel's\n"
                    "                         ray; png16 (value x units_per_count, 0 = none) or "
                    "npy (float32,\n"
                    "                         NaN = none); writes depth_scale.json and "
                    "cameras.json too\n"
                    "  --camera-path FILE.json  the cameras of --path as a camera-path file "
                    "(`render --path`\n"
                    "                         reads it back)",
        epilog="--path: 'orbit' (around the scene like the training cameras), 'dataset' (a "
               "smooth\nCatmull-Rom/slerp path through the training cameras), a DATA folder "
               "(the cameras\nof its --split) or FILE.json (a camera path).\n\n"
               "Camera path JSON (world units; fx fy cx cy width height optional per frame or "
               "at the\ntop level, default: the training camera scaled to the size):\n"
               "  {\"version\": 1, \"frames\": [{\"c2w\": [[...], [...], [...], [0, 0, 0, 1]],\n"
               "                             \"fx\": 555.5, \"fy\": 555.5, \"cx\": 400, "
               "\"cy\": 400,\n"
               "                             \"width\": 800, \"height\": 800}, ...]}\n"
               "  c2w: camera-to-world 4x4 (or 3x4), OpenGL axes (x right, y up, looking down "
               "-z).\n\n"
               "Examples:\n"
               "  taichi-nerf export runs/lego --mesh lego.ply --resolution 384\n"
               "  taichi-nerf export runs/lego --depth lego_depth --path orbit --frames 24 "
               "--format npy\n"
               "  taichi-nerf export runs/lego --camera-path tour.json --path dataset --frames "
               "120\n"
               "  taichi-nerf render runs/lego --path tour.json --out tour.gif")
    x.add_argument("run", type=Path, help="run folder written by `train` (or its checkpoint.npz)")
    x.add_argument("--mesh", type=Path, metavar="FILE",
                   help="write a mesh: FILE.ply (binary) or FILE.obj")
    x.add_argument("--resolution", type=int, default=256, metavar="R",
                   help="density samples along the longest side of the occupied box "
                        "(default 256; memory ~ 4 bytes x R^3, at most 1024)")
    x.add_argument("--threshold", type=float, default=10.0, metavar="SIGMA",
                   help="density level of the surface, sigma per model unit (default 10)")
    x.add_argument("--no-colors", action="store_true", help="mesh without vertex colours")
    x.add_argument("--ascii", action="store_true", help="write an ascii PLY (default binary)")
    x.add_argument("--depth", type=Path, metavar="OUT_DIR", help="folder for the depth maps")
    x.add_argument("--format", default="png16", choices=["png16", "npy"],
                   help="depth map format (default png16)")
    x.add_argument("--camera-path", type=Path, metavar="FILE.json",
                   help="write the cameras of --path to FILE.json")
    x.add_argument("--path", default="orbit", metavar="orbit|dataset|DATA|FILE.json",
                   help="cameras for --depth / --camera-path: orbit (default), dataset, a DATA "
                        "folder or FILE.json")
    x.add_argument("--split", default="test", help="split of --path DATA (default test)")
    x.add_argument("--holdout", type=int, default=8,
                   help="for --path DATA in formats without splits: every K-th frame is val/"
                        "test (as in `train`; 0: all frames)")
    x.add_argument("--frames", type=int, default=60, metavar="N",
                   help="cameras on an orbit or dataset path (default 60)")
    x.add_argument("--width", type=int, help="image width (default: the path's or training width)")
    x.add_argument("--height", type=int, help="image height (default: the path's or training "
                                              "height)")
    x.add_argument("--elevation", type=float, default=30.0, help="orbit elevation in degrees")
    x.add_argument("--radius", type=float,
                   help="orbit radius in world units (default: the training cameras' mean "
                        "distance from the centre)")
    x.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    _arch_arg(x)

    b = sub.add_parser("bench", help="measure kernel, training and preview speed",
                       description="Kernel benchmark (Taichi vs the pure-torch reference) and a "
                                   "short training run on the built-in scene; prints Markdown "
                                   "for BENCHMARKS.md.")
    b.add_argument("--quick", action="store_true",
                   help="small sizes, kernels only (< 1 min); not with --training")
    b.add_argument("--kernels", action="store_true", help="kernel benchmark only")
    b.add_argument("--training", action="store_true", help="training benchmark only")
    b.add_argument("--viewer", type=Path, metavar="RUN",
                   help="preview frames/s of the headless viewer on RUN (256 and 512 px, "
                        "static and moving) on --arch; nothing else runs")
    b.add_argument("--profile", nargs="?", const=BUILTIN, default=None, metavar="DATA",
                   help="step profile on DATA (default: the built-in scene): train --time "
                        "seconds, then split --steps steps by stage (rays, marching, hash "
                        "encoding, MLP, compositing, loss, optimizer, occupancy, overhead) with "
                        "each stage's rate against this machine's ceilings; nothing else runs "
                        "(cpu; cuda with every launch blocking, which the command sets)")
    b.add_argument("--cold-start", nargs="?", const=BUILTIN, default=None, metavar="DATA",
                   help="first training step on DATA (default: the built-in scene) in a fresh "
                        "process on an empty Taichi offline cache, then again on the cache that "
                        "run left (a temporary folder: your own cache is not touched); nothing "
                        "else runs")
    b.add_argument("--steps", type=int, default=32,
                   help="--profile: steps profiled after the training (default 32)")
    b.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                   help="--profile: a trainer setting, named as its `train` flag without the "
                        "dashes (e.g. --set target-samples=262144); repeatable")
    b.add_argument("--time", type=float, default=60.0,
                   help="training budget in seconds (with --profile: training before the "
                        "profiled steps)")
    b.add_argument("--data", default=None,
                   help="training benchmark dataset (default: the built-in scene)")
    b.add_argument("--downscale", type=int, default=1, help="training benchmark image downscale")
    b.add_argument("--holdout", type=int, default=8,
                   help="training benchmark: every K-th frame is held out (formats without "
                        "splits)")
    b.add_argument("--json", type=Path, help="also write the raw results here")
    _arch_arg(b)
    pr = sub.add_parser(
        "process", help="turn a video or a folder of photos into a COLMAP dataset",
        description="Pick sharp frames from a video (or take a folder of photos), recover the "
                    "cameras with structure from motion (pycolmap: SIFT, matching, incremental "
                    "mapping, one shared camera) and write a COLMAP folder that `taichi-nerf "
                    "train DATA` reads: DATA/images/, DATA/sparse/0/*.bin and DATA/"
                    "process.json (frames, registered images, reprojection error, seconds "
                    "per stage). Needs the optional extra: pip install \"taichi-nerf[process]\".")
    pr.add_argument("input", type=Path, help="video file (.mp4, .mov, .avi, .mkv, .webm, ...) "
                                             "or a folder of photos")
    pr.add_argument("--out", type=Path, required=True, metavar="DATA",
                    help="dataset folder to write")
    pr.add_argument("--frames", type=int, default=None, metavar="N",
                    help="video: take the sharpest frame of each of N equal windows of the "
                         "clip (default 100); photos are all used")
    pr.add_argument("--downscale", type=int, default=1, metavar="K",
                    help="shrink the images written to DATA/images by this integer factor")
    pr.add_argument("--matching", choices=MATCHING, default=None,
                    help="which image pairs to match (default: sequential for a video, "
                         "exhaustive for photos)")
    pr.add_argument("--camera-model", default="SIMPLE_RADIAL",
                    choices=CAMERA_MODELS,
                    help="COLMAP camera model shared by all images (default SIMPLE_RADIAL; "
                         "the models `train` reads)")
    pr.add_argument("--force", action="store_true",
                    help="write into a non-empty DATA, replacing its images/, sparse/ and "
                         "process.json")
    pr.add_argument("--keep-database", action="store_true",
                    help="keep COLMAP's DATA/database.db (features and matches; large)")
    pr.add_argument("--verbose", action="store_true", help="show COLMAP's own log lines")
    pr.add_argument("--quiet", action="store_true", help="no progress output")
    return ap
