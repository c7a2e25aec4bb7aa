"""Read-outs: the ways a trained model turns an embedding of the data into cluster labels.

A method's own soft assignment (``cluster_probs``, its argmax) is always there. Beside it a method
declares read-outs in its config (``method.readouts: {name: {_target_: ...}}``); each one reads one of
the method's embeddings (``method.embed(x, name)``: ClusterGAN's latent, a latent group of HRWAE-GAN,
HC-MGAN's split probabilities) and is

* **fitted once** on the fit set, after training (``ClusteringMethod.fit_readouts``; never inside a
  read, never on evaluation data);
* **stored with the model**: its fitted state is module extra state (tensors, or a pickled estimator
  as a uint8 tensor), so ``model.pt`` loads with ``torch.load(weights_only=True)`` and ``predict.py``
  assigns new data exactly as the run did. A pickled estimator is unpickled when the read-out first
  predicts: load models only from run folders you trust (as with any pickle);
* free to **discover K** (``clusters_found``) and to label points **noise (-1)**; the shared metrics
  count noise as errors in ACC and report ``fraction_labeled`` / ``acc_labeled`` beside it.

``method.clustering: <name>`` makes a read-out the primary assignment (``assignments.npz``'s
``cluster``/``probs``, the headline ACC); every read-out is reported as ``eval/<split>/<name>/<metric>``.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genclust.errors import ConfigError


def _pack(obj: Any) -> Tensor:
    """A picklable object as a uint8 tensor (loads with ``torch.load(weights_only=True)``)."""
    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=pickle.HIGHEST_PROTOCOL)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8).clone()


def _unpack(t: Tensor) -> Any:
    return pickle.loads(t.cpu().numpy().tobytes())  # noqa: S301 - our own fitted estimator, saved by us


class Readout(nn.Module):
    """Base class. Subclasses implement ``_fit(features)`` and ``_predict(features) -> (probs | None, labels)``.

    ``state`` is a plain dict of tensors (what ``get_extra_state`` saves); ``fitted`` says whether it holds
    a fit. ``cut_k`` is set by read-outs that answer for a fixed number of clusters of a hierarchy
    (the evaluator's per-K curve lists them).
    """

    cut_k: int | None = None
    #: True when labels may be -1 (noise)
    noise_aware: bool = False

    def __init__(self, embedding: str = "latent") -> None:
        super().__init__()
        self.embedding = str(embedding)
        self.state: dict[str, Tensor] = {}
        self._unpickled: dict[str, Any] = {}  # state entries holding a pickled estimator, unpickled once

    @property
    def fitted(self) -> bool:
        return bool(self.state)

    def fit(self, features: Tensor) -> None:
        """Fit on the fit set's embedding (float32 [N, D] or the method's own layout)."""
        self.state, self._unpickled = {}, {}
        self._fit(features)
        if not self.state:
            raise RuntimeError(f"{type(self).__name__}._fit stored no state")

    def forward(self, features: Tensor, idx: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        """(probs [N, k] or None, labels [N] with -1 = noise) of an embedding batch. ``idx``: the rows' fit-set
        indices when they are fit-set examples (None for new data): a read-out that keeps the fit set's own
        result (``_predict_fit_rows``) answers with it, so fit-set labels do not depend on the batching."""
        if not self.fitted:
            raise RuntimeError(f"read-out {type(self).__name__} is not fitted (fit_readouts runs after training)")
        probs, labels = self._predict(features) if idx is None else self._predict_fit_rows(features, idx)
        return probs, labels.long()

    def clusters_found(self) -> int | None:
        """The number of clusters this read-out can assign (None: not known before prediction)."""
        return None

    def describe(self) -> dict[str, Any]:
        out = {"type": type(self).__name__, "embedding": self.embedding, "fitted": self.fitted,
               "clusters_found": self.clusters_found()}
        if "n_neighbors" in self.state:  # UMAP's neighbours as used (the setting is capped at N - 1 on small sets)
            out["umap_n_neighbors"] = int(self.state["n_neighbors"])
        return out

    # state travels as module extra state: tensors only
    def get_extra_state(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.state.items()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.state, self._unpickled = dict(state or {}), {}

    def _keep_pickled(self, key: str, obj: Any) -> None:
        """Store a fitted estimator in ``state[key]`` (pickled, so it saves with the model) and keep it at hand."""
        self.state[key] = _pack(obj)
        self._unpickled[key] = obj

    def _pickled(self, key: str) -> Any:
        """The estimator in ``state[key]``, unpickled on first use after a load."""
        if key not in self._unpickled:
            self._unpickled[key] = _unpack(self.state[key])
        return self._unpickled[key]

    def _fit(self, features: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, features: Tensor) -> tuple[Tensor | None, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_fit_rows(self, features: Tensor, idx: Tensor) -> tuple[Tensor | None, Tensor]:
        """Fit-set rows ``idx`` (embedding ``features``): like new data unless a read-out keeps its fit result."""
        return self._predict(features)

    def _fit_set_rows(self, key: str, idx: Tensor) -> Tensor:
        """Rows ``idx`` of the fit-set tensor ``state[key]``; an index outside the fit set is an error, not a wrap."""
        table = self.state[key]
        idx = idx.cpu().long()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(table)):
            raise IndexError(f"{type(self).__name__}: fit-set index out of range [0, {len(table)})")
        return table[idx]


class KMeansReadout(Readout):
    """k-means (k-means++, ``n_init`` restarts, float64 fit) on an embedding.

    Labels: the nearest center. Probs: softmax(-d^2 / (T * s)), s = the fit's mean squared distance to
    the own center (a temperature in the embedding's units).
    """

    def __init__(self, n_clusters: int, embedding: str = "latent", n_init: int = 10, seed: int = 0,
                 temperature: float = 1.0) -> None:
        super().__init__(embedding)
        if int(n_clusters) < 1:
            raise ConfigError(f"KMeansReadout: n_clusters must be >= 1, got {n_clusters}")
        self.n_clusters, self.n_init, self.seed = int(n_clusters), int(n_init), int(seed)
        self.temperature = float(temperature)

    def _fit(self, features: Tensor) -> None:
        from sklearn.cluster import KMeans

        feats = features.double().numpy()
        if len(feats) < self.n_clusters:
            raise ConfigError(f"KMeansReadout: {self.n_clusters} clusters for {len(feats)} points")
        km = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.seed).fit(feats)
        self.state = {"centers": torch.as_tensor(km.cluster_centers_, dtype=torch.float32),
                      "scale": torch.tensor(max(float(km.inertia_) / len(feats), 1e-8))}

    def _predict(self, features: Tensor) -> tuple[Tensor, Tensor]:
        centers = self.state["centers"].to(features.device)
        d2 = torch.cdist(features.float(), centers).pow(2)
        scale = float(self.state["scale"]) * self.temperature
        return torch.softmax(-d2 / scale, dim=1), d2.argmin(1)

    def clusters_found(self) -> int:
        return self.n_clusters


class GMMReadout(Readout):
    """A Gaussian mixture with ``n_clusters`` components (sklearn, EM from a k-means init) on an embedding."""

    def __init__(self, n_clusters: int, embedding: str = "latent", covariance_type: str = "full",
                 n_init: int = 1, seed: int = 0, reg_covar: float = 1e-6) -> None:
        super().__init__(embedding)
        self.n_clusters, self.covariance_type, self.n_init = int(n_clusters), covariance_type, int(n_init)
        self.seed, self.reg_covar = int(seed), float(reg_covar)

    def _fit(self, features: Tensor) -> None:
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(self.n_clusters, covariance_type=self.covariance_type, n_init=self.n_init,
                              reg_covar=self.reg_covar, random_state=self.seed).fit(features.double().numpy())
        self._keep_pickled("model", gmm)

    def _estimator(self) -> Any:
        """The fitted sklearn GaussianMixture (HRWAE-GAN samples from its components)."""
        return self._pickled("model")

    def _predict(self, features: Tensor) -> tuple[Tensor, Tensor]:
        probs = torch.as_tensor(self._estimator().predict_proba(features.double().cpu().numpy()), dtype=torch.float32)
        return probs, probs.argmax(1)

    def clusters_found(self) -> int:
        return self.n_clusters


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Run UMAP / HDBSCAN inside the process's thread budget and leave torch's intra-op threads as they were.

    numba's OpenMP layer (UMAP, pynndescent) sets the shared OpenMP pool to every core: without this, a run
    started with OMP_NUM_THREADS=1 trains on 2 spinning threads after its first UMAP (measured: a 1-thread
    HRWAE-GAN run slowed 3-5x after its first noise-attention marking)."""
    threads = torch.get_num_threads()
    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    except (ImportError, ValueError):  # pragma: no cover - numba ships with umap-learn
        pass
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def umap_neighbors(n: int, cap: int = 100, divisor: int = 300, floor: int = 2) -> int:
    """HRWAE-GAN's Eq. 8 neighbour rule: n_neighbors = min(floor(N / 300), 100); at least ``floor`` (ours: UMAP
    needs 2 neighbours, Eq. 8 gives 0 or 1 below 600 points)."""
    return max(min(n // divisor, cap), floor)


# Read-outs of one latent group share their UMAP (UMAP + HDBSCAN and UMAP + GMM with the same neighbours, size,
# min_dist and seed give the same embedding): the fit and the transforms of new data are memoized, a few entries
# each, keyed by the input's bytes. Seeded UMAP is deterministic, so a hit returns what a refit would (tested).
_UMAP_FITS: dict[tuple, tuple[Any, np.ndarray]] = {}
_UMAP_TRANSFORMS: dict[tuple, tuple[Any, np.ndarray]] = {}
_UMAP_MEMO_SIZE = 4


def _digest(x: np.ndarray) -> str:
    from genclust.data.datamodule import content_digest

    return content_digest(x)


def _remember(memo: dict, key: tuple, value: tuple) -> None:
    if len(memo) >= _UMAP_MEMO_SIZE:
        memo.pop(next(iter(memo)))
    memo[key] = value


def fit_umap(x: np.ndarray, n_neighbors: int | str, n_components: int, min_dist: float, seed: int
             ) -> tuple[Any, np.ndarray, int]:
    """(reducer, embedding of ``x``, neighbours used): UMAP with Eq. 8's rule for ``n_neighbors: auto``."""
    import warnings

    import umap

    nn_ = umap_neighbors(len(x)) if n_neighbors == "auto" else int(n_neighbors)
    used = min(nn_, len(x) - 1)
    key = (_digest(x), used, int(n_components), float(min_dist), int(seed))
    if key in _UMAP_FITS:
        reducer, emb = _UMAP_FITS[key]
        return reducer, emb.copy(), used
    reducer = umap.UMAP(n_neighbors=used, n_components=n_components, min_dist=min_dist,
                        random_state=seed, transform_seed=seed)
    with torch_threads_kept(), warnings.catch_warnings():
        # a seeded UMAP runs single-threaded on purpose (reproducible): its warning says so at every fit
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden")
        emb = reducer.fit_transform(x)
    _remember(_UMAP_FITS, key, (reducer, emb))
    return reducer, emb.copy(), used


def umap_transform(reducer: Any, features: Tensor) -> np.ndarray:
    x = features.float().cpu().numpy()
    key = (id(reducer), _digest(x))
    hit = _UMAP_TRANSFORMS.get(key)
    if hit is not None and hit[0] is reducer:
        return hit[1].copy()
    with torch_threads_kept():
        out = reducer.transform(x)
    _remember(_UMAP_TRANSFORMS, key, (reducer, out))
    return out.copy()


class UMAPHDBSCANReadout(Readout):
    """UMAP to ``n_components`` dimensions, then HDBSCAN: K is discovered, noise is labelled -1.

    New data: ``umap.transform`` + ``hdbscan.approximate_predict`` (the fitted estimators are pickled into
    the read-out's state). ``n_neighbors: auto`` is Eq. 8 of the HRWAE-GAN thesis.
    """

    noise_aware = True

    def __init__(self, embedding: str = "latent", n_neighbors: int | str = "auto", n_components: int = 2,
                 min_dist: float = 0.0, min_cluster_size: int | str = "auto", min_samples: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(embedding)
        self.n_neighbors, self.n_components, self.min_dist = n_neighbors, int(n_components), float(min_dist)
        self.min_cluster_size, self.min_samples, self.seed = min_cluster_size, min_samples, int(seed)

    def _fit(self, features: Tensor) -> None:
        import hdbscan

        x = features.float().numpy()
        n = len(x)
        reducer, emb, nn_ = fit_umap(x, self.n_neighbors, self.n_components, self.min_dist, self.seed)
        mcs = max(n // 100, 5) if self.min_cluster_size == "auto" else int(self.min_cluster_size)
        with torch_threads_kept():
            clusterer = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=self.min_samples,
                                        prediction_data=True).fit(emb)
        self.state = {"n_neighbors": torch.tensor(nn_),
                      "clusters_found": torch.tensor(int(clusterer.labels_.max()) + 1),
                      "fit_labels": torch.as_tensor(clusterer.labels_, dtype=torch.long)}
        self._keep_pickled("models", (reducer, clusterer))

    def _predict(self, features: Tensor) -> tuple[None, Tensor]:
        import hdbscan

        reducer, clusterer = self._pickled("models")
        emb = umap_transform(reducer, features)
        with torch_threads_kept():
            labels, _ = hdbscan.approximate_predict(clusterer, emb)
        return None, torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def _predict_fit_rows(self, features: Tensor, idx: Tensor) -> tuple[None, Tensor]:
        # the fit set's own HDBSCAN labels (the thesis clusters the data set itself, §3.2), not approximate_predict
        return None, self._fit_set_rows("fit_labels", idx)

    def clusters_found(self) -> int | None:
        return int(self.state["clusters_found"]) if self.fitted else None

    def fit_embedding(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(the fit set's UMAP coordinates, its HDBSCAN labels) for figures."""
        return getattr(self._pickled("models")[0], "embedding_", None), self.state["fit_labels"].numpy()


class _UMAPFirst:
    """Mixin for a read-out that clusters UMAP coordinates: UMAP the embedding to ``n_components`` dimensions
    (``fit_umap``, memoized per latent group), then the base read-out on them. New data: ``umap.transform``, which
    places a point with a random stream shared by its batch, so a new point's coordinates (rarely its label)
    depend on the batch. The fit set's own coordinates stay in the state: fit-set rows (``forward(features, idx)``,
    ``fit_rows(idx)``) are labelled from them, batch-independently."""

    def _umap_settings(self, n_neighbors: int | str, n_components: int, min_dist: float) -> None:
        self.n_neighbors, self.n_components, self.min_dist = n_neighbors, int(n_components), float(min_dist)

    def _fit(self, features: Tensor) -> None:
        reducer, emb, n_neighbors = fit_umap(features.float().numpy(), self.n_neighbors, self.n_components,
                                             self.min_dist, self.seed)
        super()._fit(torch.as_tensor(emb))
        self.state["fit_coords"] = torch.as_tensor(emb, dtype=torch.float32)
        self.state["n_neighbors"] = torch.tensor(int(n_neighbors))
        self._keep_pickled("reducer", reducer)

    def _predict(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return super()._predict(torch.as_tensor(umap_transform(self._pickled("reducer"), features)))

    def fit_rows(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(probs, labels) of the fit set's rows ``idx`` from their fitted UMAP coordinates."""
        if not self.fitted:
            raise RuntimeError(f"read-out {type(self).__name__} is not fitted")
        return super()._predict(self._fit_set_rows("fit_coords", idx))

    def _predict_fit_rows(self, features: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        return self.fit_rows(idx)


class UMAPGMMReadout(_UMAPFirst, GMMReadout):
    """UMAP to ``n_components`` dimensions, then a K-component GMM (N2D's recipe, the HRWAE-GAN thesis' Fig. 3:
    UMAP separates and compacts the clusters of a latent space). New data: ``umap.transform`` + GMM."""

    def __init__(self, n_clusters: int, embedding: str = "latent", n_neighbors: int | str = "auto",
                 n_components: int = 2, min_dist: float = 0.0, covariance_type: str = "full", seed: int = 0) -> None:
        super().__init__(n_clusters, embedding, covariance_type=covariance_type, seed=seed)
        self._umap_settings(n_neighbors, n_components, min_dist)


class UMAPKMeansReadout(_UMAPFirst, KMeansReadout):
    """UMAP to ``n_components`` dimensions, then k-means (N2D's recipe with k-means in place of its GMM; the
    ``umap_kmeans`` reference row). New data: ``umap.transform`` + the nearest center."""

    def __init__(self, n_clusters: int, embedding: str = "latent", n_neighbors: int | str = 15,
                 n_components: int = 10, min_dist: float = 0.0, n_init: int = 10, seed: int = 0,
                 temperature: float = 1.0) -> None:
        super().__init__(n_clusters, embedding, n_init=n_init, seed=seed, temperature=temperature)
        self._umap_settings(n_neighbors, n_components, min_dist)


class PosteriorReadout(Readout):
    """A read-out of an embedding that already is a posterior p(y | x) [N, K] (e.g. CGM's re-inferred
    posterior): its argmax. Nothing to fit but the width, which it records."""

    def _fit(self, features: Tensor) -> None:
        self.state = {"k": torch.tensor(features.shape[1])}

    def _predict(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return features, features.argmax(1)

    def clusters_found(self) -> int | None:
        return int(self.state["k"]) if self.fitted else None


class TreeCutReadout(Readout):
    """The leaves of a binary tree of soft splits after its first ``cut_k - 1`` splits (HC-MGAN's per-K curve).

    Embedding: p(first child | x) per split, [N, n_splits]. ``fit`` is handed the tree's paths (the
    method's ``tree_paths(k)``) instead of features: leaf l's probability is the product along its
    root-to-leaf path of q or 1 - q.
    """

    def __init__(self, k: int, embedding: str = "split_probs") -> None:
        super().__init__(embedding)
        self.cut_k = int(k)

    def fit(self, paths: Sequence[Sequence[tuple[int, int]]]) -> None:  # type: ignore[override]
        flat = [(leaf, split, side) for leaf, path in enumerate(paths) for split, side in path]
        self.state = {"paths": torch.tensor(flat, dtype=torch.long).reshape(-1, 3),
                      "n_leaves": torch.tensor(len(paths))}

    def _predict(self, p: Tensor) -> tuple[Tensor, Tensor]:
        n_leaves = int(self.state["n_leaves"])
        probs = torch.ones(p.shape[0], n_leaves, dtype=torch.float64, device=p.device)
        for leaf, split, side in self.state["paths"].tolist():
            q = p[:, split].double()
            probs[:, leaf] = probs[:, leaf] * (q if side == 0 else 1.0 - q)
        return probs, probs.argmax(1)

    def clusters_found(self) -> int | None:
        return int(self.state["n_leaves"]) if self.fitted else None


__all__ = ["Readout", "KMeansReadout", "GMMReadout", "UMAPHDBSCANReadout", "PosteriorReadout", "TreeCutReadout",
           "umap_neighbors"]
