"""DCGAN-style nets in ClusterGAN's layout (supplementary §6.2 tables; official TF code ``sudiptodip15/ClusterGAN``).

* :class:`ConvGenerator`: FC hidden layers, FC to the first ``s x s`` map, 4x4 stride-2 transposed convs
  (padding 1 = TF 'SAME'), each doubling the size; the start size is ``H / 2^len(channels)``
  (28 -> 7, 8 -> 2, 16 -> 4, 32 -> 8).
* :class:`ConvDiscriminator`: 4x4 stride-2 convs with LeakyReLU (28 -> 14 -> 7), FC hidden layers, a linear
  output of ``out_dim`` (1 for a critic, z size for an encoder); optional BN after every conv but the first.
* :class:`MLPNet`: FC hidden layers (Linear -> BN -> activation, the official order) and a linear output.
* :class:`BatchNormNoScale`: TF ``tc.layers.batch_norm`` defaults (learned shift, no scale, eps 1e-3).

``generator(...)`` / ``discriminator(...)`` pick the conv net for ``[C, H, W]`` images and the MLP for
vector data ``[D]``; configs hold them as ``_partial_`` factories (widths), the method passes the shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.blocks import LeakyReLU, Reshape, activation, conv_out_size

BN_EVAL_STATS = ("running", "batch")


class BatchNormNoScale(nn.Module):
    """Batch norm with a learned shift but no scale: TF ``tc.layers.batch_norm`` defaults (scale=False).

    Training uses batch statistics. In eval mode ``eval_stats='running'`` uses the running statistics
    (PyTorch's convention; ``sample(1)`` is well defined), ``'batch'`` keeps using the batch's own
    statistics, as the official ClusterGAN code does at inference (its ``is_training`` stays on).
    """

    def __init__(self, num_features: int, spatial: bool, eps: float = 1e-3, scale: bool = False,
                 eval_stats: str = "running") -> None:
        super().__init__()
        if eval_stats not in BN_EVAL_STATS:
            raise ConfigError(f"bn_eval_stats must be one of {BN_EVAL_STATS}, got {eval_stats!r}")
        bn = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        self.bn = bn(num_features, eps=eps, affine=scale)
        self.bias = None if scale else nn.Parameter(torch.zeros(num_features))
        self.spatial = spatial
        self.eval_stats = eval_stats

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.eval_stats == "batch":  # batch statistics, running ones untouched
            y = F.batch_norm(x, None, None, self.bn.weight, self.bn.bias, training=True, eps=self.bn.eps)
        else:
            y = self.bn(x)
        if self.bias is None:
            return y
        return y + (self.bias.view(1, -1, 1, 1) if self.spatial else self.bias)


def _norm(on: bool, features: int, spatial: bool, eps: float, scale: bool, eval_stats: str) -> list[nn.Module]:
    return [BatchNormNoScale(features, spatial, eps, scale, eval_stats)] if on else []


# 4x4/2 conv padding of the critic/encoder: 'same' = 1 (TF 'SAME', the paper's official code: 28 -> 14 -> 7);
# 'valid' = 0 (the zhampel PyTorch port: 28 -> 13 -> 5, about half the multiply-adds)
CONV_PADDINGS = {"same": 1, "valid": 0}


def _check_spatial(img_shape: Sequence[int], n_layers: int, what: str) -> int:
    c, h, w = img_shape
    if h != w:
        raise ConfigError(f"DCGAN conv nets need square images, got {h}x{w}")
    if n_layers < 1 or h % (2**n_layers):
        raise ConfigError(f"DCGAN {what}: {n_layers} stride-2 layers need H divisible by {2**n_layers}, got H={h}; "
                          f"change the {what}'s channels (method.nets.{what}.channels)")
    return h // (2**n_layers)


class ConvGenerator(nn.Module):
    """FC (``fc`` hidden) -> FC to ``channels[0] x s x s`` -> 4x4 stride-2 upconvs -> ``out_act``."""

    def __init__(self, in_dim: int, img_shape: Sequence[int], fc: Sequence[int], channels: Sequence[int],
                 act: str, out_act: nn.Module, bn: bool, bn_eps: float, bn_scale: bool, slope: float,
                 bn_eval_stats: str = "running") -> None:
        super().__init__()
        c_out = img_shape[0]
        s = _check_spatial(img_shape, len(channels), "generator")
        norm = dict(eps=bn_eps, scale=bn_scale, eval_stats=bn_eval_stats)
        layers: list[nn.Module] = []
        d = in_dim
        for h in fc:
            layers += [nn.Linear(d, h), *_norm(bn, h, False, **norm), activation(act, slope)]
            d = h
        layers += [nn.Linear(d, channels[0] * s * s), Reshape(channels[0], s, s),
                   *_norm(bn, channels[0], True, **norm), activation(act, slope)]
        for c_in, c_next in zip(channels[:-1], channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_next, 4, 2, 1), *_norm(bn, c_next, True, **norm),
                       activation(act, slope)]
        layers += [nn.ConvTranspose2d(channels[-1], c_out, 4, 2, 1), out_act]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ConvDiscriminator(nn.Module):
    """4x4 stride-2 convs + LeakyReLU (BN after all but the first when ``bn``), FC + LeakyReLU, linear head."""

    def __init__(self, img_shape: Sequence[int], channels: Sequence[int], fc: Sequence[int], out_dim: int,
                 slope: float, bn: bool, bn_eps: float, bn_scale: bool, bn_eval_stats: str = "running",
                 conv_padding: str = "same") -> None:
        super().__init__()
        if conv_padding not in CONV_PADDINGS:
            raise ConfigError(f"conv_padding must be one of {'|'.join(CONV_PADDINGS)}, got {conv_padding!r}")
        pad = CONV_PADDINGS[conv_padding]
        if pad:
            s = _check_spatial(img_shape, len(channels), "critic")
        else:  # 'valid': 28 -> 13 -> 5, no divisibility needed, but every conv must still see a 4x4 window
            s = img_shape[1]
            for _ in channels:
                s = conv_out_size(s, 4, 2, 0)
                if s < 1:
                    raise ConfigError(f"DCGAN critic: {len(channels)} unpadded 4x4/2 convs do not fit "
                                      f"H={img_shape[1]}; use fewer channels or conv_padding=same")
        layers: list[nn.Module] = []
        c = img_shape[0]
        for i, c_next in enumerate(channels):
            layers += [nn.Conv2d(c, c_next, 4, 2, pad), *_norm(bn and i > 0, c_next, True, bn_eps, bn_scale, bn_eval_stats),
                       LeakyReLU(slope)]
            c = c_next
        layers.append(nn.Flatten())
        d = c * s * s
        for h in fc:
            layers += [nn.Linear(d, h), LeakyReLU(slope)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class MLPNet(nn.Module):
    """FC hidden layers (Linear -> BN -> activation) and a linear head with an optional output activation
    (supplementary §6.2 synthetic / Pendigits tables; official ``pendigit/clus_wgan.py`` order)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, act: str, slope: float, bn: bool,
                 bn_eps: float, bn_scale: bool, out_act: nn.Module | None = None, bn_eval_stats: str = "running") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), *_norm(bn, h, False, bn_eps, bn_scale, bn_eval_stats), activation(act, slope)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, out_dim)
        self.out_act = out_act if out_act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.out_act(self.head(self.body(x.flatten(1))))


def out_activation(name: str, pixel_range: str) -> nn.Module:
    """'auto': sigmoid for [0, 1] data (ClusterGAN §6.2: 'Sigmoid' output), tanh for [-1, 1]."""
    if name == "auto":
        name = "tanh" if pixel_range == "tanh" else "sigmoid"
    return activation(name)


def generator(in_dim: int, img_shape: Sequence[int], pixel_range: str = "unit", out_act: str = "auto", fc: Sequence[int] = (1024,),
              channels: Sequence[int] = (128, 64), act: str = "relu", batch_norm: bool = True,
              mlp_hidden: Sequence[int] = (256, 256), bn_eps: float = 1e-3, bn_scale: bool = False,
              bn_eval_stats: str = "running", slope: float = 0.2) -> nn.Module:
    """ConvGenerator for ``[C, H, W]`` images, MLPNet for vector data ``[D]`` (same widths semantics)."""
    shape = [int(s) for s in img_shape]
    if len(shape) == 3:
        return ConvGenerator(int(in_dim), shape, list(fc), list(channels), act, out_activation(out_act, pixel_range),
                             bool(batch_norm),
                             float(bn_eps), bool(bn_scale), float(slope), bn_eval_stats)
    if len(shape) != 1:
        raise ConfigError(f"DCGAN nets need img_shape [C, H, W] or [D], got {shape}")
    return MLPNet(int(in_dim), list(mlp_hidden), math.prod(shape), act, float(slope), bool(batch_norm), float(bn_eps),
                  bool(bn_scale), out_activation(out_act, pixel_range), bn_eval_stats)


def discriminator(img_shape: Sequence[int], out_dim: int, channels: Sequence[int] = (64, 128),
                  fc: Sequence[int] = (1024,), batch_norm: bool = False, mlp_hidden: Sequence[int] = (256, 256),
                  mlp_batch_norm: bool = True, bn_eps: float = 1e-3, bn_scale: bool = False,
                  bn_eval_stats: str = "running", slope: float = 0.2, conv_padding: str = "same") -> nn.Module:
    """ConvDiscriminator for ``[C, H, W]`` images (critic: out_dim 1; encoder: z size), MLPNet for vectors."""
    shape = [int(s) for s in img_shape]
    if len(shape) == 3:
        return ConvDiscriminator(shape, list(channels), list(fc), int(out_dim), float(slope), bool(batch_norm),
                                 float(bn_eps), bool(bn_scale), bn_eval_stats, str(conv_padding))
    if len(shape) != 1:
        raise ConfigError(f"DCGAN nets need img_shape [C, H, W] or [D], got {shape}")
    return MLPNet(math.prod(shape), list(mlp_hidden), int(out_dim), "lrelu", float(slope), bool(mlp_batch_norm),
                  float(bn_eps), bool(bn_scale), None, bn_eval_stats)


__all__ = ["BatchNormNoScale", "ConvGenerator", "ConvDiscriminator", "MLPNet", "generator", "discriminator"]
