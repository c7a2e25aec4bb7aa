"""Progress for non-interactive runs: one log line every ``every_s`` seconds (and at the last epoch) with ETA.

In a terminal Lightning's progress bar stays. In CI, ``nohup``, a SLURM job or any redirected output a bar
writes a fragment per batch (the default job's log was ~6,800 lines); there ``train.py`` turns the bar off
and adds :class:`LogProgress`, which writes lines like

    epoch 12/150  step 264  1.63 s/epoch  elapsed 0:00:20  ETA 0:03:45  train/loss_d=-1.23 train/loss_g=0.41
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, Timer

log = logging.getLogger("genclust")


def budget_timer(trainer: pl.Trainer) -> Timer | None:
    """Lightning's Timer of a trainer given ``max_time`` (``_duration`` = the budget in seconds), else None."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return timer if timer is not None and timer._duration else None


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class LogProgress(Callback):
    """A log line every ``every_s`` seconds of training (checked after each batch), at the first and last epoch.

    The ETA is the smaller of (epochs left x mean epoch time) and the time left of ``max_time``. A multi-stage
    method (HC-MGAN: one fit per split) gets lines per fit; the stage is whatever its own log lines say.
    """

    def __init__(self, every_s: float = 15.0, max_metrics: int = 4) -> None:
        super().__init__()
        self.every_s = float(every_s)
        self.max_metrics = int(max_metrics)
        self._start = self._last = 0.0
        self._epoch_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._first_epoch = trainer.current_epoch  # resumed runs start later

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            return  # the epoch's end prints this line (once, without the batch count)
        if time.monotonic() - self._last >= self.every_s:
            self._emit(trainer, batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch + 1 >= trainer.max_epochs
        if epoch == self._first_epoch or last or time.monotonic() - self._last >= self.every_s:
            self._emit(trainer, None)

    def _emit(self, trainer: pl.Trainer, batches_done: int | None) -> None:
        if not trainer.is_global_zero:
            return
        now = time.monotonic()
        self._last = now
        elapsed = now - self._start
        epoch = trainer.current_epoch
        n_batches = trainer.num_training_batches
        # epochs done, counting a partly done epoch by its batches
        done = epoch + 1 - self._first_epoch
        if batches_done is not None and isinstance(n_batches, int | float) and math.isfinite(n_batches) and n_batches:
            done = epoch - self._first_epoch + batches_done / n_batches
        per_epoch = elapsed / done if done > 0 else float("nan")
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        eta = (max_epochs - self._first_epoch - done) * per_epoch if max_epochs is not None else math.inf
        timer = budget_timer(trainer)
        if timer is not None:
            eta = min(eta, max(timer._duration - timer.time_elapsed("train"), 0.0))
        parts = [f"epoch {epoch + 1}/{max_epochs or '?'}"]
        if batches_done is not None:
            parts.append(f"batch {batches_done}/{n_batches}")
        parts += [f"step {trainer.global_step}", f"{per_epoch:.2f} s/epoch", f"elapsed {_clock(elapsed)}",
                  f"ETA {_clock(eta) if math.isfinite(eta) else '?'}"]
        metrics = [f"{k}={float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())
                   if k.startswith("train/") and getattr(v, "numel", lambda: 1)() == 1][: self.max_metrics]
        log.info("  ".join(parts + ([" ".join(metrics)] if metrics else [])))


def progress_callbacks(trainer_cfg: Any, mode: str = "auto", every_s: float = 15.0) -> tuple[bool, list[Callback]]:
    """(enable_progress_bar, extra callbacks) for ``mode``: ``auto`` = the trainer config's bar in a terminal,
    log lines when stdout is not one; ``bar``; ``log``; ``none``."""
    wants_bar = bool(trainer_cfg.get("enable_progress_bar", True))
    if mode == "none":
        return False, []
    if mode == "bar":
        return True, []
    if mode == "log" or not stdout_is_terminal():
        return False, [LogProgress(every_s=every_s)]
    return wants_bar, []


__all__ = ["LogProgress", "progress_callbacks", "stdout_is_terminal"]
