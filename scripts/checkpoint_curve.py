"""Time-to-accuracy from a run's checkpoints: score every ``checkpoints/epoch=*-step=*.ckpt`` of a run.

    python scripts/checkpoint_curve.py RUN_DIR [--split test] [--data-dir DIR]

Budget configs that evaluate only at the end (new-data inference costs as much as minutes of training,
e.g. CGM's) still give a curve: train with every epoch's checkpoint kept
(``callbacks.model_checkpoint.save_top_k=-1``), then score each one afterwards, outside the time budget, with
``genclust-predict``'s code path (the same read-outs and new-data inference as the run's final evaluation).
Elapsed seconds are the checkpoint file's modification time minus the run's start (its ``.hydra/config.yaml``,
written before the data are loaded). Writes ``RUN_DIR/checkpoint_curve.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from genclust.errors import GenclustError
from genclust.predict import predict

CKPT = re.compile(r"epoch=(\d+)-step=(\d+)\.ckpt$")


def checkpoints(run_dir: Path) -> list[tuple[int, int, Path]]:
    """(epoch, step, path) of the run's per-epoch checkpoints, by step (``last.ckpt`` is a link to one)."""
    found = []
    for path in (run_dir / "checkpoints").glob("epoch=*-step=*.ckpt"):
        m = CKPT.search(path.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), path))
    return sorted(found, key=lambda row: row[1])


def curve(run_dir: Path, split: str, data_dir: str | None = None) -> list[dict]:
    start_file = run_dir / ".hydra" / "config.yaml"
    if not start_file.is_file():
        raise GenclustError(f"{run_dir} is not a train.py run folder (no .hydra/config.yaml)")
    found = checkpoints(run_dir)
    if not found:
        raise GenclustError(f"no per-epoch checkpoints in {run_dir / 'checkpoints'} (train with "
                            "callbacks.model_checkpoint.save_top_k=-1 to keep every epoch's)")
    start = start_file.stat().st_mtime
    rows = []
    for epoch, step, path in found:
        out = run_dir / "predictions" / "checkpoint_curve" / f"{path.stem}.npz"
        result = predict(path, data_dir=data_dir, out=out, splits=[split])[split]
        rows.append({"checkpoint": path.name, "epoch": epoch, "step": step,
                     "elapsed_s": round(path.stat().st_mtime - start, 1), split: result})
        print(f"{path.name}: {split} ACC {result['acc']:.4f} NMI {result['nmi']:.4f}", file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], split: str) -> str:
    lines = [f"| epoch | step | elapsed (min) | {split} ACC / NMI / ARI |", "|---|---|---|---|"]
    for r in rows:
        s = r[split]
        lines.append(f"| {r['epoch']} | {r['step']} | {r['elapsed_s'] / 60:.1f} | "
                     f"{s['acc']:.4f} / {s['nmi']:.4f} / {s['ari']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (with checkpoints/epoch=*-step=*.ckpt)")
    parser.add_argument("--split", default="test", help="eval split to score (default: test)")
    parser.add_argument("--data-dir", help="IDX data folder (default: the run's paths.data_dir)")
    args = parser.parse_args(argv)
    try:
        rows = curve(args.run.resolve(), args.split, args.data_dir)
    except GenclustError as err:
        print(f"checkpoint_curve: error: {err}", file=sys.stderr)
        return 2
    (args.run / "checkpoint_curve.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows, args.split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
