"""How well does each label-free objective rank a sweep's runs against ACC?

    python scripts/objective_rank.py outputs/train/multiruns/<stamp> [--acc eval/train/acc] [--out FILE.md]

Reads every ``*/metrics.json`` below the folder (an Optuna sweep, or any multirun) and, for every label-free
metric the runs recorded (``eval/<split>/{silhouette,calinski_harabasz,davies_bouldin}``, read-outs' versions,
``eval/<split>/modes/consistency``, the method's last ``train/<loss>``), prints Spearman's rho between the
objective *oriented so that larger = preferred* (davies_bouldin negated; losses negated, i.e. minimised) and ACC,
and the ACC of the run the objective would select beside the best and median ACC. Labels are read here only to
judge the objectives after the fact, never to select.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

# label-free metric names (see genclust.evaluation.metrics.UNSUPERVISED_METRICS); lower-is-better ones negated
MAXIMISE = ("silhouette", "calinski_harabasz", "consistency")
MINIMISE = ("davies_bouldin",)


def objectives(run: dict) -> dict[str, float]:
    """The run's label-free metrics, oriented so that larger = what a sweep would prefer."""
    out = {}
    for key, value in run.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(float(value)):
            continue
        last = key.rsplit("/", 1)[-1]
        if key.startswith("eval/") and last in MAXIMISE:
            out[key] = float(value)
        elif key.startswith("eval/") and last in MINIMISE:
            out[f"-{key}"] = -float(value)
        elif key.startswith("train/"):
            out[f"-{key}"] = -float(value)
    return out


def rank_table(runs: list[dict], acc_key: str) -> list[dict]:
    from scipy.stats import spearmanr

    accs = [float(r[acc_key]) for r in runs]
    per_run = [objectives(r) for r in runs]
    keys = sorted(set().union(*per_run))
    rows = []
    for key in keys:
        pairs = [(o[key], a) for o, a in zip(per_run, accs) if key in o]
        if len(pairs) < 3 or len({p[0] for p in pairs}) < 2:
            continue
        values, acc = zip(*pairs)
        rho = float(spearmanr(values, acc).statistic)
        picked = max(pairs, key=lambda p: p[0])[1]
        rows.append({"objective": key, "runs": len(pairs), "spearman": rho, "selected_acc": picked,
                     "best_acc": max(acc), "median_acc": statistics.median(acc)})
    return sorted(rows, key=lambda r: -r["spearman"] if math.isfinite(r["spearman"]) else 2.0)


def to_markdown(rows: list[dict], acc_key: str) -> str:
    lines = [f"| objective (larger = preferred) | runs | Spearman vs {acc_key} | ACC of its pick | best / median ACC |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['objective']}` | {r['runs']} | {r['spearman']:+.3f} | {r['selected_acc']:.4f} | "
                     f"{r['best_acc']:.4f} / {r['median_acc']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="sweep folder (or any folder with */metrics.json)")
    parser.add_argument("--acc", default="acc", help="the label metric to judge against (default: the "
                        "primary split's ACC, 'acc')")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in sorted(args.root.rglob("metrics.json"))]
    runs = [r for r in runs if args.acc in r]
    if len(runs) < 3:
        print(f"objective_rank: need at least 3 runs with {args.acc!r} below {args.root}, found {len(runs)}",
              file=sys.stderr)
        return 2
    table = to_markdown(rank_table(runs, args.acc), args.acc)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
