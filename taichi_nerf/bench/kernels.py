"""Kernel benchmark (BENCHMARKS.md section 1): Taichi ops vs the pure-torch reference.

Each op runs on the same inputs through :mod:`taichi_nerf.nn.ops` (Taichi) and
:mod:`taichi_nerf.nn.reference` (torch), timed interleaved in the same run. The
first call of each is timed on its own (it includes Taichi's kernel compile, or
a load from Taichi's offline cache); the figures are medians of `repeats`
later calls. The machine's float32 GEMM and copy-bandwidth ceilings are
measured in the same run.

    python -m taichi_nerf.bench.kernels [--quick] [--arch cpu] [--json out.json] [--markdown]

or from Python::

    from taichi_nerf.bench.kernels import run_kernel_benchmark, format_markdown
    result = run_kernel_benchmark("cpu", quick=True)
    print(format_markdown(result))
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from taichi_nerf.nn import ops, reference, runtime
from taichi_nerf.atomic import atomic_write_json
from taichi_nerf.bench.common import (CONTENDED_US, finite_positive, fmt_rate, load_average,
                                      log2_str, machine_info, measure, progress_line,
                                      small_op_latency_us)
from taichi_nerf.kernels.checkpoint_io import one_line
from taichi_nerf.kernels.occupancy import derive_coarse_bits
from taichi_nerf.kernels.specs import HashGridSpec, MarchSpec, OccupancySpec

#: Full-size problem (BENCHMARKS.md section 1). Quick mode divides the sizes by 16.
FULL = dict(points=1 << 18, directions=1 << 18, march_rays=1 << 12, composite_rays=1 << 12,
            log2_tables=(15, 17, 19))
QUICK = dict(points=1 << 14, directions=1 << 14, march_rays=1 << 8, composite_rays=1 << 8,
             log2_tables=(15,))
COMPOSITE_SAMPLES = 64          # samples per ray in the compositing benchmark
SH_DEGREE = 4
OCC_BLOCK = 8                   # occupancy pattern: 8^3-cell blocks, each occupied with p = 0.5
GEMM_SHAPE = (1 << 18, 64, 64)  # (M, K, N): (2^18 x 64) @ (64 x 64); same in quick mode
COPY_BYTES = 256 * 1024 * 1024  # far above L3, so it measures DRAM; same in quick mode
SEED = 0


def op_keys(quick: bool = False) -> List[str]:
    """Keys of ``result["ops"]`` that a run of this mode produces, in order."""
    sizes = QUICK if quick else FULL
    keys = []
    for lt in sizes["log2_tables"]:
        keys += [f"hash_encode.fwd.T{lt}", f"hash_encode.fwdbwd.T{lt}"]
    return keys + ["sh_encode.fwd", "march_rays", "composite.fwd", "composite.fwdbwd"]


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (a Taichi output against the reference's)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _record(name: str, pass_: str, size: str, n: int, unit: str,
            timings: Dict[str, Dict[str, Any]], rel_diff: Optional[float] = None,
            **extra: Any) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"op": name, "pass": pass_, "size": size, "n": n, "unit": unit}
    for impl in ("taichi", "reference"):
        t = timings[impl]
        rec[impl] = {"first_s": t["first_s"], "median_s": t["median_s"], "times_s": t["times_s"],
                     "compile_s": t["compile_s"], "throughput": n / t["median_s"]}
    rec["ratio"] = rec["taichi"]["throughput"] / rec["reference"]["throughput"]
    rec["rel_diff"] = rel_diff
    rec.update(extra)
    return rec


# ------------------------------------------------------------------ inputs
def _gen(tag: int) -> torch.Generator:
    return torch.Generator().manual_seed(SEED * 1000 + tag)


def half_full_occupancy(occ: OccupancySpec, block: int = OCC_BLOCK, p: float = 0.5,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Blocky random occupancy (n_cells,) bool: block^3-cell blocks, each occupied with prob. p."""
    res = occ.resolution
    nb = -(-res // block)
    blocks = torch.rand(occ.n_cascades, nb, nb, nb, generator=generator) < p   # [c, z, y, x]
    cells = blocks.repeat_interleave(block, 1).repeat_interleave(block, 2) \
                  .repeat_interleave(block, 3)[:, :res, :res, :res]
    return cells.reshape(-1).contiguous()       # flat index c*res^3 + x + y*res + z*res^2


def pack_bitfield(occupied: torch.Tensor, occ: OccupancySpec) -> torch.Tensor:
    """bool (n_cells,) -> int32 words (n_words,), the layout the kernels read: bit i in word
    i // 32, the cells' bits, then the bits the kernels' rule derives from them (coarser
    cascades, empty-space blocks: kernels.occupancy.derive_coarse_bits). Needs Taichi."""
    bits = torch.zeros(occ.n_words * 32, dtype=torch.int64)
    bits[:occ.n_cells] = occupied.to(torch.int64)
    words = (bits.view(-1, 32) << torch.arange(32, dtype=torch.int64)).sum(1)
    words = (((words + (1 << 31)) % (1 << 32)) - (1 << 31)).to(torch.int32)  # u32 -> i32 bits
    derive_coarse_bits(words, occ.resolution, occ.n_cascades)
    return words


def random_rays(n: int, generator: torch.Generator, dist: float = 2.0):
    """Unit directions and origins outside the unit box, aimed at uniform points inside it."""
    d = torch.randn(n, 3, generator=generator)
    d = d / d.norm(dim=-1, keepdim=True)
    target = torch.rand(n, 3, generator=generator)
    return (target - dist * d).contiguous(), d.contiguous()


# ------------------------------------------------------------------ ops
def _bench_hash(n: int, log2_table: int, repeats: int, warmup: int, dev) -> List[Dict[str, Any]]:
    spec = HashGridSpec(n_levels=16, n_features=2, log2_table=log2_table,
                        base_resolution=16, finest_resolution=2048)
    g = _gen(log2_table)
    pos = torch.rand(n, 3, generator=g).to(dev)
    table = ((torch.rand(spec.n_params, spec.n_features, generator=g) * 2 - 1) * 1e-4).to(dev)
    grad_out = torch.randn(n, spec.out_dim, generator=g).to(dev)
    size = f"{log2_str(n)} points, T=2^{log2_table}"
    out = []

    def ti_fwd():
        return ops.hash_encode(pos, table, spec)

    def ref_fwd():
        with torch.no_grad():
            return reference.hash_encode(pos, table, spec)

    t = measure({"taichi": ti_fwd, "reference": ref_fwd}, repeats, warmup)
    out.append(_record("hash_encode", "forward", size, n, "points/s", t,
                       _rel_diff(t["taichi"]["output"], t["reference"]["output"])))
    del t

    leaf_ti = table.clone().requires_grad_(True)
    leaf_ref = table.clone().requires_grad_(True)

    def fwdbwd(fn, leaf):
        def run():
            leaf.grad = None
            fn(pos, leaf, spec).backward(grad_out)
            return leaf.grad
        return run

    t = measure({"taichi": fwdbwd(ops.hash_encode, leaf_ti),
                 "reference": fwdbwd(reference.hash_encode, leaf_ref)}, repeats, warmup)
    out.append(_record("hash_encode", "forward+backward", size, n, "points/s", t,
                       _rel_diff(t["taichi"]["output"], t["reference"]["output"])))
    return out


def _bench_sh(n: int, repeats: int, warmup: int, dev) -> Dict[str, Any]:
    d = torch.randn(n, 3, generator=_gen(100))
    d = (d / d.norm(dim=-1, keepdim=True)).contiguous().to(dev)

    def ref():
        with torch.no_grad():
            return reference.sh_encode(d, SH_DEGREE)

    t = measure({"taichi": lambda: ops.sh_encode(d, SH_DEGREE), "reference": ref}, repeats, warmup)
    return _record("sh_encode", "forward", f"{log2_str(n)} dirs, degree {SH_DEGREE}", n,
                   "dirs/s", t, _rel_diff(t["taichi"]["output"], t["reference"]["output"]))


def _bench_march(n_rays: int, repeats: int, warmup: int, dev) -> Dict[str, Any]:
    occ = OccupancySpec(n_cascades=1, resolution=128)
    march = MarchSpec.for_occupancy(occ)
    g = _gen(200)
    occupied = half_full_occupancy(occ, generator=g)
    bitfield = pack_bitfield(occupied, occ).to(dev)
    occupied_ref = reference.unpack_bitfield(bitfield, occ.n_cells)   # what reference.march_rays takes
    o, d = random_rays(n_rays, g)
    o, d = o.to(dev), d.to(dev)

    def ti():
        return ops.march_rays(o, d, bitfield, occ, march)

    def ref():
        with torch.no_grad():
            return reference.march_rays(o, d, occupied_ref, occ, march)

    t = measure({"taichi": ti, "reference": ref}, repeats, warmup)
    s_ti, s_ref = t["taichi"]["output"], t["reference"]["output"]
    m_ti, m_ref = s_ti.t.shape[0], s_ref.t.shape[0]
    c_ti, c_ref = s_ti.rays[:, 1].long().cpu(), s_ref.rays[:, 1].long().cpu()
    same = c_ti == c_ref
    # float32 rounding of where a step lands may put a sample that sits on a cell's face on
    # its other side (the kernel skips empty blocks in one jump, the reference cell by cell):
    # compare the samples of the rays whose counts agree, and report how many do
    rel = (_rel_diff(s_ti.t.cpu()[torch.repeat_interleave(same, c_ti)],
                     s_ref.t.cpu()[torch.repeat_interleave(same, c_ref)])
           if bool(same.any()) else None)
    rec = _record("march_rays", "forward", f"{log2_str(n_rays)} rays, 128^3 grid half full",
                  n_rays, "rays/s", t, rel,
                  samples=m_ti, reference_samples=m_ref, same_counts=bool(same.all()),
                  same_count_fraction=float(same.float().mean()),
                  occupied_fraction=float(occupied.float().mean()),
                  samples_per_ray=m_ti / max(n_rays, 1))
    rec["taichi"]["samples_per_s"] = m_ti / t["taichi"]["median_s"]
    rec["reference"]["samples_per_s"] = m_ref / t["reference"]["median_s"]
    return rec


def _bench_composite(n_rays: int, repeats: int, warmup: int, dev) -> List[Dict[str, Any]]:
    S = COMPOSITE_SAMPLES
    M = n_rays * S
    g = _gen(300)
    dt = 1.0 / S
    # sigma ~ U(0, 10), dt = 1/64: final transmittance about e^-5, so no ray stops early
    # and both implementations do every sample's work.
    sigmas = (torch.rand(M, generator=g) * 10).to(dev)
    rgbs = torch.rand(M, 3, generator=g).to(dev)
    ts = ((torch.arange(S, dtype=torch.float32) + 0.5) * dt).repeat(n_rays).to(dev)
    dts = torch.full((M,), dt, dtype=torch.float32).to(dev)
    rays = torch.stack([torch.arange(n_rays, dtype=torch.int32) * S,
                        torch.full((n_rays,), S, dtype=torch.int32)], -1).contiguous().to(dev)
    bg = torch.rand(n_rays, 3, generator=g).to(dev)
    g_rgb = torch.randn(n_rays, 3, generator=g).to(dev)
    g_depth = torch.randn(n_rays, generator=g).to(dev)
    g_opac = torch.randn(n_rays, generator=g).to(dev)
    size = f"{log2_str(n_rays)} rays x {S} samples"
    out = []

    def ti_fwd():
        return ops.composite(sigmas, rgbs, ts, dts, rays, bg)[:3]

    def ref_fwd():
        with torch.no_grad():
            return reference.composite(sigmas, rgbs, ts, dts, rays, bg)

    t = measure({"taichi": ti_fwd, "reference": ref_fwd}, repeats, warmup)
    rel = max(_rel_diff(a, b) for a, b in zip(t["taichi"]["output"], t["reference"]["output"]))
    out.append(_record("composite", "forward", size, M, "samples/s", t, rel))
    del t

    def fwdbwd(fn):
        s = sigmas.clone().requires_grad_(True)
        c = rgbs.clone().requires_grad_(True)

        def run():
            s.grad = c.grad = None
            rgb, depth, opac = fn(s, c, ts, dts, rays, bg)[:3]
            torch.autograd.backward([rgb, depth, opac], [g_rgb, g_depth, g_opac])
            return s.grad, c.grad
        return run

    t = measure({"taichi": fwdbwd(ops.composite), "reference": fwdbwd(reference.composite)},
                repeats, warmup)
    rel = max(_rel_diff(a, b) for a, b in zip(t["taichi"]["output"], t["reference"]["output"]))
    out.append(_record("composite", "forward+backward", size, M, "samples/s", t, rel))
    return out


def gemm_gflops(m: int, k: int, n: int, repeats: int, dev) -> float:
    """float32 GFLOP/s of torch's (m x k) @ (k x n) on dev (median of `repeats`)."""
    g = _gen(400)
    a = torch.randn(m, k, generator=g).to(dev)
    b = torch.randn(k, n, generator=g).to(dev)
    c = torch.empty(m, n, device=dev)
    t = measure({"gemm": lambda: torch.mm(a, b, out=c)}, repeats, warmup=1)["gemm"]
    return 2.0 * m * k * n / t["median_s"] / 1e9


def machine_ceilings(repeats: int, dev) -> Dict[str, Any]:
    """float32 GEMM GFLOP/s ((2^18 x 64) @ (64 x 64), torch) and copy bandwidth GB/s (256 MB)."""
    m, k, n = GEMM_SHAPE
    gflops = gemm_gflops(m, k, n, repeats, dev)
    x = torch.ones(COPY_BYTES // 4, dtype=torch.float32, device=dev)
    y = torch.empty_like(x)
    t2 = measure({"clone": lambda: x.clone(), "copy_": lambda: y.copy_(x)}, repeats, warmup=1)
    for v in t2.values():
        v.pop("output", None)
    moved = 2.0 * x.numel() * x.element_size()       # bytes read + written
    return {
        "gemm_shape": list(GEMM_SHAPE), "gemm_gflops": gflops,
        "gemm_median_s": 2.0 * m * k * n / gflops / 1e9,
        "copy_bytes": COPY_BYTES,
        "copy_gb_s": moved / t2["clone"]["median_s"] / 1e9,            # torch clone (allocates)
        "copy_into_gb_s": moved / t2["copy_"]["median_s"] / 1e9,       # copy_ into a live buffer
        "copy_median_s": t2["clone"]["median_s"],
    }


# ------------------------------------------------------------------ driver
def _line(key: str, rec: Dict[str, Any]) -> str:
    if "error" in rec:
        return f"{key:<24} ERROR {rec['error']}"
    s = (f"{key:<24} taichi {fmt_rate(rec['taichi']['throughput'], rec['unit']):>20}  "
         f"reference {fmt_rate(rec['reference']['throughput'], rec['unit']):>20}  "
         f"ratio {rec['ratio']:6.2f}x  compile {rec['taichi']['compile_s']:.2f} s")
    if rec["op"] == "march_rays":
        s += (f"  ({fmt_rate(rec['taichi']['samples_per_s'], 'samples/s')} vs "
              f"{fmt_rate(rec['reference']['samples_per_s'], 'samples/s')})")
    return s


def default_command(arch: str, quick: bool, repeats: Optional[int]) -> str:
    """The command line that reproduces a run with these settings."""
    cmd = "python -m taichi_nerf.bench.kernels"
    if quick:
        cmd += " --quick"
    cmd += f" --arch {arch}"
    if repeats is not None:
        cmd += f" --repeats {repeats}"
    return cmd


def run_kernel_benchmark(arch: str = "cpu", quick: bool = False, repeats: Optional[int] = None,
                         progress: bool = True, command: Optional[str] = None) -> Dict[str, Any]:
    """Measure every kernel op, Taichi vs reference, plus the machine's ceilings; return a dict.

    repeats: timed runs per op (median reported); default 5, or 2 with quick=True.
    quick: sizes / 16, hash table 2^15 only (well under a minute on 2 cores).
    command: the command line to record (default: the equivalent ``python -m`` line).

    The result holds ``machine`` (CPU model, cores, versions, date, commit),
    ``command``, ``settings``, ``ceilings`` and ``ops``: a dict keyed as
    :func:`op_keys` with, per op, ``taichi`` / ``reference`` timings
    (``median_s``, ``times_s``, ``first_s``, ``compile_s``, ``throughput``
    in ``unit``), ``ratio`` (Taichi throughput / reference throughput) and
    ``rel_diff`` (max relative difference of the outputs: a sanity check). An op
    that raised holds ``error`` instead of timings.
    """
    cmd = command or default_command(arch, quick, repeats)
    if repeats is None:
        repeats = 2 if quick else 5
    warmup = 0 if quick else 1
    rt = runtime.init(arch)
    dev = rt.torch_device
    sizes = QUICK if quick else FULL
    t_start = time.perf_counter()
    result: Dict[str, Any] = {
        "machine": machine_info(rt.arch),
        "command": cmd,
        "settings": {"arch": rt.arch, "quick": quick, "repeats": repeats, "warmup": warmup,
                     "cpu_threads": rt.cpu_threads, "sizes": {k: (list(v) if isinstance(v, tuple)
                                                                   else v)
                                                               for k, v in sizes.items()}},
        "ops": {},
        "contention": {"load_average_start": load_average(),
                       "small_op_us_start": small_op_latency_us()},
    }
    progress_line(f"kernel benchmark: arch {rt.arch}, {'quick' if quick else 'full'}, "
                  f"median of {repeats}", progress)

    jobs: List[tuple] = []
    for lt in sizes["log2_tables"]:
        jobs.append(([f"hash_encode.fwd.T{lt}", f"hash_encode.fwdbwd.T{lt}"],
                     lambda lt=lt: _bench_hash(sizes["points"], lt, repeats, warmup, dev)))
    jobs.append((["sh_encode.fwd"], lambda: [_bench_sh(sizes["directions"], repeats, warmup, dev)]))
    jobs.append((["march_rays"], lambda: [_bench_march(sizes["march_rays"], repeats, warmup, dev)]))
    jobs.append((["composite.fwd", "composite.fwdbwd"],
                 lambda: _bench_composite(sizes["composite_rays"], repeats, warmup, dev)))
    for keys, job in jobs:
        try:
            recs = job()
        except Exception as e:  # keep measuring the other ops; the error is reported
            recs = [{"op": k.split(".")[0], "error": one_line(e)} for k in keys]
        for key, rec in zip(keys, recs):
            result["ops"][key] = rec
            progress_line(_line(key, rec), progress)
        gc.collect()

    result["ceilings"] = machine_ceilings(repeats, dev)
    c = result["ceilings"]
    progress_line(f"{'ceilings':<24} GEMM {c['gemm_gflops']:.1f} GFLOP/s, copy {c['copy_gb_s']:.1f} "
                  f"GB/s (clone), {c['copy_into_gb_s']:.1f} GB/s (copy_)", progress)
    cont = result["contention"]
    cont["small_op_us_end"] = small_op_latency_us()
    cont["load_average_end"] = load_average()
    cont["contended"] = max(cont["small_op_us_start"], cont["small_op_us_end"]) > CONTENDED_US
    if cont["contended"]:
        progress_line(f"WARNING: machine contended (a small torch op took "
                      f"{cont['small_op_us_start']:.0f} / {cont['small_op_us_end']:.0f} us at "
                      f"start / end): torch reference times and ratios are unreliable", progress)
    result["total_seconds"] = time.perf_counter() - t_start
    return result


def format_markdown(result: Dict[str, Any]) -> str:
    """A BENCHMARKS.md section: machine, command, the table (one row per op), the ceilings."""
    m, s, c = result["machine"], result["settings"], result.get("ceilings", {})
    title = "Kernels" + (" (quick mode)" if s.get("quick") else "")
    lines = [
        f"### {title}, {m['date'][:10]}",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpu_count']} cores"
        + (f" ({m['cpus_usable']} usable)" if m.get("cpus_usable") not in (None, m["cpu_count"])
           else "")
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; Taichi arch `{s['arch']}`, {s['cpu_threads']} threads",
        f"- Versions: taichi {m['taichi']}, torch {m['torch']}, Python {m['python']}",
        f"- Commit: `{m['commit'] or 'unknown'}`, date {m['date']}",
        f"- Command: `{result['command']}`",
        f"- Median of {s['repeats']} runs after {s['warmup']} warm-up run(s), Taichi and "
        "reference interleaved in the same run. Compile s = first call minus the median "
        "(Taichi's offline cache is on, so a warm cache shows little).",
        "",
        "| op | size | Taichi | reference | ratio | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, r in result["ops"].items():
        if "error" in r:
            lines.append(f"| {key} | | error: {r['error']} | | | |")
            continue
        ti, ref = r["taichi"], r["reference"]
        ti_s, ref_s = fmt_rate(ti["throughput"], r["unit"]), fmt_rate(ref["throughput"], r["unit"])
        if r["op"] == "march_rays":
            ti_s += f" ({fmt_rate(ti['samples_per_s'], 'samples/s')})"
            ref_s += f" ({fmt_rate(ref['samples_per_s'], 'samples/s')})"
        name = f"{r['op']} {r['pass']}"
        lines.append(f"| {name} | {r['size']} | {ti_s} | {ref_s} | {r['ratio']:.2f}x "
                     f"| {ti['compile_s']:.2f} |")
    if c:
        lines += [
            "",
            f"Machine ceilings, same run: float32 GEMM ({c['gemm_shape'][0]} x {c['gemm_shape'][1]})"
            f" @ ({c['gemm_shape'][1]} x {c['gemm_shape'][2]}) {c['gemm_gflops']:.1f} GFLOP/s; "
            f"copy bandwidth ({c['copy_bytes'] // 2**20} MiB, read + write) "
            f"{c['copy_gb_s']:.1f} GB/s with `clone`, {c['copy_into_gb_s']:.1f} GB/s with `copy_`.",
        ]
    cont = result.get("contention")
    if cont:
        lines += ["", f"Contention probe (one small multi-threaded torch op): "
                  f"{cont['small_op_us_start']:.0f} us at start, {cont['small_op_us_end']:.0f} us "
                  f"at end; load average {cont['load_average_start']} -> "
                  f"{cont['load_average_end']}."]
        if cont.get("contended"):
            lines.append("**The machine was contended during this run (torch's OpenMP threads "
                         "stalled): reference times, and so the ratios, are not trustworthy.**")
    march = result["ops"].get("march_rays")
    if march and "error" not in march:
        lines += ["", f"Marching: {march['samples']} samples "
                  f"({march['samples_per_ray']:.1f} per ray, occupancy {march['occupied_fraction']:.2f}); "
                  f"reference {march['reference_samples']}; per-ray counts identical on "
                  f"{100 * march['same_count_fraction']:.1f}% of the rays."]
    return "\n".join(lines) + "\n"


def check_result(result: Dict[str, Any]) -> List[str]:
    """Problems in a result (missing op, error, non-finite or non-positive figure); [] if none."""
    problems = []
    for key in op_keys(result["settings"]["quick"]):
        r = result["ops"].get(key)
        if r is None:
            problems.append(f"{key}: missing")
        elif "error" in r:
            problems.append(f"{key}: {r['error']}")
        else:
            for impl in ("taichi", "reference"):
                if not finite_positive(r[impl]["throughput"]):
                    problems.append(f"{key}: {impl} throughput {r[impl]['throughput']}")
            if not finite_positive(r["ratio"]):
                problems.append(f"{key}: ratio {r['ratio']}")
    return problems


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Command line: run the kernel benchmark, print a summary (or markdown), write JSON."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="sizes / 16, table 2^15 only, 2 repeats")
    p.add_argument("--arch", default="cpu", choices=runtime.ARCHS)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per op (default 5; quick 2)")
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON ('-' = stdout)")
    p.add_argument("--markdown", action="store_true", help="print a BENCHMARKS.md section")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    prog_name = prog or "python -m taichi_nerf.bench.kernels"
    cmd = prog_name + (" --quick" if args.quick else "") + f" --arch {args.arch}" \
        + (f" --repeats {args.repeats}" if args.repeats is not None else "")
    try:
        result = run_kernel_benchmark(args.arch, quick=args.quick, repeats=args.repeats,
                                      progress=not args.no_progress, command=cmd)
    except runtime.ArchUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(result, indent=2, default=str))
    elif args.json:
        atomic_write_json(args.json, result, default=str)
    if args.markdown:
        print(format_markdown(result))
    problems = check_result(result)
    for pr in problems:
        print(f"problem: {pr}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
