"""A convolutional encoder/decoder pair for autoencoder methods (HRWAE-GAN's cells, §3.1 of its thesis).

Both are built from the image shape ``(C, H, W)`` and the per-level widths ``channels``:

* :class:`ConvEncoder`: ``len(channels)`` strided cells, each conv 4x4 / stride 2 (padding 1) -> BN -> LeakyReLU,
  halving the map (32 -> 16 -> 8 -> 4); a linear head maps the deepest map to ``out_dim`` (e.g. the
  mean and log-variance of z_0). ``forward(x, features=True)`` also returns every level's map, top
  (largest) first: a hierarchical model's combiner cells read them.
* :class:`ConvDecoder`: the mirror: linear to the deepest map, ``len(channels)`` transposed-conv cells
  (4x4 / stride 2) -> BN -> ReLU, doubling the map, the last one to ``C`` channels with ``out_act``.
  ``forward(z, features=True)`` returns the intermediate maps too, deepest first.

Sides must be divisible by ``2 ** len(channels)`` (8x8: up to 3 cells; 28x28: 2 cells, 28 -> 14 -> 7;
32x32: up to 5). Sets whose side is not (a 28x28 set with 3+ cells) are padded by the method, not here.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.blocks import activation


def _levels(img_shape: Sequence[int], n_cells: int) -> list[int]:
    if len(img_shape) != 3 or img_shape[1] != img_shape[2]:
        raise ConfigError(f"conv autoencoder nets need square [C, H, W] images, got {list(img_shape)}")
    side = int(img_shape[1])
    if n_cells < 1 or side % (2**n_cells):
        raise ConfigError(f"{n_cells} stride-2 cells need a side divisible by {2**n_cells}, got {side}")
    return [side // 2**i for i in range(n_cells + 1)]  # map side after 0..n cells


class ConvEncoder(nn.Module):
    """Strided conv cells (conv 4x4/2 -> BN -> LeakyReLU) and a linear head on the deepest map."""

    def __init__(self, img_shape: Sequence[int], out_dim: int, channels: Sequence[int] = (32, 64, 128),
                 batch_norm: bool = True, slope: float = 0.2) -> None:
        super().__init__()
        sides = _levels(img_shape, len(channels))
        c = int(img_shape[0])
        self.cells = nn.ModuleList()
        for c_next in channels:
            self.cells.append(nn.Sequential(nn.Conv2d(c, c_next, 4, 2, 1, bias=not batch_norm),
                                            *([nn.BatchNorm2d(c_next)] if batch_norm else []), nn.LeakyReLU(slope)))
            c = c_next
        self.deep_shape = (c, sides[-1], sides[-1])
        self.head = nn.Linear(c * sides[-1] ** 2, int(out_dim))

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        maps = []
        for cell in self.cells:
            x = cell(x)
            maps.append(x)
        out = self.head(x.flatten(1))
        return (out, maps) if features else out


class ConvDecoder(nn.Module):
    """Linear to the deepest map, transposed-conv cells (4x4/2 -> BN -> ReLU), the last to C channels."""

    def __init__(self, in_dim: int, img_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128),
                 batch_norm: bool = True, out_act: str = "sigmoid") -> None:
        super().__init__()
        sides = _levels(img_shape, len(channels))
        widths = list(channels)[::-1]  # deepest first: 128, 64, 32
        self.deep_shape = (widths[0], sides[-1], sides[-1])
        self.stem = nn.Sequential(nn.Linear(int(in_dim), widths[0] * sides[-1] ** 2), nn.ReLU())
        self.cells = nn.ModuleList()
        for c_in, c_out in zip(widths, [*widths[1:], int(img_shape[0])]):
            last = c_out == int(img_shape[0]) and len(self.cells) == len(widths) - 1
            layers: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=last or not batch_norm)]
            layers += [activation(out_act)] if last else [*([nn.BatchNorm2d(c_out)] if batch_norm else []), nn.ReLU()]
            self.cells.append(nn.Sequential(*layers))

    def forward(self, z: Tensor, features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        x = self.stem(z).reshape(len(z), *self.deep_shape)
        maps = []
        for cell in self.cells:
            maps.append(x)
            x = cell(x)
        return (x, maps) if features else x


__all__ = ["ConvEncoder", "ConvDecoder"]
