"""Volume-rendering compositing over packed samples.

For each ray, samples i = 0.. in order: alpha_i = 1 - exp(-sigma_i * dt_i),
w_i = T_i * alpha_i with T_0 = 1 and T_{i+1} = T_i * (1 - alpha_i). Colour =
sum w_i rgb_i + (1 - opacity) * background, depth = sum w_i t_i, opacity =
sum w_i. Early termination: after the sample that brings T below
`t_threshold` the ray stops; `n_used` records how many samples counted, so the
backward kernel visits exactly those.

The backward is written by hand on every arch: Taichi 1.7.4's reverse-mode
autodiff returns wrong gradients for the loop-carried transmittance of a
dynamic loop (measured on cpu with both ndarrays and fields: d/dsigma_i misses
the terms of later samples), so it cannot be used here. The hand-written
kernel is tested against the float64 torch reference.
"""
import taichi as ti

from .rays import row3


@ti.func
def accumulate_sample(T, sigma, dt):
    """One compositing step: returns (weight, transmittance after the sample)."""
    alpha = 1.0 - ti.exp(-sigma * dt)
    return T * alpha, T * (1.0 - alpha)


@ti.func
def ray_goes_on(T, t_threshold):
    """Whether a ray with transmittance T takes its next sample (early termination's rule)."""
    return T >= t_threshold


def needs_colour(weights, min_weight: float):
    """Which samples get a colour (numpy or torch arrays alike): those whose compositing
    weight (:func:`resume_weights`) exceeds min_weight; the rest count as black."""
    return weights > min_weight


@ti.func
def composite_run(sigmas: ti.template(), rgbs: ti.template(), ts: ti.template(),
                  dts: ti.template(), start, count, T, c, depth, t_threshold):
    """Composite samples start..start+count-1 onto a ray's running (T, colour c, depth);
    stops after the sample that brings T below t_threshold (at once if T is below it)
    -> (T, c, depth, samples used)."""
    T_run, c_run, depth_run = T + 0.0, c + 0.0, depth + 0.0  # local copies
    n = 0
    while n < count:
        if not ray_goes_on(T_run, t_threshold):  # first: a resumed ray may have ended
            break
        s = start + n
        w, T_run = accumulate_sample(T_run, sigmas[s], dts[s])
        c_run += w * row3(rgbs, s)
        depth_run += w * ts[s]
        n += 1
    return T_run, c_run, depth_run, n


@ti.kernel
def composite_forward(sigmas: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      rgbs: ti.types.ndarray(dtype=ti.f32, ndim=2),
                      ts: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      dts: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      rays: ti.types.ndarray(dtype=ti.i32, ndim=2),
                      bg: ti.types.ndarray(dtype=ti.f32, ndim=2),
                      t_threshold: ti.f32,
                      out_rgb: ti.types.ndarray(dtype=ti.f32, ndim=2),
                      out_depth: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      out_opacity: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      n_used: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    """Packed samples (M,), rays (R,2) = (start, count), bg (R,3) -> rgb (R,3), depth, opacity, n_used (R,)."""
    for r in range(rays.shape[0]):
        T, c, depth, n = composite_run(sigmas, rgbs, ts, dts, rays[r, 0], rays[r, 1], 1.0,
                                       ti.Vector([0.0, 0.0, 0.0]), 0.0, t_threshold)
        opacity = 1.0 - T
        c += T * row3(bg, r)
        for a in ti.static(range(3)):
            out_rgb[r, a] = c[a]
        out_depth[r] = depth
        out_opacity[r] = opacity
        n_used[r] = n


@ti.kernel
def composite_resume(sigmas: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     rgbs: ti.types.ndarray(dtype=ti.f32, ndim=2),
                     ts: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     dts: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     rays: ti.types.ndarray(dtype=ti.i32, ndim=2),
                     ids: ti.types.ndarray(dtype=ti.i32, ndim=1),
                     t_threshold: ti.f32,
                     T: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     colour: ti.types.ndarray(dtype=ti.f32, ndim=2),
                     depth: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """Rendering in pieces: the next packed samples of rays ids (A,) (rays (A,2) = (start,
    count)) onto their running T (N,), premultiplied colour (N,3) and depth (N,), in place.
    Starting from T = 1, 0, 0 and feeding a ray's samples in order gives composite_forward's
    values (without the background: add colour + T * bg at the end)."""
    for i in range(ids.shape[0]):
        r = ids[i]
        T_r, c, d, _n = composite_run(sigmas, rgbs, ts, dts, rays[i, 0], rays[i, 1], T[r],
                                      row3(colour, r), depth[r], t_threshold)
        T[r] = T_r
        for a in ti.static(range(3)):
            colour[r, a] = c[a]
        depth[r] = d


@ti.kernel
def resume_weights(sigmas: ti.types.ndarray(dtype=ti.f32, ndim=1),
                   dts: ti.types.ndarray(dtype=ti.f32, ndim=1),
                   rays: ti.types.ndarray(dtype=ti.i32, ndim=2),
                   ids: ti.types.ndarray(dtype=ti.i32, ndim=1),
                   t_threshold: ti.f32,
                   T: ti.types.ndarray(dtype=ti.f32, ndim=1),
                   out_w: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """The weight that :func:`composite_resume` would give each of the next packed samples
    of rays ids (A,), written into out_w (M,) at the rays' rows, from their running T (N,),
    which stays unchanged; samples after a ray ends weigh 0. Lets a renderer skip the colour
    of samples that barely count (:func:`needs_colour`)."""
    for i in range(ids.shape[0]):
        T_run = T[ids[i]]
        for n in range(rays[i, 1]):
            s = rays[i, 0] + n
            w = 0.0
            if ray_goes_on(T_run, t_threshold):
                w, T_run = accumulate_sample(T_run, sigmas[s], dts[s])
            out_w[s] = w


@ti.kernel
def composite_backward(sigmas: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       rgbs: ti.types.ndarray(dtype=ti.f32, ndim=2),
                       ts: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       dts: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       rays: ti.types.ndarray(dtype=ti.i32, ndim=2),
                       n_used: ti.types.ndarray(dtype=ti.i32, ndim=1),
                       bg: ti.types.ndarray(dtype=ti.f32, ndim=2),
                       out_rgb: ti.types.ndarray(dtype=ti.f32, ndim=2),
                       out_depth: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       out_opacity: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       grad_rgb: ti.types.ndarray(dtype=ti.f32, ndim=2),
                       grad_depth: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       grad_opacity: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       grad_sigmas: ti.types.ndarray(dtype=ti.f32, ndim=1),
                       grad_rgbs: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """Hand-written backward: grads of sigmas (M,) and rgbs (M,3) from grads of rgb, depth, opacity (R,).

    With v_i = g_rgb.(rgb_i - bg) + g_depth * t_i + g_opacity, the loss changes by
    dL/drgb_i = w_i g_rgb and dL/dsigma_i = dt_i (T_{i+1} v_i - sum_{j>i} w_j v_j).
    The total sum_j w_j v_j comes from the forward outputs
    (= g_rgb.(out_rgb - bg) + g_depth * depth + g_opacity * opacity), so one pass
    over the samples suffices. Samples past n_used get zero gradient.
    """
    for r in range(rays.shape[0]):
        start, count, n = rays[r, 0], rays[r, 1], n_used[r]
        g = row3(grad_rgb, r)
        b = row3(bg, r)
        gd, go = grad_depth[r], grad_opacity[r]
        total = g.dot(row3(out_rgb, r) - b) + gd * out_depth[r] + go * out_opacity[r]
        T = 1.0
        prefix = 0.0
        for k in range(n):
            s = start + k
            w, T_next = accumulate_sample(T, sigmas[s], dts[s])
            v = g.dot(row3(rgbs, s) - b) + gd * ts[s] + go
            prefix += w * v
            grad_sigmas[s] = dts[s] * (T_next * v - (total - prefix))
            for a in ti.static(range(3)):
                grad_rgbs[s, a] = w * g[a]
            T = T_next
        for k in range(n, count):
            s = start + k
            grad_sigmas[s] = 0.0
            for a in ti.static(range(3)):
                grad_rgbs[s, a] = 0.0
