"""Reading images as float32 sRGB and area-filter downscaling."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence, Tuple

import imageio.v3 as iio
import numpy as np

from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".tif", ".tiff", ".webp")


def _decode_raw(path: Path) -> np.ndarray:
    """Decoded pixels (H, W, 3 or 4), dtype as stored (uint8, uint16 or float)."""
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        raw = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises many types for corrupt/unknown files
        raise DataError(path, f"unreadable image: {type(e).__name__}: {e}") from None
    if raw.ndim == 4:  # multi-frame (GIF, TIFF): the first frame is the image
        raw = raw[0]
    if raw.dtype not in (np.uint8, np.uint16) and not np.issubdtype(raw.dtype, np.floating):
        raise DataError(path, f"unsupported pixel type {raw.dtype}")
    if raw.ndim == 2:
        raw = raw[:, :, None]
    if raw.ndim != 3 or raw.shape[2] not in (1, 2, 3, 4):
        raise DataError(path, f"unsupported image shape {raw.shape} (expected gray, RGB or RGBA)")
    if raw.shape[2] == 1:
        raw = np.repeat(raw, 3, axis=2)
    elif raw.shape[2] == 2:  # gray + alpha
        raw = np.concatenate([np.repeat(raw[:, :, :1], 3, axis=2), raw[:, :, 1:]], axis=2)
    return raw


def _to_float(raw: np.ndarray) -> np.ndarray:
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / np.float32(255.0)
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / np.float32(65535.0)
    return raw.astype(np.float32)


def read_image(path: os.PathLike) -> np.ndarray:
    """Decode one image file to float32 (H, W, 3 or 4) sRGB in [0, 1], straight alpha."""
    return _to_float(_decode_raw(Path(path)))


def _blocks(x: np.ndarray, k: int, reduce: np.ufunc) -> np.ndarray:
    """`reduce` (np.add, np.minimum, np.maximum) over each k x k block of (h*k, w*k, C) ->
    (h, w, C). First the k rows of a block, along whole contiguous rows, then the k columns
    of the k-times smaller result: numpy's reduction over axes (1, 3) of a 5-d view strides
    through memory (a whole RGBA downscale of an 800x800 image: 80-90 ms that way, ~30 ms
    this way)."""
    hk, wk, c = x.shape
    rows = reduce.reduce(x.reshape(hk // k, k, wk * c), axis=1)
    return reduce.reduce(rows.reshape(hk // k, wk // k, k, c), axis=2)


def downscale_area(img: np.ndarray, k: int) -> np.ndarray:
    """Area-filter (H, W, C) by integer k: crop to multiples of k, average k x k blocks -> (H//k, W//k, C).

    With 4 channels the colour is averaged weighted by alpha (in premultiplied
    space): straight-alpha colour under transparent pixels carries no
    information, and this way compositing the result over any background
    equals the block mean of the full-resolution composite.
    """
    img = np.asarray(img, dtype=np.float32)
    if k == 1:
        return img
    h, w, c = img.shape[0] // k, img.shape[1] // k, img.shape[2]
    img = np.ascontiguousarray(img[: h * k, : w * k])
    inv = np.float32(1.0 / (k * k))
    if c != 4:
        return _blocks(img, k, np.add) * inv
    rgb, alpha = img[..., :3], img[..., 3:]
    a_mean = _blocks(np.ascontiguousarray(alpha), k, np.add) * inv
    premul = _blocks(rgb * alpha, k, np.add) * inv
    rgb = np.ascontiguousarray(rgb)
    plain = _blocks(rgb, k, np.add) * inv
    out = np.where(a_mean > 0, premul / np.maximum(a_mean, np.float32(1e-12)), plain)
    # A weighted mean lies within its block's range; the division can round past it (1.0000004).
    out = np.clip(out, _blocks(rgb, k, np.minimum), _blocks(rgb, k, np.maximum))
    return np.concatenate([out, a_mean], axis=2).astype(np.float32)


def image_size(path: os.PathLike) -> Tuple[int, int]:
    """(w, h) in pixels of an image file, read from its header: no pixel is decoded, so a
    file whose pixel data is cut short still answers."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        props = iio.improps(path)
    except Exception as e:  # imageio raises many types for corrupt/unknown files
        raise DataError(path, f"unreadable image: {type(e).__name__}: {e}") from None
    shape = props.shape[1:] if props.is_batch else props.shape  # multi-frame: the first frame
    if len(shape) < 2:
        raise DataError(path, f"unsupported image shape {props.shape}")
    return int(shape[1]), int(shape[0])


def check_downscale(path: os.PathLike, size: Tuple[int, int], k: int) -> None:
    """DataError unless an image of (w, h) `size` pixels can be shrunk by the factor k."""
    if k > min(size):
        raise DataError(path, f"downscale {k} is larger than the image ({size[0]}x{size[1]})")


def _decode(path: Path, k: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    raw = _decode_raw(path)
    size = (raw.shape[1], raw.shape[0])
    check_downscale(path, size, k)
    # At full resolution the compact decoded dtype is kept until the copy into
    # the output, so peak memory is the output plus uint8 copies, not 2x float.
    return (raw if k == 1 else downscale_area(_to_float(raw), k)), size


def load_images(paths: Sequence[os.PathLike], downscale: int = 1,
                expected_sizes: Optional[Sequence[Optional[Tuple[int, int]]]] = None,
                workers: Optional[int] = None) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Load and area-downscale images -> (float32 (N, H//k, W//k, C), original (W, H) in pixels).

    All images must share one size; ``expected_sizes[i]`` is the (w, h) the
    metadata claims for image i (either may be None), or None. C is 4 if any image has alpha (RGB
    images among RGBA ones get alpha 1).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("load_images needs at least one path")
    for p in paths:  # fail on a missing file before spending time decoding
        if not p.is_file():
            raise DataError(p, "image file not found")
    k = int(downscale)
    pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1))
    try:
        futures = [pool.submit(_decode, p, k) for p in paths]
        results = []
        for i, (p, fut) in enumerate(zip(paths, futures)):
            img, size = fut.result()
            want = expected_sizes[i] if expected_sizes is not None else None
            if want is not None and any(x is not None and x != s for x, s in zip(want, size)):
                claimed = "x".join("?" if x is None else str(x) for x in want)
                raise DataError(p, f"image is {size[0]}x{size[1]} but the metadata says {claimed}")
            if results and size != results[0][1]:
                w0, h0 = results[0][1]
                raise DataError(p, f"image is {size[0]}x{size[1]} but {paths[0].name} is "
                                   f"{w0}x{h0}; all images must have one size")
            results.append((img, size))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    channels = 4 if any(img.shape[2] == 4 for img, _ in results) else 3
    out = np.empty((len(results),) + results[0][0].shape[:2] + (channels,), np.float32)
    for i in range(len(results)):
        img = results[i][0]
        results[i] = (None, results[i][1])  # release each source as soon as it is copied
        out[i, :, :, : img.shape[2]] = _to_float(img) if k == 1 else img
        if img.shape[2] == 3 and channels == 4:
            out[i, :, :, 3] = 1.0
    return out, results[0][1]
