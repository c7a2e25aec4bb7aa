"""ClusterGAN (Mukherjee et al., AAAI 2019): clustering in the latent space of a WGAN-GP.

The game (paper §2.3, §3, Algorithm 2; supplementary §6.2; official TF code
``sudiptodip15/ClusterGAN``, see ``shared/anchors/peers.md`` §3.2):

* prior ``z = (z_n, z_c)``: ``z_n ~ N(0, sigma^2 I)`` with sigma = 0.10 (§2.3), ``z_c`` a uniform one-hot
  over the K clusters;
* generator ``G(z)``, WGAN-GP critic ``D`` (gradient penalty 10), encoder ``E(x) -> (z_n_hat, z_c logits)``
  (nets: ``genclust.nets.dcgan``, configured in ``method.nets``);
* 5 critic updates per generator update, each with a fresh real batch and a fresh z (official
  ``Image_ClusterGAN.py`` L110-115); Adam(1e-4, betas 0.5/0.9) for D and jointly for G+E (§6.2);
* G and E minimise ``-D(G(z)) + beta_n * ||z_n - E(G(z))_n||^2 + beta_c * CE(z_c, E(G(z))_c)``
  (Algorithm 2). ``zn_reduction``: the squared error as a mean over batch *and* dimensions (official
  code, the default) or summed over dimensions (Eq. 1 / Algorithm 2); beta_n(mean) = d_n * beta_n(sum).

Clustering new data:

* argmax (``clustering: argmax``, default): ``cluster_probs = softmax(E(x)_c)``;
* read-out ``kmeans_latent`` (``method.readouts``): k-means on the embedding ``latent`` =
  ``[z_n_hat, softmax(z_c logits)]`` (softmax part only when ``beta_n == 0``), fitted once on the fit set
  after training, as the official evaluation does (``Image_ClusterGAN.py`` L213-256);
  ``clustering: kmeans_latent`` makes it the primary assignment;
* ``inference: backprop``: Algorithm 1 (no encoder needed): K restarts with ``z_c = e_k`` fixed, Adam on
  ``z_n`` for ``mean|G(z) - x| + lambda * mean(z_n^2)``, clipping ``z_n`` to [-0.6, 0.6]; the restart with the
  lowest loss wins (probs = softmax of the negative losses / temperature). Runs on
  ``genclust.latent.descend``, batched over points and restarts.

Training layout: every loader batch (``batch_size`` real examples) is one critic step; every
``n_critic``-th critic step is followed by one generator+encoder step on a fresh z. Generator steps are
counted in the ``gen_steps`` buffer (Lightning's ``global_step`` counts every optimizer step).
Deviations from paper + official code are config options, named as such (configs/method/clustergan.yaml).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.latent import descend
from genclust.losses import gradient_penalty
from genclust.methods.base import ClusteringMethod
from genclust.nets.blocks import eval_mode, frozen
from genclust.nets.dcgan import BatchNormNoScale
from genclust.nets.init import init_glorot, initialize
from genclust.precision import CastWeights

INFERENCE_MODES = ("encoder", "backprop")
ENCODER_EMBEDDINGS = ("logits", "features")  # read E's layers: only with inference=encoder
log = logging.getLogger("genclust")
ZN_REDUCTIONS = ("mean", "sum")
# Paper + official-code values of the knobs a budget or port variant changes (describe() lists deviations).
PAPER_SETTINGS = {"sigma": 0.10, "n_critic": 5, "batch_size": 64, "zn_unit_scale": False, "ema_decay": 0.0,
                  "autocast": "none", "gradient_penalty": {"weight": 10.0, "every": 1, "per_sample_alpha": False}}
PAPER_OPTIM = {"lr": 1e-4, "betas": [0.5, 0.9], "weight_decay": 0}
BACKPROP_DEFAULTS = {"iters": 5000, "lr": 0.01, "lambda": 10.0, "clip": 0.6, "batch_size": 256, "temperature": 0.01}
GP_DEFAULTS = {"weight": 10.0, "every": 1, "per_sample_alpha": False}


def frozen_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` that no optimizer owns (weight average for inference)."""
    twin = copy.deepcopy(net)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class ClusterGAN(ClusteringMethod):
    """ClusterGAN: WGAN-GP with a one-hot + Gaussian prior and a jointly trained inverse encoder."""

    generative = True

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        nets: Mapping[str, Any],
        optim: Mapping[str, Any],
        readouts: Mapping[str, Any] | None = None,
        clustering: str = "argmax",
        batch_size: int = 64,
        pixel_range: str = "unit",
        latent_dim: int = 30,
        sigma: float = 0.10,
        beta_n: float = 10.0,
        beta_c: float = 10.0,
        zn_reduction: str = "mean",
        gradient_penalty: Mapping[str, Any] | None = None,
        n_critic: int = 5,
        init: str = "dcgan",
        init_last: str = "glorot",
        use_encoder: bool = True,
        zn_unit_scale: bool = False,
        inference: str = "encoder",
        backprop: Mapping[str, Any] | None = None,
        autocast: str = "none",
        channels_last: bool = False,
        ema_decay: float = 0.0,
        divergence_check_every: int = 50,
    ) -> None:
        if inference != "encoder" and readouts:
            # the config's E-layer read-outs (kmeans_logits, kmeans_features) have no E to read without the encoder
            dropped = sorted(n for n, r in readouts.items() if getattr(r, "embedding", None) in ENCODER_EMBEDDINGS)
            if clustering in dropped:
                raise ConfigError(f"clustering={clustering} reads the encoder's layers: needs inference=encoder")
            if dropped:
                log.info("ClusterGAN inference=%s: read-outs %s need the encoder, left out", inference, dropped)
                readouts = {n: r for n, r in readouts.items() if n not in dropped}
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every, nets=nets,
                         optim=optim, readouts=readouts, clustering=clustering, autocast=autocast)
        self.save_hyperparameters(ignore=["nets", "optim", "readouts"])
        self.gp = {**GP_DEFAULTS, **dict(gradient_penalty or {})}
        self.bp = {**BACKPROP_DEFAULTS, **dict(backprop or {})}
        unknown = (set(self.gp) - set(GP_DEFAULTS)) | (set(self.bp) - set(BACKPROP_DEFAULTS))
        if unknown:
            raise ConfigError(f"clustergan: unknown gradient_penalty/backprop keys {sorted(unknown)}")
        if inference not in INFERENCE_MODES:
            raise ConfigError(f"inference must be one of {INFERENCE_MODES}, got {inference!r}")
        if inference == "encoder" and not use_encoder:
            raise ConfigError("inference=encoder needs use_encoder=true (use inference=backprop without encoder)")
        if int(n_critic) < 1 or int(self.gp["every"]) < 1:
            raise ConfigError(f"n_critic and gradient_penalty.every must be >= 1, got {n_critic}, {self.gp['every']}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if init_last not in ("glorot", "normal"):
            raise ConfigError(f"init_last must be 'glorot' or 'normal', got {init_last!r}")
        if zn_reduction not in ZN_REDUCTIONS:
            raise ConfigError(f"zn_reduction must be one of {ZN_REDUCTIONS}, got {zn_reduction!r}")
        if len(self.img_shape) not in (1, 3):
            raise ConfigError(f"clustergan: img_shape must be [C, H, W] or [D], got {list(self.img_shape)}")
        self.conv = len(self.img_shape) == 3
        self.latent_dim = int(latent_dim)
        self.z_dim = self.latent_dim + self.n_clusters
        self.sigma = float(sigma)
        self.n_critic = int(n_critic)
        self.gp_every = int(self.gp["every"])
        self.inference = inference
        self.use_encoder = bool(use_encoder)
        # Build order = RNG order (generator, critic, encoder), then the init in the same order.
        self.generator = self.build_net("generator", in_dim=self.z_dim, img_shape=self.img_shape,
                                        pixel_range=pixel_range)
        self.critic = self.build_net("critic", img_shape=self.img_shape, out_dim=1)
        self.encoder = (self.build_net("encoder", img_shape=self.img_shape, out_dim=self.z_dim)
                        if self.use_encoder else None)
        for net in (self.generator, self.critic, self.encoder):
            initialize(net, init)
        if init_last == "glorot":  # official: last FC of D and E has no initializer -> TF Glorot
            init_glorot(self.critic.head)
            if self.encoder is not None:
                init_glorot(self.encoder.head)
        if channels_last and self.conv:
            self.to(memory_format=torch.channels_last)
        # zn_unit_scale: G reads z_n / sigma and E's z_n head predicts in units of sigma (its output is
        # multiplied by sigma before the loss): the same model class, prior and losses, another parametrisation.
        self.zn_unit_scale = bool(zn_unit_scale)
        g_in = torch.ones(self.z_dim)
        g_in[: self.latent_dim] = 1.0 / self.sigma
        e_out = torch.ones(self.z_dim)
        e_out[: self.latent_dim] = self.sigma
        self.register_buffer("_g_in_scale", g_in, persistent=False)
        self.register_buffer("_e_out_scale", e_out, persistent=False)
        # Weight averaging (EMA) of G and E for inference (clustering, samples, Algorithm 1); training uses
        # the raw weights.
        self.ema_decay = float(ema_decay)
        self.generator_ema = frozen_copy(self.generator) if self.ema_decay > 0 else None
        self.encoder_ema = frozen_copy(self.encoder) if self.ema_decay > 0 and self.encoder else None
        # A critic with batch norm (MLP tables) sees real and fake batches in separate calls, as in the
        # official code; without it one concatenated forward is the same computation, faster.
        self._critic_has_bn = any(isinstance(m, BatchNormNoScale) for m in self.critic.modules())
        self.register_buffer("gen_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("critic_steps", torch.zeros((), dtype=torch.long))
        self._critic_calls = 0
        self._gp_calls = 0
        self._g_cast: CastWeights | None = None  # G's bf16 weights for the critic steps' fakes (built lazily)
        self._g_logs: dict[str, Tensor] = {}  # the last generator update's losses, logged with the next written batch

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
        return net(self._g_input(z))

    def _g_input(self, z: Tensor) -> Tensor:
        """What G reads: z, or [z_n / sigma, z_c] with ``zn_unit_scale``."""
        return z * self._g_in_scale.to(z.dtype) if self.zn_unit_scale else z

    def _critic_fakes(self, z: Tensor) -> Tensor:
        """G(z) without a graph for a critic step. G does not change between its updates, so under bf16 its weights
        are cast once per generator update (``CastWeights``), not once per critic step; bit-identical either way."""
        with torch.no_grad(), self.autocast():
            if not self.autocast_active():
                return self._g(z).float()
            if self._g_cast is None:
                self._g_cast = CastWeights(self.generator)
            g_updates = self._critic_calls // self.n_critic  # G changes only in training_step's generator update
            weights = self._g_cast.params(g_updates)
            return torch.func.functional_call(self.generator, weights, (self._g_input(z),)).float()

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
        (TF ExponentialMovingAverage num_updates). ``t`` is the Python step counter (no device sync)."""
        decay = min(self.ema_decay, (1.0 + t) / (10.0 + t))
        for ema, net in ((self.generator_ema, self.generator), (self.encoder_ema, self.encoder)):
            if ema is None or net is None:
                continue
            torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1.0 - decay)
            for b_ema, b in zip(ema.buffers(), net.buffers()):
                b_ema.copy_(b)  # BN running statistics: the current ones (they already are averages)

    def _image(self, flat_or_img: Tensor) -> Tensor:
        return flat_or_img if self.conv else flat_or_img.reshape(len(flat_or_img), *self.img_shape)

    def _prep(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # ------------------------------------------------------------------------------ training
    def optimizer_names(self) -> list[str]:
        return ["critic", "generator"]

    def player_parameters(self, player: str):
        if player == "generator":  # Algorithm 2: G and E minimise the same loss with one optimizer
            return list(self.generator.parameters()) + (list(self.encoder.parameters()) if self.encoder else [])
        return super().player_parameters(player)

    def on_train_start(self) -> None:
        # Schedules run on Python counters (no device sync per step), restored from the buffers on resume.
        self._critic_calls = int(self.critic_steps)
        self._gp_calls = self._critic_calls
        self._g_cast = None  # G's weights may have been loaded or broadcast since the last cast

    def critic_loss(self, real: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """WGAN-GP critic loss on one real batch and one fresh fake batch (critic scores real high)."""
        n = real.shape[0]
        with torch.no_grad():
            z, _, _ = self.sample_z(n)
        fake = self._prep(self._critic_fakes(z))
        with self.autocast():  # one context: autocast casts each weight once per step (its cache)
            if self._critic_has_bn:
                d_real, d_fake = self.critic(real).float().mean(), self.critic(fake).float().mean()
            else:
                scores = self.critic(torch.cat([real, fake])).float()
                d_real, d_fake = scores[:n].mean(), scores[n:].mean()
            wdist = d_real - d_fake
            loss = -wdist
            logs = {"train/wdist": wdist.detach()}
            weight = float(self.gp["weight"])
            if weight > 0 and self._gp_calls % self.gp_every == 0:
                # Lazy regularisation when every > 1 (weight scaled by every, as in StyleGAN2).
                gp = gradient_penalty(self.critic, real, fake, per_sample_alpha=bool(self.gp["per_sample_alpha"]))
                loss = loss + weight * self.gp_every * gp.float()
                logs["train/gp"] = gp.detach()
        logs["train/loss_d"] = loss.detach()
        return loss, logs

    def zn_loss(self, zn_hat: Tensor, z_n: Tensor) -> Tensor:
        """||z_n - E(G(z))_n||^2: mean over batch and dims (official) or summed over dims (Eq. 1)."""
        if self.hparams.zn_reduction == "sum":
            return (zn_hat - z_n).pow(2).sum(1).mean()
        return F.mse_loss(zn_hat, z_n)

    def generator_loss(self, n: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Algorithm 2: -D(G(z)) + beta_n * ||z_n - E_n||^2 + beta_c * CE(z_c, E_c) on a fresh z."""
        hp = self.hparams
        z, z_n, k = self.sample_z(n)
        with self.autocast():
            fake = self._prep(self._g(z))
            with frozen(self.critic):  # gradients reach G through D; D's own weight gradients are not computed
                adv = -self.critic(fake).float().mean()
            loss = adv
            logs = {"train/loss_g_adv": adv.detach()}
            if self.encoder is not None:
                enc = self._e(fake).float()
                zn_hat, logits = enc[:, : self.latent_dim], enc[:, self.latent_dim:]
                loss_n = self.zn_loss(zn_hat, z_n)
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
            self._g_logs = logs_g
        if self.logs_this_step():
            self.log_dict({**logs, **self._g_logs}, on_step=True, on_epoch=False, prog_bar=False,
                          batch_size=real.shape[0])

    # ---------------------------------------------------------------------------- inference
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z_n_hat [N, d_n], z_c logits [N, K]) of images ``x`` through the encoder (or Algorithm 1)."""
        if self.inference == "backprop":
            z_n, losses = self.decode_latent(x)
            return z_n, -losses / float(self.bp["temperature"])
        with self.autocast():
            enc = self._e(self._prep(x), self.e_infer).float()
        return enc[:, : self.latent_dim], enc[:, self.latent_dim:]

    def embed(self, x: Tensor, name: str) -> Tensor:
        """'latent': the official clustering features [z_n_hat, softmax(z_c)] (softmax part only if beta_n == 0);
        'logits': E's z_c logits, unsquashed (a read-out can then split a mode that two digits share along E's second
        choice); 'features': E's penultimate activations (the input of its z_n / z_c head)."""
        if name in ENCODER_EMBEDDINGS:
            if self.inference == "backprop" or self.e_infer is None:
                raise ConfigError(f"ClusterGAN embedding {name!r} reads the encoder: needs inference=encoder")
            if name == "logits":
                return self.encode(x)[1]
            x = self._prep(x)
            with self.autocast():  # E = head(body(x)); the MLP nets flatten their input first
                return self.e_infer.body(x if self.conv else x.flatten(1)).float()
        if name != "latent":
            return super().embed(x, name)
        z_n, logits = self.encode(x)
        if self.inference == "backprop":  # z* = (z_n, e_k*) of Algorithm 1
            soft = F.one_hot(logits.argmax(1), self.n_clusters).float()
        else:
            soft = torch.softmax(logits, dim=1)
        return soft if float(self.hparams.beta_n) == 0 else torch.cat([z_n, soft], dim=1)

    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        _, logits = self.encode(x)
        return torch.softmax(logits, dim=1)

    def decode_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Algorithm 1 (DECODE_LATENT), batched over points and the K restarts.

        Returns (z_n* [N, d_n] of the best restart, final loss per restart [N, K]). Loss per latent as in
        the official ``Image_wgan_gp.py``: mean |G(z) - x| + lambda * mean(z_n^2); Adam(lr, 0.9/0.999)
        on z_n only, z_c = e_k fixed, z_n clipped to [-clip, clip] after every step.
        """
        bs = max(int(self.bp["batch_size"]), 1)
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
        n, k = x.shape[0], self.n_clusters
        target = x.detach().float().flatten(1).repeat_interleave(k, dim=0)  # [n*k, D]
        z_c = F.one_hot(torch.arange(k, device=x.device).repeat(n), k).float()
        z0 = self.sigma * torch.randn(n * k, self.latent_dim, device=x.device)
        gen = self.g_infer

        def energy(z_n: Tensor) -> Tensor:
            return self._bp_loss(z_n, z_c, target, gen)

        with eval_mode(gen):
            z_n = descend(energy, z0, int(self.bp["iters"]), float(self.bp["lr"]), "adam", (0.9, 0.999),
                          clamp=float(self.bp["clip"]), frozen=[gen])
            with torch.no_grad():
                final = energy(z_n)
        return z_n.reshape(n, k, -1), final.reshape(n, k)

    def _bp_loss(self, z_n: Tensor, z_c: Tensor, target: Tensor, gen: nn.Module) -> Tensor:
        with self.autocast():
            g = self._g(torch.cat([z_n, z_c], dim=1), gen).float().flatten(1)
        return (g - target).abs().mean(1) + float(self.bp["lambda"]) * z_n.pow(2).mean(1)

    # ------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, cluster: int | None = None) -> Tensor:
        """``n`` samples of mode ``cluster`` (or of uniformly drawn modes); generator in eval mode."""
        return self.generate(self.sample_z(n, cluster)[0])

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        gen = self.g_infer
        with eval_mode(gen):
            out = self._g(z.to(self.device), gen).float()
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
        if not self.conv:
            return []
        from genclust.viz.figures import save_grid

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        per_mode, steps = 10, 10
        return [save_grid(self.to_unit_range(self.generate(self.mode_grid_latents(per_mode))),
                          out_dir / "clustergan_modes.png", nrow=per_mode),
                save_grid(self.to_unit_range(self.generate(self.interpolation_latents(steps))),
                          out_dir / "clustergan_interpolation.png", nrow=steps)]

    # -------------------------------------------------------------------------------- report
    def describe(self) -> dict[str, Any]:
        hp = self.hparams
        info: dict[str, Any] = {
            "clustering": self.clustering,
            "inference": self.inference,
            "cluster_probs": ("softmax of the encoder's z_c logits" if self.clustering == "argmax"
                              else f"read-out {self.clustering} (fitted once on the fit set)"),
            "arch": "conv" if self.conv else "mlp",
            "generator_steps": int(self.gen_steps),
            "critic_steps": int(self.critic_steps),
            "n_critic": self.n_critic,
            "sigma": self.sigma,
            "latent_dim": self.latent_dim,
            "beta_n": float(hp.beta_n),
            "beta_c": float(hp.beta_c),
            "zn_reduction": hp.zn_reduction,
            "gp_every": self.gp_every,
            "autocast": "bf16" if self.autocast_active() else "none",  # what ran (bf16 falls back on CPUs without it)
        }
        current = {"sigma": self.sigma, "n_critic": self.n_critic, "batch_size": self.batch_size,
                   "zn_unit_scale": self.zn_unit_scale, "ema_decay": self.ema_decay,
                   "autocast": self.autocast_request, "gradient_penalty": self.gp}
        deviations = {k: v for k, v in current.items() if v != PAPER_SETTINGS[k]}
        for player in self.optimizer_names():
            kw = getattr(self.optim_factories.get(player), "keywords", {})
            for key, paper in PAPER_OPTIM.items():
                value = list(kw[key]) if key == "betas" and key in kw else kw.get(key, paper)
                if value != paper:
                    deviations[f"optim.{player}.{key}"] = value
        info["paper_deviations"] = deviations
        if self.inference == "backprop":
            info["bp_iters"] = int(self.bp["iters"])
        return info


__all__ = ["ClusterGAN"]
