"""`taichi-nerf` commands: train, view, eval, render, export, bench, process; the one place that
turns the library's errors into one-line messages and exit codes."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from taichi_nerf.api import BUILTIN
from taichi_nerf.cli.parser import _parser
from taichi_nerf.kernels.specs import CHECKPOINT_NAME, checkpoint_path


class CLIError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


def _init(arch: str):
    from taichi_nerf.nn import runtime
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
    from taichi_nerf.training.config import TrainConfig

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
    from taichi_nerf.training.trainer import run_training

    trainer, val, out = _prepare_training(a)
    resume = a.resume
    if a.view:
        from taichi_nerf.viewer.app import viewer_for_training
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
    from taichi_nerf.training.trainer import load_model
    if not run.exists():
        raise CLIError(f"{run}: run folder not found (train one with `taichi-nerf train --out {run}`)")
    ckpt = Path(checkpoint_path(run))
    return load_model(ckpt)


def _eval_data(a: argparse.Namespace, cfg: dict):
    """(data, downscale, holdout) for `eval`: the options given, else what the checkpoint
    says the run was trained on (its downscale and holdout too, when DATA is that data),
    else the built-in scene at full size (said on stderr)."""
    from taichi_nerf.api import is_builtin

    rec = cfg.get("data")
    rec = rec if isinstance(rec, dict) else {}
    data = a.data
    if data is None:
        data = rec.get("data")
        if not isinstance(data, str) or not data:
            print(f"taichi-nerf eval: {a.run} does not record what it was trained on (an older "
                  f"checkpoint); evaluating on the built-in scene; pass --data to choose",
                  file=sys.stderr)
            data = BUILTIN
        elif not is_builtin(data) and not Path(data).exists():
            raise CLIError(f"{a.run} was trained on {data}, which is not on this machine; "
                           f"pass --data with that dataset's folder")

    same = data == rec.get("data") or (
        not is_builtin(data) and isinstance(rec.get("data"), str)
        and not is_builtin(rec["data"]) and Path(data).resolve() == Path(rec["data"]))

    def recorded(name: str, value, default: int) -> int:
        if value is not None:
            return value
        v = rec.get(name) if same else None
        return v if isinstance(v, int) and not isinstance(v, bool) else default

    return data, recorded("downscale", a.downscale, 1), recorded("holdout", a.holdout, 8)


def cmd_eval(a: argparse.Namespace) -> int:
    from taichi_nerf.data import load_dataset
    from taichi_nerf.training.trainer import evaluate, write_json

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
    data, downscale, holdout = _eval_data(a, cfg)
    root = _resolve_data(data, a.quiet)
    ds = load_dataset(root, a.split, downscale, holdout, scene=scene)
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
    from taichi_nerf.render.frames import render_frames

    _init(a.arch)
    cfg, renderer, scene = _load_run(a.run)
    render_frames(a, cfg, renderer, scene)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from taichi_nerf.export.command import check_export_args, run_export

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
    from taichi_nerf.viewer.app import viewer_for_run, viewer_for_training

    if a.frames is not None and a.frames <= 0:
        raise CLIError(f"--frames must be > 0, got {a.frames}")
    if a.headless and a.frames is None:
        raise CLIError("--headless needs --frames N (there is no window to close)")
    if a.screenshot is not None and not a.screenshot.parent.is_dir():
        raise CLIError(f"{a.screenshot.parent}: folder does not exist (for --screenshot)")
    if a.train:
        a.data, a.resume = a.source, False
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


def _bench_profile(a: argparse.Namespace, settings: Dict[str, Any]) -> int:
    """`bench --profile [DATA]`: the step profile's table (and --json)."""
    from taichi_nerf.bench.profile import format_profile_markdown, run_step_profile
    data = None if a.profile == BUILTIN else str(_resolve_data(a.profile, False))
    res = run_step_profile(data=data, warmup_s=a.time, steps=a.steps, downscale=a.downscale,
                           holdout=a.holdout, settings=settings)
    return _bench_report(a, "profile", res, format_profile_markdown(res))


def _profile_settings(pairs: List[str]) -> Dict[str, Any]:
    """`bench --set NAME=VALUE` pairs -> TrainConfig overrides (values checked as `train`'s)."""
    from taichi_nerf.cli.parser import checked_value
    from taichi_nerf.training.config import TrainConfig, value_kind

    hints = typing.get_type_hints(TrainConfig)
    out: Dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        field = name.strip().replace("-", "_")
        kind = value_kind(hints[field]) if field in hints else None
        if not sep or kind is None or field in ("steps", "time"):
            raise CLIError(f"--set {pair}: give NAME=VALUE with NAME a trainer setting (a "
                           f"`taichi-nerf train` flag without its dashes, not steps or time)")
        text = text.strip()
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise CLIError(f"--set {pair}: {name} takes true or false")
            out[field] = text.lower() in ("true", "1")
        else:
            try:
                out[field] = checked_value(field, kind)(text)
            except argparse.ArgumentTypeError as e:
                raise CLIError(f"--set {pair}: {name} {e}") from None
    return out


def _bench_cold_start(a: argparse.Namespace, arch: str) -> int:
    """`bench --cold-start [DATA]`: first-step times on an empty and on a warm offline cache."""
    from taichi_nerf.bench.cold_start import format_cold_start_markdown, run_cold_start_benchmark
    _positive("downscale", a.downscale)
    data = None if a.cold_start == BUILTIN else str(_resolve_data(a.cold_start, False))
    res = run_cold_start_benchmark(data=data, arch=arch, downscale=a.downscale,
                                   holdout=a.holdout)
    return _bench_report(a, "cold_start", res, format_cold_start_markdown(res))


def _bench_report(a: argparse.Namespace, key: str, result: Dict[str, Any], markdown: str) -> int:
    """Print a benchmark's Markdown, write {key: result} to --json (atomically) -> exit 0."""
    print(markdown)
    if a.json:
        from taichi_nerf.atomic import atomic_write_json
        atomic_write_json(a.json, {key: result}, default=str)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from taichi_nerf.bench.kernels import format_markdown, run_kernel_benchmark

    if a.quick and a.training:
        raise CLIError("--quick is the kernel benchmark at small sizes and has no training part; "
                       "for a short training benchmark give --training --time SECONDS")
    alone = [f for f, v in (("--profile", a.profile), ("--cold-start", a.cold_start)) if v]
    if alone and (len(alone) > 1 or a.viewer is not None or a.kernels or a.training or a.quick):
        raise CLIError(f"{' and '.join(alone)} each run alone: give one of them, without "
                       f"--viewer, --kernels, --training or --quick")
    if a.settings and a.profile is None:
        raise CLIError("--set is a setting of the step profile: give it with --profile")
    settings = _profile_settings(a.settings)  # bad options fail before Taichi starts
    if a.profile is not None:
        _positive("time", a.time)
        _positive("steps", a.steps)
        _positive("downscale", a.downscale)
        # before CUDA starts: the profile times the host, so each launch must wait for its
        # kernel (bench/profile.py); a no-op on the cpu
        from taichi_nerf.bench.profile import BLOCKING_ENV
        os.environ[BLOCKING_ENV] = "1"
    rt = _init(a.arch)
    if a.profile is not None:
        return _bench_profile(a, settings)
    if a.cold_start is not None:
        return _bench_cold_start(a, rt.arch)
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
    from taichi_nerf.kernels.checkpoint_io import CheckpointError
    from taichi_nerf.data import DataError
    from taichi_nerf.export import ExportError
    from taichi_nerf.process import ProcessError
    from taichi_nerf.render.frames import RenderError
    from taichi_nerf.nn.runtime import ArchUnavailableError
    from taichi_nerf.options import OptionError
    from taichi_nerf.training.trainer import TrainingDiverged
    from taichi_nerf.viewer.app import ViewerError
    from taichi_nerf.bench.errors import BenchError

    handlers = {"train": cmd_train, "eval": cmd_eval, "render": cmd_render, "view": cmd_view,
                "bench": cmd_bench, "export": cmd_export, "process": cmd_process}
    try:
        return handlers[args.command](args)
    # the library's own errors carry one-line messages meant for the user
    except (CLIError, DataError, CheckpointError, ArchUnavailableError, ViewerError, ExportError,
            RenderError, ProcessError, BenchError) as e:
        print(f"taichi-nerf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OptionError as e:  # a library option: named as the flag that set it
        print(f"taichi-nerf {args.command}: error: {_cli_option_error(e)}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"taichi-nerf {args.command}: error: training diverged ({e}); no checkpoint was "
              f"written from the broken state — try a lower learning rate or another --seed",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"taichi-nerf {args.command}: interrupted", file=sys.stderr)
        return 130

