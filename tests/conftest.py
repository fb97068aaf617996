"""Shared fixtures: every kernel test runs on cpu and on vulkan (lavapipe in CI)."""
import os
import zlib
from pathlib import Path

# as the CLI does (taichi_nerf/cli/__init__.py), before torch loads its OpenMP runtime: the
# suite alternates torch ops and Taichi kernels on 2 cores too
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from taichi_nerf.nn import runtime  # noqa: E402
from taichi_nerf.data import builtin, load_dataset  # noqa: E402
from taichi_nerf.training.trainer import TrainConfig, Trainer, run_training  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# TAICHI_NERF_TEST_ARCHS=cuda (comma-separated) runs the arch-parametrised tests elsewhere,
# e.g. on a GPU machine; the default is what CI must cover.
KERNEL_ARCHS = tuple(a for a in os.environ.get("TAICHI_NERF_TEST_ARCHS", "cpu,vulkan").split(",")
                     if a)


@pytest.fixture(scope="session", params=KERNEL_ARCHS)
def arch_name(request):
    """The arch under test; session scope makes pytest run all tests of one arch together."""
    return request.param


@pytest.fixture
def arch(arch_name):
    """Taichi initialised on `arch_name` for this test (a no-op when it already runs there)."""
    return init_or_skip(arch_name)


def init_or_skip(arch_name: str) -> str:
    """runtime.init(arch_name) -> its name; an unavailable arch skips the test here but fails
    it in CI (where .ci/run installs lavapipe), on cpu, or when TAICHI_NERF_TEST_ARCHS asks."""
    try:
        rt = runtime.init(arch_name)
    except runtime.ArchUnavailableError as e:
        if os.environ.get("CI") or arch_name in ("cpu",) or \
                "TAICHI_NERF_TEST_ARCHS" in os.environ:
            # In CI lavapipe is installed by .ci/run: a missing Vulkan there is a failure.
            pytest.fail(f"arch {arch_name} must be available here: {e}")
        pytest.skip(f"arch {arch_name} unavailable on this machine: {e}")
    assert rt.arch == arch_name
    return rt.arch


@pytest.fixture
def cpu_runtime():
    """Taichi on the CPU (for tests that are about the torch side, not the arch)."""
    return runtime.init("cpu")


@pytest.fixture
def gen(request):
    """A torch generator seeded per test (fresh, reproducible random inputs)."""
    # crc32, not hash(): Python randomises str hashes per process, so inputs changed every run
    seed = zlib.crc32(request.node.nodeid.encode())
    return torch.Generator().manual_seed(seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(|b|): relative error of a against reference b."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def point_cell_index(p, n_cascades: int, res: int) -> np.ndarray:
    """Flat occupancy cell (...) int64 of model points p (..., 3), clamped to the outermost
    cascade: ``cell_index(cascade_of(p), cell_coords(p))`` composed from the numpy twins
    that export's per-axis lookup uses. The tests' point-at-a-time oracle; no production
    code looks cells up one point at a time in numpy."""
    from taichi_nerf.kernels.occupancy import axis_cascade, axis_cell

    p = np.asarray(p, np.float32)
    c = axis_cascade(p, n_cascades).max(-1)
    cell = axis_cell(p, c[..., None], res)
    return c * res ** 3 + cell[..., 0] + cell[..., 1] * res + cell[..., 2] * res * res


# ---- a small trained run of the built-in scene, shared by the end-to-end tests
RES = 64
# measured: 500 steps reach 25.8 dB on the 64x64 test views (seed 0); floor leaves margin
PSNR_FLOOR = 24.0


def small_config(**kw) -> TrainConfig:
    cfg = dict(steps=500, target_samples=1 << 15, log2_table=15, occ_resolution=64,
               occ_cells_per_update=1 << 16, occ_warmup_steps=64, seed=0)
    cfg.update(kw)
    return TrainConfig(**cfg)


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory):
    runtime.init("cpu")
    return builtin.ensure_builtin_scene(RES, cache_dir=tmp_path_factory.mktemp("cache"),
                                        progress=False)


@pytest.fixture(scope="session")
def trained(scene_dir, tmp_path_factory):
    runtime.init("cpu")
    train = load_dataset(scene_dir, "train")
    test = load_dataset(scene_dir, "test", scene=train.scene)
    out = tmp_path_factory.mktemp("run")
    metrics = run_training(Trainer(train, small_config()), out, val=test, progress=False)
    return out, metrics


def cli(capsys, *argv):
    """Run `taichi-nerf argv...` in-process -> (exit code, stdout, stderr)."""
    from taichi_nerf.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, command, *needles):
    """Exit code 2 and one stderr line `taichi-nerf <command>: error: ...` containing needles."""
    assert rc == 2, f"exit code {rc}, stderr: {err!r}"
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    line = err.rstrip("\n")
    assert line.startswith(f"taichi-nerf {command}: error: "), line
    assert "Traceback" not in line
    for n in needles:
        assert str(n) in line, f"{n!r} not in {line!r}"
    return line


def count_transfers(monkeypatch) -> list:
    """A list that records each copy between numpy and a Taichi ndarray from now on
    ("to_numpy" / "from_numpy"), through the methods every such copy takes in Taichi 1.7.4."""
    import taichi as ti

    moved = []
    for name in ("_ndarray_to_numpy", "_ndarray_from_numpy", "_ndarray_matrix_to_numpy",
                 "_ndarray_matrix_from_numpy"):
        original = getattr(ti.lang._ndarray.Ndarray, name)
        monkeypatch.setattr(ti.lang._ndarray.Ndarray, name,
                            lambda self, *a, _o=original, _n=name, **k:
                            moved.append(_n.split("_")[-2] + "_numpy") or _o(self, *a, **k))
    return moved
