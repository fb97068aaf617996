"""Benchmarks shipped with taichi-nerf (``taichi-nerf bench``); results in BENCHMARKS.md.

:mod:`taichi_nerf.bench.kernels` measures the Taichi kernels against the
pure-torch reference; :mod:`taichi_nerf.bench.common` holds timing helpers and
machine information.
"""
