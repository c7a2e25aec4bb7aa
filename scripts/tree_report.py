"""Report on an HC-MGAN tree, also while it is still growing (from ``<run>/tree/tree.pt``).

    python scripts/tree_report.py outputs/train/runs/<stamp> [--data-dir DIR]

Prints, as JSON: per split the share of each class's mass that went to the first child and the
number of classes kept >= 90% on one side (the paper's Fig. 5 purity reading), and the metrics
at every number of leaves grown so far (the per-K curve), on every scored split of the run's
dataset. Labels are read here for evaluation only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genclust.data.datamodule import ClusteringDataModule
from genclust.evaluation.metrics import clustering_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    cfg = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    tree_file = args.run / "tree" / "tree.pt"
    if not tree_file.is_file():
        print(f"tree_report: no {tree_file} (is this an HC-MGAN run?)", file=sys.stderr)
        return 2
    method = instantiate(cfg.method, _convert_="all")
    method.tree.load_state_dict(torch.load(tree_file, map_location="cpu", weights_only=True)["tree"])
    method.eval()
    dm = ClusteringDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), batch_size=method.batch_size,
                              pixel_range=method.pixel_range, data_dir=args.data_dir or cfg.paths.data_dir,
                              download=False)
    dm.setup("fit")
    y_fit = dm.fit_set.y.numpy()
    n_classes = int(y_fit.max()) + 1
    class_mass = np.bincount(y_fit, minlength=n_classes).astype(float)
    splits = []
    for j, split in enumerate(method.tree.splits):
        parent_id, first = int(split["node"]), int(split["children"][0])
        s_parent = method.tree.memberships[parent_id].numpy()
        s_first = method.tree.memberships[first].numpy()
        per_class_parent = np.bincount(y_fit, weights=s_parent, minlength=n_classes)
        per_class_first = np.bincount(y_fit, weights=s_first, minlength=n_classes)
        share = np.divide(per_class_first, per_class_parent, out=np.zeros(n_classes), where=per_class_parent > 0)
        present = per_class_parent > 0.05 * class_mass  # classes with a real share of this node
        pure = int(((share >= 0.9) | (share <= 0.1))[present].sum())
        splits.append({"split": j + 1, "node": parent_id, "mass": round(float(s_parent.sum()), 1),
                       "first_child_share_per_class": [round(float(v), 3) for v in share],
                       "classes_present": int(present.sum()), "classes_90pct_one_side": pure})
    # the per-K curve: the tree cut after its first k - 1 splits (what the k<k> tree-cut read-outs answer)
    tree = method.tree
    split_probs = {name: tree.split_probs(data.x) for name, data in dm.eval_sets.items()}
    curve = []
    for k in range(1, tree.n_leaves + 1):
        row = {"k": k}
        for name, data in dm.eval_sets.items():
            labels = tree.leaf_probs_from_split_probs(split_probs[name], k - 1).argmax(1).numpy()
            report = clustering_report(data.y.numpy(), labels)
            row.update({f"{name}/{m}": round(float(report[m]), 4) for m in ("acc", "nmi", "ari")})
        curve.append(row)
    print(json.dumps({"run": str(args.run), "splits": splits, "per_k": curve}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
