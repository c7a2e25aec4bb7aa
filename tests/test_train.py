"""The command line: default run, run folder contents, bad input, multirun + summary, predict."""

import json

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, compose_cfg, options, requires_mnist_test, run_cli


def test_default_job_is_hrwae_gan_on_the_bundled_fashion_mnist_test_set():
    cfg = compose_cfg([], real_defaults=True)
    assert cfg.method._target_.endswith("HRWAEGAN") and cfg.method.n_groups == 1
    assert cfg.dataset.name == "fmnist_test_split" and cfg.dataset.source.which == "fashion_mnist"
    assert cfg.method.clustering == "umap_gmm_z0"
    assert cfg.trainer.max_epochs == 15 and cfg.trainer.max_time == "00:00:04:00"
    assert cfg.callbacks.evaluator.every_n_epochs == 0  # read-outs fitted once, at the end
    assert compose_cfg(["experiment=hrwae_gan_fmnist_cpu"]).method.clustering == "hdbscan_z0"


@pytest.mark.slow
def test_default_job_runs_offline_with_no_data_dir(tmp_path):
    # a fresh machine: no data folder, no download; the real defaults at smoke length
    proc = run_cli(["trainer=smoke", "paths.download=false"], tmp_path / "run", real_defaults=True,
                   env={"GENCLUST_DATA_DIR": str(tmp_path / "empty")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert "hrwae_gan on fmnist_test_split" in last and "pixel k-means, same data: ACC" in last
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["protocol"]["evaluate_on"]["test"]["n"] == 2000
    assert metrics["eval/test/acc"] == metrics["eval/test/umap_gmm_z0/acc"]
    for readout in ("hdbscan_z0", "gmm_z0"):
        assert f"eval/test/{readout}/acc" in metrics
    assert (tmp_path / "run" / "figures" / "confusion_test.png").is_file()


def test_default_run_writes_run_folder(tmp_path):
    proc = run_cli(["trainer=smoke", "logger=wandb"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ACC" in proc.stdout and "NMI" in proc.stdout and "ARI" in proc.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("acc", "nmi", "ari", "eval/train/acc", "eval/test/acc", "eval/train/modes/acc", "seed", "protocol",
                "metric_definitions"):
        assert key in metrics
    assert metrics["protocol"]["fit_on"] == ["train"]
    assert 0.0 <= metrics["acc"] <= 1.0
    arrays = np.load(tmp_path / "assignments.npz")
    assert arrays["test/probs"].shape[0] == arrays["test/cluster"].shape[0] == metrics["protocol"]["evaluate_on"][
        "test"]["n"]
    np.testing.assert_allclose(arrays["test/probs"].sum(1), 1.0, atol=1e-4)
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "figures" / "confusion_test.png").is_file()
    assert list((tmp_path / "wandb").glob("offline-run-*")), "W&B runs offline without a key"


@pytest.mark.parametrize("group", ["method", "dataset"])
def test_unknown_option_is_one_line(tmp_path, group):
    proc = run_cli([f"{group}=nope"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"unknown {group} 'nope'" in lines[0]
    for known in options(group):
        assert known in lines[0]


@pytest.mark.parametrize("override", ["method.n_clusters=0", "dataset.n_clusters=0", "method.n_clusters=1.5", "method.n_clusters=ten",
                                      "dataset.n_clusters=2.5"])
def test_impossible_k_is_one_line(tmp_path, override):
    proc = run_cli([override, "method=kmeans"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "n_clusters must be a whole number" in lines[0], proc.stderr[-2000:]


def test_k_larger_than_the_data_is_one_line(tmp_path):
    proc = run_cli(["method.n_clusters=5000"], tmp_path)
    assert proc.returncode == 2 and "exceeds" in proc.stderr


def test_missing_data_is_one_line(tmp_path):
    proc = run_cli(["dataset=mnist_test", "paths.download=false"], tmp_path,
                   env={"GENCLUST_DATA_DIR": str(tmp_path / "empty")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("genclust: error: mnist test files not found")


def test_multirun_seeds_and_summary(tmp_path):
    proc = run_cli(["-m", "method=kmeans,gmm", "dataset=digits", "seed=0,1", "++method.n_init=1",
                    f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli([str(tmp_path / "sweep")], script="scripts/summarize.py")
    assert proc.returncode == 0, proc.stderr
    assert "| kmeans | digits | ++method.n_init=1 | 2 |" in proc.stdout
    assert "| gmm | digits | ++method.n_init=1 | 2 |" in proc.stdout
    assert (tmp_path / "sweep" / "summary.csv").is_file()


def test_a_failed_job_does_not_end_the_multirun(tmp_path):
    proc = run_cli(["-m", "method=kmeans", "dataset=digits", "method.n_clusters=0,3", "++method.n_init=1",
                    f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "n_clusters must be a whole number >= 1" in proc.stderr
    assert not (tmp_path / "sweep" / "0" / "metrics.json").exists()
    assert (tmp_path / "sweep" / "1" / "metrics.json").is_file()


def test_label_metrics_cannot_be_optimized(tmp_path):
    proc = run_cli(["method=kmeans", "optimized_metric=eval/test/acc"], tmp_path)
    assert proc.returncode == 2 and "labels are for evaluation only" in proc.stderr


def test_same_seed_same_assignments(tmp_path):
    for name in ("a", "b"):
        assert run_cli(["trainer=smoke", "seed=3", f"hydra.run.dir={tmp_path / name}"]).returncode == 0
    a, b = (np.load(tmp_path / n / "assignments.npz")["train/cluster"] for n in ("a", "b"))
    np.testing.assert_array_equal(a, b)


def test_predict_clusters_new_data(tmp_path):
    assert run_cli(["trainer=smoke"], tmp_path).returncode == 0
    proc = run_cli([str(tmp_path), "--out", str(tmp_path / "pred.npz")], script="predict.py")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    train = json.loads((tmp_path / "metrics.json").read_text())
    assert result["test"]["acc"] == pytest.approx(train["eval/test/acc"])
    assert np.load(tmp_path / "pred.npz")["test/cluster"].shape == (result["test"]["n"],)


def test_checkpoint_curve_scores_every_epoch_and_ends_at_the_runs_own_evaluation(tmp_path, capsys):
    """Time-to-accuracy for end-only-evaluation budgets: every kept checkpoint scored afterwards, one split."""
    from scripts.checkpoint_curve import main as checkpoint_curve

    proc = run_cli(["method=cgm", "dataset=digits", "trainer=smoke", "trainer.max_epochs=2", "method.langevin.steps=2",
                    "method.inference.mode=marginal", "method.inference.samples=16",
                    "callbacks.model_checkpoint.save_top_k=-1", "callbacks.evaluator.every_n_epochs=0",
                    "callbacks.evaluator.save_figures=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint_curve([str(tmp_path), "--split", "test"]) == 0
    rows = json.loads((tmp_path / "checkpoint_curve.json").read_text())
    assert [(r["epoch"], r["step"]) for r in rows] == [(0, 3), (1, 6)]
    assert 0 < rows[0]["elapsed_s"] <= rows[1]["elapsed_s"] and "train" not in rows[0]
    final = json.loads((tmp_path / "metrics.json").read_text())
    assert rows[-1]["test"]["acc"] == pytest.approx(final["eval/test/acc"])  # the last epoch is the final model
    assert "| 1 | 6 |" in capsys.readouterr().out
    assert checkpoint_curve([str(tmp_path), "--split", "nope"]) == 2
    assert "has no eval split nope" in capsys.readouterr().err


def test_umap_kmeans_reference_clusters_new_data_as_the_run_did(tmp_path):
    from genclust.predict import predict
    from genclust.train import run

    result = run(compose_cfg(["method=umap_kmeans", "dataset=digits", "logger=none"], tmp_path))
    assert result["acc"] > result["reference/kmeans_pixels/acc"]  # seed 0: 0.82 against pixel k-means' 0.79
    assert result["eval/test/acc"] > 0.7  # the held-out digits through umap.transform + the nearest center
    stored = np.load(tmp_path / "assignments.npz")
    predict(tmp_path, out=tmp_path / "again.npz")  # model.pt alone: the pickled UMAP travels in its state
    again = np.load(tmp_path / "again.npz")
    for key in stored.files:
        np.testing.assert_array_equal(again[key], stored[key], err_msg=key)
    # other images under the same dataset name (another data folder): the stored fit-set coordinates do not apply
    import genclust.evaluation.callback as callback

    given = []
    real_predict_set = callback.predict_set

    def spy(method, data, fit_set=None, **kw):
        given.append(fit_set is not None)
        return real_predict_set(method, data, fit_set=fit_set, **kw)

    callback.predict_set = spy
    try:
        predict(tmp_path, out=tmp_path / "same.npz")
        saved = torch.load(tmp_path / "model.pt", weights_only=False)
        saved["fit_set_digest"] = "[1437, 1, 8, 8]|float32|other images"
        torch.save(saved, tmp_path / "model.pt")
        predict(tmp_path, out=tmp_path / "other.npz")
    finally:
        callback.predict_set = real_predict_set
    assert given == [True, True, False, False]  # train and test split, each run


@requires_mnist_test
def test_kmeans_on_real_mnist_test(tmp_path):
    proc = run_cli(["method=kmeans", "dataset=mnist_test", "method.n_init=1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = json.loads((tmp_path / "metrics.json").read_text())["acc"]
    assert 0.45 < acc < 0.65  # pixel k-means on MNIST: ~0.54


def test_entry_points_are_thin():
    assert "genclust.train" in (ROOT / "train.py").read_text()
