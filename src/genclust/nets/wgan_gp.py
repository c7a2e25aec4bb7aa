"""WGAN-GP's MNIST nets (Gulrajani et al. [71], tflib ``gan_mnist.py``), as UDC builds on them (UDC paper
§IV-A, Fig. 2, DIM = 64 in the authors' code):

* :class:`WGANGPGenerator`: Linear(in -> 4*DIM*s*s) + ReLU -> Deconv5x5(4D -> 2D) + ReLU -> Deconv5x5(2D -> D)
  + ReLU -> Deconv5x5(D -> C) + ``out_act``; no normalisation layers.
* :class:`WGANGPTrunk` (critic and classifier): Conv5x5(C -> D) -> Conv5x5(D -> 2D) -> Conv5x5(2D -> 4D),
  LeakyReLU(0.2), no norm, then Linear(4D*s*s -> n_out).
* Stride 2 everywhere ("5x5 kernel and 2x2 stride"); the generator mirrors the trunk's map sizes
  (:func:`trunk_plan`) and crops where the mirror overshoots. That reproduces Fig. 2's rules: 28x28:
  28-14-7-4, G 4-8 *crop to 7* ("drop one pixel after the first deconvolutional layer")-14-28; 32x32:
  4-8-16-32 ("the first deconvolution outputs 8x8"); 16x16 (USPS): a 1x1 stride in the trunk's first conv
  and G's last deconv, 16-16-8-4. Our choice for 8x8 (sklearn digits, not in the paper): the 16x16 rule one
  level down, 8-8-4-2 with a 2x2 base map.
* Vector data (``img_shape = [D]``, UDC §IV-B's synthetic blobs): MLPs with ``hidden`` ReLU layers
  (512-512-512) and linear outputs.

``generator(...)`` / ``trunk(...)`` pick the conv net for ``[C, H, W]`` and the MLP for ``[D]``; configs
hold them as ``_partial_`` factories with the widths (``dim``, ``hidden``), the method passes the shapes.
Initialisation is the caller's (``genclust.nets.init.initialize(net, "tflib")``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.blocks import Crop, LeakyReLU, Reshape, activation, mlp


def trunk_plan(size: int) -> tuple[list[int], list[int]]:
    """Strides and map sizes of the 3-conv trunk for ``size`` x ``size`` images (Fig. 2's rules).

    First stride 1 for images of at most 16 pixels (USPS 16x16 in the paper; 8x8 digits ours), else 2.
    Returns ``(strides, sizes)`` with ``sizes[0] = size`` and ``sizes[3]`` the final map size.
    """
    strides = [1 if size <= 16 else 2, 2, 2]
    sizes = [size]
    for s in strides:
        sizes.append((sizes[-1] + 2 * 2 - 5) // s + 1)  # kernel 5, padding 2 ("same")
    return strides, sizes


def _square(img_shape: Sequence[int]) -> tuple[int, int]:
    c, h, w = (int(s) for s in img_shape)
    if h != w:
        raise ConfigError(f"WGAN-GP conv nets need square images, got {h}x{w}")
    return c, h


class WGANGPTrunk(nn.Module):
    """Critic / classifier: three 5x5 convs (DIM, 2 DIM, 4 DIM) with LeakyReLU(0.2), flatten, linear head."""

    def __init__(self, img_shape: Sequence[int], n_out: int, dim: int = 64) -> None:
        super().__init__()
        channels, size = _square(img_shape)
        strides, sizes = trunk_plan(size)
        widths = [channels, dim, 2 * dim, 4 * dim]
        layers: list[nn.Module] = []
        for c_in, c_out, s in zip(widths[:-1], widths[1:], strides):
            layers += [nn.Conv2d(c_in, c_out, 5, stride=s, padding=2), LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(4 * dim * sizes[-1] ** 2, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class WGANGPGenerator(nn.Module):
    """G: linear to a 4 DIM x s x s map, three 5x5 deconvs mirroring the trunk (crop on overshoot)."""

    def __init__(self, in_dim: int, img_shape: Sequence[int], dim: int = 64, out_act: str = "sigmoid") -> None:
        super().__init__()
        channels, size = _square(img_shape)
        strides, sizes = trunk_plan(size)
        widths = [4 * dim, 2 * dim, dim, channels]
        base = sizes[-1]
        layers: list[nn.Module] = [nn.Linear(in_dim, 4 * dim * base * base), nn.ReLU(), Reshape(4 * dim, base, base)]
        cur = base
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            s = strides[::-1][i]
            target = sizes[::-1][i + 1]
            layers.append(nn.ConvTranspose2d(c_in, c_out, 5, stride=s, padding=2, output_padding=s - 1))
            cur = cur * s
            if cur != target:  # 28x28: 8 -> 7 after the first deconv (Fig. 2)
                if cur < target:
                    raise ConfigError(f"WGAN-GP generator cannot reach {size}x{size} images")
                layers.append(Crop(target))
                cur = target
            if i < 2:
                layers.append(nn.ReLU())
        layers.append(activation(out_act))
        self.net = nn.Sequential(*layers)

    def forward(self, yz: Tensor) -> Tensor:
        return self.net(yz)


def _check(img_shape: Sequence[int]) -> None:
    if len(img_shape) not in (1, 3):
        raise ConfigError(f"WGAN-GP nets support img_shape [D] or [C, H, W], got {list(img_shape)}")


def generator(in_dim: int, img_shape: Sequence[int], out_act: str = "sigmoid", dim: int = 64,
              hidden: Sequence[int] = (512, 512, 512)) -> nn.Module:
    """G for ``[C, H, W]`` images (deconv, width ``dim``) or ``[D]`` vectors (ReLU MLP ``hidden``, ``out_act``)."""
    _check(img_shape)
    if len(img_shape) == 1:
        return mlp([int(in_dim), *(int(h) for h in hidden), int(img_shape[0])], act="relu", out_act=out_act)
    return WGANGPGenerator(int(in_dim), img_shape, int(dim), out_act)


def trunk(img_shape: Sequence[int], n_out: int, dim: int = 64, hidden: Sequence[int] = (512, 512, 512)) -> nn.Module:
    """Critic / classifier for ``[C, H, W]`` images (conv trunk, width ``dim``) or ``[D]`` vectors (ReLU MLP)."""
    _check(img_shape)
    if len(img_shape) == 1:
        return mlp([int(img_shape[0]), *(int(h) for h in hidden), int(n_out)], act="relu")
    return WGANGPTrunk(img_shape, int(n_out), int(dim))
