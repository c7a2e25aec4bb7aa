"""Figures shared by every method: confusion matrix, and the one image-grid writer every sample figure uses."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

from genclust.evaluation.metrics import contingency, hungarian_match  # noqa: E402


def confusion_figure(labels_true: np.ndarray, labels_pred: np.ndarray, path: Path, title: str = "") -> Path:
    """Cluster x class counts, clusters ordered by their Hungarian-matched class."""
    table = contingency(labels_true, labels_pred)
    classes = np.unique(labels_true)
    clusters = np.unique(labels_pred)
    match = hungarian_match(labels_true, labels_pred)
    class_pos = {int(c): i for i, c in enumerate(classes)}
    order = sorted(range(len(clusters)), key=lambda r: class_pos.get(match.get(int(clusters[r]), -10**9), 10**9))
    table = table[order]
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(classes), 1 + 0.4 * len(clusters)))
    ax.imshow(table, cmap="Blues")
    for (r, c), v in np.ndenumerate(table):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=6,
                    color="white" if v > table.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), [str(c) for c in classes])
    ax.set_yticks(range(len(clusters)), [str(clusters[r]) for r in order])
    ax.set_xlabel("class (evaluation only)")
    ax.set_ylabel("cluster")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def grid_image(images: torch.Tensor, nrow: int, padding: int = 1, pad_value: float = 0.0) -> torch.Tensor:
    """``images`` ([N, C, H, W] in [0, 1]) as one [3, H', W'] grid image (a panel of a larger figure)."""
    from torchvision.utils import make_grid

    return make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)


def save_grid(images: torch.Tensor, path: Path, nrow: int, padding: int = 1, pad_value: float = 0.0) -> Path:
    """Write ``images`` ([N, C, H, W] in [0, 1]) as a grid of ``nrow`` per row: the one image-grid writer."""
    save_image(images.detach().float().cpu().clamp(0, 1), path, nrow=nrow, padding=padding, pad_value=pad_value)
    return path


@torch.no_grad()
def sample_grid(module, per_cluster: int, path: Path) -> Path | None:
    """One row of generated images per cluster (``module.sample(n, cluster=k)``)."""
    rows = []
    for k in range(module.n_clusters):
        images = module.sample(per_cluster, cluster=k)
        if images is None:
            return None
        rows.append(module.to_unit_range(images.float().cpu()))
    return save_grid(torch.cat(rows), path, nrow=per_cluster)


@torch.no_grad()
def clustering_surface(module, real: torch.Tensor | None, path: Path, title: str = "") -> Path:
    """2-D data: the method's assignment over the plane (filled contours), its samples and the real points."""
    fake = module.sample(2000).float().cpu()
    real = None if real is None else real.float().cpu()
    pts = fake if real is None else torch.cat([fake, real])
    lo, hi = pts.min(0).values - 0.3, pts.max(0).values + 0.3
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 300), torch.linspace(lo[1], hi[1], 300), indexing="xy")
    labels = module.assign_in_batches(torch.stack([gx.flatten(), gy.flatten()], 1), 8192)[1].reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contourf(gx, gy, labels, levels=module.n_clusters, cmap="tab10", alpha=0.35)
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", marker="+", label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="tab:green", marker="+", label="generated")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(f"clustering surface {title}".strip())
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def umap_scatter(readout, path: Path, title: str = "", max_points: int = 20000) -> Path | None:
    """The 2-D UMAP embedding of a fitted UMAP + HDBSCAN read-out's fit set, coloured by its clusters
    (noise grey). None when the read-out's UMAP is not 2-D."""
    coords, labels = readout.fit_embedding()
    if coords is None or coords.shape[1] != 2:
        return None
    keep = np.random.default_rng(0).permutation(len(coords))[:max_points]
    coords, labels = coords[keep], labels[keep]
    fig, ax = plt.subplots(figsize=(5, 5))
    noise = labels < 0
    ax.scatter(coords[noise, 0], coords[noise, 1], s=1, c="lightgrey", label=f"noise ({noise.mean():.0%})")
    ax.scatter(coords[~noise, 0], coords[~noise, 1], s=1, c=labels[~noise], cmap="tab20")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper right", fontsize=7, markerscale=6)
    ax.set_title(f"{title} ({len(np.unique(labels[~noise]))} clusters)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
