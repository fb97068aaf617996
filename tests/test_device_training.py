"""The on-device training path (Vulkan/Metal; cpu and lavapipe here): its ray draws, sample
budget and occupancy update follow the host trainer's rules, and a whole step reads one
array from the device."""
import numpy as np
import pytest
import taichi as ti
import torch

from taichi_nerf.data import builtin, load_dataset
from taichi_nerf.kernels import occupancy as occ_k
from taichi_nerf.kernels.rng import uniform, uniform_np
from taichi_nerf.kernels.specs import OccupancySpec
from taichi_nerf.kernels.train_batch import DRAWS_PER_RAY, draw_rays, fit_samples
from taichi_nerf.nn import runtime
from taichi_nerf.nn.cameras import generate_rays
from taichi_nerf.training.config import TrainConfig
from taichi_nerf.training.device import READOUT, DeviceTrainer, device_step_blockers
from taichi_nerf.training.trainer import load_model

from conftest import count_transfers


def _nd(a, dtype=np.float32):
    a = np.ascontiguousarray(a, dtype)
    nd = ti.ndarray(ti.i32 if dtype == np.int32 else ti.f32, shape=a.shape)
    nd.from_numpy(a)
    return nd


@ti.kernel
def _uniforms(seed: ti.u32, stream: ti.u32, out: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    for i in range(out.shape[0]):
        out[i] = uniform(seed, stream, i)


def test_random_numbers_are_the_host_mirrors_on_every_arch(arch, gen):
    seed, stream = (int(v) for v in torch.randint(0, 2 ** 31, (2,), generator=gen))
    out = ti.ndarray(ti.f32, shape=(50000,))
    _uniforms(seed, stream, out)
    got = out.to_numpy()
    assert np.array_equal(got, uniform_np(seed, stream, np.arange(50000)))
    assert 0.0 <= got.min() and got.max() < 1.0 and abs(got.mean() - 0.5) < 0.01
    # a changed seed or stream gives other numbers
    _uniforms(seed + 1, stream, out)
    assert np.mean(out.to_numpy() == got) < 0.01


@pytest.mark.parametrize("pixel_jitter", [0, 1])
def test_drawn_rays_follow_the_host_trainers_rules(arch, gen, pixel_jitter):
    n, h, w, R = 3, 7, 9, 500
    pixels = torch.rand(n * h * w, 4, generator=gen)
    poses = torch.eye(4)[:3].repeat(n, 1, 1) + 0.1 * torch.randn(n, 3, 4, generator=gen)
    intr = torch.tensor([[8.0, 8.5, 4.5, 3.5]]).repeat(n, 1) + torch.rand(n, 4, generator=gen)
    dist = 0.01 * torch.randn(n, 4, generator=gen)
    outs = [ti.ndarray(ti.f32, shape=s) for s in ((R, 3), (R, 3), (R, 3), (R, 3), (R,))]
    image, depth = ti.ndarray(ti.i32, shape=(R,)), ti.ndarray(ti.f32, shape=(R,))
    # sparse points: image, u, v (inside and past the border), distance
    K, n_depth = 40, 70
    obs = torch.stack([torch.randint(0, n, (K,), generator=gen).float(),
                       torch.rand(K, generator=gen) * (w + 2) - 1,
                       torch.rand(K, generator=gen) * (h + 2) - 1,
                       torch.rand(K, generator=gen) * 3], -1)
    draw_rays(11, 5, _nd(pixels), n, h, w, pixel_jitter, _nd(intr), _nd(dist), _nd(poses),
              _nd(obs), n_depth, *outs, image, depth)
    o, d, bg, target, jitter = (torch.from_numpy(a.to_numpy()) for a in outs)
    # the same draws on the host
    u = uniform_np(11, 5, np.arange(R)[:, None] * DRAWS_PER_RAY + np.arange(10)[None, :])
    img = np.minimum((u[:, 0] * n).astype(np.int64), n - 1)
    x = np.minimum((u[:, 1] * w).astype(np.int64), w - 1)
    y = np.minimum((u[:, 2] * h).astype(np.int64), h - 1)
    off = u[:, 3:5] if pixel_jitter else np.full((R, 2), 0.5, np.float32)
    pix = np.stack([x, y], -1).astype(np.float32) + off
    # the first n_depth rays: Trainer._batch's rule for rays through sparse points
    pick = obs[torch.from_numpy(np.minimum((u[:n_depth, 9] * K).astype(np.int64), K - 1))]
    img[:n_depth] = pick[:, 0].long().numpy()
    pix[:n_depth] = pick[:, 1:3].numpy()
    x[:n_depth] = pick[:, 1].long().clamp(0, w - 1).numpy()
    y[:n_depth] = pick[:, 2].long().clamp(0, h - 1).numpy()
    assert np.array_equal(image.to_numpy(), img)
    assert np.array_equal(depth.to_numpy()[:n_depth], pick[:, 3].numpy())
    assert not depth.to_numpy()[n_depth:].any()
    pix = torch.from_numpy(pix)
    ro, rd = generate_rays(pix.contiguous(), torch.from_numpy(img.astype(np.int32)), intr, dist,
                           poses)
    assert torch.allclose(o, ro, atol=1e-6) and torch.allclose(d, rd, atol=1e-5)
    assert torch.equal(bg, torch.from_numpy(u[:, 5:8])) and torch.equal(jitter, torch.from_numpy(u[:, 8]))
    px = pixels[torch.from_numpy((img * h + y) * w + x)]
    want = px[:, :3] * px[:, 3:] + bg * (1 - px[:, 3:])
    assert torch.allclose(target, want, atol=1e-6)


@pytest.mark.parametrize("budget", [1, 40, 10 ** 6])
def test_a_step_keeps_the_first_rays_whose_samples_fit(arch, gen, budget):
    counts = torch.randint(0, 30, (200,), generator=gen, dtype=torch.int32)
    counts[0] = 12
    R = len(counts)
    offsets, fitted = ti.ndarray(ti.i32, shape=(R,)), ti.ndarray(ti.i32, shape=(R,))
    rays, readout = ti.ndarray(ti.i32, shape=(R, 2)), ti.ndarray(ti.f32, shape=(4,))
    readout.fill(0.0)
    fit_samples(_nd(counts, np.int32), budget, offsets, fitted, rays, readout, 1)
    # Renderer.render_rays' rule: the first rays whose packed samples end within the budget
    ends = torch.cumsum(counts, 0)
    n_fit = max(1, int(torch.searchsorted(ends, budget, right=True))) if ends[-1] > budget else R
    want = counts.clone()
    want[n_fit:] = 0
    starts = torch.cumsum(want, 0) - want
    assert np.array_equal(fitted.to_numpy(), want.numpy())
    assert np.array_equal(offsets.to_numpy(), starts.numpy())
    assert np.array_equal(rays.to_numpy(), torch.stack([starts, want], -1).numpy())
    assert readout.to_numpy()[1:3].tolist() == [n_fit, int(want.sum())]


def test_device_occupancy_update_is_the_host_grids_ema(arch, gen):
    n = 4 * 4 ** 3  # occupancy of 4 cascades at resolution 4
    dens = torch.rand(n, generator=gen) * 0.02
    dens[torch.randperm(n, generator=gen)[:40]] = occ_k.UNSEEN
    dens[torch.randperm(n, generator=gen)[:40]] = occ_k.UNVISITED
    idx = torch.randint(0, n, (300,), generator=gen, dtype=torch.int32)  # with repeats
    idx[dens[idx.long()] < 0] = -1  # what pick_cells writes for an unseen cell
    sigma = torch.rand(300, generator=gen) * 3
    density, new, fresh = _nd(dens), _nd(np.zeros(n)), _nd(np.zeros(n), np.int32)
    occ_k.gather_new(_nd(idx, np.int32), _nd(sigma), 0.01, new, fresh)
    occ_k.apply_ema(density, new, fresh, 0.95)
    # OccupancyGrid.update's arithmetic on the same picks
    keep = idx >= 0
    want_new = torch.zeros(n).scatter_reduce(0, idx[keep].long(), sigma[keep] * 0.01, "amax")
    is_fresh = torch.zeros(n, dtype=torch.bool)
    is_fresh[idx[keep].long()] = True
    decayed = torch.maximum(dens * 0.95, want_new)
    decayed = torch.where(is_fresh & torch.isinf(dens), want_new, decayed)
    want = torch.where(dens >= 0, decayed, dens)
    assert torch.allclose(torch.from_numpy(density.to_numpy()), want, rtol=1e-6, atol=0)
    assert not new.to_numpy().any() and not fresh.to_numpy().any()  # ready for the next one


def test_device_bitfield_is_the_host_rule(arch, gen):
    res, C = 8, 3
    dens = torch.rand(C * res ** 3, generator=gen) * 0.03
    dens[::7] = occ_k.UNSEEN
    dens[::11] = occ_k.UNVISITED
    words = OccupancySpec(C, res).n_words  # the cells' words and the blocks'
    want = np.zeros(words, np.int32)
    thr = occ_k.build_bitfield(dens.numpy(), res, C, want)
    bits, t = ti.ndarray(ti.i32, shape=(words,)), ti.ndarray(ti.f32, shape=(1,))
    occ_k.build_bitfield_on_device(_nd(dens), res, C, bits, t, occ_k.threshold_partials(res))
    assert abs(t.to_numpy()[0] - thr) <= 1e-6 * thr
    assert np.array_equal(bits.to_numpy(), want)


@pytest.mark.parametrize("mode", [occ_k.SWEEP, occ_k.CURSOR, occ_k.RANDOM])
def test_picked_cells_follow_the_update_schedule(arch, gen, mode):
    res, C, K = 4, 2, 64
    n = C * res ** 3
    dens = torch.rand(n, generator=gen)
    dens[5] = occ_k.UNSEEN
    occupied = torch.zeros(n, dtype=torch.bool)
    occupied[torch.randperm(n, generator=gen)[:32]] = True  # a try misses with p = 3/4
    bitfield = np.zeros(-(-n // 32), np.int64)
    for i in torch.nonzero(occupied)[:, 0].tolist():
        bitfield[i // 32] |= 1 << (i % 32)
    bitfield = bitfield.astype(np.uint32).view(np.int32)
    idx, unit = ti.ndarray(ti.i32, shape=(K,)), ti.ndarray(ti.f32, shape=(K, 3))
    occ_k.pick_cells(mode, 3, 100, K // 2, 7, 9, _nd(dens), _nd(bitfield, np.int32), res,
                     -0.5, 2.0, idx, unit)
    got, pts = idx.to_numpy(), unit.to_numpy()
    cells = np.arange(3, 3 + K) if mode == occ_k.SWEEP else (np.arange(3, 3 + K) + 100) % n
    if mode != occ_k.RANDOM:
        want = np.where(dens.numpy()[cells] >= 0, cells, -1)
        assert np.array_equal(got, want)
    else:  # picks after `half` (index 3 + k >= 32) land in occupied cells (32 tries)
        late = got[np.arange(3, 3 + K) >= K // 2]
        assert occupied[torch.from_numpy(late).long()].all()
    # every point lies in its cell (in the box [-0.5, 1.5]^3 mapped to [0, 1])
    ok = got >= 0
    model = pts[ok] * 2.0 - 0.5
    c = got[ok] // res ** 3
    for a in range(3):
        assert np.array_equal(occ_k.axis_cell(model[:, a], c, res), np.stack(
            [(got[ok] % res ** 3) % res, (got[ok] % res ** 3) // res % res,
             (got[ok] % res ** 3) // res ** 2], -1)[:, a])


@pytest.fixture(scope="module")
def scene16(tmp_path_factory):
    runtime.init("cpu")
    return builtin.ensure_builtin_scene(16, cache_dir=tmp_path_factory.mktemp("dev-cache"),
                                        progress=False)


def test_a_device_training_step_reads_one_array(arch, scene16, monkeypatch, tmp_path):
    """The whole step, occupancy updates included, moves one array between device and host:
    the readout with the loss (issue: the loss readout only)."""
    train = load_dataset(scene16, "train")
    cfg = TrainConfig(steps=40, log2_table=10, n_levels=8, occ_resolution=16,
                      target_samples=1 << 12, init_rays=64, min_rays=64)
    tr = DeviceTrainer(train, cfg)
    tr.train_step()  # the first step also reads its own batch's counts
    moved = count_transfers(monkeypatch)
    for _ in range(30):  # updates fall on steps 1-4, 6, 8, ... : every kind but the sweep
        moved.clear()
        tr.set_lr()
        assert np.isfinite(tr.train_step()["loss"])
        assert moved == ["to_numpy"], moved  # READOUT; learning: test_vulkan_training
    assert len(READOUT) == 4
    monkeypatch.undo()
    # the checkpoint is the host trainer's format: it loads and renders
    tr.save(tmp_path / "ckpt.npz")
    cfg_d, renderer, _ = load_model(tmp_path / "ckpt.npz")
    assert cfg_d["step"] == 31
    assert torch.equal(renderer.field.grid.table, tr.field.grid.table)
    assert torch.equal(renderer.grid.bitfield, tr.grid.bitfield)
    # resuming puts the same state back on the device
    again = DeviceTrainer(train, cfg)
    again.load(tmp_path / "ckpt.npz")
    for a, b in zip(again.device_step.params + again.adam.m, tr.device_step.params + tr.adam.m):
        assert np.array_equal(a.to_numpy(), b.to_numpy())
    assert again.adam.step_count == tr.adam.step_count == 31
    assert again.train_step()["loss"] > 0


def test_settings_the_device_step_lacks_are_named(scene16):
    train = load_dataset(scene16, "train")
    assert device_step_blockers(TrainConfig(), train) == []
    assert device_step_blockers(TrainConfig(coarse_to_fine=0.5), train) == []
    why = device_step_blockers(TrainConfig(appearance=4, distortion=0.01), train)
    assert len(why) == 2 and "appearance" in why[0] and "distortion" in why[1]
    with pytest.raises(ValueError, match="appearance"):
        runtime.init("cpu")
        DeviceTrainer(train, TrainConfig(appearance=4))


def test_photos_train_on_the_device_with_their_defaults(arch, tmp_path_factory, monkeypatch):
    """A COLMAP capture's defaults (coarse-to-fine, pixel jitter, the sparse-depth loss) all
    run on the device: the project-made "room" scene, one readout per step, finite losses,
    and the host copy's level weights are those of the last step."""
    runtime.init("cpu")
    root = builtin.ensure_builtin_scene(16, cache_dir=tmp_path_factory.mktemp("room"),
                                        progress=False, variant="room")
    init_arch = runtime.init(arch)
    assert init_arch.arch == arch
    train = load_dataset(root, "train")
    assert train.depth_obs is not None and len(train.depth_obs)
    cfg = TrainConfig(steps=20, log2_table=10, n_levels=8, occ_resolution=16,
                      target_samples=1 << 12, init_rays=64, min_rays=64)
    assert device_step_blockers(cfg, train) == []
    tr = DeviceTrainer(train, cfg)
    assert tr.c2f_ramp > 0 and tr.pixel_jitter and tr.depth_rays(64) == 16
    tr.train_step()
    moved = count_transfers(monkeypatch)
    for _ in range(9):
        moved.clear()
        tr.set_lr()
        assert np.isfinite(tr.train_step()["loss"])
        assert moved == ["to_numpy"], moved
    monkeypatch.undo()
    tr.pull()
    w = tr.field.level_weights
    assert 0 < float(w.sum()) < cfg.n_levels and float(w[0]) == 1.0  # levels still joining
