"""`taichi-nerf` command line: train, view, eval, render, export, bench, process (argparse:
standard, no extra dependency)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from taichi_nerf.kernels.specs import CHECKPOINT_NAME, checkpoint_path

from taichi_nerf.api import BUILTIN, DEFAULT_TIME  # noqa: F401 (numpy-only import; re-exported)


class CLIError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


def _arch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="auto", choices=["auto", "cpu", "cuda", "vulkan", "metal"],
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
CONFIG_GROUP = "training settings (TrainConfig)"


def _flag_type(annotation: Any) -> Optional[type]:
    """int, float or bool for an annotation of one of them or Optional[one]; else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and len(args) == 2 and type(None) in args:
        annotation = args[0] if args[1] is type(None) else args[1]
    return annotation if annotation in (int, float, bool) else None


def _config_args(parser: argparse.ArgumentParser, config_cls: type,
                 skip: Sequence[str] = ()) -> List[str]:
    """Add --field-name (default None: the dataclass's default) for each field of config_cls
    not in skip, in the argument group CONFIG_GROUP -> the field names added."""
    group = parser.add_argument_group(
        CONFIG_GROUP, "every other trainer setting; unset ones keep the trainer's default")
    hints = typing.get_type_hints(config_cls)
    added = []
    for f in dataclasses.fields(config_cls):
        kind = _flag_type(hints[f.name])
        # a field of another type (none today) would need its own parsing: it gets no flag,
        # and tests/test_cli_config.py fails until it is declared by hand or listed there
        if f.name in skip or kind is None:
            continue
        text = f.metadata.get("help", "").replace("%", "%%")
        if f.default is not None:
            text += f" (default {f.default:g})" if kind is float else f" (default {f.default})"
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        else:
            group.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(),
                               help=text)
        added.append(f.name)
    return added


def _parser() -> argparse.ArgumentParser:
    from taichi_nerf.process.sfm import CAMERA_MODELS, MATCHING  # names only, no pycolmap
    from taichi_nerf.train_config import TrainConfig  # a plain dataclass: no torch

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
    budget.add_argument("--steps", type=int, help="number of training steps")
    budget.add_argument("--time", type=float,
                        help=f"wall-clock training budget in seconds (default {DEFAULT_TIME:g} "
                             f"when --steps is not given)")
    t.add_argument("--downscale", type=int, default=1, help="shrink images by this integer factor")
    t.add_argument("--holdout", type=int, default=8,
                   help="for formats without splits: keep every K-th frame for validation "
                        "(0: train and validate on all frames; default 8)")
    t.add_argument("--seed", type=int, default=0, help="random seed (runs are repeatable on CPU "
                                                       "with --steps)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.npz")
    t.add_argument("--eval-every", type=int, default=0, help="validate every N steps")
    t.add_argument("--log2-table", type=int, default=None,
                   help="hash table size per level, log2 (default 17)")
    t.add_argument("--sparse-depth", type=float, default=None, metavar="WEIGHT",
                   help="weight of the depth loss on rays through COLMAP's sparse points "
                        "(default %(default)s = the trainer's, 0 turns it off; data without "
                        "points is unaffected)")
    t.add_argument("--appearance", type=int, default=None, metavar="N",
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
    vb.add_argument("--steps", type=int)
    vb.add_argument("--time", type=float)
    v.add_argument("--downscale", type=int, default=1)
    v.add_argument("--holdout", type=int, default=8)
    v.add_argument("--seed", type=int, default=0)
    _aabb_arg(v)
    v.add_argument("--quiet", action="store_true")
    _arch_arg(v)

    e = sub.add_parser("eval", help="evaluate a trained run on a dataset",
                       description="Render every view of a split of DATA with the run's model "
                                   "and report PSNR and SSIM.")
    e.add_argument("run", type=Path, help="run folder written by `train`")
    e.add_argument("--data", default=BUILTIN, help="dataset folder (default: built-in scene)")
    e.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    e.add_argument("--holdout", type=int, default=8,
                   help="for formats without splits: every K-th frame is val/test (as in "
                        "`train`; 0: all frames)")
    e.add_argument("--downscale", type=int, default=1)
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

    b = sub.add_parser("bench", help="measure kernel and training speed",
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
    b.add_argument("--time", type=float, default=60.0, help="training budget in seconds")
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


def _init(arch: str):
    from taichi_nerf import runtime
    return runtime.init(arch, verbose=True)


def _cli_option_error(e) -> CLIError:
    """The library's OptionError as the CLI's one line, naming the flag (--log2-table)."""
    if e.option is None:
        return CLIError(e.problem)
    return CLIError(f"--{e.option.replace('_', '-')} {e.problem}")


def _resolve_data(data: str, quiet: bool) -> Path:
    """A dataset folder, or the built-in scene ('builtin') or one of its variants
    ('builtin:room', 'builtin:forward'), rendered into the cache on first use."""
    from taichi_nerf.api import OptionError, resolve_data
    try:
        return resolve_data(data, progress=not quiet)
    except OptionError as e:
        raise _cli_option_error(e) from None


def _positive(name: str, value: Optional[float]) -> None:
    if value is not None and value <= 0:
        raise CLIError(f"--{name} must be > 0, got {value}")


def _prepare_training(a: argparse.Namespace):
    """taichi_nerf.api.prepare_training from the parsed options -> (trainer, val, out)."""
    from taichi_nerf.api import OptionError, prepare_training
    from taichi_nerf.train_config import TrainConfig

    # every TrainConfig field the command has a flag for and was given (None: the default)
    config = {f.name: getattr(a, f.name, None) for f in dataclasses.fields(TrainConfig)
              if f.name not in ("steps", "time", "seed")}
    try:
        return prepare_training(a.data, a.out, steps=a.steps, time=a.time,
                                downscale=a.downscale, holdout=a.holdout, seed=a.seed,
                                resume=a.resume, aabb_scale=a.aabb_scale, arch=a.arch,
                                progress=not a.quiet, print_arch=True,
                                **{k: v for k, v in config.items() if v is not None})
    except OptionError as e:
        raise _cli_option_error(e) from None


def cmd_train(a: argparse.Namespace) -> int:
    from taichi_nerf.trainer import run_training

    trainer, val, out = _prepare_training(a)
    resume = a.resume
    if a.view:
        from taichi_nerf.viewer import viewer_for_training
        if resume:
            trainer.load(out / CHECKPOINT_NAME)
            resume = False
        viewer = viewer_for_training(trainer, headless=False)
        viewer.run()  # trains between frames until the budget is spent or the window closes
    m = run_training(trainer, out, val=val, progress=not a.quiet, resume=resume)
    if m.get("interrupted"):
        print(f"stopped at step {m['steps']}; checkpoint saved in {out} (continue with --resume)")
        return 130
    print(f"done: {m['steps']} steps in {m['train_seconds']:.1f} s, "
          f"{m['samples_per_second'] / 1e3:.0f}k samples/s, "
          f"{m['mean_samples_per_ray']:.1f} samples/ray; validation PSNR {m['psnr']:.2f} dB, "
          f"SSIM {m['ssim']:.4f} on {m['views']} views{_appearance(m)}; "
          f"wrote {out / 'metrics.json'}")
    return 0


def _appearance(m: dict) -> str:
    """', appearance: mean of N training-image codes' when the run has per-image codes."""
    return f", appearance: {m['appearance']}" if m.get("appearance") else ""


def _load_run(run: Path):
    from taichi_nerf.trainer import load_model
    if not run.exists():
        raise CLIError(f"{run}: run folder not found (train one with `taichi-nerf train --out {run}`)")
    ckpt = Path(checkpoint_path(run))
    return load_model(ckpt)


def cmd_eval(a: argparse.Namespace) -> int:
    from taichi_nerf.data import load_dataset
    from taichi_nerf.trainer import evaluate, write_json

    if a.json and not a.json.parent.is_dir():
        raise CLIError(f"{a.json}: cannot write --json, folder {a.json.parent} does not exist")
    if a.save_images:
        try:
            a.save_images.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CLIError(f"{a.save_images}: cannot create the --save-images folder "
                           f"({e.strerror or e})") from None
    rt = _init(a.arch)
    cfg, renderer, scene = _load_run(a.run)
    root = _resolve_data(a.data, a.quiet)
    ds = load_dataset(root, a.split, a.downscale, a.holdout, scene=scene)
    if ds.background is None and cfg.get("background") is not None:
        ds.background = __import__("numpy").asarray(cfg["background"], "float32")
    m = evaluate(renderer, ds, progress=not a.quiet, save_dir=a.save_images)
    print(f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} over {m['views']} views "
          f"({m['seconds_per_view']:.2f} s/view, {rt.arch}){_appearance(m)}")
    if a.json:
        try:
            write_json(a.json, m)
        except OSError as e:
            raise CLIError(f"{a.json}: cannot write ({e.strerror or e})") from None
    return 0


def cmd_render(a: argparse.Namespace) -> int:
    from taichi_nerf.render_cli import render_frames

    _init(a.arch)
    cfg, renderer, scene = _load_run(a.run)
    render_frames(a, cfg, renderer, scene)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from taichi_nerf.export import check_export_args, run_export

    if not a.run.exists():
        raise CLIError(f"{a.run}: run folder not found (train one with `taichi-nerf train "
                       f"--out {a.run}`)")
    check_export_args(a)  # bad options and unwritable outputs fail before the model loads
    _init(a.arch)
    cfg, renderer, scene = _load_run(a.run)
    ckpt = Path(checkpoint_path(a.run))
    run_export(a, cfg, renderer, scene, ckpt, say=(lambda s: None) if a.quiet else print)
    return 0


def cmd_view(a: argparse.Namespace) -> int:
    from taichi_nerf.viewer import viewer_for_run, viewer_for_training

    if a.frames is not None and a.frames <= 0:
        raise CLIError(f"--frames must be > 0, got {a.frames}")
    if a.headless and a.frames is None:
        raise CLIError("--headless needs --frames N (there is no window to close)")
    if a.screenshot is not None and not a.screenshot.parent.is_dir():
        raise CLIError(f"{a.screenshot.parent}: folder does not exist (for --screenshot)")
    if a.train:
        a.data, a.resume, a.eval_every, a.log2_table = a.source, False, 0, None
        trainer, val, out = _prepare_training(a)
        viewer = viewer_for_training(trainer, a.headless, a.width, a.height)
        viewer.steps_per_frame = a.steps_per_frame
        viewer.run(frames=a.frames, screenshot=a.screenshot)
        trainer.save(out / CHECKPOINT_NAME)
        if viewer.history and not a.quiet:
            print(f"trained {trainer.step} steps; training PSNR {viewer.history[0][1]:.2f} -> "
                  f"{viewer.history[-1][1]:.2f} dB; checkpoint in {out}")
        return 0
    run = Path(a.source)
    if a.source == BUILTIN or not run.exists():
        raise CLIError(f"{a.source}: no such run folder (view a folder written by "
                       f"`taichi-nerf train --out RUN`, or add --train to train a dataset live)")
    if not Path(checkpoint_path(run)).exists():
        raise CLIError(f"{run}: no {CHECKPOINT_NAME} in this folder (for a dataset folder, add "
                       f"--train)")
    rt = _init(a.arch)
    viewer = viewer_for_run(run, rt.arch, a.headless, a.width, a.height)
    viewer.run(frames=a.frames, screenshot=a.screenshot)
    if a.screenshot is not None and not a.quiet:
        print(f"wrote {a.screenshot}")
    return 0


def cmd_process(a: argparse.Namespace) -> int:
    from taichi_nerf.process import process

    process(a.input, a.out, frames=a.frames, downscale=a.downscale, matching=a.matching,
            camera_model=a.camera_model, force=a.force, keep_database=a.keep_database,
            progress=not a.quiet, verbose=a.verbose)
    return 0


def bench_exit_code(results: Dict[str, Any]) -> int:
    """`bench`'s exit code for its results: 0, or 1 after one stderr line naming what failed."""
    from taichi_nerf.bench.kernels import check_result

    # a failed op is still reported in its row and in --json; the exit code lets scripts
    # and CI see it without parsing the table
    problems = check_result(results["kernels"]) if "kernels" in results else []
    if not problems:
        return 0
    print(f"taichi-nerf bench: error: kernel benchmark failed: {'; '.join(problems)}",
          file=sys.stderr)
    return 1


def cmd_bench(a: argparse.Namespace) -> int:
    from taichi_nerf.bench.kernels import format_markdown, run_kernel_benchmark

    if a.quick and a.training:
        raise CLIError("--quick is the kernel benchmark at small sizes and has no training part; "
                       "for a short training benchmark give --training --time SECONDS")
    rt = _init(a.arch)
    results = {}
    if a.viewer is not None:
        from taichi_nerf.bench.viewer import format_viewer_markdown, run_viewer_benchmark
        if not Path(checkpoint_path(a.viewer)).is_file():
            raise CLIError(f"{a.viewer}: no {CHECKPOINT_NAME} (train one with `taichi-nerf train "
                           f"--out {a.viewer}`)")
        rows = run_viewer_benchmark(a.viewer, rt.arch, frames=20 if rt.arch == "cpu" else 6)
        results["viewer"] = rows
        print(format_viewer_markdown(rows, str(a.viewer)))
    only_viewer = a.viewer is not None
    kernels = (a.kernels or a.quick or not a.training) and not only_viewer
    training = (a.training or not a.kernels) and not a.quick and not only_viewer
    if kernels:
        cmd = "taichi-nerf bench" + (" --quick" if a.quick else " --kernels")
        res = run_kernel_benchmark(arch=rt.arch, quick=a.quick, command=cmd)
        results["kernels"] = res
        print(format_markdown(res))
    if training:
        from taichi_nerf.bench.training import format_training_markdown, run_training_benchmark
        _positive("time", a.time)
        _positive("downscale", a.downscale)
        data = None if a.data in (None, BUILTIN) else str(_resolve_data(a.data, False))
        res = run_training_benchmark(data=data, time_budget=a.time, downscale=a.downscale,
                                     holdout=a.holdout)
        results["training"] = res
        print(format_training_markdown(res))
    if a.json:
        from taichi_nerf.atomic import atomic_write_json
        atomic_write_json(a.json, results, default=str)  # a killed bench leaves no half file
    return bench_exit_code(results)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `taichi-nerf` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    from taichi_nerf.checkpoint import CheckpointError
    from taichi_nerf.data import DataError
    from taichi_nerf.export import ExportError
    from taichi_nerf.process import ProcessError
    from taichi_nerf.render_cli import RenderError
    from taichi_nerf.runtime import ArchUnavailableError
    from taichi_nerf.trainer import TrainingDiverged
    from taichi_nerf.viewer import ViewerError

    handlers = {"train": cmd_train, "eval": cmd_eval, "render": cmd_render, "view": cmd_view,
                "bench": cmd_bench, "export": cmd_export, "process": cmd_process}
    try:
        return handlers[args.command](args)
    # the library's own errors carry one-line messages meant for the user
    except (CLIError, DataError, CheckpointError, ArchUnavailableError, ViewerError, ExportError,
            RenderError, ProcessError) as e:
        print(f"taichi-nerf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"taichi-nerf {args.command}: error: training diverged ({e}); no checkpoint was "
              f"written from the broken state — try a lower learning rate or another --seed",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"taichi-nerf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
