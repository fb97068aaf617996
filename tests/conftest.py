"""Shared fixtures: every kernel test runs on cpu and on vulkan (lavapipe in CI)."""
import os
from pathlib import Path

import pytest
import torch

from taichi_nerf import runtime

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KERNEL_ARCHS = ("cpu", "vulkan")


@pytest.fixture(scope="session", params=KERNEL_ARCHS)
def arch_name(request):
    """The arch under test; session scope makes pytest run all tests of one arch together."""
    return request.param


@pytest.fixture
def arch(arch_name):
    """Taichi initialised on `arch_name` for this test (a no-op when it already runs there)."""
    try:
        rt = runtime.init(arch_name)
    except runtime.ArchUnavailableError as e:
        if os.environ.get("CI") or arch_name == "cpu":
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
    seed = abs(hash(request.node.nodeid)) % (2 ** 31)
    return torch.Generator().manual_seed(seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(|b|): relative error of a against reference b."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
