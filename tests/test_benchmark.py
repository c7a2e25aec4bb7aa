"""scripts/benchmark.py: one row per call, recording what precision actually ran (the bf16 fallback)."""

import importlib.util
import json

import genclust.precision as precision
from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_a_row_records_the_precision_that_ran(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # bf16 slower or emulated here
    monkeypatch.delenv(precision.ENV_FORCE, raising=False)
    out = tmp_path / "rows.jsonl"
    assert benchmark.main(["--steps", "3", "--warmup", "1", "--out", str(out), "method=clustergan", "dataset=digits",
                           "trainer=smoke", "trainer.precision=bf16-mixed", "method.autocast=bf16"]) == 0
    row = json.loads(out.read_text())
    assert row["method"] == "ClusterGAN" and row["steps_timed"] == 3 and row["real_images_per_s"] > 0
    assert row["precision"] == "32-true" and row["autocast"] == "none"  # as train.py would have run it
