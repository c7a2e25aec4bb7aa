"""Clustering metrics as pure functions of ``(labels_true, labels_pred)`` (numpy in, float out).

ACC is the *Hungarian* accuracy: the best one-to-one map from clusters to classes
(scipy ``linear_sum_assignment``), padded so it works when the number of clusters differs
from the number of classes. It is not purity (which lets many clusters map to one class);
purity is reported separately and named as such.

Noise-aware methods (HDBSCAN in HRWAE-GAN) mark unassigned points with label -1.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

NOISE = -1

DEFINITIONS = {
    "acc": "Hungarian accuracy: best one-to-one cluster->class map (scipy linear_sum_assignment), "
    "unmatched clusters count as errors; noise points (-1) count as errors",
    "nmi": "normalized mutual information, arithmetic normalisation (sklearn default)",
    "ari": "adjusted Rand index (sklearn)",
    "purity": "each cluster mapped to its majority class (many-to-one); NOT the paper-style ACC",
    "mean_class_acc": "mean over classes of the Hungarian-matched per-class recall",
    "fraction_labeled": "fraction of points not labelled noise (-1)",
    "acc_labeled": "Hungarian ACC on the points not labelled noise",
    "clusters_found": "number of distinct non-noise cluster labels",
}


def _encode(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary (negative, non-contiguous) labels to 0..n-1; return (codes, unique values)."""
    values, codes = np.unique(np.asarray(labels).ravel(), return_inverse=True)
    return codes, values


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    """Count matrix [n_clusters, n_classes] over re-encoded labels."""
    t, _ = _encode(labels_true)
    p, _ = _encode(labels_pred)
    table = np.zeros((p.max(initial=-1) + 1, t.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return table


def hungarian_match(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[int, int]:
    """Best one-to-one map {cluster label -> class label} (clusters left over are unmapped)."""
    _, t_values = _encode(labels_true)
    _, p_values = _encode(labels_pred)
    table = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)  # rectangular: min(k_pred, k_true) pairs
    return {int(p_values[r]): int(t_values[c]) for r, c in zip(rows, cols)}


def _check(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels_true = np.asarray(labels_true).ravel()
    labels_pred = np.asarray(labels_pred).ravel()
    if labels_true.shape != labels_pred.shape:
        raise ValueError(f"labels_true has {labels_true.size} entries, labels_pred {labels_pred.size}")
    if labels_true.size == 0:
        raise ValueError("cannot score an empty set")
    return labels_true, labels_pred


def cluster_acc(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Hungarian ACC over all points (noise label -1 in ``labels_pred`` never matches)."""
    labels_true, labels_pred = _check(labels_true, labels_pred)
    keep = labels_pred != NOISE
    if not keep.any():
        return 0.0
    table = contingency(labels_true[keep], labels_pred[keep])
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / labels_true.size)


def purity(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    labels_true, labels_pred = _check(labels_true, labels_pred)
    return float(contingency(labels_true, labels_pred).max(axis=1).sum() / labels_true.size)


def mean_class_acc(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Balanced accuracy under the Hungarian map (classes with no matched cluster score 0)."""
    labels_true, labels_pred = _check(labels_true, labels_pred)
    mapping = hungarian_match(labels_true, labels_pred)
    mapped = np.array([mapping.get(int(p), None) for p in labels_pred], dtype=object)
    recalls = [float(np.mean(mapped[labels_true == c] == c)) for c in np.unique(labels_true)]
    return float(np.mean(recalls))


def nmi(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    labels_true, labels_pred = _check(labels_true, labels_pred)
    return float(normalized_mutual_info_score(labels_true, labels_pred))


def ari(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    labels_true, labels_pred = _check(labels_true, labels_pred)
    return float(adjusted_rand_score(labels_true, labels_pred))


def clustering_report(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """All metrics in one flat dict. With noise (-1), nmi/ari/purity are on the labelled points,
    ``acc`` is the total ACC (noise = error) and ``acc_labeled`` the ACC on labelled points."""
    labels_true, labels_pred = _check(labels_true, labels_pred)
    keep = labels_pred != NOISE
    report = {
        "acc": cluster_acc(labels_true, labels_pred),
        "fraction_labeled": float(keep.mean()),
        "clusters_found": float(len(np.unique(labels_pred[keep]))),
    }
    if keep.any():
        t, p = labels_true[keep], labels_pred[keep]
        report.update(nmi=nmi(t, p), ari=ari(t, p), purity=purity(t, p), mean_class_acc=mean_class_acc(t, p),
                      acc_labeled=cluster_acc(t, p))
    else:
        report.update(nmi=0.0, ari=0.0, purity=0.0, mean_class_acc=0.0, acc_labeled=0.0)
    return report


# ---------------------------------------------------------------- label-free (internal) validity
# What a sweep may select runs on (train.py refuses the label metrics above as `optimized_metric`).
# higher is better: silhouette, calinski_harabasz, consistency; lower is better: davies_bouldin.
UNSUPERVISED_DEFINITIONS = {
    "silhouette": "mean silhouette (Euclidean) of the assignment on the flattened input pixels, on at most "
    "2,000 points (fixed draw); noise points left out; no labels",
    "calinski_harabasz": "Calinski-Harabasz index of the assignment on the flattened pixels (between- over "
    "within-cluster dispersion); no labels",
    "davies_bouldin": "Davies-Bouldin index on the flattened pixels (lower = better separated); no labels",
    "modes/consistency": "generative methods: fraction of generated samples of mode k that the method assigns "
    "back to cluster k (Hungarian-free, mode id = cluster id); no labels",
}
UNSUPERVISED_METRICS = ("silhouette", "calinski_harabasz", "davies_bouldin", "consistency")


def internal_validity(features: np.ndarray, labels_pred: np.ndarray, max_silhouette: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """Silhouette / Calinski-Harabasz / Davies-Bouldin of ``labels_pred`` on ``features`` [N, D] (no labels).

    Noise points (-1) are left out. Fewer than 2 clusters (or as many clusters as points) has no index: NaN.
    The silhouette (O(N^2)) runs on a fixed random draw of ``max_silhouette`` points."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    labels_pred = np.asarray(labels_pred)
    keep = labels_pred != NOISE
    x, p = features[keep], labels_pred[keep]
    n_clusters = len(np.unique(p))
    if not 2 <= n_clusters < len(p):
        return dict.fromkeys(("silhouette", "calinski_harabasz", "davies_bouldin"), float("nan"))
    sample = None
    if len(p) > max_silhouette:
        sample = np.random.default_rng(seed).choice(len(p), max_silhouette, replace=False)
    xs, ps = (x, p) if sample is None else (x[sample], p[sample])
    silhouette = float(silhouette_score(xs, ps)) if 2 <= len(np.unique(ps)) < len(ps) else float("nan")
    return {"silhouette": silhouette, "calinski_harabasz": float(calinski_harabasz_score(x, p)),
            "davies_bouldin": float(davies_bouldin_score(x, p))}
