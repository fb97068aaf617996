import pytest
import torch

from taichi_nerf.nn import ops, reference, runtime
from taichi_nerf.kernels.specs import HashGridSpec

from conftest import rel_err


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_sh_matches_reference(arch, gen, degree):
    d = torch.randn(2000, 3, generator=gen)
    d = (d / d.norm(dim=-1, keepdim=True)).contiguous()
    out = ops.sh_encode(d, degree)
    ref = reference.sh_encode(d.double(), degree)
    assert out.shape == (2000, degree * degree)
    assert rel_err(out, ref) < 1e-5


def test_sh_known_values():
    """Degree 2 along +z: (C0, 0, C1, 0)."""
    out = reference.sh_encode(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), 2)
    assert torch.allclose(out, torch.tensor([[0.28209479177387814, 0, 0.48860251190291987, 0]],
                                            dtype=torch.float64))


def test_sh_rejects_bad_degree_and_shape(cpu_runtime):
    with pytest.raises(ValueError, match="degree"):
        ops.sh_encode(torch.zeros(3, 3), 5)
    with pytest.raises(ValueError, match="shape"):
        ops.sh_encode(torch.zeros(3, 2), 4)


def test_kernels_write_into_the_torch_tensors_own_memory(cpu_runtime, gen):
    """Zero-copy on CPU: the kernel fills the tensor we pass, at its own address."""
    spec = HashGridSpec(n_levels=2, log2_table=10, base_resolution=4, finest_resolution=16)
    from taichi_nerf.kernels.hash_grid import hash_grid_kernels
    pos = torch.rand(100, 3, generator=gen)
    table = torch.rand(spec.n_params, spec.n_features, generator=gen)
    out = torch.zeros(100, spec.out_dim)
    ptr = out.data_ptr()
    hash_grid_kernels(spec).forward(pos, table, out)
    assert out.data_ptr() == ptr
    assert rel_err(out, reference.hash_encode(pos.double(), table.double(), spec)) < 1e-5
    # a view into a larger buffer: the kernel writes exactly that window of the buffer
    big = torch.zeros(300, spec.out_dim)
    window = big[100:200]
    hash_grid_kernels(spec).forward(pos, table, window)
    assert torch.equal(big[100:200], out) and big[:100].abs().sum() == 0
    # and the kernel reads the input's memory: change the table in place, output follows
    table.mul_(2.0)
    hash_grid_kernels(spec).forward(pos, table, out)
    assert torch.allclose(out, 2 * window, rtol=1e-6)


def test_runtime_same_arch_twice_is_harmless():
    a = runtime.init("cpu")
    b = runtime.init("cpu")
    assert a is b and a.arch == "cpu" and str(a.torch_device) == "cpu"


def test_runtime_unknown_and_unavailable_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        runtime.init("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(runtime.ArchUnavailableError, match="cuda"):
            runtime.init("cuda")
    runtime.init("cpu")
