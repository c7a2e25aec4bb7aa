"""The one in-memory LightningDataModule every method trains on.

* Whole datasets live as tensors (MNIST-scale); a batch is one index slice of them
  (``__getitems__``), not per-item ``__getitem__`` + collate.
* Training batches are ``(x, idx)``: labels never reach training code. ``idx`` is the
  example's position in ``fit_set`` (per-example state and DDP gathering are keyed by it).
* Weighted sampling is a sampler hook: when the training module's ``sampling_weights()`` returns
  weights ``w`` (HC-MGAN's P_{s_k}), batches are i.i.d. draws with replacement in proportion to ``w``,
  an epoch being ``floor(sum(w) / batch)`` batches (authors' code); ``set_sample_weights(w)`` sets
  them by hand (tests, scripts). None: uniform shuffling.
* ``eval_sets`` (split -> :class:`TensorSet` with labels) are what the evaluator scores;
  ``protocol()`` states which parts were clustered and which were scored.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from genclust.errors import ConfigError, DataError

PIXEL_RANGES = ("unit", "tanh")


def is_whole_number(value: Any) -> bool:
    """True for 3, 3.0, "3"; False for 1.5, "ten", None and booleans (a K must be a count)."""
    try:
        return not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):
        return False


def content_digest(x: Tensor | np.ndarray) -> str:
    """shape, dtype and SHA-1 of an array's bytes: which data a run was fitted on (two datasets with the same
    name and shape, e.g. MNIST and Fashion-MNIST files in one folder, differ here)."""
    import hashlib

    a = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x)
    return f"{list(a.shape)}|{a.dtype}|{hashlib.sha1(a.tobytes()).hexdigest()}"


@dataclass
class TensorSet:
    """Examples ``x``, labels ``y`` (evaluation only) and dataset indices ``idx``."""

    x: Tensor
    y: Tensor
    idx: Tensor

    def __len__(self) -> int:
        return len(self.x)


class _IndexedTensor(Dataset):
    """``x`` as a dataset whose batched fetch is one tensor index: returns ``(x[idx], idx)``."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], torch.tensor(i)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], idx


def _keep_batch(batch: Any) -> Any:
    """collate_fn: ``__getitems__`` already returns the batch (module-level: picklable for workers)."""
    return batch


def resolve_source(target: str):
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"dataset source '{target}' cannot be imported: {err}") from err


class ClusteringDataModule(pl.LightningDataModule):
    """In-memory tensors for one dataset config (``configs/dataset/<name>.yaml``)."""

    def __init__(self, dataset: Mapping[str, Any], batch_size: int = 64, pixel_range: str = "unit",
                 data_dir: str = "data", download: bool = True, num_workers: int = 0, drop_last: bool = True) -> None:
        super().__init__()
        if pixel_range not in PIXEL_RANGES:
            raise ConfigError(f"pixel_range must be one of {PIXEL_RANGES}, got {pixel_range!r}")
        self.config = dict(dataset)
        for key in ("name", "n_clusters", "img_shape", "source", "fit_on", "evaluate_on"):
            if key not in self.config:
                raise ConfigError(f"dataset config lacks '{key}'")
        self.name = str(self.config["name"])
        self.kind = str(self.config.get("kind", "image" if len(self.config["img_shape"]) == 3 else "vector"))
        k = self.config["n_clusters"]
        if not is_whole_number(k):
            raise ConfigError(f"dataset '{self.name}': n_clusters must be a whole number, got {k}")
        self.n_clusters = int(k)
        self.img_shape = tuple(int(s) for s in self.config["img_shape"])
        self.fit_on = [str(p) for p in self.config["fit_on"]]
        self.evaluate_on = {str(k): [str(p) for p in v] for k, v in dict(self.config["evaluate_on"]).items()}
        self.batch_size = int(batch_size)
        self.pixel_range = pixel_range
        self.data_dir = str(data_dir)
        self.download = bool(download)
        self.num_workers = int(num_workers)
        self.drop_last = bool(drop_last)
        self.fit_set: TensorSet | None = None
        self.eval_sets: dict[str, TensorSet] = {}
        self.sample_weights: Tensor | None = None

    # ------------------------------------------------------------------ loading
    def _load_parts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        source = dict(self.config["source"])
        fn = resolve_source(str(source.pop("_target_")))
        params = inspect.signature(fn).parameters
        if "data_dir" in params:
            source.setdefault("data_dir", self.data_dir)
        if "download" in params:
            source.setdefault("download", self.download)
        parts = fn(**source)
        needed = set(self.fit_on).union(*self.evaluate_on.values())
        missing = needed - set(parts)
        if missing:
            raise ConfigError(f"dataset '{self.name}': source gives parts {sorted(parts)}, config asks for "
                              f"{sorted(missing)}")
        return parts

    def _to_tensor(self, x: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if tuple(t.shape[1:]) != self.img_shape:
            raise DataError(f"dataset '{self.name}': examples have shape {tuple(t.shape[1:])}, config img_shape "
                            f"says {list(self.img_shape)}")
        if self.kind == "image" and self.pixel_range == "tanh":
            t = t * 2.0 - 1.0  # [0, 1] -> [-1, 1] for tanh generators
        return t

    def _concat(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], names: Sequence[str]) -> TensorSet:
        x = np.concatenate([parts[n][0] for n in names]) if len(names) > 1 else parts[names[0]][0]
        y = np.concatenate([parts[n][1] for n in names]) if len(names) > 1 else parts[names[0]][1]
        return TensorSet(self._to_tensor(x), torch.from_numpy(np.asarray(y, dtype=np.int64)),
                         torch.arange(len(x), dtype=torch.long))

    def setup(self, stage: str | None = None) -> None:
        if self.fit_set is not None:
            return  # loaded once: Lightning calls setup per fit, HC-MGAN fits many times
        if self.n_clusters < 1:
            raise ConfigError(f"dataset '{self.name}': n_clusters must be >= 1, got {self.n_clusters}")
        parts = self._load_parts()
        built: dict[tuple[str, ...], TensorSet] = {}
        for names in [tuple(self.fit_on), *map(tuple, self.evaluate_on.values())]:
            if names not in built:  # the same parts share one tensor (70k images are held once)
                built[names] = self._concat(parts, names)
        self.fit_set = built[tuple(self.fit_on)]
        self.eval_sets = {split: built[tuple(names)] for split, names in self.evaluate_on.items()}
        if len(self.fit_set) == 0:
            raise DataError(f"dataset '{self.name}' has no examples to fit on")

    # ----------------------------------------------------------------- sampling
    def set_sample_weights(self, weights: Tensor | None) -> None:
        """Draw training batches in proportion to ``weights`` (None: uniform shuffling)."""
        self.sample_weights = None if weights is None else self._checked_weights(weights)

    def _checked_weights(self, weights: Tensor) -> Tensor:
        assert self.fit_set is not None, "call setup() first"
        w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().flatten()
        if len(w) != len(self.fit_set):
            raise ValueError(f"{len(w)} sample weights for {len(self.fit_set)} examples")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0.0:
            raise ValueError("sample weights must be finite, non-negative and not all zero")
        return w

    def current_weights(self) -> Tensor | None:
        """The sampling weights in force: the training module's ``sampling_weights()`` hook, else the
        ones set by hand (``set_sample_weights``), else None (uniform)."""
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        hook = getattr(module, "sampling_weights", None)
        weights = hook() if callable(hook) else None
        return self._checked_weights(weights) if weights is not None else self.sample_weights

    def batches_per_epoch(self, weights: Tensor | None = None) -> int:
        """Batches in one epoch (with ``weights``, or the weights in force)."""
        assert self.fit_set is not None, "call setup() first"
        weights = self.current_weights() if weights is None else weights
        if weights is not None:
            return max(1, math.floor(float(weights.sum()) / self.batch_size))
        n = len(self.fit_set)
        return max(1, n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size))

    def train_dataloader(self) -> DataLoader:
        assert self.fit_set is not None, "call setup() first"
        dataset = _IndexedTensor(self.fit_set.x)
        weights = self.current_weights()
        if weights is not None:
            n_draws = self.batches_per_epoch(weights) * self.batch_size
            sampler = WeightedRandomSampler(weights, n_draws, replacement=True)
        else:
            sampler = RandomSampler(dataset)
        # a set smaller than one batch still trains (one short batch) instead of silently skipping
        drop_last = self.drop_last and len(self.fit_set) >= self.batch_size
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
                          collate_fn=_keep_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    # ---------------------------------------------------------------- reporting
    def protocol(self) -> dict[str, Any]:
        """Which parts were clustered and which were scored (recorded in every metrics.json)."""
        assert self.fit_set is not None, "call setup() first"
        return {
            "dataset": self.name,
            "n_clusters": self.n_clusters,
            "fit_on": list(self.fit_on),
            "n_fit": len(self.fit_set),
            "evaluate_on": {split: {"parts": list(self.evaluate_on[split]), "n": len(data)}
                            for split, data in self.eval_sets.items()},
            "pixel_range": self.pixel_range if self.kind == "image" else "raw",
            "labels_used_for_training": False,
            "model_selection": "the last training step; no label-based selection",
            "source": {k: v for k, v in self.config["source"].items() if k not in ("data_dir",)},
        }


__all__ = ["ClusteringDataModule", "TensorSet", "PIXEL_RANGES"]
