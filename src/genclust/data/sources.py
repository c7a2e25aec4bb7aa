"""Dataset sources: functions returning ``{part: (x, y)}`` with float32 ``x`` and int64 ``y``.

Images are ``[N, C, H, W]`` in [0, 1] (the datamodule maps them to the method's pixel range);
vector sets are ``[N, D]`` as generated. A dataset config names its source with ``_target_``
and passes the remaining keys; ``data_dir`` and ``download`` are filled in by the datamodule
for the sources that read files.

Image files are looked up, in order (DESIGN.md "Data"):
  1. ``<data_dir>/<TorchvisionName>/raw/``  (torchvision's layout, e.g. ``MNIST/raw``)
  2. ``<data_dir>/<folder>/``               (flat ``*-ubyte.gz`` files: ``mnist/``, ``fashion-mnist/``)
  3. ``<data_dir>/``
  4. Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``; FMNIST only)
  5. the Fashion-MNIST *test* set bundled with the package (``genclust/data/bundled/fashion-mnist``, MIT
     license): the default run has real images on a fresh, offline machine
  6. a torchvision download into ``<data_dir>`` when ``download`` is true (needs internet).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genclust.data.idx import read_idx
from genclust.errors import DataError

log = logging.getLogger(__name__)

Parts = dict[str, tuple[np.ndarray, np.ndarray]]

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# (torchvision class name, flat folder name, Debian folder)
IDX_SETS = {"mnist": ("MNIST", "mnist", None),
            "fashion_mnist": ("FashionMNIST", "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))}
# Shipped with the package (4.4 MB, MIT): the Fashion-MNIST test part only, last in the lookup so that a user's
# own files win. The training part (26 MB) is not bundled.
BUNDLED = {"fashion_mnist": Path(__file__).resolve().parent / "bundled" / "fashion-mnist"}
# ClusterGAN supplementary "Fashion-5": {T-shirt/top, Dress}, {Trouser}, {Pullover, Coat, Shirt}, {Bag},
# {Sandal, Sneaker, Ankle boot}; group i becomes label i.
FASHION_5_GROUPS = ((0, 3), (1,), (2, 4, 6), (8,), (5, 7, 9))


# The first ten labels of each official part: MNIST and Fashion-MNIST share file names and shapes, so the files
# read (from whichever folder: data_dir itself is searched too) are checked against the other set's signature.
LABEL_SIGNATURES = {("mnist", "test"): (7, 2, 1, 0, 4, 1, 4, 9, 5, 9),
                    ("mnist", "train"): (5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
                    ("fashion_mnist", "test"): (9, 2, 1, 1, 6, 1, 4, 6, 5, 7),
                    ("fashion_mnist", "train"): (9, 0, 0, 3, 0, 2, 7, 2, 5, 5)}
PART_SIZES = {"test": 10_000, "train": 60_000}


def _check_identity(which: str, part: str, labels: np.ndarray, path: Path) -> None:
    """A DataError when ``labels`` are the official files of the *other* set (MNIST for Fashion-MNIST or back)."""
    if len(labels) != PART_SIZES[part]:
        return
    head = tuple(int(v) for v in labels[:10])
    for other in IDX_SETS:
        if other != which and head == LABEL_SIGNATURES[(other, part)]:
            raise DataError(f"the IDX files read for {which} {part} ({path}) are {other}'s: put each set in its own "
                            f"folder ({IDX_SETS[which][1]}/ or {IDX_SETS[which][0]}/raw/ under the data folder)")


def _find_file(folders: Sequence[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _candidate_folders(data_dir: Path, which: str) -> list[Path]:
    tv_name, flat, debian = IDX_SETS[which]
    folders = [data_dir / tv_name / "raw", data_dir / flat, data_dir]
    if debian is not None:
        folders.append(debian)
    if which in BUNDLED:
        folders.append(BUNDLED[which])
    return folders


def _torchvision_download(data_dir: Path, which: str, part: str) -> None:
    import torchvision

    cls = getattr(torchvision.datasets, IDX_SETS[which][0])
    cls(root=str(data_dir), train=part == "train", download=True)


def load_idx_part(which: str, part: str, data_dir: str | Path = "data", download: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 1, 28, 28] float32 in [0, 1], labels [N] int64) of one part of MNIST / Fashion-MNIST."""
    if part not in IDX_NAMES:
        raise DataError(f"unknown part '{part}' of {which}; parts: {', '.join(IDX_NAMES)}")
    data_dir = Path(data_dir).expanduser()
    folders = _candidate_folders(data_dir, which)
    img_stem, lbl_stem = IDX_NAMES[part]
    images, labels = _find_file(folders, img_stem), _find_file(folders, lbl_stem)
    download_error = None
    if (images is None or labels is None) and download:
        try:
            log.info("%s %s not found locally: trying a torchvision download into %s", which, part, data_dir)
            _torchvision_download(data_dir, which, part)
        except Exception as err:  # offline, proxy, partial file: reported below in one line
            download_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        images, labels = _find_file(folders, img_stem), _find_file(folders, lbl_stem)
    if images is None or labels is None:
        missing = img_stem if images is None else lbl_stem
        tried = "; download " + ("failed (" + download_error + ")" if download_error else "disabled")
        raise DataError(f"{which} {part} files not found ({missing}[.gz]); looked in "
                        f"{', '.join(str(f) for f in folders)}{tried}. Fix: set GENCLUST_DATA_DIR (or "
                        f"paths.data_dir=...) to a folder holding the IDX files, or run once online "
                        f"with paths.download=true")
    x, y = read_idx(images), read_idx(labels)
    log.info("%s %s: %s", which, part, images)
    if y.ndim == 1:
        _check_identity(which, part, y, labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"corrupt {which} '{part}': images {x.shape} and labels {y.shape} do not match "
                        f"({images}, {labels}). Fix: delete them and download them again")
    return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)


def mnist(data_dir: str | Path = "data", download: bool = False, parts: Sequence[str] = ("train", "test")) -> Parts:
    """MNIST parts (60k train, 10k test)."""
    return {p: load_idx_part("mnist", p, data_dir, download) for p in parts}


def fashion_mnist(data_dir: str | Path = "data", download: bool = False, parts: Sequence[str] = ("train", "test"),
                  merge_to_five: bool = False) -> Parts:
    """Fashion-MNIST parts; ``merge_to_five`` relabels to ClusterGAN's 5 groups."""
    out = {p: load_idx_part("fashion_mnist", p, data_dir, download) for p in parts}
    if merge_to_five:
        mapping = np.empty(10, dtype=np.int64)
        for group, members in enumerate(FASHION_5_GROUPS):
            mapping[list(members)] = group
        out = {p: (x, mapping[y]) for p, (x, y) in out.items()}
    return out


def _split(x: np.ndarray, y: np.ndarray, train_fraction: float, seed: int) -> Parts:
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = int(round(train_fraction * len(x)))
    tr, te = order[:n_train], order[n_train:]
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te])}


def held_out_split(which: str = "mnist", data_dir: str | Path = "data", download: bool = False,
                   base_part: str = "test", train_fraction: float = 0.8, seed: int = 0) -> Parts:
    """One IDX part (``which``: mnist | fashion_mnist) split ``train_fraction`` / rest with a fixed permutation:
    a train/held-out protocol on the files every machine has (e.g. 8k / 2k of the MNIST test set)."""
    if which not in ("mnist", "fashion_mnist"):
        raise DataError(f"held_out_split: which must be mnist or fashion_mnist, got {which!r}")
    return _split(*load_idx_part(which, base_part, data_dir, download), train_fraction, seed)


def artifact_mnist(data_dir: str | Path = "data", download: bool = False, base_part: str = "test",
                   train_fraction: float = 0.8, levels: Sequence[float] = (0.1, 0.5, 0.9), seed: int = 0,
                   base: str = "mnist") -> Parts:
    """UDC §IV-D Artifact-MNIST: pixel (0, 0) set to one of ``levels`` at random; the level is the label.

    The digit identity is deliberately *not* the label: a method must find the one-pixel cue.
    Built from one MNIST part (``base="digits"``: scikit-learn's 1,797 8x8 scans instead, a CPU-scale
    version; their pixel (0, 0) is always 0) and split ``train_fraction`` / rest with a fixed permutation.
    """
    if base == "mnist":
        x, _ = load_idx_part("mnist", base_part, data_dir, download)
    elif base == "digits":
        x, _ = _all_digits()
    else:
        raise DataError(f"artifact base must be 'mnist' or 'digits', got {base!r}")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(levels), len(x)).astype(np.int64)
    x = x.copy()
    x[:, 0, 0, 0] = np.asarray(levels, dtype=np.float32)[y]
    return _split(x, y, train_fraction, seed)


def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as [N, 1, 8, 8] floats in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images.astype(np.float32) / 16.0)[:, None], bunch.target.astype(np.int64)


def digits(train_fraction: float = 0.8, seed: int = 0) -> Parts:
    """scikit-learn's bundled 8x8 digits (1,797 real scans, 16 grey levels), split train/test."""
    return _split(*_all_digits(), train_fraction, seed)


def clustergan_gaussians(n_per_component: int = 2500, n_test_per_component: int = 500, std: float = 0.3,
                         seed: int = 0) -> Parts:
    """ClusterGAN §4.1: 4 Gaussians in 2-D lifted to R^100 by x = f(U f(W z)), f = sigmoid.

    W in R^{10x2} and U in R^{100x10} have N(0, 1) entries (paper); the means (corners of
    [-1, 1]^2) and ``std`` are ours — the paper does not give them. Same W, U for both parts.
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((10, 2))
    u = rng.standard_normal((100, 10))
    means = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])

    def sigmoid(a: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-a))

    def draw(n_each: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(4), n_each)
        z = means[y] + std * rng.standard_normal((len(y), 2))
        x = sigmoid(sigmoid(z @ w.T) @ u.T)
        order = rng.permutation(len(y))
        return x[order].astype(np.float32), y[order].astype(np.int64)

    return {"train": draw(n_per_component), "test": draw(n_test_per_component)}


UDC_BLOB_CENTERS = ((1.414, 0.0), (-1.414, 0.0), (0.0, 1.414), (0.0, -1.414),
                    (1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, -1.0))


def udc_blobs(n_train: int = 40000, n_test: int = 8000, std: float = 0.014, seed: int = 0) -> Parts:
    """UDC §IV-B: 8 isotropic Gaussian blobs (the paper's centres, std 0.014), blob id uniform."""
    rng = np.random.default_rng(seed)
    centers = np.asarray(UDC_BLOB_CENTERS)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, len(centers), n)
        x = centers[y] + std * rng.standard_normal((n, 2))
        return x.astype(np.float32), y.astype(np.int64)

    return {"train": draw(n_train), "test": draw(n_test)}


__all__ = ["mnist", "fashion_mnist", "artifact_mnist", "digits", "clustergan_gaussians", "udc_blobs",
           "load_idx_part", "FASHION_5_GROUPS", "UDC_BLOB_CENTERS"]
