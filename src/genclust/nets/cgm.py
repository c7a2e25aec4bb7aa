"""The Clustered Generator Model's generator G(y, z) (Zhu et al., §3.3), from the image shape and widths.

§3.3 describes "5 layers of convolution and 5 layers of deconvolution", 4x4 kernels, strides 1, 2, 2, 2, 2
for the convolutions and 2, 2, 2, 2, 1 for the deconvolutions, BN + ReLU, and a one-hot y of size 10 beside
a z of size 100 — for a model that has no encoder. Our reading: the *generator* is the deconvolution stack
(layers 6-10; the convolution half describes no network the model uses): the input [z, onehot(y)] is
projected by a linear layer to a ``channels[0] x s x s`` map (BN, ReLU), then 4x4 transposed convolutions
with stride 2 (BN, ReLU), each doubling the map, and a last 4x4 stride-1 transposed convolution to the
image's channels ("layer 10", cropped to the image size) with the output activation.

* 32x32xC (SVHN-like): s = 2 and four stride-2 layers (2 -> 4 -> 8 -> 16 -> 32): exactly 2, 2, 2, 2, 1.
* 28x28 (MNIST): 28 / 16 is not an integer; the variant uses s = 7 and two stride-2 layers (7 -> 14 -> 28),
  then the stride-1 layer (``channels`` then has 3 entries instead of 5).
* Any other side: as many stride-2 layers as divide the side (at most ``len(channels) - 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.blocks import Crop, Reshape, activation, mlp


def upsampling_plan(side: int, max_up: int) -> tuple[int, int]:
    """(start side s, number of stride-2 layers n) with s * 2^n = side, n as large as allowed."""
    for n in range(max_up, -1, -1):
        if side % (2**n) == 0:
            return side // (2**n), n
    raise ConfigError(f"cannot plan an upsampling to side {side}")  # pragma: no cover - n = 0 always works


class CGMGenerator(nn.Module):
    """Linear -> s x s map -> stride-2 4x4 deconvs (BN, ReLU) -> stride-1 4x4 deconv -> ``out_act``."""

    def __init__(self, in_dim: int, img_shape: Sequence[int], channels: Sequence[int] = (256, 128, 64, 32, 16),
                 batch_norm: bool = True, out_act: str = "tanh") -> None:
        super().__init__()
        if len(img_shape) != 3 or img_shape[1] != img_shape[2]:
            raise ConfigError(f"the CGM generator needs square [C, H, W] images, got {list(img_shape)}")
        c_out, side = int(img_shape[0]), int(img_shape[1])
        widths = [int(c) for c in channels]
        start, n_up = upsampling_plan(side, len(widths) - 1)
        widths = widths[: n_up + 1]  # the 28x28 variant uses the first three widths
        norm = (lambda c: [nn.BatchNorm2d(c)]) if batch_norm else (lambda c: [])
        layers: list[nn.Module] = [nn.Linear(int(in_dim), widths[0] * start * start), Reshape(widths[0], start, start),
                                   *norm(widths[0]), nn.ReLU()]
        for c_in, c_next in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_next, 4, 2, 1), *norm(c_next), nn.ReLU()]
        # stride 1, kernel 4, padding 1: side + 1 -> crop back to the image (an even kernel cannot be centred)
        layers += [nn.ConvTranspose2d(widths[-1], c_out, 4, 1, 1), Crop(side), activation(out_act)]
        self.net = nn.Sequential(*layers)
        self.plan = {"start": start, "stride2_layers": n_up, "widths": widths}

    def forward(self, yz: Tensor) -> Tensor:
        return self.net(yz)


def generator(in_dim: int, img_shape: Sequence[int], pixel_range: str = "tanh",
              channels: Sequence[int] = (256, 128, 64, 32, 16), batch_norm: bool = True,
              mlp_hidden: Sequence[int] = (256, 256)) -> nn.Module:
    """CGMGenerator for ``[C, H, W]`` images (tanh for [-1, 1] data, sigmoid for [0, 1]); for vector data
    ``[D]`` (not in the paper) an MLP with a linear output (vector sets are not rescaled)."""
    if len(img_shape) == 1:
        return mlp([int(in_dim), *[int(h) for h in mlp_hidden], int(img_shape[0])], act="relu", batch_norm=batch_norm)
    return CGMGenerator(in_dim, img_shape, channels, batch_norm, "tanh" if pixel_range == "tanh" else "sigmoid")


__all__ = ["CGMGenerator", "generator", "upsampling_plan"]
