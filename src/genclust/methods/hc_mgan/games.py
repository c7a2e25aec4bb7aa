"""HC-MGAN's networks and its two games: the raw split MGAN and the refinement GAN pair.

Networks (paper supplementary, Table 2; authors' code ``models/models_28x28.py``):

* generator: z (100) -> FC -> (H/4 x H/4 x g) + ReLU -> deconv 4x4/2 (g/2) + ReLU -> deconv 4x4/2 (C) + tanh.
  The paper's 28x28 rule is FC -> 7x7x128 -> 64 -> 1 (``g_channels=128``); the authors' code uses 256 -> 128.
  The same rule gives 8x8x g for 32x32 sets and 2x2x g for 8x8 digits.
* discriminator/classifier trunk (shared): three conv 5x5/2 (pad 2) with 128/256/512 maps, each followed by
  LayerNorm over (C, H, W) and LeakyReLU(0.2); D head Linear(features, 1), C head Linear(features, 2).
  The trunk belongs to D's optimizer: only D's loss updates it; C trains its linear head only (code
  ``utils/others.py`` L90-98, ``models/gan.py`` L121-134; supplementary "Architecture").
* vector data (img_shape of length 1): MLPs of the same roles (our addition; the paper only has images).

Games (one Lightning fit each; the LightningModule delegates ``training_step`` here):

* :class:`RawSplitGame` (Algorithm 2): G_alpha, G_beta (same z batch), one D, one C.
* :class:`RefinementGame` (Algorithms 3-4, Eq. 6): groups l and m, each with its own G (one per group in
  the paper, ``gens_per_group=2`` gives the authors' code), D and C; groups trained alternately.

Losses follow the Algorithms' "criterion on the batch" wording, i.e. means over the concatenated batch
(the code does the same); only the refinement's cross-group generator term is a choice (see RefinementGame).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.blocks import Reshape, conv_out_size, init_normal, mlp

if TYPE_CHECKING:  # pragma: no cover
    from genclust.methods.hc_mgan.module import HCMGAN

LABEL_L, LABEL_M = 0, 1  # class 0 = first child (l / alpha), class 1 = second child (m / beta)


# ---------------------------------------------------------------------------------- networks
def net_spec(img_shape: Sequence[int], z_dim: int, g_channels: int, d_channels: Sequence[int],
             mlp_hidden: int) -> dict[str, Any]:
    """Plain-dict architecture description (stored in the tree so a checkpoint can rebuild its nets)."""
    return {"img_shape": [int(s) for s in img_shape], "z_dim": int(z_dim), "g_channels": int(g_channels),
            "d_channels": [int(c) for c in d_channels], "mlp_hidden": int(mlp_hidden)}


def check_spec(spec: dict[str, Any]) -> None:
    shape = spec["img_shape"]
    if len(shape) == 1:
        return
    if len(shape) != 3:
        raise ConfigError(f"hc_mgan: img_shape must be [D] or [C, H, W], got {shape}")
    _, h, w = shape
    if h != w or h % 4 != 0:
        raise ConfigError(f"hc_mgan: images must be square with a side divisible by 4 (8, 16, 28, 32), got {shape}")
    if len(spec["d_channels"]) != 3 or spec["g_channels"] < 2:
        raise ConfigError("hc_mgan: d_channels needs 3 entries and g_channels >= 2 (Table 2)")


def build_generator(spec: dict[str, Any]) -> nn.Module:
    shape = spec["img_shape"]
    z = spec["z_dim"]
    if len(shape) == 1:
        h = spec["mlp_hidden"]
        return mlp([z, h, h, shape[0]], act="relu")
    c, side, _ = shape
    base, g = side // 4, spec["g_channels"]
    return nn.Sequential(
        nn.Linear(z, base * base * g), nn.ReLU(), Reshape(g, base, base),
        nn.ConvTranspose2d(g, g // 2, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(g // 2, c, 4, 2, 1), nn.Tanh(),
    )


def build_trunk(spec: dict[str, Any]) -> tuple[nn.Module, int]:
    """The conv stack shared by D and C; returns (module, number of output features)."""
    shape = spec["img_shape"]
    if len(shape) == 1:
        h = spec["mlp_hidden"]
        trunk = nn.Sequential(nn.Linear(shape[0], h), nn.LayerNorm(h), nn.LeakyReLU(0.2),
                              nn.Linear(h, h), nn.LayerNorm(h), nn.LeakyReLU(0.2))
        return trunk, h
    c_in, side, _ = shape
    layers: list[nn.Module] = []
    for c_out in spec["d_channels"]:
        side = conv_out_size(side, 5, 2, 2)
        layers += [nn.Conv2d(c_in, c_out, 5, 2, 2), nn.LayerNorm([c_out, side, side]), nn.LeakyReLU(0.2)]
        c_in = c_out
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), c_in * side * side


class Critic(nn.Module):
    """D and C of one game: a shared trunk with a discriminator head (1 logit) and a classifier head (2)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.trunk, n_feat = build_trunk(spec)
        self.d_head = nn.Linear(n_feat, 1)
        self.c_head = nn.Linear(n_feat, 2)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters()) + list(self.d_head.parameters())

    def classifier(self) -> SplitMember:
        """A standalone copy of trunk + classifier head (what the tree keeps to cluster new data)."""
        member = SplitMember(self.spec).to(self.c_head.weight.device)
        member.trunk.load_state_dict(self.trunk.state_dict())
        member.c_head.load_state_dict(self.c_head.state_dict())
        return member


class SplitMember(nn.Module):
    """trunk + classifier head; ``forward`` gives the logits [N, 2] of (first child, second child)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.trunk, n_feat = build_trunk(spec)
        self.c_head = nn.Linear(n_feat, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_head(self.trunk(x))


# ----------------------------------------------------------------------------- game helpers
def sample_z(n: int, dim: int, prior: str, device: torch.device) -> Tensor:
    """The latent prior: paper Table 2 says U[0, 1]; the authors' code uses U(-1, 1)."""
    if prior == "uniform01":
        return torch.rand(n, dim, device=device)
    if prior == "uniform11":
        return torch.rand(n, dim, device=device) * 2.0 - 1.0
    if prior == "normal":
        return torch.randn(n, dim, device=device)
    raise ConfigError(f"hc_mgan: unknown z_prior {prior!r} (uniform01 | uniform11 | normal)")


NOISE_KINDS = ("multiplicative", "additive")


def instance_noise(x: Tensor, scale: float, kind: str = "multiplicative") -> Tensor:
    """Gaussian instance noise with std multiplier ``scale``.

    multiplicative: x + x * eps * s (the authors' code, ``tree/raw_split.py`` L291-295): pixels at 0
    (mid-grey in [-1, 1]) get none. additive: x + eps * s (the usual instance noise of the papers the
    supplementary cites, Sønderby et al. 2016; Jenni and Favaro 2019).
    """
    if scale <= 0.0:
        return x
    if kind == "additive":
        return x + torch.randn_like(x) * scale
    return x + x * torch.randn_like(x) * scale


@contextmanager
def no_param_grad(module: nn.Module):
    """Run a forward whose graph reaches the *inputs* only (no weight-gradient work for ``module``).

    Used for the generator step through frozen D/C features; restores the flags before any
    ``update`` toggles optimizers, so it never interferes with Lightning's toggle bookkeeping.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def labels_for(n_first: int, n_second: int, first: int, second: int, device: torch.device) -> Tensor:
    return torch.cat([torch.full((n_first,), first, dtype=torch.long, device=device),
                      torch.full((n_second,), second, dtype=torch.long, device=device)])


def initialize(module: nn.Module, how: str) -> None:
    """'default': PyTorch's own initialisation (the authors' code sets none); 'dcgan': N(0, 0.02) weights."""
    if how == "dcgan":
        init_normal(module, 0.02)
    elif how != "default":
        raise ConfigError(f"hc_mgan: unknown init {how!r} (default | dcgan)")


def adam(params: Any, lr: float, betas: Sequence[float]) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(float(betas[0]), float(betas[1])))


# --------------------------------------------------------------------------------- raw split
class RawSplitGame(nn.Module):
    """Algorithm 2: two generators (one shared z batch), one discriminator, one classifier."""

    kind = "raw"

    def __init__(self, spec: dict[str, Any], hp: dict[str, Any]) -> None:
        super().__init__()
        self.spec, self.hp = spec, hp
        self.generators = nn.ModuleList([build_generator(spec), build_generator(spec)])  # alpha -> l, beta -> m
        self.critic = Critic(spec)
        initialize(self, hp["init"])

    def optimizer_names(self) -> list[str]:
        return ["discriminator", "classifier", "generator"]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hp
        return [adam(self.critic.discriminator_parameters(), hp["lr_d"], hp["betas"]),
                adam(self.critic.c_head.parameters(), hp["lr_c"], hp["betas"]),
                adam(self.generators.parameters(), hp["lr_g"], hp["betas"])]

    def generate(self, z: Tensor) -> Tensor:
        return torch.cat([g(z) for g in self.generators])

    def training_step(self, method: HCMGAN, x_real: Tensor, noise: float) -> None:
        hp, dev = self.hp, x_real.device
        n_gen = hp["gen_batch_size"]
        z = sample_z(n_gen, self.spec["z_dim"], hp["z_prior"], dev)
        kind = self.hp["noise_kind"]
        fake = instance_noise(self.generate(z), noise, kind)  # the generator gradient flows through the noise
        real = instance_noise(x_real, noise, kind)
        labels = labels_for(n_gen, n_gen, LABEL_L, LABEL_M, dev)
        critic = self.critic

        # 1. D: BCE(real, 1) + BCE(fake, 0), one trunk pass over both (LayerNorm is per example).
        d_logits = critic.d_head(critic.trunk(torch.cat([real, fake.detach()])))
        loss_d = bce(d_logits[: len(real)], 1.0) + bce(d_logits[len(real):], 0.0)
        method.update("discriminator", loss_d)

        # Features of the fakes under the updated trunk, with a graph to the generators only.
        with no_param_grad(critic.trunk):
            feat = critic.trunk(fake)
        # 2. C: CE on the generated samples labelled by generator (linear head only).
        c_logits = critic.c_head(feat.detach())
        loss_c = F.cross_entropy(c_logits, labels)
        method.update("classifier", loss_c)

        # 3. G: non-saturating adversarial + lambda * CE (lambda^2 in the authors' raw-split code).
        lam = hp["lambda_cls"] ** 2 if hp["raw_lambda_squared"] else hp["lambda_cls"]
        loss_g = bce(critic.d_head(feat), 1.0) + lam * F.cross_entropy(critic.c_head(feat), labels)
        method.update("generator", loss_g)

        acc_c = (c_logits.argmax(1) == labels).float().mean()
        method.log_dict({"train/loss_d": loss_d.detach(), "train/loss_c": loss_c.detach(),
                         "train/loss_g": loss_g.detach(), "train/acc_c": acc_c},
                        on_step=False, on_epoch=True, prog_bar=False)

    @torch.no_grad()
    def collapse_scores(self, noise: float, device: torch.device) -> list[float]:
        """D's BCE (fake label) on each generator's samples; ~0 means D spots every fake: a collapse."""
        z = sample_z(self.hp["gen_batch_size"], self.spec["z_dim"], self.hp["z_prior"], device)
        kind = self.hp["noise_kind"]
        return [float(bce(self.critic.d_head(self.critic.trunk(instance_noise(g(z), noise, kind))), 0.0))
                for g in self.generators]

    def split_members(self) -> list[SplitMember]:
        return [self.critic.classifier()]

    def child_generators(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [copy.deepcopy(self.generators[0])], [copy.deepcopy(self.generators[1])]


# -------------------------------------------------------------------------------- refinement
class RefinementGroup(nn.Module):
    def __init__(self, spec: dict[str, Any], n_gen: int) -> None:
        super().__init__()
        self.generators = nn.ModuleList([build_generator(spec) for _ in range(n_gen)])
        self.critic = Critic(spec)

    def generate(self, z: Tensor) -> Tensor:
        return torch.cat([g(z) for g in self.generators])


class RefinementGame(nn.Module):
    """Algorithms 3-4: groups l and m, each (G, D, C) with C sharing its group's D trunk.

    Per iteration one z batch feeds every generator; x_hat_l, x_hat_m are drawn once (Alg. 3 line 3),
    then group l and group m are trained in turn (Alg. 4): D_int on its own real/fake batch, C_int on
    (x_hat_int, x_hat_ext) with both groups' labels, and G_int on
    BCE(D_int(x_hat_int), 1) + lambda * [CE(C_int(x_hat_int), int) + CE(C_ext(x_hat_int), int)],
    the two G_int-dependent terms of Eq. 6 ("sum", paper); ``refine_cls_reduction=mean`` averages them
    as the authors' code does (``models/gan.py`` L249-271). Both classifiers use the global labels
    l = 0, m = 1, so the two-classifier ensemble is a plain average of their softmaxes.
    """

    kind = "refine"
    groups_names = ("l", "m")

    def __init__(self, spec: dict[str, Any], hp: dict[str, Any]) -> None:
        super().__init__()
        self.spec, self.hp = spec, hp
        n_gen = int(hp["refine_gens_per_group"])
        self.group_l = RefinementGroup(spec, n_gen)
        self.group_m = RefinementGroup(spec, n_gen)
        initialize(self, hp["init"])

    def optimizer_names(self) -> list[str]:
        return [f"{player}_{g}" for g in self.groups_names for player in ("discriminator", "classifier", "generator")]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp, out = self.hp, []
        for group in (self.group_l, self.group_m):
            out += [adam(group.critic.discriminator_parameters(), hp["lr_d"], hp["betas"]),
                    adam(group.critic.c_head.parameters(), hp["lr_c"], hp["betas"]),
                    adam(group.generators.parameters(), hp["lr_g"], hp["betas"])]
        return out

    def warm_start(self, prev_kind: str, state: dict[str, Tensor]) -> None:
        """Start from the previous stage's nets instead of fresh ones (budget option, not the paper's
        default; the authors tried it, supplementary "Drawbacks: Running Time"). After a raw split, group
        l takes G_alpha and group m G_beta (every generator of a group gets the copy) and both groups take
        the raw split's D/C; after a refinement, every net continues."""
        if prev_kind == "refine":
            self.load_state_dict(state)
            return
        critic = {k[len("critic."):]: v for k, v in state.items() if k.startswith("critic.")}
        for side, group in enumerate((self.group_l, self.group_m)):
            prefix = f"generators.{side}."
            gen = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            for g in group.generators:
                g.load_state_dict(gen)
            group.critic.load_state_dict(critic)

    def training_step(self, method: HCMGAN, real_l: Tensor, real_m: Tensor, noise: float) -> None:
        hp, dev = self.hp, real_l.device
        z = sample_z(hp["gen_batch_size"], self.spec["z_dim"], hp["z_prior"], dev)
        kind = self.hp["noise_kind"]
        fakes = {"l": instance_noise(self.group_l.generate(z), noise, kind),
                 "m": instance_noise(self.group_m.generate(z), noise, kind)}
        reals = {"l": instance_noise(real_l, noise, kind), "m": instance_noise(real_m, noise, kind)}
        groups = {"l": self.group_l, "m": self.group_m}
        label = {"l": LABEL_L, "m": LABEL_M}
        lam = hp["lambda_cls"]
        cross_w = 0.5 if hp["refine_cls_reduction"] == "mean" else 1.0
        logs: dict[str, Tensor] = {}
        for own, ext in (("l", "m"), ("m", "l")):
            critic, other = groups[own].critic, groups[ext].critic
            real, fake, fake_ext = reals[own], fakes[own], fakes[ext]
            # Alg. 4 lines 1-3: D_int on its real batch (from P_{s_int}) and its own fakes.
            d_logits = critic.d_head(critic.trunk(torch.cat([real, fake.detach()])))
            loss_d = bce(d_logits[: len(real)], 1.0) + bce(d_logits[len(real):], 0.0)
            method.update(f"discriminator_{own}", loss_d)
            # Lines 4-5: C_int on internal (label int) and external (label ext) fakes.
            with no_param_grad(critic.trunk):
                feat = critic.trunk(fake)
            with torch.no_grad():
                feat_ext = critic.trunk(fake_ext.detach())
            c_labels = labels_for(len(fake), len(fake_ext), label[own], label[ext], dev)
            c_logits = critic.c_head(torch.cat([feat.detach(), feat_ext]))
            loss_c = F.cross_entropy(c_logits, c_labels)
            method.update(f"classifier_{own}", loss_c)
            # Lines 6-8 with Eq. 6's cross term: G_int must be recognised as `int` by both classifiers.
            with no_param_grad(other.trunk):
                feat_other = other.trunk(fake)
            own_labels = c_labels[: len(fake)]
            loss_cls = F.cross_entropy(critic.c_head(feat), own_labels) + F.cross_entropy(
                other.c_head(feat_other), own_labels)
            loss_g = bce(critic.d_head(feat), 1.0) + lam * cross_w * loss_cls
            method.update(f"generator_{own}", loss_g)
            logs[f"train/loss_d_{own}"] = loss_d.detach()
            logs[f"train/loss_c_{own}"] = loss_c.detach()
            logs[f"train/loss_g_{own}"] = loss_g.detach()
            logs[f"train/acc_c_{own}"] = (c_logits.argmax(1) == c_labels).float().mean()
        method.log_dict(logs, on_step=False, on_epoch=True, prog_bar=False)

    @torch.no_grad()
    def collapse_scores(self, noise: float, device: torch.device) -> list[float]:
        z = sample_z(self.hp["gen_batch_size"], self.spec["z_dim"], self.hp["z_prior"], device)
        out = []
        for group in (self.group_l, self.group_m):
            for g in group.generators:
                noisy = instance_noise(g(z), noise, self.hp["noise_kind"])
                out.append(float(bce(group.critic.d_head(group.critic.trunk(noisy)), 0.0)))
        return out

    def split_members(self) -> list[SplitMember]:
        return [self.group_l.critic.classifier(), self.group_m.critic.classifier()]

    def child_generators(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return ([copy.deepcopy(g) for g in self.group_l.generators],
                [copy.deepcopy(g) for g in self.group_m.generators])


@torch.no_grad()
def first_child_prob(members: Sequence[nn.Module], x: Tensor) -> Tensor:
    """p(first child | x): the ensemble average of the members' softmax (Alg. 3 lines 7-8)."""
    probs = [F.softmax(m(x).float(), dim=1)[:, LABEL_L] for m in members]
    return torch.stack(probs).mean(0)
