"""ClusterGAN: nets for every supported input shape, losses, prior, the training schedule, clustering
of new data (argmax, k-means on the latent, Algorithm 1), figures and a smoke fit through train.py."""

import json

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict

from genclust.errors import ConfigError
from genclust.methods.clustergan import BatchNormNoScale, ClusterGAN
from genclust.train import run
from tests.helpers import compose_cfg, options

TINY = dict(g_fc=[32], g_channels=[16, 8], d_channels=[8, 16], d_fc=[32], mlp_hidden=[32, 32])


def make(img_shape=(1, 8, 8), k=10, **kw):
    torch.manual_seed(0)
    return ClusterGAN(k, list(img_shape), **{**TINY, **kw})


def composed(overrides, tmp_path=None):
    return compose_cfg(["method=clustergan", *overrides], output_dir=tmp_path)


# ----------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("experiment", [e for e in options("experiment") if e.startswith("clustergan_")])
def test_experiments_compose_with_paper_settings(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    m = instantiate(cfg.method, _convert_="all")
    assert isinstance(m, ClusterGAN) and m.n_clusters == cfg.dataset.n_clusters
    expected = {"clustergan_mnist": (30, 10.0), "clustergan_fmnist": (40, 0.0), "clustergan_fmnist5": (40, 0.0),
                "clustergan_synthetic": (6, 10.0)}.get(experiment)
    if expected:
        assert (m.latent_dim, float(m.hparams.beta_n)) == expected
        assert m.sigma == 0.10 and m.n_critic == 5 and m.hparams.lr == 1e-4  # §2.3, §6.2


def test_method_defaults_are_the_papers():
    m = instantiate(composed(["dataset=mnist_test"]).method, _convert_="all")
    hp = m.hparams
    assert (m.sigma, m.n_critic, hp.gp_weight, hp.lr, list(hp.betas), m.batch_size) == (0.1, 5, 10.0, 1e-4,
                                                                                         [0.5, 0.9], 64)
    assert (hp.beta_n, hp.beta_c, m.latent_dim, m.clustering) == (10.0, 10.0, 30, "argmax")
    assert not hp.gp_per_sample_alpha and hp.g_act == "relu" and hp.precision == "32"


# -------------------------------------------------------------------------------------------- nets
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 32, 32), (100,), (2,)])
def test_net_shapes_every_input_size(shape):
    m = make(shape, k=4)
    n = 5
    z, z_n, k = m.sample_z(n)
    assert z.shape == (n, m.latent_dim + 4) and z_n.shape == (n, m.latent_dim)
    x = m.generator(z)
    assert tuple(x.shape[1:]) == (shape if len(shape) == 3 else shape)
    assert x.min() >= 0 and x.max() <= 1  # sigmoid for [0, 1] data
    assert m.critic(x).shape == (n, 1)
    assert m.encoder(x).shape == (n, m.latent_dim + 4)
    assert m.arch == ("conv" if len(shape) == 3 else "mlp")


def test_mnist_nets_follow_the_supplementary_table():
    m = ClusterGAN(10, [1, 28, 28])  # full size: FC 1024, 7x7x128, 'SAME' convs 28 -> 14 -> 7
    g = [type(layer).__name__ for layer in m.generator.net]
    assert g[:3] == ["Linear", "BatchNormNoScale", "ReLU"]
    assert m.generator.net[0].out_features == 1024 and m.generator.net[3].out_features == 7 * 7 * 128
    assert m.critic.head.in_features == 1024 and m.critic.body[-2].in_features == 7 * 7 * 128
    assert not any(isinstance(mod, BatchNormNoScale | torch.nn.BatchNorm2d) for mod in m.critic.modules())
    assert m.encoder.head.out_features == 40  # z_n (30) + K (10)
    bn = next(mod for mod in m.generator.modules() if isinstance(mod, BatchNormNoScale))
    assert bn.bn.weight is None and bn.bn.eps == 1e-3  # TF batch_norm: no gamma, eps 1e-3


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        ClusterGAN(10, [1, 10, 10])
    with pytest.raises(ConfigError, match="backprop"):
        ClusterGAN(10, [1, 8, 8], use_encoder=False)
    with pytest.raises(ConfigError, match="clustering"):
        ClusterGAN(10, [1, 8, 8], clustering="nope")


# ------------------------------------------------------------------------------------ prior/losses
def test_prior_is_one_hot_plus_small_gaussian():
    m = make(k=10)
    z, z_n, k = m.sample_z(20000)
    z_c = z[:, m.latent_dim:]
    assert torch.equal(z_c, F.one_hot(k, 10).float())
    assert abs(z_n.std().item() - 0.10) < 0.005  # §2.3 sigma = 0.10
    counts = torch.bincount(k, minlength=10).float() / len(k)
    assert (counts - 0.1).abs().max() < 0.02
    assert (m.sample_z(7, cluster=3)[2] == 3).all()


def test_generator_loss_is_algorithm_2():
    m = make(k=4)
    torch.manual_seed(1)
    loss, logs = m.generator_loss(16)
    torch.manual_seed(1)
    z, z_n, k = m.sample_z(16)
    fake = m.generator(z)
    enc = m.encoder(fake)
    want = (-m.critic(fake).mean() + 10 * ((enc[:, :m.latent_dim] - z_n) ** 2).mean()
            + 10 * F.cross_entropy(enc[:, m.latent_dim:], k))
    # BN in train mode uses batch stats: same z -> same value
    assert torch.allclose(loss, want, atol=1e-5)
    assert {"train/loss_zn", "train/loss_zc", "train/loss_g_adv"} <= set(logs)


def test_zn_unit_scale_is_a_reparametrisation():
    m = make(k=4, zn_unit_scale=True).eval()
    z, z_n, _ = m.sample_z(6)
    scaled = torch.cat([z_n / m.sigma, z[:, m.latent_dim:]], 1)
    x = m._g(z)
    assert torch.allclose(x, m.generator(scaled))
    enc = m._e(x)
    raw = m.encoder(x)
    assert torch.allclose(enc[:, :m.latent_dim], m.sigma * raw[:, :m.latent_dim])
    assert torch.allclose(enc[:, m.latent_dim:], raw[:, m.latent_dim:])
    assert m.describe()["paper_deviations"] == {"zn_unit_scale": True}


def test_critic_loss_sign_and_lazy_penalty():
    m = make(k=4, gp_every=3)
    real = torch.rand(8, 1, 8, 8)
    m._gp_calls = 0
    _, logs = m.critic_loss(real)
    assert "train/gp" in logs
    m._gp_calls = 1
    loss, logs = m.critic_loss(real)
    assert "train/gp" not in logs and torch.allclose(loss, -logs["train/wdist"])


# -------------------------------------------------------------------------------------- schedule
def test_training_schedule_counts_critic_and_generator_steps(tmp_path):
    cfg = composed(["dataset=digits", "trainer=smoke", "trainer.limit_train_batches=10",
                    "callbacks.evaluator.every_n_epochs=0", "method.batch_size=32",
                    "method.n_critic=5",  # the paper's; the digits pair config (the default job) uses 1
                    *[f"method.{k}={json.dumps(v)}" for k, v in TINY.items()]], tmp_path)
    result = run(cfg)
    info = result["method_info"]
    assert info["critic_steps"] == 10 and info["generator_steps"] == 2  # 5 critic steps per G step
    assert info["clustering"] == "argmax" and info["inference"] == "encoder"
    assert (tmp_path / "figures" / "clustergan_modes.png").is_file()
    assert (tmp_path / "figures" / "clustergan_interpolation.png").is_file()
    assert 0.0 <= result["acc"] <= 1.0
    # argmax is the reported read-out; the official k-means on [z_n, softmax(z_c)] is reported beside it
    for split in ("train", "test"):
        assert 0.0 <= result[f"eval/{split}/kmeans_latent/acc"] <= 1.0


def test_kmeans_latent_clusters_new_data_and_reloads(tmp_path):
    cfg = composed(["dataset=digits", "trainer=smoke", "callbacks.evaluator.every_n_epochs=0",
                    "method.clustering=kmeans_latent", "method.kmeans_n_init=2", "method.n_critic=1",
                    *[f"method.{k}={json.dumps(v)}" for k, v in TINY.items()]], tmp_path)
    result = run(cfg)
    assert result["method_info"]["kmeans_fitted_at_generator_step"] == result["method_info"]["generator_steps"]
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    m2 = instantiate(cfg.method, _convert_="all")
    m2.load_state_dict(state["state_dict"])
    m2.eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        p = m2.cluster_probs(x)
    assert p.shape == (12, 10) and torch.allclose(p.sum(1), torch.ones(12), atol=1e-5)
    assert int(m2.kmeans_fitted_at) >= 0


def test_kmeans_latent_features_follow_beta_n():
    assert make(k=5, clustering="kmeans_latent", beta_n=0.0).kmeans_centers.shape == (5, 5)
    m = make(k=5, clustering="kmeans_latent")
    assert m.kmeans_centers.shape == (5, m.latent_dim + 5)
    x = torch.rand(40, 1, 8, 8)
    m.fit_kmeans(x)
    with torch.no_grad():
        p = m.cluster_probs(x)
    assert torch.allclose(p.sum(1), torch.ones(40), atol=1e-5)


# ------------------------------------------------------------------------------------- inference
def test_argmax_probs_are_softmax_of_zc_logits():
    m = make(k=10).eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        p = m.cluster_probs(x)
        logits = m.encoder(x)[:, m.latent_dim:]
    assert torch.allclose(p, torch.softmax(logits, 1)) and torch.allclose(p.sum(1), torch.ones(6))


def test_backprop_decoding_recovers_the_generating_mode():
    """Algorithm 1 on images drawn from G itself: the restart with the true z_c should win."""
    m = make(k=4, inference="backprop", use_encoder=False, bp_iters=60, bp_batch_size=5).eval()
    with torch.no_grad():  # an untrained G barely depends on z_c: make its modes distinct
        m.generator.net[0].weight[:, m.latent_dim:] *= 100
        z, _, k = m.sample_z(10)
        x = m.generate(z)
    z_n, losses = m.decode_latent(x)
    assert losses.shape == (10, 4) and z_n.shape == (10, m.latent_dim)
    assert z_n.abs().max() <= 0.6 + 1e-6  # clipped (Algorithm 1)
    assert (losses.argmin(1) == k).float().mean() >= 0.8
    with torch.no_grad():  # works under no_grad (the evaluator's context)
        p = m.cluster_probs(x)
    assert torch.allclose(p.sum(1), torch.ones(10), atol=1e-5)
    assert m.describe()["inference"] == "backprop"


def test_sample_shapes_and_range():
    m = make(k=3)
    s = m.sample(4, cluster=2)
    assert s.shape == (4, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    v = make((100,), k=4).sample(3)
    assert v.shape == (3, 100)


def test_bf16_autocast_trains_finite(monkeypatch):
    monkeypatch.setenv("GENCLUST_EMULATED_BF16", "1")  # the bf16 path also on CPUs without native bf16
    m = make(k=4, precision="bf16")
    assert m._bf16()
    loss_d, _ = m.critic_loss(torch.rand(8, 1, 8, 8))
    loss_g, _ = m.generator_loss(8)
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g) and loss_d.dtype == torch.float32


def test_synthetic_smoke_fit(tmp_path):
    cfg = compose_cfg(["experiment=clustergan_synthetic", "trainer=smoke", "trainer.limit_train_batches=10",
                       "trainer.max_epochs=1",
                       "callbacks.evaluator.every_n_epochs=0"], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.method.mlp_hidden = [32, 32]
    result = run(cfg)
    assert result["method_info"]["arch"] == "mlp" and result["method_info"]["generator_steps"] == 2
    assert not (tmp_path / "figures" / "clustergan_modes.png").exists()


def test_weight_average_follows_training_and_serves_inference(tmp_path):
    cfg = composed(["dataset=digits", "trainer=smoke", "trainer.limit_train_batches=6",
                    "callbacks.evaluator.every_n_epochs=0", "method.n_critic=1", "method.ema_decay=0.9",
                    *[f"method.{k}={json.dumps(v)}" for k, v in TINY.items()]], tmp_path)
    result = run(cfg)
    assert result["method_info"]["paper_deviations"]["ema_decay"] == 0.9
    state = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    m = instantiate(cfg.method, _convert_="all")
    m.load_state_dict(state)  # the averages are part of the saved model (and of checkpoints: resume)
    m.eval()
    raw, avg = m.encoder.head.weight, m.encoder_ema.head.weight
    assert not avg.requires_grad and not torch.equal(raw, avg)  # a lagging average, not a copy
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        expected = torch.softmax(m._e(x, m.encoder_ema)[:, m.latent_dim:], dim=1)
        assert torch.allclose(m.cluster_probs(x), expected)  # clustering reads the averaged encoder
        m.generator_ema.eval()
        z, _, _ = m.sample_z(3, cluster=1)
        assert torch.allclose(m.generate(z), m._g(z, m.generator_ema))


def test_weight_average_update_is_an_ema_with_warmup():
    m = make(k=4, ema_decay=0.99)
    before = [p.clone() for p in m.encoder_ema.parameters()]
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    m._update_ema(0)  # warm-up at step 0: decay = min(0.99, 1/10) -> the average moves 90% of the way
    for b, a in zip(before, m.encoder_ema.parameters()):
        assert torch.allclose(a, b + 0.9, atol=1e-6)
    with pytest.raises(ConfigError):
        make(k=4, ema_decay=1.0)
