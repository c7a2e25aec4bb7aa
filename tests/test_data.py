"""Data: IDX reader, sources, datamodule batches, weighted sampling, errors."""

import gzip
import struct

import numpy as np
import pytest
import torch

from genclust.data import ClusteringDataModule
from genclust.data.idx import read_idx
from genclust.data.sources import FASHION_5_GROUPS, artifact_mnist, clustergan_gaussians, digits, udc_blobs
from genclust.errors import DataError
from tests.helpers import DATA_DIR, requires_fmnist, requires_mnist_test


def write_idx(path, array, compress=True, corrupt=None):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if corrupt == "magic":
        payload = b"\x01" + payload[1:]
    if corrupt == "truncate":
        payload = payload[:-5]
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def fake_mnist(folder, n=12, compress=True, corrupt=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), compress, corrupt)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.arange(n) % 10, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    path = tmp_path / ("a.gz" if compress else "a")
    write_idx(path, arr, compress)
    np.testing.assert_array_equal(read_idx(path), arr)


@pytest.mark.parametrize("corrupt", ["magic", "truncate"])
def test_corrupt_idx_is_a_clear_error(tmp_path, corrupt):
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros((2, 3, 3)), corrupt=corrupt)
    with pytest.raises(DataError, match="corrupt"):
        read_idx(path)


def test_damaged_gzip_payload_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.arange(4096).reshape(64, 64) % 256)
    raw = bytearray(path.read_bytes())
    raw[20:40] = b"\xff" * 20  # valid gzip header, damaged deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)


def test_not_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"this is no gzip stream")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)


def make_dm(dataset, batch_size=16, pixel_range="unit", data_dir="unused"):
    dm = ClusteringDataModule(dataset, batch_size=batch_size, pixel_range=pixel_range, data_dir=str(data_dir),
                              download=False)
    dm.setup("fit")
    return dm


MNIST_TEST = {"name": "mnist_test", "n_clusters": 10, "img_shape": [1, 28, 28],
              "source": {"_target_": "genclust.data.sources.mnist", "parts": ["test"]},
              "fit_on": ["test"], "evaluate_on": {"test": ["test"]}}
DIGITS = {"name": "digits", "n_clusters": 10, "img_shape": [1, 8, 8],
          "source": {"_target_": "genclust.data.sources.digits"}, "fit_on": ["train"],
          "evaluate_on": {"train": ["train"], "test": ["test"]}}


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_idx_layouts_are_found(tmp_path, layout):
    fake_mnist(tmp_path / ("mnist" if layout == "flat" else "MNIST/raw"), compress=layout == "flat")
    dm = make_dm(MNIST_TEST, batch_size=4, data_dir=tmp_path)
    assert dm.fit_set.x.shape == (12, 1, 28, 28)
    assert 0.0 <= float(dm.fit_set.x.min()) and float(dm.fit_set.x.max()) <= 1.0


def test_missing_files_name_where_looked_and_fix(tmp_path):
    with pytest.raises(DataError, match=r"looked in .*Fix: set GENCLUST_DATA_DIR"):
        make_dm(MNIST_TEST, data_dir=tmp_path)


def test_bundled_fashion_mnist_test_set_needs_no_data_dir(tmp_path, monkeypatch):
    # the default run's data: found with an empty data dir (and no Debian package), train part still missing
    from genclust.data import sources

    monkeypatch.setitem(sources.IDX_SETS, "fashion_mnist", ("FashionMNIST", "fashion-mnist", None))
    x, y = sources.load_idx_part("fashion_mnist", "test", tmp_path)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [1000] * 10
    with pytest.raises(DataError, match="fashion_mnist train files not found"):
        sources.load_idx_part("fashion_mnist", "train", tmp_path)


def test_corrupt_dataset_file_is_reported(tmp_path):
    fake_mnist(tmp_path / "mnist", corrupt="truncate")
    with pytest.raises(DataError, match="corrupt"):
        make_dm(MNIST_TEST, data_dir=tmp_path)


def test_training_batches_carry_no_labels_and_pixel_range():
    dm = make_dm(DIGITS, batch_size=32, pixel_range="tanh")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 2, "training batches are (x, idx): labels never reach training code"
    x, idx = batch
    assert x.shape == (32, 1, 8, 8) and idx.dtype == torch.long
    torch.testing.assert_close(x, dm.fit_set.x[idx])
    assert float(dm.fit_set.x.min()) == -1.0
    assert len(dm.train_dataloader()) == len(dm.fit_set) // 32


def test_weighted_sampling_follows_membership():
    dm = make_dm(DIGITS, batch_size=50)
    weights = torch.zeros(len(dm.fit_set))
    weights[:300] = 1.0  # only the first 300 examples have mass
    dm.set_sample_weights(weights)
    assert dm.batches_per_epoch() == 300 // 50
    seen = torch.cat([idx for _, idx in dm.train_dataloader()])
    assert len(seen) == 300 and int(seen.max()) < 300
    with pytest.raises(ValueError):
        dm.set_sample_weights(torch.zeros(len(dm.fit_set)))


def test_digits_split_is_fixed_and_disjoint():
    a, b = digits(), digits()
    np.testing.assert_array_equal(a["train"][0], b["train"][0])
    assert len(a["train"][0]) + len(a["test"][0]) == 1797


def test_synthetic_sets():
    g = clustergan_gaussians()
    assert g["train"][0].shape == (10000, 100) and set(np.unique(g["train"][1])) == {0, 1, 2, 3}
    b = udc_blobs(n_train=800, n_test=80)
    assert b["train"][0].shape == (800, 2) and b["train"][1].max() <= 7


@requires_mnist_test
def test_real_mnist_test_set():
    dm = make_dm({**MNIST_TEST}, data_dir=DATA_DIR)
    assert dm.fit_set.x.shape == (10000, 1, 28, 28)
    assert np.bincount(dm.eval_sets["test"].y.numpy()).tolist()[:3] == [980, 1135, 1032]


@requires_mnist_test
def test_artifact_mnist_labels_are_the_artifact():
    parts = artifact_mnist(DATA_DIR, download=False)
    x, y = parts["train"]
    levels = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    np.testing.assert_allclose(x[:, 0, 0, 0], levels[y])
    assert len(parts["train"][0]) == 8000 and len(parts["test"][0]) == 2000


def test_artifact_digits_labels_are_the_artifact():
    parts = artifact_mnist(base="digits")  # CPU-scale version on the bundled 8x8 scans: no files needed
    x, y = parts["train"]
    levels = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    np.testing.assert_allclose(x[:, 0, 0, 0], levels[y])
    assert x.shape[1:] == (1, 8, 8) and len(x) + len(parts["test"][0]) == 1797
    plain = digits()["train"][0]  # same scans, same split; their pixel (0, 0) is always 0
    assert not plain[:, 0, 0, 0].any()
    x = x.copy()
    x[:, 0, 0, 0] = 0.0
    np.testing.assert_array_equal(x, plain)  # only the corner pixel differs
    with pytest.raises(DataError, match="artifact base"):
        artifact_mnist(base="cifar")


@requires_fmnist
def test_fmnist5_grouping():
    dm = make_dm({"name": "fmnist5", "n_clusters": 5, "img_shape": [1, 28, 28],
                  "source": {"_target_": "genclust.data.sources.fashion_mnist", "parts": ["test"],
                             "merge_to_five": True},
                  "fit_on": ["test"], "evaluate_on": {"test": ["test"]}}, data_dir=DATA_DIR)
    counts = np.bincount(dm.eval_sets["test"].y.numpy())
    assert counts.tolist() == [1000 * len(g) for g in FASHION_5_GROUPS]


def test_files_of_the_other_set_in_the_data_folder_itself_are_refused(tmp_path):
    """MNIST and Fashion-MNIST share file names: Fashion's files loose in data_dir are not MNIST."""
    import shutil

    from genclust.data.sources import BUNDLED, load_idx_part

    for f in BUNDLED["fashion_mnist"].glob("t10k-*.gz"):
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(DataError, match="are fashion_mnist's"):
        load_idx_part("mnist", "test", tmp_path)
    x, y = load_idx_part("fashion_mnist", "test", tmp_path)  # the right name: read
    assert x.shape == (10_000, 1, 28, 28) and y[:3].tolist() == [9, 2, 1]
