"""The field's training step as Taichi kernels, no torch: loss, gradients and Adam on the device.

For Vulkan and Metal, where torch cannot run on the device: the hash grid, both MLPs,
the SH encoding, compositing, the colour loss and the optimizer all run as kernels on
Taichi ndarrays, and the only value a step has to bring to the host is the loss.
It computes exactly what the torch path (``taichi_nerf.nn.field.NGPField`` +
``ops.composite`` + MSE + ``torch.optim.Adam``) computes for a field without
per-image appearance codes and with every hash level on (tested against it).

Gradient chain (M samples, R rays, G geometry features, S SH terms)::

    enc = hash(pos)            (M, L*F)     <- table gradient (hash_grid.table_grad_method)
    h = density_mlp(enc)       (M, G)       <- mlp_backward, input gradient wanted
    sigma = exp(h[:, 0])       (M,)         <- trunc-exp slope exp(min(h0, 15))
    rgb = sigmoid(colour_mlp([h, sh(dirs)]))
    colour, T = composite(sigma, rgb)       <- composite_backward
    loss = mean((colour + T bg - target)^2)
"""
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import taichi as ti

from . import composite as composite_k
from . import mlp as mlp_k
from .field_arrays import (Temporaries, activations, field_forward, scale_levels,
                           set_active_levels, upload)
from .hash_grid import hash_grid_kernels, table_grad_method
from .runtime import current
from .specs import TAU_MAX, T_THRESHOLD, TRUNC_EXP_MAX, HashGridSpec


@ti.kernel
def _mse_and_grad(rgb: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  target: ti.types.ndarray(dtype=ti.f32, ndim=2), n_rays: ti.i32,
                  grad: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  loss: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """loss[0] += mean over the first n_rays rows (and 3 channels) of (rgb - target)^2 (zero
    it first); grad = its gradient (0 on the other rows)."""
    n = ti.cast(n_rays * 3, ti.f32)
    for r, a in ti.ndrange(rgb.shape[0], 3):
        g = 0.0
        if r < n_rays:
            d = rgb[r, a] - target[r, a]
            g = 2.0 * d / n
            ti.atomic_add(loss[0], d * d / n)
        grad[r, a] = g


@ti.func
def _depth_sample(sigma: ti.template(), t: ti.template(), dt: ti.template(), i, lo, hi, T):
    """Sample i of a depth ray with transmittance T before it -> (c_i, T after it, whether
    tau_i is below TAU_MAX, i.e. passes a gradient)."""
    tau = sigma[i] * dt[i]
    c = (1.0 if t[i] < lo else 0.0) - (0.5 if t[i] <= hi else 0.0)
    return c, T * ti.exp(-ti.min(tau, TAU_MAX)), tau < TAU_MAX


@ti.kernel
def sparse_depth_term(sigma: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      dt: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      rays: ti.types.ndarray(dtype=ti.i32, ndim=2),
                      depth: ti.types.ndarray(dtype=ti.f32, ndim=1), n_depth: ti.i32,
                      tolerance: ti.f32, weight: ti.f32,
                      loss: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      grad_sigma: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """The sparse-depth loss (``taichi_nerf.nn.losses.sparse_depth_loss``) of the first
    n_depth rays times `weight`: loss[0] += it, grad_sigma (M,) += its gradient.

    Per ray, L = sum_j c_j w_j with c_j = [t_j < d(1-tol)] - 0.5 [t_j <= d(1+tol)] and
    w_j = T_j (1 - exp(-tau_j)), tau_j = sigma_j dt_j: dL/dsigma_i = dt_i (c_i T_{i+1}
    - sum_{j>i} c_j w_j), no gradient where tau_i is clamped to TAU_MAX."""
    scale = weight / ti.cast(n_depth, ti.f32)
    for r in range(n_depth):
        start, count = rays[r, 0], rays[r, 1]
        lo, hi = depth[r] * (1.0 - tolerance), depth[r] * (1.0 + tolerance)
        T, total = 1.0, 0.0
        for k in range(count):  # forward: the ray's weighted sum
            c, T_next, _ = _depth_sample(sigma, t, dt, start + k, lo, hi, T)
            total += c * (T - T_next)
            T = T_next
        ti.atomic_add(loss[0], scale * total)
        T, before = 1.0, 0.0
        for k in range(count):  # backward, with the sum of the later samples = total - done
            i = start + k
            c, T_next, live = _depth_sample(sigma, t, dt, i, lo, hi, T)
            before += c * (T - T_next)
            if live:
                grad_sigma[i] += scale * dt[i] * (c * T_next - (total - before))
            T = T_next
    if n_depth > 0:
        ti.atomic_add(loss[0], 0.5 * weight)


@ti.kernel
def _geometry_grad(grad_x: ti.types.ndarray(dtype=ti.f32, ndim=2),
                   grad_sigma: ti.types.ndarray(dtype=ti.f32, ndim=1),
                   h: ti.types.ndarray(dtype=ti.f32, ndim=2),
                   grad_h: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """Gradient of the density MLP's output h (M,G): the colour MLP's input gradient on its
    first G columns, plus, on column 0, sigma's through the truncated exp."""
    for i, k in ti.ndrange(grad_h.shape[0], grad_h.shape[1]):
        g = grad_x[i, k]
        if k == 0:
            g += grad_sigma[i] * ti.exp(ti.min(h[i, 0], TRUNC_EXP_MAX))
        grad_h[i, k] = g


class FieldTrainingStep:
    """A field's parameters in Taichi ndarrays and the kernels of one step's loss and gradients.

    ``params`` lists the table (P,F) and each layer's weight (out,in) and bias (out,), density
    MLP first (torch.nn.Linear layout); :meth:`gradients` returns their gradients in that order.
    Create it after ``kernels.runtime.init``.
    """

    def __init__(self, spec: HashGridSpec, sh_degree: int, table: np.ndarray,
                 density_layers: Sequence[Tuple[np.ndarray, np.ndarray]],
                 color_layers: Sequence[Tuple[np.ndarray, np.ndarray]]):
        self.spec, self.sh_degree = spec, int(sh_degree)
        if tuple(table.shape) != (spec.n_params, spec.n_features):
            raise ValueError(f"table shape {tuple(table.shape)} does not match the spec's "
                             f"({spec.n_params}, {spec.n_features})")
        self.table = upload(table)
        self.density_layers = [(upload(w), upload(b)) for w, b in density_layers]
        self.color_layers = [(upload(w), upload(b)) for w, b in color_layers]
        self.density_acts = activations(len(self.density_layers), "none")
        self.color_acts = activations(len(self.color_layers), "sigmoid")
        self._tmp = Temporaries()  # the last call's arrays, kept until the next call syncs
        self.level_weights = None  # (L,) on the device once set_active_levels is called
        self._g_table = ti.ndarray(ti.f32, shape=(spec.n_params, spec.n_features))

    def set_active_levels(self, active: float) -> None:
        """Coarse-to-fine: level l weighs clamp(active - l, 0, 1) from now on (the host
        trainer's ``level_weights``); set on the device, nothing transferred."""
        if self.level_weights is None:
            self.level_weights = ti.ndarray(ti.f32, shape=(self.spec.n_levels,))
        set_active_levels(self.level_weights, float(active))

    @property
    def params(self) -> list:
        """[table, w, b, w, b, ...]: every trainable ndarray, density MLP before colour MLP."""
        out = [self.table]
        for w, b in self.density_layers + self.color_layers:
            out += [w, b]
        return out

    def density(self, pos):
        """Positions (M,3) in [0,1] ndarray -> sigma (M,) ndarray (occupancy updates); valid
        until the next call."""
        self._tmp.release()
        return field_forward(self.spec, self.table, self.density_layers, pos, self._tmp,
                             level_weights=self.level_weights).sigma

    def gradients(self, pos, dirs, t, dt, rays, bg, target,
                  t_threshold: float = T_THRESHOLD,
                  n_rays: Optional[int] = None, depth=None, n_depth: int = 0,
                  depth_tolerance: float = 0.05,
                  depth_weight: float = 0.0) -> Tuple[object, list]:
        """Packed samples pos (M,3) in [0,1], dirs (M,3) unit, t, dt (M,), rays (R,2) int32,
        bg and target (R,3) -> (loss ndarray (1,), gradients in ``params`` order), all on
        the device and valid until the next call: read the loss with ``loss.to_numpy()[0]`` when it is wanted. The loss
        is the mean over the first n_rays rays (default all; the rest have no samples), plus
        depth_weight times the sparse-depth loss of the first n_depth rays, whose points lie
        at depth (R,) model units (:func:`sparse_depth_term`)."""
        self._tmp.release()
        new: Callable = self._tmp.f32
        M, R = pos.shape[0], rays.shape[0]
        f = field_forward(self.spec, self.table, self.density_layers, pos, self._tmp,
                          self.sh_degree, self.color_layers, dirs, self.level_weights)
        h, sigma, x, rgb = f.density_outs[-1], f.sigma, f.x, f.color_outs[-1]
        out_rgb, out_depth, opacity = new((R, 3)), new((R,)), new((R,))
        n_used = self._tmp.new(ti.i32, (R,))
        composite_k.composite_forward(sigma, rgb, t, dt, rays, bg, float(t_threshold),
                                      out_rgb, out_depth, opacity, n_used)
        loss = new((1,))
        loss.fill(0.0)
        g_rgb = new((R, 3))
        _mse_and_grad(out_rgb, target, R if n_rays is None else int(n_rays), g_rgb, loss)
        g_depth, g_opacity = new((R,)), new((R,))
        g_depth.fill(0.0)
        g_opacity.fill(0.0)
        g_sigma, g_rgbs = new((M,)), new((M, 3))
        composite_k.composite_backward(sigma, rgb, t, dt, rays, n_used, bg, out_rgb, out_depth,
                                       opacity, g_rgb, g_depth, g_opacity, g_sigma, g_rgbs)
        if n_depth > 0 and depth_weight > 0:
            sparse_depth_term(sigma, t, dt, rays, depth, int(n_depth), float(depth_tolerance),
                              float(depth_weight), loss, g_sigma)
        c_grads, g_x = mlp_k.mlp_backward(x, self.color_layers, self.color_acts, f.color_outs,
                                          g_rgbs, new, want_input_grad=True)
        g_h = new((M, h.shape[1]))
        _geometry_grad(g_x, g_sigma, h, g_h)
        d_grads, g_enc = mlp_k.mlp_backward(f.enc, self.density_layers, self.density_acts,
                                            f.density_outs, g_h, new, want_input_grad=True)
        if self.level_weights is not None:  # enc was scaled: so is its gradient to the table
            scale_levels(g_enc, self.level_weights, self.spec.n_features)
        g_table = self._g_table  # table-sized: kept, not allocated per step
        g_table.fill(0.0)
        hk = hash_grid_kernels(self.spec)
        if table_grad_method(current().arch) == "by_level":
            hk.table_grad_by_level(pos, g_enc, g_table)
        else:
            hk.table_grad_atomic(pos, g_enc, g_table)
        grads = [g_table]
        for gw, gb in d_grads + c_grads:
            grads += [gw, gb]
        return loss, grads


class DeviceAdam:
    """torch.optim.Adam over ndarrays (moments on the device): one weight decay per parameter."""

    def __init__(self, params: Sequence[object], lr: float, weight_decays: Sequence[float],
                 betas=(0.9, 0.99), eps: float = 1e-15):
        if len(weight_decays) != len(params):
            raise ValueError(f"{len(weight_decays)} weight decays for {len(params)} parameters")
        self.params, self.lr, self.betas, self.eps = list(params), float(lr), betas, float(eps)
        self.weight_decays = [float(w) for w in weight_decays]
        self.m, self.v = [], []
        for p in self.params:
            for moments in (self.m, self.v):
                a = ti.ndarray(ti.f32, shape=p.shape)
                a.fill(0.0)
                moments.append(a)
        self.step_count = 0

    def step(self, grads: Sequence[object]) -> None:
        """Apply one step with gradients in ``params`` order."""
        self.step_count += 1
        for p, g, m, v, wd in zip(self.params, grads, self.m, self.v, self.weight_decays):
            mlp_k.adam_step(p, g, m, v, self.step_count, self.lr, self.betas, self.eps, wd)
