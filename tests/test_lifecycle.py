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


class WeightSpoiler(EntropyProbe):
    """Writes NaN into its weights after the update of step ``spoil_at_step`` (no NaN loss: a bad optimizer step)."""

    def __init__(self, *args, spoil_at_step=-1, **kwargs):
        super().__init__(*args, **kwargs)
        self.spoil_at_step = spoil_at_step

    def training_step(self, batch, batch_idx):
        step = int(self.steps)
        super().training_step(batch, batch_idx)
        if step == self.spoil_at_step:
            with torch.no_grad():
                self.head.weight.fill_(float("nan"))


class SamplingProbe(EntropyProbe):
    """Draws from its own soft assignment every step: NaN weights break the next forward (torch.multinomial)."""

    def training_step(self, batch, batch_idx):
        x, _ = batch
        torch.multinomial(self.cluster_probs(x), 1)  # raises on NaN probabilities
        super().training_step(batch, batch_idx)


def test_divergence_between_checks_stops_before_the_epoch_checkpoint(tmp_path):
    # the per-batch check is every 50 batches: the epoch-end guard must stop the run before the NaN model is
    # evaluated or checkpointed, naming the loss
    cfg = probe_cfg(tmp_path, nan_at_step=7, divergence_check_every=50)
    with pytest.raises(DivergenceError, match=r"training loss \(main\) became NaN/inf in epoch 1.*last good checkpoint"):
        run(cfg)
    good = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert good["global_step"] == 5


def test_a_crash_caused_by_divergence_is_reported_as_divergence(tmp_path):
    cfg = probe_cfg(tmp_path, nan_at_step=7, divergence_check_every=50)
    cfg.method._target_ = "tests.test_lifecycle.SamplingProbe"
    with pytest.raises(DivergenceError, match=r"diverged \(main NaN/inf\) and then failed with RuntimeError"):
        run(cfg)


def test_the_message_names_only_the_losses_that_diverged():
    probe = EntropyProbe(3, [1, 2, 2])
    probe.watch_loss("critic", torch.tensor(1.0))
    probe.watch_loss("generator", torch.tensor(float("inf")))
    probe.watch_loss("critic", torch.tensor(2.0))
    assert probe.diverged_losses() == ["generator"]
    with pytest.raises(DivergenceError, match=r"\(generator\)"):
        probe.raise_if_diverged()


def test_the_end_of_training_is_checkpointed_off_the_interval(tmp_path):
    cfg = probe_cfg(tmp_path)
    cfg.trainer.max_epochs = 3
    cfg.callbacks.model_checkpoint.every_n_epochs = 2  # epochs 0-1 checkpointed by the interval, epoch 2 by the guard
    run(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 15
    again = run(cfg)  # re-running the finished folder trains nothing more
    assert again["global_step"] == 15 and not again.get("history")


def test_sessions_that_end_off_the_interval_resume_where_they_ended(tmp_path):
    cfg = probe_cfg(tmp_path)
    cfg.callbacks.model_checkpoint.every_n_epochs = 2
    for epochs in (1, 2, 3):  # session 1 saves nothing by the interval; each session ends where the next resumes
        cfg.trainer.max_epochs = epochs
        result = run(cfg)
        assert result["global_step"] == 5 * epochs
        assert [h["epoch"] for h in result["history"]] == [epochs - 1]  # no epoch trained twice
        last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
        assert last["global_step"] == 5 * epochs
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("last*")) == ["last.ckpt"]


@pytest.mark.parametrize("method", [
    ["method=clustergan", "method.autocast=none", "method.n_critic=2"],
    ["method=udc", "method.autocast=none", "method.n_critic=2", "method.nets.generator.dim=8",
     "method.nets.critic.dim=8", "method.nets.classifier.dim=8"],
    ["method=hrwae_gan", "method.noise_attention.every_n_epochs=1", "method.noise_attention.start_epoch=1",
     "method.nets.autoencoder.channels=[8,8,16,16,16]", "method.nets.discriminator.hidden=[16]"],
    ["method=cgm", "method.langevin.steps=3"],
], ids=["clustergan", "udc", "hrwae_gan", "cgm"])
def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path, method):
    """Random streams travel in the checkpoint (and UDC's cycle across an epoch's end), so stopping after epoch 1
    and resuming gives the uninterrupted run's model bit for bit."""
    common = ["dataset=digits", "trainer=smoke", "logger=none", "trainer.limit_train_batches=5",
              "callbacks.evaluator.every_n_epochs=0", "callbacks.evaluator.save_figures=false",
              "callbacks.evaluator.mode_samples=0", "reference_kmeans=false", *method]
    whole = compose_cfg([*common, "trainer.max_epochs=2"], output_dir=tmp_path / "whole")
    run(whole)
    part = compose_cfg([*common, "trainer.max_epochs=1"], output_dir=tmp_path / "part")
    run(part)
    part.trainer.max_epochs = 2
    run(part)
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)["state_dict"]
    assert_same_state(a, b)


def assert_same_state(a, b, where="state_dict"):
    assert type(a) is type(b) and (not isinstance(a, dict) or a.keys() == b.keys()), where
    if isinstance(a, dict):
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_a_run_folder_resumes_only_its_own_run(tmp_path):
    from genclust.errors import GenclustError
    from genclust.predict import predict

    cfg = probe_cfg(tmp_path)
    cfg.trainer.max_epochs = 1
    run(cfg)
    other = probe_cfg(tmp_path)
    other.seed = 7
    with pytest.raises(GenclustError, match=r"written by another run: seed 0 \(now 7\)"):
        run(other)
    changed = probe_cfg(tmp_path, lr=0.5)
    with pytest.raises(GenclustError, match=r"another run: method.lr None \(now 0.5\)"):
        run(changed)
    longer = probe_cfg(tmp_path)
    longer.trainer.max_epochs = 2  # the trainer's settings may change: that is how a run is extended
    assert run(longer)["global_step"] == 10
    last = tmp_path / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.unlink()  # a link (save_last: link): write a truncated copy in its place
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(GenclustError, match="cannot be read"):
        run(cfg)
    (tmp_path / "model.pt").write_bytes(b"not a model")
    with pytest.raises(GenclustError, match="cannot be read"):
        predict(tmp_path)


def test_nan_weights_with_finite_losses_stop_before_evaluation_and_checkpoint(tmp_path, monkeypatch):
    from genclust.evaluation.callback import ClusteringEvaluator

    evaluated = []
    real = ClusteringEvaluator.on_train_epoch_end

    def spy(self, trainer, module):
        evaluated.append(trainer.current_epoch)
        return real(self, trainer, module)

    monkeypatch.setattr(ClusteringEvaluator, "on_train_epoch_end", spy)
    cfg = probe_cfg(tmp_path, spoil_at_step=9, divergence_check_every=50)  # the last batch of epoch 1
    cfg.method._target_ = "tests.test_lifecycle.WeightSpoiler"
    with pytest.raises(DivergenceError, match=r"parameters head.weight became NaN/inf in epoch 1"):
        run(cfg)
    assert evaluated == [0]  # epoch 1's model was never evaluated
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
