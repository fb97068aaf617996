"""Hash-grid forward, level-major (the kernel) vs point-major (BENCHMARKS.md section 3d).

    python benchmarks/hash_order.py [--log2-table 17 19] [--points 262144] [--repeats 5]

The library's forward looks up one level for every point before the next level for large
tables. This script builds the order it replaced, each point looking up all its levels in
turn (the kernels' own point-major form), and times both on the cpu in one process,
alternating: uniform random points, and points in ray order (rays of 32 samples 0.002
apart, as a march packs them). Both must give the same features.
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np


def point_major_forward(spec):
    """The forward as it was: a thread per point, all levels in turn (the cpu's level
    classes), the order the kernels keep for small tables."""
    from taichi_nerf.kernels.hash_grid import HashGridKernels

    return HashGridKernels(spec, per_class=True, level_major=False).forward


def measure(log2_tables=(17, 19), n_points: int = 1 << 18, repeats: int = 5,
            seed: int = 0) -> List[Dict]:
    """Rows (log2_table, points, point_ms, level_ms, equal): median ms of each order."""
    import taichi as ti
    import torch

    from taichi_nerf.kernels.hash_grid import HashGridKernels
    from taichi_nerf.kernels.specs import HashGridSpec
    from taichi_nerf.nn import runtime

    runtime.init("cpu")
    gen = torch.Generator().manual_seed(seed)
    n_rays = max(n_points // 32, 1)
    o = torch.rand(n_rays, 3, generator=gen)
    d = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=gen), dim=-1)
    steps = torch.arange(32, dtype=torch.float32)[None, :, None] * 0.002
    points = {"random": torch.rand(n_points, 3, generator=gen),
              "ray order": (o[:, None] + d[:, None] * steps).reshape(-1, 3)[:n_points]
              .clamp(0, 1).contiguous()}
    rows = []
    for log2 in log2_tables:
        spec = HashGridSpec(log2_table=int(log2))
        # both forms built explicitly: the library picks one per table size
        level_major = HashGridKernels(spec, per_class=True, level_major=True).forward
        point_major = point_major_forward(spec)
        table = torch.randn(spec.n_params, spec.n_features, generator=gen) * 0.1
        for name, pos in points.items():
            outs = [torch.empty(pos.shape[0], spec.out_dim) for _ in range(2)]
            times = ([], [])
            for _ in range(repeats + 1):  # the first pass compiles
                for k, f in enumerate((point_major, level_major)):
                    t0 = time.perf_counter()
                    f(pos, table, outs[k])
                    ti.sync()
                    times[k].append(time.perf_counter() - t0)
            rows.append({"log2_table": int(log2), "points": name,
                         "point_ms": 1e3 * float(np.median(times[0][1:])),
                         "level_ms": 1e3 * float(np.median(times[1][1:])),
                         "equal": bool(torch.allclose(outs[0], outs[1], rtol=1e-6,
                                                      atol=1e-7))})
    return rows


def format_markdown(rows: List[Dict], n_points: int) -> str:
    """Markdown table of :func:`measure`'s rows."""
    out = [f"| log2 table | points ({n_points}) | point-major ms | level-major ms | "
           "speed-up | same features |", "|---:|---|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['log2_table']} | {r['points']} | {r['point_ms']:.1f} | "
                   f"{r['level_ms']:.1f} | {r['point_ms'] / r['level_ms']:.2f}x | "
                   f"{'yes' if r['equal'] else 'NO'} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    """Command line: print the markdown table."""
    ap = argparse.ArgumentParser(prog="python benchmarks/hash_order.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--log2-table", type=int, nargs="+", default=[17, 19],
                    help="hash table sizes per level to time (log2)")
    ap.add_argument("--points", type=int, default=1 << 18, help="points per call")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of each order")
    a = ap.parse_args(argv)
    if a.points < 1 or a.repeats < 1 or any(not 4 <= v <= 24 for v in a.log2_table):
        ap.error("--points and --repeats must be >= 1, --log2-table in [4, 24]")
    rows = measure(a.log2_table, a.points, a.repeats)
    print(format_markdown(rows, a.points))
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
