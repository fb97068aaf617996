"""PSNR / SSIM on known cases, numpy and torch inputs; sRGB conversions."""
import math

import numpy as np
import pytest
import torch

from taichi_nerf.training import metrics
def test_psnr_of_known_mse():
    target = np.full((8, 8, 3), 0.5, np.float32)
    pred = target + 0.1  # MSE 0.01 -> 20 dB
    assert math.isclose(metrics.psnr(pred, target), 20.0, abs_tol=1e-5)
    pred = target.copy()
    pred[..., 0] += 0.1 * math.sqrt(3)  # one channel off: same MSE
    assert math.isclose(metrics.psnr(pred, target), 20.0, abs_tol=1e-5)
    assert math.isclose(metrics.psnr(torch.from_numpy(target + 0.01), torch.from_numpy(target)),
                        40.0, abs_tol=1e-4)
    assert metrics.psnr(target, target) == math.inf
    assert isinstance(metrics.psnr(pred, target), float)


def test_ssim_identical_and_noisy():
    rng = np.random.default_rng(0)
    img = rng.random((32, 40, 3))
    assert metrics.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1)
    s = metrics.ssim(noisy, img)
    assert isinstance(s, float) and 0.0 < s < 0.99
    assert metrics.ssim(torch.from_numpy(noisy).float(), torch.from_numpy(img).float()) \
        == pytest.approx(s, abs=1e-5)
    assert metrics.ssim(noisy[..., 0], img[..., 0]) < 0.99  # greyscale (H, W)


def test_ssim_matches_skimage_nerf_settings():
    from skimage.metrics import structural_similarity
    rng = np.random.default_rng(1)
    a, b = rng.random((24, 24, 3)), rng.random((24, 24, 3))
    want = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(a, b) == pytest.approx(want, abs=1e-12)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="empty"):
        metrics.psnr(np.zeros((0, 3)), np.zeros((0, 3)))


def test_srgb_linear_round_trip():
    x = np.linspace(0, 1, 1001)
    assert np.allclose(metrics.linear_to_srgb(metrics.srgb_to_linear(x)), x, atol=1e-12)
    assert metrics.srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.2140411, abs=1e-6)
    t = torch.linspace(0, 1, 101)
    back = metrics.linear_to_srgb(metrics.srgb_to_linear(t))
    assert isinstance(back, torch.Tensor) and torch.allclose(back, t, atol=1e-5)
