"""Kernel benchmark (BENCHMARKS.md section 1): Taichi ops vs the pure-torch reference.

    python benchmarks/kernels.py [--quick] [--arch cpu] [--repeats N] [--json out.json] [--markdown]

A thin runner: the code lives in taichi_nerf.bench.kernels (installed with the package).
"""
import sys
from pathlib import Path

try:
    from taichi_nerf.bench.kernels import main
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from taichi_nerf.bench.kernels import main

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/kernels.py"))
