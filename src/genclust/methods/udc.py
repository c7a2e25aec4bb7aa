"""UDC: "Learning the Precise Feature for Cluster Assignment" (Gan, Dong, Zhou, Gao, Dong; IEEE TCyb).

The game (paper §III-C, Algorithm 1):

* a generator ``G(y, z)``: ``y`` one-hot, uniform over the K clusters (the "no empty cluster"
  constraint), ``z ~ N(0, I)`` of a small size (§IV-B: use no more noise variables than the data's
  intrinsic features);
* a WGAN-GP critic ``D`` (Eq. 5, gradient penalty lambda = 100);
* a *separate* classifier ``C`` with D's trunk and a K-way softmax head, trained only on generated
  images with their fake labels (Eq. 6);
* per generator step: ``N_critic = 5`` critic updates (a fresh real batch each), ``N_class = 4``
  classifier updates, then one generator update on ``-D(G(y,z)) + eta * CE(C(G(y,z)), y)`` (Eq. 7);
* ``eta_t = eta_0 * gamma ** floor(t / tau)`` with t the generator step (Eq. 8: eta_0 = 10,
  gamma = 1.2, tau = 30,000 of N = 900,000 steps); Adam(1e-4, 0.5, 0.9) for all three players.

Clustering of real data: ``argmax C(x)`` (``cluster_probs`` = softmax of C's logits).

Data flow in Lightning terms: every loader batch (``batch_size`` real images, Algorithm 1's n) is
*one critic step*; after ``N_critic`` of them come the ``N_class`` classifier steps and the
generator step (so an epoch of B batches holds B / N_critic generator steps). G does not change
between two generator steps, so all fakes of one cycle (N_critic + N_class batches) are drawn in
one no-grad forward (``batch_fakes``; same distribution as drawing them one by one).

Schedules (``schedule``):

* ``paper`` (default): Algorithm 1's values, listed in the algorithm's caption.
* ``authors_code``: gyh5421/unified_deep_clustering ``gan_mnist.py`` (peers.md §3.3): eta_0 = 1.0,
  gradient penalty 10, 2 classifier steps, critic and classifier steps doubled at one third of
  training (generator step N/3), a 10-unit critic output (losses averaged over the 10 units, the
  penalty on the gradient of their sum).
  Any explicitly configured value (``eta0``, ``gp_lambda``, ...) overrides the preset.

``tau: auto`` scales tau with the run length the way the paper did for ORL (§IV-D.2: 30,000 of
900,000 steps -> 1,000 of 30,000), i.e. tau = total generator steps * 30,000 / 900,000, so the
staircase spans the whole run (29 increases, eta_0 * 1.2**29 ~ 198 * eta_0 at the end). The total is
``total_gen_steps`` when given, else ``trainer.max_epochs * batches_per_epoch / N_critic`` (with the
authors' doubling accounted for), else ``trainer.max_steps / (optimizer steps per generator step)``.
A run budgeted by ``trainer.max_time`` (and no ``total_gen_steps``) cannot know its step count in
advance: its staircase follows the clock instead, eta_0 * gamma ** floor(30 * elapsed / max_time),
the same 30 stairs spread over the budget (the schedule spans the run on any machine speed).

Architecture (§IV-A, Fig. 2, built on WGAN-GP's MNIST nets [71], DIM = 64):

* G: Linear(z + K -> 4*DIM*s*s) + ReLU -> Deconv5x5(4D -> 2D) + ReLU -> Deconv5x5(2D -> D) + ReLU
  -> Deconv5x5(D -> C) + sigmoid (tanh for ``pixel_range: tanh``); no normalisation layers.
* D and C: Conv5x5(C -> D) -> Conv5x5(D -> 2D) -> Conv5x5(2D -> 4D), LeakyReLU(0.2), no norm, then
  Linear(4D*s*s -> 1) (critic; 10 in the authors' code) or Linear(4D*s*s -> K) (classifier logits).
* Stride 2 everywhere ("5x5 kernel and 2x2 stride"); the generator mirrors the trunk's map sizes and
  crops where the mirror overshoots. That reproduces Fig. 2's rules: 28x28: 28-14-7-4, G 4-8 *crop
  to 7* ("drop one pixel after the first deconvolutional layer")-14-28; 32x32: 4-8-16-32 ("the first
  deconvolution outputs 8x8"); 16x16 (USPS): a 1x1 stride in D/C's first conv and G's last deconv,
  16-16-8-4. Our choice for 8x8 (sklearn digits, not in the paper): the 16x16 rule one level down,
  8-8-4-2 with a 2x2 base map.
* Vector data (``img_shape`` of length 1, the synthetic 8 blobs, §IV-B): three MLPs with 512-512-512
  ReLU hidden layers, linear outputs for G and D.
* Initialisation as in tflib (the TF library of [71] and the authors' code): He-uniform conv/deconv
  (fan counted with the stride), Glorot-uniform linear layers, zero biases.

Deviations and extras are named options with their reasons in ``configs/method/udc.yaml``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genclust.errors import ConfigError
from genclust.losses import gradient_penalty, mean_entropy
from genclust.methods.base import ClusteringMethod
from genclust.nets.blocks import Crop, Reshape, count_parameters, mlp, one_hot
from genclust.precision import use_bf16

# Algorithm 1's caption (paper) and gan_mnist.py L29-43, L308-310 (authors' code, peers.md §3.3).
SCHEDULES: dict[str, dict[str, Any]] = {
    "paper": dict(eta0=10.0, gamma=1.2, gp_lambda=100.0, n_critic=5, n_class=4, critic_outputs=1,
                  double_steps_at=None),
    "authors_code": dict(eta0=1.0, gamma=1.2, gp_lambda=10.0, n_critic=5, n_class=2, critic_outputs=10,
                         double_steps_at=1.0 / 3.0),
}
TAU_REF, STEPS_REF = 30000, 900000  # Eq. 8 / §IV-C: eta x1.2 every 30k of 900k generator steps


# ----------------------------------------------------------------------------- networks
def _tflib_init(module: nn.Module) -> None:
    """tflib's defaults: He-uniform conv/deconv (stride-aware fans), Glorot-uniform linear, zero bias."""
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


class ConvTrunk(nn.Module):
    """D/C trunk: three 5x5 convs (DIM, 2 DIM, 4 DIM) with LeakyReLU(0.2), flatten, linear head."""

    def __init__(self, channels: int, size: int, dim: int, n_out: int) -> None:
        super().__init__()
        strides, sizes = trunk_plan(size)
        widths = [channels, dim, 2 * dim, 4 * dim]
        layers: list[nn.Module] = []
        for c_in, c_out, s in zip(widths[:-1], widths[1:], strides):
            layers += [nn.Conv2d(c_in, c_out, 5, stride=s, padding=2), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(4 * dim * sizes[-1] ** 2, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class DeconvGenerator(nn.Module):
    """G(y, z): linear to a 4 DIM x s x s map, three 5x5 deconvs mirroring the trunk (crop on overshoot)."""

    def __init__(self, in_dim: int, channels: int, size: int, dim: int, out_act: str) -> None:
        super().__init__()
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
                    raise ConfigError(f"UDC generator cannot reach {size}x{size} images")
                layers.append(Crop(target))
                cur = target
            if i < 2:
                layers.append(nn.ReLU())
        layers.append(nn.Sigmoid() if out_act == "sigmoid" else nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, yz: Tensor) -> Tensor:
        return self.net(yz)


def build_nets(img_shape: Sequence[int], n_clusters: int, z_dim: int, dim: int, hidden: Sequence[int],
               critic_outputs: int, pixel_range: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(generator, critic, classifier) for vector data (MLPs, §IV-B) or [C, H, W] images (Fig. 2)."""
    in_dim = z_dim + n_clusters
    if len(img_shape) == 1:
        d = int(img_shape[0])
        hidden = [int(h) for h in hidden]
        gen = mlp([in_dim, *hidden, d], act="relu")
        critic = mlp([d, *hidden, critic_outputs], act="relu")
        classifier = mlp([d, *hidden, n_clusters], act="relu")
    elif len(img_shape) == 3:
        c, h, w = (int(s) for s in img_shape)
        if h != w:
            raise ConfigError(f"UDC's nets need square images, got {h}x{w}")
        gen = DeconvGenerator(in_dim, c, h, dim, "sigmoid" if pixel_range == "unit" else "tanh")
        critic = ConvTrunk(c, h, dim, critic_outputs)
        classifier = ConvTrunk(c, h, dim, n_clusters)
    else:
        raise ConfigError(f"UDC supports img_shape [D] or [C, H, W], got {list(img_shape)}")
    for net in (gen, critic, classifier):
        _tflib_init(net)
    return gen, critic, classifier


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """requires_grad off for ``modules`` while a loss flows *through* them (no weight gradients computed)."""
    params = [p for m in modules for p in m.parameters()]
    state = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, s in zip(params, state):
            p.requires_grad_(s)


# ----------------------------------------------------------------------------- the method
class UDC(ClusteringMethod):
    """Generator G(y, z) + WGAN-GP critic D + separate fake-trained classifier C (Algorithm 1)."""

    generative = True

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        batch_size: int = 100,
        pixel_range: str = "unit",
        schedule: str = "paper",
        z_dim: int = 128,
        z_std: float = 1.0,
        dim: int = 64,
        hidden: Sequence[int] = (512, 512, 512),
        eta0: float | None = None,
        gamma: float | None = None,
        gp_lambda: float | None = None,
        n_critic: int | None = None,
        n_class: int | None = None,
        critic_outputs: int | None = None,
        double_steps_at: float | None = None,
        tau: int | str = "auto",
        total_gen_steps: int | None = None,
        lr: float = 1e-4,
        betas: Sequence[float] = (0.5, 0.9),
        lr_classifier: float | None = None,
        gp_every: int = 1,
        classifier_noise: float = 0.0,
        batch_fakes: bool = True,
        autocast: str = "none",
        channels_last: bool = False,
        diag_every: int = 50,
        divergence_check_every: int = 50,
    ) -> None:
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every)
        self.save_hyperparameters()
        if schedule not in SCHEDULES:
            raise ConfigError(f"udc.schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
        preset = SCHEDULES[schedule]
        given = dict(eta0=eta0, gamma=gamma, gp_lambda=gp_lambda, n_critic=n_critic, n_class=n_class,
                     critic_outputs=critic_outputs, double_steps_at=double_steps_at)
        # explicit values win over the preset (double_steps_at: <= 0 switches the doubling off)
        self.sched = {k: (preset[k] if v is None else v) for k, v in given.items()}
        if self.sched["double_steps_at"] is not None and float(self.sched["double_steps_at"]) <= 0:
            self.sched["double_steps_at"] = None
        if int(self.sched["n_critic"]) < 1 or int(self.sched["n_class"]) < 0:
            raise ConfigError("udc: n_critic must be >= 1 and n_class >= 0")
        if not (tau == "auto" or (isinstance(tau, int) and tau >= 1)):
            raise ConfigError(f"udc.tau must be 'auto' or a positive int, got {tau!r}")
        if autocast not in ("none", "bf16"):
            raise ConfigError(f"udc.autocast must be 'none' or 'bf16', got {autocast!r}")
        self.z_dim = int(z_dim)
        self.z_std = float(z_std)
        self.generator, self.critic, self.classifier = build_nets(
            self.img_shape, self.n_clusters, self.z_dim, int(dim), hidden, int(self.sched["critic_outputs"]),
            pixel_range)
        if channels_last and len(self.img_shape) == 3:  # NHWC conv kernels: same computation, faster on CPU
            for net in (self.generator, self.critic, self.classifier):
                net.to(memory_format=torch.channels_last)
        # checkpointed counters (Python mirrors avoid a host read per step)
        self.register_buffer("gen_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("tau_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("planned_gen_steps", torch.zeros((), dtype=torch.long))
        self._t = 0  # generator steps done
        self._tau = int(tau) if tau != "auto" else 0
        self._total = 0
        self._by_clock = False  # tau=auto on a wall-clock budget: eta's stair follows the elapsed time
        self._stair = 0
        self._critic_in_cycle = 0
        self._critic_calls = 0
        self._last_gp = torch.zeros(())
        self._fakes: dict[str, list[Any]] | None = None
        if int(gp_every) < 1:
            raise ConfigError(f"udc.gp_every must be >= 1, got {gp_every}")
        if float(classifier_noise) < 0:
            raise ConfigError(f"udc.classifier_noise must be >= 0, got {classifier_noise}")

    # ------------------------------------------------------------------ schedule
    def eta(self, t: int | None = None) -> float:
        """Eq. 8 read as eta_t = eta_0 * gamma ** floor(t / tau) ("multiply by 1.2 every 30,000").

        On a wall-clock budget (``_by_clock``) the stair is floor(30 * elapsed fraction) instead; ``t``
        is then ignored and the current stair is used."""
        if self._by_clock:
            return float(self.sched["eta0"]) * float(self.sched["gamma"]) ** self._stair
        t = self._t if t is None else t
        tau = max(self._tau, 1)
        return float(self.sched["eta0"]) * float(self.sched["gamma"]) ** (t // tau)

    def _update_stair(self, batch_idx: int) -> None:
        """Clock-driven staircase: 30 stairs over the budget (stair 29 in the last thirtieth)."""
        stairs = STEPS_REF // TAU_REF
        self._stair = min(int(self.run_progress(batch_idx) * stairs), stairs - 1)

    def steps_now(self, t: int | None = None) -> tuple[int, int]:
        """(N_critic, N_class) at generator step t; the authors' code doubles both at N/3."""
        t = self._t if t is None else t
        n_c, n_k = int(self.sched["n_critic"]), int(self.sched["n_class"])
        frac = self.sched["double_steps_at"]
        if frac is not None and self._total > 0 and t >= int(frac * self._total):
            return 2 * n_c, 2 * n_k
        return n_c, n_k

    def plan_total_gen_steps(self) -> int | None:
        """Generator steps this run will make: configured, from max_epochs, or from max_steps (None: unknown)."""
        hp = self.hparams
        if hp.total_gen_steps:
            return int(hp.total_gen_steps)
        trainer = self._trainer
        if trainer is None:
            return None
        n_c, n_k = int(self.sched["n_critic"]), int(self.sched["n_class"])
        frac = self.sched["double_steps_at"]
        max_epochs = trainer.max_epochs
        batches = trainer.num_training_batches
        if max_epochs is not None and max_epochs > 0 and math.isfinite(float(batches)) and batches > 0:
            critic_steps = max_epochs * int(batches)
            if frac is None:
                return max(critic_steps // n_c, 1)
            # frac * T steps at n_c critic steps, the rest at 2 n_c: critic_steps = T n_c (2 - frac)
            return max(int(critic_steps / (n_c * (2.0 - frac))), 1)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            per = n_c + n_k + 1  # Lightning's global_step counts every optimizer step
            if frac is not None:  # frac * T cycles of `per` steps, the rest of 2 (n_c + n_k) + 1
                per = frac * per + (1 - frac) * (2 * (n_c + n_k) + 1)
            return max(int(trainer.max_steps / per), 1)
        return None

    def on_train_start(self) -> None:
        self._t = int(self.gen_steps)  # resume: one host read, once
        self._critic_in_cycle = 0
        self._fakes = None
        self._by_clock = (self.hparams.tau == "auto" and not self.hparams.total_gen_steps
                          and self.time_budget_s() is not None)
        planned = None if self._by_clock else self.plan_total_gen_steps()
        self._total = planned or 0
        if self._by_clock:
            self._update_stair(0)
            if self.sched["double_steps_at"] is not None:
                raise ConfigError("udc: double_steps_at needs the run length in generator steps: set "
                                  "method.total_gen_steps when budgeting by trainer.max_time")
        elif self.hparams.tau == "auto":
            if planned is None:
                raise ConfigError(
                    "udc.tau=auto needs the run length in generator steps: set trainer.max_epochs, or "
                    "method.total_gen_steps (the expected count) when budgeting by trainer.max_time")
            self._tau = max(1, round(self._total * TAU_REF / STEPS_REF))
        elif self.sched["double_steps_at"] is not None and planned is None:
            raise ConfigError("udc: double_steps_at needs the run length (trainer.max_epochs or total_gen_steps)")
        self.tau_steps.fill_(self._tau)
        self.planned_gen_steps.fill_(self._total)

    # ------------------------------------------------------------------ players
    def _bf16(self) -> bool:
        """bf16 requested and native on this device (else float32: see genclust.precision)."""
        return self.hparams.autocast == "bf16" and use_bf16(self.device.type, "udc.autocast")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._bf16():
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _draw(self, n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, self.n_clusters, (n,), device=self.device)
        z = torch.randn(n, self.z_dim, device=self.device) * self.z_std
        return y, z

    def generate(self, y: Tensor, z: Tensor) -> Tensor:
        x = self.generator(torch.cat([z, one_hot(y, self.n_clusters, z.dtype)], dim=1))
        return x.reshape(len(y), *self.img_shape)

    def critic_scores(self, x: Tensor) -> Tensor:
        """D(x): [N] (or [N, 10] with the authors' 10-unit output)."""
        out = self.critic(x).float()
        return out.squeeze(1) if out.shape[1] == 1 else out

    @torch.no_grad()
    def _refill_fakes(self, n: int) -> None:
        """All fakes of one cycle (N_critic critic batches, N_class labelled classifier batches)."""
        n_c, n_k = self.steps_now()
        if self.hparams.batch_fakes:
            y, z = self._draw((n_c + n_k) * n)
            with self._autocast():
                x = self.generate(y, z).float()
            xs, ys = list(x.split(n)), list(y.split(n))
        else:  # one forward per step, as Algorithm 1 is written (reference for tests / timings)
            xs, ys = [], []
            for _ in range(n_c + n_k):
                y, z = self._draw(n)
                with self._autocast():
                    xs.append(self.generate(y, z).float())
                ys.append(y)
        self._fakes = {"critic": xs[:n_c], "class_x": xs[n_c:], "class_y": ys[n_c:]}

    def critic_loss(self, real: Tensor, fake: Tensor, with_gp: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """Eq. 5: (L_D, Wasserstein estimate mean D(real) - mean D(fake), gradient penalty or None).

        With ``gp_every = k > 1`` (lazy regularisation, our budget option) the penalty is computed on every
        k-th critic step only, weighted k * lambda, so its average weight stays lambda.
        """
        n = len(real)
        with self._autocast():
            scores = self.critic_scores(torch.cat([real, fake]))  # one forward for both halves
            gp = gradient_penalty(self.critic_scores, real, fake, per_sample_alpha=True) if with_gp else None
        w = scores[:n].mean() - scores[n:].mean()
        if gp is None:
            return -w, w.detach(), None
        weight = float(self.sched["gp_lambda"]) * int(self.hparams.gp_every)
        return -w + weight * gp.float(), w.detach(), gp.detach()

    def classify_fakes(self, fake: Tensor) -> Tensor:
        """C's logits on generated images during training, through ``classifier_noise`` when set.

        Gaussian noise on C's input (our budget option, not the paper's) keeps C from telling the fake
        clusters apart by imperceptible pixel patterns: G must then carry the cluster id in visible
        features, which are the ones that transfer to real images."""
        if self.hparams.classifier_noise > 0:
            fake = fake + float(self.hparams.classifier_noise) * torch.randn_like(fake)
        return self.classifier(fake).float()

    def classifier_loss(self, fake: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 6: cross-entropy of C on generated images against their fake labels (and logits)."""
        with self._autocast():
            logits = self.classify_fakes(fake)
        return F.cross_entropy(logits, y), logits

    # ------------------------------------------------------------------ training
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        n = len(real)
        if self._fakes is None:
            self._refill_fakes(n)
        assert self._fakes is not None
        # --- one critic step per loader batch (Algorithm 1 lines 2-11)
        fake = self._fakes["critic"][self._critic_in_cycle][:n]
        with_gp = self._critic_calls % int(self.hparams.gp_every) == 0
        loss_d, w, gp = self.critic_loss(real, fake, with_gp)
        self.update("critic", loss_d)
        self._critic_calls += 1
        if gp is not None:
            self._last_gp = gp
        self._critic_in_cycle += 1
        if self._critic_in_cycle < len(self._fakes["critic"]):
            return
        # --- N_class classifier steps on generated images with fake labels (lines 12-20)
        loss_c = torch.zeros((), device=self.device)
        for xk, yk in zip(self._fakes["class_x"], self._fakes["class_y"]):
            loss_c, _ = self.classifier_loss(xk[:n], yk[:n])
            self.update("classifier", loss_c)
        # --- generator step (lines 21-29)
        if self._by_clock:
            self._update_stair(batch_idx)
        eta = self.eta()
        y, z = self._draw(n)
        with frozen(self.critic, self.classifier):  # gradients flow through D and C to G only
            with self._autocast():
                x_fake = self.generate(y, z)
                d_fake = self.critic_scores(x_fake)
                logits = self.classify_fakes(x_fake)
            ce = F.cross_entropy(logits, y)
            loss_g = -d_fake.mean() + eta * ce
            self.update("generator", loss_g)
        self._t += 1
        self.gen_steps.add_(1)
        self._critic_in_cycle = 0
        self._fakes = None
        self._log_step(loss_d, w, self._last_gp, loss_c, loss_g, ce, logits.detach(), y, eta, real)

    def _log_step(self, loss_d: Tensor, w: Tensor, gp: Tensor, loss_c: Tensor, loss_g: Tensor, ce: Tensor,
                  logits: Tensor, y: Tensor, eta: float, real: Tensor) -> None:
        n = len(y)
        logs = {
            "train/loss_d": loss_d.detach(),
            "train/wasserstein": w,  # mean D(real) - mean D(fake) of the last critic batch (Fig. 3 b/f)
            "train/gp": gp,
            "train/loss_c": loss_c.detach(),
            "train/loss_g": loss_g.detach(),
            "train/ce_fake": ce.detach(),  # L_entropy, the upper bound of Eq. 3
            "train/entropy_fake": mean_entropy(logits),  # E H(q(y|x)) on fakes (Fig. 3 a/e)
            "train/fake_acc": (logits.argmax(1) == y).float().mean(),  # fake classifying accuracy
            "train/eta": eta,
            "train/gen_step": float(self._t),
        }
        every = max(int(self.hparams.diag_every), 1)
        if self._t % every == 0:
            with torch.no_grad():
                real_logits = self.classifier(real).float()
            logs["train/entropy_real"] = mean_entropy(real_logits)  # E H(q(y|x)) on real data
            # cluster-size balance on the real batch (1 = uniform use of the K clusters)
            counts = torch.bincount(real_logits.argmax(1), minlength=self.n_clusters).float()
            p = counts / counts.sum()
            logs["train/real_cluster_balance"] = -(p * p.clamp_min(1e-12).log()).sum() / math.log(
                max(self.n_clusters, 2))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        betas = tuple(float(b) for b in self.hparams.betas)
        lr = float(self.hparams.lr)
        lr_c = float(self.hparams.lr_classifier) if self.hparams.lr_classifier else lr
        return [
            torch.optim.Adam(self.critic.parameters(), lr=lr, betas=betas),
            torch.optim.Adam(self.classifier.parameters(), lr=lr_c, betas=betas),
            torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas),
        ]

    def optimizer_names(self) -> list[str]:
        return ["critic", "classifier", "generator"]

    # ------------------------------------------------------------------ contract
    def cluster_probs(self, x: Tensor) -> Tensor:
        """softmax C(x): the approximate posterior q(y|x); its argmax is the cluster (§III-C)."""
        return F.softmax(self.classifier(x.reshape(len(x), *self.img_shape)).float(), dim=1)

    @torch.no_grad()
    def sample(self, n: int, cluster: int | None = None) -> Tensor:
        was_training = self.training
        self.eval()
        try:
            y, z = self._draw(n)
            if cluster is not None:
                y = torch.full_like(y, int(cluster))
            return self.generate(y, z)
        finally:
            self.train(was_training)

    def describe(self) -> dict[str, Any]:
        return {
            "inference": "argmax softmax C(x) (classifier trained on generated images only)",
            "schedule": self.hparams.schedule,
            "autocast": "bf16" if self._bf16() else "none",  # what ran (a bf16 request falls back on CPUs without it)
            "resolved": {**{k: v for k, v in self.sched.items()}, "tau": int(self.tau_steps),
                         "planned_gen_steps": int(self.planned_gen_steps)},
            "gen_steps": int(self.gen_steps),
            "eta_final": self.eta(int(self.gen_steps)),
            "eta_schedule": "clock (30 stairs over trainer.max_time)" if self._by_clock else "generator steps",
            "parameters": {"generator": count_parameters(self.generator), "critic": count_parameters(self.critic),
                           "classifier": count_parameters(self.classifier)},
        }

    # ------------------------------------------------------------------ figures
    @torch.no_grad()
    def save_figures(self, out_dir: Path) -> list[Path]:
        """Generated samples by cluster id (Fig. 3 d/h); for 2-D data the clustering surface (supp. Fig. 2)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if len(self.img_shape) == 3:
            return [self._cluster_grid(out_dir / "udc_samples_by_cluster.png")]
        if self.img_shape[0] == 2:
            return [self._surface_plot(out_dir / "udc_clustering_surface.png")]
        return []

    def _cluster_grid(self, path: Path, per_row: int = 10) -> Path:
        from torchvision.utils import save_image

        was_training = self.training
        self.eval()
        try:
            gen = torch.Generator(device="cpu").manual_seed(0)
            z = (torch.randn(per_row, self.z_dim, generator=gen) * self.z_std).to(self.device)
            rows = [self.generate(torch.full((per_row,), k, device=self.device, dtype=torch.long), z)
                    for k in range(self.n_clusters)]  # same z across rows: the row is the cluster id
        finally:
            self.train(was_training)
        save_image(self.to_unit_range(torch.cat(rows)).float().cpu(), path, nrow=per_row, padding=2, pad_value=1.0)
        return path

    def _surface_plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fake = self.sample(2000).float().cpu()
        real = None
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "fit_set", None) is not None:
            real = dm.fit_set.x[:2000].float()
        pts = fake if real is None else torch.cat([fake, real])
        lo, hi = pts.min(0).values - 0.3, pts.max(0).values + 0.3
        gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 300), torch.linspace(lo[1], hi[1], 300), indexing="xy")
        grid = torch.stack([gx.flatten(), gy.flatten()], 1)
        lab = self.assign_in_batches(grid, 8192)[1].reshape(gx.shape)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.contourf(gx, gy, lab, levels=self.n_clusters, cmap="tab10", alpha=0.35)
        if real is not None:
            ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", marker="+", label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=3, c="tab:green", marker="+", label="generated")
        ax.legend(loc="upper right", fontsize=7)
        ax.set_title("UDC clustering surface (argmax C)")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path
