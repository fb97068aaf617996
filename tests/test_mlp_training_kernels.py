"""The torch-free training pieces (kernels/mlp.py): MLP backward and Adam against torch in
float64, on fresh random inputs, on every kernel arch."""
import numpy as np
import pytest
import torch

from taichi_nerf.kernels import mlp as mlp_k

from conftest import rel_err


def _zeros(shape):
    return np.zeros(shape, np.float32)


def _net(gen, sizes):
    return [(torch.randn(o, i, generator=gen) / i ** 0.5, torch.randn(o, generator=gen) * 0.1)
            for i, o in zip(sizes[:-1], sizes[1:])]


def _torch_mlp(x, layers, acts):
    for (w, b), act in zip(layers, acts):
        x = x @ w.T + b
        x = {"relu": torch.relu, "sigmoid": torch.sigmoid, "exp": torch.exp,
             "none": lambda v: v}[act](x)
    return x


@pytest.mark.parametrize("head", ["sigmoid", "none", "exp"])
def test_mlp_backward_matches_torch(arch, gen, head):
    sizes, acts = [31, 64, 64, 3], ["relu", "relu", head]
    layers = _net(gen, sizes)
    x = torch.randn(700, sizes[0], generator=gen)
    grad_out = torch.randn(700, sizes[-1], generator=gen)
    # float64 reference by autograd
    ref_layers = [(w.double().requires_grad_(), b.double().requires_grad_()) for w, b in layers]
    xr = x.double().requires_grad_()
    y_ref = _torch_mlp(xr, ref_layers, acts)
    y_ref.backward(grad_out.double())

    np_layers = [(w.numpy(), b.numpy()) for w, b in layers]
    outs = mlp_k.mlp_forward_saved(x.numpy(), np_layers, acts, _zeros)
    assert rel_err(torch.from_numpy(outs[-1]), y_ref.detach()) < 1e-5
    grads, gx = mlp_k.mlp_backward(x.numpy(), np_layers, acts, outs, grad_out.numpy(), _zeros,
                                   want_input_grad=True)
    for (gw, gb), (w, b) in zip(grads, ref_layers):
        assert rel_err(torch.from_numpy(gw), w.grad) < 1e-5
        assert rel_err(torch.from_numpy(gb), b.grad) < 1e-5
    assert rel_err(torch.from_numpy(gx), xr.grad) < 1e-5
    # without the input gradient, none is made
    _, none = mlp_k.mlp_backward(x.numpy(), np_layers, acts, outs, grad_out.numpy(), _zeros)
    assert none is None


def test_relu_gradient_is_zero_where_the_unit_is_off(arch):
    # one unit, inputs on both sides of 0: torch's rule (slope 0 at and below 0)
    x = np.array([[-2.0], [0.0], [3.0]], np.float32)
    layers = [(np.ones((1, 1), np.float32), np.zeros(1, np.float32))]
    outs = mlp_k.mlp_forward_saved(x, layers, ["relu"], _zeros)
    grads, gx = mlp_k.mlp_backward(x, layers, ["relu"], outs, np.ones((3, 1), np.float32),
                                   _zeros, want_input_grad=True)
    assert gx[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert grads[0][0][0, 0] == 3.0 and grads[0][1][0] == 1.0


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_steps_match_torch(arch, gen, weight_decay):
    n, lr = 1000, 1e-2
    p0 = torch.randn(n, generator=gen)
    grads = [torch.randn(n, generator=gen) for _ in range(4)]
    ref = torch.nn.Parameter(p0.double().clone())
    opt = torch.optim.Adam([ref], lr=lr, betas=(0.9, 0.99), eps=1e-15, weight_decay=weight_decay)
    param, m, v = p0.numpy().copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for step, g in enumerate(grads, start=1):
        ref.grad = g.double()
        opt.step()
        mlp_k.adam_step(param, g.numpy(), m, v, step, lr, weight_decay=weight_decay)
        assert rel_err(torch.from_numpy(param), ref.detach()) < 1e-6, step
    state = opt.state[ref]
    assert rel_err(torch.from_numpy(m), state["exp_avg"]) < 1e-6
    assert rel_err(torch.from_numpy(v), state["exp_avg_sq"]) < 1e-5


def test_adam_step_numbers_count_from_one(arch):
    a = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="count from 1"):
        mlp_k.adam_step(a, a.copy(), a.copy(), a.copy(), 0, 1e-2)
