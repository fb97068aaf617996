"""`taichi-nerf bench --profile`: a training step split by stage, with work, rates and ceilings."""
import dataclasses
import json

import pytest

from conftest import assert_one_line_error, cli, small_config
from taichi_nerf.bench import profile
from taichi_nerf.nn import profiling, runtime

STAGE_NAMES = [s[0] for s in profile.STAGES]
# every stage a step of the default trainer runs; occupancy and "other" may be idle in a step
ALWAYS = ["ray generation", "marching", "hash encode fwd", "hash encode bwd", "SH encode",
          "MLP fwd", "MLP bwd", "compositing fwd", "compositing bwd", "loss fwd", "optimizer"]


def test_every_named_range_and_function_has_a_stage():
    # a renamed range or autograd Function would otherwise fall into "other" unnoticed
    for name in profiling.STAGES:
        assert profile.stage_of(profiling.PREFIX + name) in STAGE_NAMES
    for name, stage in [("_HashEncode", "hash encode fwd"), ("_Composite", "compositing fwd"),
                        (profile.BWD + "_HashEncodeBackward", "hash encode bwd"),
                        (profile.BWD + "_CompositeBackward", "compositing bwd"),
                        (profile.BWD + "AddmmBackward0", "MLP bwd"), ("aten::linear", "MLP fwd"),
                        ("Optimizer.step#Adam.step", "optimizer"),
                        (profile.BWD + "MseLossBackward0", "other backward"),
                        ("aten::randint", "other torch ops")]:
        assert profile.stage_of(name) == stage, name
    assert set(ALWAYS) < set(STAGE_NAMES)


@pytest.fixture(scope="module")
def profiled(scene_dir):
    runtime.init("cpu")
    settings = {k: v for k, v in dataclasses.asdict(small_config()).items()
                if k not in ("steps", "time")}
    return profile.run_step_profile(str(scene_dir), warmup_s=1.0, steps=6, repeats=1,
                                    settings=settings, progress=False)


def test_profile_splits_the_whole_step(profiled):
    r = profiled
    rows = {s["stage"]: s for s in r["stages"]}
    assert list(rows) == STAGE_NAMES
    for name in ALWAYS:
        assert rows[name]["seconds"] > 0, name
    # the stages (overhead = what no event covers) add up to the measured step
    total = sum(s["seconds"] for s in r["stages"])
    assert total == pytest.approx(r["step_s"], rel=1e-6)
    assert sum(s["share"] for s in r["stages"]) == pytest.approx(1.0, rel=1e-6)
    assert r["samples_per_step"] > 0 and r["rays_per_step"] > 0 and r["first_step_s"] > 0


def test_profile_work_and_ceilings(profiled, scene_dir):
    r = profiled
    rows = {s["stage"]: s for s in r["stages"]}
    s = r["samples_per_step"]
    cfg = small_config()
    # 8 corners per level per sample; the MLP's forward FLOPs per sample from its layers
    assert rows["hash encode fwd"]["work"] == pytest.approx(s * cfg.n_levels * 8)
    assert rows["MLP bwd"]["work"] == pytest.approx(2 * rows["MLP fwd"]["work"])
    c = r["ceilings"]
    for key in ("gemm_step_flop_s", "gemm_square_flop_s", "copy_bytes_s", "random_reads_s"):
        assert c[key] > 0, key
    # the random reads span the field's table (coarse levels are dense, so smaller than L*T)
    assert (1 << cfg.log2_table) < c["table_rows"] <= cfg.n_levels * (1 << cfg.log2_table)
    mlp = rows["MLP fwd"]
    assert mlp["of_ceiling"] == pytest.approx(mlp["rate"] / c["gemm_step_flop_s"])
    assert rows["marching"]["of_ceiling"] is None  # no ceiling claimed where none was measured
    md = profile.format_profile_markdown(r)
    assert md.count("\n| ") == len(STAGE_NAMES) + 1 and "GFLOP/s" in md


def test_mlp_flop_count_matches_the_layers():
    from torch import nn
    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    assert profile.mlp_flop_per_sample(net) == 2 * (32 * 64 + 64 * 16)


def test_bench_profile_cli(scene_dir, capsys, tmp_path):
    rc, out, err = cli(capsys, "bench", "--profile", scene_dir, "--time", "0.5", "--steps", "2",
                       "--arch", "cpu", "--set", "log2-table=12", "--set", "target_samples=2048",
                       "--json", tmp_path / "p.json")
    assert rc == 0, err
    assert "| hash encode bwd |" in out and "| Python and launch overhead |" in out
    saved = json.loads((tmp_path / "p.json").read_text())["profile"]
    assert saved["steps"] == 2 and [s["stage"] for s in saved["stages"]] == STAGE_NAMES
    # the --set values reached the trainer: the table's rows and the step's samples follow them
    assert saved["ceilings"]["table_rows"] == 16 * (1 << 12)
    assert saved["samples_per_step"] < 2 * 2048


@pytest.mark.parametrize("flags, needles", [
    (["--profile", "--kernels"], ["--profile each run alone"]),
    (["--profile", "--cold-start"], ["--profile and --cold-start each run alone"]),
    (["--profile", "--steps", "0"], ["--steps must be > 0"]),
    (["--profile", "--set", "no-such-setting=1"], ["--set no-such-setting=1", "NAME=VALUE"]),
    (["--profile", "--set", "log2-table"], ["--set log2-table", "NAME=VALUE"]),
    (["--profile", "--set", "steps=3"], ["--set steps=3", "not steps or time"]),
    (["--profile", "--set", "log2-table=99"], ["--set log2-table=99", "log2-table must be"]),
    (["--profile", "--set", "lr=fast"], ["--set lr=fast", "must be a number"]),
    (["--kernels", "--set", "lr=0.02"], ["--set is a setting of the step profile"]),
])
def test_bench_profile_bad_flags_are_one_line(capsys, flags, needles):
    rc, out, err = cli(capsys, "bench", *flags, "--arch", "cpu")
    assert_one_line_error(rc, err, "bench", *needles)
    assert out == ""


def test_cold_start_benchmark_fills_an_empty_cache_then_uses_it(scene_dir, tmp_path):
    from taichi_nerf.bench.cold_start import format_cold_start_markdown, run_cold_start_benchmark

    cache = tmp_path / "ticache"
    r = run_cold_start_benchmark(str(scene_dir), arch="cpu", cache=cache, progress=False)
    cold, warm = r["runs"]
    # run 1 compiled and left its kernels; run 2 found them all (nothing new written)
    assert cold["kernel_files_after"] >= 5
    assert warm["kernel_files_after"] == cold["kernel_files_after"]
    for run in (cold, warm):
        assert run["first_step_s"] > 0 and run["process_s"] > run["first_step_s"]
    md = format_cold_start_markdown(r)
    assert "| empty cache |" in md and "| the cache run 1 left |" in md


def test_cold_start_refuses_a_cache_with_kernels(tmp_path):
    from taichi_nerf.bench.cold_start import run_cold_start_benchmark
    from taichi_nerf.bench.errors import BenchError

    (tmp_path / "old.tic").write_bytes(b"x")
    with pytest.raises(BenchError, match="already holds compiled kernels"):
        run_cold_start_benchmark(None, cache=tmp_path, progress=False)
