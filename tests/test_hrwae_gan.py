"""HRWAE-GAN: hierarchical shapes for L = 1..3 on 8x8, 28x28 and 32x32xC, the relativistic losses on hand
cases, layer matching, per-group read-outs (HDBSCAN noise, GMM), noise attention, a smoke fit whose saved
run predict.py reproduces."""

import math

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from genclust.errors import ConfigError
from genclust.methods.hrwae_gan import (
    HRWAEGAN,
    cosine_dissimilarity,
    relativistic_d_loss,
    relativistic_g_loss,
)
from genclust.nets.hrwae import n_cells
from genclust.predict import predict
from genclust.train import run
from tests.helpers import compose_cfg, options


def make(img_shape=(1, 8, 8), n_groups=1, **kw):
    cfg = compose_cfg(["method=hrwae_gan", "dataset=digits"])
    with open_dict(cfg):
        cfg.method.img_shape, cfg.method.n_groups = list(img_shape), n_groups
        cfg.method.nets.autoencoder.channels = [8, 8, 16, 16, 16]
        cfg.method.nets.discriminator.hidden = [16]
        for key, value in kw.items():
            OmegaConf.update(cfg.method, key, value, merge=False)
    torch.manual_seed(0)
    try:
        return instantiate(cfg.method, _convert_="all")
    except InstantiationException as err:
        raise err.__cause__ from None


@pytest.mark.parametrize("shape,cells,padded", [((1, 8, 8), 2, 8), ((1, 28, 28), 4, 32), ((3, 32, 32), 4, 32)])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_shapes_per_group(shape, cells, padded, groups):
    if groups > cells:
        with pytest.raises(ConfigError, match="n_groups"):
            make(shape, groups)
        return
    m = make(shape, groups)
    assert n_cells(padded) == cells == len(m.autoencoder.encoder.cells) and m.padded == padded  # Eq. 7
    x = torch.rand(5, *shape)
    out = m.forward_pass(x)
    assert out.image.shape == x.shape  # 28x28 padded to 32 and cropped back
    assert [z.shape for z in out.z] == [(5, 8)] * groups and len(out.prior_mu) == groups - 1
    assert len(out.enc_maps) == len(out.dec_maps) == groups - 1
    for e, d in zip(out.enc_maps, out.dec_maps):
        assert e.shape == d.shape  # the levels layer matching compares
    assert m.sample(4).shape == (4, *shape) and len(m.discriminator) == groups
    assert [m.embed(x, f"z{g}").shape for g in range(groups)] == [(5, 8)] * groups
    assert sorted(m.readouts) == sorted(f"{k}_z{g}" for k in ("hdbscan", "gmm", "umap_gmm") for g in range(groups))
    assert m.readouts[f"gmm_z{groups - 1}"].embedding == f"z{groups - 1}"


def test_loss_choice_and_bad_settings():
    assert make().reconstruction == "bce" and make((3, 32, 32)).reconstruction == "mse"  # §3.3.1
    with pytest.raises(ConfigError, match="BCE"):
        make(reconstruction="bce", pixel_range="tanh")
    with pytest.raises(ConfigError, match="pad_to"):
        make((1, 28, 28), pad_to=16)
    with pytest.raises(ConfigError, match="power-of-two"):
        make((1, 28, 28), pad_to="none")
    with pytest.raises(ConfigError, match="noise_attention"):
        make(**{"noise_attention.kappa": 2.0})
    assert make(n_groups=2).group_weights == [1.0, 0.5]  # decreasing alpha_l


def test_relativistic_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want_d = (-math.log(sig(1.0)) - math.log(sig(0.0))) / 2  # Eq. 3: -log f(D(z) - D(z_hat))
    want_g = (-math.log(sig(-1.0)) - math.log(sig(0.0))) / 2  # Eq. 4: -log f(D(z_hat) - D(z))
    assert relativistic_d_loss(real, fake).item() == pytest.approx(want_d)
    assert relativistic_g_loss(real, fake).item() == pytest.approx(want_g)
    a = torch.randn(3, 4, 2, 2)
    assert cosine_dissimilarity(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_dissimilarity(a, -a).item() == pytest.approx(2.0)


def test_layer_matching_is_zero_for_one_group_and_positive_for_two():
    x = torch.rand(6, 1, 8, 8)
    assert make(n_groups=1).layer_matching(make(n_groups=1).forward_pass(x)).item() == 0.0
    m2 = make(n_groups=2)
    assert m2.layer_matching(m2.forward_pass(x)).item() > 0.0


def test_gmm_samples_follow_their_component():
    m = make().eval()
    z = torch.cat([torch.randn(200, 8) * 0.1 + 5, torch.randn(200, 8) * 0.1 - 5])
    m.readouts["gmm_z0"].n_clusters = 2
    m.readouts["gmm_z0"].fit(z)
    comp = m.readouts["gmm_z0"]._estimator().predict(np.full((1, 8), 5.0))[0]
    draws = m.gmm_component_samples(300, int(comp))
    assert draws.mean().item() == pytest.approx(5.0, abs=0.1)


def test_wae_learning_rate_schedule_is_optional_and_epoch_driven(tmp_path):
    assert make().lr_decay == [] and make().lr_scale(99) == 1.0  # off by default (a named deviation)
    wae = make(lr_decay={"epochs": [50, 30], "factors": [0.2, 0.5]})  # WAE [21] MNIST: /2 after 30, /5 after 50
    assert [wae.lr_scale(e) for e in (0, 29, 30, 49, 50, 99)] == pytest.approx([1, 1, 0.5, 0.5, 0.1, 0.1])
    for bad in ({"epochs": [30]}, {"epochs": [0], "factors": [0.5]}, {"epochs": [3], "factors": [0]},
                {"epochs": [3], "factors": [0.5], "gamma": 2}):
        with pytest.raises(ConfigError, match="lr_decay"):
            make(lr_decay=bad)
    overrides = ["method=hrwae_gan", "dataset=digits", "trainer=smoke", "logger=none", "trainer.max_epochs=3",
                 "method.noise_attention.every_n_epochs=0",
                 "method.lr_decay={epochs: [1, 2], factors: [0.5, 0.2]}"]
    run(compose_cfg(overrides, tmp_path))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    lrs = sorted(g["lr"] for state in ckpt["optimizer_states"] for g in state["param_groups"])
    assert lrs == pytest.approx([5e-4 * 0.1, 1e-3 * 0.1])  # the third epoch ran at both factors


@pytest.mark.slow
def test_smoke_fit_per_group_readouts_noise_attention_and_predict(tmp_path):
    overrides = ["method=hrwae_gan", "dataset=digits", "trainer=smoke", "logger=none", "method.n_groups=2",
                 "trainer.max_epochs=2", "method.noise_attention.every_n_epochs=1",
                 "method.noise_attention.start_epoch=1"]
    result = run(compose_cfg(overrides, tmp_path))
    for group in ("z0", "z1"):  # the thesis' Table 1 columns per group and read-out
        for col in ("clusters_found", "fraction_labeled", "acc_labeled", "acc"):
            assert 0 <= result[f"eval/test/hdbscan_{group}/{col}"] <= max(1, result[f"eval/test/hdbscan_{group}/{col}"])
        assert result[f"eval/test/gmm_{group}/clusters_found"] == result[f"eval/test/umap_gmm_{group}/clusters_found"] == 10
    assert result["eval/test/acc"] == result["eval/test/hdbscan_z0/acc"]  # the primary read-out
    info = result["method_info"]
    assert 0 < info["noise_fraction"] < 1 and set(info["read_outs_per_group"]) == {"z0", "z1"}
    model = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert ((model["attention.weight"] == 1.0) | (model["attention.weight"] == 2.0)).all()  # kappa on noise rows
    for fig in ("hrwae_reconstructions", "hrwae_prior_samples", "umap_hdbscan_z0", "umap_hdbscan_z1",
                "samples_per_cluster"):
        assert (tmp_path / "figures" / f"{fig}.png").is_file(), fig
    stored = np.load(tmp_path / "assignments.npz")
    noise = stored["test/hdbscan_z0/cluster"] == -1
    assert result["eval/test/hdbscan_z0/fraction_labeled"] == pytest.approx(1 - noise.mean())
    predict(tmp_path, out=tmp_path / "again.npz")  # UMAP transform + approximate_predict, GMM predict
    again = np.load(tmp_path / "again.npz")
    for key in stored.files:
        if key.endswith("/cluster") or key.endswith("/probs"):
            np.testing.assert_array_equal(stored[key], again[key], err_msg=key)


def test_listed_as_a_method():
    assert "hrwae_gan" in options("method") and issubclass(HRWAEGAN, torch.nn.Module)
