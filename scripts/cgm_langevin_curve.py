"""CGM Fig. 3: clustering ACC against the number of Langevin steps at inference, for a trained run.

    python scripts/cgm_langevin_curve.py RUN_DIR [--sweeps 0 1 2 4 8] [--split test] [--limit 2000]

New-data inference (Gibbs: ``sweeps`` x ``method.inference.steps`` Langevin steps from a fresh z) on one
evaluation split, for each number of sweeps; labels are read for the score only. Writes
``RUN_DIR/figures/cgm_langevin_curve.png`` and adds ``langevin_curve`` to ``RUN_DIR/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from genclust.errors import GenclustError
from genclust.evaluation.metrics import clustering_report
from genclust.methods.cgm import CGM
from genclust.predict import load_method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sweeps", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--split", default=None, help="evaluation split (default: the run's first)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N examples of the split")
    args = parser.parse_args(argv)
    try:
        method, cfg, run_dir = load_method(args.run, CGM)
    except GenclustError as err:
        print(f"cgm_langevin_curve: {err}", file=sys.stderr)
        return 2
    from genclust.data.datamodule import ClusteringDataModule

    dm = ClusteringDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), pixel_range=method.pixel_range,
                              data_dir=cfg.paths.data_dir, download=False)
    dm.setup("predict")
    split = args.split or next(iter(dm.eval_sets))
    data = dm.eval_sets[split]
    x, y = (data.x, data.y) if args.limit is None else (data.x[: args.limit], data.y[: args.limit])
    steps_per_sweep = int(method.inference_cfg["steps"])
    curve = []
    for sweeps in args.sweeps:
        with torch.no_grad():
            probs = torch.cat([method.infer(x[i: i + 1024], "gibbs", sweeps=sweeps) for i in range(0, len(x), 1024)])
        report = clustering_report(y.numpy(), probs.argmax(1).numpy())
        curve.append({"langevin_steps": sweeps * steps_per_sweep, "sweeps": sweeps, "split": split,
                      **{k: report[k] for k in ("acc", "nmi", "ari")}})
        print(json.dumps(curve[-1]), flush=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot([c["langevin_steps"] for c in curve], [c["acc"] for c in curve], marker="o")
    ax.set_xlabel("Langevin steps at inference")
    ax.set_ylabel(f"ACC ({split}, n={len(x)})")
    ax.set_title("CGM: ACC vs Langevin steps (paper Fig. 3)", fontsize=9)
    fig.tight_layout()
    (run_dir / "figures").mkdir(exist_ok=True)
    fig.savefig(run_dir / "figures" / "cgm_langevin_curve.png", dpi=120)
    plt.close(fig)
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        metrics["langevin_curve"] = curve
        metrics_file.write_text(json.dumps(metrics, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
