"""The reference row every run is read against: k-means on the pixels of the same data, same protocol.

k-means (k-means++, ``n_init`` restarts, seeded like ``method=kmeans``) is fitted on the method's fit set in
[0, 1] pixels and scored on the primary eval split, so ``python train.py`` prints the deep method's ACC beside
the number it has to beat (``method=kmeans`` gives the same row as a run of its own).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from genclust.evaluation.metrics import clustering_report

log = logging.getLogger(__name__)

KEYS = ("acc", "nmi", "ari")
PREFIX = "reference/kmeans_pixels"


def kmeans_reference(method: Any, datamodule: Any, seed: int | None, n_init: int = 10) -> dict[str, float]:
    """``{reference/kmeans_pixels/<acc|nmi|ari>: value}`` on the primary eval split (labels for evaluation only)."""
    from sklearn.cluster import KMeans

    def pixels(x):
        return method.to_unit_range(x.float()).flatten(1).numpy().astype(np.float64)

    km = KMeans(int(method.n_clusters), n_init=n_init, random_state=0 if seed is None else int(seed))
    km.fit(pixels(datamodule.fit_set.x))
    primary = next(iter(datamodule.eval_sets))
    data = datamodule.eval_sets[primary]
    report = clustering_report(data.y.numpy(), km.predict(pixels(data.x)))
    return {f"{PREFIX}/{k}": float(report[k]) for k in KEYS}


def wanted(setting: Any, method_name: str | None, n_fit: int, max_auto: int = 20000) -> bool:
    """``reference_kmeans``: true | false | auto (= on for fit sets up to ``max_auto`` examples; off for
    the k-means/GMM baselines, which are their own reference)."""
    if method_name in ("kmeans", "gmm"):
        return False
    if isinstance(setting, str) and setting.lower() == "auto":
        return n_fit <= max_auto
    return bool(setting)


def result_line(result: dict[str, Any]) -> str:
    """`` | pixel k-means on the same data: ACC ... NMI ... ARI ...`` or '' when there is no reference."""
    if f"{PREFIX}/acc" not in result:
        return ""
    r = {k: result[f"{PREFIX}/{k}"] for k in KEYS}
    verdict = "above" if result["acc"] > r["acc"] else "not above"
    return (f"  | pixel k-means, same data: ACC {r['acc']:.4f}  NMI {r['nmi']:.4f}  ARI {r['ari']:.4f}"
            f" ({verdict} it)")
