"""The one place that picks the torch device, on the Taichi arch ``kernels.runtime`` starts.

Nothing else in taichi-nerf names a device: kernels take whatever arrays they
are given, and the torch side asks :func:`device` where to put tensors.
``ti.init`` itself is called only by the torch-free ``taichi_nerf.kernels.runtime``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import torch

from taichi_nerf.kernels import runtime as ti_runtime
from taichi_nerf.kernels.hash_grid import table_grad_method
from taichi_nerf.kernels.runtime import ARCHS, ArchUnavailableError

__all__ = ["ARCHS", "ArchUnavailableError", "Runtime", "init", "current", "device", "gpu_name",
           "torch_shares_device"]

log = logging.getLogger("taichi_nerf")


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What :func:`init` chose: Taichi arch name, torch device, CPU threads and why."""

    arch: str
    torch_device: torch.device
    cpu_threads: int
    reason: str
    generation: int

    @property
    def ndarray_autodiff(self) -> bool:
        """True where Taichi 1.7.4 differentiates ndarray kernels correctly (cpu, cuda)."""
        return self.arch in ("cpu", "cuda")

    @property
    def table_grad(self) -> str:
        """Hash-table gradient kernel for this arch (kernels.hash_grid.table_grad_method)."""
        return table_grad_method(self.arch)


def torch_shares_device(arch: str) -> bool:
    """True where torch can run on the Taichi arch's device (cpu, cuda), so torch ops may sit
    inside a frame or a step; on vulkan/metal only the torch-free kernels can."""
    return arch in ("cpu", "cuda")


_current: Optional[Runtime] = None


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


def init(arch: str = "auto", cpu_threads: Optional[int] = None, debug: bool = False,
         seed: int = 0, verbose: bool = False) -> Runtime:
    """Initialise Taichi on `arch` and pick the matching torch device; returns what was chosen.

    Taichi is started by the torch-free ``taichi_nerf.kernels.runtime.init`` (see there
    for `auto`, re-initialisation and errors); here `auto` tries CUDA only with a
    CUDA build of torch, since the torch side must run on the same device.
    """
    global _current
    cuda_torch = torch.cuda.is_available()
    order = tuple(a for a in ti_runtime.default_auto_order() if a != "cuda" or cuda_torch)
    rt = ti_runtime.init(arch, cpu_threads=cpu_threads, debug=debug, seed=seed, auto_order=order)
    if _current is not None and _current.generation == rt.generation:
        return _current

    torch.set_num_threads(rt.cpu_threads)
    reason = rt.reason
    if arch == "auto" and not cuda_torch and rt.arch == "cpu":
        reason = "no CUDA-enabled torch; " + reason
    dev = _torch_device_for(rt.arch)
    _current = Runtime(arch=rt.arch, torch_device=dev, cpu_threads=rt.cpu_threads,
                       reason=reason, generation=rt.generation)
    msg = (f"taichi-nerf: Taichi arch {rt.arch} ({reason}), torch device {dev}, "
           f"{rt.cpu_threads} CPU threads")
    if verbose:
        print(msg)
    log.info(msg)
    return _current


def current() -> Runtime:
    """The runtime of the arch Taichi runs on now; raises if Taichi was not started."""
    rt = ti_runtime.current()
    if rt is None:
        raise RuntimeError("taichi_nerf.nn.runtime.init() has not been called; call it "
                           "(or pass --arch to the CLI) before running kernels")
    if _current is None or _current.generation != rt.generation:
        # Taichi was (re)started through kernels.runtime.init: a Runtime of an older
        # ti.init would hand out its invalid fields (ops caches them by generation). An
        # `auto` start (the built-in scene's renderer in data/) is taken as `auto` here,
        # so it is kept unless torch cannot share its device (CUDA without a CUDA torch)
        return init("auto" if rt.by_auto else rt.arch, cpu_threads=rt.cpu_threads)
    return _current


def device() -> torch.device:
    """The torch device matching the Taichi arch (cuda for cuda, cpu otherwise)."""
    return current().torch_device


def gpu_name() -> Optional[str]:
    """Name of the GPU torch runs on, or None when torch runs on the CPU (benchmark records)."""
    dev = device()
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
