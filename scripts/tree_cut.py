"""Copy an HC-MGAN run's tree, keeping only its first N splits, into a new run folder.

    python scripts/tree_cut.py outputs/<run> N outputs/<study>
    python train.py experiment=<same> hydra.run.dir=outputs/<study> method.n_clusters=<N + 2> ...

The new run resumes at split N + 1 and grows it alone: the way to study one split (its losses, its
generators, a changed setting) without re-growing the tree above it (benchmarks/RESULTS.md, HC-MGAN).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from genclust.methods.hc_mgan.tree import Tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with tree/tree.pt")
    parser.add_argument("n_splits", type=int, help="splits to keep")
    parser.add_argument("out", type=Path, help="new run folder (gets tree/tree.pt)")
    args = parser.parse_args(argv)
    src = args.run / "tree" / "tree.pt"
    dst = args.out / "tree" / "tree.pt"
    if not src.is_file():
        print(f"tree_cut: no {src} (is this an HC-MGAN run?)", file=sys.stderr)
        return 2
    if dst.exists():
        print(f"tree_cut: {dst} exists; choose a new folder", file=sys.stderr)
        return 2
    state = torch.load(src, map_location="cpu", weights_only=True)["tree"]
    tree = Tree()
    tree.load_state_dict(state)
    try:
        tree.truncate(args.n_splits)
    except ValueError as err:
        print(f"tree_cut: {err}", file=sys.stderr)
        return 2
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"tree": tree.state_dict()}, dst)
    print(f"tree_cut: {dst}: {tree.n_splits} splits, leaves {tree.leaves()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
