"""MLP forward pass as Taichi kernels, so a trained field renders with no torch at all.

Weights follow torch.nn.Linear: weight (out, in), bias (out,). Activations are
chosen at compile time: "none", "relu", "sigmoid", "exp".
"""
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


@ti.kernel
def linear(x: ti.types.ndarray(dtype=ti.f32, ndim=2), weight: ti.types.ndarray(dtype=ti.f32, ndim=2),
           bias: ti.types.ndarray(dtype=ti.f32, ndim=1), y: ti.types.ndarray(dtype=ti.f32, ndim=2),
           act: ti.template()):
    """y (M,out) = act(x (M,in) @ weight.T (in,out) + bias (out,))."""
    for i, o in ti.ndrange(x.shape[0], weight.shape[0]):
        acc = bias[o]
        for k in range(weight.shape[1]):
            acc += weight[o, k] * x[i, k]
        y[i, o] = activate(acc, act)


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
