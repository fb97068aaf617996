"""Timing helpers and machine information shared by the benchmarks.

The machine is shared and noisy: every measurement is a median of repeated
runs, and two implementations are timed interleaved in the same run so that a
slow spell hits both.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def sync() -> None:
    """Wait for queued GPU work (Taichi and torch) so wall-clock timings are honest."""
    try:
        import taichi as ti
        ti.sync()
    except Exception:  # no runtime yet, or an arch without a queue
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> Tuple[float, Any]:
    """(seconds, result) of one synchronised call of fn."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def measure(fns: Dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
            ) -> Dict[str, Dict[str, Any]]:
    """Time several implementations of one operation, interleaved.

    For each name: the first call (it includes Taichi's kernel compilation),
    then `warmup` untimed calls, then `repeats` timed calls, alternating between
    the implementations on every round. Returns per name ``first_s``,
    ``times_s``, ``median_s``, ``compile_s`` (first call minus the steady-state
    median, >= 0) and ``output`` (the first call's result, for sanity checks).
    """
    res: Dict[str, Dict[str, Any]] = {}
    for name, fn in fns.items():
        first, out = timed(fn)
        res[name] = {"first_s": first, "output": out, "times_s": []}
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn)
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t, _out = timed(fn)
            res[name]["times_s"].append(t)
            del _out
    for r in res.values():
        r["median_s"] = statistics.median(r["times_s"])
        r["compile_s"] = max(0.0, r["first_s"] - r["median_s"])
    return res


def _run(cmd: List[str], cwd: Optional[Path] = None) -> Optional[str]:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def cpu_model() -> str:
    """`lscpu`'s model name (fallbacks: /proc/cpuinfo, platform)."""
    out = _run(["lscpu"])
    if out:
        for line in out.splitlines():
            if line.strip().lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit(repo: Path = REPO_ROOT) -> Optional[str]:
    """Short commit of the checkout this code runs from, '+dirty' if it has changes; None outside git."""
    head = _run(["git", "rev-parse", "--short", "HEAD"], cwd=repo)
    if not head:
        return None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return head + ("+dirty" if status else "")


def machine_info(arch: Optional[str] = None) -> Dict[str, Any]:
    """What every benchmark figure is reported with: CPU model, cores, versions, date, commit."""
    import taichi as ti
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    info: Dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "taichi": ".".join(map(str, ti.__version__)),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "arch": arch,
    }
    from taichi_nerf.nn import runtime
    try:
        gpu = runtime.gpu_name()
    except RuntimeError:  # nothing started here (a benchmark of child processes)
        gpu = None
    if gpu is not None:
        info["gpu"] = gpu
    return info


def load_average() -> Optional[List[float]]:
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def small_op_latency_us(n: int = 1 << 16, calls: int = 50) -> float:
    """Median microseconds of one small multi-threaded torch op (clamp of n x 3 floats).

    A contention probe: it takes about 10-50 us on an idle 2-core machine; when
    another tenant holds a core, torch's OpenMP threads wait for the descheduled
    one and each op costs a scheduler slice (about 8 ms here). Many-small-op
    code (the pure-torch reference) then slows down far more than Taichi's
    kernels, which inflates Taichi/reference ratios: check this before
    quoting them.
    """
    x = torch.rand(n, 3)
    for _ in range(3):
        x.clamp(0, 1)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        x.clamp(0, 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


CONTENDED_US = 1000.0  # small_op_latency_us above this: the machine was contended


def finite_positive(x: Any) -> bool:
    """True for a finite number > 0."""
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def fmt_rate(x: Optional[float], unit: str) -> str:
    """1.234e6, 'points/s' -> '1.23 M points/s'."""
    if x is None or not math.isfinite(x):
        return "n/a"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix} {unit}"
    return f"{x:.3g} {unit}"


def log2_str(n: int) -> str:
    """262144 -> '2^18'; other numbers as they are."""
    if n > 0 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return str(n)


def progress_line(msg: str, enabled: bool) -> None:
    """One line per measurement on stderr (stdout stays free for --markdown / --json -)."""
    if enabled:
        print(msg, file=sys.stderr, flush=True)
