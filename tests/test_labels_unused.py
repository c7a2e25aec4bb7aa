"""Labels are for evaluation only: shuffling them must not change what any method learns."""

import numpy as np
import pytest
import torch

from genclust.data.datamodule import ClusteringDataModule
from genclust.train import run
from tests.helpers import compose_cfg, options

METHODS = options("method")


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_shuffled_labels_give_the_same_clustering(tmp_path, monkeypatch, method):
    overrides = [f"method={method}", "dataset=digits", "trainer=smoke", "logger=none", "seed=5"]
    run(compose_cfg(overrides, tmp_path / "true_labels"))

    setup = ClusteringDataModule.setup

    def setup_with_shuffled_labels(self, stage=None):
        loaded = self.fit_set is not None
        setup(self, stage)
        if loaded:  # setup runs once per fit (HC-MGAN fits many times): shuffle once
            return
        gen = torch.Generator().manual_seed(0)
        for data in {id(s): s for s in (self.fit_set, *self.eval_sets.values())}.values():
            data.y = data.y[torch.randperm(len(data.y), generator=gen)]

    monkeypatch.setattr(ClusteringDataModule, "setup", setup_with_shuffled_labels)
    run(compose_cfg(overrides, tmp_path / "shuffled_labels"))
    a, b = (np.load(tmp_path / name / "assignments.npz") for name in ("true_labels", "shuffled_labels"))
    assert a.files == b.files
    for key in a.files:
        if key.endswith("/cluster") or key.endswith("/probs"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{method}: {key} depends on the labels")
