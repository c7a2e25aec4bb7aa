"""CGM: the generator for every supported shape, Eq. 4's energy and Langevin, the K-way posterior against a
brute-force loop, persistent per-example state (checkpoint / resume), new-data inference and a smoke fit."""

import json
import math

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from genclust.errors import ConfigError
from genclust.methods.cgm import CGM
from genclust.train import run
from tests.helpers import DATA_DIR, compose_cfg, options, requires_mnist_test


def make(img_shape=(1, 8, 8), k=4, **kw):
    cfg = compose_cfg(["method=cgm", "dataset=mnist_test"])  # the paper's config (no method_dataset pair)
    with open_dict(cfg):
        cfg.method.img_shape, cfg.method.n_clusters = list(img_shape), k
        cfg.method.nets.generator.channels = [16, 8, 8, 8, 8]
        for key, value in kw.items():
            OmegaConf.update(cfg.method, key, value, merge=False)
    torch.manual_seed(0)
    try:
        return instantiate(cfg.method, _convert_="all")
    except InstantiationException as err:
        raise err.__cause__ from None


def test_paper_settings():
    m = instantiate(compose_cfg(["method=cgm", "dataset=mnist_test"]).method, _convert_="all")
    assert (m.z_dim, m.sigma, m.langevin_cfg["steps"]) == (100, 0.3, 100)  # §3.3
    kw = m.optim_factories["generator"].keywords
    assert kw["lr"] == 2e-4 and kw["betas"][0] == 0.5  # §3.3
    assert torch.allclose(m.log_prior.exp(), torch.full((10,), 0.1))  # uniform pi
    assert m.generator.plan == {"start": 7, "stride2_layers": 2, "widths": [256, 128, 64]}  # the 28x28 variant


@pytest.mark.parametrize("shape,plan", [((1, 8, 8), (1, 3)), ((1, 28, 28), (7, 2)), ((3, 32, 32), (2, 4))])
def test_generator_shapes(shape, plan):
    m = make(shape)
    assert (m.generator.plan["start"], m.generator.plan["stride2_layers"]) == plan  # 32x32: strides 2,2,2,2,1
    x = m.sample(5)
    assert x.shape == (5, *shape) and x.abs().max() <= 1  # tanh
    assert m.sample(3, cluster=2).shape == (3, *shape)


def test_bad_settings():
    with pytest.raises(ConfigError, match="prior"):
        make(prior=[0.5, 0.5])
    with pytest.raises(ConfigError, match="y_inference"):
        make(y_inference="mode")
    with pytest.raises(ConfigError, match="unknown langevin"):
        make(**{"langevin.stepsize": 0.1})


def test_posterior_sums_to_one_and_equals_a_loop_over_k():
    m = make(k=4).eval()
    x, z = torch.rand(6, 1, 8, 8) * 2 - 1, torch.randn(6, m.z_dim)
    with torch.no_grad():
        post = m.posterior(x, z)
        loop = torch.stack([-m.energy(x, torch.full((6,), j), z) for j in range(4)], 1)  # log p(x, y = j, z) + C
    assert torch.allclose(post.sum(1), torch.ones(6))
    assert torch.allclose(post, torch.softmax(loop, 1), atol=1e-6)
    hot = m.posterior(x, z, temperature=100.0)  # the annealing remedy flattens it
    assert (hot.max(1).values <= post.max(1).values + 1e-6).all()


def test_energy_is_eq4_and_a_noiseless_small_langevin_step_lowers_it():
    m = make(k=3).eval()
    x, y, z = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1]), torch.randn(5, m.z_dim)
    with torch.no_grad():
        want = 0.5 * z.pow(2).sum(1) + (x - m.g(y, z)).flatten(1).pow(2).sum(1) / (2 * 0.3**2) - m.log_prior[y]
        assert torch.allclose(m.energy(x, y, z), want)
    m.langevin_cfg["step_size"] = 1e-3
    z1 = m.langevin_z(x, y, z, steps=1, noise=False)
    with torch.no_grad():
        assert (m.energy(x, y, z1) < m.energy(x, y, z)).all()
    assert all(p.requires_grad and p.grad is None for p in m.generator.parameters())  # G untouched


def test_new_data_inference_is_deterministic_and_normalised():
    m = make(k=3, **{"inference.sweeps": 1, "inference.steps": 2}).eval()
    x = torch.rand(7, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        a, b = m.cluster_probs(x), m.cluster_probs(x)
        chains = m.infer(x, "per_cluster")
    assert torch.equal(a, b) and torch.allclose(a.sum(1), torch.ones(7), atol=1e-5)
    assert chains.shape == (7, 3) and torch.allclose(chains.sum(1), torch.ones(7), atol=1e-5)


def test_smoke_fit_scores_stored_state_and_reinference_and_resumes_exactly(tmp_path):
    overrides = ["method=cgm", "dataset=digits", "trainer=smoke", "logger=none",
                 "callbacks.evaluator.every_n_epochs=0", "method.langevin.steps=3"]
    result = run(compose_cfg(overrides, tmp_path / "a"))
    assert 0 <= result["eval/train/acc"] <= 1 and 0 <= result["eval/train/reinferred/acc"] <= 1
    assert result["method_info"]["iterations"] == 3 and 0 < result["method_info"]["y_usage"] <= 1
    assert (tmp_path / "a" / "figures" / "cgm_rows_z_columns_y.png").is_file()
    model = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert model["latents.z"].shape == (1438, 100) and torch.equal(ckpt["latents.z"], model["latents.z"])
    assert torch.equal(ckpt["latents.y"], model["latents.y"])
    # Fig. 3: ACC against the Langevin steps at inference, into the figure folder and metrics.json
    from scripts.cgm_langevin_curve import main as langevin_curve

    assert langevin_curve([str(tmp_path / "a"), "--sweeps", "0", "1", "--limit", "40"]) == 0
    curve = json.loads((tmp_path / "a" / "metrics.json").read_text())["langevin_curve"]
    assert [c["langevin_steps"] for c in curve] == [0, 10] and (tmp_path / "a" / "figures" / "cgm_langevin_curve.png").is_file()
    # a resumed run starts from the saved per-example state, not a fresh draw
    cfg = compose_cfg(overrides, tmp_path / "a")
    m = instantiate(cfg.method, _convert_="all")
    m.load_state_dict(ckpt)
    assert torch.equal(m.latents.z, ckpt["latents.z"]) and m.latents.size == 1438


def test_listed_as_a_method():
    assert "cgm" in options("method") and issubclass(CGM, torch.nn.Module)


@requires_mnist_test
def test_held_out_split_protocol():
    from genclust.data import ClusteringDataModule

    dm = ClusteringDataModule(compose_cfg(["dataset=mnist_test_split"]).dataset, data_dir=str(DATA_DIR), download=False)
    dm.setup("fit")
    sizes = {split: len(data) for split, data in dm.eval_sets.items()}
    assert len(dm.fit_set) == 8000 and sizes == {"test": 2000, "train": 8000, "all": 10000}
    assert dm.eval_sets["train"].x is dm.fit_set.x and dm.eval_sets["all"].x is not dm.fit_set.x


def test_persistent_per_class_chains_are_stored_and_score_training_examples(tmp_path):
    with pytest.raises(ConfigError, match="per_class_steps"):
        make(**{"remedies.chain_start": "persistent"})
    with pytest.raises(ConfigError, match="chain_start"):
        make(**{"remedies.chain_start": "stored"})
    overrides = ["method=cgm", "dataset=digits", "trainer=smoke", "logger=none", "callbacks.evaluator.every_n_epochs=0",
                 "method.langevin.steps=1", "method.remedies.per_class_steps=1", "method.remedies.chain_start=persistent",
                 "method.z_dim=8", "method.inference.sweeps=1", "method.inference.steps=1"]
    result = run(compose_cfg(overrides, tmp_path / "a"))
    assert result["method_info"]["iterations"] == 3
    state = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    chains, z, y = state["latents.z_per_class"], state["latents.z"], state["latents.y"]
    assert chains.shape == (1438, 10, 8)
    trained = torch.nonzero((chains[:, 0] != chains[:, 0].new_zeros(())).any(1)).squeeze(1)  # every row exists
    assert len(trained) == 1438
    # the stored z_i is the chosen class's chain for every row the smoke fit visited
    seen = (z.unsqueeze(1) == chains).all(2).any(1)
    assert seen.sum() >= 3 * 32 and torch.equal(chains[seen][torch.arange(int(seen.sum())), y[seen]], z[seen])
    # training examples are scored by their K stored chains' log-joints (a loop over k as the reference)
    cfg = compose_cfg(overrides, tmp_path / "a")
    m = instantiate(cfg.method, _convert_="all").eval()
    m.load_state_dict(state)
    idx = torch.arange(5)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        got = m.cluster_probs(x, idx)
        loop = torch.stack([-m.energy(x, torch.full((5,), k), chains[:5, k]) for k in range(10)], 1)
    assert torch.allclose(got, torch.softmax(loop, 1), atol=1e-5)


def test_kmeans_label_init_is_label_free_and_held(tmp_path):
    """``remedies.init_labels=kmeans``: the stored y's start at k-means on the fit set's pixels (seeded, no labels)
    and ``hold_labels_iters`` keeps them through the first learning iterations; a y-step then moves some."""
    from sklearn.cluster import KMeans

    from genclust.data import ClusteringDataModule

    with pytest.raises(ConfigError, match="init_labels"):
        make(**{"remedies.init_labels": "labels"})
    base = ["method=cgm", "dataset=digits", "trainer=smoke", "logger=none", "callbacks.evaluator.every_n_epochs=0",
            "method.langevin.steps=2", "method.z_dim=3", "method.inference.sweeps=1", "method.inference.steps=1",
            "method.remedies.init_labels=kmeans", "seed=3"]
    cfg = compose_cfg(base, tmp_path / "held")
    dm = ClusteringDataModule(cfg.dataset, data_dir=str(DATA_DIR), download=False)
    dm.setup("fit")
    expected = KMeans(10, n_init=3, random_state=3).fit_predict(dm.fit_set.x.float().flatten(1).numpy())
    held = run(compose_cfg(base + ["method.remedies.hold_labels_iters=100"], tmp_path / "held"))
    assert held["method_info"]["iterations"] == 3
    y = torch.load(tmp_path / "held" / "model.pt", weights_only=True)["state_dict"]["latents.y"]
    assert torch.equal(y, torch.as_tensor(expected, dtype=torch.long))
    run(compose_cfg(base + ["method.remedies.hold_labels_iters=1"], tmp_path / "moved"))
    moved = torch.load(tmp_path / "moved" / "model.pt", weights_only=True)["state_dict"]["latents.y"]
    assert not torch.equal(moved, y) and (moved == y).float().mean() > 0.5  # y-steps on the 2 later batches only


def test_marginal_posterior_equals_a_loop_over_draws_and_trains():
    """``inference.mode=marginal``: log pi_k + log mean_s p(x | k, z_s) over shared draws, against a loop over k and s;
    the ``y_posterior=marginal`` y-step trains, and a bad name is a one-line ConfigError."""
    with pytest.raises(ConfigError, match="y_posterior"):
        make(**{"remedies.y_posterior": "joint"})
    with pytest.raises(ConfigError, match="inference.mode"):
        make(**{"inference.mode": "exact"})
    m = make(k=3, z_dim=2, **{"inference.samples": 7}).eval()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    z, protos = m.prototypes(7, generator=torch.Generator().manual_seed(0))
    log_joint, best = m.marginal_log_joint(x, protos, chunk=2)
    loop = torch.zeros(5, 3)
    for k in range(3):
        with torch.no_grad():
            ll = torch.stack([-(x - m.g(torch.full((5,), k), z[s].expand(5, -1))).flatten(1).pow(2).sum(1)
                              / (2 * m.sigma**2) for s in range(7)], 1)
        loop[:, k] = m.log_prior[k] + torch.logsumexp(ll, 1) - math.log(7)
        assert torch.equal(best[:, k], ll.argmax(1))
    assert torch.allclose(log_joint, loop, rtol=1e-4, atol=1e-2)
    probs = m.infer(x, "marginal")
    assert torch.allclose(probs.sum(1), torch.ones(5)) and torch.equal(probs, m.infer(x, "marginal"))
    m.train()
    m.latents.allocate(5, lambda name, shape, dtype: torch.zeros(shape, dtype=dtype))
    m.remedies["y_posterior"], m.langevin_cfg["steps"] = "marginal", 1
    m.update = lambda name, loss: loss.backward()  # no trainer: the generator step's gradient is all we need
    m.log_dict = lambda *a, **k: None
    m.training_step((x, torch.arange(5)), 0)
    assert int(m.iterations) == 1 and m.latents.y.max() < 3
    assert any(p.grad is not None for p in m.generator.parameters())
