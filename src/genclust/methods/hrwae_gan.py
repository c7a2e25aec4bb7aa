"""HRWAE-GAN: the hierarchical and relativistic Wasserstein autoencoder GAN (Morais, IST thesis 2021;
papers/hrwae_gan.md), clustered after training by UMAP + HDBSCAN (and a GMM) on each latent group.

Model (§3.1, ``genclust.nets.hrwae``): a hierarchical autoencoder with L latent groups z_0..z_{L-1};
q(z_0 | x) from the deepest encoder map with prior N(0, I); the lower groups from encoder combiner cells
with trainable priors p(z_l | z_<l). L = 1 is the plain relativistic WAE-GAN. The prior cells learn only
through L_G (their draws are not detached in the autoencoder update, so L_G pulls each prior towards its
posterior); nothing else anchors their scale. Ours: the thesis says only "trainable parameter cells".

Per batch, two updates through the base's ``update()`` (manual optimization):

1. ``discriminator``: L_D = sum_l alpha_l E[-log sigmoid(D_l(z) - D_l(z_hat))] (Eqs. 3, 5): z a prior
   sample (N(0, I) for group 0, p(z_l | z_<l) for l >= 1), z_hat the encoder's sample;
2. ``autoencoder`` (encoder + decoder + combiners + prior cells), Eq. 9:
   L = L_R + alpha L_G + kappa_I L_I with L_G = sum_l alpha_l E[-log sigmoid(D_l(z_hat) - D_l(z))] (Eqs. 4, 6),
   L_R the reconstruction loss (BCE for [0, 1] grayscale, MSE otherwise, §3.3.1; summed over pixels,
   averaged over the batch) and L_I the layer-matching loss (Eq. 10: cosine dissimilarity between the
   encoder's and the decoder's maps of each level that has a group l >= 1).

Noise attention (Eq. 11, §3.3.3): every ``noise_attention.every_n_epochs`` epochs, UMAP + HDBSCAN on the
z_0 means of the fit set marks noise points; their reconstruction term is weighted ``noise_attention.factor``
(the thesis' kappa of §3.3.3: "the percentage of increased attention is kappa - 1") until the next marking.
Eq. 9 writes this as beta L_N with L_N a count of noise points, which has no gradient; the weighting is what
§3.3.3 describes. The thesis uses kappa for both L_I's weight and this factor: here two keys
(``layer_matching_weight``, ``noise_attention.factor``).

Clustering (§3.2): read-outs fitted once after training on the fit set, one per latent group and kind:
``method.readouts`` holds templates (``hdbscan``: UMAP (Eq. 8 neighbours) + HDBSCAN, K discovered, noise
-1; ``gmm``: a K-component GMM), copied per group as ``<kind>_z<l>`` reading ``embed(x, "z<l>")`` (the
posterior means). ``method.clustering`` names the primary one (default ``hdbscan_z0``).

Sampling: z_0 ~ N(0, I) (or from component k of the fitted ``gmm_z0`` for ``sample(n, cluster=k)``), the
lower groups from their prior cells.

The thesis gives no optimizer, learning rates, epochs, latent sizes or widths: ``configs/method/hrwae_gan.yaml``
names each choice and its source (mostly the WAE paper [21] the thesis builds on).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from genclust.errors import ConfigError
from genclust.latent import ExampleState
from genclust.methods.base import ClusteringMethod
from genclust.nets.blocks import eval_mode, frozen
from genclust.nets.hrwae import HierarchyOutput
from genclust.readouts import UMAPHDBSCANReadout

NOISE_ATTENTION = {"every_n_epochs": 5, "factor": 2.0, "start_epoch": 5}


def relativistic_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Eq. 3: E[-log sigmoid(D(z) - D(z_hat))] over paired prior / encoder samples."""
    return F.softplus(-(d_real - d_fake)).mean()


def relativistic_g_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Eq. 4: E[-log sigmoid(D(z_hat) - D(z))]: the encoder (D's generator) pulls its samples past the prior's."""
    return F.softplus(-(d_fake - d_real)).mean()


def cosine_dissimilarity(a: Tensor, b: Tensor) -> Tensor:
    """Eq. 10's D: 1 - cos(a, b) per example (maps flattened), averaged over the batch."""
    return (1.0 - F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1)).mean()


class HRWAEGAN(ClusteringMethod):
    """Hierarchical autoencoder + per-group relativistic latent discriminators (module doc)."""

    generative = True

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        nets: Mapping[str, Any],
        optim: Mapping[str, Any],
        readouts: Mapping[str, Any] | None = None,
        clustering: str = "hdbscan_z0",
        batch_size: int = 100,
        pixel_range: str = "unit",
        n_groups: int = 1,
        z_dims: Sequence[int] = (8, 8, 8, 8),
        pad_to: int | str | None = "auto",
        reconstruction: str = "auto",
        adversarial_weight: float = 1.0,
        group_weights: Sequence[float] | str = "halving",
        layer_matching_weight: float = 1.0,
        noise_attention: Mapping[str, Any] | None = None,
        lr_decay: Mapping[str, Sequence[float]] | None = None,
        autocast: str = "none",
        divergence_check_every: int = 50,
    ) -> None:
        per_group = {f"{kind}_z{g}": self._for_group(template, g) for kind, template in dict(readouts or {}).items()
                     for g in range(int(n_groups))}
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every, nets=nets,
                         optim=optim, readouts=per_group, clustering=clustering, autocast=autocast)
        self.save_hyperparameters(ignore=["nets", "optim", "readouts"])
        self.n_groups = int(n_groups)
        c, h, w = self.img_shape if len(self.img_shape) == 3 else (None, None, None)
        if c is None or h != w:
            raise ConfigError(f"hrwae_gan needs square [C, H, W] images, got {list(self.img_shape)}")
        self.side = int(h)
        self.padded = self._padded_side(pad_to, self.side)
        if reconstruction == "auto":  # §3.3.1: BCE for (near-binary) grayscale, MSE for colour
            reconstruction = "bce" if c == 1 and pixel_range == "unit" else "mse"
        if reconstruction not in ("bce", "mse"):
            raise ConfigError(f"hrwae_gan.reconstruction must be auto|bce|mse, got {reconstruction!r}")
        if reconstruction == "bce" and pixel_range != "unit":
            raise ConfigError("hrwae_gan: BCE reconstruction needs pixel_range: unit")
        self.reconstruction = reconstruction
        if group_weights == "halving":  # "balancing terms with decreasing value" (§3.1.2): 1, 1/2, 1/4, ...
            group_weights = [0.5**g for g in range(self.n_groups)]
        if len(group_weights) < self.n_groups or any(float(a) < 0 for a in group_weights):
            raise ConfigError(f"hrwae_gan.group_weights needs {self.n_groups} non-negative values, got {group_weights}")
        self.group_weights = [float(a) for a in group_weights[: self.n_groups]]
        self.adversarial_weight, self.layer_matching_weight = float(adversarial_weight), float(layer_matching_weight)
        unknown = set(noise_attention or {}) - set(NOISE_ATTENTION)
        if unknown:
            raise ConfigError(f"hrwae_gan: unknown noise_attention keys {sorted(unknown)} (known: {sorted(NOISE_ATTENTION)})")
        self.noise_cfg = {**NOISE_ATTENTION, **dict(noise_attention or {})}
        self.lr_decay = self._lr_decay_plan(lr_decay)
        if float(self.noise_cfg["factor"]) < 1.0:
            raise ConfigError(f"noise_attention.factor (kappa) must be >= 1, got {self.noise_cfg['factor']}")
        out_act = "sigmoid" if pixel_range == "unit" else "tanh"
        self.autoencoder = self.build_net("autoencoder", img_shape=(c, self.padded, self.padded),
                                          n_groups=self.n_groups, out_act=out_act)
        self.z_dims = self.autoencoder.z_dims
        self.discriminator = self.build_net("discriminator", z_dims=self.z_dims)
        # per-example reconstruction weight (noise attention), keyed by fit-set index; checkpointed
        self.attention = ExampleState({"weight": ((), torch.float32)})
        self.register_buffer("noise_fraction", torch.zeros(()))
        self._figure_images: Tensor | None = None

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _for_group(template: Any, group: int) -> Any:
        readout = copy.deepcopy(template)
        readout.embedding = f"z{group}"
        return readout

    @staticmethod
    def _padded_side(pad_to: int | str | None, side: int) -> int:
        """Eq. 7 needs a power-of-two side: 'auto' pads to the next one (28 -> 32, the background value)."""
        if pad_to in (None, "none"):
            return side
        target = 1 << (side - 1).bit_length() if pad_to == "auto" else int(pad_to)
        if target < side:
            raise ConfigError(f"hrwae_gan.pad_to {target} is smaller than the image side {side}")
        return target

    @staticmethod
    def _lr_decay_plan(cfg: Mapping[str, Sequence[float]] | None) -> list[tuple[int, float]]:
        """[(epoch, factor), ...] sorted by epoch: after ``epoch`` epochs every learning rate is multiplied by
        ``factor`` (WAE [21]'s MNIST schedule: epochs [30, 50], factors [0.5, 0.2])."""
        if not cfg:
            return []
        unknown = set(cfg) - {"epochs", "factors"}
        epochs, factors = list(cfg.get("epochs", [])), list(cfg.get("factors", []))
        if unknown or len(epochs) != len(factors) or any(int(e) < 1 for e in epochs) or any(
                not 0.0 < float(f) for f in factors):
            raise ConfigError(f"hrwae_gan.lr_decay needs epochs (>= 1) and factors (> 0) of one length, got {dict(cfg)}")
        return sorted((int(e), float(f)) for e, f in zip(epochs, factors))

    def lr_scale(self, epoch: int) -> float:
        """The learning-rate multiplier in (0-based) ``epoch``: the product of the factors already due."""
        scale = 1.0
        for after, factor in self.lr_decay:
            scale *= factor if epoch >= after else 1.0
        return scale

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if not self.lr_decay:
            return
        scale = self.lr_scale(self.current_epoch)  # from the epoch alone: a resumed run gets the same rates
        opts = self.optimizers()
        for opt in opts if isinstance(opts, list) else [opts]:
            for group in getattr(opt, "optimizer", opt).param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * scale

    def optimizer_names(self) -> list[str]:
        return ["discriminator", "autoencoder"]

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        fit = getattr(dm, "fit_set", None) if dm is not None else None
        if fit is not None and self.attention.size != len(fit):
            self.attention.allocate(len(fit), lambda name, shape, dtype: torch.ones(shape, dtype=dtype),
                                    device=self.device)
        if fit is not None and self._figure_images is None:
            self._figure_images = fit.x[:8].clone()

    # ------------------------------------------------------------------ model
    def pad(self, x: Tensor) -> Tensor:
        p = self.padded - self.side
        if p == 0:
            return x
        background = 0.0 if self.pixel_range == "unit" else -1.0
        return F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2), value=background)

    def crop(self, x: Tensor) -> Tensor:
        p = self.padded - self.side
        return x if p == 0 else x[..., p // 2: p // 2 + self.side, p // 2: p // 2 + self.side]

    def forward_pass(self, x: Tensor, sample: bool = True) -> HierarchyOutput:
        with self.autocast():
            out = self.autoencoder(self.pad(x.float()), sample=sample)
        out.image = self.crop(out.image.float())
        return out

    def prior_samples(self, out: HierarchyOutput) -> list[Tensor]:
        """A prior draw per group paired with the encoder's: N(0, I) for z_0, p(z_l | z_<l) for l >= 1."""
        real = [torch.randn_like(out.z[0])]
        for mu, logvar in zip(out.prior_mu, out.prior_logvar):
            real.append(mu + torch.randn_like(mu) * (0.5 * logvar).exp())
        return real

    def adversarial(self, real: Sequence[Tensor], fake: Sequence[Tensor], loss) -> Tensor:
        """sum_l alpha_l loss(D_l(z_l), D_l(z_hat_l)) (Eqs. 5-6), real and fake in one pass per D (one BN batch)."""
        total = real[0].new_zeros(())
        for alpha, disc, zr, zf in zip(self.group_weights, self.discriminator, real, fake):
            with self.autocast():
                scores = disc(torch.cat([zr, zf])).float().squeeze(1)
            total = total + alpha * loss(scores[: len(zr)], scores[len(zr):])
        return total

    def reconstruction_loss(self, x: Tensor, recon: Tensor) -> Tensor:
        """Per example, summed over pixels (§3.3.1)."""
        if self.reconstruction == "bce":
            return F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x, reduction="none").flatten(1).sum(1)
        return (recon - x).pow(2).flatten(1).sum(1)

    def layer_matching(self, out: HierarchyOutput) -> Tensor:
        """Eq. 10: sum over the levels with a group l >= 1 of D(encoder map, decoder map); 0 for L = 1."""
        total = out.image.new_zeros(())
        for e, d in zip(out.enc_maps, out.dec_maps):
            total = total + cosine_dissimilarity(e, d)
        return total

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, idx = batch
        x = x.float()
        out = self.forward_pass(x)
        real = self.prior_samples(out)
        d_loss = self.adversarial([r.detach() for r in real], [z.detach() for z in out.z], relativistic_d_loss)
        self.update("discriminator", d_loss)
        with frozen(self.discriminator):  # gradients reach the encoder through D; D's weight gradients are skipped
            g_loss = self.adversarial(real, out.z, relativistic_g_loss)
        weight = self.attention.read("weight", idx).to(x.device) if self.attention.size else torch.ones(len(x), device=x.device)
        recon = (weight * self.reconstruction_loss(x, out.image)).mean()
        match = self.layer_matching(out)
        loss = recon + self.adversarial_weight * g_loss + self.layer_matching_weight * match
        self.update("autoencoder", loss)
        if self.logs_this_step():
            self.log_dict({"train/recon": recon.detach(), "train/adv_g": g_loss.detach(),
                           "train/adv_d": d_loss.detach(), "train/layer_match": match.detach(),
                           "train/loss": loss.detach()}, on_step=True, on_epoch=False, batch_size=len(x))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        cfg, epoch = self.noise_cfg, self.current_epoch + 1
        every = int(cfg["every_n_epochs"])
        if every > 0 and float(cfg["factor"]) > 1.0 and epoch >= int(cfg["start_epoch"]) and epoch % every == 0:
            self.mark_noise()
        self.log("train/noise_fraction", self.noise_fraction, on_step=False, on_epoch=True)

    def mark_noise(self) -> None:
        """Noise attention (§3.3.3): UMAP + HDBSCAN on the fit set's z_0; noise rows get weight kappa.
        Rank 0 clusters and broadcasts the weights (ranks may differ in BN statistics)."""
        dm = self.trainer.datamodule
        weights = torch.empty(self.attention.size, device=self.device)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if rank == 0:
            z0 = self.embed_in_batches(dm.fit_set.x, "z0")
            finder = UMAPHDBSCANReadout(embedding="z0", seed=int(self.current_epoch))
            finder.fit(z0)
            noise = finder.state["fit_labels"] < 0
            weights.copy_(torch.where(noise, float(self.noise_cfg["factor"]), 1.0).to(weights.device))
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(weights, src=0)
        self.attention.weight.copy_(weights.to(self.attention.weight.device))
        self.noise_fraction.fill_(float((weights > 1.0).float().mean()))

    # ------------------------------------------------------------------ clustering
    def embed(self, x: Tensor, name: str) -> Tensor:
        """'z<l>': the posterior means of latent group l (what the read-outs cluster)."""
        if name.startswith("z") and name[1:].isdigit() and int(name[1:]) < self.n_groups:
            return self.forward_pass(x, sample=False).mu[int(name[1:])].float()
        return super().embed(x, name)

    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        raise ConfigError("hrwae_gan clusters through its read-outs: set method.clustering to one of "
                          f"{sorted(self.readouts)}")

    # ------------------------------------------------------------------ generation and figures
    @torch.no_grad()
    def sample(self, n: int, cluster: int | None = None) -> Tensor:
        z0 = torch.randn(n, self.z_dims[0], device=self.device)
        if cluster is not None:
            z0 = self.gmm_component_samples(n, int(cluster))
        with eval_mode(self.autoencoder), self.autocast():
            return self.crop(self.autoencoder.decode_from_prior(z0).float())

    def gmm_component_samples(self, n: int, cluster: int) -> Tensor:
        """z_0 drawn from component ``cluster`` of the fitted ``gmm_z0`` read-out (the clusters' own samples)."""
        readout = self.readouts["gmm_z0"] if "gmm_z0" in self.readouts else None
        if readout is None or not readout.fitted:
            raise ValueError("per-cluster samples need a fitted gmm_z0 read-out")
        gmm = readout._estimator()
        if not 0 <= cluster < gmm.n_components or gmm.covariance_type not in ("full", "diag"):
            raise ValueError(f"no samples for cluster {cluster} of a {gmm.covariance_type} GMM")
        cov = torch.as_tensor(gmm.covariances_[cluster], dtype=torch.float32)
        normal = torch.distributions.MultivariateNormal(
            torch.as_tensor(gmm.means_[cluster], dtype=torch.float32),
            covariance_matrix=cov if cov.dim() == 2 else torch.diag(cov))
        return normal.sample((n,)).to(self.device)

    def save_figures(self, out_dir: Path) -> list[Path]:
        """Fig. 4 (reconstructions: inputs above, reconstructions below), Fig. 5 (prior samples), and a 2-D
        UMAP scatter per latent group coloured by its HDBSCAN clusters (noise grey)."""
        from genclust.viz.figures import save_grid, umap_scatter

        out_dir = Path(out_dir)
        paths = []
        if self._figure_images is not None:
            x = self._figure_images.to(self.device)
            with torch.no_grad(), eval_mode(self):
                recon = self.forward_pass(x, sample=False).image
            paths.append(save_grid(self.to_unit_range(torch.cat([x, recon])), out_dir / "hrwae_reconstructions.png",
                                   nrow=len(x)))
        torch.manual_seed(0)
        paths.append(save_grid(self.to_unit_range(self.sample(64)), out_dir / "hrwae_prior_samples.png", nrow=8))
        for name, readout in self.readouts.items():
            if isinstance(readout, UMAPHDBSCANReadout) and readout.fitted:
                path = umap_scatter(readout, out_dir / f"umap_{name}.png", title=f"{name}: UMAP + HDBSCAN")
                if path is not None:
                    paths.append(path)
        return paths

    def describe(self) -> dict[str, Any]:
        groups = {}
        for g in range(self.n_groups):
            for name, readout in self.readouts.items():
                if readout.embedding == f"z{g}" and readout.fitted:
                    groups.setdefault(f"z{g}", {})[name] = readout.describe()
        return {"n_groups": self.n_groups, "z_dims": self.z_dims, "padded_side": self.padded,
                "reconstruction": self.reconstruction, "group_weights": self.group_weights,
                "noise_attention": self.noise_cfg, "noise_fraction": float(self.noise_fraction),
                "read_outs_per_group": groups}


__all__ = ["HRWAEGAN", "relativistic_d_loss", "relativistic_g_loss", "cosine_dissimilarity"]
