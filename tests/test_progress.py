"""Progress output: Lightning's bar in a terminal, a few log lines with ETA when stdout is not a terminal."""

import logging

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genclust import progress
from genclust.progress import LogProgress, progress_callbacks
from tests.helpers import run_cli


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callback: LogProgress, epochs: int = 3) -> None:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(_Tiny(), data)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "genclust"]


def test_a_line_per_epoch_with_eta(caplog):
    caplog.set_level(logging.INFO, logger="genclust")
    _fit(LogProgress(every_s=0))
    lines = _lines(caplog)
    epoch_ends = [line.split()[1] for line in lines if " batch " not in line]  # every_s=0: batch lines too
    assert epoch_ends == ["1/3", "2/3", "3/3"]
    assert all("ETA" in line and "train/loss=" in line for line in lines)


def test_lines_are_throttled_to_first_and_last_epoch(caplog):
    caplog.set_level(logging.INFO, logger="genclust")
    _fit(LogProgress(every_s=1e9), epochs=5)
    assert [line.split()[1] for line in _lines(caplog)] == ["1/5", "5/5"]


@pytest.mark.parametrize(("tty", "mode", "bar", "logs"), [
    (True, "auto", True, False), (False, "auto", False, True), (True, "log", False, True),
    (False, "bar", True, False), (False, "none", False, False)])
def test_bar_in_a_terminal_log_lines_elsewhere(monkeypatch, tty, mode, bar, logs):
    monkeypatch.setattr(progress, "stdout_is_terminal", lambda: tty)
    show_bar, callbacks = progress_callbacks({"enable_progress_bar": True}, mode)
    assert show_bar is bar and bool(callbacks) is logs


@pytest.mark.slow
def test_non_tty_run_prints_no_bar(tmp_path):
    proc = run_cli(["trainer=smoke", "trainer.enable_progress_bar=true", "trainer.max_epochs=2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "\r" not in out and "it/s" not in out
    assert "epoch 2/2" in out and "ETA" in out
    # the result line names the pixel k-means reference on the same data (method=kmeans's row, seed 0)
    assert "pixel k-means, same data: ACC 0.7907" in proc.stdout.strip().splitlines()[-1]
    assert len(out.splitlines()) < 40


def test_reference_is_skipped_for_baselines_and_large_sets():
    from genclust.evaluation.reference import wanted

    assert wanted("auto", "clustergan", 1438) and not wanted("auto", "clustergan", 70000)
    assert not wanted("auto", "kmeans", 1438) and wanted(True, "udc", 70000) and not wanted(False, "udc", 10)
