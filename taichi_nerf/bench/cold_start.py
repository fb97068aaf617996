"""Cold start (`taichi-nerf bench --cold-start`): the first training step of a fresh process on
an empty Taichi offline cache, then again on the cache that run left.

Each run is its own Python process (Taichi compiles once per process and writes its offline
cache when the program ends), with `TI_OFFLINE_CACHE_FILE_PATH` pointing at a folder of this
benchmark's own, so the user's cache is neither used nor touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from taichi_nerf.bench.common import machine_info, progress_line
from taichi_nerf.bench.errors import BenchError

CACHE_ENV = "TI_OFFLINE_CACHE_FILE_PATH"
RESULT_TAG = "cold-start-result: "  # the child's one stdout line the parent reads


def first_step(data: Optional[str], arch: str, downscale: int, holdout: int) -> Dict[str, float]:
    """In this process: seconds to import and start Taichi and torch, to load the data and
    build the trainer (defaults), and of its first step (compilation included)."""
    t0 = time.perf_counter()
    from taichi_nerf.data import load_dataset
    from taichi_nerf.data.builtin import ensure_builtin_scene
    from taichi_nerf.nn import runtime
    from taichi_nerf.training.trainer import TrainConfig, Trainer

    runtime.init(arch)
    t1 = time.perf_counter()
    root = Path(data) if data else ensure_builtin_scene(progress=False)
    trainer = Trainer(load_dataset(root, "train", downscale, holdout), TrainConfig(steps=1))
    t2 = time.perf_counter()
    trainer.train_step(read_loss=True)
    t3 = time.perf_counter()
    return {"start_s": t1 - t0, "setup_s": t2 - t1, "first_step_s": t3 - t2}


def _kernel_files(cache: Path) -> int:
    return sum(1 for p in cache.rglob("*.tic") if p.is_file())


def _child_code(data: Optional[str], arch: str, downscale: int, holdout: int) -> str:
    args = json.dumps([data, arch, downscale, holdout])
    return ("import json, sys; from taichi_nerf.bench.cold_start import first_step, RESULT_TAG; "
            f"print(RESULT_TAG + json.dumps(first_step(*json.loads({args!r}))), flush=True)")


def run_cold_start_benchmark(data: Optional[str] = None, arch: str = "cpu", downscale: int = 1,
                             holdout: int = 8, cache: Optional[Path] = None,
                             progress: bool = True) -> Dict[str, Any]:
    """Two fresh processes, each one training step on `data` (default: the built-in scene):
    the first on an empty offline cache, the second on what the first left -> their times."""
    tmp = None
    if cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="taichi-nerf-cold-")
        cache = Path(tmp.name)
    cache.mkdir(parents=True, exist_ok=True)
    if _kernel_files(cache):
        raise BenchError(f"{cache} already holds compiled kernels; give an empty folder")
    env = dict(os.environ, **{CACHE_ENV: str(cache)})
    runs: List[Dict[str, Any]] = []
    try:
        for label in ("empty cache", "the cache run 1 left"):
            progress_line(f"cold start: one training step on {label}", progress)
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", _child_code(data, arch, downscale, holdout)],
                               env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT_TAG)]
            if p.returncode != 0 or not lines:
                tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
                raise BenchError(f"the cold-start child process failed ({p.returncode}): {tail}")
            runs.append({"cache": label, **json.loads(lines[-1][len(RESULT_TAG):]),
                         "process_s": wall, "kernel_files_after": _kernel_files(cache)})
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"machine": machine_info(arch), "data": data or "built-in scene", "runs": runs}


def format_cold_start_markdown(r: Dict[str, Any]) -> str:
    """The two runs as a Markdown block for BENCHMARKS.md."""
    mach = r["machine"]
    lines = [f"### Cold start: {Path(r['data']).name}, arch {mach.get('arch')}",
             f"Machine: {mach.get('cpu_model')}, {mach.get('cpu_count')} cores, commit "
             f"{mach.get('commit')}, {mach.get('date')}", "",
             "| Taichi offline cache | import + init | data + trainer | first step | "
             "process wall | kernel files after |", "|---|---:|---:|---:|---:|---:|"]
    for run in r["runs"]:
        lines.append(f"| {run['cache']} | {run['start_s']:.1f} s | {run['setup_s']:.1f} s | "
                     f"{run['first_step_s']:.1f} s | {run['process_s']:.1f} s | "
                     f"{run['kernel_files_after']} |")
    return "\n".join(lines + [""])
