"""Summarize a multirun: method x dataset x setting -> ACC/NMI/ARI min / median / max over seeds.

    python scripts/summarize.py outputs/train/multiruns/<stamp> [--out-dir DIR]

Reads every ``*/metrics.json`` below the folder; prints a markdown table and writes
``summary.md`` and ``summary.csv`` next to the runs (or in --out-dir). Runs are grouped by method,
dataset and *setting*: their command-line overrides other than seed/method/dataset (read from each
run's ``.hydra/overrides.yaml``), so ``-m method.optim.generator.lr=1e-4,2e-4 seed=0,1,2`` gives two rows of 3 runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("acc", "nmi", "ari")
# overrides that do not define a setting: the seed varies within a row, method/dataset have columns
NOT_A_SETTING = ("seed", "method", "dataset")
DEFAULTS = "(defaults)"


def setting_of(run_dir: Path) -> str:
    """The run's command-line overrides other than seed/method/dataset, sorted; DEFAULTS if none."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return DEFAULTS
    import yaml

    overrides = yaml.safe_load(path.read_text()) or []
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    kept = sorted(o for o, k in zip(overrides, keys) if k not in NOT_A_SETTING and not k.startswith("hydra."))
    return " ".join(kept) or DEFAULTS


def collect(root: Path) -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for path in sorted(root.rglob("metrics.json")):
        data = json.loads(path.read_text())
        groups[(str(data.get("method")), str(data.get("dataset")), setting_of(path.parent))].append(data)
    return groups


def summarize(root: Path) -> list[dict]:
    rows = []
    for (method, dataset, setting), runs in sorted(collect(root).items()):
        row = {"method": method, "dataset": dataset, "setting": setting, "runs": len(runs),
               "seeds": " ".join(str(r.get("seed")) for r in sorted(runs, key=lambda r: str(r.get("seed"))))}
        for m in METRICS:
            values = [float(r[m]) for r in runs if m in r]
            row.update({f"{m}_min": min(values), f"{m}_median": statistics.median(values), f"{m}_max": max(values)})
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    head = "| method | dataset | setting | runs | " + " | ".join(f"{m.upper()} min / median / max" for m in METRICS) + " |"
    sep = "|---|---|---|---|" + "---|" * len(METRICS)
    lines = [head, sep]
    for r in rows:
        cells = [f"{r[f'{m}_min']:.4f} / {r[f'{m}_median']:.4f} / {r[f'{m}_max']:.4f}" for m in METRICS]
        lines.append(f"| {r['method']} | {r['dataset']} | {r['setting']} | {r['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="multirun folder (or any folder with */metrics.json)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = summarize(args.root)
    if not rows:
        print(f"summarize: no metrics.json below {args.root}", file=sys.stderr)
        return 2
    table = to_markdown(rows)
    print(table)
    out = args.out_dir or args.root
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(table + "\n")
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
