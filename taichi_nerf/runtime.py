"""The one place that calls ``ti.init`` and picks the torch device.

Nothing else in taichi-nerf names a device: kernels take whatever arrays they
are given, and the torch side asks :func:`device` where to put tensors.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
from typing import Optional

import taichi as ti
import torch

log = logging.getLogger("taichi_nerf")

ARCHS = ("auto", "cpu", "cuda", "vulkan", "metal")


class ArchUnavailableError(RuntimeError):
    """The requested Taichi arch cannot run on this machine."""


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What :func:`init` chose: Taichi arch name, torch device, CPU threads and why."""

    arch: str
    torch_device: torch.device
    cpu_threads: int
    reason: str
    generation: int

    @property
    def zero_copy(self) -> bool:
        """True where Taichi kernels read torch tensors in place (cpu/cpu, cuda/cuda)."""
        return torch_shares_device(self.arch)

    @property
    def ndarray_autodiff(self) -> bool:
        """True where Taichi 1.7.4 differentiates ndarray kernels correctly (cpu, cuda)."""
        return self.arch in ("cpu", "cuda")

    @property
    def table_grad(self) -> str:
        """Hash-table gradient kernel for this arch: "by_level" (few CPU cores: one task per
        level, no atomics), "atomic" (CUDA: one thread per point and level) or "field"
        (Vulkan/Metal: field autodiff, as ndarray autodiff is unavailable there)."""
        return {"cpu": "by_level", "cuda": "atomic"}.get(self.arch, "field")


def torch_shares_device(arch: str) -> bool:
    """True where torch can run on the Taichi arch's device (cpu, cuda), so torch ops may sit
    inside a frame or a step; on vulkan/metal only the torch-free kernels can."""
    return arch in ("cpu", "cuda")


_current: Optional[Runtime] = None
_generation = 0


def _ti_arch(name: str):
    return {"cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan, "metal": ti.metal}[name]


def _running_arch_name() -> str:
    arch = ti.lang.impl.current_cfg().arch
    if arch in (ti.x64, ti.arm64):
        return "cpu"
    return {ti.cuda: "cuda", ti.vulkan: "vulkan", ti.metal: "metal"}.get(arch, str(arch))


def _torch_device_for(arch: str) -> torch.device:
    if arch == "cuda":
        if not torch.cuda.is_available():
            raise ArchUnavailableError(
                "arch 'cuda': Taichi found a CUDA GPU but this torch build has no CUDA "
                "support; install a CUDA build of torch or use --arch cpu")
        return torch.device("cuda", torch.cuda.current_device())
    # Vulkan and Metal: the torch side (MLP, optimizer) runs on the CPU; Taichi
    # copies ndarray arguments to the GPU and back at each kernel call.
    return torch.device("cpu")


def _try_init(arch: str, threads: int, debug: bool, seed: int) -> bool:
    """ti.init on `arch`; True if Taichi really runs there (it silently falls back to CPU)."""
    ti.init(arch=_ti_arch(arch), default_fp=ti.f32, default_ip=ti.i32,
            cpu_max_num_threads=threads,
            debug=debug, random_seed=seed, log_level=ti.WARN, offline_cache=True)
    return _running_arch_name() == arch


def init(arch: str = "auto", cpu_threads: Optional[int] = None, debug: bool = False,
         seed: int = 0, verbose: bool = False) -> Runtime:
    """Initialise Taichi on `arch` and pick the matching torch device; returns what was chosen.

    `auto` tries CUDA (with a CUDA torch), then Metal on macOS, then the CPU.
    Vulkan is never picked by `auto`: without a GPU it runs on a CPU emulation
    (lavapipe) that is slower than the CPU backend; ask for it by name.
    Calling again with the same settings is a no-op; another arch re-initialises
    Taichi (fields and kernels compiled before are then invalid).
    """
    global _current, _generation
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    threads = int(cpu_threads or os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"cpu_threads must be >= 1, got {threads}")
    if (_current is not None and arch in (_current.arch, "auto")
            and threads == _current.cpu_threads and not debug):
        return _current

    torch.set_num_threads(threads)
    if arch == "auto":
        candidates = []
        if torch.cuda.is_available():
            candidates.append("cuda")
        if platform.system() == "Darwin":
            candidates.append("metal")
        reason = ""
        chosen = None
        for cand in candidates:
            if _try_init(cand, threads, debug, seed):
                chosen = cand
                break
            reason += f"{cand} unavailable; "
        if chosen is None:
            if not _try_init("cpu", threads, debug, seed):
                raise ArchUnavailableError("Taichi could not start even on the CPU")
            chosen = "cpu"
            if not candidates:
                reason += "no CUDA-enabled torch and not macOS; "
            reason += "using the CPU"
        else:
            reason = f"{chosen} is available"
    else:
        if not _try_init(arch, threads, debug, seed):
            got = _running_arch_name()
            ti.reset()
            _current = None
            raise ArchUnavailableError(
                f"arch {arch!r} is not available on this machine (Taichi fell back to {got}); "
                + {"cuda": "it needs an NVIDIA GPU and driver",
                   "vulkan": "install a Vulkan driver (e.g. Debian: mesa-vulkan-drivers libvulkan1)",
                   "metal": "it needs macOS with a Metal GPU"}.get(arch, "")
                + "; or use --arch cpu")
        chosen, reason = arch, "asked for"

    _generation += 1
    dev = _torch_device_for(chosen)
    _current = Runtime(arch=chosen, torch_device=dev, cpu_threads=threads,
                       reason=reason, generation=_generation)
    msg = (f"taichi-nerf: Taichi arch {chosen} ({reason}), torch device {dev}, "
           f"{threads} CPU threads")
    if verbose:
        print(msg)
    log.info(msg)
    return _current


def current() -> Runtime:
    """The runtime chosen by the last :func:`init`; raises if none was made."""
    if _current is None:
        raise RuntimeError("taichi_nerf.runtime.init() has not been called; call it "
                           "(or pass --arch to the CLI) before running kernels")
    return _current


def device() -> torch.device:
    """The torch device matching the Taichi arch (cuda for cuda, cpu otherwise)."""
    return current().torch_device


def gpu_name() -> Optional[str]:
    """Name of the GPU torch runs on, or None when torch runs on the CPU (benchmark records)."""
    dev = device()
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
