"""The method contract: the one seam every clustering method plugs into.

Evaluation, prediction, figures and the summarizer talk only to this class:

* ``n_clusters`` and ``cluster_probs(x) -> [N, K]`` (soft assignment, rows sum to one);
  ``cluster_labels(x)`` is its argmax unless a method can call a point noise (label -1).
* ``sample(n, cluster=None)`` returns images in the method's pixel range (generative methods).
* ``fit_method(make_trainer, datamodule, ckpt_path)`` trains; the default is one ``trainer.fit``.
  Multi-stage methods (HC-MGAN's tree) override it and call ``make_trainer()`` once per stage.
* ``update(optimizer_name, loss)`` is the only place that runs toggle -> zero_grad ->
  manual_backward -> step -> untoggle, and it watches the losses for NaN/inf.

Training batches are ``(x, idx)``: labels never reach a method's training code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from genclust.errors import ConfigError, DivergenceError

PIXEL_RANGES = ("unit", "tanh")  # unit: [0, 1] (sigmoid generators); tanh: [-1, 1]


class ClusteringMethod(pl.LightningModule):
    """Base class of every method (LightningModule with manual optimization)."""

    #: True for methods that can draw images (sample grids, per-cluster grids).
    generative: bool = False
    #: Methods that store per-example state keyed by the dataset index set this.
    needs_dataset_size: bool = False

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        batch_size: int = 64,
        pixel_range: str = "unit",
        divergence_check_every: int = 50,
    ) -> None:
        super().__init__()
        if int(n_clusters) < 1:
            raise ConfigError(f"n_clusters must be >= 1, got {n_clusters}")
        if pixel_range not in PIXEL_RANGES:
            raise ConfigError(f"pixel_range must be one of {PIXEL_RANGES}, got {pixel_range!r}")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.automatic_optimization = False
        self.n_clusters = int(n_clusters)
        self.img_shape = tuple(int(s) for s in img_shape)
        self.batch_size = int(batch_size)
        self.pixel_range = pixel_range
        self.divergence_check_every = int(divergence_check_every)
        # Accumulates "some loss was not finite" without a host sync per step.
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.bool), persistent=False)
        self._nonfinite_names: list[str] = []

    # ------------------------------------------------------------------ contract
    def cluster_probs(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Soft assignment [N, K] of images ``x`` (in the method's pixel range)."""
        raise NotImplementedError(f"{type(self).__name__} must implement cluster_probs")

    def cluster_labels(self, x: Tensor) -> Tensor:
        """Hard assignment [N]; -1 marks noise for methods that can abstain."""
        return self.cluster_probs(x).argmax(dim=1)

    def sample(self, n: int, cluster: int | None = None) -> Tensor | None:
        """``n`` generated images (of mode ``cluster`` if given), or None if not generative."""
        return None

    def fit_method(
        self,
        make_trainer: Callable[..., pl.Trainer],
        datamodule: pl.LightningDataModule,
        ckpt_path: str | None = None,
    ) -> pl.Trainer:
        """Train the method. Default: one Lightning fit (resuming from ``ckpt_path``)."""
        trainer = make_trainer()
        trainer.fit(self, datamodule=datamodule, ckpt_path=ckpt_path)
        return trainer

    def save_figures(self, out_dir: Path) -> list[Path]:
        """Method-specific figures (e.g. interpolations, trees) written at the final evaluation."""
        return []

    def describe(self) -> dict[str, Any]:
        """Extra facts recorded in metrics.json (e.g. the inference mode used)."""
        return {}

    # ------------------------------------------------------------ optimization
    def optimizer_by_name(self) -> dict[str, Any]:
        """Map optimizer names to Lightning optimizers, in ``optimizer_names`` order."""
        optimizers = self.optimizers()
        if not isinstance(optimizers, list | tuple):
            optimizers = [optimizers]
        names = self.optimizer_names()
        if len(names) != len(optimizers):
            raise RuntimeError(f"{type(self).__name__}: {len(optimizers)} optimizers but names {names}")
        return dict(zip(names, optimizers))

    def optimizer_names(self) -> list[str]:
        """Names of the optimizers returned by ``configure_optimizers``, in order."""
        return ["main"]

    def update(self, name: str, loss: Tensor) -> None:
        """One optimizer step of player ``name`` on ``loss``.

        toggle_optimizer freezes every other player's parameters, so a generator loss that
        flows through the critic leaves no gradient on the critic.
        """
        optimizer = self.optimizer_by_name()[name]
        self.watch_loss(name, loss)
        self.toggle_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)

    def watch_loss(self, name: str, loss: Tensor) -> None:
        """Record (without a device sync) whether ``loss`` is finite."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite = self._nonfinite | bad
        if name not in self._nonfinite_names:
            self._nonfinite_names.append(name)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # One host sync every `divergence_check_every` steps, and at the last batch.
        every = max(self.divergence_check_every, 1)
        if (batch_idx + 1) % every == 0:
            self.raise_if_diverged()

    def on_train_epoch_end(self) -> None:
        self.raise_if_diverged()

    def _timer(self) -> pl.callbacks.Timer | None:
        trainer = self._trainer
        timer = None if trainer is None else next(
            (c for c in trainer.callbacks if isinstance(c, pl.callbacks.Timer)), None)
        return timer if timer is not None and timer._duration else None

    def time_budget_s(self) -> float | None:
        """The run's wall-clock budget (``trainer.max_time``) in seconds, or None."""
        timer = self._timer()
        return None if timer is None else float(timer._duration)

    def run_progress(self, batch_idx: int = 0) -> float:
        """Fraction of the planned run done, in [0, 1] (0 outside a trainer).

        The budget that ends the run first decides: ``trainer.max_time`` (elapsed / budget; Lightning's
        Timer keeps the elapsed time across a resume), ``trainer.max_steps`` or ``trainer.max_epochs``.
        Schedules that must span a wall-clock budget (whose step count is unknown in advance) read this.
        """
        trainer = self._trainer
        if trainer is None:
            return 0.0
        done = 0.0
        timer = self._timer()
        if timer is not None:
            done = timer.time_elapsed("train") / timer._duration
        if trainer.max_steps and trainer.max_steps > 0:
            done = max(done, trainer.global_step / trainer.max_steps)
        n_batches = trainer.num_training_batches
        if trainer.max_epochs and trainer.max_epochs > 0 and n_batches and n_batches != float("inf"):
            done = max(done, (trainer.current_epoch + (batch_idx + 1) / n_batches) / trainer.max_epochs)
        return min(max(done, 0.0), 1.0)

    def raise_if_diverged(self) -> None:
        if bool(self._nonfinite):
            epoch = self.trainer.current_epoch if self._trainer is not None else -1
            raise DivergenceError(
                f"{type(self).__name__}: a training loss ({', '.join(self._nonfinite_names)}) became NaN/inf "
                f"in epoch {epoch}"
            )

    # ------------------------------------------------------------------- helpers
    def to_unit_range(self, x: Tensor) -> Tensor:
        """Images from this method's pixel range back into [0, 1] (for figures)."""
        return (x + 1.0) / 2.0 if self.pixel_range == "tanh" else x

    def assign(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(probs [N, K], labels [N]) of one batch; noise-aware methods override ``cluster_labels``."""
        probs = self.cluster_probs(x)
        if type(self).cluster_labels is ClusteringMethod.cluster_labels:
            return probs, probs.argmax(dim=1)
        return probs, self.cluster_labels(x)

    @torch.no_grad()
    def assign_in_batches(self, x: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
        """``assign`` over a large tensor, batch by batch, in eval mode; results on the CPU."""
        was_training = self.training
        self.eval()
        probs, labels = [], []
        try:
            for i in range(0, len(x), batch_size):
                p, lab = self.assign(x[i : i + batch_size].to(self.device))
                probs.append(p.float().cpu())
                labels.append(lab.long().cpu())
        finally:
            self.train(was_training)
        if not probs:
            return torch.empty(0, self.n_clusters), torch.empty(0, dtype=torch.long)
        return torch.cat(probs), torch.cat(labels)

    # ------------------------------------------------- alternative read-outs
    @torch.no_grad()
    def extra_assignments(self, x: Tensor, batch_size: int = 1024) -> dict[str, Tensor]:
        """Hard labels [N] of other ways this model can cluster ``x`` (reported beside the default).

        E.g. ClusterGAN's k-means on the encoder latent next to its argmax. Keys name the
        read-out; the evaluator logs ``eval/<split>/<name>/<metric>``. Default: none.
        """
        return {}

    # ---------------------------------------------------- hierarchical methods
    def available_k(self) -> list[int]:
        """Numbers of clusters this model can also answer for (a tree's intermediate cuts)."""
        return []

    @torch.no_grad()
    def probs_at_k(self, x: Tensor, k: int, batch_size: int = 1024) -> Tensor:
        """Soft assignment [N, k] at ``k`` clusters (for ``k`` in ``available_k()``)."""
        raise ValueError(f"{type(self).__name__} answers only for k = {self.n_clusters}")
