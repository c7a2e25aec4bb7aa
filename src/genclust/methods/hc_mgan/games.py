"""HC-MGAN's two games (one Lightning fit each; the LightningModule delegates ``training_step`` here).

* :class:`RawSplitGame` (Algorithm 2): G_alpha, G_beta (same z batch), one D, one C.
* :class:`RefinementGame` (Algorithms 3-4, Eq. 6): groups l and m, each with its own G (one per group in
  the paper, ``gens_per_group=2`` gives the authors' code), D and C; groups trained alternately.

The networks (``genclust.nets.hc_mgan``) come from the method's config factories: a game is handed
``make_generator`` / ``make_critic`` and builds fresh nets; ``players()`` names each optimizer, the config
player (``method.optim.<player>``) it is built from, and the parameters it updates.

Losses follow the Algorithms' "criterion on the batch" wording, i.e. means over the concatenated batch
(the code does the same); only the refinement's cross-group generator term is a choice (see RefinementGame).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.nets.blocks import frozen
from genclust.nets.hc_mgan import Critic, SplitMember
from genclust.nets.init import initialize

LABEL_L, LABEL_M = 0, 1  # class 0 = first child (l / alpha), class 1 = second child (m / beta)
NOISE_KINDS = ("multiplicative", "additive")
Z_PRIORS = ("uniform01", "uniform11", "normal")
D_FAKE_WEIGHTINGS = ("per_batch", "eq2")
FAKE_DRAWS = ("once", "per_group")


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"hc_mgan: {name} must be {'|'.join(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class GameSettings:
    """What a game needs besides its nets (built by the method from its hyperparameters)."""

    z_dim: int = 100
    z_prior: str = "uniform01"
    gen_batch_size: int = 100
    init: str = "default"
    lambda_cls: float = 1.0
    raw_lambda_squared: bool = False
    gens_per_group: int = 1
    cls_reduction: str = "sum"
    fake_draw: str = "once"
    d_fake_weighting: str = "per_batch"
    noise_kind: str = "multiplicative"

    def __post_init__(self) -> None:
        _choice("z_prior", self.z_prior, Z_PRIORS)
        _choice("refinement.cls_reduction", self.cls_reduction, ("sum", "mean"))
        _choice("refinement.fake_draw", self.fake_draw, FAKE_DRAWS)
        _choice("d_fake_weighting", self.d_fake_weighting, D_FAKE_WEIGHTINGS)
        _choice("noise.kind", self.noise_kind, NOISE_KINDS)
        if int(self.gens_per_group) < 1:
            raise ConfigError("hc_mgan: refinement.gens_per_group must be >= 1")


class Method(Protocol):  # what a game calls back (the LightningModule, or a test's stand-in)
    def update(self, name: str, loss: Tensor) -> None: ...
    def log_epoch_mean(self, logs: dict[str, Any]) -> None: ...


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


def bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def labels_for(n_first: int, n_second: int, first: int, second: int, device: torch.device) -> Tensor:
    return torch.cat([torch.full((n_first,), first, dtype=torch.long, device=device),
                      torch.full((n_second,), second, dtype=torch.long, device=device)])


def d_loss(critic: Critic, real: Tensor, fake: Tensor, n_gens: int, weighting: str) -> Tensor:
    """BCE(real, 1) + w BCE(fakes, 0), one trunk pass over both (LayerNorm is per example). ``per_batch``:
    w = 1, the fakes of every generator as one batch (the code, ``models/gan.py`` L104-117); ``eq2``: w =
    number of generators, one expectation per generator as in Eq. 2 (raw split: 1 real : 2 fake terms)."""
    logits = critic.d_head(critic.trunk(torch.cat([real, fake.detach()])))
    fake_term = bce(logits[len(real):], 0.0)
    return bce(logits[: len(real)], 1.0) + (float(n_gens) * fake_term if weighting == "eq2" else fake_term)


Players = list[tuple[str, str, Iterable[nn.Parameter]]]


# --------------------------------------------------------------------------------- raw split
class RawSplitGame(nn.Module):
    """Algorithm 2: two generators (one shared z batch), one discriminator, one classifier."""

    kind = "raw"

    def __init__(self, make_generator: Callable[[], nn.Module], make_critic: Callable[[], Critic],
                 settings: GameSettings) -> None:
        super().__init__()
        self.hp = settings
        self.generators = nn.ModuleList([make_generator(), make_generator()])  # alpha -> l, beta -> m
        self.critic = make_critic()
        initialize(self, settings.init)

    def players(self) -> Players:
        """(optimizer name, config player of ``method.optim``, parameters), in optimizer order."""
        return [("discriminator", "discriminator", self.critic.discriminator_parameters()),
                ("classifier", "classifier", self.critic.c_head.parameters()),
                ("generator", "generator", self.generators.parameters())]

    def generate(self, z: Tensor) -> Tensor:
        return torch.cat([g(z) for g in self.generators])

    def training_step(self, method: Method, x_real: Tensor, noise: float) -> None:
        hp, dev = self.hp, x_real.device
        n_gen = hp.gen_batch_size
        z = sample_z(n_gen, hp.z_dim, hp.z_prior, dev)
        fake = instance_noise(self.generate(z), noise, hp.noise_kind)  # G's gradient flows through the noise
        real = instance_noise(x_real, noise, hp.noise_kind)
        labels = labels_for(n_gen, n_gen, LABEL_L, LABEL_M, dev)
        critic = self.critic

        # 1. D: BCE(real, 1) + BCE(fake, 0) (d_fake_weighting).
        loss_d = d_loss(critic, real, fake, len(self.generators), hp.d_fake_weighting)
        method.update("discriminator", loss_d)

        # Features of the fakes under the updated trunk, with a graph to the generators only.
        with frozen(critic.trunk):
            feat = critic.trunk(fake)
        # 2. C: CE on the generated samples labelled by generator (linear head only).
        c_logits = critic.c_head(feat.detach())
        loss_c = F.cross_entropy(c_logits, labels)
        method.update("classifier", loss_c)

        # 3. G: non-saturating adversarial + lambda * CE (lambda^2 in the authors' raw-split code).
        lam = hp.lambda_cls ** 2 if hp.raw_lambda_squared else hp.lambda_cls
        loss_g = bce(critic.d_head(feat), 1.0) + lam * F.cross_entropy(critic.c_head(feat), labels)
        method.update("generator", loss_g)

        acc_c = (c_logits.argmax(1) == labels).float().mean()
        method.log_epoch_mean({"train/loss_d": loss_d.detach(), "train/loss_c": loss_c.detach(),
                               "train/loss_g": loss_g.detach(), "train/acc_c": acc_c})

    @torch.no_grad()
    def collapse_scores(self, noise: float, device: torch.device) -> list[float]:
        """D's BCE (fake label) on each generator's samples; ~0 means D spots every fake: a collapse."""
        hp = self.hp
        z = sample_z(hp.gen_batch_size, hp.z_dim, hp.z_prior, device)
        return [float(bce(self.critic.d_head(self.critic.trunk(instance_noise(g(z), noise, hp.noise_kind))), 0.0))
                for g in self.generators]

    def split_members(self) -> list[SplitMember]:
        return [self.critic.classifier()]

    def child_generators(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [copy.deepcopy(self.generators[0])], [copy.deepcopy(self.generators[1])]


# -------------------------------------------------------------------------------- refinement
class RefinementGroup(nn.Module):
    def __init__(self, make_generator: Callable[[], nn.Module], make_critic: Callable[[], Critic], n_gen: int) -> None:
        super().__init__()
        self.generators = nn.ModuleList([make_generator() for _ in range(n_gen)])
        self.critic = make_critic()

    def generate(self, z: Tensor) -> Tensor:
        return torch.cat([g(z) for g in self.generators])


class RefinementGame(nn.Module):
    """Algorithms 3-4: groups l and m, each (G, D, C) with C sharing its group's D trunk.

    Per iteration one z batch feeds every generator; x_hat_l, x_hat_m are drawn once (Alg. 3 line 3;
    ``fake_draw: per_group`` redraws them before group m, as the code does), then group l and group m are
    trained in turn (Alg. 4): D_int on its own real/fake batch, C_int on (x_hat_int, x_hat_ext) with both
    groups' labels, and G_int on BCE(D_int(x_hat_int), 1) + lambda * [CE(C_int(x_hat_int), int) +
    CE(C_ext(x_hat_int), int)], the two G_int-dependent terms of Eq. 6 ("sum", paper); ``cls_reduction=mean``
    averages them as the authors' code does (``models/gan.py`` L249-271). Both classifiers use the global
    labels l = 0, m = 1, so the two-classifier ensemble is a plain average of their softmaxes.
    """

    kind = "refine"
    groups_names = ("l", "m")

    def __init__(self, make_generator: Callable[[], nn.Module], make_critic: Callable[[], Critic],
                 settings: GameSettings) -> None:
        super().__init__()
        self.hp = settings
        self.group_l = RefinementGroup(make_generator, make_critic, settings.gens_per_group)
        self.group_m = RefinementGroup(make_generator, make_critic, settings.gens_per_group)
        initialize(self, settings.init)

    def players(self) -> Players:
        out: Players = []
        for name, group in zip(self.groups_names, (self.group_l, self.group_m)):
            out += [(f"discriminator_{name}", "discriminator", group.critic.discriminator_parameters()),
                    (f"classifier_{name}", "classifier", group.critic.c_head.parameters()),
                    (f"generator_{name}", "generator", group.generators.parameters())]
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

    def _fakes(self, noise: float, device: torch.device) -> dict[str, Tensor]:
        hp = self.hp
        z = sample_z(hp.gen_batch_size, hp.z_dim, hp.z_prior, device)
        return {"l": instance_noise(self.group_l.generate(z), noise, hp.noise_kind),
                "m": instance_noise(self.group_m.generate(z), noise, hp.noise_kind)}

    def training_step(self, method: Method, real_l: Tensor, real_m: Tensor, noise: float) -> None:
        hp, dev = self.hp, real_l.device
        fakes = self._fakes(noise, dev)
        reals = {"l": instance_noise(real_l, noise, hp.noise_kind), "m": instance_noise(real_m, noise, hp.noise_kind)}
        groups = {"l": self.group_l, "m": self.group_m}
        label = {"l": LABEL_L, "m": LABEL_M}
        cross_w = 0.5 if hp.cls_reduction == "mean" else 1.0
        logs: dict[str, Tensor] = {}
        for own, ext in (("l", "m"), ("m", "l")):
            if own == "m" and hp.fake_draw == "per_group":  # the code: new fakes after group l's update
                fakes = self._fakes(noise, dev)
            critic, other = groups[own].critic, groups[ext].critic
            real, fake, fake_ext = reals[own], fakes[own], fakes[ext]
            # Alg. 4 lines 1-3: D_int on its real batch (from P_{s_int}) and its own fakes.
            loss_d = d_loss(critic, real, fake, len(groups[own].generators), hp.d_fake_weighting)
            method.update(f"discriminator_{own}", loss_d)
            # Lines 4-5: C_int on internal (label int) and external (label ext) fakes.
            with frozen(critic.trunk):
                feat = critic.trunk(fake)
            with torch.no_grad():
                feat_ext = critic.trunk(fake_ext.detach())
            c_labels = labels_for(len(fake), len(fake_ext), label[own], label[ext], dev)
            c_logits = critic.c_head(torch.cat([feat.detach(), feat_ext]))
            loss_c = F.cross_entropy(c_logits, c_labels)
            method.update(f"classifier_{own}", loss_c)
            # Lines 6-8 with Eq. 6's cross term: G_int must be recognised as `int` by both classifiers.
            with frozen(other.trunk):
                feat_other = other.trunk(fake)
            own_labels = c_labels[: len(fake)]
            loss_cls = F.cross_entropy(critic.c_head(feat), own_labels) + F.cross_entropy(
                other.c_head(feat_other), own_labels)
            loss_g = bce(critic.d_head(feat), 1.0) + hp.lambda_cls * cross_w * loss_cls
            method.update(f"generator_{own}", loss_g)
            logs[f"train/loss_d_{own}"] = loss_d.detach()
            logs[f"train/loss_c_{own}"] = loss_c.detach()
            logs[f"train/loss_g_{own}"] = loss_g.detach()
            logs[f"train/acc_c_{own}"] = (c_logits.argmax(1) == c_labels).float().mean()
        method.log_epoch_mean(logs)

    @torch.no_grad()
    def collapse_scores(self, noise: float, device: torch.device) -> list[float]:
        hp = self.hp
        z = sample_z(hp.gen_batch_size, hp.z_dim, hp.z_prior, device)
        out = []
        for group in (self.group_l, self.group_m):
            for g in group.generators:
                noisy = instance_noise(g(z), noise, hp.noise_kind)
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
