"""Image decoding and the area-filter downscale."""
import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.data import DataError, downscale_area, load_images, read_image


def block_mean(img, k):
    h, w = img.shape[0] // k, img.shape[1] // k
    out = np.zeros((h, w, img.shape[2]))
    for i in range(h):
        for j in range(w):
            out[i, j] = img[i * k:(i + 1) * k, j * k:(j + 1) * k].astype(np.float64).mean(axis=(0, 1))
    return out


def test_downscale_rgb_equals_block_mean_after_crop():
    rng = np.random.default_rng(0)
    img = rng.random((13, 10, 3)).astype(np.float32)
    out = downscale_area(img, 3)
    assert out.shape == (4, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, block_mean(img, 3), atol=1e-6)
    np.testing.assert_array_equal(downscale_area(img, 1), img)


def test_downscale_rgba_alpha_is_block_mean_and_composite_is_preserved():
    rng = np.random.default_rng(1)
    img = rng.random((8, 8, 4)).astype(np.float32)
    img[:4, :4, 3] = 0.0  # a fully transparent block keeps a plain colour mean
    out = downscale_area(img, 4)
    np.testing.assert_allclose(out[..., 3], block_mean(img, 4)[..., 3], atol=1e-6)
    bg = np.array([0.2, 0.7, 1.0])
    full = img[..., :3] * img[..., 3:] + bg * (1 - img[..., 3:])
    small = out[..., :3] * out[..., 3:] + bg * (1 - out[..., 3:])
    np.testing.assert_allclose(small, block_mean(full, 4), atol=1e-5)
    np.testing.assert_allclose(out[0, 0, :3], img[:4, :4, :3].mean(axis=(0, 1)), atol=1e-6)


def test_read_image_dtypes_and_channel_layouts(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    iio.imwrite(tmp_path / "g.png", gray)
    img = read_image(tmp_path / "g.png")
    assert img.shape == (3, 4, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[..., 1], gray / 255.0, atol=1e-7)

    la = np.stack([gray, np.full_like(gray, 255)], axis=2)
    iio.imwrite(tmp_path / "la.png", la)
    assert read_image(tmp_path / "la.png").shape == (3, 4, 4)

    deep = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    iio.imwrite(tmp_path / "d.png", deep)
    np.testing.assert_allclose(read_image(tmp_path / "d.png")[..., 0], deep / 65535.0, atol=1e-6)


def test_load_images_downscales_and_promotes_rgb_among_rgba(tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (8, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgb = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgba)
    iio.imwrite(tmp_path / "b.png", rgb)
    out, size = load_images([tmp_path / "a.png", tmp_path / "b.png"], downscale=2)
    assert size == (6, 8) and out.shape == (2, 4, 3, 4)
    np.testing.assert_allclose(out[1, ..., :3], block_mean(rgb / 255.0, 2), atol=1e-6)
    np.testing.assert_array_equal(out[1, ..., 3], 1.0)
    np.testing.assert_allclose(out[0], block_mean(rgba / 255.0, 2), atol=1e-6)


def test_load_images_full_resolution_is_exact(tmp_path):
    img = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", img)
    out, size = load_images([tmp_path / "a.png"])
    assert size == (7, 5)
    np.testing.assert_array_equal(out[0], img.astype(np.float32) / 255.0)


def test_load_images_rejects_size_mismatch_naming_the_file(tmp_path):
    iio.imwrite(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DataError) as e:
        load_images([tmp_path / "a.png", tmp_path / "b.png"])
    assert str(e.value).startswith(str(tmp_path / "b.png") + ":")
    assert "5x4" in str(e.value) and "4x4" in str(e.value)


def test_downscale_larger_than_image_is_an_error(tmp_path):
    iio.imwrite(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="downscale 8"):
        load_images([tmp_path / "a.png"], downscale=8)


def test_downscale_rgba_crops_and_stays_within_each_blocks_range():
    """An RGBA image whose sides are no multiple of k: cropped, alpha the block mean, each
    colour inside its block's range (the division may not round past it)."""
    rng = np.random.default_rng(7)
    img = rng.random((23, 17, 4)).astype(np.float32)
    img[..., 3] *= rng.random((23, 17)) > 0.3  # transparent pixels among opaque ones
    img[:5, :5, 3] = 0.0
    out = downscale_area(img, 5)
    assert out.shape == (4, 3, 4) and out.dtype == np.float32
    ref = block_mean(img, 5)
    np.testing.assert_allclose(out[..., 3], ref[..., 3], atol=1e-6)
    for i in range(4):
        for j in range(3):
            block = img[i * 5:(i + 1) * 5, j * 5:(j + 1) * 5]
            a = block[..., 3:].astype(np.float64)
            want = (block[..., :3] * a).sum((0, 1)) / a.sum() if a.sum() > 0 \
                else block[..., :3].mean((0, 1))
            np.testing.assert_allclose(out[i, j, :3], want, atol=1e-5)
            assert np.all(out[i, j, :3] >= block[..., :3].min((0, 1)))
            assert np.all(out[i, j, :3] <= block[..., :3].max((0, 1)))
