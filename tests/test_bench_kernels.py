"""The kernel benchmark runs (quick mode, cpu) and returns a complete, well-formed result.

No timing assertions: this machine is noisy; speed targets are checked by the
benchmark itself (BENCHMARKS.md), not by tests.
"""
import copy
import json
import math

import pytest
import torch

from taichi_nerf.nn import reference, runtime
from taichi_nerf.bench import kernels as bench_kernels
from taichi_nerf.bench.kernels import (check_result, format_markdown, half_full_occupancy,
                                       op_keys, pack_bitfield, run_kernel_benchmark)
from taichi_nerf.kernels.specs import OccupancySpec


@pytest.fixture(scope="module")
def quick_result():
    runtime.init("cpu")
    return run_kernel_benchmark("cpu", quick=True, progress=False)


def _finite_positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_op_measured(quick_result):
    ops = quick_result["ops"]
    assert list(ops) == op_keys(quick=True)
    for key, r in ops.items():
        assert "error" not in r, f"{key}: {r.get('error')}"
        for impl in ("taichi", "reference"):
            t = r[impl]
            assert _finite_positive(t["throughput"]), (key, impl, t)
            assert _finite_positive(t["median_s"]) and len(t["times_s"]) == 2
            assert t["first_s"] > 0 and t["compile_s"] >= 0
        assert _finite_positive(r["ratio"])
        assert r["ratio"] == pytest.approx(r["taichi"]["throughput"] / r["reference"]["throughput"])
        # sanity: both implementations computed the same thing (float32 vs float32)
        assert r["rel_diff"] is not None and r["rel_diff"] < 1e-3, (key, r["rel_diff"])
    march = ops["march_rays"]
    # the same samples but for float rounding on a cell's face, on at most 2% of the rays
    assert march["same_count_fraction"] >= 0.98 and march["reference_samples"] > 0
    assert abs(march["samples"] - march["reference_samples"]) <= 0.01 * march["samples"]
    assert _finite_positive(march["taichi"]["samples_per_s"])
    assert _finite_positive(march["reference"]["samples_per_s"])
    assert 0.3 < march["occupied_fraction"] < 0.7
    assert check_result(quick_result) == []


def test_ceilings_and_machine(quick_result):
    c = quick_result["ceilings"]
    for k in ("gemm_gflops", "copy_gb_s", "copy_into_gb_s"):
        assert _finite_positive(c[k]), (k, c[k])
    m = quick_result["machine"]
    assert m["cpu_model"] and m["cpu_count"] >= 1 and m["torch"] and m["taichi"] and m["date"]
    assert "commit" in m  # None outside a git checkout
    assert quick_result["settings"]["quick"] is True
    json.dumps(quick_result)  # plain data: written with --json


def test_markdown_has_table_and_every_op(quick_result):
    md = format_markdown(quick_result)
    assert "| op | size | Taichi | reference | ratio | compile s |" in md
    assert quick_result["command"] in md and quick_result["machine"]["cpu_model"] in md
    for r in quick_result["ops"].values():
        assert f"| {r['op']} {r['pass']} | {r['size']} |" in md
    assert "GFLOP/s" in md and "GB/s" in md


def test_cli_exit_code_is_nonzero_when_an_op_failed(quick_result, capsys):
    from taichi_nerf.cli.commands import bench_exit_code

    assert bench_exit_code({"kernels": quick_result}) == 0
    assert capsys.readouterr().err == ""
    broken = copy.deepcopy(quick_result)
    # what run_kernel_benchmark records for an op that raised
    broken["ops"]["march_rays"] = {"op": "march_rays", "error": "RuntimeError: out of memory"}
    assert bench_exit_code({"kernels": broken, "training": {}}) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("taichi-nerf bench: error: "), err
    assert "march_rays: RuntimeError: out of memory" in err
    assert bench_exit_code({"training": {}}) == 0  # no kernel part, nothing to check


def test_occupancy_pattern_roundtrips(cpu_runtime):
    occ = OccupancySpec(1, 32)
    occupied = half_full_occupancy(occ, block=8, generator=torch.Generator().manual_seed(1))
    assert occupied.shape == (occ.n_cells,) and occupied.dtype == torch.bool
    words = pack_bitfield(occupied, occ)
    assert words.dtype == torch.int32 and words.shape == (occ.n_words,)
    assert torch.equal(reference.unpack_bitfield(words, occ.n_cells), occupied)
    # blocky: an 8^3 block is all one value
    grid = occupied.view(32, 32, 32)
    assert grid[:8, :8, :8].all() or not grid[:8, :8, :8].any()


def test_json_file_is_written_whole(quick_result, tmp_path, monkeypatch, capsys):
    """--json FILE: the result as JSON, through a temporary file (no partial file, no leftovers)."""
    monkeypatch.setattr(bench_kernels, "run_kernel_benchmark", lambda *a, **k: quick_result)
    out = tmp_path / "bench.json"
    out.write_text("an older result")
    assert bench_kernels.main(["--quick", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(quick_result, default=str))
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
    capsys.readouterr()
