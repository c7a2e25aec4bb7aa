"""The one weight-initialisation helper: every method names its paper's (or code's) scheme in its config."""

from __future__ import annotations

import math

from torch import nn

INIT_SCHEMES = ("default", "dcgan", "tflib")


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


def init_tflib(module: nn.Module) -> None:
    """tflib's defaults (WGAN-GP's TF library): He-uniform conv/deconv with stride-aware fans,
    Glorot-uniform linear layers, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            s2 = m.stride[0] * m.stride[1]
            if isinstance(m, nn.Conv2d):
                fan_in, fan_out = m.in_channels * k, m.out_channels * k / s2
            else:
                fan_in, fan_out = m.in_channels * k / s2, m.out_channels * k
            std = math.sqrt(4.0 / (fan_in + fan_out))
        elif isinstance(m, nn.Linear):
            std = math.sqrt(2.0 / (m.in_features + m.out_features))
        else:
            continue
        nn.init.uniform_(m.weight, -std * math.sqrt(3.0), std * math.sqrt(3.0))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_glorot(layer: nn.Linear) -> None:
    """TF's default initialiser (Glorot uniform, zero bias), e.g. for a layer the official code leaves alone."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def initialize(module: nn.Module | None, scheme: str, std: float = 0.02) -> None:
    """Apply ``scheme``: 'default' (PyTorch's own), 'dcgan' (N(0, std)), 'tflib' (He/Glorot uniform)."""
    if module is None or scheme == "default":
        return
    if scheme == "dcgan":
        init_normal(module, std)
    elif scheme == "tflib":
        init_tflib(module)
    else:
        from genclust.errors import ConfigError

        raise ConfigError(f"unknown init scheme {scheme!r} ({' | '.join(INIT_SCHEMES)})")
