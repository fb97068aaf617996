"""The occupancy rule's result travels in the checkpoint: every renderer samples the same cells."""
import numpy as np
import torch

from taichi_nerf.nn import runtime
from taichi_nerf.nn.checkpoint import load_checkpoint
from taichi_nerf.data import load_dataset
from taichi_nerf.kernels import occupancy as occ_k
from taichi_nerf.kernels.inference import NerfModel
from taichi_nerf.kernels.scene import NerfScene
from taichi_nerf.training.trainer import Trainer, evaluate, load_model, run_training
from taichi_nerf.viewer.app import viewer_for_run

from conftest import RES, small_config


def test_checkpoint_holds_the_bitfield_every_renderer_uses(trained, arch):
    run, _ = trained
    cfg, arrays = load_checkpoint(run / "checkpoint.npz")
    saved = arrays["occupancy/bitfield"]
    occ = cfg["occupancy"]
    n_cells = occ["n_cascades"] * occ["resolution"] ** 3
    # what training sampled last is what the saved densities give under the one rule
    rebuilt = np.zeros_like(saved)
    thr = occ_k.build_bitfield(arrays["occupancy/density"], occ["resolution"],
                               occ["n_cascades"], rebuilt)
    assert np.array_equal(rebuilt, saved)
    assert abs(thr - cfg["occupancy_threshold"]) < 1e-9
    assert 0 < occ_k.unpack_bitfield(saved, n_cells).mean() < 1
    runtime.init("cpu")
    _, renderer, _ = load_model(run / "checkpoint.npz")
    assert np.array_equal(renderer.grid.bitfield.numpy(), saved)
    runtime.init(arch)
    assert np.array_equal(NerfModel.load(str(run / "checkpoint.npz")).bitfield.to_numpy(), saved)
    assert np.array_equal(NerfScene.load(run).bitfield.to_numpy(), saved)
    runtime.init("cpu")


def test_saved_bitfield_wins_over_the_densities(trained, tmp_path, cpu_runtime):
    """A checkpoint's bitfield is used as saved, not re-derived (so a later change of the rule
    or of the densities cannot move the cells a trained run samples)."""
    from taichi_nerf.nn.checkpoint import save_checkpoint
    run, _ = trained
    cfg, arrays = load_checkpoint(run / "checkpoint.npz")
    arrays = dict(arrays)
    arrays["occupancy/density"] = np.zeros_like(arrays["occupancy/density"])  # would be empty
    save_checkpoint(tmp_path / "c.npz", cfg, arrays)
    _, renderer, _ = load_model(tmp_path / "c.npz")
    assert np.array_equal(renderer.grid.bitfield.numpy(), arrays["occupancy/bitfield"])
    # without a saved bitfield the rule rebuilds it from the densities: here nothing occupied
    del arrays["occupancy/bitfield"]
    save_checkpoint(tmp_path / "d.npz", cfg, arrays)
    _, renderer, _ = load_model(tmp_path / "d.npz")
    assert not renderer.grid.occupied().any()


def test_viewer_shows_the_saved_cells(trained, cpu_runtime):
    run, _ = trained
    cfg, arrays = load_checkpoint(run / "checkpoint.npz")
    viewer = viewer_for_run(run, "cpu", headless=True)
    pts = viewer.occupied_points()
    occ = cfg["occupancy"]
    occupied = occ_k.unpack_bitfield(arrays["occupancy/bitfield"],
                                     occ["n_cascades"] * occ["resolution"] ** 3)
    assert len(pts) == min(4000, int(occupied.sum()))


def test_eval_after_loading_renders_what_training_rendered(scene_dir, tmp_path, cpu_runtime):
    """`eval`/`render` on a run (checkpoint -> load_model) give the frame the trainer's own
    renderer gives at the end of training: same cells, same steps, same weights."""
    train = load_dataset(scene_dir, "train")
    test = load_dataset(scene_dir, "test", scene=train.scene)
    trainer = Trainer(train, small_config(steps=60))
    run_training(trainer, tmp_path, progress=False)
    _, loaded, _ = load_model(tmp_path / "checkpoint.npz")
    pose = torch.from_numpy(test.transform_poses()[1])
    args = (pose, torch.from_numpy(test.intrinsics[1]), torch.from_numpy(test.distortion[1]),
            RES, RES, torch.ones(3))
    a = trainer.renderer.render_image(*args)
    b = loaded.render_image(*args)
    for k in ("rgb", "depth", "opacity"):
        assert torch.equal(a[k], b[k]), k
    assert evaluate(trainer.renderer, test)["psnr"] == evaluate(loaded, test)["psnr"]


def test_metrics_and_bench_row_report_occupancy_per_cascade(trained):
    from taichi_nerf.bench.training import format_training_markdown
    run, metrics = trained
    shares = metrics["occupied_per_cascade"]
    cfg, arrays = load_checkpoint(run / "checkpoint.npz")
    occ = cfg["occupancy"]
    assert len(shares) == occ["n_cascades"]
    occupied = occ_k.unpack_bitfield(arrays["occupancy/bitfield"],
                                     occ["n_cascades"] * occ["resolution"] ** 3)
    assert abs(shares[0] - occupied[:occ["resolution"] ** 3].mean()) < 1e-6
    row = format_training_markdown({**metrics, "machine": {}, "data": str(run), "image_size": [RES, RES],
                                    "train_views": 1, "time_budget": 1, "eval_split": "test",
                                    "peak_rss_mib": 1})
    assert f"{100 * shares[0]:.1f}%" in row.strip().splitlines()[-1]
