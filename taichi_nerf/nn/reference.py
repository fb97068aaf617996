"""Pure-torch reference of every kernel op, written for clarity, differentiable by torch.

PyTorch implementation of :mod:`taichi_nerf.nn.ops` (same primes, resolutions,
SH constants, step rule, compositing formula and termination rule). Tests
compare the Taichi kernels against it in float64; benchmarks report speed
ratios against it. Works in any float dtype on any torch device.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

from taichi_nerf.kernels.sh import C0, C1, C2, C3, sh_dim
from taichi_nerf.kernels.specs import HASH_PRIMES, HashGridSpec, MarchSpec, OccupancySpec


def hash_encode(pos: torch.Tensor, table: torch.Tensor, spec: HashGridSpec) -> torch.Tensor:
    """pos (N,3) in [0,1], table (P,F) -> features (N, L*F), level-major; grads to table and pos."""
    feats = []
    corners = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)],
                           device=pos.device)                             # [8, 3]
    for l, (res, off, size, dense) in enumerate(zip(spec.resolutions, spec.level_offsets,
                                                    spec.level_sizes, spec.dense)):
        q = pos.clamp(0, 1) * res                                           # [N, 3]
        cell = q.detach().floor().long().clamp(max=res - 1)                 # [N, 3]
        frac = q - cell.to(q.dtype)                                         # [N, 3]
        vert = cell[:, None, :] + corners[None]                             # [N, 8, 3]
        if dense:
            idx = vert[..., 0] + vert[..., 1] * (res + 1) + vert[..., 2] * (res + 1) ** 2
        else:
            # u32 wrap-around is implied: only the low log2(size) bits are kept
            h = (vert[..., 0] * HASH_PRIMES[0]) ^ (vert[..., 1] * HASH_PRIMES[1]) \
                ^ (vert[..., 2] * HASH_PRIMES[2])
            idx = h & (size - 1)                                            # [N, 8]
        w = torch.where(corners[None].bool(), frac[:, None, :], 1 - frac[:, None, :]).prod(-1)
        rows = table[off + idx]                                             # [N, 8, F]
        feats.append((w[..., None] * rows).sum(1))                          # [N, F]
    return torch.cat(feats, dim=1)


def sh_encode(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """dirs (N,3) unit vectors -> real SH basis (N, degree^2), instant-ngp's constants."""
    n = sh_dim(degree)
    x, y, z = dirs.unbind(-1)
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = [torch.full_like(x, C0)]
    if degree > 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree > 2:
        out += [C2[0] * xy, C2[1] * yz, C2[2] * zz - 0.31539156525252005, C2[3] * xz,
                C2[4] * (xx - yy)]
    if degree > 3:
        out += [C3[0] * y * (-3 * xx + yy), C3[1] * xy * z, C3[2] * y * (1 - 5 * zz),
                C3[3] * z * (5 * zz - 3), C3[4] * x * (1 - 5 * zz), C3[5] * z * (xx - yy),
                C3[6] * x * (-xx + 3 * yy)]
    return torch.stack(out[:n], dim=-1)


def ray_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, lo, hi) -> Tuple[torch.Tensor, torch.Tensor]:
    """rays (R,3), box corners (3,) -> t_near, t_far (R,); a miss has t_far < t_near."""
    lo = torch.as_tensor(lo, dtype=rays_o.dtype, device=rays_o.device)
    hi = torch.as_tensor(hi, dtype=rays_o.dtype, device=rays_o.device)
    d = torch.where(rays_d.abs() < 1e-12, torch.where(rays_d >= 0, 1e-12, -1e-12), rays_d)
    t0, t1 = (lo - rays_o) / d, (hi - rays_o) / d
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


def unpack_bitfield(bitfield: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Packed int32 words (W,) -> bool occupancy (n_cells,)."""
    idx = torch.arange(n_cells, device=bitfield.device)
    return ((bitfield.long()[idx >> 5] >> (idx & 31)) & 1).bool()


def cascade_of(p: torch.Tensor, n_cascades: int) -> torch.Tensor:
    """Finest cascade (K,) int64 whose box holds each model point (K,3) (cascade c spans 2^c)."""
    m = ((p - 0.5).abs().amax(-1) * 2).clamp(min=1.0)
    return torch.ceil(torch.log2(m) - 1e-6).long().clamp(0, n_cascades - 1)


def cell_index(p: torch.Tensor, c: torch.Tensor, res: int) -> torch.Tensor:
    """Flat occupancy cell index (K,) of model points (K,3) in cascades c (x fastest, then y, z)."""
    size = (2.0 ** c.to(p.dtype))[:, None]
    q = ((p - 0.5) / size + 0.5) * res
    cell = q.floor().long().clamp(0, res - 1)
    return c * res ** 3 + cell[:, 0] + cell[:, 1] * res + cell[:, 2] * res * res


# ops.PackedSamples' fields again, on purpose: the oracle imports nothing of the code it checks
@dataclasses.dataclass
class Packed:
    """Packed samples: t, dt (M,), positions, dirs (M,3), ray_index (M,), rays (R,2) = (start, count)."""

    t: torch.Tensor
    dt: torch.Tensor
    positions: torch.Tensor
    dirs: torch.Tensor
    ray_index: torch.Tensor
    rays: torch.Tensor


def march_rays(rays_o: torch.Tensor, rays_d: torch.Tensor, occupied: torch.Tensor,
               occ: OccupancySpec, march: MarchSpec,
               jitter: Optional[torch.Tensor] = None) -> Packed:
    """March all rays in lockstep; occupied (n_cells,) bool, jitter (R,) start offsets in steps
    -> packed samples (see kernels.march)."""
    R, res, C = rays_o.shape[0], occ.resolution, occ.n_cascades
    lo, hi = occ.aabb
    t_near, t_far = ray_aabb(rays_o, rays_d, lo, hi)
    t = torch.clamp(t_near, min=march.near)
    if jitter is not None:
        t = t + jitter.to(t.dtype) * torch.clamp(t * march.cone, march.min_step, march.max_step)
    n = torch.zeros(R, dtype=torch.long, device=rays_o.device)
    active = torch.ones(R, dtype=torch.bool, device=rays_o.device)
    chunks = []  # (ray, step number, t_mid, dt)
    ray_ids = torch.arange(R, device=rays_o.device)
    while True:
        dt = torch.clamp(t * march.cone, march.min_step, march.max_step)
        active &= (t + 0.5 * dt < t_far) & (n < march.max_samples)
        if not active.any():
            break
        a = ray_ids[active]
        ta, dta = t[a], dt[a]
        p = rays_o[a] + (ta + 0.5 * dta)[:, None] * rays_d[a]
        c = cascade_of(p, C)
        while True:  # a step larger than the cascade's cell moves to a coarser cascade
            bump = (c < C - 1) & (dta * res > 2.0 ** c.to(dta.dtype))
            if not bump.any():
                break
            c = c + bump.long()
        occ_here = occupied[cell_index(p, c, res)]
        hit = a[occ_here]
        chunks.append((hit, n[hit].clone(), ta[occ_here] + 0.5 * dta[occ_here], dta[occ_here]))
        n[hit] += 1
        t[hit] += dt[hit]
        miss = ~occ_here
        am, pm, tm, dtm, cm = a[miss], p[miss], ta[miss], dta[miss], c[miss]
        size = 2.0 ** cm.to(pm.dtype)
        cell = (((pm - 0.5) / size[:, None] + 0.5) * res).floor()
        d = rays_d[am]
        d = torch.where(d.abs() < 1e-12, torch.where(d >= 0, 1e-12, -1e-12), d)
        bound = cell + (d > 0).to(pm.dtype)
        wb = (bound / res - 0.5) * size[:, None] + 0.5
        t_exit = torch.maximum(((wb - rays_o[am]) / d).amin(-1), tm)
        # on to the first step whose midpoint is past the cell (cone steps: one by one)
        if march.cone > 0:
            tn = tm + dtm
            while True:
                dtn = torch.clamp(tn * march.cone, march.min_step, march.max_step)
                more = tn + 0.5 * dtn < t_exit
                if not more.any():
                    break
                tn = torch.where(more, tn + dtn, tn)
            t[am] = tn
        else:
            t[am] = tm + torch.clamp(torch.ceil((t_exit - tm) / dtm - 0.5), min=1.0) * dtm
    ray = torch.cat([ch[0] for ch in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
    step = torch.cat([ch[1] for ch in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
    tmid = torch.cat([ch[2] for ch in chunks]) if chunks else rays_o.new_zeros(0)
    dts = torch.cat([ch[3] for ch in chunks]) if chunks else rays_o.new_zeros(0)
    order = torch.argsort(ray * (march.max_samples + 1) + step)
    ray, tmid, dts = ray[order], tmid[order], dts[order]
    counts = torch.bincount(ray, minlength=R)
    starts = torch.cumsum(counts, 0) - counts
    return Packed(t=tmid, dt=dts, positions=rays_o[ray] + tmid[:, None] * rays_d[ray],
                  dirs=rays_d[ray], ray_index=ray, rays=torch.stack([starts, counts], -1))


def composite(sigmas: torch.Tensor, rgbs: torch.Tensor, ts: torch.Tensor, dts: torch.Tensor,
              rays: torch.Tensor, bg: torch.Tensor, t_threshold: float = 1e-4
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed sigmas (M,), rgbs (M,3), ts, dts (M,); rays (R,2); bg (R,3) -> rgb (R,3), depth, opacity (R,).

    Early termination: a sample counts while the transmittance before it is
    >= t_threshold (the kernels stop after the sample that drops T below it).
    """
    R = rays.shape[0]
    counts = rays[:, 1].long()
    ray = torch.repeat_interleave(torch.arange(R, device=rays.device), counts)      # [M]
    tau = sigmas * dts                                                               # [M]
    cum = torch.cumsum(tau, 0) - tau                                                 # exclusive
    # subtract the cumulative optical depth at each ray's first sample
    first = rays[:, 0].long().clamp(max=max(len(tau) - 1, 0))
    cum = cum - (cum[first] if len(tau) else cum.new_zeros(R))[ray]
    trans = torch.exp(-cum)                                                          # T before
    alpha = 1 - torch.exp(-tau)
    w = trans * alpha * (trans.detach() >= t_threshold).to(trans.dtype)             # [M]
    opacity = torch.zeros(R, dtype=sigmas.dtype, device=sigmas.device).index_add(0, ray, w)
    depth = torch.zeros_like(opacity).index_add(0, ray, w * ts)
    rgb = torch.zeros(R, 3, dtype=sigmas.dtype, device=sigmas.device).index_add(
        0, ray, w[:, None] * rgbs)
    rgb = rgb + (1 - opacity)[:, None] * bg
    return rgb, depth, opacity


def mark_transparent(cells: torch.Tensor, radius: torch.Tensor, c2w: torch.Tensor,
                     intrinsics: torch.Tensor, covered: torch.Tensor, usable: torch.Tensor,
                     margin: float) -> torch.Tensor:
    """The carving rule of :func:`taichi_nerf.kernels.occupancy.mark_transparent`: cell centres
    (K,3) model space with bounding-sphere radii (K,), cameras c2w (N,3|4,4) and intrinsics
    (N,4) in pixels of covered (N,H,W) bool (alpha > 0), usable (N,) bool -> (K,) bool: some
    usable camera sees the whole sphere (plus margin pixels) on pixels none of which is covered."""
    n, h, w = covered.shape
    table = torch.zeros(n, h + 1, w + 1, dtype=torch.int64, device=covered.device)
    table[:, 1:, 1:] = covered.long().cumsum(1).cumsum(2)
    carved = torch.zeros(cells.shape[0], dtype=torch.bool, device=cells.device)
    for cam in range(n):
        if not bool(usable[cam]):
            continue
        cam_xyz = (cells - c2w[cam, :3, 3]) @ c2w[cam, :3, :3]    # columns are the camera axes
        z = -cam_xyz[:, 2]
        zs = z.clamp(min=1e-12)
        u = intrinsics[cam, 0] * cam_xyz[:, 0] / zs + intrinsics[cam, 2]
        v = -intrinsics[cam, 1] * cam_xyz[:, 1] / zs + intrinsics[cam, 3]
        r = intrinsics[cam, :2].max() * radius / (z - radius) + margin
        x0, x1 = torch.floor(u - r).long(), torch.floor(u + r).long()
        y0, y1 = torch.floor(v - r).long(), torch.floor(v + r).long()
        ok = (z > 2 * radius) & (x0 >= 0) & (y0 >= 0) & (x1 < w) & (y1 < h)
        x0, x1 = x0.clamp(0, w - 1), x1.clamp(0, w - 1)
        y0, y1 = y0.clamp(0, h - 1), y1.clamp(0, h - 1)
        t = table[cam]
        count = t[y1 + 1, x1 + 1] - t[y0, x1 + 1] - t[y1 + 1, x0] + t[y0, x0]
        carved |= ok & (count == 0)
    return carved
