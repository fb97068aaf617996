"""The one place that calls ``ti.init``: pick a Taichi arch, torch-free.

Users of the kernels alone call :func:`init`; ``taichi_nerf.nn.runtime.init``
builds on it and adds the matching torch device. Nothing runs at import, and Taichi is
not even imported until :func:`init` runs: the CLI's flag parser reads :data:`ARCHS` and
:data:`ARCH_DEFAULTS` from here, and `--help` should neither wait ~0.5 s for Taichi nor
print its banner.
"""
from __future__ import annotations

import atexit
import dataclasses
import gc
import os
import platform
from typing import Any, Dict, Optional, Sequence

from . import taichi_frontend

ARCHS = ("auto", "cpu", "cuda", "vulkan", "metal")

# Training settings whose best value on an arch is not the 2-core CPU's (TrainConfig's own
# defaults): instant-ngp's batch (2^18 samples a step) and table (2^19 entries a level). On an
# H200, Lego 800x800, 300 s: 45929 steps at 40 M samples/s, 34.9 dB (BENCHMARKS 4b); the
# CPU's 2^14 samples a step would leave such a GPU waiting on launches. Only cuda: the Vulkan
# path has run on lavapipe (a CPU) alone. Kept here, with the archs, so that no other module
# names one.
ARCH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "cuda": {"target_samples": 1 << 18, "max_rays": 1 << 18, "log2_table": 19},
}


class ArchUnavailableError(RuntimeError):
    """The requested Taichi arch cannot run on this machine."""


@dataclasses.dataclass(frozen=True)
class TaichiRuntime:
    """What :func:`init` chose: Taichi arch name, CPU threads, why, and which ti.init it was.

    ``generation`` grows with every ``ti.init``; fields and kernels made under an
    older generation are invalid. ``by_auto``: chosen by ``auto`` (not named), so a
    later ``auto`` whose candidates exclude it may choose again.
    """

    arch: str
    cpu_threads: int
    reason: str
    generation: int
    by_auto: bool = False


_current: Optional[TaichiRuntime] = None
_generation = 0


def _ti_arch(name: str):
    import taichi as ti
    return {"cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan, "metal": ti.metal}[name]


def _running_arch_name() -> str:
    import taichi as ti
    arch = ti.lang.impl.current_cfg().arch
    if arch in (ti.x64, ti.arm64):
        return "cpu"
    return {ti.cuda: "cuda", ti.vulkan: "vulkan", ti.metal: "metal"}.get(arch, str(arch))


def _flush_at_exit() -> None:
    """ti.reset() before the interpreter tears down: that is when Taichi writes the kernels
    it compiled to its offline cache. Left to the interpreter's teardown, a training run's
    program was never finalised and every CLI run compiled everything again (24-31 s)."""
    import taichi as ti
    if _current is not None:
        ti.reset()


_exit_hook = False
_retired: dict = {}  # id -> ndarray of an ended Taichi program, never dropped (_retire_ndarrays)


def _retire_ndarrays() -> None:
    """Before Taichi starts again: free the unreachable ndarrays while their program still
    runs, and keep every other one alive for good.

    Taichi 1.7.4 frees an ndarray by calling ``delete_ndarray(address)`` on whichever
    program runs when its Python object dies, and pybind hands a new ndarray that lands at a
    freed address the dead one's wrapper. So an ndarray of the old program that died after
    ``ti.init`` freed a live one of the new program (seen in CI: the hash table of a model
    loaded after a re-init, 'argument not found' at its next launch; reproduced with 200
    ndarrays kept across a re-init, 2 of 200 new ones freed when they were dropped)."""
    import taichi as ti
    if ti.lang.impl.get_runtime().prog is None:
        return
    gc.collect()
    _retired.update((id(o), o) for o in gc.get_objects()
                    if isinstance(o, ti.lang._ndarray.Ndarray))


def _try_init(arch: str, threads: int, debug: bool, seed: int) -> bool:
    """ti.init on `arch`; True if Taichi really runs there (it silently falls back to CPU)."""
    import taichi as ti
    global _exit_hook
    if not _exit_hook:
        atexit.register(_flush_at_exit)
        _exit_hook = True
    _retire_ndarrays()
    taichi_frontend.install()
    ti.init(arch=_ti_arch(arch), default_fp=ti.f32, default_ip=ti.i32,
            cpu_max_num_threads=threads,
            debug=debug, random_seed=seed, log_level=ti.WARN, offline_cache=True)
    return _running_arch_name() == arch


def default_auto_order() -> Sequence[str]:
    """The archs `auto` tries before the CPU without torch: CUDA, then Metal on macOS."""
    return ("cuda",) + (("metal",) if platform.system() == "Darwin" else ())


def init(arch: str = "auto", cpu_threads: Optional[int] = None, debug: bool = False,
         seed: int = 0, auto_order: Optional[Sequence[str]] = None) -> TaichiRuntime:
    """Start Taichi on `arch` ("auto", "cpu", "cuda", "vulkan", "metal"); returns what was chosen.

    `auto` tries the archs of `auto_order` (default :func:`default_auto_order`; Taichi
    logs a warning for each one it cannot start), then the CPU. Vulkan is never picked
    by `auto`: without a GPU it runs on a CPU emulation (lavapipe) that is slower than
    the CPU backend; ask for it by name. Calling again with the same settings is a
    no-op, and so is `auto` while Taichi runs on a named arch, or on one an earlier
    `auto` chose that is among this call's candidates (or the CPU). Otherwise Taichi
    starts again (fields and kernels made before are then invalid): another named arch,
    or an `auto` that cannot use what an earlier `auto` chose (the built-in scene's
    renderer starts Taichi with the default order, before the torch side asks for an
    `auto` without CUDA when its torch build has none). ArchUnavailableError if a named
    arch cannot run here.
    """
    global _current, _generation
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    threads = int(cpu_threads or os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"cpu_threads must be >= 1, got {threads}")
    candidates = list(default_auto_order() if auto_order is None else auto_order)
    if (_current is not None and threads == _current.cpu_threads and not debug
            and (arch == _current.arch
                 or (arch == "auto" and (not _current.by_auto
                                         or _current.arch in candidates + ["cpu"])))):
        return _current

    if arch == "auto":
        reason = ""
        chosen = None
        for cand in candidates:
            if _try_init(cand, threads, debug, seed):
                chosen = cand
                break
            reason += f"{cand} unavailable; "
        if chosen is None:
            if not _try_init("cpu", threads, debug, seed):
                _current = None
                raise ArchUnavailableError("Taichi could not start even on the CPU")
            chosen = "cpu"
            reason += "using the CPU"
        else:
            reason = f"{chosen} is available"
    else:
        if not _try_init(arch, threads, debug, seed):
            got = _running_arch_name()
            _retire_ndarrays()
            import taichi as ti
            ti.reset()
            _current = None
            raise ArchUnavailableError(
                f"arch {arch!r} is not available on this machine (Taichi fell back to {got}); "
                + {"cuda": "it needs an NVIDIA GPU and driver",
                   "vulkan": "install a Vulkan driver "
                             "(e.g. Debian: mesa-vulkan-drivers libvulkan1)",
                   "metal": "it needs macOS with a Metal GPU"}.get(arch, "")
                + "; or choose arch 'cpu'")
        chosen, reason = arch, "asked for"

    _generation += 1
    _current = TaichiRuntime(arch=chosen, cpu_threads=threads, reason=reason,
                             generation=_generation, by_auto=arch == "auto")
    return _current


def current() -> Optional[TaichiRuntime]:
    """The runtime chosen by the last :func:`init`, or None if Taichi was not started here."""
    return _current
