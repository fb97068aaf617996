"""Training loop: ray batches from posed images, Adam, occupancy updates, checkpoints, evaluation."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import numpy as np
import torch

from taichi_nerf.nn import profiling, runtime
from taichi_nerf.atomic import atomic_write_json
from taichi_nerf.nn.cameras import generate_rays
from taichi_nerf.nn.checkpoint import (CheckpointError, arrays_to_state_dict, load_checkpoint,
                                    save_checkpoint, state_dict_to_arrays)
from taichi_nerf.data import Dataset
from taichi_nerf.data.scene import SceneTransform
from taichi_nerf.nn.field import FieldConfig, NGPField
from taichi_nerf.kernels.occupancy import checkpoint_bitfield
from taichi_nerf.nn.losses import distortion_loss, sparse_depth_loss
from taichi_nerf.kernels.specs import CHECKPOINT_NAME, HashGridSpec, MarchSpec, OccupancySpec  # noqa: F401 (re-exported)
from taichi_nerf.training.metrics import psnr as psnr_fn
from taichi_nerf.training.metrics import psnr_from_mse
from taichi_nerf.training.metrics import ssim as ssim_fn
from taichi_nerf.nn.occupancy import OccupancyGrid
from taichi_nerf.nn.renderer import Renderer
from taichi_nerf.training.config import TrainConfig  # noqa: F401 (re-exported)

LOSS_READ_EVERY = 10  # steps between host readouts of the loss (progress bar, divergence)
# cells of free space left around the alpha-carved hull (OccupancyGrid.mark_transparent):
# Lego 2400 steps, seeds 4/5: carving alone 30.53/30.50 dB, with this shell 30.89/30.83,
# no carving 30.73/30.83 (BENCHMARKS 10d)
CARVE_SHELL = 2
# TrainConfig settings that set parameter shapes (a resume must keep them), and those of
# them that `taichi-nerf train` takes as options (--aabb-scale is the scene's)
SHAPE_SETTINGS = ("log2_table", "n_levels", "finest_resolution", "occ_resolution")
C2F_RAMP_PHOTOS = 0.5  # share of the budget over which fine levels join, for photos
METRICS_NAME = "metrics.json"


class RayBatch(NamedTuple):
    """One step's rays (model space, on the device): origins and directions (R,3),
    backgrounds and targets (R,3), start jitter (R,), depth targets (K,) model units for
    the first K rays (sparse depth), training-image index (R,)."""

    origins: torch.Tensor
    dirs: torch.Tensor
    bg: torch.Tensor
    target: torch.Tensor
    jitter: torch.Tensor
    depth: torch.Tensor
    image: torch.Tensor


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN/inf; no checkpoint is written from that state."""


def active_levels(progress: float, n_levels: int, coarse_levels: int, ramp: float) -> float:
    """How many hash levels are on at `progress` in [0, 1] of the budget (fractional: the
    last one fading in): coarse_levels at first, all by progress = ramp (0: all at once)."""
    if ramp <= 0:
        return float(n_levels)
    return coarse_levels + (n_levels - coarse_levels) * min(1.0, progress / ramp)


def level_weights(progress: float, n_levels: int, coarse_levels: int, ramp: float) -> torch.Tensor:
    """Weights (L,) of the hash levels at `progress` in [0, 1] of the budget: level l weighs
    clamp(active_levels - l, 0, 1) (the device step's ``set_active_levels`` rule)."""
    active = active_levels(progress, n_levels, coarse_levels, ramp)
    return (active - torch.arange(n_levels, dtype=torch.float32)).clamp(0.0, 1.0)


def orbit_of(ds: Dataset) -> Dict[str, Any]:
    """Where the training cameras are (world units): centre of the model box, mean radius, mean up."""
    center = (0.5 - ds.scene_offset.astype(np.float64)) / ds.scene_scale
    eyes = ds.poses[:, :3, 3].astype(np.float64)
    up = ds.poses[:, :3, 1].astype(np.float64).mean(0)
    up = up / max(np.linalg.norm(up), 1e-12)
    return {"center": center.tolist(), "radius": float(np.linalg.norm(eyes - center, axis=1).mean()),
            "up": up.tolist()}


def pixel_angle(intrinsics: np.ndarray) -> float:
    """Radians per pixel at the image centre (1 / the smallest focal length in pixels) of
    intrinsics (N, 4) fx fy cx cy."""
    return 1.0 / float(np.min(np.asarray(intrinsics)[:, :2]))


# hash cells per pixel footprint at the finest level: 2 samples a pixel (Nyquist), at the
# camera nearest the box centre (the finest detail any image resolves; photos whose subject
# sits near the cameras keep fine levels). 120-150 s runs (BENCHMARKS 2k): Lego 200x200 gets
# 512 (instant-ngp's 2048 is for 800x800): 27.47/27.31 dB against 26.90/26.80; the built-in
# scene 512: 31.45 against 31.14; fox 135x240 gets 512: 23.67 against 23.68 (256 lost 1 dB)
CELLS_PER_PIXEL = 2.0
AUTO_FINEST = (128, 2048)  # the automatic finest resolution's range


def finest_resolution_for(ds: Dataset) -> int:
    """The finest hash level's cells per side of the core cube that resolve ds's pixels:
    CELLS_PER_PIXEL per pixel footprint at the camera nearest the box centre, rounded up to
    a power of two in AUTO_FINEST (2048 for 800x800 Lego, 512 at 200x200)."""
    eyes = ds.transform_poses()[:, :3, 3].astype(np.float64)
    dist = float(np.min(np.linalg.norm(eyes - 0.5, axis=1)))
    cells = CELLS_PER_PIXEL / max(dist * pixel_angle(ds.intrinsics), 1e-12)
    lo, hi = AUTO_FINEST
    return min(1 << math.ceil(math.log2(max(cells, lo))), hi)  # lo is a power of two


def resolve_config(config: TrainConfig, ds: Dataset) -> TrainConfig:
    """config with its data-dependent defaults (None) set for ds: the finest resolution."""
    if config.finest_resolution is None:
        config = dataclasses.replace(config, finest_resolution=finest_resolution_for(ds))
    return config


def adam(groups, lr: float) -> torch.optim.Adam:
    """instant-ngp's Adam (betas 0.9/0.99, eps 1e-15); fused where torch has it for the device:
    the step over the hash table (millions of floats) is memory-bound, and the fused kernel
    reads each float once instead of once per elementwise op (2x faster on a 2-core CPU)."""
    kw = dict(lr=lr, betas=(0.9, 0.99), eps=1e-15)
    try:
        return torch.optim.Adam(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # torch or device without a fused Adam
        return torch.optim.Adam(groups, **kw)


def c2f_ramp_for(config: TrainConfig, dataset: Dataset) -> float:
    """The coarse-to-fine ramp (share of the budget; 0 = off) of a run: the setting, else on
    for photos without alpha and off for masked/synthetic data."""
    if config.coarse_to_fine is not None:
        return config.coarse_to_fine
    return 0.0 if dataset.has_alpha else C2F_RAMP_PHOTOS


def _specs(cfg: TrainConfig, aabb_scale: int, angle: float):
    grid = HashGridSpec(n_levels=cfg.n_levels, n_features=2, log2_table=cfg.log2_table,
                        base_resolution=16,
                        finest_resolution=min(cfg.finest_resolution * aabb_scale, 1 << 15))
    occ = OccupancySpec(n_cascades=int(math.log2(aabb_scale)) + 1, resolution=cfg.occ_resolution)
    march = MarchSpec.for_occupancy(occ, max_samples=cfg.max_samples_per_ray, near=cfg.near,
                                    pixel_angle=angle, footprint_steps=cfg.footprint_steps,
                                    finest_resolution=cfg.finest_resolution)
    return FieldConfig(grid=grid), occ, march


class Trainer:
    """Holds the field, the occupancy grid, the optimizer and the training images."""

    step_path = "host"  # where a step's field, loss and optimizer run (metrics.json)
    # what the run was trained on ({"data", "downscale", "holdout"}, set by the CLI/API):
    # `eval` without --data evaluates there
    data_source: Optional[Dict[str, Any]] = None

    def __init__(self, dataset: Dataset, config: TrainConfig):
        self.rt = runtime.current()
        self.device = self.rt.torch_device
        self.config = config = resolve_config(config, dataset)
        self.dataset = dataset
        self.scene = dataset.scene
        self.generator = torch.Generator().manual_seed(config.seed)
        field_cfg, occ, march = _specs(config, dataset.aabb_scale, pixel_angle(dataset.intrinsics))
        if config.appearance:
            field_cfg = dataclasses.replace(field_cfg, appearance_dim=config.appearance,
                                            n_images=len(dataset))
        self.field = NGPField(field_cfg, generator=self.generator).to(self.device)
        self.grid = OccupancyGrid(occ, march, self.device, warmup_steps=config.occ_warmup_steps,
                                  max_cells_per_update=config.occ_cells_per_update)
        self.renderer = Renderer(self.field, self.grid)
        weights, biases = self.field.mlp_parameters()
        self.optimizer = adam(
            [{"params": [self.field.grid.table], "weight_decay": 0.0},
             {"params": weights, "weight_decay": config.weight_decay},
             {"params": biases, "weight_decay": 0.0}], config.lr)
        if field_cfg.appearance_dim:
            self.optimizer.add_param_group({"params": [self.field.appearance], "weight_decay": 0.0})
        self.step = 0
        self.elapsed = 0.0
        self.n_rays = config.init_rays
        self.samples_seen = 0
        self.rays_seen = 0
        self._set_images(dataset)
        # photos (no alpha) leave empty space unsupervised: coarse levels first force one
        # geometry that all views agree on before the fine levels can fit each view on its
        # own (fox, 300 s: 24.9 dB held out with it, 23.6 without)
        self.c2f_ramp = c2f_ramp_for(config, dataset)
        # the pixel jitter's noisier targets cost synthetic (alpha) data: built-in scene, 1037
        # steps: 28.86 dB with it, 30.91 at pixel centres (BENCHMARKS 2g)
        self.pixel_jitter = (config.pixel_jitter if config.pixel_jitter is not None
                             else not dataset.has_alpha)
        self.grid.mark_unseen(self.poses, self.intrinsics, dataset.width, dataset.height)
        if config.alpha_carving and dataset.has_alpha:
            # alpha 0 is trained as "nothing on this ray", so those cells are empty for good
            alpha = torch.from_numpy(dataset.images[..., 3])
            pinhole = torch.from_numpy(~dataset.distortion.any(axis=1))
            self.grid.mark_transparent(self.poses, self.intrinsics, alpha, pinhole,
                                       shell=CARVE_SHELL)
        self.orbit = orbit_of(dataset)

    def _set_images(self, ds: Dataset) -> None:
        d = self.device
        n, h, w, c = ds.images.shape
        self.pixels = torch.from_numpy(ds.images.reshape(-1, c)).to(d)       # [N*H*W, C]
        self.depth_obs = None
        if ds.depth_obs is not None and len(ds.depth_obs) and self.config.sparse_depth > 0:
            obs = torch.from_numpy(ds.depth_obs.copy())
            obs[:, 3] *= ds.scene_scale  # world units -> model units
            self.depth_obs = obs
        self.poses = torch.from_numpy(ds.transform_poses()[:, :3]).contiguous().to(d)
        self.intrinsics = torch.from_numpy(ds.intrinsics).contiguous().to(d)
        self.distortion = torch.from_numpy(ds.distortion).contiguous().to(d)
        self.shape = (n, h, w)

    # ------------------------------------------------------------------ one step
    def _batch(self, n_rays: int) -> RayBatch:
        """Rays of one step: the first len(depth) look through sparse points (model units)."""
        n, h, w = self.shape
        g = self.generator
        img = torch.randint(0, n, (n_rays,), generator=g)
        x = torch.randint(0, w, (n_rays,), generator=g)
        y = torch.randint(0, h, (n_rays,), generator=g)
        pix = torch.stack([x, y], -1).float()
        if self.pixel_jitter:
            # a random point in the pixel (instant-ngp): views between the training ones
            # are seen through other points of the same pixels
            pix += torch.rand(n_rays, 2, generator=g)
        else:
            pix += 0.5
        depth = torch.zeros(0)
        if self.depth_obs is not None:
            n_d = self.depth_rays(n_rays)
            obs = self.depth_obs[torch.randint(0, len(self.depth_obs), (n_d,), generator=g)]
            img[:n_d] = obs[:, 0].long()
            pix[:n_d] = obs[:, 1:3]
            x[:n_d] = obs[:, 1].long().clamp(0, w - 1)
            y[:n_d] = obs[:, 2].long().clamp(0, h - 1)
            depth = obs[:, 3]
        flat = ((img * h + y) * w + x).to(self.device)
        pix = pix.to(self.device)
        o, dirs = generate_rays(pix, img.to(torch.int32).to(self.device), self.intrinsics,
                                self.distortion, self.poses)
        target = self.pixels[flat]                                               # [R, C]
        # a random background per ray for every dataset: any transparency left over in front
        # of an opaque photo costs loss, so the field cannot fit real photos with fog
        bg = torch.rand(n_rays, 3, generator=g).to(self.device)
        if target.shape[1] == 4:
            a = target[:, 3:4]
            target = target[:, :3] * a + bg * (1 - a)
        jitter = torch.rand(n_rays, generator=g).to(self.device)
        return RayBatch(o, dirs, bg, target, jitter, depth.to(self.device), img.to(self.device))

    def train_step(self, read_loss: bool = True) -> Dict[str, Any]:
        """One optimisation step -> rays, samples, the loss as a 0-d tensor ("mse") and, with
        read_loss, its value and PSNR as floats ("loss", "psnr"; raises TrainingDiverged on
        NaN/inf). read_loss=False keeps the step free of that host sync (CUDA)."""
        cfg = self.config
        if self.c2f_ramp > 0:
            p = cfg.budget_progress(self.step, self.elapsed)
            self.field.set_level_weights(level_weights(p, cfg.n_levels, cfg.coarse_levels,
                                                       self.c2f_ramp))
        if self.grid.due(self.step):
            with profiling.stage(profiling.OCCUPANCY):
                self.grid.update(self.step, self.renderer.density, self.generator)
        with profiling.stage(profiling.RAYS):
            o, d, bg, target, jitter, depth, img = self._batch(self.n_rays)
        out = self.renderer.render_rays(o, d, bg, max_samples=2 * cfg.target_samples,
                                        jitter=jitter, near_grad_distance=cfg.near_grad_distance,
                                        image=img)
        with profiling.stage(profiling.LOSS):
            target = target[:out["n_rays"]]
            loss = torch.nn.functional.mse_loss(out["rgb"], target)
            mse_t = loss
            if cfg.distortion > 0:
                smp = out["samples"]
                loss = loss + cfg.distortion * distortion_loss(out["sigma"], smp.t, smp.dt,
                                                               smp.rays, smp.ray_index)
            if len(depth):
                smp = out["samples"]
                loss = loss + cfg.sparse_depth * sparse_depth_loss(
                    out["sigma"], smp.t, smp.dt, smp.rays, smp.ray_index, depth[:out["n_rays"]],
                    cfg.sparse_depth_tolerance)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        n_samples = out["n_samples"]
        # adapt the ray count so that a step marches about target_samples samples. instant-ngp
        # counts after compaction, but it evaluates the samples behind the termination point
        # without gradients; here every marched sample goes through the field's forward and
        # backward, so marched samples are what a step costs
        self.count_step(out["n_rays"], n_samples)
        self.step += 1
        stats: Dict[str, Any] = {"mse": mse_t.detach(), "rays": out["n_rays"],
                                 "samples": n_samples}
        if read_loss:
            stats.update(self.read_loss(loss.detach(), mse_t.detach()))
        return stats

    def depth_rays(self, n_rays: int) -> int:
        """How many of a batch of n_rays look through sparse points (0 without them)."""
        if self.depth_obs is None:
            return 0
        return min(n_rays, max(1, int(round(n_rays * self.config.sparse_depth_share))))

    def count_step(self, n_rays: int, n_samples: int) -> None:
        """Book a step that rendered n_rays rays with n_samples samples, and size the next
        step's batch so that it marches about target_samples samples."""
        cfg = self.config
        n = cfg.target_samples / max(n_samples / max(n_rays, 1), 1.0)
        self.n_rays = int(min(max(n, cfg.min_rays), cfg.max_rays))
        self.samples_seen += n_samples
        self.rays_seen += n_rays

    def read_loss(self, loss: torch.Tensor, mse: torch.Tensor) -> Dict[str, float]:
        """Host readout of a step's total loss and MSE (0-d tensors) -> loss (the MSE) and
        PSNR; raises TrainingDiverged when the total or a parameter is NaN/inf. Parameters
        are checked too: NaN densities empty the occupancy grid, after which the loss of
        background-only renders is finite again."""
        bad = sum((~torch.isfinite(p)).sum() for p in self.field.parameters())
        total, value, n_bad = torch.stack([loss, mse, bad.to(loss.dtype)]).tolist()
        return self.loss_stats(total, value, n_bad)

    def loss_stats(self, total: float, mse: float, n_bad: float) -> Dict[str, float]:
        """A step's read total loss, MSE and count of non-finite parameters -> loss (the MSE)
        and PSNR; raises TrainingDiverged when the total or a parameter is NaN/inf."""
        if not math.isfinite(total) or n_bad:
            what = f"loss became {total}" if not math.isfinite(total) else \
                f"{int(n_bad)} parameters became non-finite"
            raise TrainingDiverged(f"{what} at step {self.step}")
        return {"loss": mse, "psnr": psnr_from_mse(max(mse, 1e-12))}

    def lr_now(self) -> float:
        """The learning rate now (TrainConfig.lr_at this step and elapsed time)."""
        return self.config.lr_at(self.step, self.elapsed)

    def set_lr(self) -> None:
        """Set the optimizer's learning rate to :meth:`lr_now`."""
        lr = self.lr_now()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def check_finite(self) -> None:
        """Raise TrainingDiverged if any parameter is NaN/inf."""
        for name, p in self.field.named_parameters():
            if not torch.isfinite(p).all():
                raise TrainingDiverged(f"parameter {name} became non-finite at step {self.step}")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_config(self) -> Dict[str, Any]:
        """JSON part of the checkpoint: everything needed to rebuild and resume."""
        ds = self.dataset
        return {
            "kind": "taichi-nerf",
            "train": dataclasses.asdict(self.config),
            "field": self.field.config.to_dict(),
            "occupancy": dataclasses.asdict(self.grid.spec),
            "march": dataclasses.asdict(self.grid.march),
            "scene": self.scene.to_dict(),
            "background": None if ds.background is None else [float(v) for v in ds.background],
            "has_alpha": bool(ds.has_alpha),
            "width": ds.width, "height": ds.height,
            "intrinsics": [float(v) for v in ds.intrinsics[0]],
            "step": self.step, "elapsed": self.elapsed, "n_rays": self.n_rays,
            "samples_seen": self.samples_seen, "rays_seen": self.rays_seen,
            "occ_cursor": self.grid._cursor,
            "occupancy_threshold": self.grid.threshold,
            "orbit": self.orbit,
            **({"data": self.data_source} if self.data_source else {}),
        }

    def save(self, path: Path) -> None:
        """Write an atomic plain-data checkpoint (refuses a diverged state)."""
        self.check_finite()
        arrays = {}
        arrays.update(state_dict_to_arrays("field", self.field.state_dict()))
        arrays.update(state_dict_to_arrays("optim", self.optimizer.state_dict()))
        arrays["occupancy/density"] = self.grid.density.cpu().numpy()
        arrays["occupancy/bitfield"] = self.grid.bitfield.cpu().numpy()
        arrays["rng"] = self.generator.get_state().numpy()
        arrays["cameras/poses"] = self.dataset.poses  # world c2w: viewer snapping, overlays
        save_checkpoint(path, self.checkpoint_config(), arrays)

    def check_resumable(self, path: Path, cfg: Dict[str, Any]) -> None:
        """CheckpointError naming what differs when the checkpoint `cfg` was trained with
        settings that give its parameters other shapes than this trainer's."""
        mine = _plain_json(self.checkpoint_config())
        if all(_plain_json(cfg.get(k)) == mine[k] for k in ("field", "occupancy")):
            return
        theirs_train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
        theirs_scene = cfg.get("scene") if isinstance(cfg.get("scene"), dict) else {}
        differ = [(k, theirs_train[k]) for k in SHAPE_SETTINGS
                  if k in theirs_train and theirs_train[k] != mine["train"][k]]
        aabb = theirs_scene.get("aabb_scale")
        if aabb is not None and aabb != mine["scene"]["aabb_scale"]:
            differ.append(("aabb_scale", aabb))
        if not differ:
            raise CheckpointError(f"checkpoint {path} was trained with another field or "
                                  f"occupancy grid layout than these settings; resume with the "
                                  f"settings it was trained with")
        was = ", ".join(f"{k} {v}" for k, v in differ)
        # every shape setting and the aabb scale are `train` flags
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in differ)
        raise CheckpointError(f"checkpoint {path} was trained with {was}; resume with the same "
                              f"settings ({opts})")

    def load(self, path: Path) -> None:
        """Restore a checkpoint written by :meth:`save` of the same configuration."""
        cfg, arrays = load_checkpoint(path, required_arrays=["occupancy/density", "rng"],
                                      required_config=["step", "field", "train"])
        self.check_resumable(path, cfg)
        try:
            self.field.load_state_dict(arrays_to_state_dict("field", arrays, self.device))
            self.optimizer.load_state_dict(arrays_to_state_dict("optim", arrays, self.device))
        except (RuntimeError, ValueError) as e:  # shapes the config check did not catch
            raise CheckpointError(f"checkpoint {path}: cannot resume, its parameters do not "
                                  f"match these settings ({str(e).splitlines()[0]})") from None
        self.grid.density = torch.from_numpy(arrays["occupancy/density"]).to(self.device)
        self.grid._cursor = int(cfg.get("occ_cursor", 0))
        self.grid.bitfield = torch.from_numpy(checkpoint_bitfield(cfg, arrays)).to(self.device)
        self.generator.set_state(torch.from_numpy(arrays["rng"]))
        self.step, self.elapsed = int(cfg["step"]), float(cfg["elapsed"])
        self.n_rays = int(cfg["n_rays"])
        self.samples_seen, self.rays_seen = int(cfg["samples_seen"]), int(cfg["rays_seen"])


def _plain_json(obj: Any) -> Any:
    """obj as it reads back from a checkpoint's JSON config (tuples become lists)."""
    return json.loads(json.dumps(obj, sort_keys=True))


def load_model(path: Path, device: Optional[torch.device] = None):
    """Checkpoint -> (config dict, Renderer with trained field and occupancy grid, SceneTransform)."""
    cfg, arrays = load_checkpoint(path, required_arrays=["occupancy/density"],
                                  required_config=["field", "occupancy", "march", "scene"])
    device = device or runtime.device()
    try:
        field_cfg = FieldConfig.from_dict(cfg["field"])
        occ = OccupancySpec(**cfg["occupancy"])
        march = MarchSpec(**cfg["march"])
        scene = SceneTransform.from_dict(cfg["scene"])
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: config is invalid ({e})") from None
    field = NGPField(field_cfg).to(device)
    try:
        field.load_state_dict(arrays_to_state_dict("field", arrays, device))
    except RuntimeError as e:  # shape mismatch between config and arrays
        raise CheckpointError(f"checkpoint {path}: parameters do not match its config "
                              f"({str(e).splitlines()[0]})") from None
    grid = OccupancyGrid(occ, march, device)
    try:
        grid.density = torch.from_numpy(arrays["occupancy/density"]).to(device)
        grid.bitfield = torch.from_numpy(checkpoint_bitfield(cfg, arrays)).to(device)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    field.eval()
    return cfg, Renderer(field, grid), scene


def appearance_note(field: NGPField) -> Optional[str]:
    """What appearance new views render with, for eval output; None without appearance codes."""
    c = field.config
    return f"mean of {c.n_images} training-image codes" if c.appearance_dim else None


def evaluate(renderer: Renderer, ds: Dataset, progress: bool = False,
             save_dir: Optional[Path] = None) -> Dict[str, float]:
    """Render every view of `ds` (poses mapped with ds's scene transform) -> psnr, ssim, views, seconds_per_view."""
    from tqdm import tqdm

    device = renderer.grid.device
    bg = ds.background if ds.background is not None else np.zeros(3, np.float32)
    bg_t = torch.from_numpy(np.asarray(bg, np.float32)).to(device)
    poses = torch.from_numpy(ds.transform_poses()).to(device)
    psnrs, ssims, seconds = [], [], []
    for i in tqdm(range(len(ds)), desc="eval", disable=not progress, leave=False):
        t0 = time.perf_counter()
        out = renderer.render_image(poses[i], torch.from_numpy(ds.intrinsics[i]).to(device),
                                    torch.from_numpy(ds.distortion[i]).to(device),
                                    ds.width, ds.height, bg_t)
        seconds.append(time.perf_counter() - t0)
        pred = out["rgb"].clamp(0, 1).cpu().numpy()
        gt = ds.images[i]
        if gt.shape[2] == 4:
            gt = gt[..., :3] * gt[..., 3:] + bg * (1 - gt[..., 3:])
        psnrs.append(psnr_fn(pred, gt))
        ssims.append(ssim_fn(pred, gt))
        if save_dir is not None:
            import imageio.v3 as iio
            save_dir.mkdir(parents=True, exist_ok=True)
            iio.imwrite(save_dir / f"view_{i:03d}.png", (pred * 255 + 0.5).astype(np.uint8))
    m = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "views": len(ds),
         "seconds_per_view": float(np.mean(seconds))}
    note = appearance_note(renderer.field)
    if note:
        m["appearance"] = note
    return m


write_json = atomic_write_json  # metrics.json and eval --json: the package's one atomic writer


def run_training(trainer: Trainer, out_dir: Path, val: Optional[Dataset] = None,
                 progress: bool = True, resume: bool = False,
                 on_step=None) -> Dict[str, Any]:
    """Train until the budget is spent; Ctrl-C saves and returns. Writes checkpoint + metrics.json."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / CHECKPOINT_NAME
    if resume:
        trainer.load(ckpt)
    cfg = trainer.config
    total = None if cfg.time is not None else cfg.total_steps
    bar = tqdm(total=total, initial=trainer.step if total else 0, disable=not progress,
               desc="train", unit="step", dynamic_ncols=True,
               bar_format=None if total else "{desc}: {n} steps [{elapsed}] {postfix}")
    interrupted = False
    last = {}
    history = []
    start = time.perf_counter() - trainer.elapsed
    try:
        while not cfg.done(trainer.step, trainer.elapsed):
            trainer.set_lr()
            t0 = time.perf_counter()
            # the loss is read on the host (a sync on CUDA) only for the progress bar
            show = (trainer.step + 1) % LOSS_READ_EVERY == 0 or trainer.step == 0
            last = trainer.train_step(read_loss=show)
            dt = time.perf_counter() - t0
            trainer.elapsed = time.perf_counter() - start
            if show:
                bar.set_postfix(loss=f"{last['loss']:.4f}", psnr=f"{last['psnr']:.2f}",
                                samples_s=f"{last['samples'] / max(dt, 1e-9):.3g}",
                                rays=last["rays"], refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(trainer, last)
            if val is not None and cfg.eval_every and trainer.step % cfg.eval_every == 0:
                t_eval = time.perf_counter()
                m = evaluate(trainer.renderer, val)
                history.append({"step": trainer.step, "seconds": trainer.elapsed, **m})
                bar.write(f"step {trainer.step} ({trainer.elapsed:.1f} s): val psnr "
                          f"{m['psnr']:.2f} ssim {m['ssim']:.4f}")
                # the budget is training time: a validation does not use it up
                start += time.perf_counter() - t_eval
    except KeyboardInterrupt:
        interrupted = True
        bar.write("interrupted: saving a checkpoint")
    finally:
        bar.close()
    if last and "psnr" not in last:
        last.update(trainer.read_loss(last["mse"], last["mse"]))
    trainer.save(ckpt)
    metrics: Dict[str, Any] = {
        "steps": trainer.step, "train_seconds": trainer.elapsed, "step_path": trainer.step_path,
        "samples_per_second": trainer.samples_seen / max(trainer.elapsed, 1e-9),
        "rays_per_second": trainer.rays_seen / max(trainer.elapsed, 1e-9),
        "mean_samples_per_ray": trainer.samples_seen / max(trainer.rays_seen, 1),
        "train_psnr_last_batch": last.get("psnr"), "interrupted": interrupted,
        "occupied_fraction": trainer.grid.occupied_fraction,
        "occupied_per_cascade": trainer.grid.occupied_per_cascade(),
    }
    if val is not None and not interrupted:
        m = evaluate(trainer.renderer, val, progress=progress)
        metrics.update(m)
        metrics["val_views"] = m["views"]
    if history:
        metrics["history"] = history
    write_json(out_dir / METRICS_NAME, metrics)
    return metrics
