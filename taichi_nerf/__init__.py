"""taichi-nerf: instant-NGP-style NeRF on Taichi kernels. The Python API::

    import taichi_nerf as tn
    tn.init("auto")                                   # as the CLI's --arch
    run = tn.train("data/lego", out="runs/lego", time=120)
    img = tn.load(run).render(c2w, width=800, height=800)   # c2w: world 4x4, OpenGL axes

Importing the package is cheap: taichi and torch load when a function first runs
(the names below are resolved lazily from ``taichi_nerf.api``).
"""
from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any

try:
    __version__: str = _metadata.version("taichi-nerf")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Nerf", "OptionError", "TrainResult", "__version__", "init", "load", "train"]

_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from taichi_nerf import api
        return getattr(api, name)
    raise AttributeError(f"module 'taichi_nerf' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | _API)
