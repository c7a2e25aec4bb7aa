"""UDC: nets for every supported input size (Fig. 2 rules), the Eq. 8 staircase and tau=auto, the
paper / authors' schedules, the losses of Eqs. 5-7, the training cycle (N_critic critic batches, N_class
classifier steps, one generator step), clustering of new data through softmax C, figures, smoke fits."""

import csv
import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from genclust.errors import ConfigError
from genclust.methods.udc import LAST_STAIR, UDC
from genclust.nets.blocks import frozen
from genclust.nets.wgan_gp import trunk_plan
from genclust.train import run
from tests.helpers import DATA_DIR, compose_cfg, options, requires_mnist_test, run_cli

PLAYERS = ("generator", "critic", "classifier")
TINY_NETS = dict(dim=4, hidden=[16, 16])


def net_overrides(**widths):
    return [f"method.nets.{p}.{k}={json.dumps(v)}" for p in PLAYERS for k, v in widths.items()]


def tiny_overrides():
    return [*net_overrides(**TINY_NETS), "method.z_dim=4"]


@functools.cache
def _parts(overrides=()):
    """The real config's nets/optim factories (tiny widths unless ``overrides`` say otherwise)."""
    method = compose_cfg(["method=udc", *tiny_overrides(), *overrides]).method
    return method.nets, method.optim


def make(img_shape=(1, 8, 8), k=10, net_args=(), **kw):
    """A UDC built from the composed config's nets/optim (tiny by default) and the keyword hyperparameters."""
    nets, optim = _parts(tuple(net_args))
    torch.manual_seed(0)
    return UDC(k, list(img_shape), nets=instantiate(nets, _convert_="all"), optim=instantiate(optim, _convert_="all"),
               **{"batch_size": 16, "z_dim": 4, **kw})


def composed(overrides, tmp_path=None):
    return compose_cfg(["method=udc", *overrides], output_dir=tmp_path)


# ----------------------------------------------------------------------------------------- configs
def test_method_defaults_are_algorithm_1():
    m = instantiate(composed(["dataset=mnist_test"]).method, _convert_="all")
    s, hp = m.sched, m.hparams
    assert (s["eta0"], s["gamma"], s["gp_lambda"], s["n_critic"], s["n_class"]) == (10.0, 1.2, 100.0, 5, 4)
    assert s["critic_outputs"] == 1 and s["double_steps_at"] is None
    assert (hp.tau, m.pixel_range) == ("auto", "unit")
    for player, opt in zip(m.optimizer_names(), m.configure_optimizers()):  # Adam(1e-4, 0.5, 0.9) for all three
        assert isinstance(opt, torch.optim.Adam), player
        assert (opt.defaults["lr"], tuple(opt.defaults["betas"])) == (1e-4, (0.5, 0.9))
    assert m.optimizer_names() == ["critic", "classifier", "generator"]


def test_authors_code_schedule_preset_and_overrides():
    m = make(schedule="authors_code")
    assert (m.sched["eta0"], m.sched["gp_lambda"], m.sched["n_class"], m.sched["critic_outputs"]) == (1.0, 10.0, 2,
                                                                                                      10)
    assert m.critic_scores(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    m._total = 300
    assert m.steps_now(99) == (5, 2) and m.steps_now(100) == (10, 4)  # doubled at N/3 (gan_mnist.py L308)
    assert make(schedule="authors_code", gp_lambda=100.0, double_steps_at=0).sched["double_steps_at"] is None
    with pytest.raises(ConfigError, match="schedule"):
        make(schedule="nope")


@pytest.mark.parametrize("experiment", [e for e in options("experiment") if e.startswith("udc_")])
def test_experiments_compose(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    m = instantiate(cfg.method, _convert_="all")
    assert isinstance(m, UDC) and m.n_clusters == cfg.dataset.n_clusters


# -------------------------------------------------------------------------------------------- nets
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 32, 32), (2,), (100,)])
def test_net_shapes_every_input_size(shape):
    m = make(shape, k=4)
    x = m.sample(5)
    assert tuple(x.shape) == (5, *shape)
    if len(shape) == 3:
        assert x.min() >= 0 and x.max() <= 1  # sigmoid for [0, 1] data
    assert m.critic_scores(x).shape == (5,)
    p = m.cluster_probs(x)
    assert p.shape == (5, 4) and torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)


def test_fig2_map_sizes():
    assert trunk_plan(28) == ([2, 2, 2], [28, 14, 7, 4])  # G: 4 -> 8 -> crop 7 -> 14 -> 28
    assert trunk_plan(32) == ([2, 2, 2], [32, 16, 8, 4])  # first deconv outputs 8x8 (ORL / Cifar-10)
    assert trunk_plan(16) == ([1, 2, 2], [16, 16, 8, 4])  # USPS: 1x1 stride in the outer layers
    assert trunk_plan(8) == ([1, 2, 2], [8, 8, 4, 2])  # digits (ours)
    m = make((1, 28, 28), z_dim=128, net_args=tuple(net_overrides(dim=64)))  # full size, DIM 64 (authors' code)
    names = [type(layer).__name__ for layer in m.generator.net]
    assert names == ["Linear", "ReLU", "Reshape", "ConvTranspose2d", "Crop", "ReLU", "ConvTranspose2d", "ReLU",
                     "ConvTranspose2d", "Sigmoid"]
    assert m.generator.net[0].in_features == 128 + 10 and m.generator.net[0].out_features == 4 * 4 * 256
    assert m.critic.head.in_features == 4 * 4 * 256 and m.classifier.head.out_features == 10
    convs = [mod for mod in m.critic.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 3 and [c.stride for c in convs] == [(2, 2)] * 3
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert m.critic is not m.classifier and m.critic.features is not m.classifier.features  # separate nets


def test_mlps_for_vector_data_are_512_cubed():
    m = make((2,), k=8, z_dim=2, net_args=tuple(net_overrides(hidden=[512, 512, 512])))
    lin = [mod for mod in m.generator.modules() if isinstance(mod, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in lin] == [(10, 512), (512, 512), (512, 512), (512, 2)]
    assert [mod.out_features for mod in m.classifier.modules() if isinstance(mod, torch.nn.Linear)][-1] == 8


def test_bad_shapes_are_config_errors():
    with pytest.raises(ConfigError):
        make((1, 8, 10), k=3)
    with pytest.raises(ConfigError, match="tau"):
        make(tau="sometimes")


# -------------------------------------------------------------------------------------- schedule
def test_eta_staircase_eq8():
    m = make(tau=3)
    m._tau = 3
    assert [round(m.eta(t), 4) for t in range(7)] == [10.0, 10.0, 10.0, 12.0, 12.0, 12.0, 14.4]
    assert math.isclose(m.eta(29 * 3), 10 * 1.2**29)


def test_eta_never_exceeds_the_papers_last_stair():
    # issue: a fast host on a pinned plan ran 36k of 26k planned steps -> eta0 * 1.2**41; the stair stops at 29
    assert LAST_STAIR == 29
    m = make(tau=3)
    top = 10 * 1.2**29
    assert all(m.eta(t) <= top * (1 + 1e-12) for t in range(0, 3 * 60))
    assert math.isclose(m.eta(3 * 41), top) and math.isclose(m.eta(10**9), top)
    m._by_clock, m._stair = True, 0
    m.run_progress = lambda batch_idx=0: 1.0  # the clock's last instant (and beyond) is still stair 29
    m._update_stair(0)
    assert m._stair == 29 and math.isclose(m.eta(), top)


def test_pinned_plan_is_replanned_from_the_measured_rate():
    # total_gen_steps=26000 pinned, but the host makes 36,000 in the budget: at replan_at the plan follows the rate
    m = make(total_gen_steps=26000, replan_at=0.1)
    m._tau = round(26000 * 30 / 900)
    m._t = 2000
    m.run_progress = lambda batch_idx=0: 0.05
    m._replan = True
    m._maybe_replan(0)
    assert m._replan and m._total == 0  # not yet: 5% of the budget
    stair_before = m.stair()
    m._t, m.run_progress = 3600, (lambda batch_idx=0: 0.1)
    m._maybe_replan(0)
    assert not m._replan and m._total == 36000 and m._tau == 1200
    assert m.stair() >= stair_before  # never down
    assert m.stair(36000 - 1) == 29 and m.stair(36000 * 2) == 29  # ends on the last stair, not beyond
    assert int(m.tau_steps) == 1200 and int(m.planned_gen_steps) == 36000
    with pytest.raises(ConfigError, match="replan_at"):
        make(replan_at=1.5)


def test_tau_auto_spans_the_run():
    m = make()

    class FakeTrainer:
        max_epochs, num_training_batches, max_steps = 3, 1000, -1

    m._trainer = FakeTrainer()
    assert m.plan_total_gen_steps() == 600  # 3 epochs x 1000 critic batches / 5
    FakeTrainer.max_epochs = -1
    assert m.plan_total_gen_steps() is None  # max_time only: no step plan (the stairs follow the clock)
    FakeTrainer.max_steps = 1000
    assert m.plan_total_gen_steps() == 100  # 10 optimizer steps per generator step
    m._trainer = None
    assert make(total_gen_steps=900000).plan_total_gen_steps() == 900000
    a = make(schedule="authors_code")
    FakeTrainer.max_epochs, FakeTrainer.max_steps = 5, -1
    a._trainer = FakeTrainer()
    t = a.plan_total_gen_steps()  # T/3 steps at 5 critic batches, 2T/3 at 10
    assert abs(t / 3 * 5 + 2 * t / 3 * 10 - 5000) < 10


# ------------------------------------------------------------------------------------ losses
def test_critic_loss_is_eq5():
    m = make(k=4, gp_lambda=100.0)
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    torch.manual_seed(3)
    loss, w, gp = m.critic_loss(real, fake)
    want_w = m.critic_scores(real).mean() - m.critic_scores(fake).mean()
    assert torch.allclose(w, want_w, atol=1e-5)
    assert torch.allclose(loss, -want_w + 100.0 * gp, atol=1e-4) and gp >= 0


def test_classifier_loss_is_cross_entropy_on_fake_labels():
    m = make(k=4)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    loss, logits = m.classifier_loss(x, y)
    assert torch.allclose(loss, F.cross_entropy(m.classifier(x), y))


def test_frozen_passes_gradients_through_but_not_into():
    m = make(k=4)
    y, z = m._draw(4)
    with frozen(m.critic, m.classifier):
        x = m.generate(y, z)
        (-m.critic_scores(x).mean() + F.cross_entropy(m.classifier(x), y)).backward()
    assert all(p.grad is None for p in m.critic.parameters())
    assert all(p.grad is None for p in m.classifier.parameters())
    assert all(p.grad is not None for p in m.generator.parameters())
    assert all(p.requires_grad for p in m.critic.parameters())  # restored


# -------------------------------------------------------------------------------------- training
def test_training_cycle_counts_steps_and_logs(tmp_path):
    cfg = composed(["dataset=digits", "trainer=smoke", "trainer.limit_train_batches=10",
                    "callbacks.evaluator.every_n_epochs=0", "method.batch_size=32", "method.diag_every=1",
                    *tiny_overrides()], tmp_path)
    result = run(cfg)
    info = result["method_info"]
    assert info["gen_steps"] == 2 and info["resolved"]["tau"] == 1  # 10 critic batches / 5
    assert result["global_step"] == 2 * (5 + 4 + 1)  # every optimizer step counts in Lightning
    assert (tmp_path / "figures" / "udc_samples_by_cluster.png").is_file()
    logged = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/eta", "train/wasserstein", "train/fake_acc", "train/entropy_fake", "train/entropy_real"):
        assert key in logged
    # clustering of new data through the saved model
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    m2 = instantiate(cfg.method, _convert_="all")
    m2.load_state_dict(state["state_dict"])
    with torch.no_grad():
        p = m2.eval().cluster_probs(torch.rand(12, 1, 8, 8))
    assert p.shape == (12, 10) and torch.allclose(p.sum(1), torch.ones(12), atol=1e-5)
    assert int(m2.gen_steps) == 2


def test_batched_fakes_cover_one_cycle():
    m = make(k=4, n_critic=3, n_class=2)
    m._refill_fakes(5)
    assert len(m._fakes["critic"]) == 3 and len(m._fakes["class_x"]) == 2
    assert all(x.shape == (5, 1, 8, 8) for x in m._fakes["critic"] + m._fakes["class_x"])
    assert all(y.shape == (5,) and int(y.max()) < 4 for y in m._fakes["class_y"])
    m2 = make(k=4, n_critic=3, n_class=2, batch_fakes=False)
    m2._refill_fakes(5)
    assert len(m2._fakes["critic"]) == 3 and len(m2._fakes["class_y"]) == 2


def test_tau_auto_on_a_wall_clock_budget_follows_the_clock(tmp_path):
    # max_time only: the step count is unknown in advance, so the 30 stairs are spread over the budget
    cfg = composed(["dataset=digits", "trainer=smoke", "trainer.max_epochs=-1", "trainer.max_time=00:00:00:04",
                    "callbacks.evaluator.every_n_epochs=0", "method.eta0=1.0", *tiny_overrides()], tmp_path)
    info = run(cfg)["method_info"]
    assert info["eta_schedule"].startswith("clock")
    stair = round(math.log(info["eta_final"]) / math.log(1.2))
    assert 20 <= stair <= 29, stair  # the last generator step falls in the last stairs of the budget
    eta = [float(r["train/eta"]) for r in csv.DictReader((tmp_path / "csv" / "metrics.csv").open()) if r.get("train/eta")]
    assert eta == sorted(eta) and eta[0] < eta[-1]  # a staircase: never down
    bad = composed(["dataset=digits", "trainer=smoke", "trainer.max_epochs=-1", "trainer.max_time=00:00:00:02",
                    "method.schedule=authors_code", "callbacks.evaluator.every_n_epochs=0", *tiny_overrides()],
                   tmp_path / "bad")
    with pytest.raises(ConfigError, match="total_gen_steps"):  # the code's doubling needs a step count
        run(bad)


def test_bf16_autocast_losses_are_finite_float32(monkeypatch):
    monkeypatch.setenv("GENCLUST_EMULATED_BF16", "1")  # the bf16 path also on CPUs without native bf16
    m = make(k=4, autocast="bf16")
    assert m.autocast_active() and m.describe()["autocast"] == "bf16"
    with m.autocast():
        assert m.generate(*m._draw(2)).dtype == torch.bfloat16
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    loss, w, gp = m.critic_loss(real, fake)
    loss_c, _ = m.classifier_loss(fake, torch.randint(0, 4, (8,)))
    assert torch.isfinite(loss) and torch.isfinite(loss_c) and loss.dtype == torch.float32


def test_blobs_smoke_fit_and_surface(tmp_path):
    cfg = compose_cfg(["experiment=udc_blobs", "trainer=smoke", "trainer.limit_train_batches=10", "trainer.max_epochs=1",
                       "callbacks.evaluator.every_n_epochs=0", *net_overrides(hidden=[32, 32])],
                      output_dir=tmp_path)
    result = run(cfg)
    assert result["method_info"]["gen_steps"] == 2 and result["method_info"]["resolved"]["gp_lambda"] == 0.1
    assert (tmp_path / "figures" / "udc_clustering_surface.png").is_file()


def test_lazy_gradient_penalty_weight():
    m = make(k=4, gp_lambda=10.0, gp_every=4)
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    loss, w, gp = m.critic_loss(real, fake, with_gp=False)
    assert gp is None and torch.allclose(loss, -w)
    torch.manual_seed(5)
    loss, w, gp = m.critic_loss(real, fake, with_gp=True)
    assert torch.allclose(loss, -w + 40.0 * gp, atol=1e-4)  # k * lambda
    with pytest.raises(ConfigError, match="gp_every"):
        make(gp_every=0)


def test_classifier_noise_on_training_fakes_only():
    m = make(k=4, classifier_noise=0.5)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(1)
    loss, logits = m.classifier_loss(x, y)
    torch.manual_seed(1)
    noisy = x + 0.5 * torch.randn_like(x)
    assert torch.allclose(logits, m.classifier(noisy), atol=1e-5)
    assert not torch.allclose(logits, m.classifier(x), atol=1e-3)
    # clustering real data reads the clean image: deterministic, no noise
    assert torch.equal(m.cluster_probs(x), m.cluster_probs(x))
    assert torch.allclose(m.cluster_probs(x), F.softmax(m.classifier(x), 1))
    with pytest.raises(ConfigError, match="classifier_noise"):
        make(classifier_noise=-0.1)


def test_z_std_scales_the_noise():
    m = make(k=4, z_std=0.1)
    _, z = m._draw(20000)
    assert abs(z.std().item() - 0.1) < 0.005


def test_channels_last_is_the_same_computation():
    a, b = make(k=4), make(k=4, channels_last=True)
    assert b.critic.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    y, z = a._draw(8)
    torch.testing.assert_close(a.generate(y, z), b.generate(y, z), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.critic_loss(real, fake, with_gp=False)[0], b.critic_loss(real, fake, with_gp=False)[0],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.cluster_probs(real), b.cluster_probs(real), atol=1e-5, rtol=1e-4)


def test_artifact_probe_reads_a_digits_run(tmp_path):
    # the CPU-scale artifact set (8x8 digits): same probe, no data files needed
    cfg = compose_cfg(["experiment=udc_artifact_digits", "trainer=smoke", "trainer.limit_train_batches=10",
                       "trainer.max_epochs=1", "trainer.max_time=null",
                       "callbacks.evaluator.every_n_epochs=0", "method.n_critic=1", "method.n_class=1",
                       "method.total_gen_steps=10", *tiny_overrides()], output_dir=tmp_path)
    result = run(cfg)
    assert result["method_info"]["gen_steps"] == 10
    proc = run_cli([str(tmp_path / "checkpoints" / "last.ckpt"), "--n-samples", "20"], script="scripts/artifact_probe.py")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("cluster ") == 3 and "on all 359 test images" in proc.stdout


@requires_mnist_test
def test_artifact_probe_reads_a_run(tmp_path):
    # scripts/artifact_probe.py: per-cluster pixel (0, 0) of G and C's reaction to that pixel alone
    cfg = composed(["dataset=artifact_mnist", "trainer=smoke", "trainer.limit_train_batches=10",
                    "callbacks.evaluator.every_n_epochs=0", "method.batch_size=32", *tiny_overrides()], tmp_path)
    run(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    proc = run_cli([str(ckpt), "--data-dir", str(DATA_DIR), "--n-samples", "50"], script="scripts/artifact_probe.py")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("cluster ") == 3 and proc.stdout.count("change cluster") == 3
    assert "test ACC against the pixel label" in proc.stdout
    proc = run_cli([str(tmp_path / "missing.ckpt")], script="scripts/artifact_probe.py")
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr
