"""Image metrics (PSNR, SSIM as in NeRF papers) and sRGB <-> linear conversions.

Metrics take numpy arrays or torch tensors, images (H, W, 3) in [0, 1], and
return Python floats computed in float64. They do not clip: clip predictions
to [0, 1] first if the model can leave that range.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

# SSIM settings of the NeRF papers (and of Wang et al. 2004): an 11x11 Gaussian
# window (sigma 1.5, scikit-image truncates at 3.5 sigma) and population covariance.
SSIM_SIGMA = 1.5
SSIM_MIN_SIDE = 11


def _as_f64(img: Any, name: str) -> np.ndarray:
    if hasattr(img, "detach"):  # a torch tensor; checked by duck type so torch stays optional
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def _pair(pred: Any, target: Any):
    p, t = _as_f64(pred, "pred"), _as_f64(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} must have the same shape")
    if p.size == 0:
        raise ValueError("images are empty")
    return p, t


def mse(pred: Any, target: Any) -> float:
    """Mean squared error of two same-shape images (any shape) in [0, 1]."""
    p, t = _pair(pred, target)
    return float(np.mean((p - t) ** 2))


def psnr_from_mse(err: float) -> float:
    """PSNR in dB for data range 1 from an MSE; inf for 0."""
    return math.inf if err <= 0.0 else -10.0 * math.log10(err)


def psnr(pred: Any, target: Any) -> float:
    """PSNR in dB (data range 1) of pred vs target, same shape, e.g. (H,W,3) in [0,1]."""
    return psnr_from_mse(mse(pred, target))


def ssim(pred: Any, target: Any) -> float:
    """SSIM of pred vs target, (H,W,C) channels last or (H,W) grey, in [0,1], H, W >= 11."""
    p, t = _pair(pred, target)
    if p.ndim not in (2, 3):
        raise ValueError(f"ssim needs (H, W) or (H, W, C) images, got shape {p.shape}")
    if min(p.shape[:2]) < SSIM_MIN_SIDE:
        raise ValueError(f"ssim needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels "
                         f"(its Gaussian window), got {p.shape[1]}x{p.shape[0]}")
    try:
        from skimage.metrics import structural_similarity
    except ImportError as e:
        raise ImportError("ssim needs scikit-image: pip install scikit-image") from e
    return float(structural_similarity(
        p, t, channel_axis=-1 if p.ndim == 3 else None, data_range=1.0,
        gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False))


def srgb_to_linear(x: Any) -> Any:
    """sRGB in [0,1] -> linear light, elementwise (numpy array or torch tensor, same type back)."""
    if hasattr(x, "detach"):
        import torch
        return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    x = np.asarray(x)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Any) -> Any:
    """Linear light in [0,1] -> sRGB, elementwise (numpy array or torch tensor, same type back)."""
    if hasattr(x, "detach"):
        import torch
        return torch.where(x <= 0.0031308, x * 12.92,
                           1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
    x = np.asarray(x)
    return np.where(x <= 0.0031308, x * 12.92,
                    1.055 * np.maximum(x, 0.0031308) ** (1 / 2.4) - 0.055)
