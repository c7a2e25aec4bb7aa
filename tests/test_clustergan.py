"""ClusterGAN: nets for every supported input shape, losses, prior, the training schedule, clustering
of new data (argmax, k-means on the latent, Algorithm 1), figures and a smoke fit through train.py."""

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from genclust.errors import ConfigError
from genclust.methods.clustergan import ClusterGAN
from genclust.nets.dcgan import BatchNormNoScale
from genclust.train import build_datamodule, run
from tests.helpers import compose_cfg, options

TINY = {"nets.generator.fc": [32], "nets.generator.channels": [16, 8], "nets.generator.mlp_hidden": [32, 32],
        "nets.critic.channels": [8, 16], "nets.critic.fc": [32], "nets.critic.mlp_hidden": [32, 32]}


def make(img_shape=(1, 8, 8), k=10, tiny=True, **kw):
    """ClusterGAN from the real method config (tiny nets), with ``kw`` as dotted overrides of method.*."""
    cfg = compose_cfg(["method=clustergan", "dataset=mnist_test"])  # no method_dataset pair settings
    with open_dict(cfg):
        cfg.method.img_shape, cfg.method.n_clusters = list(img_shape), k
        for readout in cfg.method.readouts.values():
            readout.n_clusters = k
        for key, value in {**(TINY if tiny else {}), **kw}.items():
            OmegaConf.update(cfg.method, key, value, merge=False)
    torch.manual_seed(0)
    try:
        return instantiate(cfg.method, _convert_="all")
    except InstantiationException as err:  # the constructor's own error (as train.py reports it)
        raise err.__cause__ from None


def composed(overrides, tmp_path=None):
    return compose_cfg(["method=clustergan", *overrides], output_dir=tmp_path)


TINY_OVERRIDES = [f"method.{k}={json.dumps(v)}" for k, v in TINY.items()]


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
        assert m.sigma == 0.10 and m.n_critic == 5 and m.optim_factories["generator"].keywords["lr"] == 1e-4


def test_method_defaults_are_the_papers():
    m = instantiate(composed(["dataset=mnist_test"]).method, _convert_="all")
    hp = m.hparams
    for player in ("critic", "generator"):
        kw = m.optim_factories[player].keywords
        assert (kw["lr"], list(kw["betas"])) == (1e-4, [0.5, 0.9])  # §6.2
    assert (m.sigma, m.n_critic, m.gp["weight"], m.batch_size) == (0.1, 5, 10.0, 64)
    assert (hp.beta_n, hp.beta_c, m.latent_dim, m.clustering, hp.zn_reduction) == (10.0, 10.0, 30, "argmax", "mean")
    assert not m.gp["per_sample_alpha"] and m.autocast_request == "none"
    assert m.describe()["paper_deviations"] == {}


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
    assert m.conv == (len(shape) == 3)


def test_mnist_nets_follow_the_supplementary_table():
    m = make((1, 28, 28), tiny=False)  # full size: FC 1024, 7x7x128, 'SAME' convs 28 -> 14 -> 7
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
        make((1, 10, 10))
    with pytest.raises(ConfigError, match="backprop"):
        make(use_encoder=False)
    with pytest.raises(ConfigError, match="clustering"):
        make(clustering="nope")
    with pytest.raises(ConfigError, match="zn_reduction"):
        make(zn_reduction="max")


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


def test_zn_reduction_sum_is_eq_1():
    """zn_reduction=sum sums the squared error over the d_n dims: d_n times the official mean."""
    m = make(k=4, zn_reduction="sum")
    a, b = torch.randn(5, m.latent_dim), torch.randn(5, m.latent_dim)
    assert torch.allclose(m.zn_loss(a, b), ((a - b) ** 2).sum(1).mean())
    assert torch.allclose(m.zn_loss(a, b), m.latent_dim * F.mse_loss(a, b))


def test_batch_statistics_at_inference_option():
    """bn_eval_stats=batch (official code) normalises an eval batch by its own statistics, running ones untouched."""
    m = make(k=4, **{"nets.generator.bn_eval_stats": "batch"}).eval()
    bn = next(mod for mod in m.generator.modules() if isinstance(mod, BatchNormNoScale))
    running = bn.bn.running_mean.clone()
    x = torch.randn(16, bn.bn.num_features) * 3 + 5
    y = bn(x)
    assert torch.allclose(y.mean(0), bn.bias, atol=1e-4) and torch.equal(bn.bn.running_mean, running)
    bn.eval_stats = "running"
    assert not torch.allclose(bn(x).mean(0), bn.bias, atol=1e-2)


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
    m = make(k=4, **{"gradient_penalty.every": 3})
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
                    *TINY_OVERRIDES], tmp_path)
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
    cfg = composed(["dataset=digits", "trainer=smoke", "callbacks.evaluator.every_n_epochs=1",
                    "method.clustering=kmeans_latent", "method.readouts.kmeans_latent.n_init=2", "method.n_critic=1",
                    *TINY_OVERRIDES], tmp_path)
    result = run(cfg)
    assert result["readouts"]["kmeans_latent"]["fitted"] and result["history"]  # refitted for the epoch eval too
    state = torch.load(tmp_path / "model.pt", weights_only=True)  # fitted centers travel as extra state
    m2 = instantiate(cfg.method, _convert_="all")
    m2.load_state_dict(state["state_dict"])
    m2.eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        p, labels = m2.assign(x)
    assert p.shape == (12, 10) and torch.allclose(p.sum(1), torch.ones(12), atol=1e-5)
    assert torch.equal(labels, p.argmax(1))
    saved = np.load(tmp_path / "assignments.npz")
    test_x = build_datamodule(cfg, m2)
    test_x.setup("fit")
    again = m2.predict_in_batches(test_x.eval_sets["test"].x)
    np.testing.assert_array_equal(again["labels"].numpy(), saved["test/cluster"])
    np.testing.assert_array_equal(again["kmeans_latent/labels"].numpy(), saved["test/kmeans_latent/cluster"])


def test_kmeans_latent_features_follow_beta_n():
    assert make(k=5, beta_n=0.0).embed(torch.rand(3, 1, 8, 8), "latent").shape == (3, 5)
    m = make(k=5)
    x = torch.rand(40, 1, 8, 8)
    assert m.embed(x, "latent").shape == (40, m.latent_dim + 5)
    m.fit_readouts(x)
    with torch.no_grad():
        out = m.predict_batch(x)
    assert torch.allclose(out["kmeans_latent/probs"].sum(1), torch.ones(40), atol=1e-5)
    assert out["kmeans_latent/labels"].max() < 5


def test_readouts_of_the_encoders_logits_and_features():
    m = make(k=5).eval()
    x = torch.rand(40, 1, 8, 8)
    with torch.no_grad():
        logits, feats = m.embed(x, "logits"), m.embed(x, "features")
        assert torch.equal(logits, m.encode(x)[1])  # the argmax read-out's logits, before the softmax
        assert feats.shape == (40, 32)  # TINY: E's FC width
        assert torch.allclose(m.encoder.head(feats)[:, m.latent_dim:], logits, atol=1e-6)  # the head's input
    m.fit_readouts(x)
    with torch.no_grad():
        out = m.predict_batch(x)
    for name in ("kmeans_logits", "kmeans_features"):
        assert out[f"{name}/labels"].shape == (40,) and out[f"{name}/labels"].max() < 5
    with pytest.raises(ConfigError, match="needs inference=encoder"):
        make(k=5, inference="backprop").embed(x, "features")


def test_without_the_encoder_the_encoder_readouts_are_left_out():
    m = make(k=5, inference="backprop", use_encoder=False)
    assert sorted(m.readouts) == ["kmeans_latent"]  # a run with inference=backprop still fits its read-outs
    with pytest.raises(ConfigError, match="clustering=kmeans_features reads the encoder"):
        make(k=5, inference="backprop", clustering="kmeans_features")


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
    m = make(k=4, inference="backprop", use_encoder=False, **{"backprop.iters": 60, "backprop.batch_size": 5}).eval()
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
    m = make(k=4, autocast="bf16")
    assert m.autocast_active()
    loss_d, _ = m.critic_loss(torch.rand(8, 1, 8, 8))
    loss_g, _ = m.generator_loss(8)
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g) and loss_d.dtype == torch.float32


def graph_leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The parameters (leaves) an autograd graph would compute a gradient for."""
    seen, stack, leaves = set(), [t.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.append(fn.variable)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


def test_generator_step_computes_no_critic_weight_gradient():
    """G's loss flows through D, but D is frozen during the forward: its weight gradients are never computed
    (toggle_optimizer at backward time would only discard them after computing them)."""
    m = make(k=4)
    loss, _ = m.generator_loss(8)
    leaves = {id(p) for p in graph_leaves(loss)}
    assert not leaves & {id(p) for p in m.critic.parameters()}
    assert {id(p) for p in m.generator.parameters()} <= leaves and {id(p) for p in m.encoder.parameters()} <= leaves
    assert all(p.requires_grad for p in m.critic.parameters())  # restored after the forward


def test_critic_fakes_cast_the_generator_once_per_generator_update(monkeypatch):
    """Under bf16 the critic steps read G's weights cast once per generator update: the fakes are bit-identical to
    autocast's own casts, and a generator update (the stamp) recasts them even when no version counter moved."""
    monkeypatch.setenv("GENCLUST_EMULATED_BF16", "1")
    m = make(k=4, autocast="bf16", n_critic=3, zn_unit_scale=True)
    z = m.sample_z(8)[0]

    def autocast_fakes():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return m._g(z).float()

    m._critic_calls = 0
    assert torch.equal(m._critic_fakes(z), autocast_fakes())
    cast = m._g_cast.params(0)
    fc = next(mod for mod in m.generator.modules() if isinstance(mod, torch.nn.Linear))
    fc.weight.data.add_(0.5)  # an in-place update that bumps no version counter (as the fused Adam step)
    m._critic_calls = 2  # still before the first generator update: the cast copies are reused
    assert m._g_cast.params(0) is cast and not torch.equal(m._critic_fakes(z), autocast_fakes())
    m._critic_calls = 3  # after it: recast
    assert torch.equal(m._critic_fakes(z), autocast_fakes())
    norms = [n for n, mod in m.generator.named_modules() if isinstance(mod, BatchNormNoScale)]
    assert norms and not any(k.startswith(f"{n}.") for k in m._g_cast.params(1) for n in norms)  # norms stay fp32


def test_critic_fakes_without_bf16_are_the_plain_forward():
    m = make(k=4)
    z = m.sample_z(8)[0]
    with torch.no_grad():
        assert torch.equal(m._critic_fakes(z), m._g(z)) and m._g_cast is None


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("img_shape", [(1, 8, 8), (2,)])  # conv critic, MLP critic
def test_gradient_penalty_skips_the_zero_second_derivative_branch(bf16, img_shape):
    """Under the penalty the critic's LeakyReLUs (blocks.LeakyReLU inside twice_differentiated) give gradients
    bit-identical to nn.LeakyReLU's without the extra backward of the critic's forward graph that only adds zeros.
    The hidden biases show it: the input gradient does not depend on them, so only that branch reaches them."""
    import copy

    from genclust.losses import gradient_penalty
    from genclust.nets.blocks import LeakyReLU

    critic = make(img_shape=img_shape, k=4).critic
    native = copy.deepcopy(critic)
    swapped = 0
    for module in list(native.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LeakyReLU):
                setattr(module, name, torch.nn.LeakyReLU(child.negative_slope))
                swapped += 1
    assert swapped >= 2
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.rand(6, *img_shape, generator=gen), torch.rand(6, *img_shape, generator=gen)

    def penalty_grads(net):
        torch.manual_seed(1)  # the same interpolation weights
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            gradient_penalty(net, real, fake).backward()
        return {n: p.grad for n, p in net.named_parameters()}

    ours, theirs = penalty_grads(critic), penalty_grads(native)
    for name, grad in theirs.items():
        if ours[name] is None:  # an input gradient depends on no bias: only the zero branch reached them
            assert name.endswith("bias") and (grad is None or not grad.any()), name
        else:
            assert torch.equal(ours[name], grad), name
    assert any(ours[n] is None and theirs[n] is not None for n in theirs)  # the branch existed, and is gone
    x = torch.rand(3, *img_shape, requires_grad=True)  # outside the penalty: the plain op
    assert type(critic.body(x).grad_fn).__name__ == type(native.body(x).grad_fn).__name__


def test_step_logs_reach_the_logger_only_in_the_batches_it_writes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ClusterGAN, "log_dict", lambda self, logs, **kw: (calls.append(dict(logs)),
                                                                       super(ClusterGAN, self).log_dict(logs, **kw)))
    cfg = composed(["dataset=digits", "trainer=smoke", "trainer.limit_train_batches=12", "trainer.max_epochs=1",
                    "trainer.log_every_n_steps=4", "callbacks.evaluator.every_n_epochs=0", "method.batch_size=32",
                    "method.n_critic=3", *TINY_OVERRIDES], tmp_path)
    assert run(cfg)["method_info"]["critic_steps"] == 12
    assert len(calls) == 3  # batches 4, 8 and 12 of 12 (not every batch)
    rows = [r for r in csv.DictReader((tmp_path / "csv" / "metrics.csv").open()) if r.get("train/loss_d")]
    assert [int(r["step"]) for r in rows] == [3, 7, 11]
    # the last generator update's losses ride along with a written batch that had no generator update (batch 4)
    assert all(r["train/loss_g"] and r["train/loss_zc"] for r in rows)


def test_synthetic_smoke_fit(tmp_path):
    cfg = compose_cfg(["experiment=clustergan_synthetic", "trainer=smoke", "trainer.limit_train_batches=10",
                       "trainer.max_epochs=1",
                       "callbacks.evaluator.every_n_epochs=0"], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.method.nets.generator.mlp_hidden = [32, 32]
        cfg.method.nets.critic.mlp_hidden = [32, 32]
    result = run(cfg)
    assert result["method_info"]["arch"] == "mlp" and result["method_info"]["generator_steps"] == 2
    assert not (tmp_path / "figures" / "clustergan_modes.png").exists()


def test_weight_average_follows_training_and_serves_inference(tmp_path):
    cfg = composed(["dataset=digits", "trainer=smoke", "trainer.limit_train_batches=6",
                    "callbacks.evaluator.every_n_epochs=0", "method.n_critic=1", "method.ema_decay=0.9",
                    *TINY_OVERRIDES], tmp_path)
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

def test_dcgan_critic_conv_padding_same_is_the_paper_valid_is_the_port():
    from genclust.nets.dcgan import discriminator

    same, valid = discriminator([1, 28, 28], 1), discriminator([1, 28, 28], 1, conv_padding="valid")
    fc_in = [next(m for m in d.body if isinstance(m, torch.nn.Linear)).in_features for d in (same, valid)]
    assert fc_in == [128 * 7 * 7, 128 * 5 * 5]  # 28 -> 14 -> 7 (TF 'SAME') vs 28 -> 13 -> 5 (zhampel port)
    assert valid(torch.zeros(2, 1, 28, 28)).shape == (2, 1)
    with pytest.raises(ConfigError, match="conv_padding"):
        discriminator([1, 28, 28], 1, conv_padding="full")
    with pytest.raises(ConfigError, match="do not fit"):
        discriminator([1, 8, 8], 1, conv_padding="valid")
