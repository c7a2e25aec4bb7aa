"""Seed-0 reference assignments of every method on ``digits`` (smoke trainer): the refactor guard.

``python -m tests.golden record`` runs each case and writes ``tests/data/golden_assignments.npz``; the
test ``test_golden.py`` re-runs the same cases and compares. A case is (overrides, read-outs to record).
Float kernels differ between CPU instruction sets (AVX2 vs AVX512), so the file records the host's
fingerprint and the comparison runs on hosts of the same fingerprint only; runs use 2 threads
(results depend on the thread count through oneDNN's reduction order).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden_assignments.npz"
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

    if sys.argv[1:] != ["record"]:
        sys.exit("usage: python -m tests.golden record")
    out: dict[str, np.ndarray] = {"capability": np.array(cpu_capability())}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            out.update(run_case(name, Path(tmp) / name))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN, **out)
    print(f"wrote {GOLDEN}: {sorted(out)}")


if __name__ == "__main__":
    main()
