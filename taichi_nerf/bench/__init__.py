"""Benchmarks shipped with taichi-nerf (``taichi-nerf bench``); results in BENCHMARKS.md.

:mod:`taichi_nerf.bench.kernels` measures the Taichi kernels against the
pure-torch reference; ``training`` a timed run, ``viewer`` the preview, ``profile`` a
training step by stage against this machine's ceilings, ``cold_start`` the first step on an
empty and a warm Taichi offline cache; :mod:`taichi_nerf.bench.common` holds timing helpers
and machine information.
"""
