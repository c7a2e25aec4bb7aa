"""Small building blocks: MLPs, conv trunks and deconv generators built from shapes.

Each method composes its paper's architecture from these (citing the table in its module),
so the same code serves 8x8 digits, 28x28 MNIST and 32x32xC images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def activation(name: str, slope: float = 0.2) -> nn.Module:
    """'relu' | 'lrelu' | 'tanh' | 'sigmoid' | 'none' -> module."""
    name = name.lower()
    if name == "relu":
        return nn.ReLU()
    if name in ("lrelu", "leaky_relu"):
        return nn.LeakyReLU(slope)
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name in ("none", "linear", "identity"):
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


def mlp(dims: Sequence[int], act: str = "lrelu", batch_norm: bool = False, out_act: str = "none",
        layer_norm: bool = False) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ``act`` (and optional BN/LN) between them."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        last = i == len(dims) - 2
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            if layer_norm:
                layers.append(nn.LayerNorm(d_out))
            layers.append(activation(act))
    layers.append(activation(out_act))
    return nn.Sequential(*layers)


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Crop(nn.Module):
    """Crop the spatial map to ``size`` x ``size`` (top-left), e.g. 8x8 -> 7x7 in UDC's generator."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return x[..., : self.size, : self.size]


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN initialisation: N(0, std) weights, zero biases, BN gamma N(1, std)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def one_hot(labels: Tensor, k: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.nn.functional.one_hot(labels, k).to(dtype)
