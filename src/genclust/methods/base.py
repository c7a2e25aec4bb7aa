"""The method contract: the one seam every clustering method plugs into.

Evaluation, prediction, figures and the summarizer talk only to this class:

* ``n_clusters`` and ``cluster_probs(x, idx=None) -> [N, K]`` (soft assignment, rows sum to one);
  ``cluster_labels(x, idx=None)`` is its argmax unless a method can call a point noise (label -1).
  ``idx`` is the fit-set index of each row when the rows *are* fit-set examples (None for new data):
  a method with per-example state (CGM's stored latents) scores training examples from it, and so does a
  read-out that keeps the fit set's own result (UMAP's fitted coordinates, HDBSCAN's fit labels).
* **read-outs** (``genclust.readouts``): declared in the config (``method.readouts``), each reads one
  embedding of the method (``embed(x, name)``), is fitted once on the fit set after training
  (``fit_readouts``) and saved with the model; ``method.clustering: <name>`` makes one the primary
  assignment. K may be discovered; -1 is noise.
* ``sample(n, cluster=None)`` returns images in the method's pixel range (generative methods).
* ``fit_method(make_trainer, datamodule, ckpt_path)`` trains; the default is one ``trainer.fit``.
  Multi-stage methods (HC-MGAN's tree) override it and call ``make_trainer()`` once per stage.
* networks and optimizers come from the config: ``method.nets.<player>`` are ``_partial_`` net
  factories (the method supplies the shape arguments it owns), ``method.optim.<player>`` ``_partial_``
  optimizers; ``configure_optimizers`` builds one per name in ``optimizer_names()`` over
  ``player_parameters(name)``.
* ``update(optimizer_name, loss)`` is the only place that runs toggle -> zero_grad ->
  manual_backward -> step -> untoggle, and it watches the losses for NaN/inf.
* ``autocast()``: the one bf16 switch (``method.autocast: none|bf16``, honoured where bf16 is native).
* ``sampling_weights()``: a method that draws its real batches non-uniformly (HC-MGAN's P_{s_k})
  returns per-example weights; the datamodule's sampler follows them.

Training batches are ``(x, idx)``: labels never reach a method's training code.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn

from genclust.data.datamodule import PIXEL_RANGES, is_whole_number
from genclust.errors import ConfigError, DivergenceError
from genclust.latent import ExampleState
from genclust.nets.blocks import eval_mode
from genclust.precision import autocast, autocast_active, check_autocast, drop_stale_casts
from genclust.progress import budget_timer
from genclust.readouts import Readout

NetFactory = Callable[..., nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class ClusteringMethod(pl.LightningModule):
    """Base class of every method (LightningModule with manual optimization)."""

    #: True for methods that can draw images (sample grids, per-cluster grids).
    generative: bool = False
    #: RunGuard writes last.ckpt at the end of training when the newest checkpoint is older than the model
    save_at_stop: bool = True

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        batch_size: int = 64,
        pixel_range: str = "unit",
        divergence_check_every: int = 50,
        nets: Mapping[str, NetFactory] | None = None,
        optim: Mapping[str, OptimizerFactory] | None = None,
        readouts: Mapping[str, Readout] | None = None,
        clustering: str = "argmax",
        autocast: str = "none",
    ) -> None:
        super().__init__()
        if not is_whole_number(n_clusters) or int(n_clusters) < 1:
            raise ConfigError(f"n_clusters must be a whole number >= 1, got {n_clusters}")
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
        self.net_factories: dict[str, NetFactory] = dict(nets or {})
        self.optim_factories: dict[str, OptimizerFactory] = dict(optim or {})
        self.readouts = nn.ModuleDict(dict(readouts or {}))
        if clustering != "argmax" and clustering not in self.readouts:
            raise ConfigError(f"clustering must be 'argmax' or one of the read-outs {sorted(self.readouts)}, "
                              f"got {clustering!r}")
        self.clustering = clustering
        self.autocast_request = check_autocast(autocast)
        # Per watched loss: "it was not finite at some step", accumulated on the device (no host sync per step).
        self._nonfinite: dict[str, Tensor] = {}
        self.fit_set_digest: str | None = None  # train.py: content_digest of the fit set (saved with the model)
        self.run_identity: dict[str, Any] = {}  # train.py: method, dataset, seed, fit set (saved in checkpoints)
        self._epoch_sums: dict[str, Tensor] = {}  # log_epoch_mean's running sums (on the device) and counts
        self._epoch_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ contract
    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        """Soft assignment [N, K] of images ``x`` (in the method's pixel range); ``idx``: fit-set indices or None."""
        raise NotImplementedError(f"{type(self).__name__} must implement cluster_probs")

    def cluster_labels(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """Hard assignment [N]; -1 marks noise for methods that can abstain."""
        return self.cluster_probs(x, idx).argmax(dim=1)

    def embed(self, x: Tensor, name: str) -> Tensor:
        """The embedding ``name`` of ``x`` that read-outs read (e.g. ClusterGAN's 'latent')."""
        raise ConfigError(f"{type(self).__name__} has no embedding {name!r} for a read-out")

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

    # ------------------------------------------------------------ nets and optimizers
    def build_net(self, player: str, **shape_args: Any) -> nn.Module:
        """The network of ``player`` from its config factory (``method.nets.<player>``) and the shape
        arguments the method owns (input/output sizes)."""
        if player not in self.net_factories:
            raise ConfigError(f"{type(self).__name__}: no network configured for {player!r} (method.nets.{player})")
        return self.net_factories[player](**shape_args)

    def make_optimizer(self, player: str, params: Iterable[nn.Parameter] | None = None) -> torch.optim.Optimizer:
        """The optimizer of ``player`` (``method.optim.<player>``) over ``params`` (default: its own)."""
        if player not in self.optim_factories:
            raise ConfigError(f"{type(self).__name__}: no optimizer configured for {player!r} (method.optim.{player})")
        return self.optim_factories[player](list(self.player_parameters(player) if params is None else params))

    def player_parameters(self, player: str) -> Iterable[nn.Parameter]:
        """Parameters updated by ``player``'s optimizer (default: the submodule of that name)."""
        return getattr(self, player).parameters()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.make_optimizer(name) for name in self.optimizer_names()]

    def autocast(self):
        """bf16 autocast when ``method.autocast: bf16`` and bf16 is native here; else a no-op context."""
        return autocast(self.device.type, self.autocast_request, f"{type(self).__name__} method.autocast")

    def autocast_active(self) -> bool:
        """What ran: True when ``autocast()`` runs bf16 on this device (recorded in describe())."""
        return autocast_active(self.device.type, self.autocast_request, f"{type(self).__name__} method.autocast")

    def sampling_weights(self) -> Tensor | None:
        """Per-example weights for drawing real training batches (None: uniform shuffling, the default).

        The datamodule's sampler asks at every ``train_dataloader`` call: i.i.d. draws with replacement in
        proportion to the weights, an epoch being floor(sum(weights) / batch) batches (HC-MGAN's P_{s_k})."""
        return None

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
        flows through the critic leaves no gradient on the critic. It acts at backward time, after
        the graph is built, so the critic's weight gradients are still *computed* (then dropped):
        a method skips that work by running the critic's forward under ``nets.blocks.frozen``.
        """
        optimizer = self.optimizer_by_name()[name]
        self.watch_loss(name, loss)
        self.toggle_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        drop_stale_casts(self.device.type)  # an autocast region spanning updates (HC-MGAN): recast the new weights
        self.untoggle_optimizer(optimizer)

    def logs_this_step(self) -> bool:
        """Whether the loggers write this training batch's ``on_step`` values (every ``trainer.log_every_n_steps``
        batches, and at the stop). ``log_dict`` calls in the other batches reach no logger and cost 2-12% of a
        budget step (RESULTS.md, "Lightning's per-batch logging"), so methods that log only ``on_step`` skip
        them; training is unchanged. True outside a trainer."""
        trainer = self._trainer
        if trainer is None:
            return True
        return bool(trainer._logger_connector.should_update_logs) or bool(trainer.fast_dev_run)

    def log_epoch_mean(self, logs: Mapping[str, Tensor | float]) -> None:
        """Add one batch's values to this epoch's running sums, kept on the device (no host sync); their means
        are logged at the epoch's end, the numbers ``log_dict(on_epoch=True)`` reports for equal batches, without
        Lightning's per-batch, per-value bookkeeping (~3% of a budget HC-MGAN raw-split step)."""
        for key, value in logs.items():
            value = torch.as_tensor(value, device=self.device).detach().float()
            total = self._epoch_sums.get(key)
            self._epoch_sums[key] = value.clone() if total is None else total.add_(value)
            self._epoch_counts[key] = self._epoch_counts.get(key, 0) + 1

    def _log_epoch_means(self) -> None:
        if self._epoch_sums:
            self.log_dict({key: total / self._epoch_counts[key] for key, total in self._epoch_sums.items()},
                          on_step=False, on_epoch=True)
        self._epoch_sums, self._epoch_counts = {}, {}

    def watch_loss(self, name: str, loss: Tensor) -> None:
        """Record (without a device sync) whether ``loss`` is finite."""
        bad = ~torch.isfinite(loss.detach()).all()
        seen = self._nonfinite.get(name)
        self._nonfinite[name] = bad if seen is None else seen | bad

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # One host sync every `divergence_check_every` steps, and at the last batch.
        every = max(self.divergence_check_every, 1)
        if (batch_idx + 1) % every == 0:
            self.raise_if_diverged()

    def on_train_epoch_start(self) -> None:
        self._epoch_sums, self._epoch_counts = {}, {}  # an epoch cut short (a stopped stage fit) leaves nothing behind

    def on_train_epoch_end(self) -> None:
        self._log_epoch_means()
        self.raise_if_diverged()
        self.sync_example_state()  # every rank reads every row's latest value next epoch

    def _timer(self) -> pl.callbacks.Timer | None:
        return None if self._trainer is None else budget_timer(self._trainer)

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

    def diverged_losses(self, across_ranks: bool = False) -> list[str]:
        """The watched losses that were NaN/inf at some step (one host sync; more only when some were).

        ``across_ranks`` (a collective under DDP: every rank must call it at the same point): true on every rank
        when any rank diverged, so that all ranks stop together instead of the others waiting in a collective."""
        if self._nonfinite:
            local = torch.stack(list(self._nonfinite.values())).any()
        else:
            local = torch.zeros((), dtype=torch.bool, device=self.device)
        if across_ranks and dist.is_available() and dist.is_initialized():
            flag = local.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            anywhere = bool(flag)
        else:
            anywhere = bool(local)
        if not anywhere:
            return []
        return [name for name, bad in self._nonfinite.items() if bool(bad)] or ["on another rank"]

    def nonfinite_parameters(self) -> list[str]:
        """Names of parameters holding NaN/inf (a step can go bad with finite losses: an inf gradient)."""
        named = list(self.named_parameters())
        if not named:
            return []
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).cpu()  # one host sync
        return [name for (name, _), ok in zip(named, finite.tolist()) if not ok]

    def raise_if_diverged(self, check_parameters: bool = False) -> None:
        """Raise DivergenceError on a NaN/inf loss (or parameter); called at the same points on every rank."""
        bad = self.diverged_losses(across_ranks=True)
        where = f"in epoch {self.trainer.current_epoch}" if self._trainer is not None else "in training"
        if bad:
            raise DivergenceError(f"{type(self).__name__}: a training loss ({', '.join(bad)}) became NaN/inf {where}")
        if check_parameters:
            params = self.nonfinite_parameters()
            if params:
                more = f" and {len(params) - 3} more" if len(params) > 3 else ""
                raise DivergenceError(f"{type(self).__name__}: parameters {', '.join(params[:3])}{more} became NaN/inf "
                                      f"{where}")

    # ------------------------------------------------------------------- helpers
    def to_unit_range(self, x: Tensor) -> Tensor:
        """Images from this method's pixel range back into [0, 1] (for figures)."""
        return (x + 1.0) / 2.0 if self.pixel_range == "tanh" else x

    def assign(self, x: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(probs [N, K], labels [N]) of one batch through the primary assignment (``clustering``)."""
        out = self.predict_batch(x, idx, readouts=[self.clustering] if self.clustering != "argmax" else [])
        return out["probs"], out["labels"]

    def predict_batch(self, x: Tensor, idx: Tensor | None = None,
                      readouts: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Every assignment of one batch: ``probs``/``labels`` (primary) and ``<readout>/labels`` (and
        ``<readout>/probs`` where the read-out has them) for each fitted read-out (or those in ``readouts``).
        Each embedding is computed once per batch (a read-out that is the primary assignment included)."""
        names = [n for n, r in self.readouts.items() if r.fitted] if readouts is None else list(readouts)
        out: dict[str, Tensor] = {}
        embeddings: dict[str, Tensor] = {}
        for name in names:
            readout = self.readouts[name]
            if readout.embedding not in embeddings:
                embeddings[readout.embedding] = self.embed(x, readout.embedding)
            r_probs, r_labels = readout(embeddings[readout.embedding], idx)
            out[f"{name}/labels"] = r_labels
            if r_probs is not None:
                out[f"{name}/probs"] = r_probs
        if self.clustering != "argmax":
            readout = self.readouts[self.clustering]
            width = max(self.n_clusters, readout.clusters_found() or 0)  # fixed per fit: batches concatenate
            out["probs"] = _one_hot_or(out.get(f"{self.clustering}/probs"), out[f"{self.clustering}/labels"], width)
            out["labels"] = out[f"{self.clustering}/labels"]
        else:
            probs = self.cluster_probs(x, idx)
            out["probs"] = probs
            noise_aware = type(self).cluster_labels is not ClusteringMethod.cluster_labels
            out["labels"] = self.cluster_labels(x, idx) if noise_aware else probs.argmax(dim=1)
        return out

    @torch.no_grad()
    def predict_in_batches(self, x: Tensor, idx: Tensor | None = None, batch_size: int = 1024) -> dict[str, Tensor]:
        """``predict_batch`` over a large tensor, batch by batch, in eval mode; results on the CPU."""
        parts: dict[str, list[Tensor]] = {}
        with eval_mode(self):
            for i in range(0, len(x), batch_size):
                sub = None if idx is None else idx[i: i + batch_size]
                for key, value in self.predict_batch(x[i: i + batch_size].to(self.device), sub).items():
                    value = value.cpu()
                    parts.setdefault(key, []).append(value.long() if key.endswith("labels") else value.float())
        if not parts:
            return {"probs": torch.empty(0, self.n_clusters), "labels": torch.empty(0, dtype=torch.long)}
        return {k: torch.cat(v) for k, v in parts.items()}

    def assign_in_batches(self, x: Tensor, batch_size: int = 1024, idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(probs, labels) of the primary assignment over a large tensor (``predict_in_batches``'s first two)."""
        out = self.predict_in_batches(x, idx, batch_size)
        return out["probs"], out["labels"]

    @torch.no_grad()
    def embed_in_batches(self, x: Tensor, name: str, batch_size: int = 1024) -> Tensor:
        """``embed(x, name)`` over a large tensor in eval mode; on the CPU."""
        with eval_mode(self):
            out = [self.embed(x[i: i + batch_size].to(self.device), name).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(out)

    # ------------------------------------------------------------------ per-example state
    def sync_example_state(self) -> None:
        """Merge every :class:`~genclust.latent.ExampleState` across DDP ranks (a collective: the evaluator
        and checkpointing call it on every rank; a no-op in a single process)."""
        for module in self.modules():
            if isinstance(module, ExampleState):
                module.sync()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "genclust_rng" in checkpoint:
            restore_rng_states(checkpoint["genclust_rng"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the random streams as they stand: a resumed run draws what the uninterrupted run would have drawn
        checkpoint["genclust_rng"] = rng_states()
        if self.fit_set_digest:  # which data the fit set was (predict.py: stored per-example results apply to it only)
            checkpoint["fit_set_digest"] = self.fit_set_digest
        if self.run_identity:  # train.py refuses to resume a run folder's checkpoint under another method/data/seed
            checkpoint["genclust_run"] = dict(self.run_identity)
        # Lightning collected the state_dict before this hook: re-read the merged per-example tables.
        names = {name for name, m in self.named_modules() if isinstance(m, ExampleState)}
        if not names:
            return
        self.sync_example_state()
        for key, value in self.state_dict().items():
            if key.rpartition(".")[0] in names:
                checkpoint["state_dict"][key] = value

    # ------------------------------------------------------------------ read-outs
    def prepare_readouts(self) -> None:
        """Hook before ``fit_readouts`` (e.g. HC-MGAN adds one tree-cut read-out per K of its tree)."""

    def readout_fit_input(self, readout: Readout, x: Tensor, batch_size: int) -> Any:
        """What ``readout.fit`` receives: by default the embedding of the fit set."""
        return self.embed_in_batches(x, readout.embedding, batch_size)

    @torch.no_grad()
    def fit_readouts(self, x: Tensor, batch_size: int = 1024) -> None:
        """Fit every read-out once on the fit set ``x`` (train.py calls this after training)."""
        self.prepare_readouts()
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        if rank == 0:
            cache: dict[tuple[str, int | None], Any] = {}  # one embedding pass per embedding (a tree cut: per k)
            for readout in self.readouts.values():
                key = (readout.embedding, readout.cut_k)
                if key not in cache:
                    cache[key] = self.readout_fit_input(readout, x, batch_size)
                readout.fit(cache[key])
        if world > 1:  # one fit (rank 0's), the same on every rank: ranks may differ in e.g. BN statistics
            states = [{name: r.get_extra_state() for name, r in self.readouts.items()}]
            dist.broadcast_object_list(states, src=0)
            for name, state in states[0].items():
                self.readouts[name].set_extra_state(state)

    def readout_info(self) -> dict[str, Any]:
        return {name: r.describe() for name, r in self.readouts.items()}


class RunGuard(pl.Callback):
    """train.py puts this first among a trainer's callbacks.

    * At each epoch's end, before the evaluator and the checkpoint: stop on a NaN/inf loss or parameter
      (``raise_if_diverged``), so no evaluation reads a diverged model and no checkpoint stores one: the
      last checkpoint stays the last good one.
    * At the end of training (max_epochs, or ``max_time`` mid-epoch): write ``last.ckpt`` when the newest
      checkpoint is older than the model (a run whose end falls off ``every_n_epochs``), so re-running the
      folder resumes from the end instead of retraining its last epochs. Methods that checkpoint their own
      stages (HC-MGAN's tree) set ``save_at_stop = False``.
    """

    def __init__(self) -> None:
        self._saved_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a resumed run: what its checkpoint held

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(pl_module, ClusteringMethod):
            pl_module.raise_if_diverged(check_parameters=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._saved_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        callback = trainer.checkpoint_callback
        if (callback is None or not getattr(pl_module, "save_at_stop", True) or trainer.global_step == self._saved_step
                or getattr(callback, "dirpath", None) is None):
            return
        if isinstance(pl_module, ClusteringMethod):
            pl_module.raise_if_diverged(check_parameters=True)  # never write a diverged model as the last one
        last = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        if trainer.is_global_zero:
            last.parent.mkdir(parents=True, exist_ok=True)
            if last.is_symlink():  # save_last: link points at the older epoch's file: replace the link
                last.unlink()
        trainer.strategy.barrier()
        # ModelCheckpoint's own notion of the last file (saved in the checkpoint's callback state): without it,
        # its on_train_end (when it saved nothing this session) and the next session's saves see a foreign
        # last.ckpt and write last-v1.ckpt beside it, and a later resume reads the stale last.ckpt
        callback.last_model_path = str(last)
        trainer.save_checkpoint(last)


def rng_states() -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and Python random states as tensors and ints (loads with weights_only=True)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.as_tensor(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's device only: under DDP rank 0 writes the checkpoint and every rank restores it onto its
        # own device (the ranks draw alike: one seed, the same calls)
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Undo ``rng_states``: each process's streams continue where the checkpoint's left off."""
    torch.set_rng_state(states["torch"].cpu())
    np_state = states["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = states["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if isinstance(states.get("cuda"), Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"].cpu())


def _one_hot_or(probs: Tensor | None, labels: Tensor, width: int) -> Tensor:
    """A read-out's probs, or one-hot rows of its labels (noise rows all zero) ``width`` wide when it has none."""
    if probs is not None:
        return probs
    out = torch.zeros(len(labels), width, device=labels.device)
    keep = labels >= 0
    out[keep, labels[keep]] = 1.0
    return out
