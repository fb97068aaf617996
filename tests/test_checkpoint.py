"""Plain-data checkpoints: round trip (incl. Adam state), atomic writes, corrupt files, no pickle."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from taichi_nerf.nn import checkpoint as ck
from taichi_nerf.nn.checkpoint import CheckpointError


def small_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def trained(model, steps=3):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return opt, x


def test_round_trip_config_arrays_and_adam(tmp_path):
    model = small_model(0)
    opt, x = trained(model)
    config = {"steps": 3, "scene": {"scale": 0.33, "offset": [0.5, 0.5, 0.5], "aabb_scale": 2},
              "name": "lego", "lr": 1e-2}
    arrays = {"occupancy/bitfield": np.arange(10, dtype=np.int32),
              "scalar": np.float32(2.5), "file": np.zeros(2), "allow_pickle": np.ones(1, bool)}
    arrays.update(ck.state_dict_to_arrays("model", model.state_dict()))
    arrays.update(ck.state_dict_to_arrays("optim", opt.state_dict()))
    path = tmp_path / "ckpt.npz"
    ck.save_checkpoint(path, config, arrays)

    cfg, arrs = ck.load_checkpoint(path, required_arrays=["model/0.weight"], required_config=["steps"])
    assert cfg == {**config, "format_version": ck.FORMAT_VERSION}
    assert arrs["occupancy/bitfield"].dtype == np.int32
    assert np.array_equal(arrs["occupancy/bitfield"], np.arange(10))
    assert arrs["scalar"].shape == () and arrs["scalar"] == np.float32(2.5)
    assert set(arrs) == set(arrays)

    model2 = small_model(1)
    model2.load_state_dict(ck.arrays_to_state_dict("model", arrs))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    sd2 = ck.arrays_to_state_dict("optim", arrs)
    opt2.load_state_dict(sd2)
    sd, got = opt.state_dict(), opt2.state_dict()
    assert got["param_groups"] == sd["param_groups"]
    assert isinstance(got["param_groups"][0]["betas"], tuple)
    assert sorted(got["state"]) == sorted(sd["state"])
    for i, st in sd["state"].items():
        for k, v in st.items():
            assert torch.equal(got["state"][i][k], v) and got["state"][i][k].dtype == v.dtype
    # resuming gives the very same next step as never stopping
    for o, m in ((opt, model), (opt2, model2)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_file_is_plain_npz_without_pickle(tmp_path):
    path = tmp_path / "c.npz"
    ck.save_checkpoint(path, {"a": 1}, {"x": np.ones((2, 3), np.float32)})
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == [ck.CONFIG_KEY, "x"]
        assert json.loads(z[ck.CONFIG_KEY].tobytes())["format_version"] == ck.FORMAT_VERSION
    with pytest.raises(CheckpointError, match="would need pickle"):
        ck.save_checkpoint(path, {}, {"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="JSON-serialisable"):
        ck.save_checkpoint(path, {"f": object()}, {})
    with pytest.raises(CheckpointError, match="torch tensor"):
        ck.save_checkpoint(path, {}, {"t": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="reserved"):
        ck.save_checkpoint(path, {}, {ck.CONFIG_KEY: np.zeros(1)})
    assert ck.load_checkpoint(path)[0]["a"] == 1  # the refused saves left the file alone


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    ck.save_checkpoint(path, {"step": 1}, {"w": np.arange(4.0)})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        ck.save_checkpoint(path, {"step": 2}, {"w": np.arange(8.0)})
    monkeypatch.undo()

    def failing_write(*a, **k):
        raise RuntimeError("interrupted mid-write")

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(RuntimeError, match="interrupted"):
        ck.save_checkpoint(path, {"step": 3}, {"w": np.arange(8.0)})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert ck.load_checkpoint(path)[0]["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # no temporary files left behind


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    path = tmp_path / "ckpt.npz"

    def expect(match):
        with pytest.raises(CheckpointError, match=match) as e:
            ck.load_checkpoint(path)
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg
        assert isinstance(e.value, ValueError)

    expect("no such file")
    ck.save_checkpoint(path, {"k": 1}, {"w": np.random.default_rng(0).random(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect("truncated or corrupt")
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF  # inside the array bytes: the zip CRC check catches it
    path.write_bytes(bytes(corrupt))
    expect("truncated or corrupt")
    path.write_bytes(b"")
    expect("truncated or corrupt")
    np.save(path.with_suffix(".npy"), np.zeros(3))
    os.replace(path.with_suffix(".npy"), path)
    expect("not an .npz")
    np.savez(path, w=np.zeros(3))
    expect("missing required key '__config__'")
    np.savez(path, **{ck.CONFIG_KEY: np.frombuffer(b"{not json", np.uint8)})
    expect("bad config JSON")
    np.savez(path, **{ck.CONFIG_KEY: np.frombuffer(b'{"format_version": 99}', np.uint8)})
    expect("format_version 99 is not supported")
    np.savez(path, **{ck.CONFIG_KEY: np.frombuffer(b'{"a": 1}', np.uint8)})
    expect("format_version None")
    np.savez(path, w=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    expect("truncated or corrupt")  # a pickled member is refused, never unpickled
    ck.save_checkpoint(path, {"k": 1}, {"w": np.zeros(2)})
    with pytest.raises(CheckpointError, match=r"missing required keys \['steps', 'table'\]"):
        ck.load_checkpoint(path, required_arrays=["w", "table"], required_config=["k", "steps"])
    with pytest.raises(CheckpointError, match="no such file"):
        ck.load_checkpoint(tmp_path / "missing" / "x.npz")


def test_config_only_read_skips_the_arrays(tmp_path):
    path = tmp_path / "ckpt.npz"
    ck.save_checkpoint(path, {"train": {"finest_resolution": 384}},
                       {"w": np.random.default_rng(0).random(1000)})
    cfg, arrs = ck.load_checkpoint(path, required_arrays=["table"], arrays=False)
    assert cfg["train"]["finest_resolution"] == 384 and arrs == {}
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the array's bytes: only reading them notices
    path.write_bytes(bytes(data))
    assert ck.load_checkpoint(path, arrays=False)[0] == cfg
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ck.load_checkpoint(path)


def test_loads_without_torch(tmp_path):
    """Checkpoints are read by torch-free code: the module must not import torch at load."""
    path = tmp_path / "c.npz"
    ck.save_checkpoint(path, {"a": [1, 2]}, {"x": np.arange(3)})
    code = ("import sys; sys.modules['torch'] = None\n"
            "from taichi_nerf.nn.checkpoint import load_checkpoint\n"
            f"cfg, arrs = load_checkpoint({str(path)!r})\n"
            "assert cfg['a'] == [1, 2] and arrs['x'].tolist() == [0, 1, 2]\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]


def test_state_dict_helpers_keep_dtypes_and_refuse_non_data():
    sd = {"a": torch.arange(3, dtype=torch.int64), "b": torch.ones(2, dtype=torch.bfloat16),
          "c": torch.zeros(2, 2, dtype=torch.float16), "nested": {"n": 3, 7: (1.5, None, "s")}}
    arrs = ck.state_dict_to_arrays("p", sd)
    back = ck.arrays_to_state_dict("p", arrs)
    assert back["nested"] == {"n": 3, 7: (1.5, None, "s")}
    for k in "abc":
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k])
    with pytest.raises(CheckpointError, match="cannot hold"):
        ck.state_dict_to_arrays("p", {"f": lambda: 0})
    with pytest.raises(CheckpointError, match="no state dict 'q'"):
        ck.arrays_to_state_dict("q", arrs)
    with pytest.raises(CheckpointError, match="prefix"):
        ck.state_dict_to_arrays("a/b", {})


def test_checkpoint_path_resolves_run_folders_and_keeps_files(tmp_path):
    from taichi_nerf.kernels.specs import CHECKPOINT_NAME, checkpoint_path
    assert checkpoint_path(tmp_path) == str(tmp_path / CHECKPOINT_NAME)
    f = tmp_path / "other.npz"
    assert checkpoint_path(f) == str(f)          # a file (existing or not) is kept
    f.write_bytes(b"")
    assert checkpoint_path(str(f)) == str(f)
