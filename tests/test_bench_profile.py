"""`taichi-nerf bench --profile`: a training step split by stage, with work, rates and ceilings."""
import dataclasses

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


def test_bench_profile_cli(scene_dir, capsys):
    rc, out, err = cli(capsys, "bench", "--profile", scene_dir, "--time", "0.5", "--steps", "2",
                       "--arch", "cpu")
    assert rc == 0, err
    assert "| hash encode bwd |" in out and "| Python and launch overhead |" in out


@pytest.mark.parametrize("flags, needles", [
    (["--profile", "--kernels"], ["--profile runs alone"]),
    (["--profile", "--steps", "0"], ["--steps must be > 0"]),
])
def test_bench_profile_bad_flags_are_one_line(capsys, flags, needles):
    rc, out, err = cli(capsys, "bench", *flags, "--arch", "cpu")
    assert_one_line_error(rc, err, "bench", *needles)
    assert out == ""
