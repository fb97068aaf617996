"""`taichi-nerf train`'s TrainConfig flags, generated from the dataclass (cli.parser._config_args).

Every TrainConfig field must be a `train` flag (hand-declared or generated) or sit in
SKIPPED with its reason; a generated flag must reach the TrainConfig the trainer gets and
the checkpoint stores; a bad value is argparse's usage error (exit 2).
"""
import dataclasses
import re
import subprocess
import sys

import pytest

from taichi_nerf.nn.checkpoint import load_checkpoint
from taichi_nerf.cli import main
from taichi_nerf.cli.parser import CONFIG_GROUP, TRAIN_HAND_FLAGS
from taichi_nerf.training.config import OptionError, value_kind
from taichi_nerf.training.trainer import TrainConfig

from conftest import cli

# TrainConfig fields with no `train` flag, each with its reason (none today: every field is
# an int, a float, a bool or Optional of one of them, which the generator handles)
SKIPPED: dict = {}
COMMANDS = ("train", "view", "eval", "render", "export", "bench", "process")
FAST = ["--log2-table", "12", "--arch", "cpu", "--quiet"]


class _Stop(Exception):
    """Raised by the fake prepare_training once it has seen its arguments."""


def _help(capsys, *argv: str) -> str:
    """stdout of `taichi-nerf argv... --help` (which exits 0)."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_train_config_field_is_a_train_flag(capsys):
    out = _help(capsys, "train")
    flags = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", out))
    missing = [f.name for f in dataclasses.fields(TrainConfig)
               if _flag(f.name) not in flags and f.name not in SKIPPED]
    assert missing == []
    assert f"{CONFIG_GROUP}:" in out
    # the generated flags sit in their group, after the hand-declared ones (kept as they were)
    group = out[out.index(f"{CONFIG_GROUP}:"):]
    generated = [f.name for f in dataclasses.fields(TrainConfig)
                 if f.name not in TRAIN_HAND_FLAGS and f.name not in SKIPPED]
    assert generated and all(_flag(n) in group for n in generated)
    assert "--no-pixel-jitter" in group
    for name in TRAIN_HAND_FLAGS:
        assert not re.search(rf"^\s+{re.escape(_flag(name))}(?![\w-])", group, re.M), name


def test_generated_help_comes_from_the_field_metadata(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps help to the terminal, also at '-'
    out = " ".join(_help(capsys, "train").split())
    for f in dataclasses.fields(TrainConfig):
        if f.name not in TRAIN_HAND_FLAGS:
            assert " ".join(f.metadata["help"].split()) in out, f.name


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command(capsys, command):
    assert "usage: taichi-nerf " + command in _help(capsys, command)


def test_parsed_flags_reach_prepare_training(monkeypatch):
    """Set flags are passed by name; unset ones (None) are not, so the trainer's defaults hold."""
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr("taichi_nerf.api.prepare_training", fake)
    with pytest.raises(_Stop):
        main(["train", "--steps", "1", "--lr", "0.005", "--no-pixel-jitter",
              "--occ-resolution", "64", "--sparse-depth", "0.5", "--arch", "cpu", "--quiet"])
    assert seen["lr"] == 0.005 and seen["pixel_jitter"] is False
    assert seen["occ_resolution"] == 64 and seen["sparse_depth"] == 0.5
    assert "near" not in seen and "coarse_to_fine" not in seen and "appearance" not in seen
    seen.clear()
    with pytest.raises(_Stop):  # view --train shares _prepare_training and the flags
        main(["view", "--train", "--headless", "--frames", "1", "--arch", "cpu", "--quiet"])
    assert "lr" not in seen and seen["steps"] is None
    seen.clear()
    with pytest.raises(_Stop):
        main(["view", "--train", "--headless", "--frames", "1", "--arch", "cpu", "--quiet",
              "--lr", "0.005", "--log2-table", "13", "--no-pixel-jitter"])
    assert seen["lr"] == 0.005 and seen["log2_table"] == 13 and seen["pixel_jitter"] is False


def test_generated_flags_reach_the_checkpoint(scene_dir, tmp_path, capsys):
    run = tmp_path / "run"
    rc, _, err = cli(capsys, "train", scene_dir, "--out", run, "--steps", 1, "--lr", "0.005",
                     "--no-pixel-jitter", "--occ-resolution", "64", "--coarse-to-fine", "0.25",
                     *FAST)
    assert rc == 0, err
    cfg, _ = load_checkpoint(run / "checkpoint.npz")
    train = cfg["train"]
    assert train["lr"] == 0.005 and train["pixel_jitter"] is False
    assert train["occ_resolution"] == 64 and train["coarse_to_fine"] == 0.25
    assert train["near"] == TrainConfig.near and train["log2_table"] == 12  # untouched / by hand
    assert cfg["occupancy"]["resolution"] == 64


@pytest.mark.parametrize("argv, needle", [
    (["--lr", "abc"], "argument --lr: must be a number, got 'abc'"),
    (["--occ-resolution", "1.5"], "argument --occ-resolution: must be a whole number, got '1.5'"),
    (["--pixel-jitter", "yes"], "unrecognized arguments: yes"),
    # the field's range (TrainConfig's own check) applies at parse time
    (["--occ-resolution", "0"], "--occ-resolution: must be in [4, 512] and a multiple of 4, got 0"),
    (["--occ-resolution", "130"], "must be in [4, 512] and a multiple of 4, got 130"),
    (["--lr", "0"], "argument --lr: must be > 0, got 0.0"),
    (["--lr", "nan"], "argument --lr: must be finite, got nan"),
    (["--coarse-to-fine", "1.5"], "--coarse-to-fine: must be in [0, 1], got 1.5"),
    (["--near", "-0.1"], "argument --near: must be >= 0, got -0.1"),
    (["--appearance", "300"], "argument --appearance: must be in [0, 256], got 300"),
])
def test_bad_value_is_argparse_usage_error(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(["train", "builtin", "--steps", "1", *argv])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_ranges_show_in_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")
    out = " ".join(_help(capsys, "train").split())
    assert "cells per side of each cascade; in [4, 512] and a multiple of 4 (default 128)" in out
    assert "Adam learning rate; > 0 (default 0.01)" in out


@pytest.mark.parametrize("kwargs, needle", [
    ({"occ_resolution": 6}, "occ_resolution must be in [4, 512] and a multiple of 4, got 6"),
    ({"lr": -1.0}, "lr must be > 0, got -1.0"),
    ({"n_levels": 2.0}, "n_levels must be a whole number, got 2.0"),
    ({"pixel_jitter": 1}, "pixel_jitter must be True or False, got 1"),
    ({"sparse_depth": float("inf")}, "sparse_depth must be finite, got inf"),
    ({"min_rays": 512, "max_rays": 256}, "min_rays must be <= max_rays (256), got 512"),
    ({"seed": None}, "seed must be set, got None"),
])
def test_train_config_checks_every_value(kwargs, needle):
    """One rule for the Python API and the flags: TrainConfig checks its own values."""
    from taichi_nerf.training.config import OptionError
    with pytest.raises(OptionError) as e:
        TrainConfig(**kwargs)
    assert str(e.value) == needle
    assert e.value.option == next(iter(kwargs))


def test_every_default_is_in_its_range():
    TrainConfig()  # raises if a default broke its own range
    for f in dataclasses.fields(TrainConfig):
        assert "lo" in f.metadata, f"{f.name}: declare it with _opt (help text and range)"


def test_flag_type_from_annotations():
    from typing import List, Optional
    assert value_kind(int) is int and value_kind(Optional[float]) is float
    assert value_kind(Optional[bool]) is bool
    assert value_kind(str) is None and value_kind(List[int]) is None


@pytest.mark.parametrize("command", ["eval", "train"])
def test_help_imports_neither_torch_nor_taichi(command):
    """The TrainConfig flags are added when `train` parses, from a torch-free config; the arch
    names and per-arch defaults come from kernels.runtime, which imports Taichi only in
    init: `--help` stays quick and prints no Taichi banner."""
    code = ("import sys\nfrom taichi_nerf.cli import main\ntry:\n"
            f"    main([{command!r}, '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'taichi' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False False"


def test_arch_defaults_apply_to_settings_not_given(tmp_path):
    """cuda gets instant-ngp's batch and table unless the user set them; the cpu keeps the
    fields' own defaults; a resumed run keeps what its checkpoint was trained with, on any
    arch; max_rays not given never falls below min_rays."""
    from taichi_nerf.api import saved_train_settings, train_config
    from taichi_nerf.nn.checkpoint import save_checkpoint
    from taichi_nerf.training.config import ARCH_DEFAULTS, arch_defaults

    base = train_config(10)
    assert arch_defaults("cpu") == {} and train_config(10, arch="cpu") == base
    gpu = train_config(10, arch="cuda")
    for name, value in ARCH_DEFAULTS["cuda"].items():
        assert getattr(gpu, name) == value != getattr(base, name)
    mixed = train_config(10, arch="cuda", log2_table=15)
    assert mixed.log2_table == 15
    assert mixed.target_samples == ARCH_DEFAULTS["cuda"]["target_samples"]
    # min_rays above every default max_rays: max_rays follows it, on any arch
    for arch in (None, "cpu", "cuda"):
        many = train_config(10, arch=arch, min_rays=1 << 19)
        assert many.min_rays == many.max_rays == 1 << 19
    with pytest.raises(OptionError, match="min_rays"):
        train_config(10, min_rays=1 << 19, max_rays=1 << 18)  # both given: the user's mistake
    # a run trained on cuda, resumed on the cpu (and the other way): its own table and grid
    ckpt = tmp_path / "checkpoint.npz"
    trained = dataclasses.replace(gpu, finest_resolution=512)
    save_checkpoint(ckpt, {"train": dataclasses.asdict(trained)},
                    {"x": __import__("numpy").zeros(1, "float32")})
    saved = saved_train_settings(ckpt)
    on_cpu = train_config(10, arch="cpu", saved=saved)
    assert on_cpu.log2_table == 19 and on_cpu.finest_resolution == 512
    assert on_cpu.max_rays == ARCH_DEFAULTS["cuda"]["max_rays"]
    assert train_config(10, arch="cpu", saved=saved, log2_table=16).log2_table == 16
    save_checkpoint(ckpt, {"train": dataclasses.asdict(base)},
                    {"x": __import__("numpy").zeros(1, "float32")})
    assert train_config(10, arch="cuda", saved=saved_train_settings(ckpt)).log2_table == 17


def test_min_rays_without_max_rays_passes_the_early_check(monkeypatch):
    """`train --min-rays 131072` without --max-rays gets past prepare_training's early
    options check (which knows no arch yet) to the data: max_rays follows min_rays, as it
    does on cuda, whose max_rays default is larger anyway."""
    import taichi_nerf.api as api

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(api, "resolve_data", stop)  # the first step after the options check
    with pytest.raises(_Stop):
        main(["train", "--min-rays", "131072", "--steps", "3", "--arch", "cpu", "--quiet"])


def test_help_names_the_arch_defaults(capsys):
    out = " ".join(_help(capsys, "train").split())
    assert "(default 17; 19 on cuda)" in out and "(default 16384; 262144 on cuda)" in out


def test_learning_rate_schedule():
    """lr, flat to half the budget, then exponential down to lr * lr_final_factor at its end
    (by steps, or by seconds with --time)."""
    c = TrainConfig(steps=4000, lr=0.01, lr_final_factor=0.1)
    assert c.lr_at(0, 0.0) == pytest.approx(0.01) == c.lr_at(2000, 0.0)
    assert c.lr_at(3000, 0.0) == pytest.approx(0.01 * 0.1 ** 0.5)
    assert c.lr_at(4000, 0.0) == pytest.approx(0.001)
    timed = TrainConfig(time=100.0, lr=0.01)
    assert timed.lr_at(10, 40.0) == pytest.approx(0.01)
    assert timed.lr_at(10, 75.0) == pytest.approx(0.01 * 0.1 ** 0.5)
