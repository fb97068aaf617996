"""The NGP field's forward pass over Taichi ndarrays, shared by the torch-free renderer
(:mod:`kernels.inference`) and the torch-free training step (:mod:`kernels.field_train`).

hash grid -> density MLP (ReLU hidden layers, raw head: log density + geometry features)
-> sigma = exp(head[:, 0]); [geometry features, SH(dirs)] -> colour MLP (ReLU hidden layers,
sigmoid head), the torch field's (``taichi_nerf.nn.field.NGPField``) arithmetic.
"""
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np
import taichi as ti

from . import mlp as mlp_k
from .hash_grid import hash_grid_kernels
from .sh import sh_kernels
from .specs import HashGridSpec


def upload(a: np.ndarray, dtype=ti.f32):
    """numpy array -> a Taichi ndarray of `dtype` (ti.f32 or ti.i32) and the same shape holding it."""
    a = np.ascontiguousarray(a, np.int32 if dtype == ti.i32 else np.float32)
    nd = ti.ndarray(dtype, shape=a.shape)
    nd.from_numpy(a)
    return nd


class Temporaries:
    """The ndarrays a call allocates, kept alive until :meth:`release` (after a sync).

    Taichi 1.7.4 on Vulkan never frees an ndarray that is garbage-collected while a
    launched kernel still uses it (measured: 12 MB lost per 50k x 64 buffer; a viewer went
    past 20 GB in minutes). Dropping temporaries only after ``ti.sync()`` frees them on
    every arch.
    """

    def __init__(self):
        self.live: List[object] = []

    def new(self, dtype, shape):
        """A new ndarray of `dtype` and `shape`, kept until the next release."""
        a = ti.ndarray(dtype, shape=tuple(shape))
        self.live.append(a)
        return a

    def f32(self, shape):
        """A new float32 ndarray (the `make_array` callback of the MLP helpers)."""
        return self.new(ti.f32, shape)

    def release(self) -> None:
        """Wait for the launched kernels, then drop the temporaries."""
        ti.sync()
        self.live.clear()


def activations(n_layers: int, head: str) -> List[str]:
    """ReLU on the hidden layers and `head` on the last: an MLP's activation names."""
    return ["relu"] * (n_layers - 1) + [head]


class FieldPass(NamedTuple):
    """What a forward pass computed: encoding (M, L*F), each density-MLP layer's output (the
    last is the raw head (M, G)), sigma (M,), colour-MLP input (M, G+S) and each colour-MLP
    layer's output (the last is rgb (M,3)); x and colour outputs are None for density only."""
    enc: object
    density_outs: List[object]
    sigma: object
    x: object
    color_outs: List[object]


@ti.kernel
def scale_levels(enc: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 weights: ti.types.ndarray(dtype=ti.f32, ndim=1), n_features: ti.i32):
    """enc (M, L*F) *= weights (L,) of each column's level, in place (coarse-to-fine)."""
    for i, j in ti.ndrange(enc.shape[0], enc.shape[1]):
        enc[i, j] *= weights[j // n_features]


@ti.kernel
def set_active_levels(weights: ti.types.ndarray(dtype=ti.f32, ndim=1), active: ti.f32):
    """weights (L,) = clamp(active - level, 0, 1): the first `active` levels on, the next
    fading in (``taichi_nerf.training.trainer.level_weights``' rule)."""
    for level in range(weights.shape[0]):
        weights[level] = ti.math.clamp(active - ti.cast(level, ti.f32), 0.0, 1.0)


def field_forward(spec: HashGridSpec, table, density_layers: Sequence[Tuple[object, object]],
                  pos, tmp: Temporaries, sh_degree: int = 0,
                  color_layers: Sequence[Tuple[object, object]] = (), dirs=None,
                  level_weights=None, coherent: bool = False) -> FieldPass:
    """Positions (M,3) in [0,1] (and unit dirs (M,3) for colour) -> the field's
    intermediates, each a temporary of `tmp`; without dirs only the density part runs.
    level_weights (L,): the hash levels' weights (coarse-to-fine), None for all 1.
    coherent: neighbouring points lie close together (hash_grid.level_major_forward)."""
    M = pos.shape[0]
    enc = tmp.f32((M, spec.out_dim))
    hash_grid_kernels(spec, coherent).forward(pos, table, enc)
    if level_weights is not None:
        scale_levels(enc, level_weights, spec.n_features)
    density_outs = mlp_k.mlp_forward_saved(enc, density_layers,
                                           activations(len(density_layers), "none"), tmp.f32)
    h = density_outs[-1]
    sigma = tmp.f32((M,))
    mlp_k.column_activation(h, 0, sigma, "exp")
    if dirs is None:
        return FieldPass(enc, density_outs, sigma, None, None)
    x, color_outs = colour_forward(h, dirs, tmp, sh_degree, color_layers)
    return FieldPass(enc, density_outs, sigma, x, color_outs)


def colour_forward(h, dirs, tmp: Temporaries, sh_degree: int,
                   color_layers: Sequence[Tuple[object, object]]) -> Tuple[object, List[object]]:
    """The density MLP's raw head h (M, G) and unit dirs (M,3) -> colour-MLP input (M, G+S)
    and each colour-MLP layer's output (the last is rgb (M,3)), temporaries of `tmp`."""
    M = h.shape[0]
    sh = tmp.f32((M, sh_degree ** 2))
    sh_kernels(sh_degree).encode(dirs, sh)
    x = tmp.f32((M, h.shape[1] + sh.shape[1]))
    mlp_k.concat_columns(h, sh, x)
    return x, mlp_k.mlp_forward_saved(x, color_layers,
                                      activations(len(color_layers), "sigmoid"), tmp.f32)
