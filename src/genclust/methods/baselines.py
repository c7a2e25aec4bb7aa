"""Reference rows for every table: k-means and a Gaussian mixture on pixels (optionally PCA), and UMAP + k-means.

They go through the same contract as the deep methods: ``fit_method`` fits scikit-learn on
the fit set, the fitted parameters become buffers (so ``model.pt`` clusters new data), and
``cluster_probs`` evaluates them in torch. UMAP + k-means keeps its fitted UMAP as a read-out's
pickled state instead, and places new data with ``umap.transform`` (numpy, on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from genclust.errors import ConfigError
from genclust.methods.base import ClusteringMethod
from genclust.readouts import UMAPKMeansReadout


class _PixelBaseline(ClusteringMethod):
    """Shared part: flatten, optional PCA (fit on the fit set), parameters as buffers."""

    def __init__(self, n_clusters: int, img_shape: Sequence[int], pca_components: int | None = None,
                 batch_size: int = 256, pixel_range: str = "unit") -> None:
        super().__init__(n_clusters, img_shape, batch_size, pixel_range)
        dim = int(np.prod(self.img_shape))
        if pca_components is not None and int(pca_components) < 1:
            raise ConfigError(f"pca_components must be >= 1 or null, got {pca_components}")
        if pca_components is not None and int(pca_components) >= dim:
            pca_components = None  # as many components as inputs: PCA would only rotate the data
        self.pca_components = pca_components
        out = int(pca_components) if pca_components else dim
        self.register_buffer("pca_mean", torch.zeros(dim))
        self.register_buffer("pca_basis", torch.eye(dim)[:out])
        self.feature_dim = out

    def features(self, x: Tensor) -> Tensor:
        flat = x.flatten(1).float()
        if not self.pca_components:  # the pixels themselves (a matmul by the identity could round them: TF32)
            return flat
        return (flat - self.pca_mean) @ self.pca_basis.T

    def _fit_features(self, x: np.ndarray, seed: int) -> np.ndarray:
        if self.pca_components:
            from sklearn.decomposition import PCA

            pca = PCA(n_components=int(self.pca_components), random_state=seed).fit(x)
            self.pca_mean.copy_(torch.as_tensor(pca.mean_, dtype=torch.float32))
            self.pca_basis.copy_(torch.as_tensor(pca.components_, dtype=torch.float32))
            return pca.transform(x).astype(np.float32)
        return x

    def fit_method(self, make_trainer: Callable[..., pl.Trainer], datamodule, ckpt_path=None) -> None:
        x = datamodule.fit_set.x.flatten(1).numpy().astype(np.float32)
        if len(x) < self.n_clusters:
            raise ConfigError(f"n_clusters={self.n_clusters} exceeds the {len(x)} examples to cluster")
        seed = int(torch.initial_seed() % 2**31)  # seed_everything(seed) fixed it
        self._fit(self._fit_features(x, seed), seed)
        return None

    def _fit(self, features: np.ndarray, seed: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class KMeansBaseline(_PixelBaseline):
    """k-means (k-means++, ``n_init`` restarts) on pixels or PCA features."""

    def __init__(self, n_clusters: int, img_shape: Sequence[int], pca_components: int | None = None,
                 n_init: int = 10, max_iter: int = 300, batch_size: int = 256, pixel_range: str = "unit") -> None:
        super().__init__(n_clusters, img_shape, pca_components, batch_size, pixel_range)
        self.save_hyperparameters()
        self.n_init, self.max_iter = int(n_init), int(max_iter)
        self.register_buffer("centers", torch.zeros(self.n_clusters, self.feature_dim))
        self.register_buffer("inertia_scale", torch.ones(()))

    def _fit(self, features: np.ndarray, seed: int) -> None:
        from sklearn.cluster import KMeans

        km = KMeans(self.n_clusters, n_init=self.n_init, max_iter=self.max_iter, random_state=seed).fit(features)
        self.centers.copy_(torch.as_tensor(km.cluster_centers_, dtype=torch.float32))
        # mean squared distance to the own center: the temperature of the soft assignment
        self.inertia_scale.fill_(max(float(km.inertia_) / len(features), 1e-8))

    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        d2 = torch.cdist(self.features(x), self.centers).pow(2)
        return torch.softmax(-d2 / self.inertia_scale, dim=1)

    def describe(self) -> dict:
        return {"baseline": "kmeans", "pca_components": self.pca_components, "n_init": self.n_init}


class GMMBaseline(_PixelBaseline):
    """Gaussian mixture (EM, k-means init) on PCA features; 'diag' or 'full' covariances."""

    def __init__(self, n_clusters: int, img_shape: Sequence[int], pca_components: int | None = 50,
                 covariance_type: str = "diag", n_init: int = 1, max_iter: int = 200, reg_covar: float = 1e-4,
                 batch_size: int = 256, pixel_range: str = "unit") -> None:
        super().__init__(n_clusters, img_shape, pca_components, batch_size, pixel_range)
        self.save_hyperparameters()
        if covariance_type not in ("diag", "full"):
            raise ConfigError(f"covariance_type must be 'diag' or 'full', got {covariance_type!r}")
        self.covariance_type = covariance_type
        self.n_init, self.max_iter, self.reg_covar = int(n_init), int(max_iter), float(reg_covar)
        d, k = self.feature_dim, self.n_clusters
        self.register_buffer("means", torch.zeros(k, d))
        self.register_buffer("log_weights", torch.zeros(k))
        # precision Cholesky factors (sklearn's parametrisation): [k, d] for diag, [k, d, d] for full
        shape = (k, d) if covariance_type == "diag" else (k, d, d)
        self.register_buffer("prec_chol", torch.ones(shape))

    def _fit(self, features: np.ndarray, seed: int) -> None:
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(self.n_clusters, covariance_type=self.covariance_type, n_init=self.n_init,
                              max_iter=self.max_iter, reg_covar=self.reg_covar, random_state=seed).fit(features)
        self.means.copy_(torch.as_tensor(gmm.means_, dtype=torch.float32))
        self.log_weights.copy_(torch.as_tensor(np.log(gmm.weights_), dtype=torch.float32))
        self.prec_chol.copy_(torch.as_tensor(gmm.precisions_cholesky_, dtype=torch.float32))

    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        f = self.features(x).double()
        means, pc = self.means.double(), self.prec_chol.double()
        if self.covariance_type == "diag":
            y = (f[:, None, :] - means[None]) * pc[None]  # [N, k, d]
            log_det = pc.log().sum(1)
        else:
            y = torch.einsum("nd,kde->nke", f, pc) - torch.einsum("kd,kde->ke", means, pc)[None]
            log_det = torch.diagonal(pc, dim1=1, dim2=2).log().sum(1)
        log_prob = -0.5 * (f.shape[1] * np.log(2 * np.pi) + y.pow(2).sum(2)) + log_det[None]
        return torch.softmax(log_prob + self.log_weights.double()[None], dim=1).float()

    def describe(self) -> dict:
        return {"baseline": "gmm", "pca_components": self.pca_components, "covariance_type": self.covariance_type}


class UMAPKMeansBaseline(_PixelBaseline):
    """UMAP of the pixels (or PCA features) to ``n_components`` dimensions, then k-means: N2D's recipe
    (McConville et al., 2020) without its autoencoder and with k-means for its GMM, a much stronger reference
    than pixel k-means on digits (mnist_test: 0.79 against 0.54, benchmarks/RESULTS.md "A stronger reference").
    The fitted UMAP is pickled into the model's state with the fit set's features (fmnist's model.pt: ~0.5 GB;
    ``pca_components`` shrinks it). Fit-set rows get their fitted coordinates' labels; new data goes through
    ``umap.transform`` + the nearest center."""

    def __init__(self, n_clusters: int, img_shape: Sequence[int], pca_components: int | None = None,
                 n_neighbors: int | str = 15, n_components: int = 10, min_dist: float = 0.0, n_init: int = 10,
                 batch_size: int = 256, pixel_range: str = "unit") -> None:
        super().__init__(n_clusters, img_shape, pca_components, batch_size, pixel_range)
        self.save_hyperparameters()
        if int(n_components) < 1:
            raise ConfigError(f"n_components must be >= 1, got {n_components}")
        self.umap_kmeans = UMAPKMeansReadout(n_clusters, embedding="pixels", n_neighbors=n_neighbors,
                                             n_components=n_components, min_dist=min_dist, n_init=n_init)

    def _fit(self, features: np.ndarray, seed: int) -> None:
        # the run's seed for UMAP's random_state and k-means'; predictions never read it (reducer, centers: state)
        self.umap_kmeans.seed = seed
        self.umap_kmeans.fit(torch.as_tensor(features))

    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        if idx is not None:  # fit-set rows: their fitted coordinates, whichever batch they come in
            return self.umap_kmeans.fit_rows(idx)[0].to(x.device)
        return self.umap_kmeans(self.features(x).cpu())[0].to(x.device)

    def describe(self) -> dict:
        r = self.umap_kmeans
        used = r.describe().get("umap_n_neighbors")  # as fitted: the setting is capped at N - 1 on small sets
        return {"baseline": "umap_kmeans", "pca_components": self.pca_components,
                "n_neighbors": r.n_neighbors if used is None else used,
                "n_components": r.n_components, "min_dist": r.min_dist, "n_init": r.n_init}
