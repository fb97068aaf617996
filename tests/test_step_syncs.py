"""A whole training step reads the host only where it must: the packed sample count of the
march (on CUDA every other host read of a tensor waits for all queued GPU work). The loss
is read every LOSS_READ_EVERY steps for the progress bar and the divergence guard."""
import math

import pytest
import torch

from taichi_nerf.data import load_dataset
from taichi_nerf.training.trainer import LOSS_READ_EVERY, Trainer, TrainingDiverged, run_training

from conftest import small_config
from test_host_syncs import as_on_gpu, count_syncs  # noqa: F401 (fixtures)


def test_a_training_step_syncs_only_for_the_sample_count(scene_dir, cpu_runtime, as_on_gpu,
                                                         count_syncs):
    train = load_dataset(scene_dir, "train")
    t = Trainer(train, small_config(steps=20, occ_warmup_steps=4, coarse_to_fine=0.0))
    while t.grid.due(t.step) or t.step < 2:  # the grid update reads the host by design
        t.train_step()
    assert not t.grid.due(t.step)
    # rays that cannot march past the step's budget (2 x target_samples): cutting a batch
    # that overflows it reads the host by design (render_rays), and how many samples a ray
    # marches depends on the run so far
    t.n_rays = t.config.target_samples // t.config.max_samples_per_ray
    with count_syncs() as quiet:
        stats = t.train_step(read_loss=False)
    assert quiet.n == 1, quiet.n  # march_rays' count of packed samples
    assert "loss" not in stats and stats["mse"].dim() == 0
    with count_syncs() as read:
        values = t.read_loss(stats["mse"], stats["mse"])
    assert read.n == 1, read.n  # one readout for the total and the MSE together
    assert values["psnr"] == pytest.approx(-10 * math.log10(float(stats["mse"])))


def test_run_training_reads_the_loss_every_few_steps(scene_dir, tmp_path, cpu_runtime,
                                                     monkeypatch):
    train = load_dataset(scene_dir, "train")
    t = Trainer(train, small_config(steps=2 * LOSS_READ_EVERY + 3))
    reads = []
    step = Trainer.train_step

    def spy(self, read_loss=True):
        reads.append(read_loss)
        return step(self, read_loss)
    monkeypatch.setattr(Trainer, "train_step", spy)
    m = run_training(t, tmp_path, progress=False)
    assert reads.count(True) == 3  # the first step, then every LOSS_READ_EVERY
    assert reads[0] and reads[LOSS_READ_EVERY - 1] and reads[2 * LOSS_READ_EVERY - 1]
    assert math.isfinite(m["train_psnr_last_batch"])  # the last step is read at the end


def test_nan_parameters_are_caught_at_the_next_readout(scene_dir, tmp_path, cpu_runtime):
    train = load_dataset(scene_dir, "train")
    t = Trainer(train, small_config(steps=50))
    poisoned = []

    def poison(trainer, last):
        if trainer.step == 2:
            with torch.no_grad():
                trainer.field.density_net[0].weight.fill_(float("nan"))
            poisoned.append(trainer.step)
    with pytest.raises(TrainingDiverged, match="(loss became nan|parameters became non-finite) at step"):
        run_training(t, tmp_path, progress=False, on_step=poison)
    assert poisoned and t.step == LOSS_READ_EVERY
    assert not (tmp_path / "checkpoint.npz").exists()
