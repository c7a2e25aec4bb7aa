"""The shared seam: read-outs (fitted once, saved with the model, K discovered, noise -1), the latent-inference
helpers, per-example state, the config-built nets/optimizers, the sampler hook and the one autocast."""

import numpy as np
import pytest
import torch
from torch import nn

from genclust.data import ClusteringDataModule
from genclust.errors import ConfigError
from genclust.evaluation.metrics import clustering_report
from genclust.latent import ExampleState, descend, langevin
from genclust.methods.base import ClusteringMethod
from genclust.readouts import (
    GMMReadout,
    KMeansReadout,
    TreeCutReadout,
    UMAPHDBSCANReadout,
    UMAPKMeansReadout,
    umap_neighbors,
)
from tests.test_data import DIGITS


def blobs(n_per=60, k=3, dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, dim, generator=gen) * 8
    x = torch.cat([centers[i] + torch.randn(n_per, dim, generator=gen) for i in range(k)])
    return x, torch.arange(k).repeat_interleave(n_per)


class Identity(ClusteringMethod):
    """A test double whose embedding 'raw' is the input itself."""

    def __init__(self, readouts=None, clustering="argmax"):
        super().__init__(3, [5], readouts=readouts, clustering=clustering)
        self.head = nn.Linear(5, 3)

    def cluster_probs(self, x, idx=None):
        return torch.softmax(self.head(x), 1)

    def embed(self, x, name):
        return x if name == "raw" else super().embed(x, name)


def roundtrip(model, fresh):
    """model.state_dict() through torch.save / weights_only load into ``fresh``."""
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh


# ------------------------------------------------------------------------------------------ read-outs
def test_kmeans_readout_fits_once_and_survives_a_weights_only_load():
    x, y = blobs()
    model = Identity({"km": KMeansReadout(3, embedding="raw", n_init=2)})
    with pytest.raises(RuntimeError, match="not fitted"):
        model.readouts["km"](x)
    model.fit_readouts(x)
    out = model.predict_in_batches(x, batch_size=50)
    assert clustering_report(y.numpy(), out["km/labels"].numpy())["acc"] == 1.0
    assert torch.allclose(out["km/probs"].sum(1), torch.ones(len(x)))
    fresh = roundtrip(model, Identity({"km": KMeansReadout(3, embedding="raw")}))
    again = fresh.predict_in_batches(x)
    assert torch.equal(again["km/labels"], out["km/labels"]) and torch.equal(again["km/probs"], out["km/probs"])


def test_a_readout_as_the_primary_assignment():
    x, y = blobs()
    model = Identity({"km": KMeansReadout(3, embedding="raw", n_init=2)}, clustering="km")
    model.fit_readouts(x)
    probs, labels = model.assign_in_batches(x)
    assert torch.equal(labels, model.predict_in_batches(x)["km/labels"]) and probs.shape == (len(x), 3)
    with pytest.raises(ConfigError, match="clustering"):
        Identity({"km": KMeansReadout(3, embedding="raw")}, clustering="nope")


def test_umap_hdbscan_discovers_k_labels_noise_and_reloads():
    x, y = blobs(n_per=80, k=4, dim=5)
    x = torch.cat([x, torch.full((3, 5), 200.0) + torch.randn(3, 5) * 40])  # far, scattered points: noise
    y = torch.cat([y, torch.full((3,), 9)])
    model = Identity({"dens": UMAPHDBSCANReadout(embedding="raw", n_neighbors=15, min_cluster_size=20)})
    model.fit_readouts(x)
    readout = model.readouts["dens"]
    assert readout.clusters_found() == 4 and readout.noise_aware
    labels = model.predict_in_batches(x)["dens/labels"]
    report = clustering_report(y.numpy(), labels.numpy())
    assert report["clusters_found"] == 4 and report["acc_labeled"] > 0.95
    assert "dens/probs" not in model.predict_in_batches(x)
    fresh = roundtrip(model, Identity({"dens": UMAPHDBSCANReadout(embedding="raw")}))
    assert torch.equal(fresh.predict_in_batches(x)["dens/labels"], labels)  # transform + approximate_predict


def test_umap_kmeans_labels_the_fit_set_as_fitted_and_reloads():
    from sklearn.cluster import KMeans

    from genclust import readouts

    x, y = blobs(n_per=80, k=4, dim=5)
    model = Identity({"uk": UMAPKMeansReadout(4, embedding="raw", n_neighbors=15, n_components=3, n_init=2)})
    model.fit_readouts(x)
    out = model.predict_in_batches(x)
    assert clustering_report(y.numpy(), out["uk/labels"].numpy())["acc"] == 1.0
    assert out["uk/probs"].shape == (len(x), 4) and model.readouts["uk"].clusters_found() == 4
    # fit-set rows by index: the k-means fit's labels of their fitted coordinates, in batches of any size
    _, emb, _ = readouts.fit_umap(x.numpy(), 15, 3, 0.0, seed=0)
    fit_labels = KMeans(4, n_init=2, random_state=0).fit(emb.astype(np.float64)).labels_
    readout = model.readouts["uk"]
    by_rows = torch.cat([readout.fit_rows(torch.arange(i, min(i + 50, len(x))))[1] for i in range(0, len(x), 50)])
    np.testing.assert_array_equal(by_rows.numpy(), fit_labels)
    assert torch.equal(by_rows, out["uk/labels"])  # umap.transform of the whole fit set: its fitted coordinates
    fresh = roundtrip(model, Identity({"uk": UMAPKMeansReadout(4, embedding="raw")}))
    new = x[::7] + 0.1 * torch.randn(len(x[::7]), 5)  # new points near the fit set's: the same clusters
    again = fresh.predict_in_batches(new)["uk/labels"]
    assert torch.equal(again, model.predict_in_batches(new)["uk/labels"])
    assert clustering_report(y[::7].numpy(), again.numpy())["acc"] == 1.0


def test_fit_set_rows_get_the_fit_result_through_the_seam_in_any_batching():
    x, y = blobs(n_per=80, k=4, dim=5)
    model = Identity({"uk": UMAPKMeansReadout(4, embedding="raw", n_neighbors=15, n_components=3, n_init=2),
                      "dens": UMAPHDBSCANReadout(embedding="raw", n_neighbors=15, min_cluster_size=20)})
    model.fit_readouts(x)
    idx = torch.arange(len(x))
    by_index = [model.predict_in_batches(x, idx, batch_size=b) for b in (37, 1024)]
    uk, dens = model.readouts["uk"], model.readouts["dens"]
    for out in by_index:  # the seam hands idx on: fit coordinates / HDBSCAN's own fit labels, whatever the batch
        assert torch.equal(out["uk/labels"], uk.fit_rows(idx)[1])
        assert torch.equal(out["dens/labels"], dens.state["fit_labels"])
    with pytest.raises(IndexError, match="fit-set index"):  # an index past the fit set is an error, not a wrap
        uk(x[:2], torch.tensor([0, len(x)]))
    assert uk.describe()["umap_n_neighbors"] == 15 and dens.describe()["umap_n_neighbors"] == 15
    capped = UMAPKMeansReadout(2, embedding="raw", n_neighbors=50, n_components=2, n_init=1)
    capped.fit(x[:20])
    assert capped.describe()["umap_n_neighbors"] == 19  # as used: capped at N - 1


def test_umap_fits_and_transforms_are_shared_and_equal_a_refit():
    from genclust import readouts

    x, _ = blobs(n_per=60, k=3, dim=5)
    readouts._UMAP_FITS.clear(), readouts._UMAP_TRANSFORMS.clear()
    reducer, emb, _ = readouts.fit_umap(x.numpy(), 10, 2, 0.0, seed=0)
    again, emb_again, _ = readouts.fit_umap(x.numpy(), 10, 2, 0.0, seed=0)
    assert again is reducer and np.array_equal(emb, emb_again)  # the memo: one UMAP per latent group
    readouts._UMAP_FITS.clear()
    _, refit, _ = readouts.fit_umap(x.numpy(), 10, 2, 0.0, seed=0)
    np.testing.assert_array_equal(refit, emb)  # seeded UMAP is deterministic: the memo changes no result
    assert readouts.fit_umap(x.numpy(), 10, 2, 0.0, seed=1)[0] is not reducer
    new = torch.randn(7, 5)
    first = readouts.umap_transform(reducer, new)
    readouts._UMAP_TRANSFORMS.clear()
    np.testing.assert_array_equal(readouts.umap_transform(reducer, new), first)


def test_noise_labels_flow_into_the_metrics():
    y = np.array([0, 0, 1, 1, 2, 2])
    report = clustering_report(y, np.array([5, 5, 7, 7, -1, -1]))
    assert report["fraction_labeled"] == pytest.approx(4 / 6) and report["acc_labeled"] == 1.0
    assert report["acc"] == pytest.approx(4 / 6) and report["clusters_found"] == 2


def test_gmm_readout_and_eq8_neighbour_rule():
    x, y = blobs()
    model = Identity({"gmm": GMMReadout(3, embedding="raw", covariance_type="diag")})
    model.fit_readouts(x)
    out = model.predict_in_batches(x)
    assert clustering_report(y.numpy(), out["gmm/labels"].numpy())["acc"] == 1.0
    fresh = roundtrip(model, Identity({"gmm": GMMReadout(3, embedding="raw")}))
    assert torch.equal(fresh.predict_in_batches(x)["gmm/probs"], out["gmm/probs"])
    assert [umap_neighbors(n) for n in (600, 60000, 70000)] == [2, 100, 100]
    assert umap_neighbors(9000) == 30  # floor(N / 300)


def test_tree_cut_is_the_product_along_paths():
    cut = TreeCutReadout(3)
    cut.fit([[(0, 0), (1, 0)], [(0, 0), (1, 1)], [(0, 1)]])  # split 0 at the root, split 1 under its first child
    p = torch.tensor([[0.9, 0.2], [0.1, 0.5]], dtype=torch.float64)
    probs, labels = cut(p)
    want = torch.tensor([[0.18, 0.72, 0.1], [0.05, 0.05, 0.9]], dtype=torch.float64)
    assert torch.allclose(probs, want) and labels.tolist() == [1, 2] and cut.clusters_found() == 3


# ---------------------------------------------------------------------------------- latent inference
def test_langevin_without_noise_lowers_the_energy_and_leaves_nets_alone():
    net = nn.Linear(4, 4)
    target = torch.randn(8, 4)

    def energy(z):
        return 0.5 * (net(z) - target).pow(2).sum(1) + 0.5 * z.pow(2).sum(1)

    z0 = torch.randn(8, 4)
    with torch.no_grad():  # the evaluator's context
        z1 = langevin(energy, z0, steps=1, step_size=0.05, noise=False, frozen=[net])
        assert (energy(z1) < energy(z0)).all()
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    torch.manual_seed(0)
    noisy = langevin(energy, z0, steps=3, step_size=0.05)
    assert not torch.equal(noisy, langevin(energy, z0, steps=3, step_size=0.05, noise=False))


def test_descend_finds_the_minimum_under_inference_mode():
    target = torch.tensor([[0.3, -0.2], [0.1, 0.5]])

    def energy(z):
        return (z - target).pow(2).sum(1)

    with torch.inference_mode():
        z = descend(energy, torch.zeros(2, 2), steps=300, lr=0.05)
    assert torch.allclose(z, target, atol=1e-3)
    clipped = descend(energy, torch.zeros(2, 2), steps=300, lr=0.05, clamp=0.25)
    assert clipped.abs().max() <= 0.25


def test_example_state_read_write_and_checkpoint():
    state = ExampleState({"z": ((4,), torch.float32), "y": ((), torch.long)})
    state.allocate(10, init=lambda name, shape, dtype: torch.ones(shape, dtype=dtype))
    idx = torch.tensor([2, 7])
    state.write("z", idx, torch.full((2, 4), 3.0))
    state.write("y", idx, torch.tensor([5, 6]))
    assert state.read("z", idx).eq(3).all() and state.read("y", torch.tensor([7])).tolist() == [6]
    state.sync()  # single process: nothing to merge
    fresh = ExampleState({"z": ((4,), torch.float32), "y": ((), torch.long)})  # not allocated yet
    roundtrip(state, fresh)
    assert torch.equal(fresh.z, state.z) and torch.equal(fresh.y, state.y) and fresh.size == 10


# ---------------------------------------------------------------------------------- the rest of the seam
def test_nets_and_optimizers_come_from_factories():
    from functools import partial

    class Two(ClusteringMethod):
        def __init__(self, **kw):
            super().__init__(2, [3], **kw)
            self.generator = self.build_net("generator", in_features=3)

        def optimizer_names(self):
            return ["generator"]

    m = Two(nets={"generator": partial(nn.Linear, out_features=2)},
            optim={"generator": partial(torch.optim.SGD, lr=0.5)})
    (opt,) = m.configure_optimizers()
    assert isinstance(m.generator, nn.Linear) and opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ConfigError, match="method.nets.critic"):
        m.build_net("critic")


def test_sampler_hook_follows_the_method():
    dm = ClusteringDataModule(DIGITS, batch_size=10, download=False)
    dm.setup("fit")
    n = len(dm.fit_set)
    weights = torch.zeros(n, dtype=torch.float64)
    weights[:40] = 1.0

    class Weighted(Identity):
        def sampling_weights(self):
            return weights

    class FakeTrainer:
        lightning_module = Weighted()

    dm.trainer = FakeTrainer()
    assert dm.batches_per_epoch() == 4  # floor(40 / 10)
    seen = torch.cat([idx for _, idx in dm.train_dataloader()])
    assert len(seen) == 40 and seen.max() < 40


def test_one_autocast_key():
    from genclust.precision import check_autocast

    assert check_autocast("bf16") == "bf16"
    with pytest.raises(ConfigError, match="autocast"):
        ClusteringMethod(3, [5], autocast="fp8")


@pytest.mark.parametrize("shape,channels", [((1, 8, 8), (8, 16, 32)), ((1, 28, 28), (16, 32)), ((3, 32, 32), (8, 16, 32))])
def test_autoencoder_pair_mirrors_its_levels(shape, channels):
    from genclust.nets.autoencoder import ConvDecoder, ConvEncoder

    enc, dec = ConvEncoder(shape, 6, channels), ConvDecoder(3, shape, channels)
    x = torch.rand(4, *shape)
    code, enc_maps = enc(x, features=True)
    out, dec_maps = dec(code[:, :3], features=True)
    assert code.shape == (4, 6) and out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    # the decoder's level l has the shape of the encoder's level l (layer matching, HRWAE-GAN Eq. 10)
    assert [m.shape for m in enc_maps] == [m.shape for m in dec_maps[::-1]]
    with pytest.raises(ConfigError, match="divisible"):
        ConvEncoder((1, 28, 28), 6, (8, 16, 32))
