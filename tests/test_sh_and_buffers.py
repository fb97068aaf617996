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


def test_ndarrays_of_an_ended_program_never_free_the_new_programs():
    """Taichi frees an ndarray through whichever program runs when its Python object dies,
    by address; an old program's ndarray dropped after a re-init freed a live new one that
    reused its address (a CI failure). Unreachable ones go while their program runs, the
    rest are kept."""
    import gc
    import weakref

    import numpy as np
    import taichi as ti

    runtime.init("cpu")
    died_in = []
    generation = lambda: runtime.current().generation  # noqa: E731

    class Cycle:
        def __init__(self):
            self.nd = ti.ndarray(ti.f32, shape=(7,))
            self.me = self  # only the collector frees it

    garbage = Cycle()
    weakref.finalize(garbage.nd, lambda: died_in.append(generation()))  # when it dies
    old_gen = generation()
    gc.disable()  # the collector runs only when runtime.init asks
    try:
        del garbage
        kept = [ti.ndarray(ti.f32, shape=(1000 + i,)) for i in range(200)]
        kept_ref = weakref.ref(kept[0])
        runtime.init("cpu", cpu_threads=runtime.current().cpu_threads + 1)  # another ti.init
        assert generation() > old_gen and died_in == [old_gen]  # collected before it
        new = []
        for i in range(200):
            nd = ti.ndarray(ti.f32, shape=(1000 + i,))
            nd.from_numpy(np.full(1000 + i, i, np.float32))
            new.append(nd)
        del kept
        gc.collect()
        assert kept_ref() is not None  # the old program's ndarray lives on, harmless
        assert [tuple(nd.arr.shape) for nd in new] == [(1000 + i,) for i in range(200)]
        assert all(nd.to_numpy()[-1] == i for i, nd in enumerate(new))
    finally:
        gc.enable()
        runtime.init("cpu")
