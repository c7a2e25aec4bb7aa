"""Scale-out: submitit launchers, Optuna sweeps on label-free objectives, configs shipped in the package."""

import json
import math

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import genclust
from genclust.errors import ConfigError
from genclust.evaluation.metrics import internal_validity
from genclust.train import CONFIG_DIR, check_config, check_objective
from tests.helpers import ROOT, options, run_cli

HPARAMS = options("hparams_search")


# ------------------------------------------------------------------------------- label-free objectives
@pytest.mark.parametrize("metric", ["eval/train/silhouette", "eval/test/calinski_harabasz", "eval/all/davies_bouldin",
                                    "eval/train/kmeans_latent/silhouette", "eval/train/modes/consistency",
                                    "train/loss_d", None])
def test_label_free_objectives_are_accepted(metric):
    check_objective(metric)


@pytest.mark.parametrize("metric", ["eval/test/acc", "eval/train/nmi", "eval/train/k10/ari", "eval/train/modes/acc",
                                    "purity", "eval/train/clusters_found", "eval/train/silhouete", "acc"])
def test_label_metrics_and_unknown_names_are_refused(metric):
    with pytest.raises(ConfigError):
        check_objective(metric)


def test_internal_validity_prefers_the_true_partition():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.3, size=(50, 4)) for c in (0.0, 3.0, 6.0)])
    truth = np.repeat([0, 1, 2], 50)
    good, bad = internal_validity(x, truth), internal_validity(x, rng.permutation(truth))
    assert good["silhouette"] > 0.7 > bad["silhouette"]
    assert good["calinski_harabasz"] > bad["calinski_harabasz"]
    assert good["davies_bouldin"] < bad["davies_bouldin"]
    one = internal_validity(x, np.zeros(150, dtype=int))
    assert all(math.isnan(v) for v in one.values())
    noisy = truth.copy()
    noisy[:10] = -1  # noise points are left out
    assert internal_validity(x, noisy)["silhouette"] > 0.7


@pytest.mark.parametrize("name", HPARAMS)
def test_every_hparams_search_composes_with_label_free_objective(name):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    check_objective(cfg.optimized_metric)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    for key in cfg.hydra.sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key


# ------------------------------------------------------------------------------- DDP jobs in a sweep
def _multirun_cfg(overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.runtime.output_dir = "unused"
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_ddp_sweep_jobs_need_the_slurm_launcher_with_matching_tasks():
    try:
        with pytest.raises(ConfigError, match="single-device"):
            check_config(_multirun_cfg(["trainer=ddp", "trainer.devices=4"]))
        with pytest.raises(ConfigError, match="one task per device"):
            check_config(_multirun_cfg(["trainer=ddp", "trainer.devices=4", "hydra/launcher=submitit_slurm"]))
        check_config(_multirun_cfg(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                                    "hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=4",
                                    "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2"]))
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize("launcher", ["submitit_local", "submitit_slurm"])
def test_launcher_configs_compose(launcher):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    kind = "LocalLauncher" if launcher == "submitit_local" else "SlurmLauncher"
    assert cfg.hydra.launcher._target_.endswith(kind)
    assert cfg.hydra.launcher.submitit_folder.endswith(".submitit/%j")


# ------------------------------------------------------------------------------- package data
def test_configs_ship_inside_the_package():
    assert CONFIG_DIR.resolve() == (ROOT / "configs").resolve()  # in this checkout: a link to configs/
    assert str(CONFIG_DIR.parent) == genclust.__path__[0]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"configs/**/*.yaml"' in pyproject


# ------------------------------------------------------------------------------- end to end (subprocess)
@pytest.mark.slow
def test_submitit_local_multirun_and_summary(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "method=kmeans", "dataset=digits", "seed=0,1", "++method.n_init=1",
                    "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((sweep / ".submitit").iterdir()), "the jobs went through submitit"
    for job in ("0", "1"):
        assert (sweep / job / "metrics.json").is_file()
    proc = run_cli([str(sweep)], script="scripts/summarize.py")
    assert proc.returncode == 0, proc.stderr
    assert "| kmeans | digits | ++method.n_init=1 | 2 |" in proc.stdout


@pytest.mark.slow
def test_optuna_sweep_on_a_label_free_objective(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["hparams_search=kmeans_digits", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    runs = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(3)]
    assert result["best_value"] == pytest.approx(max(r["eval/train/silhouette"] for r in runs))
    proc = run_cli([str(sweep)], script="scripts/objective_rank.py")
    assert proc.returncode == 0 and "`eval/train/silhouette` | 3 |" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_optuna_sweep_refuses_a_label_metric_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["hparams_search=kmeans_digits", "hydra.sweeper.n_trials=3", "optimized_metric=eval/test/acc",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 2
    assert "labels are for evaluation only" in proc.stderr.strip().splitlines()[-1]
    assert not sweep.exists()
