"""CGM: the Clustered Generator Model (Zhu, Han, Zhou, Yang, Wu; arXiv 1911.08459): a generator only.

Model (§2.1): z ~ N(0, I_d), y ~ Cat(pi), x = G(y, z) + eps, eps ~ N(0, sigma^2 I) (d = 100, sigma = 0.3, §3.3).
No encoder, no discriminator, no inference network: inference is MCMC / exact enumeration.

Learning (Algorithm 1), per batch of training examples with their persistent latents (z_i, y_i), stored by
dataset index in an :class:`~genclust.latent.ExampleState` (initialised z_i ~ N(0, I), y_i ~ Cat(pi); saved in
checkpoints; under DDP each rank updates the indices it trains on and the base merges them):

1. l Langevin steps on z from the stored z_i with y_i fixed (Eq. 3) on the log-joint of Eq. 4,
   log p(x, y, z) = -||z||^2 / 2 - ||x - G(y, z)||^2 / (2 sigma^2) + log pi_y + C;
2. the posterior over y given z (Eqs. 5-7): all K classes in one stacked generator pass, then a sample
   (``y_inference: sample``) or the MAP (``map``);
3. one generator step on -log p(x, y, z) (Eq. 8; only ||x - G(y, z)||^2 / (2 sigma^2) depends on theta) with
   Adam(2e-4, beta1 0.5) (§3.3: "learning rate 0.0002 and momentum 0.5"); the new z_i, y_i are written back.

Langevin parametrisation: z <- z - (s^2 / 2) dE/dz + s eps, E = -log p (the alternating back-propagation
paper [11]'s form; Eq. 3's delta is s^2 / 2). The paper gives no step size: ``langevin.step_size`` is ours.
In learning, G's batch norm (§3.3) stays in train mode through the Langevin passes and the K-way y-pass (ours: the
paper does not say), so an example's energy there depends on its batch, and the y-pass normalises over N x K rows
(every class) where the generator step normalises over N; inference on new data runs G at its running statistics.

Clustering (``cluster_probs(x, idx)``):

* training examples (``idx`` given): p(y | x, z_i) from their stored z_i under the current G;
* new data (``inference.mode``): ``gibbs`` — from a fresh z (a fixed-seed stream: the same data give the
  same answer), alternate Langevin on z (y fixed at the current MAP) and the y-posterior for
  ``inference.sweeps`` sweeps, return p(y | x, z); ``per_cluster`` — K chains, one per y, each Langevin from a
  fresh z with y fixed, probs = softmax over k of the chains' final log-joint.
* ``marginal`` (ours, for a small z): p(y | x) with p(x | k) = E_z p(x | k, z) estimated on S shared draws
  z_s ~ N(0, I): K x S generated images and one distance matrix, no Langevin (seconds for 10k images);
* read-outs ``reinferred`` (the fit set re-inferred from scratch, as new data, with ``inference.mode``) and, when
  configured, ``per_cluster`` / ``marginal``: so ``metrics.json`` has training examples scored both from
  stored state and by re-inference.

Failure mode this model invites: one y explaining everything (a G that ignores y). Logged every epoch:
``train/y_usage`` (entropy of the stored y's / log K; 1 = uniform use) and ``train/y_confidence`` (mean
max posterior). Named remedies, off by default: ``remedies.temperature`` (anneal a temperature on the
y-posterior's likelihood term from ``start`` to 1 over ``anneal_iters`` iterations: sigma_y = sigma *
sqrt(T)), ``remedies.map_burn_in`` (sample y for this many iterations before MAP), ``remedies.y_posterior:
marginal`` (the y-step uses the ``marginal`` posterior above, before the Langevin steps; a relabelled example
restarts z at its new class's best draw z_s: no class is scored at a z tuned for another), and
``remedies.per_class_steps`` m > 0: the y-step compares the K classes each with its own z (m Langevin steps per
class; p(y | x) from the K chains' log-joints, the chosen chain's z is kept), the chains starting
(``remedies.chain_start``) from step 1's z_i (``z_i``), from each class's own chain stored per example
(``persistent``: z_{i,k} kept across iterations and checkpointed) or from a fresh z ~ N(0, I) per class (``fresh``).
Why: Algorithm 1 scores every class with the z that step 1 tuned for the stored y_i, so G(k, z_i) for k != y_i
is an unrelated image and the stored y never moves (measured: the random initial labels stay, NMI 0.03);
K x m extra generator passes per example buy the classes a fair comparison. Measured (RESULTS "CGM: what moves
the stored labels"): no remedy moves the labels at d = 100, because G learns to draw each image from its own
z_i and y_i becomes one more coordinate of that code; a small z (d = 3, the budget configs) makes y carry shape.
Where the labels start: ``remedies.init_labels`` ``prior`` (Algorithm 1 line 3) or ``kmeans`` (k-means on the fit
set's pixels: images only, seeded by the run's seed), with ``remedies.hold_labels_iters`` learning iterations
without a y-step first, so G learns each class from the initial labels before the y-posterior may move them (an
untrained G's posterior scrambles any start: digits, k-means 0.79 -> 0.31 after one epoch without the hold).

Evaluation cost: new-data inference runs once per distinct image per evaluation (a per-row cache keyed by the
image bytes and the iteration), so the test rows of ``all`` and the ``reinferred`` read-out reuse the answers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genclust.errors import ConfigError
from genclust.latent import ExampleState, langevin
from genclust.methods.base import ClusteringMethod
from genclust.nets.blocks import eval_mode, frozen
from genclust.nets.init import initialize

LANGEVIN = {"steps": 100, "step_size": 0.1, "noise": True}  # §3.3: l = 100; step size: ours
INFERENCE = {"mode": "gibbs", "sweeps": 5, "steps": 20, "seed": 0, "samples": 512}
INFERENCE_MODES = ("gibbs", "per_cluster", "marginal")
Y_POSTERIORS = ("at_z", "marginal")
REMEDIES = {"temperature": 1.0, "anneal_iters": 0, "map_burn_in": 0, "per_class_steps": 0, "chain_start": "z_i",
            "init_labels": "prior", "kmeans_n_init": 3, "hold_labels_iters": 0, "y_posterior": "at_z",
            "marginal_samples": 256}
CHAIN_STARTS = ("z_i", "persistent", "fresh")
INIT_LABELS = ("prior", "kmeans")


def _merge(name: str, defaults: dict[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {**defaults, **dict(given or {})}
    unknown = set(out) - set(defaults)
    if unknown:
        raise ConfigError(f"cgm: unknown {name} keys {sorted(unknown)} (known: {sorted(defaults)})")
    return out


class CGM(ClusteringMethod):
    """Generator G(y, z) learned by alternating back-propagation with Langevin z and Gibbs/MAP y."""

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
        pixel_range: str = "tanh",
        z_dim: int = 100,
        sigma: float = 0.3,
        prior: Sequence[float] | None = None,
        y_inference: str = "sample",
        langevin: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
        remedies: Mapping[str, Any] | None = None,
        init: str = "default",
        autocast: str = "none",
        divergence_check_every: int = 50,
    ) -> None:
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every, nets=nets,
                         optim=optim, readouts=readouts, clustering=clustering, autocast=autocast)
        self.save_hyperparameters(ignore=["nets", "optim", "readouts"])
        self.langevin_cfg = _merge("langevin", LANGEVIN, langevin)
        self.inference_cfg = _merge("inference", INFERENCE, inference)
        self.remedies = _merge("remedies", REMEDIES, remedies)
        if y_inference not in ("sample", "map"):
            raise ConfigError(f"cgm: y_inference must be sample|map, got {y_inference!r}")
        if self.inference_cfg["mode"] not in INFERENCE_MODES:
            raise ConfigError(f"cgm: inference.mode must be {'|'.join(INFERENCE_MODES)}, "
                              f"got {self.inference_cfg['mode']!r}")
        if self.remedies["y_posterior"] not in Y_POSTERIORS:
            raise ConfigError(f"cgm: remedies.y_posterior must be {'|'.join(Y_POSTERIORS)}, "
                              f"got {self.remedies['y_posterior']!r}")
        if min(int(self.inference_cfg["samples"]), int(self.remedies["marginal_samples"])) < 1:
            raise ConfigError("cgm: inference.samples and remedies.marginal_samples must be >= 1")
        if float(sigma) <= 0 or int(z_dim) < 1:
            raise ConfigError(f"cgm: sigma > 0 and z_dim >= 1, got {sigma}, {z_dim}")
        pi = torch.full((self.n_clusters,), 1.0 / self.n_clusters) if prior is None else torch.tensor(
            [float(p) for p in prior])
        if len(pi) != self.n_clusters or (pi <= 0).any() or abs(float(pi.sum()) - 1.0) > 1e-6:
            raise ConfigError(f"cgm: prior must be {self.n_clusters} positive probabilities summing to 1")
        self.register_buffer("log_prior", pi.log())
        self.z_dim, self.sigma, self.y_inference = int(z_dim), float(sigma), y_inference
        self.generator = self.build_net("generator", in_dim=self.z_dim + self.n_clusters, img_shape=self.img_shape,
                                        pixel_range=pixel_range)
        initialize(self.generator, init)
        specs = {"z": ((self.z_dim,), torch.float32), "y": ((), torch.long)}
        if self.remedies["chain_start"] not in CHAIN_STARTS:
            raise ConfigError(f"cgm: remedies.chain_start must be one of {'|'.join(CHAIN_STARTS)}, "
                              f"got {self.remedies['chain_start']!r}")
        self.persistent_chains = self.remedies["chain_start"] == "persistent"
        if self.remedies["chain_start"] != "z_i" and int(self.remedies["per_class_steps"]) < 1:
            raise ConfigError(f"cgm: remedies.chain_start={self.remedies['chain_start']} needs "
                              "remedies.per_class_steps >= 1 (the Langevin steps of each class's chain)")
        if self.remedies["init_labels"] not in INIT_LABELS:
            raise ConfigError(f"cgm: remedies.init_labels must be one of {'|'.join(INIT_LABELS)}, "
                              f"got {self.remedies['init_labels']!r}")
        if self.persistent_chains:
            specs["z_per_class"] = ((self.n_clusters, self.z_dim), torch.float32)  # z_{i,k}: one chain per class
        self.latents = ExampleState(specs)
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        self._t = 0
        self._confidence: list[Tensor] = []
        self._infer_cache: dict[tuple[str, bytes], Tensor] = {}
        self._infer_cache_at = -1
        self._protos: Tensor | None = None  # inference.mode=marginal: K x S images of the current G
        self._protos_at: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ model
    def optimizer_names(self) -> list[str]:
        return ["generator"]

    def g(self, y: Tensor, z: Tensor) -> Tensor:
        """G(y, z): the generator's mean image for labels ``y`` [N] and latents ``z`` [N, d]."""
        with self.autocast():
            return self.generator(torch.cat([z, F.one_hot(y, self.n_clusters).to(z.dtype)], 1)).float()

    def energy(self, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
        """-log p(x, y, z) + C per example (Eq. 4 with the prior of y): ||z||^2/2 + ||x - G||^2/(2 sigma^2) - log pi_y."""
        resid = (x - self.g(y, z)).flatten(1).pow(2).sum(1)
        return 0.5 * z.pow(2).sum(1) + resid / (2 * self.sigma**2) - self.log_prior[y]

    def log_joint_all(self, x: Tensor, z: Tensor, temperature: float = 1.0) -> Tensor:
        """log p(x, y = k, z) + C for every k [N, K] (Eq. 7), all K in one stacked generator pass.

        ``temperature`` T > 1 flattens the likelihood term (sigma_y = sigma sqrt(T)): the annealing remedy."""
        n, k = len(x), self.n_clusters
        ys = torch.arange(k, device=x.device).repeat(n)  # example-major: row i*K + j is (x_i, y = j)
        gen = self.g(ys, z.repeat_interleave(k, 0)).reshape(n, k, -1)
        resid = (x.flatten(1)[:, None, :] - gen).pow(2).sum(2)
        return self.log_prior[None, :] - resid / (2 * self.sigma**2 * temperature)

    def posterior(self, x: Tensor, z: Tensor, temperature: float = 1.0) -> Tensor:
        """p(y | x, z) [N, K] (Eqs. 5-6): a softmax over the K log-joints (the z terms cancel)."""
        return torch.softmax(self.log_joint_all(x, z, temperature), dim=1)

    @torch.no_grad()
    def prototypes(self, samples: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """S shared draws z_s ~ N(0, I) and the K x S images G(k, z_s) [K, S, D] (one stacked no-grad pass)."""
        k = self.n_clusters
        z = torch.randn(samples, self.z_dim, generator=generator, device=self.log_prior.device)
        ys = torch.arange(k, device=z.device).repeat_interleave(samples)  # class-major: row j*S + s is (k=j, z_s)
        with eval_mode(self.generator):  # BN at its running statistics: the prototypes do not depend on the batch
            gen = self.g(ys, z.repeat(k, 1))
        return z, gen.reshape(k, samples, -1)

    @torch.no_grad()
    def marginal_log_joint(self, x: Tensor, protos: Tensor, chunk: int = 512) -> tuple[Tensor, Tensor]:
        """log pi_k + log p(x | k) [N, K], p(x | k) = E_{z ~ N(0, I)} p(x | k, z) estimated by the S prototypes
        (log-mean-exp over s), and the index of each class's best prototype [N, K] (a start for z)."""
        k, samples, dim = protos.shape
        flat = protos.reshape(k * samples, dim)
        sq = flat.pow(2).sum(1)
        out, best = [], []
        for xc in x.flatten(1).split(chunk):
            d2 = (xc.pow(2).sum(1, keepdim=True) - 2 * xc @ flat.T + sq).clamp_min(0).reshape(len(xc), k, samples)
            ll = -d2 / (2 * self.sigma**2)
            out.append(torch.logsumexp(ll, 2) - math.log(samples))
            best.append(ll.argmax(2))
        return self.log_prior[None, :] + torch.cat(out), torch.cat(best)

    def langevin_z(self, x: Tensor, y: Tensor, z: Tensor, steps: int, noise: bool | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
        """``steps`` Langevin steps on z (Eq. 3) against the current G with y fixed (G's weights untouched)."""
        cfg = self.langevin_cfg
        return langevin(lambda zz: self.energy(x, y, zz), z, steps, float(cfg["step_size"]),
                        bool(cfg["noise"]) if noise is None else noise, frozen=[self.generator], generator=generator)

    def per_class_posterior(self, x: Tensor, z: Tensor, steps: int, temperature: float = 1.0,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """K chains per example, chain k: ``steps`` Langevin steps on z with y = k (one stacked pass of N*K
        rows), from ``z`` [N, d] (every chain starts there) or ``z`` [N, K, d] (chain k starts at z[:, k]).
        Returns p(y | x) = softmax_k(log p(x, k, z_k) / T) [N, K] and the chains' z [N, K, d]."""
        n, k = len(x), self.n_clusters
        xs, ys = x.repeat_interleave(k, 0), torch.arange(k, device=x.device).repeat(n)
        start = z.reshape(n * k, -1) if z.dim() == 3 else z.repeat_interleave(k, 0)
        zs = self.langevin_z(xs, ys, start, steps, generator=generator)
        return self.chains_posterior(xs, ys, zs, n, temperature), zs.reshape(n, k, -1)

    def chains_posterior(self, xs: Tensor, ys: Tensor, zs: Tensor, n: int, temperature: float = 1.0) -> Tensor:
        """softmax over k of the K chains' log-joints log p(x, k, z_k) / T (rows example-major, N*K)."""
        with torch.no_grad():
            log_joint = -self.energy(xs, ys, zs).reshape(n, self.n_clusters)
        return torch.softmax(log_joint / temperature, dim=1)

    # ------------------------------------------------------------------ persistent state
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        n = len(dm.fit_set) if dm is not None and getattr(dm, "fit_set", None) is not None else 0
        if n and self.latents.size != n:  # Algorithm 1 lines 2-3 (a resumed run loads its saved state over this)
            pi = self.log_prior.exp().cpu()

            def init(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
                if name in ("z", "z_per_class"):
                    return torch.randn(shape)
                if self.remedies["init_labels"] == "kmeans":
                    return self.kmeans_labels(dm.fit_set.x)
                return torch.multinomial(pi, shape[0], replacement=True)

            self.latents.allocate(n, init, device=self.device)

    def kmeans_labels(self, x: Tensor) -> Tensor:
        """The ``init_labels: kmeans`` remedy: y_i from k-means on the fit set's pixels (images only, no labels;
        seeded by the run's seed, so every DDP rank computes the same labels) instead of Algorithm 1 line 3's
        y_i ~ Cat(pi). Why: from random labels the y-steps behave like k-means over class manifolds from a random
        start (RESULTS "CGM: what moves the stored labels"); this starts them where pixel k-means ends."""
        from sklearn.cluster import KMeans

        seed = torch.initial_seed() % 2**31
        pixels = x.float().flatten(1).numpy()
        labels = KMeans(self.n_clusters, n_init=int(self.remedies["kmeans_n_init"]), random_state=seed).fit_predict(pixels)
        return torch.as_tensor(labels, dtype=torch.long)

    # ------------------------------------------------------------------ training
    def temperature(self) -> float:
        start, iters = float(self.remedies["temperature"]), int(self.remedies["anneal_iters"])
        if iters <= 0 or self._t >= iters:
            return 1.0 if iters > 0 else start
        return start + (1.0 - start) * self._t / iters

    def on_train_start(self) -> None:
        self._t = int(self.iterations)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, idx = batch
        x = x.float()
        z = self.latents.read("z", idx)
        y = self.latents.read("y", idx)
        use_map = self.y_inference == "map" and self._t >= int(self.remedies["map_burn_in"])
        rows = torch.arange(len(x), device=x.device)
        holding = self._t < int(self.remedies["hold_labels_iters"])
        if self.remedies["y_posterior"] == "marginal" and not holding:  # the marginal remedy: y-step first,
            proto_z, protos = self.prototypes(int(self.remedies["marginal_samples"]))  # from p(y | x) itself
            log_joint, best = self.marginal_log_joint(x, protos)
            post = torch.softmax(log_joint / self.temperature(), dim=1)
            new_y = post.argmax(1) if use_map else torch.multinomial(post, 1).squeeze(1)
            moved = new_y != y  # a relabelled example restarts z at its new class's best prototype
            z = torch.where(moved[:, None], proto_z[best[rows, new_y]], z)
            y = new_y
            z = self.langevin_z(x, y, z, int(self.langevin_cfg["steps"]))  # then inference on z given y
            self._finish_step(x, idx, y, z, post)
            return
        z = self.langevin_z(x, y, z, int(self.langevin_cfg["steps"]))  # 1. inference on z
        if holding:  # 2''. the hold remedy: y_i stays, G learns the
            with torch.no_grad():  # classes' manifolds from the initial labels first (posterior only logged)
                post = self.posterior(x, z, self.temperature())
        elif int(self.remedies["per_class_steps"]) > 0:  # 2'. the per-class remedy (module doc)
            start = z  # chain_start z_i: every class starts from step 1's z_i
            if self.persistent_chains:  # each class continues its own stored chain; y_i's is the one step 1 ran
                start = self.latents.read("z_per_class", idx).to(z.device).clone()
                start[rows, y] = z
            elif self.remedies["chain_start"] == "fresh":  # every class from its own z ~ N(0, I): no class
                start = torch.randn(len(x), self.n_clusters, self.z_dim, device=z.device)  # inherits step 1's fit
            post, z_per_class = self.per_class_posterior(x, start, int(self.remedies["per_class_steps"]),
                                                         self.temperature())
            y = post.argmax(1) if use_map else torch.multinomial(post, 1).squeeze(1)
            z = z_per_class[rows, y]
            if self.persistent_chains:
                self.latents.write("z_per_class", idx, z_per_class)
        else:
            with torch.no_grad():  # 2. inference on y
                post = self.posterior(x, z, self.temperature())
            y = post.argmax(1) if use_map else torch.multinomial(post, 1).squeeze(1)
        self._finish_step(x, idx, y, z, post)

    def _finish_step(self, x: Tensor, idx: Tensor, y: Tensor, z: Tensor, post: Tensor) -> None:
        """3. learning theta on -log p(x, y, z) (Eq. 8), then the new z_i, y_i are written back."""
        resid = (x - self.g(y, z)).flatten(1).pow(2).sum(1)
        loss = (resid / (2 * self.sigma**2)).mean()
        self.update("generator", loss)
        self.latents.write("z", idx, z)
        self.latents.write("y", idx, y)
        self.iterations += 1
        self._t += 1
        self._confidence.append(post.max(1).values.mean().detach())
        if self.logs_this_step():
            self.log_dict({"train/loss": loss.detach(), "train/mse": resid.detach().mean() / x[0].numel(),
                           "train/z_norm": z.norm(dim=1).mean()}, on_step=True, on_epoch=False, batch_size=len(x))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_dict(self.usage(), on_step=False, on_epoch=True)

    def usage(self, reset: bool = True) -> dict[str, float]:
        """Cluster usage of the stored y's (normalised entropy; 1 = uniform) and the posterior's confidence."""
        counts = torch.bincount(self.latents.y.cpu(), minlength=self.n_clusters).double() if self.latents.size else None
        out = {}
        if counts is not None:
            p = counts / counts.sum()
            out["train/y_usage"] = float(-(p * p.clamp_min(1e-12).log()).sum() / math.log(max(self.n_clusters, 2)))
        if self._confidence:
            out["train/y_confidence"] = float(torch.stack(self._confidence).mean())
            if reset:
                self._confidence = []
        return out

    # ------------------------------------------------------------------ clustering
    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        x = x.float()
        if idx is not None and self.latents.size:  # training examples: from their stored z_i
            if self.persistent_chains:  # ... or their K stored chains, as the y-step of training compares them
                n, k = len(x), self.n_clusters
                zs = self.latents.read("z_per_class", idx).to(x.device).reshape(n * k, -1)
                return self.chains_posterior(x.repeat_interleave(k, 0), torch.arange(k, device=x.device).repeat(n),
                                             zs, n)
            return self.posterior(x, self.latents.read("z", idx).to(x.device))
        return self.infer_cached(x, self.inference_cfg["mode"])

    def embed(self, x: Tensor, name: str) -> Tensor:
        """'reinferred' (the configured ``inference.mode``) / 'per_cluster' / 'marginal': the posterior of new-data
        inference with that mode."""
        if name == "reinferred":
            return self.infer_cached(x.float(), self.inference_cfg["mode"])
        if name in ("per_cluster", "marginal"):
            return self.infer_cached(x.float(), name)
        return super().embed(x, name)

    def infer_cached(self, x: Tensor, mode: str) -> Tensor:
        """:meth:`infer`, run only for the rows not yet inferred under the current G (module doc: evaluation
        cost). Keys are the image bytes, so an image met again (``all`` after ``test``) gets the same answer."""
        if self._infer_cache_at != int(self.iterations):
            self._infer_cache, self._infer_cache_at = {}, int(self.iterations)
        rows = x.detach().cpu().flatten(1).numpy()
        keys = [(mode, hashlib.blake2b(r.tobytes(), digest_size=16).digest()) for r in rows]
        todo = [i for i, key in enumerate(keys) if key not in self._infer_cache]
        if todo:
            fresh = self.infer(x[todo], mode)
            for i, p in zip(todo, fresh.detach()):
                self._infer_cache[keys[i]] = p
        return torch.stack([self._infer_cache[key] for key in keys]).to(x.device)

    def infer(self, x: Tensor, mode: str, sweeps: int | None = None, steps: int | None = None) -> Tensor:
        """p(y | x) for new data: Gibbs sweeps from a fresh z, or K per-class chains (module doc)."""
        cfg = self.inference_cfg
        sweeps = int(cfg["sweeps"] if sweeps is None else sweeps)
        steps = int(cfg["steps"] if steps is None else steps)
        rng = torch.Generator(device=x.device).manual_seed(int(cfg["seed"]))  # the training stream stays untouched
        with eval_mode(self.generator), frozen(self.generator):
            if mode == "marginal":  # G is fixed between learning iterations: one prototype set per iteration,
                key = (int(self.iterations), int(cfg["samples"]), int(cfg["seed"]))  # not one per batch
                if self._protos_at != key:
                    self._protos, self._protos_at = self.prototypes(int(cfg["samples"]), generator=rng)[1], key
                return torch.softmax(self.marginal_log_joint(x, self._protos)[0], dim=1)
            if mode == "per_cluster":
                n, k = len(x), self.n_clusters
                xs, ys = x.repeat_interleave(k, 0), torch.arange(k, device=x.device).repeat(n)
                z = torch.randn(n * k, self.z_dim, generator=rng, device=x.device)
                z = self.langevin_z(xs, ys, z, sweeps * steps, generator=rng)
                with torch.no_grad():
                    return torch.softmax(-self.energy(xs, ys, z).reshape(n, k), dim=1)
            z = torch.randn(len(x), self.z_dim, generator=rng, device=x.device)
            with torch.no_grad():
                post = self.posterior(x, z)
            for _ in range(sweeps):
                z = self.langevin_z(x, post.argmax(1), z, steps, generator=rng)
                with torch.no_grad():
                    post = self.posterior(x, z)
        return post

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(self, n: int, cluster: int | None = None) -> Tensor:
        y = (torch.multinomial(self.log_prior.exp(), n, replacement=True) if cluster is None
             else torch.full((n,), int(cluster), dtype=torch.long, device=self.device))
        with eval_mode(self.generator):
            return self.g(y.to(self.device), torch.randn(n, self.z_dim, device=self.device))

    def save_figures(self, out_dir: Path) -> list[Path]:
        """Fig. 2: rows share z, columns share y."""
        from genclust.viz.figures import save_grid

        if len(self.img_shape) != 3:
            return []
        rows = 8
        z = torch.randn(rows, self.z_dim, generator=torch.Generator().manual_seed(0)).to(self.device)
        k = self.n_clusters
        with torch.no_grad(), eval_mode(self.generator):
            imgs = self.g(torch.arange(k, device=self.device).repeat(rows), z.repeat_interleave(k, 0))
        return [save_grid(self.to_unit_range(imgs), Path(out_dir) / "cgm_rows_z_columns_y.png", nrow=k)]

    def describe(self) -> dict[str, Any]:
        return {"y_inference": self.y_inference, "sigma": self.sigma, "z_dim": self.z_dim,
                "langevin": self.langevin_cfg, "inference": self.inference_cfg, "remedies": self.remedies,
                "iterations": int(self.iterations), "autocast": "bf16" if self.autocast_active() else "none",
                "training_examples_scored_by": "p(y | x, stored z_i) (read-out 'reinferred': from scratch)",
                **{k.split("/")[1]: v for k, v in self.usage(reset=False).items()}}


__all__ = ["CGM"]
