"""MLP forward and backward passes and Adam as Taichi kernels: a trained field renders with
no torch at all, and the pieces of a torch-free training step (Vulkan/Metal, where torch
cannot run on the device) are here too.

Weights follow torch.nn.Linear: weight (out, in), bias (out,). Activations are
chosen at compile time: "none", "relu", "sigmoid", "exp". The backward kernels are
written by hand (Taichi's autodiff is limited on Vulkan) and reduce without atomics:
one thread per weight sums over the batch, one thread per input over the outputs, so
results do not depend on thread timing.
"""
import warnings

import taichi as ti

ACTIVATIONS = ("none", "relu", "sigmoid", "exp")


@ti.func
def activate(v, act: ti.template()):
    """Apply the compile-time activation `act` to a scalar."""
    out = v
    if ti.static(act == "relu"):
        out = ti.max(v, 0.0)
    elif ti.static(act == "sigmoid"):
        out = 1.0 / (1.0 + ti.exp(-v))
    elif ti.static(act == "exp"):
        out = ti.exp(v)
    return out


@ti.func
def activation_slope(y, act: ti.template()):
    """d act / d pre-activation, written with the activation's output y (what the forward
    keeps): relu 1 where y > 0, sigmoid y (1 - y), exp y, none 1."""
    out = 1.0
    if ti.static(act == "relu"):
        out = 1.0 if y > 0.0 else 0.0
    elif ti.static(act == "sigmoid"):
        out = y * (1.0 - y)
    elif ti.static(act == "exp"):
        out = y
    return out


@ti.kernel
def _linear_rows(x: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 weight: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 bias: ti.types.ndarray(dtype=ti.f32, ndim=1),
                 y: ti.types.ndarray(dtype=ti.f32, ndim=2), act: ti.template(),
                 n_out: ti.template()):
    # one task per row, its n_out sums in registers: x's row is read once (one task per
    # output reread it per output; on lavapipe 1.7 s of a 4.8 s step)
    for i in range(x.shape[0]):
        acc = ti.Vector([bias[o] for o in ti.static(range(n_out))])
        for k in range(weight.shape[1]):
            v = x[i, k]
            for o in ti.static(range(n_out)):
                acc[o] += weight[o, k] * v
        for o in ti.static(range(n_out)):
            y[i, o] = activate(acc[o], act)


def _unrolled(kernel, *args) -> None:
    """Call a kernel whose static loops unroll a layer's width (> 32: Taichi warns)."""
    with warnings.catch_warnings():  # the unrolled sums in registers are what makes it fast
        warnings.filterwarnings("ignore", "You are unrolling more than", SyntaxWarning)
        kernel(*args)


def linear(x, weight, bias, y, act: str) -> None:
    """y (M,out) = act(x (M,in) @ weight.T (in,out) + bias (out,)), Taichi ndarrays (or
    numpy/torch CPU arrays)."""
    _unrolled(_linear_rows, x, weight, bias, y, act, int(weight.shape[0]))


@ti.kernel
def concat_columns(a: ti.types.ndarray(dtype=ti.f32, ndim=2), b: ti.types.ndarray(dtype=ti.f32, ndim=2),
                   out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """out (M, A+B) = [a (M,A), b (M,B)]."""
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            out[i, k] = a[i, k]
        for k in range(b.shape[1]):
            out[i, a.shape[1] + k] = b[i, k]


@ti.kernel
def column_activation(x: ti.types.ndarray(dtype=ti.f32, ndim=2), col: ti.i32,
                      out: ti.types.ndarray(dtype=ti.f32, ndim=1), act: ti.template()):
    """out (M,) = act(x[:, col])."""
    for i in range(x.shape[0]):
        out[i] = activate(x[i, col], act)


# Samples per partial sum of the weight gradient: each task sums one chunk of rows for one
# output unit, reading the chunk's rows of x contiguously (one task per weight summing
# over every row read x column-wise: 2.8 s of a 3.1 s step on 2 CPU cores, measured)
GRAD_CHUNK = 256


@ti.kernel
def pre_activation_grad(y: ti.types.ndarray(dtype=ti.f32, ndim=2),
                        grad_y: ti.types.ndarray(dtype=ti.f32, ndim=2),
                        grad_z: ti.types.ndarray(dtype=ti.f32, ndim=2), act: ti.template()):
    """For y = act(z): grad_z (M,out) = grad_y * act'(z), the slope taken from y."""
    for i, o in ti.ndrange(y.shape[0], y.shape[1]):
        grad_z[i, o] = grad_y[i, o] * activation_slope(y[i, o], act)


@ti.kernel
def _grad_param_partials(x: ti.types.ndarray(dtype=ti.f32, ndim=2),
                         grad_z: ti.types.ndarray(dtype=ti.f32, ndim=2),
                         partials: ti.types.ndarray(dtype=ti.f32, ndim=3),
                         n_in: ti.template()):
    # n_in static: the row's sums stay in registers (summing into `partials` in memory ran
    # at 0.5 GFLOP/s)
    for c, o in ti.ndrange(partials.shape[0], partials.shape[1]):
        acc = ti.Vector.zero(ti.f32, n_in + 1)
        for i in range(c * GRAD_CHUNK, ti.min((c + 1) * GRAD_CHUNK, x.shape[0])):
            g = grad_z[i, o]
            for k in ti.static(range(n_in)):
                acc[k] += g * x[i, k]
            acc[n_in] += g
        for k in ti.static(range(n_in + 1)):
            partials[c, o, k] = acc[k]


@ti.kernel
def _sum_partials(partials: ti.types.ndarray(dtype=ti.f32, ndim=3),
                  grad_weight: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  grad_bias: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    n_in = grad_weight.shape[1]
    for o, k in ti.ndrange(grad_weight.shape[0], n_in + 1):
        acc = 0.0
        for c in range(partials.shape[0]):
            acc += partials[c, o, k]
        if k < n_in:
            grad_weight[o, k] = acc
        else:  # the extra column is the bias: its input is 1
            grad_bias[o] = acc


def linear_grad_params(x, grad_z, grad_weight, grad_bias, make_array) -> None:
    """For z = x @ weight.T + bias: grad_weight (out,in) and grad_bias (out,) from x (M,in)
    and grad_z (M,out) (:func:`pre_activation_grad`); overwritten, not accumulated. Sums
    run in a fixed order (chunks of GRAD_CHUNK rows, then the chunks): no atomics."""
    n_chunks = max(1, -(-x.shape[0] // GRAD_CHUNK))
    partials = make_array((n_chunks, grad_weight.shape[0], grad_weight.shape[1] + 1))
    _unrolled(_grad_param_partials, x, grad_z, partials, int(x.shape[1]))
    _sum_partials(partials, grad_weight, grad_bias)


@ti.kernel
def _grad_input_rows(weight: ti.types.ndarray(dtype=ti.f32, ndim=2),
                     grad_z: ti.types.ndarray(dtype=ti.f32, ndim=2),
                     grad_x: ti.types.ndarray(dtype=ti.f32, ndim=2), n_in: ti.template()):
    for i in range(grad_x.shape[0]):
        acc = ti.Vector.zero(ti.f32, n_in)
        for o in range(weight.shape[0]):
            g = grad_z[i, o]
            for k in ti.static(range(n_in)):
                acc[k] += g * weight[o, k]
        for k in ti.static(range(n_in)):
            grad_x[i, k] = acc[k]


def linear_grad_input(weight, grad_z, grad_x) -> None:
    """For z = x @ weight.T + bias: grad_x (M,in) from weight (out,in) and grad_z (M,out)."""
    _unrolled(_grad_input_rows, weight, grad_z, grad_x, int(weight.shape[1]))


@ti.kernel
def adam_update(param: ti.types.ndarray(dtype=ti.f32), grad: ti.types.ndarray(dtype=ti.f32),
                m: ti.types.ndarray(dtype=ti.f32), v: ti.types.ndarray(dtype=ti.f32),
                lr: ti.f32, beta1: ti.f32, beta2: ti.f32, eps: ti.f32, weight_decay: ti.f32,
                bias_correction1: ti.f32, bias_correction2_sqrt: ti.f32):
    """One Adam step on a parameter (any shape) in place, torch.optim.Adam's arithmetic (L2
    weight decay added to the gradient; bias corrections 1 - beta^t given by the caller)."""
    for j in ti.grouped(param):
        g = grad[j] + weight_decay * param[j]
        m[j] = beta1 * m[j] + (1.0 - beta1) * g
        v[j] = beta2 * v[j] + (1.0 - beta2) * g * g
        denom = ti.sqrt(v[j]) / bias_correction2_sqrt + eps
        param[j] -= (lr / bias_correction1) * m[j] / denom


def adam_step(param, grad, m, v, step: int, lr: float, betas=(0.9, 0.99), eps: float = 1e-15,
              weight_decay: float = 0.0) -> None:
    """Adam step number `step` (1, 2, ...) on float32 arrays param, grad, m, v of one shape,
    in place; defaults are the trainer's (instant-ngp's betas and eps)."""
    if step < 1:
        raise ValueError(f"Adam steps count from 1, got {step}")
    b1, b2 = betas
    adam_update(param, grad, m, v, lr, b1, b2, eps, weight_decay,
                1.0 - b1 ** step, (1.0 - b2 ** step) ** 0.5)


def mlp_forward(x, layers, activations, make_array):
    """Run x (M, in) through [(weight, bias), ...] with per-layer activation names; returns y (M, out).

    `make_array(shape)` allocates the intermediate float32 arrays (ti.ndarray or numpy).
    """
    for (w, b), act in zip(layers, activations):
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of {ACTIVATIONS}")
        y = make_array((x.shape[0], w.shape[0]))
        linear(x, w, b, y, act)
        x = y
    return x


def mlp_forward_saved(x, layers, activations, make_array):
    """As :func:`mlp_forward`, but -> every layer's output [y_1, ..., y_n] (what the
    backward needs; y_n is the network's output)."""
    outs = []
    for layer, act in zip(layers, activations):
        x = mlp_forward(x, [layer], [act], make_array)
        outs.append(x)
    return outs


def mlp_backward(x, layers, activations, outs, grad_out, make_array, want_input_grad=False):
    """Gradients of an MLP run by :func:`mlp_forward_saved` (input x (M,in), its outputs
    `outs`) given grad_out (M,out) -> ([(grad_weight, grad_bias), ...] per layer, grad_x
    (M,in) or None)."""
    grads = [None] * len(layers)
    g = grad_out
    for li in range(len(layers) - 1, -1, -1):
        w, _b = layers[li]
        act = activations[li]
        inp = x if li == 0 else outs[li - 1]
        gz = make_array(tuple(g.shape))
        pre_activation_grad(outs[li], g, gz, act)
        gw = make_array(tuple(w.shape))
        gb = make_array((w.shape[0],))
        linear_grad_params(inp, gz, gw, gb, make_array)
        grads[li] = (gw, gb)
        if li > 0 or want_input_grad:
            gx = make_array((inp.shape[0], w.shape[1]))
            linear_grad_input(w, gz, gx)
            g = gx
    return grads, (g if want_input_grad else None)
