"""Every method x dataset composes, and every method instantiates from its composed config."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import compose_cfg, options

METHODS = options("method")
DATASETS = options("dataset")
IMAGE_ONLY = {"hrwae_gan"}  # convolutional by definition (thesis §3.1): vector datasets are refused


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", METHODS)
def test_compose_every_pair(method, dataset):
    cfg = compose_cfg([f"method={method}", f"dataset={dataset}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["method"]["n_clusters"] == resolved["dataset"]["n_clusters"]
    assert list(resolved["method"]["img_shape"]) == list(resolved["dataset"]["img_shape"])
    if len(resolved["dataset"]["img_shape"]) != 3 and method in IMAGE_ONLY:  # a clear one-line refusal
        with pytest.raises(Exception, match="needs square \\[C, H, W\\] images"):
            instantiate(cfg.method, _convert_="all")
        return
    module = instantiate(cfg.method, _convert_="all")
    assert module.n_clusters == cfg.dataset.n_clusters


@pytest.mark.parametrize("experiment", options("experiment"))
def test_compose_every_experiment(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True)
    instantiate(cfg.method, _convert_="all")


@pytest.mark.parametrize("trainer", options("trainer"))
def test_compose_every_trainer(trainer):
    cfg = compose_cfg([f"trainer={trainer}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


def test_struct_mode_rejects_typos():
    with pytest.raises(Exception, match="sed"):
        compose_cfg(["sed=1"])


@pytest.mark.parametrize("method", options("method"))
def test_the_methods_k_reaches_its_read_outs(method):
    """method.n_clusters=K is the K of every read-out (and of umap_kmeans' UMAP), not the dataset's class count."""
    cfg = OmegaConf.to_container(compose_cfg([f"method={method}", "dataset=digits", "method.n_clusters=4"]).method,
                                 resolve=True)
    assert cfg["n_clusters"] == 4
    for name, readout in (cfg.get("readouts") or {}).items():
        assert readout.get("n_clusters", 4) == 4, name
    if method == "umap_kmeans":
        assert cfg["n_components"] == 4
