"""Rendering in pieces (march_segment + composite_resume): the same samples and values as
one whole walk, on random inputs against the float64 reference, and on a trained run."""
import numpy as np
import pytest
import torch

from taichi_nerf.data import load_dataset
from taichi_nerf.nn import ops, reference
from taichi_nerf.nn.cameras import generate_rays, pixel_grid
from taichi_nerf.kernels.specs import SEGMENT_MIN, T_THRESHOLD, MarchSpec, OccupancySpec
from taichi_nerf.training.trainer import load_model

from conftest import RES, rel_err
from test_march import _bitfield, _rays

OCC = OccupancySpec(n_cascades=2, resolution=16)


def _segments(o, d, bitfield, march, gen):
    """Walk all rays in segments of random lengths -> per ray the list of (t, dt, pos, dir)."""
    R = o.shape[0]
    t, t_far = ops.march_start(o, d, ops.occupied_bounds(bitfield, OCC), OCC, march)
    taken = torch.zeros(R, dtype=torch.int32)
    ids = torch.arange(R, dtype=torch.int32)
    got = [[] for _ in range(R)]
    while ids.numel():
        limit = int(torch.randint(1, 9, (1,), generator=gen))
        s = ops.march_segment(o, d, ids, t, t_far, taken, bitfield, OCC, march, limit)
        for i, (start, count) in enumerate(s.rays.tolist()):
            rows = slice(start, start + count)
            got[int(ids[i])].append(torch.cat([s.t[rows, None], s.dt[rows, None],
                                               s.positions[rows], s.dirs[rows]], 1))
            assert (s.ray_index[rows] == i).all()
        ids = ids[s.rays[:, 1] == limit]
    return [torch.cat(g) if g else torch.zeros(0, 8) for g in got], taken


def _cell_boxes(spec: OccupancySpec) -> torch.Tensor:
    """(n_cells, 2, 3) model-space lo/hi corner of every cell (numpy's own indexing)."""
    i = torch.arange(spec.n_cells)
    res = spec.resolution
    c, r = i // res ** 3, i % res ** 3
    cell = torch.stack([r % res, (r // res) % res, r // res ** 2], -1).float()
    size = (2.0 ** c.float())[:, None]
    lo = 0.5 + size * (cell / res - 0.5)
    return torch.stack([lo, lo + size / res], 1)


def test_occupied_bounds_hold_every_occupied_cell(arch, gen):
    occupied = torch.rand(OCC.n_cells, generator=gen) < 0.002
    boxes = _cell_boxes(OCC)[occupied]
    got = ops.occupied_bounds(_bitfield(occupied, OCC), OCC)
    lo, hi = boxes[:, 0].min(0).values, boxes[:, 1].max(0).values
    margin = 1.0 / OCC.resolution  # one finest cell either side
    assert torch.allclose(got[0], lo - margin, atol=1e-6)
    assert torch.allclose(got[1], hi + margin, atol=1e-6)
    empty = ops.occupied_bounds(_bitfield(torch.zeros(OCC.n_cells, dtype=torch.bool), OCC), OCC)
    assert (empty[0] > empty[1]).all()  # nothing occupied: every ray misses


@pytest.mark.parametrize("max_samples", [1024, 7])
@pytest.mark.parametrize("region", ["everywhere", "blob"])
def test_segments_give_the_samples_of_one_walk(arch, gen, max_samples, region):
    """Segments of random lengths equal one whole walk; "blob": the occupied cells fill a
    small box, so most walks end early at its exit (or at once, missing it)."""
    march = MarchSpec(min_step=0.013, max_step=0.05, cone=0.02, max_samples=max_samples)
    o, d = _rays(gen, 200)
    occupied = torch.rand(OCC.n_cells, generator=gen) < (0.4 if region == "everywhere" else 0.7)
    if region == "blob":
        boxes = _cell_boxes(OCC)
        occupied &= ((boxes[:, 0] >= 0.2) & (boxes[:, 1] <= 0.7)).all(1)
    bitfield = _bitfield(occupied, OCC)
    whole = ops.march_rays(o, d, bitfield, OCC, march)
    got, taken = _segments(o, d, bitfield, march, gen)
    assert torch.equal(taken, whole.rays[:, 1])
    # walks longer than a segment, and walks that ended at max_samples, were checked
    assert int(whole.rays[:, 1].max()) == max_samples if max_samples < 8 else \
        int(whole.rays[:, 1].max()) > 8
    for r, (start, count) in enumerate(whole.rays.tolist()):
        rows = slice(start, start + count)
        ref = torch.cat([whole.t[rows, None], whole.dt[rows, None], whole.positions[rows],
                         whole.dirs[rows]], 1)
        assert torch.equal(got[r], ref), f"ray {r}"


def test_resumed_compositing_equals_the_reference(arch, gen):
    R = 300
    counts = torch.randint(0, 40, (R,), generator=gen, dtype=torch.int32)
    M = int(counts.sum())
    ends = torch.cumsum(counts, 0, dtype=torch.int32)
    rays = torch.stack([ends - counts, counts], -1)
    sigmas = torch.rand(M, generator=gen) * 30
    rgbs = torch.rand(M, 3, generator=gen)
    ts = torch.rand(M, generator=gen) * 3
    dts = torch.rand(M, generator=gen) * 0.05
    bg = torch.rand(R, 3, generator=gen)
    T = torch.ones(R)
    colour = torch.zeros(R, 3)
    depth = torch.zeros(R)
    done = torch.zeros(R, dtype=torch.int32)
    weights = torch.full((M,), -1.0)
    while bool((done < counts).any()):  # feed each ray's samples in random-length pieces
        ids = (done < counts).nonzero().squeeze(1).to(torch.int32)
        take = torch.minimum(torch.randint(1, 6, (ids.numel(),), generator=gen,
                                           dtype=torch.int32), counts[ids] - done[ids])
        rows = torch.cat([torch.arange(int(rays[r, 0] + done[r]), int(rays[r, 0] + done[r] + n))
                          for r, n in zip(ids.tolist(), take.tolist())])
        e = torch.cumsum(take, 0, dtype=torch.int32)
        piece = ops.PackedSamples(ts[rows], dts[rows], torch.zeros(rows.numel(), 3),
                                  torch.zeros(rows.numel(), 3), torch.zeros_like(rows, dtype=torch.int32),
                                  torch.stack([e - take, take], -1))
        T_before = T.clone()
        weights[rows] = ops.resume_weights(sigmas[rows], piece, ids, T, T_THRESHOLD)
        assert torch.equal(T, T_before)
        ops.composite_resume(sigmas[rows], rgbs[rows].contiguous(), piece, ids, T, colour, depth,
                             T_THRESHOLD)
        done[ids.long()] += take
    ref_rgb, ref_depth, ref_opacity = reference.composite(
        sigmas.double(), rgbs.double(), ts.double(), dts.double(), rays, bg.double(), T_THRESHOLD)
    assert rel_err(colour + T[:, None] * bg, ref_rgb) < 1e-5
    assert rel_err(depth, ref_depth) < 1e-5
    assert rel_err(1.0 - T, ref_opacity) < 1e-5
    assert float((T < T_THRESHOLD).float().mean()) > 0.3  # early termination was exercised
    # the weights the pieces were composited with: they sum to each ray's outputs
    ray_of = torch.repeat_interleave(torch.arange(R), counts.long())
    per_ray = lambda x: torch.zeros(R, *x.shape[1:], dtype=torch.float64).index_add_(  # noqa
        0, ray_of, x)
    w = weights.double()
    assert (w >= 0).all()
    assert rel_err(per_ray(w[:, None] * rgbs.double()) + (1 - ref_opacity[:, None]) * bg.double(),
                   ref_rgb) < 1e-5
    assert rel_err(per_ray(w * ts.double()), ref_depth) < 1e-5
    assert rel_err(per_ray(w), ref_opacity) < 1e-5
    assert float((weights == 0).float().mean()) > 0.1  # samples after a ray's end weigh 0


def _whole_walk_image(renderer, o, d, bg):
    out = renderer.render_rays(o, d, bg.expand(o.shape[0], 3).contiguous())
    return out["rgb"], out["depth"], out["opacity"], out["n_samples"]


def test_segmented_render_equals_whole_walk_render(trained, scene_dir, cpu_runtime):
    out, _ = trained
    _, renderer, scene = load_model(out / "checkpoint.npz")
    test = load_dataset(scene_dir, "test", scene=scene)
    pose = torch.from_numpy(test.transform_poses()[0])
    pix = pixel_grid(RES, RES)
    o, d = generate_rays(pix, torch.zeros(pix.shape[0], dtype=torch.int32),
                         torch.from_numpy(test.intrinsics[:1]).contiguous(),
                         torch.from_numpy(test.distortion[:1]).contiguous(),
                         pose[None, :3].contiguous())
    bg = torch.tensor([0.2, 0.4, 0.9])
    with torch.no_grad():
        whole = renderer.render_rays(o, d, bg.expand(o.shape[0], 3).contiguous())
    # SEGMENT_MIN samples a ray a round at first, so rays end over several rounds (the
    # default round holds this small image's whole walk)
    few = SEGMENT_MIN * o.shape[0]
    seg = renderer.render_rays_segmented(o, d, bg.expand(o.shape[0], 3), round_samples=few)
    assert float(whole["opacity"].mean()) > 0.1  # the view sees the trained object
    for k in ("rgb", "depth", "opacity"):
        assert float((seg[k] - whole[k]).abs().max()) < 1e-5, k
    assert seg["n_samples"] < whole["n_samples"]  # samples behind surfaces were skipped
    # render_image is the segmented render
    img = renderer.render_image(pose, torch.from_numpy(test.intrinsics[0]),
                                torch.from_numpy(test.distortion[0]), RES, RES, bg)
    assert float((img["rgb"].reshape(-1, 3) - whole["rgb"]).abs().max()) < 1e-5
    # a preview's looser threshold: fewer samples, nearly the same picture
    loose = renderer.render_rays_segmented(o, d, bg.expand(o.shape[0], 3), t_threshold=1e-2,
                                           round_samples=few)
    assert loose["n_samples"] < seg["n_samples"]
    assert float((loose["rgb"] - whole["rgb"]).abs().max()) < 2e-2
    # colour only for samples that weigh more than 1e-3: the rest count as black, so a
    # pixel darkens by at most the weight they carry; depth and opacity stay exact
    skim = renderer.render_rays_segmented(o, d, bg.expand(o.shape[0], 3), round_samples=few,
                                          min_weight=1e-3)
    # with min_weight 0 the samples after a ray's end in its last segment go uncoloured
    assert seg["n_coloured"] < seg["n_samples"] == skim["n_samples"]
    assert skim["n_coloured"] < 0.9 * seg["n_coloured"]
    assert torch.equal(skim["depth"], seg["depth"]) and torch.equal(skim["opacity"], seg["opacity"])
    dark = seg["rgb"] - skim["rgb"]
    assert float(dark.min()) > -1e-5 and float(dark.max()) < 2e-2
    assert float(dark.abs().mean()) < 1e-3


def test_images_read_the_hash_grid_as_coherent_points(trained, scene_dir, cpu_runtime,
                                                     monkeypatch):
    """render_image's samples come ray by ray in pixel order: its hash-grid forward is asked
    for the coherent form (the cpu's point-major order), whole walk or segments; a training
    batch of random rays keeps the default form. The forms give the same values (tested in
    test_hash_grid), so the picture is the one render_rays gives."""
    from taichi_nerf.kernels import march as march_mod

    out, _ = trained
    _, renderer, scene = load_model(out / "checkpoint.npz")
    test = load_dataset(scene_dir, "test", scene=scene)
    asked = []
    original = ops.hash_grid_kernels
    monkeypatch.setattr(ops, "hash_grid_kernels",
                        lambda spec, coherent=False: asked.append(coherent) or
                        original(spec, coherent))
    args = (torch.from_numpy(test.transform_poses()[0]), torch.from_numpy(test.intrinsics[0]),
            torch.from_numpy(test.distortion[0]))
    size = 16
    assert march_mod.renders_whole(size * size, renderer.grid.march)
    renderer.render_image(*args, size, size, torch.ones(3))   # walked whole
    assert not march_mod.renders_whole(RES * RES // 2, renderer.grid.march)
    renderer.render_image(*args, RES, RES, torch.ones(3), chunk=RES * RES // 2)  # segments
    assert asked and all(asked)
    asked.clear()
    o, d = torch.rand(64, 3) * 0.1 + 0.45, torch.nn.functional.normalize(torch.randn(64, 3), dim=1)
    renderer.render_rays(o, d, torch.ones(64, 3))
    assert asked and not any(asked)


def test_render_benchmark_reports_each_mode(trained, cpu_runtime, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "render_segments.py"
    spec = importlib.util.spec_from_file_location("render_segments", path)
    render_segments = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_segments)
    out, _ = trained
    rows = render_segments.measure(out, size=32, views=2, repeats=1)
    assert [r["mode"].split(",")[0] for r in rows] == ["whole walk", "segments", "segments"]
    whole, exact, preview = rows
    assert whole["max_abs_diff"] == 0.0 and exact["max_abs_diff"] < 1e-5
    assert preview["samples_per_frame"] <= exact["samples_per_frame"] <= whole["samples_per_frame"]
    assert all(r["frame_ms"] > 0 for r in rows)
    assert render_segments.main([str(out), "--size", "16", "--views", "1", "--repeats", "1"]) == 0
    table = capsys.readouterr().out
    assert table.strip().count("\n") == 4 and "whole walk" in table and "preview" in table


def test_few_rays_are_walked_whole_and_give_the_same_image(trained, scene_dir, cpu_runtime,
                                                           monkeypatch):
    from taichi_nerf.kernels import march as march_mod
    from taichi_nerf.kernels.inference import NerfModel
    from taichi_nerf.nn.renderer import Renderer

    out, _ = trained
    _, renderer, scene = load_model(out / "checkpoint.npz")
    test = load_dataset(scene_dir, "test", scene=scene)
    pose = test.transform_poses()[0]
    size = 16
    march = renderer.grid.march
    assert march_mod.renders_whole(size * size, march)
    assert not march_mod.renders_whole(march_mod.WHOLE_WALK_SLOTS // march.max_samples + 1, march)
    args = (torch.from_numpy(pose), torch.from_numpy(test.intrinsics[0]),
            torch.from_numpy(test.distortion[0]), size, size, torch.ones(3))
    model = NerfModel.load(str(out / "checkpoint.npz"))
    small = renderer.render_image(*args)
    small_model = model.render_image(pose, test.intrinsics[0], size, size)
    # the same frames forced through segments
    monkeypatch.setattr(march_mod, "WHOLE_WALK_SLOTS", 0)
    called = []
    original = Renderer.render_rays_segmented
    monkeypatch.setattr(Renderer, "render_rays_segmented",
                        lambda self, *a, **k: called.append(1) or original(self, *a, **k))
    seg = renderer.render_image(*args)
    seg_model = model.render_image(pose, test.intrinsics[0], size, size)
    assert called  # the second render did go through segments
    for k in ("rgb", "depth", "opacity"):
        assert float((small[k] - seg[k]).abs().max()) < 1e-5, k
        assert float(np.abs(small_model[k] - seg_model[k]).max()) < 1e-5, k


def test_both_renderers_colour_the_same_samples(trained, scene_dir, cpu_runtime):
    """The torch renderer and the torch-free model apply one min_weight rule: the same
    pictures, the same count of coloured samples, fewer than with every sample coloured."""
    from taichi_nerf.kernels.inference import NerfModel

    out, _ = trained
    _, renderer, scene = load_model(out / "checkpoint.npz")
    test = load_dataset(scene_dir, "test", scene=scene)
    pose = test.transform_poses()[0]
    size = 48
    model = NerfModel.load(str(out / "checkpoint.npz"))
    pix = pixel_grid(size, size)
    o, d = generate_rays(pix, torch.zeros(pix.shape[0], dtype=torch.int32),
                         torch.from_numpy(test.intrinsics[:1]).contiguous(),
                         torch.from_numpy(test.distortion[:1]).contiguous(),
                         torch.from_numpy(pose)[None, :3].contiguous())
    bg = torch.ones(o.shape[0], 3)
    import taichi as ti
    o_nd, d_nd = ti.ndarray(ti.f32, o.shape), ti.ndarray(ti.f32, d.shape)
    o_nd.from_numpy(o.numpy())
    d_nd.from_numpy(d.numpy())
    for mw in (0.0, 1e-3):
        ref = renderer.render_rays_segmented(o, d, bg, min_weight=mw)
        got = model.render_rays(o_nd, d_nd, np.ones(3, np.float32), min_weight=mw)
        assert got["n_samples"] == ref["n_samples"]
        # the two MLPs round differently: a weight at min_weight may land on either side
        assert abs(got["n_coloured"] - ref["n_coloured"]) <= 2e-3 * ref["n_samples"]
        for k in ("rgb", "depth", "opacity"):
            assert np.abs(got[k] - ref[k].numpy()).max() < 1e-4, (mw, k)
    assert ref["n_coloured"] < 0.9 * ref["n_samples"]
