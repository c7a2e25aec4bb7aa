"""Run lifecycle through the Lightning path: per-epoch evaluation, checkpoints, resume, divergence.

Uses a small test double (a linear soft-assignment head trained to be confident and balanced)
so these tests do not depend on any one GAN method.
"""

import json

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from genclust.errors import DivergenceError
from genclust.losses import mean_entropy
from genclust.methods.base import ClusteringMethod
from genclust.train import run
from tests.helpers import compose_cfg


class EntropyProbe(ClusteringMethod):
    def __init__(self, n_clusters, img_shape, batch_size=32, pixel_range="unit", nan_at_step=-1, lr=1e-2,
                 divergence_check_every=1):
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every)
        self.save_hyperparameters()
        self.head = nn.Linear(int(torch.tensor(img_shape).prod()), n_clusters)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self):
        return torch.optim.Adam(self.head.parameters(), lr=self.hparams.lr)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        logits = self.head(x.flatten(1))
        marginal = torch.softmax(logits, 1).mean(0)
        loss = mean_entropy(logits) + (marginal * marginal.log()).sum()
        if int(self.steps) == self.hparams.nan_at_step:
            loss = loss * float("nan")
        self.update("main", loss)
        self.steps += 1
        self.log("train/loss", loss.detach())

    def cluster_probs(self, x, idx=None):
        return torch.softmax(self.head(x.flatten(1)), 1)


def probe_cfg(tmp_path, **method_kwargs):
    cfg = compose_cfg(["method=kmeans", "trainer=cpu", "trainer.enable_progress_bar=false"], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.method = OmegaConf.create({"_target_": "tests.test_lifecycle.EntropyProbe", "n_clusters": 10,
                                       "img_shape": [1, 8, 8], **method_kwargs})
        cfg.trainer.max_epochs = 2
        cfg.trainer.limit_train_batches = 5
        cfg.trainer.log_every_n_steps = 1
    return cfg


def test_epoch_evaluation_checkpoint_and_csv(tmp_path):
    result = run(probe_cfg(tmp_path))
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "eval/train/acc" in header and "eval/test/nmi" in header and "train/loss" in header
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["epochs"] == 2 and saved["global_step"] == 10


def test_resume_continues_from_last_checkpoint(tmp_path):
    cfg = probe_cfg(tmp_path)
    cfg.trainer.max_epochs = 1
    run(cfg)
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 5
    cfg.trainer.max_epochs = 3
    result = run(cfg)  # same run folder: picks up checkpoints/last.ckpt
    assert result["epochs"] == 3 and result["global_step"] == 15
    assert [h["epoch"] for h in result["history"]] == [1, 2], "resumed runs do not repeat finished epochs"


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = probe_cfg(tmp_path, nan_at_step=7)  # NaN in epoch 1 (5 batches per epoch)
    with pytest.raises(DivergenceError, match=r"NaN/inf.*last good checkpoint"):
        run(cfg)
    good = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert good["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())
