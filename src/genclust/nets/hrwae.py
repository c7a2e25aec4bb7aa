"""HRWAE-GAN's networks (thesis §3.1, Fig. 2): a hierarchical autoencoder with L latent groups and one
latent discriminator per group.

Encoder: N strided conv cells (:class:`~genclust.nets.autoencoder.ConvEncoder`, stride 2 and BN as §3.1.4 says;
the 4x4 kernels and LeakyReLU are ours) from the (padded) d x d image down to a 2 x 2 map, N = log2(d) - 1 (Eq. 7); its linear
head gives q(z_0 | x) = N(mu_0, diag exp(logvar_0)).

Decoder: the mirror (:class:`~genclust.nets.autoencoder.ConvDecoder`): z_0 -> 2 x 2 map -> N transposed-conv
cells. Group l >= 1 sits after decoder cell l - 1, at the map side 2^(l + 1), where three cells meet
(NVAE-style, thesis Fig. 2):

* the **encoder combiner** merges the encoder's map of that level with the decoder's top-down map and
  gives q(z_l | x, z_<l);
* the **prior cell** reads the decoder's map alone: p(z_l | z_<l) (trainable, §3.1.2);
* the **decoder combiner** feeds z_l back into the decoder's map.

Latents are vectors (one ``z_dims[l]``-sized vector per group), so every group can be clustered by UMAP /
HDBSCAN / a GMM (§3.2). The decoder's last cell has no BN and ends in ``out_act``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.autoencoder import ConvDecoder, ConvEncoder
from genclust.nets.blocks import mlp


def n_cells(side: int) -> int:
    """Eq. 7: N = log2(d) - 1 cells take a d x d image (d a power of two) to a 2 x 2 map."""
    n = math.log2(side)
    if n != int(n) or side < 4:
        raise ConfigError(f"HRWAE-GAN needs a power-of-two image side >= 4 (Eq. 7), got {side}: pad it "
                          f"(method.pad_to: auto)")
    return int(n) - 1


def gaussian_head(in_features: int, z_dim: int) -> nn.Linear:
    return nn.Linear(in_features, 2 * z_dim)  # mean and log-variance


@dataclass
class HierarchyOutput:
    """One pass: per group the sample, mean and log-variance of q; priors of groups >= 1; the maps of
    the levels that have a group >= 1 (encoder / decoder, for the layer-matching loss) and the image."""

    image: Tensor
    z: list[Tensor] = field(default_factory=list)
    mu: list[Tensor] = field(default_factory=list)
    logvar: list[Tensor] = field(default_factory=list)
    prior_mu: list[Tensor] = field(default_factory=list)      # groups 1..L-1
    prior_logvar: list[Tensor] = field(default_factory=list)
    enc_maps: list[Tensor] = field(default_factory=list)       # groups 1..L-1
    dec_maps: list[Tensor] = field(default_factory=list)


def reparameterize(mu: Tensor, logvar: Tensor, sample: bool) -> Tensor:
    """The reparameterisation trick (§3.3): mu + exp(logvar / 2) * eps (mu itself when not sampling)."""
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu


class HierarchicalAutoencoder(nn.Module):
    """Encoder, decoder and the per-group combiner / prior cells of HRWAE-GAN (module doc)."""

    def __init__(self, img_shape: Sequence[int], n_groups: int = 1, z_dims: Sequence[int] = (8, 8, 8),
                 channels: Sequence[int] = (32, 64, 128, 256, 512), batch_norm: bool = True,
                 out_act: str = "sigmoid", logvar_clamp: float = 10.0) -> None:
        super().__init__()
        side = int(img_shape[-1])
        n = n_cells(side)
        if not 1 <= int(n_groups) <= n:
            raise ConfigError(f"n_groups must be in [1, N = {n}] for a {side}x{side} image (thesis §3.1.2: L <= N), "
                              f"got {n_groups}")
        if len(channels) < n or len(z_dims) < n_groups:
            raise ConfigError(f"need {n} channel widths and {n_groups} z_dims, got {list(channels)}, {list(z_dims)}")
        widths = [int(w) for w in channels[:n]]
        self.n_groups, self.z_dims = int(n_groups), [int(d) for d in z_dims[: int(n_groups)]]
        self.logvar_clamp = float(logvar_clamp)
        self.encoder = ConvEncoder(img_shape, 2 * self.z_dims[0], widths, batch_norm=batch_norm)
        self.decoder = ConvDecoder(self.z_dims[0], img_shape, widths, batch_norm=batch_norm, out_act=out_act)
        self.enc_combiners, self.priors, self.dec_combiners = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for group in range(1, self.n_groups):
            width, s = widths[-1 - group], 2 ** (group + 1)  # the level after decoder cell group - 1
            zl = self.z_dims[group]
            self.enc_combiners.append(nn.Sequential(
                nn.Conv2d(2 * width, width, 3, 1, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                gaussian_head(width * s * s, zl)))
            self.priors.append(nn.Sequential(
                nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2), nn.Flatten(), gaussian_head(width * s * s, zl)))
            self.dec_combiners.append(DecoderCombiner(zl, width, s, batch_norm))

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = params.float().chunk(2, dim=1)
        return mu, logvar.clamp(-self.logvar_clamp, self.logvar_clamp)

    def forward(self, x: Tensor, sample: bool = True) -> HierarchyOutput:
        """Encode ``x`` and reconstruct it; ``sample=False`` takes every posterior's mean (read-outs)."""
        params, enc = self.encoder(x, features=True)
        mu, logvar = self._split(params)
        z = reparameterize(mu, logvar, sample)
        out = HierarchyOutput(image=x, z=[z], mu=[mu], logvar=[logvar])
        h = self.decoder.stem(z).reshape(len(z), *self.decoder.deep_shape)
        for i, cell in enumerate(self.decoder.cells):
            group = i  # after cell i - 1 comes group i (group 0 is above the first cell)
            if 1 <= group < self.n_groups:
                e = enc[len(enc) - 1 - group]
                out.enc_maps.append(e)
                out.dec_maps.append(h)
                q_mu, q_logvar = self._split(self.enc_combiners[group - 1](torch.cat([e, h], 1)))
                p_mu, p_logvar = self._split(self.priors[group - 1](h))
                zl = reparameterize(q_mu, q_logvar, sample)
                out.z.append(zl)
                out.mu.append(q_mu)
                out.logvar.append(q_logvar)
                out.prior_mu.append(p_mu)
                out.prior_logvar.append(p_logvar)
                h = self.dec_combiners[group - 1](h, zl)
            h = cell(h)
        out.image = h
        return out

    def decode_from_prior(self, z0: Tensor) -> Tensor:
        """Images from z_0 with every lower group drawn from its prior cell p(z_l | z_<l)."""
        h = self.decoder.stem(z0).reshape(len(z0), *self.decoder.deep_shape)
        for i, cell in enumerate(self.decoder.cells):
            if 1 <= i < self.n_groups:
                p_mu, p_logvar = self._split(self.priors[i - 1](h))
                h = self.dec_combiners[i - 1](h, reparameterize(p_mu, p_logvar, True))
            h = cell(h)
        return h

    def modules_of(self, part: str) -> list[nn.Module]:
        return {"encoder": [self.encoder, self.enc_combiners], "decoder": [self.decoder, self.dec_combiners],
                "priors": [self.priors]}[part]


class DecoderCombiner(nn.Module):
    """z_l -> a map of the decoder's level, concatenated with the decoder's map, mixed by a 1x1 conv."""

    def __init__(self, z_dim: int, width: int, side: int, batch_norm: bool) -> None:
        super().__init__()
        self.width, self.side = width, side
        self.lift = nn.Linear(z_dim, width * side * side)
        self.mix = nn.Sequential(nn.Conv2d(2 * width, width, 1, bias=not batch_norm),
                                 *([nn.BatchNorm2d(width)] if batch_norm else []), nn.ReLU())

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        lifted = F.relu(self.lift(z)).reshape(len(z), self.width, self.side, self.side)
        return self.mix(torch.cat([h, lifted.to(h.dtype)], 1))


def latent_discriminators(z_dims: Sequence[int], hidden: Sequence[int] = (512, 512, 512),
                          batch_norm: bool = True) -> nn.ModuleList:
    """One MLP critic per latent group, z_l -> one realism score (the relativistic pair loss is Eq. 3)."""
    return nn.ModuleList(mlp([int(d), *hidden, 1], act="lrelu", batch_norm=batch_norm) for d in z_dims)


def hierarchical_autoencoder(img_shape: Sequence[int], n_groups: int, out_act: str, **kw) -> HierarchicalAutoencoder:
    """Config factory (``method.nets.autoencoder``, ``_partial_``): widths etc. from the config."""
    return HierarchicalAutoencoder(img_shape, n_groups=n_groups, out_act=out_act, **kw)


__all__ = ["HierarchicalAutoencoder", "HierarchyOutput", "DecoderCombiner", "latent_discriminators",
           "hierarchical_autoencoder", "n_cells", "reparameterize"]
