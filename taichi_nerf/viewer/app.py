"""Live GGUI viewer: orbit/pan/zoom/fly around a trained run, or watch training in the loop.

Rendering goes through one of two backends with the same call (rays end once less than
1% of the light is left, PREVIEW_T_THRESHOLD, and only samples weighing more than
PREVIEW_MIN_WEIGHT get a colour):
- ``TorchPreview``: the training renderer (torch MLP), on cpu/cuda;
- ``TaichiPreview``: :class:`taichi_nerf.kernels.inference.NerfModel`, every step a
  Taichi kernel, so no torch call happens inside a frame on vulkan/metal.
While the camera moves the preview renders at a reduced resolution chosen to
hold a target frame rate, and refines to full resolution when it stops.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from taichi_nerf.nn import runtime
from taichi_nerf.render.camera_paths import horizontal_basis, orbit_poses
from taichi_nerf.data.scene import project_pinhole
from taichi_nerf.kernels.occupancy import cell_centers, checkpoint_occupied
from taichi_nerf.kernels.specs import PREVIEW_MIN_WEIGHT, PREVIEW_T_THRESHOLD, checkpoint_path

MODES = ("rgb", "depth", "opacity")


class ViewerError(RuntimeError):
    """A problem opening the viewer (display, run): printed as one line by the CLI."""


@dataclasses.dataclass
class OrbitCamera:
    """Camera orbiting `center` (world units) at `radius`, azimuth/elevation in degrees about `up`."""

    center: np.ndarray
    radius: float
    up: np.ndarray
    azimuth: float = 0.0
    elevation: float = 30.0
    override: Optional[np.ndarray] = None  # an exact pose (a dataset camera) until the user moves

    def pose(self) -> np.ndarray:
        """World camera-to-world (4,4), OpenGL axes."""
        if self.override is not None:
            return self.override
        return orbit_poses(1, self.radius, self.elevation, self.center, self.up,
                           start_azimuth_deg=self.azimuth)[0]

    def orbit(self, d_az: float, d_el: float) -> None:
        """Rotate about the centre by degrees."""
        self._release()
        self.azimuth = (self.azimuth + d_az) % 360.0
        self.elevation = float(np.clip(self.elevation + d_el, -89.0, 89.0))

    def zoom(self, factor: float) -> None:
        """Scale the distance to the centre."""
        self._release()
        self.radius = float(np.clip(self.radius * factor, 1e-3, 1e4))

    def pan(self, dx: float, dy: float) -> None:
        """Move the centre along the camera's right/up axes (fractions of the radius)."""
        self._release()
        p = self.pose()
        self.center = self.center + self.radius * (dx * p[:3, 0] + dy * p[:3, 1])

    def fly(self, forward: float, right: float, upward: float) -> None:
        """Move camera and centre together (fractions of the radius)."""
        self._release()
        p = self.pose()
        self.center = self.center + self.radius * (forward * -p[:3, 2] + right * p[:3, 0]
                                                   + upward * p[:3, 1])

    def look_from(self, pose: np.ndarray) -> None:
        """Show exactly this camera (e.g. a dataset view); orbit state follows its position."""
        eye = pose[:3, 3].astype(np.float64)
        v = eye - self.center
        self.radius = float(np.linalg.norm(v))
        up = self.up / np.linalg.norm(self.up)
        self.elevation = float(np.degrees(np.arcsin(np.clip(v @ up / self.radius, -1, 1))))
        # azimuth in the same horizontal basis that orbit_poses uses
        e1, e2 = horizontal_basis(up)
        self.azimuth = float(np.degrees(math.atan2(v @ e2, v @ e1)))
        self.override = np.asarray(pose, np.float32)

    def _release(self) -> None:
        if self.override is not None:
            self.look_from(self.override)
            self.override = None


class TorchPreview:
    """Preview through the torch renderer (cpu/cuda)."""

    def __init__(self, renderer):
        self.renderer = renderer

    def render(self, c2w_model: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
               bg: np.ndarray) -> Dict[str, np.ndarray]:
        """One view -> numpy rgb (H,W,3), depth, opacity (H,W)."""
        import torch
        dev = self.renderer.grid.device
        out = self.renderer.render_image(
            torch.from_numpy(np.ascontiguousarray(c2w_model, np.float32)).to(dev),
            torch.from_numpy(np.asarray(intrinsics, np.float32)).to(dev),
            torch.zeros(4, device=dev), width, height,
            torch.from_numpy(np.asarray(bg, np.float32)).to(dev),
            t_threshold=PREVIEW_T_THRESHOLD, min_weight=PREVIEW_MIN_WEIGHT)
        return {k: v.cpu().numpy() for k, v in out.items()}


class TaichiPreview:
    """Preview through the torch-free Taichi renderer (any arch)."""

    def __init__(self, model):
        self.model = model

    def render(self, c2w_model, intrinsics, width, height, bg) -> Dict[str, np.ndarray]:
        """One view -> numpy rgb (H,W,3), depth, opacity (H,W)."""
        return self.model.render_image(c2w_model, intrinsics, width, height, bg=bg,
                                       t_threshold=PREVIEW_T_THRESHOLD,
                                       min_weight=PREVIEW_MIN_WEIGHT)


def colorize(mode: str, out: Dict[str, np.ndarray], exposure: float = 1.0) -> np.ndarray:
    """Rendered buffers -> float32 RGB image (H,W,3) in [0,1] for display."""
    if mode == "rgb":
        return np.clip(out["rgb"], 0, 1).astype(np.float32)
    if mode == "opacity":
        a = np.clip(out["opacity"], 0, 1)
        return np.repeat(a[..., None], 3, -1).astype(np.float32)
    alpha = out["opacity"]
    d = np.where(alpha > 0.5, out["depth"] / np.maximum(alpha, 1e-6), 0.0)
    valid = alpha > 0.5
    if valid.any():
        lo, hi = np.percentile(d[valid], 1), np.percentile(d[valid], 99)
        v = np.where(valid, 1.0 - (d - lo) / max(hi - lo, 1e-6) * exposure, 0.0)
    else:
        v = np.zeros_like(d)
    return np.repeat(np.clip(v, 0, 1)[..., None], 3, -1).astype(np.float32)


def resize_nearest(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """(h,w,C) -> (height,width,C) by nearest neighbour (cheap upscaling of a low-res preview)."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    ys = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(np.int64)
    xs = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(np.int64)
    return img[ys][:, xs]


def project_points(points_world: np.ndarray, c2w_world: np.ndarray, intrinsics,
                   width: int, height: int) -> np.ndarray:
    """World points (K,3) -> integer pixels (K',2) (u, v) of those in front of the camera and in view."""
    uv, z = project_pinhole(points_world, c2w_world, *intrinsics)
    u, v = uv[:, 0], uv[:, 1]
    inside = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return np.stack([u[inside], v[inside]], -1).astype(np.int64)


class Viewer:
    """The GGUI window, its controls and the frame loop (optionally training between frames)."""

    def __init__(self, preview, camera: OrbitCamera, intrinsics, width: int, height: int,
                 scene_scale: float, scene_offset: np.ndarray, background: np.ndarray,
                 trainer=None, dataset_poses: Optional[np.ndarray] = None,
                 occupied_points: Optional[Callable[[], np.ndarray]] = None,
                 headless: bool = False, target_fps: float = 15.0, steps_per_frame: int = 4):
        self.preview, self.camera, self.trainer = preview, camera, trainer
        self.fx, self.fy, self.cx, self.cy = [float(v) for v in intrinsics]
        self.base_w, self.base_h = width, height
        self.width, self.height = width, height
        self.scene_scale, self.scene_offset = scene_scale, np.asarray(scene_offset, np.float32)
        self.background = np.asarray(background, np.float32)
        self.dataset_poses = dataset_poses
        self.occupied_points = occupied_points
        self.headless = headless
        self.target_fps = target_fps
        self.steps_per_frame = steps_per_frame
        self.training = trainer is not None
        self.mode = "rgb"
        self.exposure = 1.0
        self.show_cameras = False
        self.show_occupancy = False
        self.show_panel = not headless
        self.dynamic_resolution = True
        self.res_scale = 1.0
        self._last_moving: Optional[Tuple[float, float]] = None  # (start, render s) of the last moving frame
        self.image: Optional[np.ndarray] = None   # last full window image (H,W,3)
        self.last_render: Optional[Dict[str, np.ndarray]] = None
        self.stats = {"fps": 0.0, "step": 0, "loss": float("nan"), "psnr": float("nan"),
                      "samples_per_s": 0.0, "render_ms": 0.0}
        self._dirty = True
        self._cursor = None
        self.window = None
        self.history = []  # (step, training-batch PSNR) while training in the loop
        if dataset_poses is not None and len(dataset_poses):
            self.camera.look_from(dataset_poses[0])

    # ----------------------------------------------------------------- window
    def open(self) -> None:
        """Create the GGUI window (offscreen when headless)."""
        import os
        import sys

        import taichi as ti
        if (not self.headless and sys.platform.startswith("linux")
                and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
            # GLFW would print an error and end the process; say what to do instead
            raise ViewerError("cannot open a window: no display (DISPLAY is not set); "
                              "use --headless to render offscreen")
        try:
            self.window = ti.ui.Window("taichi-nerf", (self.width, self.height), vsync=False,
                                       show_window=not self.headless)
        except Exception as e:  # noqa: BLE001 - GGUI raises plain RuntimeErrors of many kinds
            raise ViewerError(f"cannot open a window ({str(e).splitlines()[0] if str(e) else e}); "
                              f"use --headless to render offscreen") from None
        self.canvas = self.window.get_canvas()

    def close(self) -> None:
        """Destroy the window."""
        if self.window is not None:
            self.window.destroy()
            self.window = None

    # ----------------------------------------------------------------- rendering
    def intrinsics_for(self, w: int, h: int) -> np.ndarray:
        """Intrinsics of the base camera scaled to a w x h render."""
        sx, sy = w / self.base_w, h / self.base_h
        return np.array([self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy], np.float32)

    def model_pose(self) -> np.ndarray:
        """Current camera in model space."""
        p = np.array(self.camera.pose(), np.float32, copy=True)
        p[:3, 3] = p[:3, 3] * self.scene_scale + self.scene_offset
        return p

    def render_frame(self, moving: bool) -> np.ndarray:
        """Render (at reduced resolution while moving) and return the window image (H,W,3)."""
        scale = self.res_scale if (moving and self.dynamic_resolution) else 1.0
        w = max(8, int(round(self.width * scale)))
        h = max(8, int(round(self.height * scale)))
        t0 = time.perf_counter()
        out = self.preview.render(self.model_pose(), self.intrinsics_for(w, h), w, h,
                                  self.background)
        dt = time.perf_counter() - t0
        self.stats["render_ms"] = dt * 1e3
        if moving and self.dynamic_resolution:
            self.res_scale = self._next_scale(t0, dt)
        else:
            self._last_moving = None
        self.last_render = out
        img = resize_nearest(colorize(self.mode, out, self.exposure), self.width, self.height)
        return self.overlay(img)

    def _next_scale(self, start: float, render_s: float) -> float:
        """Resolution factor that holds target_fps for the whole frame, from this render's time."""
        budget = 1.0 / self.target_fps
        if self._last_moving is not None and start - self._last_moving[0] < 1.0:
            last_start, last_render = self._last_moving
            # the rest of a frame (upscaling, upload, GUI, training steps) does not shrink with
            # the resolution: the renderer gets what remains of the frame budget
            other = max(0.0, (start - last_start) - last_render)
            budget = max(budget - other, 0.25 * budget)
        self._last_moving = (start, render_s)
        # pixels, and so render time, scale with the square of the factor
        want = self.res_scale * math.sqrt(budget / max(render_s, 1e-4))
        return float(np.clip(0.5 * self.res_scale + 0.5 * want, 0.1, 1.0))

    def overlay(self, img: np.ndarray) -> np.ndarray:
        """Draw training cameras (red) and occupied cells (green) as dots on the image."""
        if not (self.show_cameras or self.show_occupancy):
            return img
        img = img.copy()
        pose = self.camera.pose()
        intr = self.intrinsics_for(self.width, self.height)
        layers = []
        if self.show_occupancy and self.occupied_points is not None:
            layers.append((self.occupied_points(), (0.1, 0.9, 0.2)))
        if self.show_cameras and self.dataset_poses is not None:
            layers.append((self.dataset_poses[:, :3, 3], (1.0, 0.1, 0.1)))
        for pts, colour in layers:
            uv = project_points(pts, pose, intr, self.width, self.height)
            img[uv[:, 1], uv[:, 0]] = colour
        return img

    # ----------------------------------------------------------------- input
    def handle_input(self) -> bool:
        """Apply mouse/keyboard input; True if the camera moved."""
        import taichi as ti
        w = self.window
        moved = False
        for e in w.get_events(ti.ui.PRESS):
            key = e.key
            if key == ti.ui.ESCAPE:
                w.running = False
            elif key in ("1", "2", "3"):
                self.mode = MODES[int(key) - 1]
                self._dirty = True
            elif key == "r" and self.dataset_poses is not None:
                self.camera.look_from(self.dataset_poses[0])
                moved = True
            elif key == "n" and self.dataset_poses is not None:
                self.snap_to_nearest_view()
                moved = True
            elif key == "p":
                self.save_screenshot(Path(f"screenshot_{int(time.time())}.png"))
            elif key == "c":
                self.show_cameras = not self.show_cameras
                self._dirty = True
            elif key == "o":
                self.show_occupancy = not self.show_occupancy
                self._dirty = True
            elif key == "h":
                self.show_panel = not self.show_panel
            elif key == ti.ui.SPACE and self.trainer is not None:
                self.training = not self.training
        speed = 0.03
        for key, args in (("w", (speed, 0, 0)), ("s", (-speed, 0, 0)), ("a", (0, -speed, 0)),
                          ("d", (0, speed, 0)), ("e", (0, 0, speed)), ("q", (0, 0, -speed))):
            if w.is_pressed(key):
                self.camera.fly(*args)
                moved = True
        if w.is_pressed("="):
            self.camera.zoom(0.97)
            moved = True
        if w.is_pressed("-"):
            self.camera.zoom(1.03)
            moved = True
        x, y = w.get_cursor_pos()
        over_panel = self.show_panel and x < 0.3 and y > 0.55
        if (w.is_pressed(ti.ui.LMB) or w.is_pressed(ti.ui.RMB)) and not over_panel:
            if self._cursor is not None:
                dx, dy = x - self._cursor[0], y - self._cursor[1]
                if dx or dy:
                    if w.is_pressed(ti.ui.LMB):
                        self.camera.orbit(-dx * 180.0, -dy * 90.0)
                    else:
                        self.camera.pan(-dx, -dy)
                    moved = True
            self._cursor = (x, y)
        else:
            self._cursor = None
        return moved

    def snap_to_nearest_view(self) -> None:
        """Jump to the training camera closest to the current camera position."""
        eye = self.camera.pose()[:3, 3]
        i = int(np.argmin(np.linalg.norm(self.dataset_poses[:, :3, 3] - eye, axis=1)))
        self.camera.look_from(self.dataset_poses[i])

    def panel(self) -> None:
        """The control panel: training, steps per frame, resolution, exposure, stats."""
        gui = self.window.get_gui()
        with gui.sub_window("taichi-nerf", 0.0, 0.55, 0.3, 0.45) as g:
            if self.trainer is not None:
                self.training = g.checkbox("train (space)", self.training)
                self.steps_per_frame = g.slider_int("steps/frame", self.steps_per_frame, 1, 32)
            self.dynamic_resolution = g.checkbox("dynamic resolution", self.dynamic_resolution)
            self.target_fps = g.slider_float("target fps", self.target_fps, 2.0, 60.0)
            self.exposure = g.slider_float("depth exposure", self.exposure, 0.2, 3.0)
            g.text(f"mode {self.mode} (1 rgb, 2 depth, 3 opacity)")
            g.text(f"fps {self.stats['fps']:.1f}  render {self.stats['render_ms']:.0f} ms "
                   f"@ {self.res_scale:.2f}x")
            if self.trainer is not None:
                g.text(f"step {self.stats['step']}  loss {self.stats['loss']:.4f}")
                g.text(f"psnr {self.stats['psnr']:.2f}  samples/s "
                       f"{self.stats['samples_per_s'] / 1e3:.0f}k")

    # ----------------------------------------------------------------- loop
    def train_some(self) -> None:
        """Run steps_per_frame training steps and update the stats."""
        tr = self.trainer
        t0 = time.perf_counter()
        samples = 0
        for _ in range(self.steps_per_frame):
            if tr.config.done(tr.step, tr.elapsed):
                self.training = False  # budget spent: keep showing the result
                break
            t_step = time.perf_counter()
            tr.set_lr()
            m = tr.train_step()
            tr.elapsed += time.perf_counter() - t_step
            samples += m["samples"]
            self.stats.update(step=tr.step, loss=m["loss"], psnr=m["psnr"])
            self.history.append((tr.step, m["psnr"]))
        self.stats["samples_per_s"] = samples / max(time.perf_counter() - t0, 1e-9)
        self._dirty = True

    def frame(self) -> None:
        """One frame: input, training, render if needed, draw."""
        t0 = time.perf_counter()
        moved = False if self.headless else self.handle_input()
        if self.trainer is not None and self.training:
            self.train_some()
        if moved or self._dirty or self.image is None:
            self.image = self.render_frame(moving=moved)
            # after a low-resolution frame, refine on the next one
            self._dirty = moved and self.res_scale < 1.0
        # GGUI images are indexed [x, y] with y up
        self.canvas.set_image(np.ascontiguousarray(self.image[::-1].transpose(1, 0, 2)))
        if self.show_panel:
            self.panel()
        dt = time.perf_counter() - t0
        self.stats["fps"] = 0.9 * self.stats["fps"] + 0.1 / max(dt, 1e-6) if self.stats["fps"] \
            else 1.0 / max(dt, 1e-6)

    def run(self, frames: Optional[int] = None, screenshot: Optional[Path] = None) -> None:
        """Run until the window closes (or `frames` frames); save the last frame to `screenshot`."""
        if self.window is None:
            self.open()
        n = 0
        try:
            while self.window.running and (frames is None or n < frames):
                self.frame()
                if not self.headless:
                    self.window.show()
                n += 1
            if screenshot is not None:
                self.save_screenshot(screenshot)
        finally:
            self.close()

    def save_screenshot(self, path: Path) -> None:
        """Write the current image (without the panel) as an 8-bit PNG."""
        import imageio.v3 as iio
        if self.image is None:
            raise ViewerError("nothing rendered yet")
        try:
            iio.imwrite(path, (np.clip(self.image, 0, 1) * 255 + 0.5).astype(np.uint8))
        except OSError as e:
            raise ViewerError(f"{path}: cannot write screenshot ({e.strerror or e})") from None


def occupied_world_points(occupied: np.ndarray, res: int, scene_scale: float,
                          scene_offset: np.ndarray, limit: int = 4000, seed: int = 0) -> np.ndarray:
    """Centres (K,3) float64 world units of up to `limit` occupied cells; occupied (n_cells,)
    bool. Needs Taichi running (the viewer's preview started it)."""
    idx = np.nonzero(occupied)[0]
    if idx.size > limit:
        idx = np.random.default_rng(seed).choice(idx, limit, replace=False)
    # the cell-index rule (cascade, cell order, half-cell offset) lives in kernels.occupancy
    model = np.zeros((idx.size, 3), np.float32)
    if idx.size:
        cell_centers(res, idx.astype(np.int32), np.full((idx.size, 3), 0.5, np.float32), model)
    return (model.astype(np.float64) - scene_offset) / scene_scale


def _camera_from(cfg: Dict) -> OrbitCamera:
    o = cfg["orbit"]
    return OrbitCamera(center=np.asarray(o["center"], np.float64), radius=float(o["radius"]),
                       up=np.asarray(o["up"], np.float64))


def viewer_for_run(run: Path, arch: str, headless: bool, width: Optional[int] = None,
                   height: Optional[int] = None) -> Viewer:
    """A viewer of a trained run: torch preview on cpu/cuda, torch-free Taichi preview elsewhere."""
    from taichi_nerf.kernels.checkpoint_io import load_checkpoint

    ckpt = Path(checkpoint_path(run))
    if not ckpt.exists():
        raise ViewerError(f"{ckpt}: no checkpoint (train one with `taichi-nerf train --out {run}`)")
    cfg, arrays = load_checkpoint(ckpt, required_arrays=["occupancy/density"],
                                  required_config=["orbit", "width", "height", "intrinsics"])
    if runtime.torch_shares_device(arch):
        from taichi_nerf.training.trainer import load_model
        _, renderer, _ = load_model(ckpt)
        preview = TorchPreview(renderer)
    else:
        from taichi_nerf.kernels.inference import NerfModel
        preview = TaichiPreview(NerfModel(cfg, arrays))
    scene = cfg["scene"]
    occ = cfg["occupancy"]
    occupied = checkpoint_occupied(cfg, arrays)
    W, H = width or cfg["width"], height or cfg["height"]
    fx, fy, cx, cy = cfg["intrinsics"]
    sx, sy = W / cfg["width"], H / cfg["height"]
    return Viewer(preview, _camera_from(cfg), [fx * sx, fy * sy, cx * sx, cy * sy], W, H,
                  scene["scale"], np.asarray(scene["offset"], np.float32),
                  np.asarray(cfg.get("background") or [0, 0, 0], np.float32),
                  dataset_poses=arrays.get("cameras/poses"),
                  occupied_points=lambda: occupied_world_points(
                      occupied, occ["resolution"], scene["scale"],
                      np.asarray(scene["offset"], np.float64)),
                  headless=headless)


def viewer_for_training(trainer, headless: bool, width: Optional[int] = None,
                        height: Optional[int] = None) -> Viewer:
    """A viewer that trains `trainer` between frames and previews its current weights."""
    from taichi_nerf.training.trainer import orbit_of

    ds = trainer.dataset
    cfg = {"orbit": orbit_of(ds)}
    W, H = width or ds.width, height or ds.height
    fx, fy, cx, cy = ds.intrinsics[0]
    sx, sy = W / ds.width, H / ds.height
    bg = ds.background if ds.background is not None else np.zeros(3, np.float32)
    grid = trainer.grid
    return Viewer(TorchPreview(trainer.renderer), _camera_from(cfg),
                  [fx * sx, fy * sy, cx * sx, cy * sy], W, H, ds.scene_scale, ds.scene_offset, bg,
                  trainer=trainer, dataset_poses=ds.poses,
                  occupied_points=lambda: occupied_world_points(
                      grid.occupied().cpu().numpy(), grid.spec.resolution, ds.scene_scale,
                      ds.scene_offset.astype(np.float64)),
                  headless=headless)
