"""The NGP radiance field in torch: hash grid -> density MLP -> SH-conditioned colour MLP."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
from torch import nn

from taichi_nerf.nn import ops, profiling
from taichi_nerf.kernels.sh import sh_dim
from taichi_nerf.kernels.specs import TRUNC_EXP_MAX, HashGridSpec


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=TRUNC_EXP_MAX))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) whose gradient uses exp(min(x, 15)) (instant-ngp's density activation)."""
    return _TruncExp.apply(x)


@dataclasses.dataclass(frozen=True)
class FieldConfig:
    """Widths of the NGP field; the grid spec is shared with the kernels."""

    grid: HashGridSpec = HashGridSpec(n_levels=16, n_features=2, log2_table=17,
                                      base_resolution=16, finest_resolution=2048)
    hidden: int = 64
    geo_features: int = 16      # density MLP outputs: log density + 15 features
    color_hidden_layers: int = 2
    sh_degree: int = 4
    # per-image appearance code (NeRF-W, nerfacto) appended to the colour MLP's input:
    # n_images codes of appearance_dim floats; 0 turns it off
    appearance_dim: int = 0
    n_images: int = 0

    def to_dict(self) -> dict:
        """Plain-JSON form for checkpoints."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "FieldConfig":
        """Inverse of :meth:`to_dict` (validates through the dataclasses)."""
        d = dict(d)
        d["grid"] = HashGridSpec(**d["grid"])
        return FieldConfig(**d)


def _mlp(n_in: int, hidden: int, n_hidden: int, n_out: int) -> nn.Sequential:
    layers, width = [], n_in
    for _ in range(n_hidden):
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class NGPField(nn.Module):
    """sigma, rgb = field(pos (M,3) in [0,1], dirs (M,3) unit); sigma (M,) >= 0, rgb (M,3) in (0,1)."""

    def __init__(self, config: FieldConfig = FieldConfig(),
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.config = config
        self.grid = ops.HashGrid(config.grid, generator=generator)
        self.density_net = _mlp(config.grid.out_dim, config.hidden, 1, config.geo_features)
        self.color_net = _mlp(config.geo_features + sh_dim(config.sh_degree)
                              + config.appearance_dim, config.hidden,
                              config.color_hidden_layers, 3)
        if config.appearance_dim > 0:
            if config.n_images < 1:
                raise ValueError("appearance_dim > 0 needs n_images >= 1")
            # zeros: every image starts with the appearance a held-out view gets (the mean)
            self.appearance = nn.Parameter(torch.zeros(config.n_images, config.appearance_dim))
        # weight of each hash level's features (coarse-to-fine training ramps them 0 -> 1);
        # a buffer, so checkpoints carry it and every renderer encodes alike
        self.register_buffer("level_weights", torch.ones(config.grid.n_levels))
        self._all_levels = True  # host-side copy of "every weight is 1" (no device sync)
        if generator is not None:
            # torch's default init draws from the global RNG; use ours for reproducibility
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    bound = 1.0 / m.in_features ** 0.5
                    with torch.no_grad():
                        m.weight.uniform_(-bound, bound, generator=generator)
                        m.bias.uniform_(-bound, bound, generator=generator)

    def density(self, pos: torch.Tensor,
                coherent: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """pos (M,3) in [0,1] -> sigma (M,), geometry features (M, geo_features); coherent:
        neighbouring points lie close together (``ops.hash_encode``), same values."""
        enc = self.grid(pos, coherent)
        if not self._all_levels:
            enc = enc * self.level_weights.repeat_interleave(self.config.grid.n_features)
        h = self.density_net(enc)                                       # [M, G]
        return trunc_exp(h[:, 0]), h

    def set_level_weights(self, weights: torch.Tensor) -> None:
        """Weights (L,) of the hash levels' features, a CPU tensor (coarse-to-fine schedule)."""
        self.level_weights.copy_(weights)
        self._all_levels = bool((weights >= 1).all())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's; checkpoints from before coarse-to-fine training get all levels on."""
        if "level_weights" not in state_dict:
            state_dict = dict(state_dict)
            state_dict["level_weights"] = torch.ones_like(self.level_weights)
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._all_levels = bool((state_dict["level_weights"] >= 1).all())
        return out

    def appearance_codes(self, image: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
        """Codes (n, appearance_dim) of training images `image` (n,) int, or the mean code
        (views that are not training images) when image is None; None without appearance."""
        if self.config.appearance_dim == 0:
            return None
        if image is None:
            return self.appearance.mean(0, keepdim=True).expand(n, -1)
        return self.appearance[image.long()]

    def forward(self, pos: torch.Tensor, dirs: torch.Tensor,
                image: Optional[torch.Tensor] = None,
                coherent: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """pos (M,3) in [0,1], dirs (M,3) unit, image (M,) training-image index of each
        sample or None (mean appearance) -> sigma (M,), rgb (M,3); coherent: see density."""
        sigma, h = self.density(pos, coherent)
        return sigma, self.colour(h, dirs, image)

    def colour(self, h: torch.Tensor, dirs: torch.Tensor,
               image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Geometry features h (M, geo_features) from :meth:`density`, dirs (M,3) unit, image
        (M,) or None (mean appearance) -> rgb (M,3) in (0,1)."""
        with profiling.stage(profiling.SH):
            sh = ops.sh_encode(dirs, self.config.sh_degree)             # [M, D^2]
        inputs = [h, sh]
        codes = self.appearance_codes(image, h.shape[0])
        if codes is not None:
            inputs.append(codes)
        return torch.sigmoid(self.color_net(torch.cat(inputs, dim=-1)))  # [M, 3]

    def mlp_parameters(self):
        """(weights, biases) of the MLPs: weight decay applies to the weights only."""
        weights, biases = [], []
        for net in (self.density_net, self.color_net):
            for name, p in net.named_parameters():
                (weights if name.endswith("weight") else biases).append(p)
        return weights, biases
