"""Seed-0 reference assignments of every method on ``digits`` (smoke trainer): the refactor guard.

``tests/data/golden_assignments*.npz`` hold one reference per host kind, each recorded with the code before the
seam-v2 refactor (65843b9) and each naming its host's fingerprint; ``test_golden.py`` re-runs the cases below and
compares with the reference of this host's kind. Float kernels differ between CPU kinds (AVX2 vs AVX512, vendors,
AMX), so a reference is compared on hosts of its fingerprint only; runs use 2 threads (results depend on the
thread count through oneDNN's reduction order).

* ``golden_assignments.npz``: AMD EPYC, AVX512-BF16 (2026-12-03; ``python -m tests.golden record`` at c166d35).
* ``golden_assignments_intel_avx512bf16.npz``: Intel Xeon, AVX512-BF16 without AMX (2026-12-07). Recorded by
  running this file's cases on 65843b9 in its own keys (``method.precision='32' trainer.limit_train_batches=6``
  for ClusterGAN, ``method.dim=16 trainer.limit_train_batches=12`` for UDC, ``method.n_refinements=1
  method.raw_epochs=2 method.refine_epochs=2`` (n_clusters 4) for HC-MGAN, ``OMP_NUM_THREADS=2``), then storing this
  module's fingerprint with it. 65843b9's digits config runs ClusterGAN in bf16 unless told ``precision='32'``:
  on a bf16-capable host a recording without it is a bf16 run, not the float32 reference.

``python -m tests.golden record PATH`` records the *current* code's assignments on this host to PATH: a
regression snapshot, not a refactor guard (use it on 65843b9 for a new host kind, as above).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "tests" / "data"
GOLDEN = GOLDEN_DIR / "golden_assignments.npz"  # the first reference (AMD EPYC host)
COMMON = ["dataset=digits", "trainer=smoke", "logger=none", "seed=0", "callbacks.evaluator.every_n_epochs=0",
          "callbacks.evaluator.save_figures=false", "callbacks.evaluator.mode_samples=0"]

THREADS = 2  # the recording's intra-op thread count (CI's OMP_NUM_THREADS)

# name -> overrides (fp32 everywhere: bf16 runs only on some hosts)
CASES: dict[str, list[str]] = {
    "clustergan": ["method=clustergan", "method.autocast=none", "trainer.limit_train_batches=6"],
    "udc": ["method=udc", "method.autocast=none", "method.nets.generator.dim=16", "method.nets.critic.dim=16",
            "method.nets.classifier.dim=16", "trainer.limit_train_batches=12"],
    "hc_mgan": ["method=hc_mgan", "method.n_clusters=4", "method.refinement.count=1", "method.raw_split.epochs=2",
                "method.refinement.epochs=2"],
}


def cpu_capability() -> str:
    """The host's float-kernel fingerprint: torch's CPU capability, the CPU model and its AMX/AVX512-BF16 flags
    (oneDNN picks kernels by these; another fingerprint may round differently)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip().split()[0:2]
                model = " ".join(model)
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    extras = ",".join(f for f in ("avx512_bf16", "amx_tile") if f in flags)
    return f"{torch.backends.cpu.get_cpu_capability()}|{model}|{extras}"


@contextlib.contextmanager
def recording_threads():
    """torch's intra-op threads as in the recording (oneDNN's reduction order depends on the count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def references() -> dict[str, Path]:
    """Host fingerprint -> reference file, for every recorded host kind."""
    return {str(np.load(path)["capability"]): path for path in sorted(GOLDEN_DIR.glob("golden_assignments*.npz"))}


def run_case(name: str, out_dir: Path) -> dict[str, np.ndarray]:
    """Train one case and return its assignments (argmax and every read-out) per eval split."""
    from genclust.train import run
    from tests.helpers import compose_cfg

    cfg = compose_cfg(COMMON + CASES[name], output_dir=out_dir)
    with recording_threads():
        run(cfg)
    arrays = dict(np.load(out_dir / "assignments.npz"))
    return {f"{name}/{k}": v for k, v in arrays.items() if not k.endswith("/label")}


def main() -> None:
    import tempfile

    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: python -m tests.golden record PATH  (the current code's assignments on this host)")
    target = Path(sys.argv[2])
    out: dict[str, np.ndarray] = {"capability": np.array(cpu_capability())}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            out.update(run_case(name, Path(tmp) / name))
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, **out)
    print(f"wrote {target}: {sorted(out)}")


if __name__ == "__main__":
    main()
