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
  gamma = 1.2, tau = 30,000 of N = 900,000 steps); Adam(1e-4, 0.5, 0.9) for all three players
  (``method.optim``).

Clustering of real data: ``argmax C(x)`` (``cluster_probs`` = softmax of C's logits).

Data flow in Lightning terms: every loader batch (``batch_size`` real images, Algorithm 1's n) is
*one critic step*; after ``N_critic`` of them come the ``N_class`` classifier steps and the generator
step. G is fixed between generator steps, so all fakes of one cycle are drawn in one no-grad forward
(``batch_fakes``; same distribution as drawing them one by one).

Schedules (``schedule``): ``paper`` (default), Algorithm 1's caption; ``authors_code``,
gyh5421/unified_deep_clustering ``gan_mnist.py`` (peers.md §3.3): eta_0 = 1.0, gradient penalty 10,
2 classifier steps, critic and classifier steps doubled at generator step N/3, a 10-unit critic output
(losses averaged over the units). Any explicitly configured value (``eta0``, ...) overrides the preset.

``tau: auto`` scales tau with the run as the paper did for ORL (§IV-D.2: 30,000 of 900,000 steps ->
1,000 of 30,000): tau = total generator steps * 30,000 / 900,000, so the staircase spans the run. The
total is ``total_gen_steps`` when given, else derived from ``trainer.max_epochs`` or ``max_steps``. On a
``trainer.max_time`` budget without ``total_gen_steps`` the stairs follow the clock (floor(30 * elapsed
fraction)); with a pinned ``total_gen_steps`` there, ``replan_at`` re-plans the total (and tau) from the
step rate measured over that first fraction of the budget. In every mode the stair index stops at the
paper's last stair (29): eta never exceeds eta_0 * gamma**29, however fast the host.

Networks (``method.nets``, ``genclust.nets.wgan_gp``): WGAN-GP's MNIST nets [71] with Fig. 2's map-size
rules (images), 512-512-512 ReLU MLPs (vector data, §IV-B), tflib's initialisation (He/Glorot uniform,
as [71] and the authors' code). G ends in a sigmoid (tanh for ``pixel_range: tanh``; linear on vectors).

Deviations and extras are named options with their reasons in ``configs/method/udc.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genclust.errors import ConfigError
from genclust.losses import gradient_penalty, mean_entropy
from genclust.methods.base import ClusteringMethod
from genclust.nets.blocks import count_parameters, eval_mode, frozen, one_hot
from genclust.nets.init import initialize

# Algorithm 1's caption (paper) and gan_mnist.py L29-43, L308-310 (authors' code, peers.md §3.3).
SCHEDULES: dict[str, dict[str, Any]] = {
    "paper": dict(eta0=10.0, gamma=1.2, gp_lambda=100.0, n_critic=5, n_class=4, critic_outputs=1,
                  double_steps_at=None),
    "authors_code": dict(eta0=1.0, gamma=1.2, gp_lambda=10.0, n_critic=5, n_class=2, critic_outputs=10,
                         double_steps_at=1.0 / 3.0),
}
TAU_REF, STEPS_REF = 30000, 900000  # Eq. 8 / §IV-C: eta x1.2 every 30k of 900k generator steps
LAST_STAIR = STEPS_REF // TAU_REF - 1  # 29: the paper's last stair (eta_0 * 1.2**29 at step 900,000)


class UDC(ClusteringMethod):
    """Generator G(y, z) + WGAN-GP critic D + separate fake-trained classifier C (Algorithm 1)."""

    generative = True

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        nets: Mapping[str, Any],
        optim: Mapping[str, Any],
        readouts: Mapping[str, Any] | None = None,
        clustering: str = "argmax",
        batch_size: int = 100,
        pixel_range: str = "unit",
        schedule: str = "paper",
        z_dim: int = 128,
        z_std: float = 1.0,
        eta0: float | None = None,
        gamma: float | None = None,
        gp_lambda: float | None = None,
        n_critic: int | None = None,
        n_class: int | None = None,
        critic_outputs: int | None = None,
        double_steps_at: float | None = None,
        tau: int | str = "auto",
        total_gen_steps: int | None = None,
        replan_at: float | None = 0.1,
        gp_every: int = 1,
        classifier_noise: float = 0.0,
        batch_fakes: bool = True,
        autocast: str = "none",
        channels_last: bool = False,
        diag_every: int = 50,
        divergence_check_every: int = 50,
    ) -> None:
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every, nets=nets,
                         optim=optim, readouts=readouts, clustering=clustering, autocast=autocast)
        self.save_hyperparameters(ignore=["nets", "optim", "readouts"])
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
        if replan_at is not None and not 0.0 < float(replan_at) < 1.0:
            raise ConfigError(f"udc.replan_at must be in (0, 1) or null, got {replan_at}")
        if int(gp_every) < 1 or float(classifier_noise) < 0:
            raise ConfigError(f"udc: gp_every must be >= 1 and classifier_noise >= 0, got {gp_every}, {classifier_noise}")
        self.z_dim = int(z_dim)
        self.z_std = float(z_std)
        image = len(self.img_shape) == 3
        out_act = ("sigmoid" if pixel_range == "unit" else "tanh") if image else "none"  # linear G on vectors
        # Build order = RNG order (generator, critic, classifier), then tflib's init in the same order.
        self.generator = self.build_net("generator", in_dim=self.z_dim + self.n_clusters, img_shape=self.img_shape,
                                        out_act=out_act)
        self.critic = self.build_net("critic", img_shape=self.img_shape, n_out=int(self.sched["critic_outputs"]))
        self.classifier = self.build_net("classifier", img_shape=self.img_shape, n_out=self.n_clusters)
        for net in (self.generator, self.critic, self.classifier):
            initialize(net, "tflib")
        if channels_last and image:  # NHWC conv kernels: same computation, faster on CPU
            self.to(memory_format=torch.channels_last)
        # checkpointed counters (Python mirrors avoid a host read per step)
        for name in ("gen_steps", "tau_steps", "planned_gen_steps"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))
        self._t = 0  # generator steps done
        self._tau = int(tau) if tau != "auto" else 0
        self._total = 0
        self._by_clock = False  # tau=auto on a wall-clock budget: eta's stair follows the elapsed time
        self._replan = False  # pinned total_gen_steps on a wall-clock budget: re-plan once at replan_at
        self._eta_mode = "generator steps"
        self._stair = 0  # clock mode: the current stair; step mode: a floor (the stair never goes down)
        self._critic_in_cycle = 0
        self._critic_calls = 0
        self._last_gp = torch.zeros(())
        self._next_real_diag = 0  # generator step from which the next written log also holds the real-batch diagnostics
        self._fakes: dict[str, list[Any]] | None = None
        self._restored_cycle: dict[str, Any] | None = None  # on_load_checkpoint -> on_train_start

    # ------------------------------------------------------------------ schedule
    def stair(self, t: int | None = None) -> int:
        """Eq. 8's stair: floor(t / tau) (the clock's stair on a wall-clock budget), at most LAST_STAIR."""
        if self._by_clock:
            return self._stair
        t = self._t if t is None else t
        return max(self._stair, min(t // max(self._tau, 1), LAST_STAIR))

    def eta(self, t: int | None = None) -> float:
        """Eq. 8 read as eta_t = eta_0 * gamma ** floor(t / tau) ("multiply by 1.2 every 30,000"), the stair
        capped at the paper's last one (29). On a wall-clock budget ``t`` is ignored (the current stair)."""
        return float(self.sched["eta0"]) * float(self.sched["gamma"]) ** self.stair(t)

    def _update_stair(self, batch_idx: int) -> None:
        """Clock-driven staircase: 30 stairs over the budget (stair 29 in the last thirtieth)."""
        self._stair = min(int(self.run_progress(batch_idx) * (LAST_STAIR + 1)), LAST_STAIR)

    def _maybe_replan(self, batch_idx: int) -> None:
        """Pinned ``total_gen_steps`` on a ``max_time`` budget: once ``replan_at`` of the budget has passed,
        total = steps so far / elapsed fraction (the host's measured rate), tau follows; the stair reached
        so far is kept as a floor, so eta never steps down."""
        done = self.run_progress(batch_idx)
        if done < float(self.hparams.replan_at) or self._t < 1:
            return
        self._replan = False
        self._eta_mode = f"generator steps, re-planned at {self._t} steps from the measured rate"
        self._stair = self.stair()
        self._total = max(round(self._t / done), 1)
        self._tau = max(1, round(self._total * TAU_REF / STEPS_REF))
        self.tau_steps.fill_(self._tau)
        self.planned_gen_steps.fill_(self._total)

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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # a cycle (N_critic critic steps on pre-drawn fakes, then C and G) may straddle the checkpoint's epoch end:
        # keep its fakes and position so that a resumed run finishes the same cycle
        fakes = None if self._fakes is None else {k: [t.detach().cpu() for t in v] for k, v in self._fakes.items()}
        checkpoint["udc_cycle"] = {"critic_in_cycle": self._critic_in_cycle, "critic_calls": self._critic_calls,
                                   "fakes": fakes}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored_cycle = checkpoint.get("udc_cycle")

    def on_train_start(self) -> None:
        self._t = int(self.gen_steps)  # resume: one host read, once
        cycle, self._restored_cycle = self._restored_cycle, None
        self._critic_in_cycle = int(cycle["critic_in_cycle"]) if cycle else 0
        self._critic_calls = int(cycle["critic_calls"]) if cycle else self._critic_calls
        self._fakes = None
        if cycle and cycle["fakes"] is not None:
            self._fakes = {k: [t.to(self.device) for t in v] for k, v in cycle["fakes"].items()}
        self._stair = 0
        on_clock = self.time_budget_s() is not None
        auto = self.hparams.tau == "auto"
        self._by_clock = auto and not self.hparams.total_gen_steps and on_clock
        self._replan = auto and bool(self.hparams.total_gen_steps) and on_clock and bool(self.hparams.replan_at)
        self._eta_mode = "clock (30 stairs over trainer.max_time)" if self._by_clock else "generator steps"
        planned = None if self._by_clock else self.plan_total_gen_steps()
        self._total = planned or 0
        if self._by_clock:
            self._update_stair(0)
            if self.sched["double_steps_at"] is not None:
                raise ConfigError("udc: double_steps_at needs the run length in generator steps: set "
                                  "method.total_gen_steps when budgeting by trainer.max_time")
        elif auto:
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
            with self.autocast():
                x = self.generate(y, z).float()
            xs, ys = list(x.split(n)), list(y.split(n))
        else:  # one forward per step, as Algorithm 1 is written (reference for tests / timings)
            xs, ys = [], []
            for _ in range(n_c + n_k):
                y, z = self._draw(n)
                with self.autocast():
                    xs.append(self.generate(y, z).float())
                ys.append(y)
        self._fakes = {"critic": xs[:n_c], "class_x": xs[n_c:], "class_y": ys[n_c:]}

    def critic_loss(self, real: Tensor, fake: Tensor, with_gp: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """Eq. 5: (L_D, Wasserstein estimate mean D(real) - mean D(fake), gradient penalty or None).

        With ``gp_every = k > 1`` (lazy regularisation, our budget option) the penalty is computed on every
        k-th critic step only, weighted k * lambda, so its average weight stays lambda.
        """
        n = len(real)
        with self.autocast():
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
        with self.autocast():
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
        elif self._replan:
            self._maybe_replan(batch_idx)
        eta = self.eta()
        y, z = self._draw(n)
        with frozen(self.critic, self.classifier):  # gradients flow through D and C to G only
            with self.autocast():
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
        if not self.logs_this_step():  # the loggers write every log_every_n_steps batches; skip the rest
            return
        n = len(y)
        logs = {
            "train/loss_d": loss_d.detach(), "train/gp": gp, "train/loss_c": loss_c.detach(),
            "train/loss_g": loss_g.detach(), "train/eta": eta, "train/gen_step": float(self._t),
            "train/wasserstein": w,  # mean D(real) - mean D(fake) of the last critic batch (Fig. 3 b/f)
            "train/ce_fake": ce.detach(),  # L_entropy, the upper bound of Eq. 3
            "train/entropy_fake": mean_entropy(logits),  # E H(q(y|x)) on fakes (Fig. 3 a/e)
            "train/fake_acc": (logits.argmax(1) == y).float().mean(),  # fake classifying accuracy
        }
        if self._t >= self._next_real_diag:
            self._next_real_diag = self._t + max(int(self.hparams.diag_every), 1)
            with torch.no_grad():
                real_logits = self.classifier(real).float()
            logs["train/entropy_real"] = mean_entropy(real_logits)  # E H(q(y|x)) on real data
            # cluster-size balance on the real batch (1 = uniform use of the K clusters)
            counts = torch.bincount(real_logits.argmax(1), minlength=self.n_clusters).float()
            p = counts / counts.sum()
            logs["train/real_cluster_balance"] = -(p * p.clamp_min(1e-12).log()).sum() / math.log(
                max(self.n_clusters, 2))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)

    def optimizer_names(self) -> list[str]:
        return ["critic", "classifier", "generator"]

    # ------------------------------------------------------------------ contract
    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """softmax C(x): the approximate posterior q(y|x); its argmax is the cluster (§III-C)."""
        return F.softmax(self.classifier(x.reshape(len(x), *self.img_shape)).float(), dim=1)

    @torch.no_grad()
    def sample(self, n: int, cluster: int | None = None) -> Tensor:
        with eval_mode(self):
            y, z = self._draw(n)
            if cluster is not None:
                y = torch.full_like(y, int(cluster))
            return self.generate(y, z)

    def describe(self) -> dict[str, Any]:
        return {
            "inference": "argmax softmax C(x) (classifier trained on generated images only)",
            "schedule": self.hparams.schedule,
            "autocast": "bf16" if self.autocast_active() else "none",  # what ran (bf16 falls back without it)
            "resolved": {**{k: v for k, v in self.sched.items()}, "tau": int(self.tau_steps),
                         "planned_gen_steps": int(self.planned_gen_steps)},
            "gen_steps": int(self.gen_steps),
            "eta_final": self.eta(int(self.gen_steps)),
            "eta_schedule": self._eta_mode,
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
            from genclust.viz.figures import clustering_surface

            dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            real = dm.fit_set.x[:2000] if dm is not None and getattr(dm, "fit_set", None) is not None else None
            return [clustering_surface(self, real, out_dir / "udc_clustering_surface.png", "UDC (argmax C)")]
        return []

    def _cluster_grid(self, path: Path, per_row: int = 10) -> Path:
        from genclust.viz import figures

        gen = torch.Generator(device="cpu").manual_seed(0)  # own generator: the global RNG is untouched
        z = (torch.randn(per_row, self.z_dim, generator=gen) * self.z_std).to(self.device)
        with eval_mode(self):  # same z across rows: the row is the cluster id
            rows = [self.to_unit_range(self.generate(torch.full((per_row,), k, device=self.device), z))
                    for k in range(self.n_clusters)]
        return figures.save_grid(torch.cat(rows), path, nrow=per_row, padding=2, pad_value=1.0)
