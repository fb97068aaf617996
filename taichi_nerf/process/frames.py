"""Input images for structure from motion: sharp frames picked from a video, or a photo folder.

Video: the clip is split into N equal windows of frames and each window gives its sharpest
frame, scored by the variance of the Laplacian of a reduced grey copy (as instant-ngp's and
nerfstudio's tools do). Frames are decoded once, one at a time (imageio's ffmpeg plugin), and
only the current best frame of the current window is kept, so memory does not grow with the
clip. Photos: copied as they are when possible, re-encoded only to apply an EXIF rotation or
``downscale``, so the files COLMAP reads and the files the trainer reads are the same pixels.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from taichi_nerf.data.images import IMAGE_EXTENSIONS, downscale_area

from .errors import MissingDependency, ProcessError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".mts", ".m2ts", ".ts")
# the sharpness score is computed on a grey copy shrunk by an integer factor until its longer
# side is at most this: blur of a few pixels still shows, and scoring costs little per frame
SCORE_MAX_SIDE = 1024
JPEG_QUALITY = 95  # frames are re-encoded once; 95 keeps JPEG artefacts below SIFT's interest


def is_video(path: os.PathLike) -> bool:
    """True for an existing file whose extension is a video container's (VIDEO_EXTENSIONS)."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS


def list_images(folder: os.PathLike) -> List[Path]:
    """Image files directly in ``folder`` (IMAGE_EXTENSIONS, no hidden files), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def image_folder(path: os.PathLike) -> Optional[Path]:
    """The folder holding the photos of ``path``: itself if it has images, else its ``images/``
    subfolder if that has images; None otherwise."""
    root = Path(path)
    for folder in (root, root / "images"):
        if folder.is_dir() and list_images(folder):
            return folder
    return None


def sharpness(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey image (H, W) float: higher = sharper."""
    g = np.asarray(gray, np.float32)
    lap = (g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1]) - 4.0 * g[1:-1, 1:-1]
    return float(lap.var(dtype=np.float64))


def score_factor(width: int, height: int, max_side: int = SCORE_MAX_SIDE) -> int:
    """Smallest integer factor that brings the longer side of width x height to <= max_side."""
    return max(1, -(-max(width, height) // max_side))


def frame_score(frame: np.ndarray, factor: int) -> float:
    """Sharpness of an (H, W, C) uint8 frame on its grey copy area-shrunk by ``factor``."""
    h, w = frame.shape[0] // factor, frame.shape[1] // factor
    # one integer sum over each factor x factor x RGB block (no full-size float copy):
    # 7 ms instead of 19 ms a 720p frame, and every frame of the clip is scored
    block = frame[:h * factor, :w * factor, :3].reshape(h, factor, w, factor * 3)
    g = block.sum(axis=(1, 3), dtype=np.uint32).astype(np.float32)
    return sharpness(g * np.float32(1.0 / (3 * factor * factor)))


def window_bounds(n_frames: int, n_windows: int) -> np.ndarray:
    """(n_windows + 1,) int frame indices: window k holds frames [b[k], b[k+1]) of the clip."""
    n_windows = max(1, min(n_windows, n_frames))
    return (np.arange(n_windows + 1) * n_frames) // n_windows


def select_sharpest(scores: Sequence[float], n: int) -> List[int]:
    """Indices of the highest score in each of n equal windows over ``scores`` (one per window)."""
    scores = np.asarray(scores, np.float64)
    b = window_bounds(len(scores), n)
    return [int(b[k] + np.argmax(scores[b[k]:b[k + 1]])) for k in range(len(b) - 1)]


@dataclass
class FrameSet:
    """The images written for SfM: file names (in ``images/``, sorted = capture order), their
    (width, height) in pixels, and for a video the source frame index, time (s) and score."""

    names: List[str]
    size: Tuple[int, int]
    source_frames: List[int] = field(default_factory=list)
    times: List[float] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    video_frames: int = 0
    fps: float = 0.0


def _ffmpeg():
    """imageio-ffmpeg, or MissingDependency with the pip command."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MissingDependency("imageio-ffmpeg") from None
    return imageio_ffmpeg


def video_info(path: Path) -> Tuple[int, float, Tuple[int, int]]:
    """(frame count, frames per second, (width, height) as decoded) of a video; ProcessError
    if ffmpeg cannot read it."""
    ffmpeg = _ffmpeg()
    import imageio.v3 as iio
    try:
        meta = iio.immeta(path, plugin="FFMPEG")
        # an exact count (ffmpeg decodes the stream once; about 1 s for a 720p phone clip):
        # the windows must cover the clip whatever its container claims
        count, _ = ffmpeg.count_frames_and_secs(str(path))
    except Exception as e:  # imageio/ffmpeg raise many types for broken or foreign files
        raise ProcessError(f"{path}: cannot read the video ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[-1] if str(e).strip() else e}); "
                           f"is it a complete video file?") from None
    size = tuple(int(v) for v in meta.get("size") or (0, 0))
    if not count or not size[0]:
        raise ProcessError(f"{path}: the video has no readable frames")
    return int(count), float(meta.get("fps") or 0.0), (size[0], size[1])


def _iter_frames(path: Path) -> Iterator[np.ndarray]:
    import imageio.v3 as iio
    try:
        # one decoded frame at a time: the clip is never held in memory
        for frame in iio.imiter(path, plugin="FFMPEG"):
            yield frame
    except (OSError, RuntimeError) as e:
        raise ProcessError(f"{path}: decoding stopped ({e}); is the video file complete?") \
            from None


def _shrink(frame: np.ndarray, k: int) -> np.ndarray:
    """(H, W, C) uint8 area-downscaled by k (the project's own filter) -> uint8."""
    if k == 1:
        return frame
    return np.clip(np.rint(downscale_area(frame.astype(np.float32) / 255.0, k) * 255.0),
                   0, 255).astype(np.uint8)


def _write_image(path: Path, pixels: np.ndarray) -> None:
    import imageio.v3 as iio
    if path.suffix.lower() in (".jpg", ".jpeg"):
        iio.imwrite(path, pixels[..., :3], quality=JPEG_QUALITY)
    else:
        iio.imwrite(path, pixels)


Progress = Callable[[Iterable, int], Iterable]  # (iterable, total) -> the iterable, shown


def extract_video_frames(video: Path, out_dir: Path, n: int, downscale: int = 1,
                         progress: Optional[Progress] = None) -> FrameSet:
    """Write the sharpest frame of each of n equal windows of the clip to out_dir as
    ``frame_<source index>.jpg`` (downscaled by an integer factor) -> FrameSet."""
    count, fps, (w, h) = video_info(video)
    if downscale > min(w, h):
        raise ProcessError(f"--downscale {downscale} is larger than the video's frames "
                           f"({w}x{h})")
    bounds = window_bounds(count, n)
    factor = score_factor(w, h)
    out = FrameSet(names=[], size=(w // downscale, h // downscale), video_frames=count, fps=fps)
    best: Optional[Tuple[float, int, np.ndarray]] = None
    window = 0

    def flush() -> None:
        score, index, frame = best
        name = f"frame_{index:06d}.jpg"
        _write_image(out_dir / name, _shrink(frame, downscale))
        out.names.append(name)
        out.source_frames.append(index)
        out.times.append(index / fps if fps else 0.0)
        out.scores.append(score)

    frames = _iter_frames(video)
    if progress is not None:
        frames = progress(frames, count)
    for i, frame in enumerate(frames):
        # frames past the counted end (a container that under-reports) join the last window
        k = min(int(np.searchsorted(bounds, i, side="right")) - 1, len(bounds) - 2)
        if k != window and best is not None:
            flush()
            best = None
        window = k
        score = frame_score(frame, factor)
        if best is None or score > best[0]:
            best = (score, i, frame)
    if best is not None:
        flush()
    if not out.names:
        raise ProcessError(f"{video}: the video has no readable frames")
    return out


def _orientation(path: Path) -> int:
    """EXIF orientation tag of an image (1 = as stored) or 1 when it has none."""
    import imageio.v3 as iio
    try:
        return int(iio.immeta(path, exclude_applied=False).get("Orientation") or 1)
    except Exception:  # formats without EXIF support; the decode below reports real problems
        return 1


def _stored_size(path: Path) -> Tuple[int, int]:
    import imageio.v3 as iio
    try:
        shape = iio.improps(path).shape
    except Exception as e:
        raise ProcessError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    if len(shape) == 4:  # multi-frame file: the first frame is the image
        shape = shape[1:]
    return int(shape[1]), int(shape[0])


def copy_images(images: Sequence[Path], out_dir: Path, downscale: int = 1,
                progress: Optional[Progress] = None) -> FrameSet:
    """Copy photos into out_dir (re-encoded only for an EXIF rotation or downscale) -> FrameSet.
    All must share one size once rotated: one camera, and the trainer takes one image size."""
    plan = []
    for p in images:
        rot = _orientation(p)
        w, h = _stored_size(p)
        if rot in (5, 6, 7, 8):  # EXIF orientations that swap the axes
            w, h = h, w
        copy = downscale == 1 and rot == 1 and p.suffix.lower() in (".jpg", ".jpeg", ".png")
        name = p.name if copy else p.stem + (".png" if p.suffix.lower() == ".png" else ".jpg")
        plan.append((p, rot, (w, h), copy, name))
    names = [name for *_, name in plan]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ProcessError(f"{images[0].parent}: two photos would both be written as {dup} "
                           f"(same name, different extension); rename one of them")
    size = plan[0][2]
    for p, _, s, _, _ in plan:
        if s != size:
            raise ProcessError(f"{p}: image is {s[0]}x{s[1]} but {plan[0][0].name} is "
                               f"{size[0]}x{size[1]}; process needs photos of one size (one "
                               f"camera): rotate or crop them to one size, or leave this one out")
    if downscale > min(size):
        raise ProcessError(f"--downscale {downscale} is larger than the images ({size[0]}x"
                           f"{size[1]})")
    seq = progress(plan, len(plan)) if progress is not None else plan
    for p, rot, _, copy, name in seq:
        if copy:
            shutil.copyfile(p, out_dir / name)  # the photo itself: no second JPEG generation
            continue
        import imageio.v3 as iio
        try:
            pixels = np.asarray(iio.imread(p, rotate=True))
        except Exception as e:
            raise ProcessError(f"{p}: unreadable image ({type(e).__name__}: {e})") from None
        if pixels.ndim == 4:
            pixels = pixels[0]
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if pixels.dtype != np.uint8:  # 16-bit or float photos: 8 bits suffice for SIFT
            scale = 255.0 / (65535.0 if pixels.dtype == np.uint16 else 1.0)
            pixels = np.clip(np.rint(pixels.astype(np.float32) * scale), 0, 255).astype(np.uint8)
        _write_image(out_dir / name, _shrink(pixels, downscale))
    return FrameSet(names=names, size=(size[0] // downscale, size[1] // downscale))
