"""End to end: a GAN method trained with trainer=ddp_cpu (2 gloo processes) evaluates exactly as a
single process does on the same weights (the run's model.pt re-scored by predict.py)."""

import json

import pytest

from tests.helpers import options, run_cli

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

GAN = next((m for m in ("udc", "clustergan") if m in options("method")), None)


@pytest.mark.skipif(GAN is None, reason="no GAN method config yet")
def test_ddp_cpu_run_matches_single_process_scoring(tmp_path):
    proc = run_cli([f"method={GAN}", "dataset=digits", "trainer=ddp_cpu", "trainer.max_epochs=1",
                    "trainer.limit_train_batches=2", "callbacks.evaluator.save_figures=false"], tmp_path,
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = json.loads((tmp_path / "metrics.json").read_text())
    proc = run_cli([str(tmp_path), "--out", str(tmp_path / "single.npz")], script="predict.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads(proc.stdout)
    for split in ("train", "test"):
        for metric in ("acc", "nmi", "ari"):
            assert single[split][metric] == pytest.approx(ddp[f"eval/{split}/{metric}"], abs=1e-12)
