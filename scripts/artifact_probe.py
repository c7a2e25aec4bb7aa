"""Does a UDC run on Artifact-MNIST (or artifact_digits) use the one-pixel cue? Probe its G and its C.

    python scripts/artifact_probe.py outputs/<run>/checkpoints/last.ckpt [--data-dir DIR]

Artifact-MNIST's label is pixel (0, 0) (0.1 / 0.5 / 0.9, drawn independently of the digit). Two
questions tell a run that is on its way to the cue from one that is not, long before the test ACC
moves: (1) does G draw that pixel per cluster (one level per cluster)? (2) does C read it, i.e. do the
clusters of the real test images change when only that pixel is set to another level?
The test images are rebuilt with the dataset config's defaults (levels, seed, 80/20 split).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from genclust.data.sources import artifact_mnist
from genclust.errors import GenclustError
from genclust.evaluation.metrics import cluster_acc
from genclust.methods.udc import UDC
from genclust.predict import load_method

LEVELS = (0.1, 0.5, 0.9)  # configs/dataset/artifact_mnist.yaml


def level_bins(pixel: torch.Tensor) -> list[float]:
    """Share of values nearest to each level."""
    nearest = (pixel[:, None] - torch.tensor(LEVELS)).abs().argmin(dim=1)
    return [round(float((nearest == i).float().mean()), 2) for i in range(len(LEVELS))]


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a UDC Lightning checkpoint of an artifact_mnist or artifact_digits run")
    parser.add_argument("--data-dir", default=os.environ.get("GENCLUST_DATA_DIR", "data"))
    parser.add_argument("--n-samples", type=int, default=1000, help="generated images per cluster")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"artifact_probe: no checkpoint {args.checkpoint}", file=sys.stderr)
        return 2
    try:  # the nets come from the run's config (method.nets): a checkpoint inside a run folder
        model = load_method(args.checkpoint, UDC)[0]
    except GenclustError as err:
        print(f"artifact_probe: {err}", file=sys.stderr)
        return 2
    if model.n_clusters != len(LEVELS):
        print(f"artifact_probe: the run has K = {model.n_clusters}, Artifact-MNIST has {len(LEVELS)}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    print(f"{args.checkpoint}: {int(model.gen_steps)} generator steps")
    print("(1) G's pixel (0, 0) per cluster: mean, share nearest to", LEVELS)
    for k in range(model.n_clusters):
        pixel = model.sample(args.n_samples, cluster=k).float()[:, 0, 0, 0]
        print(f"    cluster {k}: mean {float(pixel.mean()):.3f}  shares {level_bins(pixel)}")
    try:
        base = "digits" if tuple(model.img_shape) == (1, 8, 8) else "mnist"  # artifact_digits / artifact_mnist
        x, y = artifact_mnist(args.data_dir, base=base)["test"]
    except GenclustError as err:
        print(f"artifact_probe: {err}", file=sys.stderr)
        return 2
    images = torch.from_numpy(x)
    clusters = model.cluster_probs(images).argmax(dim=1)
    print(f"(2) test ACC against the pixel label: {cluster_acc(y, clusters.numpy()):.4f}")
    for level in LEVELS:
        moved = images.clone()
        moved[:, 0, 0, 0] = level
        changed = float((model.cluster_probs(moved).argmax(dim=1) != clusters).float().mean())
        print(f"    pixel set to {level} on all {len(images)} test images: {changed:.1%} change cluster")
    print(f"    (a run that uses the cue changes ~{1 - 1 / len(LEVELS):.0%} of them; labels: {np.bincount(y).tolist()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
