"""Training on Vulkan and Metal with every step on the device (issue: torch cannot run there).

:class:`DeviceTrainer` is a :class:`~taichi_nerf.training.trainer.Trainer` whose step runs
only Taichi kernels: rays drawn on the device (``kernels.train_batch``), marching, the
field's loss and gradients (``kernels.field_train.FieldTrainingStep``), Adam
(``DeviceAdam``) and occupancy updates (``kernels.occupancy.pick_cells``/``apply_ema``).
One small array comes to the host per step (:data:`READOUT`): the step's loss, and the
ray and sample counts of the *next* step's batch, which is drawn and marched before the
read so that its sample arrays can be sized without a second host sync.

The torch field, grid and optimizer of the base class stay as the host copy: they are
brought up to date (:meth:`DeviceTrainer.pull`) only for checkpoints and evaluations, so
checkpoints, `eval`, `render` and resuming are the same as for the host path.

Not on the device yet (the host path is used for them): appearance codes, the distortion
loss, near-gradient scaling.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import numpy as np
import taichi as ti
import torch

from taichi_nerf.data import Dataset
from taichi_nerf.kernels import occupancy as occ_k
from taichi_nerf.kernels.field_arrays import Temporaries, upload
from taichi_nerf.kernels.field_train import DeviceAdam, FieldTrainingStep
from taichi_nerf.kernels.march import march_kernels
from taichi_nerf.kernels.train_batch import (count_non_finite, draw_rays, fit_samples,
                                             store_scalar, to_unit)
from taichi_nerf.nn import runtime
from taichi_nerf.nn.renderer import Renderer
from taichi_nerf.training.config import TrainConfig
from taichi_nerf.training.trainer import LOSS_READ_EVERY, Trainer, active_levels, level_weights

log = logging.getLogger("taichi_nerf")

# the one array a step reads: loss, next step's rays that fit and their samples, non-finite
# parameters (counted every LOSS_READ_EVERY steps)
READOUT = ("loss", "next_rays", "next_samples", "non_finite")
OCC_CHUNK = 1 << 18  # cells evaluated per density call of an occupancy update


def device_step_blockers(config: TrainConfig, dataset: Dataset) -> List[str]:
    """The settings of this run that the on-device step does not have yet (empty: it can run)."""
    why = []
    if config.appearance:
        why.append("appearance codes")
    if config.distortion > 0:
        why.append("the distortion loss")
    if config.near_grad_distance > 0:
        why.append("near-gradient scaling")
    return why


def make_trainer(dataset: Dataset, config: TrainConfig) -> Trainer:
    """The trainer for the arch Taichi runs on: the host (torch) trainer on cpu and cuda, the
    on-device one on vulkan and metal when the run's settings allow it (else the host one,
    saying why)."""
    rt = runtime.current()
    if runtime.torch_shares_device(rt.arch):
        return Trainer(dataset, config)
    why = device_step_blockers(config, dataset)
    if why:
        msg = (f"taichi-nerf: on {rt.arch} this run trains with torch on the host, copying "
               f"each step's arrays, because the on-device step has no {'; no '.join(why)}")
        print(msg)
        log.warning(msg)
        return Trainer(dataset, config)
    return DeviceTrainer(dataset, config)


class _Batch:
    """One step's rays on the device and their marched counts (see draw_rays, fit_samples)."""

    def __init__(self, tmp: Temporaries, n_rays: int):
        f32, i32 = tmp.f32, (lambda shape: tmp.new(ti.i32, shape))
        self.rays_o, self.rays_d, self.bg, self.target = (f32((n_rays, 3)) for _ in range(4))
        self.jitter, self.image, self.depth = f32((n_rays,)), i32((n_rays,)), f32((n_rays,))
        self.counts, self.offsets, self.fitted = (i32((n_rays,)) for _ in range(3))
        self.rays = i32((n_rays, 2))
        self.n_depth = 0               # rays through sparse points (the first ones)
        self.n_fit = self.n_samples = 0  # rays within the sample budget, their samples (read)
        self.tmp = tmp


class DeviceTrainer(Trainer):
    """The trainer whose steps run on the device (vulkan, metal; cpu in tests)."""

    step_path = "device"

    def __init__(self, dataset: Dataset, config: TrainConfig):
        super().__init__(dataset, config)
        why = device_step_blockers(config, dataset)
        if why:
            raise ValueError(f"the on-device step has no {'; no '.join(why)}")
        f = self.field
        self._linears = [m for net in (f.density_net, f.color_net) for m in net
                         if isinstance(m, torch.nn.Linear)]
        n_density = sum(isinstance(m, torch.nn.Linear) for m in f.density_net)
        layers = [(m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy())
                  for m in self._linears]
        self.device_step = FieldTrainingStep(f.config.grid, f.config.sh_degree,
                                             f.grid.table.detach().cpu().numpy(),
                                             layers[:n_density], layers[n_density:])
        decays = [0.0] + [config.weight_decay, 0.0] * len(self._linears)
        self.adam = DeviceAdam(self.device_step.params, config.lr, decays)
        self._pixels = upload(self.pixels.cpu().numpy())
        self._poses = upload(self.poses.cpu().numpy())
        self._intrinsics = upload(self.intrinsics.cpu().numpy())
        self._distortion = upload(self.distortion.cpu().numpy())
        # sparse points (image, u, v, model-space distance); one unused row when there are none
        obs = self.depth_obs.numpy() if self.depth_obs is not None else np.zeros((1, 4))
        self._depth_obs = upload(obs)
        g = self.grid
        self._density = upload(g.density.cpu().numpy())
        self._bitfield = upload(g.bitfield.cpu().numpy(), ti.i32)
        self._threshold = ti.ndarray(ti.f32, shape=(1,))
        self._partials = occ_k.threshold_partials(g.spec.resolution)
        self._new = ti.ndarray(ti.f32, shape=(g.spec.n_cells,))
        self._new.fill(0.0)
        self._fresh = ti.ndarray(ti.i32, shape=(g.spec.n_cells,))
        self._fresh.fill(0)
        self._readout = ti.ndarray(ti.f32, shape=(len(READOUT),))
        self._march = march_kernels(g.spec, g.march)
        self._next: Optional[_Batch] = None   # the coming step's batch, marched and counted
        self._occ_tmp = Temporaries()
        self._step_tmp = Temporaries()
        self._host_stale = False
        self._c2f_progress = 0.0

    # ------------------------------------------------------------------ host copy
    @property
    def renderer(self) -> Renderer:
        """The host renderer, its field and grid brought up to date first (evaluation)."""
        self.pull()
        return self._renderer

    @renderer.setter
    def renderer(self, value: Renderer) -> None:
        self._renderer = value

    def _torch_params(self) -> List[torch.nn.Parameter]:
        out = [self.field.grid.table]
        for m in self._linears:
            out += [m.weight, m.bias]
        return out

    def pull(self) -> None:
        """Copy the device's parameters, Adam moments and occupancy grid into the host copy."""
        if not self._host_stale:
            return
        with torch.no_grad():
            for p, nd, m, v in zip(self._torch_params(), self.device_step.params, self.adam.m,
                                   self.adam.v):
                p.copy_(torch.from_numpy(nd.to_numpy()).to(p.device))
                if self.adam.step_count:
                    self.optimizer.state[p] = {
                        "step": torch.tensor(float(self.adam.step_count), dtype=torch.float32),
                        "exp_avg": torch.from_numpy(m.to_numpy()).to(p.device),
                        "exp_avg_sq": torch.from_numpy(v.to_numpy()).to(p.device)}
        self.grid.density = torch.from_numpy(self._density.to_numpy()).to(self.device)
        self.grid.bitfield = torch.from_numpy(self._bitfield.to_numpy()).to(self.device)
        self.grid.threshold = float(self._threshold.to_numpy()[0])
        if self.c2f_ramp > 0:  # the weights the last step used
            cfg = self.config
            self.field.set_level_weights(level_weights(
                self._c2f_progress, cfg.n_levels, cfg.coarse_levels, self.c2f_ramp))
        self._host_stale = False

    def push(self) -> None:
        """Copy the host copy (after a checkpoint load) to the device; the next batch is redrawn."""
        for p, nd, m, v in zip(self._torch_params(), self.device_step.params, self.adam.m,
                               self.adam.v):
            nd.from_numpy(np.ascontiguousarray(p.detach().cpu().numpy(), np.float32))
            st = self.optimizer.state.get(p, {})
            for moment, key in ((m, "exp_avg"), (v, "exp_avg_sq")):
                if key in st:
                    moment.from_numpy(np.ascontiguousarray(st[key].cpu().numpy(), np.float32))
                else:
                    moment.fill(0.0)
            if "step" in st:
                self.adam.step_count = int(float(st["step"]))
        self._density.from_numpy(np.ascontiguousarray(self.grid.density.cpu().numpy(), np.float32))
        self._bitfield.from_numpy(np.ascontiguousarray(self.grid.bitfield.cpu().numpy(), np.int32))
        self._next = None
        self._host_stale = False

    def load(self, path) -> None:
        """Restore a checkpoint (see Trainer.load) onto the device."""
        super().load(path)
        self.push()

    def save(self, path) -> None:
        """Write the checkpoint from the device's state (see Trainer.save)."""
        self.pull()
        super().save(path)

    def set_lr(self) -> None:
        """The host trainer's schedule, applied to the device's Adam."""
        self.adam.lr = self.lr_now()

    # ------------------------------------------------------------------ one step
    def _update_occupancy(self, step: int) -> None:
        """OccupancyGrid.update's schedule and EMA on the device (cells picked by kernels.rng)."""
        g, cfg = self.grid, self.config
        mode, total, cursor = g.plan_update(step)
        half = total // 2  # RANDOM: uniform picks first, occupied ones after
        self._occ_tmp.release()
        lo, size = self._renderer.lo, self._renderer.size
        for first in range(0, total, OCC_CHUNK):
            k = min(OCC_CHUNK, total - first)
            idx = self._occ_tmp.new(ti.i32, (k,))
            unit = self._occ_tmp.f32((k, 3))
            occ_k.pick_cells(mode, first, cursor, half, cfg.seed, 2 * step + 1, self._density,
                             self._bitfield, g.spec.resolution, lo, size, idx, unit)
            sigma = self.device_step.density(unit)
            occ_k.gather_new(idx, sigma, g.march.min_step, self._new, self._fresh)
        occ_k.apply_ema(self._density, self._new, self._fresh, g.decay)
        occ_k.build_bitfield_on_device(self._density, g.spec.resolution, g.spec.n_cascades,
                                       self._bitfield, self._threshold, self._partials)

    def _prepare(self) -> _Batch:
        """Occupancy update when due, then draw and count the rays of step self.step."""
        if self.grid.due(self.step):
            self._update_occupancy(self.step)
        tmp = Temporaries()
        b = _Batch(tmp, self.n_rays)
        d = self.dataset
        b.n_depth = self.depth_rays(self.n_rays)
        draw_rays(self.config.seed, 2 * self.step, self._pixels, len(d), d.height, d.width,
                  int(self.pixel_jitter), self._intrinsics, self._distortion, self._poses,
                  self._depth_obs, b.n_depth, b.rays_o, b.rays_d, b.bg, b.target, b.jitter,
                  b.image, b.depth)
        self._march.count(b.rays_o, b.rays_d, b.jitter, self._bitfield, b.counts)
        fit_samples(b.counts, 2 * self.config.target_samples, b.offsets, b.fitted, b.rays,
                    self._readout, 1)
        return b

    def _read(self, batch: _Batch) -> np.ndarray:
        """The step's one host transfer; books the batch's counts (READOUT[1:3])."""
        vals = self._readout.to_numpy()
        batch.n_fit, batch.n_samples = int(vals[1]), int(vals[2])
        return vals

    def train_step(self, read_loss: bool = True) -> Dict[str, Any]:
        """One step on the device -> rays, samples, "loss" and "psnr" of this step (always
        read: the readout that sizes the next step carries it); raises TrainingDiverged."""
        cfg = self.config
        if self._next is None:  # the first step, or after a load: draw and count its batch
            self._readout.fill(0.0)
            self._next = self._prepare()
            self._read(self._next)
        b = self._next
        n_fit, n_samples = b.n_fit, b.n_samples
        if self.c2f_ramp > 0:
            self._c2f_progress = cfg.budget_progress(self.step, self.elapsed)
            self.device_step.set_active_levels(active_levels(
                self._c2f_progress, cfg.n_levels, cfg.coarse_levels, self.c2f_ramp))
        self._step_tmp.release()
        tmp = self._step_tmp
        m = max(n_samples, 1)  # no sample: one unused row, no ray points at it
        t, dt = tmp.f32((m,)), tmp.f32((m,))
        pos, dirs = tmp.f32((m, 3)), tmp.f32((m, 3))
        ray_index = tmp.new(ti.i32, (m,))
        if n_samples:
            self._march.fill(b.rays_o, b.rays_d, b.jitter, self._bitfield, b.offsets, b.fitted,
                             t, dt, pos, dirs, ray_index)
        else:
            for a in (t, dt, pos, dirs):
                a.fill(0.0)
        to_unit(pos, self._renderer.lo, self._renderer.size)
        loss, grads = self.device_step.gradients(
            pos, dirs, t, dt, b.rays, b.bg, b.target, n_rays=n_fit, depth=b.depth,
            n_depth=min(b.n_depth, n_fit), depth_tolerance=cfg.sparse_depth_tolerance,
            depth_weight=cfg.sparse_depth)
        self.adam.step(grads)
        self._host_stale = True
        self._readout.fill(0.0)
        store_scalar(loss, self._readout, 0)
        if (self.step + 1) % LOSS_READ_EVERY == 0:
            for p in self.device_step.params:
                count_non_finite(p, self._readout, 3)
        self.count_step(n_fit, n_samples)  # sizes the next batch (the host trainer's rule)
        self.step += 1
        self._next = self._prepare()
        vals = self._read(self._next)
        value = float(vals[0])
        stats = self.loss_stats(value, value, vals[3])  # raises TrainingDiverged
        b.tmp.release()
        return {"mse": torch.tensor(value), "rays": n_fit, "samples": n_samples, **stats}
