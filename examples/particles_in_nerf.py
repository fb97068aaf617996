"""Particles falling onto a trained NeRF: a Taichi simulation colliding with the radiance field.

    python examples/particles_in_nerf.py [--run RUN] [--particles K] [--frames N]
                                         [--headless] [--screenshot PNG] [--arch cpu]

Without --run it first trains the built-in scene for a short budget (--steps)
through the Python API. A few thousand particles are dropped just above the
scene's surfaces and fall under gravity (along minus the training cameras' up
vector). The substep kernel calls the scene's @ti.funcs: a particle that moved
into density above the threshold is pushed back out along ``scene.normal`` and
its velocity is reflected and damped. A floor under the lowest occupied cell
catches particles that miss every object.

The scene is rendered once per pixel with ``scene.march`` (the camera is fixed:
a CPU render takes seconds); every frame, particles are projected into the
image and drawn only where they are nearer than the field's depth, so the
NeRF occludes them correctly. Keys: space pauses, r respawns, Esc quits.

With --run the simulation needs no torch: Taichi starts through the torch-free
``taichi_nerf.kernels.runtime`` and the scene is read with numpy alone. Only the
training without --run uses the torch side.
"""
# No `from __future__ import annotations`: Taichi reads the ti.func annotations as objects.

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import taichi as ti

from taichi_nerf.render.camera_paths import orbit_poses
from taichi_nerf.kernels import runtime
from taichi_nerf.kernels.camera import camera_ray
from taichi_nerf.kernels.occupancy import cell_centers, checkpoint_occupied
from taichi_nerf.kernels.specs import CHECKPOINT_NAME, checkpoint_path

GRAVITY = 9.81          # world units / s^2 (NeRF-synthetic scenes are about metre-sized)
RESTITUTION = 0.2       # fraction of the normal speed kept after a bounce
FRICTION = 0.3          # fraction of the tangential speed lost per contact
MAX_PUSH = 32           # push-out iterations per substep
FAR = 1e10              # "no surface" depth


def train_builtin(out: Path, steps: int, resolution: int = 64) -> Path:
    """Train the built-in scene for `steps` steps with the Python API; returns RUN."""
    from taichi_nerf.data import builtin, load_dataset
    from taichi_nerf.training.trainer import TrainConfig, Trainer, run_training

    scene_dir = builtin.ensure_builtin_scene(resolution)
    train = load_dataset(scene_dir, "train")
    # small table and grid: a short CPU run, enough for surfaces to collide with
    cfg = TrainConfig(steps=steps, target_samples=1 << 15, log2_table=15, occ_resolution=64,
                      occ_cells_per_update=1 << 16, occ_warmup_steps=min(64, steps))
    run_training(Trainer(train, cfg), out, val=None, progress=True)
    return out


@ti.data_oriented
class ParticlesInNerf:
    """Particle state, the NeRF render of a fixed camera, and the frame buffer GGUI shows."""

    def __init__(self, scene, n: int, c2w: np.ndarray, intrinsics, width: int, height: int,
                 up: np.ndarray, floor_height: float, substeps: int = 16, fps: float = 30.0):
        self.scene, self.n, self.width, self.height = scene, n, width, height
        self.substeps, self.dt = substeps, 1.0 / (fps * substeps)
        self.c2w = np.ascontiguousarray(c2w, np.float32)           # world camera-to-world
        self.intr = np.asarray(intrinsics, np.float32)              # fx fy cx cy of this render
        self.up = (np.asarray(up, np.float64) / np.linalg.norm(up)).astype(np.float32)
        self.floor_height = float(floor_height)                    # along up, world units
        # the push-out step: a fraction of the normal's difference step
        self.push = 0.5 * scene.normal_step
        self.x = ti.Vector.field(3, ti.f32, shape=n)                # positions, world
        self.v = ti.Vector.field(3, ti.f32, shape=n)                # velocities, world / s
        # GGUI images are indexed [x, y] with y up
        self.nerf_rgb = ti.Vector.field(3, ti.f32, shape=(width, height))
        self.nerf_dist = ti.field(ti.f32, shape=(width, height))  # distance to the surface
        self.zbuf = ti.field(ti.i32, shape=(width, height))
        self.image = ti.Vector.field(3, ti.f32, shape=(width, height))

    # ------------------------------------------------------------------ kernels
    @ti.func
    def _camera(self, c2w: ti.template()):
        rot = ti.Matrix([[c2w[0, 0], c2w[0, 1], c2w[0, 2]], [c2w[1, 0], c2w[1, 1], c2w[1, 2]],
                         [c2w[2, 0], c2w[2, 1], c2w[2, 2]]])
        eye = ti.Vector([c2w[0, 3], c2w[1, 3], c2w[2, 3]])
        return rot, eye

    @ti.kernel
    def render_scene(self, c2w: ti.types.ndarray(dtype=ti.f32, ndim=2),
                     intr: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     bg: ti.types.ndarray(dtype=ti.f32, ndim=1)):
        """March every pixel once: colour on `bg`, and the distance where opacity > 0.5."""
        rot, eye = self._camera(c2w)
        k = ti.Vector([intr[0], intr[1], intr[2], intr[3]])
        b = ti.Vector([bg[0], bg[1], bg[2]])
        for x, y in self.nerf_rgb:
            u, v = ti.cast(x, ti.f32) + 0.5, ti.cast(self.height - 1 - y, ti.f32) + 0.5
            o, d = camera_ray(u, v, k, ti.Vector([0.0, 0.0, 0.0, 0.0]), rot, eye)
            c, depth, alpha = self.scene.march(o, d)
            self.nerf_rgb[x, y] = c + (1.0 - alpha) * b
            self.nerf_dist[x, y] = depth / alpha if alpha > 0.5 else FAR

    @ti.kernel
    def spawn(self, starts: ti.types.ndarray(dtype=ti.f32, ndim=2),
              drops: ti.types.ndarray(dtype=ti.f32, ndim=1),
              up: ti.types.ndarray(dtype=ti.f32, ndim=1), floor_height: ti.f32):
        """Drop particle i `drops[i]` above the first solid point below `starts[i]` (or the floor).

        Walks down in small steps until ``occluded``: the threshold surface is
        where the simulation collides. (The rendered depth is an expected value,
        which lies inside a soft surface, so spawning from it can start inside.)
        """
        u = ti.Vector([up[0], up[1], up[2]])
        step = self.push * 4.0
        for i in range(self.n):
            o = ti.Vector([starts[i, 0], starts[i, 1], starts[i, 2]])
            ground = o.dot(u) - floor_height
            t = 0.0
            while t < ground:
                if self.scene.occluded(o - u * t):
                    ground = t
                t += step
            self.x[i] = o - u * (ground - drops[i])
            self.v[i] = ti.Vector([0.0, 0.0, 0.0])

    @ti.kernel
    def substep(self, up: ti.types.ndarray(dtype=ti.f32, ndim=1), floor_height: ti.f32):
        """One time step: gravity, floor, and push-out from the NeRF's solid density."""
        u = ti.Vector([up[0], up[1], up[2]])
        dt = self.dt
        for i in range(self.n):
            x_old = self.x[i]
            v = self.v[i] - GRAVITY * dt * u
            x = x_old + v * dt
            h = x.dot(u) - floor_height
            if h < 0.0:
                x -= h * u
                vn = v.dot(u)
                if vn < 0.0:
                    v -= (1.0 + RESTITUTION) * vn * u
                v *= 1.0 - FRICTION
            # inside the field's solid: walk out along the normal, a small step at a time
            hit = 0
            n = ti.Vector([0.0, 0.0, 0.0])
            solid = 1
            for _ in range(MAX_PUSH):
                if self.scene.occluded(x) == 0:
                    solid = 0
                    break
                n = self.scene.normal(x)
                x += n * self.push
                hit = 1
            if solid:
                # still inside after MAX_PUSH steps (a thin or noisy spot): stay where we were
                x = x_old
                v = ti.Vector([0.0, 0.0, 0.0])
            elif hit:
                vn = v.dot(n)
                if vn < 0.0:
                    v -= (1.0 + RESTITUTION) * vn * n
                v *= 1.0 - FRICTION
            self.x[i] = x
            self.v[i] = v

    @ti.func
    def _splat(self, i, rot, eye, intr: ti.template(), radius, colour_pass: ti.template()):
        """Particle i's disc: pass 0 keeps the nearest distance per pixel, pass 1 colours it."""
        cam = rot.transpose() @ (self.x[i] - eye)   # OpenGL camera: looks down -z
        if cam[2] < -1e-4:
            px = intr[0] * cam[0] / -cam[2] + intr[2]
            py = -intr[1] * cam[1] / -cam[2] + intr[3]
            dist = (self.x[i] - eye).norm()         # NeRF depth is along the unit ray
            key = ti.cast(dist * 1e5, ti.i32)
            cx, cy = ti.cast(ti.floor(px), ti.i32), ti.cast(ti.floor(py), ti.i32)
            for a, b in ti.ndrange((-radius, radius + 1), (-radius, radius + 1)):
                gx, gy = cx + a, self.height - 1 - (cy + b)
                if a * a + b * b <= radius * radius:
                    if 0 <= gx < self.width and 0 <= gy < self.height:
                        if dist < self.nerf_dist[gx, gy]:  # the NeRF occludes farther particles
                            if ti.static(not colour_pass):
                                ti.atomic_min(self.zbuf[gx, gy], key)
                            elif self.zbuf[gx, gy] == key:
                                speed = ti.min(self.v[i].norm() / 2.0, 1.0)
                                self.image[gx, gy] = ti.Vector(
                                    [0.2 + 0.8 * speed, 0.55, 1.0 - 0.6 * speed])

    @ti.kernel
    def draw(self, c2w: ti.types.ndarray(dtype=ti.f32, ndim=2),
             intr: ti.types.ndarray(dtype=ti.f32, ndim=1), radius: ti.i32):
        """The NeRF image, then each particle where nearer than the NeRF and other particles."""
        rot, eye = self._camera(c2w)
        for x, y in self.image:
            self.image[x, y] = self.nerf_rgb[x, y]
            self.zbuf[x, y] = 2 ** 30
        # top-level loops run one after the other: depths first, then colours
        for i in range(self.n):
            self._splat(i, rot, eye, intr, radius, False)
        for i in range(self.n):
            self._splat(i, rot, eye, intr, radius, True)

    # ------------------------------------------------------------------ python side
    def respawn(self, occupied_world: np.ndarray, seed: int = 0, max_drop: float = 0.15) -> None:
        """Start particles above random occupied cells, `max_drop` at most above the surface."""
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(occupied_world), self.n)
        lo, hi = self.scene.box_world
        jitter = rng.uniform(-0.5, 0.5, (self.n, 3)) * (hi - lo) / self.scene.occ.resolution
        base = occupied_world[idx] + jitter
        corners = np.array([[(lo, hi)[(c >> k) & 1][k] for k in range(3)] for c in range(8)])
        top = float(np.max(corners @ self.up))  # above the whole box
        starts = base + self.up * (top - base @ self.up)[:, None]
        drops = rng.uniform(0.02, max_drop, self.n).astype(np.float32)
        self.spawn(starts.astype(np.float32), drops, self.up, self.floor_height)

    def step_frame(self) -> None:
        """Advance one frame (substeps time steps)."""
        for _ in range(self.substeps):
            self.substep(self.up, self.floor_height)

    def frame_image(self, radius: int = 1) -> np.ndarray:
        """Draw and return the frame as (H, W, 3) float32, row 0 at the top."""
        self.draw(self.c2w, self.intr, radius)
        return self.image.to_numpy().transpose(1, 0, 2)[::-1]


def _occupied_points(scene, cfg, arrays, limit: int = 20000, seed: int = 0) -> np.ndarray:
    """World-space centres (K,3) of up to `limit` occupied cells of the checkpoint's grid."""
    idx = np.nonzero(checkpoint_occupied(cfg, arrays))[0]
    if idx.size > limit:
        idx = np.random.default_rng(seed).choice(idx, limit, replace=False)
    centres = np.zeros((idx.size, 3), np.float32)
    if idx.size:
        cell_centers(scene.occ.resolution, idx.astype(np.int32),
                     np.full((idx.size, 3), 0.5, np.float32), centres)
    return scene.model_to_world(centres)


def build(run: Path, n_particles: int, width: Optional[int], height: Optional[int],
          substeps: int = 16, seed: int = 0, elevation: float = 20.0,
          threshold: Optional[float] = None) -> ParticlesInNerf:
    """Load RUN, render the field from an orbit camera, spawn the particles."""
    from taichi_nerf.kernels.checkpoint_io import read_checkpoint
    from taichi_nerf.kernels.scene import NerfScene

    cfg, arrays = read_checkpoint(checkpoint_path(run))
    scene = NerfScene(cfg, arrays) if threshold is None else \
        NerfScene(cfg, arrays, density_threshold=threshold)
    W, H = width or cfg["width"], height or cfg["height"]
    fx, fy, cx, cy = cfg["intrinsics"]
    sx, sy = W / cfg["width"], H / cfg["height"]
    orbit = cfg["orbit"]
    up = np.asarray(orbit["up"], np.float64)
    c2w = orbit_poses(1, orbit["radius"], elevation, orbit["center"], up,
                      start_azimuth_deg=30.0)[0]
    occupied = _occupied_points(scene, cfg, arrays)
    # the floor: just under the lowest occupied cell
    cell = (scene.box_world[1][0] - scene.box_world[0][0]) / scene.occ.resolution
    floor = float((occupied @ (up / np.linalg.norm(up))).min() - cell)
    sim = ParticlesInNerf(scene, n_particles, c2w, [fx * sx, fy * sy, cx * sx, cy * sy], W, H,
                          up, floor, substeps=substeps)
    t0 = time.perf_counter()
    sim.render_scene(sim.c2w, sim.intr, scene.background)
    print(f"rendered the field at {W}x{H} in {time.perf_counter() - t0:.1f} s "
          f"(includes compiling the march kernel)")
    sim.occupied = occupied
    sim.respawn(occupied, seed)
    return sim


def run_window(sim: ParticlesInNerf, frames: Optional[int], headless: bool,
               screenshot: Optional[Path]) -> None:
    """The GGUI loop: simulate, draw, show (offscreen when headless)."""
    if (not headless and sys.platform.startswith("linux")
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
        raise SystemExit("particles_in_nerf: no display (DISPLAY is not set); use --headless")
    window = ti.ui.Window("particles in a NeRF", (sim.width, sim.height), vsync=not headless,
                          show_window=not headless)
    canvas = window.get_canvas()
    paused, n, t0 = False, 0, time.perf_counter()
    radius = max(1, min(sim.width, sim.height) // 200)
    try:
        while window.running and (frames is None or n < frames):
            if not headless:
                for e in window.get_events(ti.ui.PRESS):
                    if e.key == ti.ui.ESCAPE:
                        window.running = False
                    elif e.key == ti.ui.SPACE:
                        paused = not paused
                    elif e.key == "r":
                        sim.respawn(sim.occupied, seed=n)
            if not paused:
                sim.step_frame()
            sim.draw(sim.c2w, sim.intr, radius)
            canvas.set_image(sim.image)
            if not headless:
                window.show()
            n += 1
    finally:
        window.destroy()
    dt = time.perf_counter() - t0
    print(f"{n} frames in {dt:.1f} s ({n / max(dt, 1e-9):.1f} fps, {sim.substeps} substeps each)")
    if screenshot is not None:
        import imageio.v3 as iio
        img = sim.frame_image(radius)
        iio.imwrite(screenshot, (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        print(f"wrote {screenshot}")


def main(argv: Optional[List[str]] = None) -> ParticlesInNerf:
    """Parse arguments, (train,) build, run; returns the simulation (tests inspect it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run (folder or checkpoint.npz); "
                                            "default: train the built-in scene first")
    p.add_argument("--out", type=Path, default=Path("runs/particles-builtin"),
                   help="where to train when --run is not given")
    p.add_argument("--steps", type=int, default=1000, help="training steps when --run is not given")
    p.add_argument("--particles", type=int, default=4000)
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--substeps", type=int, default=16)
    p.add_argument("--threshold", type=float, default=None,
                   help="density (per world unit) that particles cannot enter "
                        "(default: NerfScene's)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--headless", action="store_true", help="render offscreen (no display needed)")
    p.add_argument("--screenshot", type=Path, help="save the last frame as PNG")
    p.add_argument("--arch", default="cpu", choices=runtime.ARCHS)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    runtime.init(a.arch)
    run = a.run if a.run is not None else train_builtin(a.out, a.steps)
    if not os.path.exists(checkpoint_path(run)):
        raise SystemExit(f"particles_in_nerf: {run}: no {CHECKPOINT_NAME} (train one first)")
    sim = build(run, a.particles, a.width, a.height, a.substeps, a.seed,
                threshold=a.threshold)
    run_window(sim, a.frames, a.headless, a.screenshot)
    return sim


if __name__ == "__main__":
    main()
