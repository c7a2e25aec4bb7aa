"""HC-MGAN's networks (paper supplementary, Table 2; authors' code ``models/models_28x28.py``).

* :class:`Generator`: z -> FC -> (H/4 x H/4 x g) + ReLU -> deconv 4x4/2 (g/2) + ReLU -> deconv 4x4/2 (C),
  then tanh for [-1, 1] data (the paper's) or a sigmoid for [0, 1] data (``pixel_range``). The paper's
  28x28 rule is FC -> 7x7x128 -> 64 -> 1 (``g_channels=128``); the authors' code uses 256 -> 128. The same
  rule gives 8x8x g for 32x32 sets and 2x2x g for 8x8 digits.
* :class:`Critic`: the discriminator/classifier of one game: a shared trunk of three conv 5x5/2 (pad 2)
  with 128/256/512 maps, each followed by LayerNorm over (C, H, W) and LeakyReLU(0.2); D head
  Linear(features, 1), C head Linear(features, 2). Only D's loss trains the trunk (code ``utils/others.py``
  L90-98, ``models/gan.py`` L121-134; supplementary "Architecture").
* :class:`SplitMember`: trunk + classifier head, what the tree keeps of a split to cluster new data.
* vector data (img_shape of length 1): MLPs of the same roles (our addition; the paper only has images).

Every net records its constructor arguments in ``arch`` (plain Python values, with ``_target_``), so the
tree rebuilds its nets from its saved state alone (:func:`from_arch`; checkpoints load with ``weights_only``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.blocks import Reshape, activation, conv_out_size, mlp

OUT_ACT = {"tanh": "tanh", "unit": "sigmoid"}  # the generator's last activation per pixel range


def check_shape(img_shape: Sequence[int]) -> list[int]:
    shape = [int(s) for s in img_shape]
    if len(shape) == 1:
        return shape
    if len(shape) != 3:
        raise ConfigError(f"hc_mgan: img_shape must be [D] or [C, H, W], got {shape}")
    _, h, w = shape
    if h != w or h % 4 != 0:
        raise ConfigError(f"hc_mgan: images must be square with a side divisible by 4 (8, 16, 28, 32), got {shape}")
    return shape


def _arch(cls: type, **kwargs: Any) -> dict[str, Any]:
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **kwargs}


def from_arch(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a net from its ``arch`` (a class of this module or any class that records one)."""
    module, _, name = str(arch["_target_"]).rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{k: v for k, v in arch.items() if k != "_target_"})


class Generator(nn.Sequential):
    """z [N, z_dim] -> images [N, *img_shape] (a Sequential: its state_dict keys are the layer indices)."""

    def __init__(self, z_dim: int, img_shape: Sequence[int], pixel_range: str = "tanh", g_channels: int = 128,
                 mlp_hidden: int = 256) -> None:
        shape = check_shape(img_shape)
        if pixel_range not in OUT_ACT:
            raise ConfigError(f"hc_mgan: pixel_range must be one of {sorted(OUT_ACT)}, got {pixel_range!r}")
        z, g, h = int(z_dim), int(g_channels), int(mlp_hidden)
        if len(shape) == 1:  # vector data: no pixel range to squash into
            layers = list(mlp([z, h, h, shape[0]], act="relu"))
        else:
            if g < 2:
                raise ConfigError("hc_mgan: g_channels must be >= 2 (Table 2)")
            c, side, _ = shape
            base = side // 4
            layers = [nn.Linear(z, base * base * g), nn.ReLU(), Reshape(g, base, base),
                      nn.ConvTranspose2d(g, g // 2, 4, 2, 1), nn.ReLU(),
                      nn.ConvTranspose2d(g // 2, c, 4, 2, 1), activation(OUT_ACT[pixel_range])]
        super().__init__(*layers)
        self.arch = _arch(Generator, z_dim=z, img_shape=shape, pixel_range=pixel_range, g_channels=g, mlp_hidden=h)


def trunk(img_shape: Sequence[int], d_channels: Sequence[int], mlp_hidden: int) -> tuple[nn.Module, int]:
    """The conv stack shared by D and C; returns (module, number of output features)."""
    shape = check_shape(img_shape)
    if len(shape) == 1:
        h = int(mlp_hidden)
        return nn.Sequential(nn.Linear(shape[0], h), nn.LayerNorm(h), nn.LeakyReLU(0.2),
                             nn.Linear(h, h), nn.LayerNorm(h), nn.LeakyReLU(0.2)), h
    if len(d_channels) != 3:
        raise ConfigError("hc_mgan: d_channels needs 3 entries (Table 2)")
    c_in, side, _ = shape
    layers: list[nn.Module] = []
    for c_out in d_channels:
        side = conv_out_size(side, 5, 2, 2)
        layers += [nn.Conv2d(c_in, int(c_out), 5, 2, 2), nn.LayerNorm([int(c_out), side, side]), nn.LeakyReLU(0.2)]
        c_in = int(c_out)
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), c_in * side * side


class SplitMember(nn.Module):
    """trunk + classifier head; ``forward`` gives the logits [N, 2] of (first child, second child)."""

    def __init__(self, img_shape: Sequence[int], d_channels: Sequence[int] = (128, 256, 512),
                 mlp_hidden: int = 256) -> None:
        super().__init__()
        self.trunk, n_feat = trunk(img_shape, d_channels, mlp_hidden)
        self.c_head = nn.Linear(n_feat, 2)
        self.arch = _arch(SplitMember, img_shape=check_shape(img_shape), d_channels=[int(c) for c in d_channels],
                          mlp_hidden=int(mlp_hidden))

    def forward(self, x: Tensor) -> Tensor:
        return self.c_head(self.trunk(x))


class Critic(nn.Module):
    """D and C of one game: a shared trunk with a discriminator head (1 logit) and a classifier head (2)."""

    def __init__(self, img_shape: Sequence[int], d_channels: Sequence[int] = (128, 256, 512),
                 mlp_hidden: int = 256) -> None:
        super().__init__()
        self.member_arch = _arch(SplitMember, img_shape=check_shape(img_shape), d_channels=[int(c) for c in d_channels],
                                 mlp_hidden=int(mlp_hidden))
        self.trunk, n_feat = trunk(img_shape, d_channels, mlp_hidden)
        self.d_head = nn.Linear(n_feat, 1)
        self.c_head = nn.Linear(n_feat, 2)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """D's optimizer owns the shared trunk and D's head."""
        return list(self.trunk.parameters()) + list(self.d_head.parameters())

    def classifier(self) -> SplitMember:
        """A standalone copy of trunk + classifier head (what the tree keeps to cluster new data)."""
        member = from_arch(self.member_arch).to(self.c_head.weight.device)
        member.trunk.load_state_dict(self.trunk.state_dict())
        member.c_head.load_state_dict(self.c_head.state_dict())
        return member


def generator(z_dim: int, img_shape: Sequence[int], pixel_range: str = "tanh", g_channels: int = 128,
              mlp_hidden: int = 256) -> Generator:
    """Config factory (``method.nets.generator``): the method supplies z_dim, img_shape and pixel_range."""
    return Generator(z_dim, img_shape, pixel_range, g_channels, mlp_hidden)


def critic(img_shape: Sequence[int], d_channels: Sequence[int] = (128, 256, 512), mlp_hidden: int = 256) -> Critic:
    """Config factory (``method.nets.critic``): trunk + D head + C head; the method supplies img_shape."""
    return Critic(img_shape, d_channels, mlp_hidden)


__all__ = ["Critic", "Generator", "SplitMember", "check_shape", "critic", "from_arch", "generator", "trunk"]
