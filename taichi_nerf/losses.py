"""Regularisers on packed ray samples (torch autograd; cheap next to the field's cost)."""
from __future__ import annotations

import torch

TAU_MAX = 50.0


def sample_weights(sigma: torch.Tensor, dt: torch.Tensor, rays: torch.Tensor,
                   ray_index: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights T_i * (1 - exp(-sigma_i dt_i)) (M,) of packed samples.

    sigma, dt (M,); rays (R,2) int32 (start, count); ray_index (M,) int32. The
    transmittance sums run in float64: a global cumulative sum minus its value at
    each ray's start would lose the small optical depths of a ray behind dense ones.
    """
    # past an optical depth of 50 a sample is opaque to double precision; the clamp keeps
    # inf densities (exp of an untrained field) from turning the prefix sums into inf - inf
    tau = (sigma * dt).double().clamp(max=TAU_MAX)
    excl = torch.cumsum(tau, 0) - tau                       # optical depth before each sample
    start = rays[:, 0].long()[ray_index.long()]
    excl = excl - excl[start]                               # ... within its own ray
    return (torch.exp(-excl) * -torch.expm1(-tau)).float()


def distortion_loss(sigma: torch.Tensor, t: torch.Tensor, dt: torch.Tensor,
                    rays: torch.Tensor, ray_index: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's distortion loss, mean over rays (scalar, model units).

    sum_ij w_i w_j |t_i - t_j| + 1/3 sum_i w_i^2 dt_i per ray, in O(M) through
    exclusive prefix sums; t, dt (M,) interval midpoints and lengths along each ray.
    It is small only when a ray's weight gathers in one short interval, so it
    removes the semi-transparent fog a field uses to fit a few views of a real scene.
    """
    n_rays = rays.shape[0]
    if t.numel() == 0:
        return sigma.sum() * 0.0
    w = sample_weights(sigma, dt, rays, ray_index).double()
    s = t.double()
    start = rays[:, 0].long()[ray_index.long()]

    def exclusive(x: torch.Tensor) -> torch.Tensor:
        c = torch.cumsum(x, 0) - x
        return c - c[start]

    inter = 2.0 * w * (s * exclusive(w) - exclusive(w * s))
    intra = w * w * dt.double() / 3.0
    return ((inter + intra).sum() / max(n_rays, 1)).float()
