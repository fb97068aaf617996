"""Step profile (`taichi-nerf bench --profile`): where a training step's time goes, stage by
stage, each stage's work and its rate against this machine's ceiling measured in the same run.

The split comes from torch's profiler: the hash encoding and compositing are
`torch.autograd.Function`s (forward and backward are events of their own), the MLPs and Adam
are torch ops, and `taichi_nerf.nn.profiling` names the rest (rays, marching, SH, occupancy
update, loss). What no event covers is Python and launch overhead.

On CUDA the profiler still times the host: the run needs ``CUDA_LAUNCH_BLOCKING=1`` (the CLI
sets it before CUDA starts), so that each launch returns when its kernel has run and a stage's
host time holds its GPU time. The variable holds for the whole process: every step of such a
run, the ones outside the profiler too, runs without overlap of host and device work; a
free-running step's time comes from a `train` run.
"""

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import taichi as ti
from torch import nn

from taichi_nerf.bench.common import machine_info, measure, progress_line
from taichi_nerf.bench.kernels import COPY_BYTES, gemm_gflops, machine_ceilings
from taichi_nerf.nn import profiling
from taichi_nerf.options import OptionError

BWD = "autograd::engine::evaluate_function: "
# stage -> (work unit, ceiling key or None); the order is the table's
STAGES: Tuple[Tuple[str, str, Optional[str]], ...] = (
    ("ray generation", "rays", None),
    ("marching", "samples", None),
    ("hash encode fwd", "lookups", "random_reads_s"),
    ("hash encode bwd", "lookups", "random_reads_s"),
    ("SH encode", "bytes", "copy_bytes_s"),
    ("MLP fwd", "flop", "gemm_step_flop_s"),
    ("MLP bwd", "flop", "gemm_step_flop_s"),
    ("compositing fwd", "bytes", "copy_bytes_s"),
    ("compositing bwd", "bytes", "copy_bytes_s"),
    ("loss fwd", "rays", None),
    ("other backward", "", None),
    ("optimizer", "bytes", "copy_bytes_s"),
    ("occupancy update", "updates", None),
    ("other torch ops", "", None),
    ("Python and launch overhead", "", None),
)
_LABELLED = {profiling.PREFIX + profiling.RAYS: "ray generation",
             profiling.PREFIX + profiling.MARCH: "marching",
             profiling.PREFIX + profiling.SH: "SH encode",
             profiling.PREFIX + profiling.OCCUPANCY: "occupancy update",
             profiling.PREFIX + profiling.LOSS: "loss fwd",
             "_HashEncode": "hash encode fwd", BWD + "_HashEncodeBackward": "hash encode bwd",
             "_Composite": "compositing fwd", BWD + "_CompositeBackward": "compositing bwd"}
# the field's MLPs: linear layers, their activations and the glue between the two networks
_MLP_FWD = {"aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::relu",
            "aten::relu_", "aten::sigmoid", "_TruncExp", "aten::cat", "aten::select"}
_MLP_BWD = {"AddmmBackward0", "MmBackward0", "TBackward0", "ReluBackward0", "SigmoidBackward0",
            "_TruncExpBackward", "CatBackward0", "SelectBackward0", "SliceBackward0",
            "torch::autograd::AccumulateGrad"}
# bytes a stage moves per unit of work (float32): SH reads a direction and writes the basis;
# compositing reads sigma, rgb, t, dt per sample and its backward also writes d sigma, d rgb;
# fused Adam reads parameter, gradient, both moments and writes parameter and moments
COMPOSITE_FWD_BYTES, COMPOSITE_BWD_BYTES, ADAM_BYTES = 24, 40, 28
RANDOM_READS = 1 << 22
_RATED = ("rays", "samples", "lookups", "flop", "bytes")  # units whose rate means something


def stage_of(name: str) -> str:
    """The profile stage of a top-level profiler event called `name`."""
    if name in _LABELLED:
        return _LABELLED[name]
    if name.startswith("Optimizer."):
        return "optimizer"
    if name.startswith(BWD):
        return "MLP bwd" if name[len(BWD):] in _MLP_BWD else "other backward"
    return "MLP fwd" if name in _MLP_FWD else "other torch ops"


def split_events(events) -> Dict[str, float]:
    """Top-level profiler events -> seconds per stage (nested events count in their parent)."""
    out: Dict[str, float] = {}
    for e in events:
        if e.cpu_parent is None:
            s = stage_of(e.name)
            out[s] = out.get(s, 0.0) + e.cpu_time_total * 1e-6
    return out


def mlp_flop_per_sample(field: nn.Module) -> int:
    """Forward FLOPs of one sample through every linear layer of the field (2 per MAC)."""
    return sum(2 * m.in_features * m.out_features for m in field.modules()
               if isinstance(m, nn.Linear))


BLOCKING_ENV = "CUDA_LAUNCH_BLOCKING"


@ti.kernel
def _gather_pairs(table: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  out: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """out[i] = the sum of a pseudo-random row (2 floats) of table: one random 8-byte read each."""
    rows = ti.u32(table.shape[0])
    for i in out:
        j = ti.i32((ti.u32(i) * ti.u32(2654435761)) % rows)  # the hash grid's first prime
        out[i] = table[j, 0] + table[j, 1]


def random_read_rate(rows: int, repeats: int, dev=None) -> float:
    """Random 8-byte reads per second (a Taichi kernel, float32 pairs) from a table of `rows`
    rows on torch device `dev` (default cpu): the hash grid's lookup pattern without its
    arithmetic or neighbouring corners."""
    import torch

    # torch tensors on the runtime's device: a numpy array would be copied to a GPU and back
    table = torch.from_numpy(np.random.default_rng(401).random((rows, 2), dtype=np.float32))
    table = table.to(dev or "cpu")
    out = torch.empty(RANDOM_READS, dtype=torch.float32, device=table.device)
    t = measure({"gather": lambda: _gather_pairs(table, out)}, repeats)
    return RANDOM_READS / t["gather"]["median_s"]


def profile_ceilings(samples: int, table_rows: int, repeats: int, dev) -> Dict[str, float]:
    """This machine's ceilings for the stages: GEMM at the step's MLP shape and square, copy
    bandwidth, random reads from a table of the hash grid's size."""
    base = machine_ceilings(repeats, dev)
    return {"gemm_step_flop_s": gemm_gflops(max(samples, 64), 64, 64, repeats, dev) * 1e9,
            "gemm_square_flop_s": gemm_gflops(1024, 1024, 1024, repeats, dev) * 1e9,
            "copy_bytes_s": base["copy_into_gb_s"] * 1e9, "copy_bytes": COPY_BYTES,
            "random_reads_s": random_read_rate(table_rows, repeats, dev),
            "table_rows": table_rows}


def _work(trainer, samples: float, rays: float, updates: int, steps: int) -> Dict[str, float]:
    """Work per step of each stage that has a unit (see STAGES)."""
    field = trainer.field
    lookups = samples * field.config.grid.n_levels * 8
    flop = samples * mlp_flop_per_sample(field)
    sh_bytes = samples * (12 + 4 * field.config.sh_degree ** 2)
    n_params = sum(p.numel() for p in field.parameters())
    return {"ray generation": rays, "marching": samples, "hash encode fwd": lookups,
            "hash encode bwd": lookups, "SH encode": sh_bytes, "MLP fwd": flop,
            "MLP bwd": 2 * flop, "compositing fwd": samples * COMPOSITE_FWD_BYTES,
            "compositing bwd": samples * COMPOSITE_BWD_BYTES, "loss fwd": rays,
            "optimizer": n_params * ADAM_BYTES, "occupancy update": updates / steps}


def _train_for(trainer, seconds: float, read_every: int) -> float:
    """Train until `seconds` have passed (at least one step) -> the first step's seconds."""
    start = time.perf_counter() - trainer.elapsed
    first = None
    while first is None or trainer.elapsed < seconds:
        t0 = time.perf_counter()
        trainer.train_step(read_loss=trainer.step % read_every == 0)
        first = time.perf_counter() - t0 if first is None else first
        trainer.elapsed = time.perf_counter() - start
    return first


def _steps(trainer, n: int, read_every: int) -> Tuple[float, float, float, int]:
    """n steps -> (seconds, samples, rays, occupancy updates)."""
    samples = rays = updates = 0
    t0 = time.perf_counter()
    for _ in range(n):
        updates += trainer.grid.due(trainer.step)
        s = trainer.train_step(read_loss=trainer.step % read_every == 0)
        samples += s["samples"]
        rays += s["rays"]
    return time.perf_counter() - t0, samples, rays, updates


def run_step_profile(data: Optional[str] = None, warmup_s: float = 60.0, steps: int = 32,
                     downscale: int = 1, holdout: int = 8, repeats: int = 5,
                     settings: Optional[Dict[str, Any]] = None,
                     progress: bool = True) -> Dict[str, Any]:
    """Train `warmup_s` seconds on `data` (default: the built-in scene) with the trainer's
    defaults (or these TrainConfig `settings`), then profile `steps` steps -> per-stage
    seconds, work and rate, this machine's ceilings, first-step seconds."""
    from torch.profiler import ProfilerActivity, profile

    from taichi_nerf.data import load_dataset
    from taichi_nerf.data.builtin import ensure_builtin_scene
    from taichi_nerf.nn import runtime
    from taichi_nerf.training.trainer import LOSS_READ_EVERY, TrainConfig, Trainer

    rt = runtime.current()
    on_gpu = rt.torch_device.type != "cpu"  # the GPU's queue runs apart from the host
    if not runtime.torch_shares_device(rt.arch) or (
            on_gpu and os.environ.get(BLOCKING_ENV) != "1"):
        # torch's CPU profiler times when work is queued, not when a GPU runs it
        raise OptionError("arch", f"must be cpu, or cuda with {BLOCKING_ENV}=1 set before CUDA "
                                  f"starts, for the step profile (got {rt.arch}): torch's "
                                  f"profiler times the host, and GPU stages run apart from it")
    if steps < 1:
        raise OptionError("steps", f"must be at least 1, got {steps}")
    root = Path(data) if data else ensure_builtin_scene(progress=progress)
    from taichi_nerf.training.config import settings_for

    # as `train` builds it: the settings given over the arch's own defaults
    cfg = TrainConfig(**settings_for(rt.arch, settings or {}), time=warmup_s, steps=None)
    trainer = Trainer(load_dataset(root, "train", downscale, holdout), cfg)
    progress_line(f"profile: training {warmup_s:g} s on {root.name} before the profile", progress)
    first = _train_for(trainer, warmup_s, LOSS_READ_EVERY)
    plain = _steps(trainer, steps, LOSS_READ_EVERY)
    progress_line(f"profile: {steps} steps under torch's profiler", progress)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall, samples, rays, updates = _steps(trainer, steps, LOSS_READ_EVERY)
    seconds = split_events(prof.events())
    seconds["Python and launch overhead"] = max(0.0, wall - sum(seconds.values()))
    per_step = {k: v / steps for k, v in seconds.items()}
    s_step, r_step = samples / steps, rays / steps
    progress_line("profile: ceilings (GEMM, copy, random reads)", progress)
    table_rows = trainer.field.grid.table.numel() // trainer.field.config.grid.n_features
    ceil = profile_ceilings(int(s_step), table_rows, repeats, rt.torch_device)
    work = _work(trainer, s_step, r_step, updates, steps)
    rows: List[Dict[str, Any]] = []
    for name, unit, ceiling_key in STAGES:
        t = per_step.get(name, 0.0)
        w = work.get(name)
        rate = w / t if unit in _RATED and w is not None and t > 0 else None
        ceiling = ceil[ceiling_key] if ceiling_key else None
        rows.append({"stage": name, "seconds": t, "share": t / (wall / steps), "work": w,
                     "unit": unit, "rate": rate, "ceiling": ceiling,
                     "of_ceiling": rate / ceiling if rate and ceiling else None})
    return {"machine": machine_info(rt.arch), "data": str(root), "warmup_s": warmup_s,
            "steps": steps, "step_at_profile": trainer.step - steps,
            "first_step_s": first, "step_s": wall / steps,
            "blocking_launches": on_gpu, "step_s_unprofiled": plain[0] / steps,
            "samples_per_step": s_step, "rays_per_step": r_step,
            "occupancy_updates": updates, "ceilings": ceil, "stages": rows}


def _num(x: Optional[float], unit: str) -> str:
    """A work or rate figure with an SI prefix; '-' when there is none."""
    if x is None:
        return "-"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def format_profile_markdown(r: Dict[str, Any]) -> str:
    """The profile as a Markdown block for BENCHMARKS.md."""
    mach, c = r["machine"], r["ceilings"]
    lines = [
        f"### Step profile: {Path(r['data']).name}, {r['steps']} steps from step "
        f"{r['step_at_profile']} (after {r['warmup_s']:g} s of training)",
        f"Machine: {mach.get('cpu_model')}, {mach.get('cpu_count')} cores"
        + (f", {mach['gpu']}" if mach.get("gpu") else "") + f", arch "
        f"{mach.get('arch')}, commit {mach.get('commit')}, {mach.get('date')}",
        "",
        f"Step: {1e3 * r['step_s']:.1f} ms under the profiler, "
        f"{1e3 * r['step_s_unprofiled']:.1f} ms without"
        + (" (launches still blocking)" if r.get("blocking_launches") else "") + "; "
        f"{r['samples_per_step']:.0f} samples, "
        f"{r['rays_per_step']:.0f} rays a step; {r['occupancy_updates']} occupancy updates; "
        f"first step of the run {r['first_step_s']:.1f} s (compilation included)."
        + (" Every CUDA launch blocked until its kernel ended (a stage's time holds its GPU "
           "time; no overlap)." if r.get("blocking_launches") else ""),
        f"Ceilings measured in this run: GEMM {c['gemm_step_flop_s'] / 1e9:.1f} GFLOP/s at the "
        f"step's shape ({r['samples_per_step']:.0f} x 64 @ 64 x 64), "
        f"{c['gemm_square_flop_s'] / 1e9:.1f} GFLOP/s square (1024); copy "
        f"{c['copy_bytes_s'] / 1e9:.1f} GB/s ({c['copy_bytes'] >> 20} MiB); random 8-byte reads "
        f"{c['random_reads_s'] / 1e6:.0f} M/s from a {c['table_rows']}-row table.",
        "",
        "| stage | ms/step | share of step | work/step | rate | share of ceiling |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in r["stages"]:
        share = "-" if s["of_ceiling"] is None else f"{100 * s['of_ceiling']:.0f}%"
        lines.append(f"| {s['stage']} | {1e3 * s['seconds']:.2f} | {100 * s['share']:.1f}% | "
                     f"{_num(s['work'], s['unit'])} | "
                     f"{_num(s['rate'], s['unit'] + '/s') if s['rate'] else '-'} | {share} |")
    return "\n".join(lines + [""])
