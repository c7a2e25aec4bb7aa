"""The generator-mode diagnostic of the shared evaluator (eval/<split>/modes/*)."""

import torch

from genclust.data.datamodule import TensorSet
from genclust.evaluation.callback import score_modes
from genclust.methods.base import ClusteringMethod


class Replayer(ClusteringMethod):
    """A fake generator whose mode k replays real images of class perm[k] (plus a little noise)."""

    generative = True

    def __init__(self, data, perm, noise=0.01):
        super().__init__(len(perm), list(data.x.shape[1:]))
        self.data, self.perm, self.noise = data, perm, noise

    def cluster_probs(self, x, idx=None):
        return torch.full((len(x), self.n_clusters), 1.0 / self.n_clusters)

    def sample(self, n, cluster=None):
        pool = self.data.x[self.data.y == self.perm[cluster]]
        pick = pool[torch.randint(len(pool), (n,))]
        return pick + self.noise * torch.randn_like(pick)


def blobs(n_per_class=40, classes=4, dim=16):
    gen = torch.Generator().manual_seed(0)
    centers = 5.0 * torch.randn(classes, 1, dim, dim, generator=gen)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centers[y] + 0.1 * torch.randn(len(y), 1, dim, dim, generator=gen)
    return TensorSet(x=x, y=y, idx=torch.arange(len(y)))


def test_modes_that_replay_one_class_each_score_one():
    data = blobs()
    report = score_modes(Replayer(data, perm=[2, 0, 3, 1]), data, n_per_mode=20)
    assert {k: report[k] for k in ("acc", "purity", "nmi")} == {"acc": 1.0, "purity": 1.0, "nmi": 1.0}
    # label-free: the method's own assignment of its mode-k samples (here a fixed model: any value in [0, 1])
    assert 0.0 <= report.get("consistency", 0.0) <= 1.0


def test_two_modes_on_one_class_lose_a_class():
    data = blobs()
    report = score_modes(Replayer(data, perm=[0, 0, 1, 2]), data, n_per_mode=20)
    assert report["acc"] == 0.75 and report["purity"] == 1.0  # one class has no mode of its own


def test_scoring_leaves_the_training_rng_alone():
    data = blobs()
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    score_modes(Replayer(data, perm=[0, 1, 2, 3]), data, n_per_mode=5)
    assert torch.equal(torch.rand(3), expected)


def test_non_generative_methods_have_no_modes():
    data = blobs()
    replayer = Replayer(data, perm=[0, 1, 2, 3])
    replayer.sample = lambda n, cluster=None: None
    assert score_modes(replayer, data) == {}
