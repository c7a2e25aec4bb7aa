"""ClusterGAN (Mukherjee et al., AAAI 2019): clustering in the latent space of a WGAN-GP.

The game (paper §2.3, §3, Algorithm 2; supplementary §6.2; official TF code
``sudiptodip15/ClusterGAN``, see ``shared/anchors/peers.md`` §3.2):

* prior ``z = (z_n, z_c)``: ``z_n ~ N(0, sigma^2 I)`` with sigma = 0.10 (§2.3), ``z_c`` a uniform one-hot
  over the K clusters;
* generator ``G(z)``, WGAN-GP critic ``D`` (gradient penalty 10), encoder ``E(x) -> (z_n_hat, z_c logits)``;
* 5 critic updates per generator update, each with a fresh real batch and a fresh z (official
  ``Image_ClusterGAN.py`` L110-115); Adam(1e-4, betas 0.5/0.9) for D and jointly for G+E (§6.2);
* G and E minimise ``-D(G(z)) + beta_n * ||z_n - E(G(z))_n||^2 + beta_c * CE(z_c, E(G(z))_c)``
  (Algorithm 2). The squared error is a mean over batch *and* dimensions, as in the official code.

Clustering new data (``clustering`` / ``inference``):

* ``clustering=argmax`` (default): ``cluster_probs = softmax(E(x)_c)``;
* ``clustering=kmeans_latent``: k-means on ``[z_n_hat, softmax(z_c logits)]`` of the fit set (only the
  softmax part when ``beta_n == 0``), as the official evaluation does (``Image_ClusterGAN.py`` L213-256);
  the centers are buffers, so saved models assign new data; soft probs = softmax(-d^2 / (T * s)), s the
  fit's mean squared distance to the own center;
* ``inference=backprop``: Algorithm 1 (no encoder needed): K restarts with ``z_c = e_k`` fixed, Adam on
  ``z_n`` for ``mean|G(z) - x| + lambda * mean(z_n^2)``, clipping ``z_n`` to [-0.6, 0.6]; the restart with the
  lowest loss wins (probs = softmax of the negative losses / ``bp_temperature``). Batched over points and
  restarts.

Training layout: every loader batch (``batch_size`` real examples) is one critic step; every
``n_critic``-th critic step is followed by one generator+encoder step on a fresh z. Generator steps are
counted in the ``gen_steps`` buffer (Lightning's ``global_step`` counts every optimizer step).

Deviations from paper + official code are config options, named as such (see configs/method/clustergan.yaml):
``sigma=0.75``, ``n_critic=1``, ``g_act=lrelu`` are the zhampel port's choices; ``gp_every``, ``lr``,
``precision``, ``channels_last`` are CPU-budget engineering knobs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.losses import gradient_penalty
from genclust.methods.base import ClusteringMethod
from genclust.nets.blocks import Reshape, activation, init_normal
from genclust.precision import use_bf16

CLUSTERING_MODES = ("argmax", "kmeans_latent")
# Paper + official-code values of the knobs a budget or port variant changes (describe() lists deviations).
PAPER_SETTINGS = {"sigma": 0.10, "n_critic": 5, "lr": 1e-4, "lr_critic": None, "betas": [0.5, 0.9], "batch_size": 64,
                  "gp_weight": 10.0, "gp_every": 1, "gp_per_sample_alpha": False, "weight_decay": 0.0,
                  "precision": "32", "zn_unit_scale": False, "ema_decay": 0.0}
INFERENCE_MODES = ("encoder", "backprop")


# --------------------------------------------------------------------------------------------- nets
class BatchNormNoScale(nn.Module):
    """Batch norm with a learned shift but no scale: TF ``tc.layers.batch_norm`` defaults (scale=False).

    Training uses batch statistics (as the official code always does); eval mode uses running
    statistics, so ``sample(1)`` and single-mode grids are well defined.
    """

    def __init__(self, num_features: int, spatial: bool, eps: float = 1e-3, scale: bool = False) -> None:
        super().__init__()
        bn = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        self.bn = bn(num_features, eps=eps, affine=scale)
        self.bias = None if scale else nn.Parameter(torch.zeros(num_features))
        self.spatial = spatial

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(x)
        if self.bias is None:
            return y
        return y + (self.bias.view(1, -1, 1, 1) if self.spatial else self.bias)


def _norm(kind: bool, features: int, spatial: bool, eps: float, scale: bool) -> list[nn.Module]:
    return [BatchNormNoScale(features, spatial, eps, scale)] if kind else []


def out_activation(name: str, pixel_range: str) -> nn.Module:
    """'auto': sigmoid for [0, 1] data (paper: 'Sigmoid' output), tanh for [-1, 1]."""
    if name == "auto":
        name = "tanh" if pixel_range == "tanh" else "sigmoid"
    return activation(name)


def _check_spatial(img_shape: Sequence[int], n_layers: int, what: str) -> int:
    c, h, w = img_shape
    if h != w:
        raise ConfigError(f"ClusterGAN conv nets need square images, got {h}x{w}")
    if n_layers < 1 or h % (2**n_layers):
        raise ConfigError(
            f"ClusterGAN {what}: {n_layers} stride-2 layers need H divisible by {2**n_layers}, got H={h}; "
            f"change method.{'g_channels' if what == 'generator' else 'd_channels'}"
        )
    return h // (2**n_layers)


class ConvGenerator(nn.Module):
    """Supplementary §6.2, MNIST table: FC1024-BN-ReLU, FC (s*s*c0)-BN-ReLU, k4 s2 upconvs, sigmoid.

    Generalised by shapes: ``g_channels = [c0, c1, ...]`` are the channels of the spatial maps, each
    4x4 stride-2 transposed conv (padding 1, TF 'SAME') doubles the size; the start size is
    ``H / 2^len(g_channels)`` (28 -> 7, 8 -> 2, 16 -> 4, 32 -> 8). ``g_fc=[]`` gives the CIFAR/Coil
    table's layout (FC straight to the first map).
    """

    def __init__(self, z_dim: int, img_shape: Sequence[int], fc: Sequence[int], channels: Sequence[int],
                 act: str, out_act: nn.Module, bn: bool, bn_eps: float, bn_scale: bool, slope: float) -> None:
        super().__init__()
        c_out = img_shape[0]
        s = _check_spatial(img_shape, len(channels), "generator")
        layers: list[nn.Module] = []
        d = z_dim
        for h in fc:
            layers += [nn.Linear(d, h), *_norm(bn, h, False, bn_eps, bn_scale), activation(act, slope)]
            d = h
        layers += [nn.Linear(d, channels[0] * s * s), Reshape(channels[0], s, s),
                   *_norm(bn, channels[0], True, bn_eps, bn_scale), activation(act, slope)]
        for c_in, c_next in zip(channels[:-1], channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_next, 4, 2, 1), *_norm(bn, c_next, True, bn_eps, bn_scale),
                       activation(act, slope)]
        layers += [nn.ConvTranspose2d(channels[-1], c_out, 4, 2, 1), out_act]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ConvTrunk(nn.Module):
    """D / E of supplementary §6.2 (MNIST table): 4x4 stride-2 convs (padding 1 = TF 'SAME': 28->14->7)
    with LeakyReLU, FC hidden layers with LeakyReLU, then a linear FC output. ``bn`` adds batch norm
    after every conv but the first (CIFAR/Coil table); the MNIST D/E have none."""

    def __init__(self, img_shape: Sequence[int], channels: Sequence[int], fc: Sequence[int], out_dim: int,
                 slope: float, bn: bool, bn_eps: float, bn_scale: bool) -> None:
        super().__init__()
        s = _check_spatial(img_shape, len(channels), "critic/encoder")
        layers: list[nn.Module] = []
        c = img_shape[0]
        for i, c_next in enumerate(channels):
            layers += [nn.Conv2d(c, c_next, 4, 2, 1), *_norm(bn and i > 0, c_next, True, bn_eps, bn_scale),
                       nn.LeakyReLU(slope)]
            c = c_next
        layers.append(nn.Flatten())
        d = c * s * s
        for h in fc:
            layers += [nn.Linear(d, h), nn.LeakyReLU(slope)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class MLPNet(nn.Module):
    """Supplementary §6.2, synthetic / Pendigits tables: FC 256 LReLU BN, FC 256 LReLU BN, FC out
    (official order Linear -> BN -> LReLU, ``pendigit/clus_wgan.py``)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, act: str, slope: float, bn: bool,
                 bn_eps: float, bn_scale: bool, out_act: nn.Module | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), *_norm(bn, h, False, bn_eps, bn_scale), activation(act, slope)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, out_dim)
        self.out_act = out_act if out_act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.out_act(self.head(self.body(x.flatten(1))))


def _frozen_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` that no optimizer owns (weight average for inference)."""
    twin = copy.deepcopy(net)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def _glorot_last(layer: nn.Linear) -> None:
    """TF's default initialiser (Glorot uniform, zero bias) for the un-initialised last FC of D and E."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


# ------------------------------------------------------------------------------------------ method
class ClusterGAN(ClusteringMethod):
    """ClusterGAN: WGAN-GP with a one-hot + Gaussian prior and a jointly trained inverse encoder."""

    generative = True

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        batch_size: int = 64,
        pixel_range: str = "unit",
        # prior and losses
        latent_dim: int = 30,
        sigma: float = 0.10,
        beta_n: float = 10.0,
        beta_c: float = 10.0,
        gp_weight: float = 10.0,
        gp_per_sample_alpha: bool = False,
        gp_every: int = 1,
        n_critic: int = 5,
        # optimisation
        lr: float = 1e-4,
        lr_critic: float | None = None,
        betas: Sequence[float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        # architecture
        arch: str = "auto",
        g_fc: Sequence[int] = (1024,),
        g_channels: Sequence[int] = (128, 64),
        d_channels: Sequence[int] = (64, 128),
        d_fc: Sequence[int] = (1024,),
        conv_bn: bool = False,
        mlp_hidden: Sequence[int] = (256, 256),
        mlp_bn: Sequence[str] = ("generator", "encoder", "critic"),
        g_act: str = "relu",
        g_out_act: str = "auto",
        lrelu_slope: float = 0.2,
        g_bn: bool = True,
        bn_eps: float = 1e-3,
        bn_scale: bool = False,
        init_std: float = 0.02,
        init_last: str = "glorot",
        use_encoder: bool = True,
        zn_unit_scale: bool = False,
        # clustering
        clustering: str = "argmax",
        inference: str = "encoder",
        kmeans_n_init: int = 10,
        kmeans_temperature: float = 1.0,
        kmeans_seed: int = 0,
        kmeans_at_end: bool = True,
        bp_iters: int = 5000,
        bp_lr: float = 0.01,
        bp_lambda: float = 10.0,
        bp_clip: float = 0.6,
        bp_batch_size: int = 256,
        bp_temperature: float = 0.01,
        # engineering
        precision: str = "32",
        channels_last: bool = False,
        fused_adam: bool = True,
        ema_decay: float = 0.0,
        divergence_check_every: int = 50,
    ) -> None:
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every)
        self.save_hyperparameters()
        if clustering not in CLUSTERING_MODES:
            raise ConfigError(f"clustering must be one of {CLUSTERING_MODES}, got {clustering!r}")
        if inference not in INFERENCE_MODES:
            raise ConfigError(f"inference must be one of {INFERENCE_MODES}, got {inference!r}")
        if inference == "encoder" and not use_encoder:
            raise ConfigError("inference=encoder needs use_encoder=true (use inference=backprop without encoder)")
        if int(n_critic) < 1 or int(gp_every) < 1:
            raise ConfigError(f"n_critic and gp_every must be >= 1, got {n_critic}, {gp_every}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if precision not in ("32", "bf16"):
            raise ConfigError(f"precision must be '32' or 'bf16', got {precision!r}")
        if init_last not in ("glorot", "normal"):
            raise ConfigError(f"init_last must be 'glorot' or 'normal', got {init_last!r}")
        if arch == "auto":
            arch = "mlp" if len(self.img_shape) == 1 else "conv"
        if arch not in ("conv", "mlp"):
            raise ConfigError(f"arch must be auto|conv|mlp, got {arch!r}")
        if arch == "conv" and len(self.img_shape) != 3:
            raise ConfigError(f"arch=conv needs [C, H, W] images, got img_shape {list(self.img_shape)}")
        self.arch = arch
        self.latent_dim = int(latent_dim)
        self.z_dim = self.latent_dim + self.n_clusters
        self.sigma = float(sigma)
        self.n_critic = int(n_critic)
        self.gp_every = int(gp_every)
        self.clustering = clustering
        self.inference = inference
        self.use_encoder = bool(use_encoder)
        slope = float(lrelu_slope)
        out_act = out_activation(g_out_act, pixel_range)
        if arch == "conv":
            self.generator = ConvGenerator(self.z_dim, self.img_shape, list(g_fc), list(g_channels), g_act,
                                           out_act, bool(g_bn), float(bn_eps), bool(bn_scale), slope)
            self.critic = ConvTrunk(self.img_shape, list(d_channels), list(d_fc), 1, slope, bool(conv_bn),
                                    float(bn_eps), bool(bn_scale))
            self.encoder = (ConvTrunk(self.img_shape, list(d_channels), list(d_fc), self.z_dim, slope,
                                      bool(conv_bn), float(bn_eps), bool(bn_scale)) if self.use_encoder else None)
        else:
            dim = int(math.prod(self.img_shape))
            bn_in = {str(s) for s in mlp_bn}
            unknown = bn_in - {"generator", "encoder", "critic"}
            if unknown:
                raise ConfigError(f"mlp_bn entries must be generator/encoder/critic, got {sorted(unknown)}")
            self.generator = MLPNet(self.z_dim, list(mlp_hidden), dim, g_act, slope, "generator" in bn_in,
                                    float(bn_eps), bool(bn_scale), out_act)
            self.critic = MLPNet(dim, list(mlp_hidden), 1, "lrelu", slope, "critic" in bn_in, float(bn_eps),
                                 bool(bn_scale))
            self.encoder = (MLPNet(dim, list(mlp_hidden), self.z_dim, "lrelu", slope, "encoder" in bn_in,
                                   float(bn_eps), bool(bn_scale)) if self.use_encoder else None)
        for net in (self.generator, self.critic, self.encoder):
            if net is not None:
                init_normal(net, float(init_std))
        if init_last == "glorot":  # official: last FC of D and E has no initializer -> TF Glorot
            _glorot_last(self.critic.head)
            if self.encoder is not None:
                _glorot_last(self.encoder.head)
        if channels_last and arch == "conv":
            self.to(memory_format=torch.channels_last)
        # A critic with batch norm (MLP tables) sees real and fake batches in separate calls, as in the
        # official code; without it one concatenated forward is the same computation, faster.
        # zn_unit_scale: G reads z_n / sigma and E's z_n head predicts in units of sigma (its output is
        # multiplied by sigma before the loss). Same model class, prior and losses; only the parametrisation
        # (and so Adam's per-weight step sizes and the init) of the z_n weights changes.
        self.zn_unit_scale = bool(zn_unit_scale)
        g_in = torch.ones(self.z_dim)
        g_in[: self.latent_dim] = 1.0 / self.sigma
        e_out = torch.ones(self.z_dim)
        e_out[: self.latent_dim] = self.sigma
        self.register_buffer("_g_in_scale", g_in, persistent=False)
        self.register_buffer("_e_out_scale", e_out, persistent=False)
        # Weight averaging (EMA) of G and E for inference: clustering, samples, Algorithm 1. Training
        # uses the raw weights; the averaged copies only follow them (see configs/method/clustergan.yaml).
        self.ema_decay = float(ema_decay)
        self.generator_ema = _frozen_copy(self.generator) if self.ema_decay > 0 else None
        self.encoder_ema = _frozen_copy(self.encoder) if self.ema_decay > 0 and self.encoder else None
        self._critic_has_bn = any(isinstance(m, BatchNormNoScale) for m in self.critic.modules())
        self.register_buffer("gen_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("critic_steps", torch.zeros((), dtype=torch.long))
        # k-means on the latent (clustering=kmeans_latent): centers, temperature scale, gen step of the fit
        self.register_buffer("kmeans_centers", torch.zeros(self.n_clusters, self._latent_features()))
        self.register_buffer("kmeans_scale", torch.ones(()))
        self.register_buffer("kmeans_fitted_at", torch.full((), -1, dtype=torch.long))
        self._critic_calls = 0
        self._gp_calls = 0
        self._kmeans_fit_size = 0

    # --------------------------------------------------------------------------------- prior
    def sample_z(self, n: int, cluster: Tensor | int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(z [n, d_n + K], z_n [n, d_n], cluster ids [n]): z_n ~ N(0, sigma^2), z_c uniform one-hot."""
        if cluster is None:
            k = torch.randint(0, self.n_clusters, (n,), device=self.device)
        elif isinstance(cluster, Tensor):
            k = cluster.to(self.device).long()
        else:
            k = torch.full((n,), int(cluster), device=self.device, dtype=torch.long)
        z_n = self.sigma * torch.randn(n, self.latent_dim, device=self.device)
        z_c = F.one_hot(k, self.n_clusters).to(z_n.dtype)
        return torch.cat([z_n, z_c], dim=1), z_n, k

    def _g(self, z: Tensor, net: nn.Module | None = None) -> Tensor:
        """G(z) (z = [z_n, z_c] in the prior's units); ``net`` = the averaged copy at inference."""
        net = self.generator if net is None else net
        return net(z * self._g_in_scale.to(z.dtype) if self.zn_unit_scale else z)

    def _e(self, x: Tensor, net: nn.Module | None = None) -> Tensor:
        """E(x) = [z_n_hat, z_c logits] (z_n_hat in the prior's units)."""
        out = (self.encoder if net is None else net)(x)
        return out * self._e_out_scale.to(out.dtype) if self.zn_unit_scale else out

    @property
    def g_infer(self) -> nn.Module:
        """The generator used outside training: its weight average when ``ema_decay`` > 0."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @property
    def e_infer(self) -> nn.Module | None:
        return self.encoder_ema if self.encoder_ema is not None else self.encoder

    @torch.no_grad()
    def _update_ema(self, t: int) -> None:
        """ema <- d * ema + (1 - d) * w after G/E step ``t``; d warms up as min(decay, (1 + t) / (10 + t))
        so the average does not remember the initialisation (TF ExponentialMovingAverage num_updates).
        ``t`` comes from the Python step counter: reading the ``gen_steps`` buffer would sync the device."""
        decay = min(self.ema_decay, (1.0 + t) / (10.0 + t))
        for ema, net in ((self.generator_ema, self.generator), (self.encoder_ema, self.encoder)):
            if ema is None or net is None:
                continue
            torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1.0 - decay)
            for b_ema, b in zip(ema.buffers(), net.buffers()):
                b_ema.copy_(b)  # BN running statistics: the current ones (they already are averages)

    def _image(self, flat_or_img: Tensor) -> Tensor:
        return flat_or_img if self.arch == "conv" else flat_or_img.reshape(len(flat_or_img), *self.img_shape)

    def _prep(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _bf16(self) -> bool:
        """bf16 requested and native on this device (else float32: see genclust.precision)."""
        return self.hparams.precision == "bf16" and use_bf16(self.device.type, "clustergan.precision")

    def _autocast(self):
        if self._bf16():
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ------------------------------------------------------------------------------ training
    def configure_optimizers(self):
        hp = self.hparams
        betas = tuple(float(b) for b in hp.betas)
        lr_d = float(hp.lr_critic) if hp.lr_critic is not None else float(hp.lr)
        # fused=True: the same Adam update in one kernel (8x faster than foreach on CPU for these 6.5M-weight
        # FC layers: the optimizer step was ~40% of a generator step).
        fused = {"fused": True} if hp.fused_adam else {}
        critic = torch.optim.Adam(self.critic.parameters(), lr=lr_d, betas=betas, **fused)
        ge = list(self.generator.parameters()) + (list(self.encoder.parameters()) if self.encoder else [])
        generator = torch.optim.Adam(ge, lr=float(hp.lr), betas=betas, weight_decay=float(hp.weight_decay), **fused)
        return [critic, generator]

    def optimizer_names(self) -> list[str]:
        return ["critic", "generator"]

    def on_train_start(self) -> None:
        # Schedules run on Python counters (no device sync per step), restored from the buffers on resume.
        self._critic_calls = int(self.critic_steps)
        self._gp_calls = self._critic_calls

    def critic_loss(self, real: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """WGAN-GP critic loss on one real batch and one fresh fake batch (critic scores real high)."""
        hp = self.hparams
        n = real.shape[0]
        with torch.no_grad():
            z, _, _ = self.sample_z(n)
            with self._autocast():
                fake = self._prep(self._g(z).float())
        with self._autocast():  # one context: autocast casts each weight once per step (its cache)
            if self._critic_has_bn:
                d_real, d_fake = self.critic(real).float().mean(), self.critic(fake).float().mean()
            else:
                scores = self.critic(torch.cat([real, fake])).float()
                d_real, d_fake = scores[:n].mean(), scores[n:].mean()
            wdist = d_real - d_fake
            loss = -wdist
            logs = {"train/wdist": wdist.detach()}
            if float(hp.gp_weight) > 0 and self._gp_calls % self.gp_every == 0:
                # Lazy regularisation when gp_every > 1 (weight scaled by gp_every, as in StyleGAN2).
                gp = gradient_penalty(self.critic, real, fake, per_sample_alpha=bool(hp.gp_per_sample_alpha))
                loss = loss + float(hp.gp_weight) * self.gp_every * gp.float()
                logs["train/gp"] = gp.detach()
        logs["train/loss_d"] = loss.detach()
        return loss, logs

    def generator_loss(self, n: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Algorithm 2: -D(G(z)) + beta_n * mean (z_n - E_n)^2 + beta_c * CE(z_c, E_c) on a fresh z."""
        hp = self.hparams
        z, z_n, k = self.sample_z(n)
        with self._autocast():
            fake = self._prep(self._g(z))
            adv = -self.critic(fake).float().mean()
            loss = adv
            logs = {"train/loss_g_adv": adv.detach()}
            if self.encoder is not None:
                enc = self._e(fake).float()
                zn_hat, logits = enc[:, : self.latent_dim], enc[:, self.latent_dim:]
                loss_n = F.mse_loss(zn_hat, z_n)  # mean over batch and dims (official tf.reduce_mean)
                loss_c = F.cross_entropy(logits, k)
                loss = loss + float(hp.beta_n) * loss_n + float(hp.beta_c) * loss_c
                logs.update({"train/loss_zn": loss_n.detach(), "train/loss_zc": loss_c.detach()})
        logs["train/loss_g"] = loss.detach()
        return loss, logs

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        real = self._prep(x)
        loss_d, logs = self.critic_loss(real)
        self.update("critic", loss_d)
        self.critic_steps += 1
        self._critic_calls += 1
        self._gp_calls += 1
        if self._critic_calls % self.n_critic == 0:
            loss_g, logs_g = self.generator_loss(real.shape[0])
            self.update("generator", loss_g)
            self.gen_steps += 1
            if self.ema_decay > 0:
                self._update_ema(self._critic_calls // self.n_critic)
            logs.update(logs_g)
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=real.shape[0])

    def on_train_end(self) -> None:
        # Also under clustering=argmax (kmeans_at_end): the saved model then answers both ways
        # (set ``model.clustering = "kmeans_latent"`` after loading it).
        if self.clustering == "kmeans_latent" or self.hparams.kmeans_at_end:
            self._refresh_kmeans(force=True)

    # ---------------------------------------------------------------------------- inference
    def _latent_features(self) -> int:
        """Width of the k-means latent: [z_n, softmax(z_c)], or only softmax(z_c) when beta_n == 0."""
        return self.n_clusters + (self.latent_dim if float(self.hparams.beta_n) != 0 else 0)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z_n_hat [N, d_n], z_c logits [N, K]) of images ``x`` through the encoder (or Algorithm 1)."""
        if self.inference == "backprop":
            z_n, losses = self.decode_latent(x)
            return z_n, -losses / float(self.hparams.bp_temperature)
        with self._autocast():
            enc = self._e(self._prep(x), self.e_infer).float()
        return enc[:, : self.latent_dim], enc[:, self.latent_dim:]

    def latent(self, x: Tensor) -> Tensor:
        """The official clustering features: [z_n_hat, softmax(z_c)] (softmax part only if beta_n == 0)."""
        z_n, logits = self.encode(x)
        if self.inference == "backprop":  # z* = (z_n, e_k*) of Algorithm 1
            soft = F.one_hot(logits.argmax(1), self.n_clusters).float()
        else:
            soft = torch.softmax(logits, dim=1)
        return soft if float(self.hparams.beta_n) == 0 else torch.cat([z_n, soft], dim=1)

    def cluster_probs(self, x: Tensor) -> Tensor:
        if self.clustering == "kmeans_latent":
            self._refresh_kmeans()
            h = self.latent(x)
            d2 = torch.cdist(h, self.kmeans_centers).pow(2)
            return torch.softmax(-d2 / (float(self.hparams.kmeans_temperature) * self.kmeans_scale), dim=1)
        _, logits = self.encode(x)
        return torch.softmax(logits, dim=1)

    @torch.no_grad()
    def extra_assignments(self, x: Tensor, batch_size: int = 1024) -> dict[str, Tensor]:
        """Under argmax, also the official read-out: k-means on [z_n, softmax(z_c)] (when fitted)."""
        if self.clustering != "argmax" or int(self.kmeans_fitted_at) < 0:
            return {}
        h = self.latent_in_batches(x, batch_size)
        return {"kmeans_latent": torch.cdist(h, self.kmeans_centers.float().cpu()).argmin(1)}

    @torch.no_grad()
    def latent_in_batches(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        was_training = self.training
        self.eval()
        try:
            out = [self.latent(x[i: i + batch_size].to(self.device)).float().cpu()
                   for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out)

    def fit_kmeans(self, x: Tensor) -> None:
        """k-means (k-means++, ``kmeans_n_init`` restarts) on the latent of ``x``; centers become buffers."""
        from sklearn.cluster import KMeans

        feats = self.latent_in_batches(x).double().numpy()
        hp = self.hparams
        km = KMeans(self.n_clusters, n_init=int(hp.kmeans_n_init), random_state=int(hp.kmeans_seed)).fit(feats)
        self.kmeans_centers.copy_(torch.as_tensor(km.cluster_centers_, dtype=torch.float32))
        self.kmeans_scale.fill_(max(float(km.inertia_) / len(feats), 1e-8))
        self.kmeans_fitted_at.fill_(int(self.gen_steps))
        self._kmeans_fit_size = len(feats)

    def _fit_set_x(self) -> Tensor | None:
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        fit_set = getattr(dm, "fit_set", None)
        return None if fit_set is None else fit_set.x

    def _refresh_kmeans(self, force: bool = False, fallback: Tensor | None = None) -> None:
        """(Re)fit the centers on the fit set when the model changed since the last fit."""
        if not force and int(self.kmeans_fitted_at) == int(self.gen_steps):
            return
        x = self._fit_set_x()
        if x is None:
            if int(self.kmeans_fitted_at) >= 0:  # a loaded model: keep its stored centers
                return
            raise RuntimeError("clustering=kmeans_latent: no fitted centers and no fit set; call fit_kmeans(x)")
        with torch.inference_mode(False), torch.no_grad():
            self.fit_kmeans(x)

    def decode_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Algorithm 1 (DECODE_LATENT), batched over points and the K restarts.

        Returns (z_n* [N, d_n] of the best restart, final loss per restart [N, K]). Loss per latent as in
        the official ``Image_wgan_gp.py``: mean |G(z) - x| + bp_lambda * mean(z_n^2); Adam(bp_lr, 0.9/0.999)
        on z_n only, z_c = e_k fixed, z_n clipped to [-bp_clip, bp_clip] after every step.
        """
        hp = self.hparams
        bs = max(int(hp.bp_batch_size), 1)
        zs, losses = [], []
        for i in range(0, len(x), bs):
            z, loss = self._decode_chunk(x[i: i + bs])
            zs.append(z)
            losses.append(loss)
        losses_t = torch.cat(losses)  # [N, K]
        z_all = torch.cat(zs)  # [N, K, d_n]
        best = losses_t.argmin(1)
        return z_all[torch.arange(len(best), device=best.device), best], losses_t

    def _decode_chunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hp = self.hparams
        n, k = x.shape[0], self.n_clusters
        clip = float(hp.bp_clip)
        with torch.inference_mode(False), torch.enable_grad():
            target = x.detach().clone().float().flatten(1).repeat_interleave(k, dim=0)  # [n*k, D]
            z_c = F.one_hot(torch.arange(k, device=x.device).repeat(n), k).float()
            z_n = (self.sigma * torch.randn(n * k, self.latent_dim, device=x.device)).requires_grad_(True)
            opt = torch.optim.Adam([z_n], lr=float(hp.bp_lr), betas=(0.9, 0.999))
            gen = self.g_infer
            frozen = [p.requires_grad for p in gen.parameters()]
            for p in gen.parameters():
                p.requires_grad_(False)
            was_training = gen.training
            gen.eval()
            try:
                for _ in range(int(hp.bp_iters)):
                    opt.zero_grad(set_to_none=True)
                    loss = self._bp_loss(z_n, z_c, target, gen)
                    loss.sum().backward()  # per-latent losses are independent: the sum's grad is each one's
                    opt.step()
                    with torch.no_grad():
                        z_n.clamp_(-clip, clip)
                with torch.no_grad():
                    final = self._bp_loss(z_n, z_c, target, gen)
            finally:
                gen.train(was_training)
                for p, f in zip(gen.parameters(), frozen):
                    p.requires_grad_(f)
        return z_n.detach().reshape(n, k, -1), final.reshape(n, k)

    def _bp_loss(self, z_n: Tensor, z_c: Tensor, target: Tensor, gen: nn.Module) -> Tensor:
        with self._autocast():
            g = self._g(torch.cat([z_n, z_c], dim=1), gen).float().flatten(1)
        return (g - target).abs().mean(1) + float(self.hparams.bp_lambda) * z_n.pow(2).mean(1)

    # ------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, cluster: int | None = None) -> Tensor:
        """``n`` samples of mode ``cluster`` (or of uniformly drawn modes); generator in eval mode."""
        return self.generate(self.sample_z(n, cluster)[0])

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        gen = self.g_infer
        was_training = gen.training
        gen.eval()
        try:
            out = self._g(z.to(self.device), gen).float()
        finally:
            gen.train(was_training)
        return self._image(out)

    def mode_grid_latents(self, per_mode: int, seed: int = 0) -> Tensor:
        """Fig. 4/5: the same ``per_mode`` z_n for every mode (rows = modes)."""
        g = torch.Generator().manual_seed(seed)
        z_n = self.sigma * torch.randn(per_mode, self.latent_dim, generator=g)
        eye = torch.eye(self.n_clusters)
        return torch.cat([torch.cat([z_n, eye[k].expand(per_mode, -1)], 1) for k in range(self.n_clusters)])

    def interpolation_latents(self, steps: int = 10, seed: int = 0) -> Tensor:
        """Fig. 6: fixed z_n, z_c = mu e_k + (1 - mu) e_{k+1}, mu from 1 to 0; one row per mode k."""
        g = torch.Generator().manual_seed(seed)
        eye = torch.eye(self.n_clusters)
        rows = []
        for k in range(self.n_clusters):
            z_n = self.sigma * torch.randn(1, self.latent_dim, generator=g).expand(steps, -1)
            mu = torch.linspace(1.0, 0.0, steps)[:, None]
            z_c = mu * eye[k] + (1 - mu) * eye[(k + 1) % self.n_clusters]
            rows.append(torch.cat([z_n, z_c], 1))
        return torch.cat(rows)

    def save_figures(self, out_dir: Path) -> list[Path]:
        if self.arch != "conv":
            return []
        from torchvision.utils import save_image

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        per_mode = 10
        imgs = self.to_unit_range(self.generate(self.mode_grid_latents(per_mode))).clamp(0, 1).cpu()
        path = out_dir / "clustergan_modes.png"
        save_image(imgs, path, nrow=per_mode, padding=1)
        paths.append(path)
        steps = 10
        imgs = self.to_unit_range(self.generate(self.interpolation_latents(steps))).clamp(0, 1).cpu()
        path = out_dir / "clustergan_interpolation.png"
        save_image(imgs, path, nrow=steps, padding=1)
        paths.append(path)
        return paths

    # -------------------------------------------------------------------------------- report
    def describe(self) -> dict[str, Any]:
        hp = self.hparams
        info: dict[str, Any] = {
            "clustering": self.clustering,
            "inference": self.inference,
            "cluster_probs": ("softmax of the encoder's z_c logits" if self.clustering == "argmax"
                              else "k-means on the latent [z_n, softmax(z_c)] of the fit set"),
            "arch": self.arch,
            "generator_steps": int(self.gen_steps),
            "critic_steps": int(self.critic_steps),
            "n_critic": self.n_critic,
            "sigma": self.sigma,
            "latent_dim": self.latent_dim,
            "beta_n": float(hp.beta_n),
            "beta_c": float(hp.beta_c),
            "lr": float(hp.lr),
            "gp_every": self.gp_every,
            "precision": "bf16" if self._bf16() else "32",  # what ran (bf16 falls back on CPUs without it)
        }
        info["paper_deviations"] = {k: hp[k] for k, v in PAPER_SETTINGS.items()
                                    if (list(hp[k]) if k == "betas" else hp[k]) != v}
        if self.arch == "conv" and hp.g_act != "relu":
            info["paper_deviations"]["g_act"] = hp.g_act
        if int(self.kmeans_fitted_at) >= 0:
            info["kmeans_fitted_at_generator_step"] = int(self.kmeans_fitted_at)
        if self.clustering == "kmeans_latent":
            info["kmeans_fitted_at_generator_step"] = int(self.kmeans_fitted_at)
            info["kmeans_features"] = ("[z_n, softmax(z_c)]" if float(hp.beta_n) != 0 else "softmax(z_c)")
        if self.inference == "backprop":
            info["bp_iters"] = int(hp.bp_iters)
        return info


__all__ = ["ClusterGAN", "ConvGenerator", "ConvTrunk", "MLPNet", "BatchNormNoScale"]
