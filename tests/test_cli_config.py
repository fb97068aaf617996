"""`taichi-nerf train`'s TrainConfig flags, generated from the dataclass (cli._config_args).

Every TrainConfig field must be a `train` flag (hand-declared or generated) or sit in
SKIPPED with its reason; a generated flag must reach the TrainConfig the trainer gets and
the checkpoint stores; a bad value is argparse's usage error (exit 2).
"""
import dataclasses
import re
import subprocess
import sys

import pytest

from taichi_nerf import cli as cli_module
from taichi_nerf.checkpoint import load_checkpoint
from taichi_nerf.cli import CONFIG_GROUP, TRAIN_HAND_FLAGS, main
from taichi_nerf.trainer import TrainConfig

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
    with pytest.raises(_Stop):  # view --train shares _prepare_training, without these flags
        main(["view", "--train", "--headless", "--frames", "1", "--arch", "cpu", "--quiet"])
    assert "lr" not in seen and seen["steps"] is None


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
    (["--lr", "abc"], "invalid float value: 'abc'"),
    (["--occ-resolution", "1.5"], "invalid int value: '1.5'"),
    (["--pixel-jitter", "yes"], "unrecognized arguments: yes"),
])
def test_bad_value_is_argparse_usage_error(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(["train", "builtin", "--steps", "1", *argv])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_flag_type_from_annotations():
    from typing import List, Optional
    assert cli_module._flag_type(int) is int and cli_module._flag_type(Optional[float]) is float
    assert cli_module._flag_type(Optional[bool]) is bool
    assert cli_module._flag_type(str) is None and cli_module._flag_type(List[int]) is None


def test_other_commands_do_not_import_the_trainer():
    """The TrainConfig flags are added when `train` parses: `eval --help` stays torch-free."""
    code = ("import sys\nfrom taichi_nerf.cli import main\ntry:\n    main(['eval', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'taichi' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False False"
