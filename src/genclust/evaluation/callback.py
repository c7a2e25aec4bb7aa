"""The one evaluation callback every method shares.

It predicts through the method contract (``assign``) on every eval set, gathers the
predictions across DDP ranks *by dataset index* (so the duplicates a padded shard adds are
dropped), computes the metrics identically on every rank, and logs ``eval/<split>/<metric>``
from rank zero. The final evaluation also writes ``metrics.json``, ``assignments.npz``, a
confusion matrix per split and, for generative methods, a per-cluster sample grid.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from genclust.data.datamodule import ClusteringDataModule, TensorSet
from genclust.evaluation.metrics import (
    DEFINITIONS,
    UNSUPERVISED_DEFINITIONS,
    clustering_report,
    contingency,
    hungarian_match,
    internal_validity,
)
from genclust.methods.base import ClusteringMethod

log = logging.getLogger(__name__)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def predict_set(module: ClusteringMethod, data: TensorSet, batch_size: int = 1024,
                fit_set: TensorSet | None = None) -> dict[str, Tensor]:
    """Every assignment (``probs``, ``labels``, ``<readout>/labels``, ...) of every example of ``data``, in index
    order, on every rank. ``fit_set``: when ``data`` is the fit set, the method also gets each row's fit-set
    index (``idx``; methods with per-example state score training examples from it).

    Under DDP each rank predicts a strided shard padded to equal length (as a DistributedSampler does),
    the shards are all-gathered with their dataset indices, and the padded duplicates are dropped by
    index: the result equals single-process prediction.
    """
    rank, world = _dist_info()
    n = len(data)
    is_fit = fit_set is not None and data.x is fit_set.x
    if world == 1:
        return module.predict_in_batches(data.x, data.idx if is_fit else None, batch_size)
    per_rank = math.ceil(n / world)
    positions = torch.arange(rank, n, world)
    if len(positions) < per_rank:  # pad with a repeat, like DistributedSampler(drop_last=False)
        positions = torch.cat([positions, positions[: per_rank - len(positions)]])
    local = module.predict_in_batches(data.x[positions], data.idx[positions] if is_fit else None, batch_size)
    # NCCL gathers CUDA tensors only (the module may sit on the CPU after Lightning's teardown)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = {}
    for name, t in (("idx", data.idx[positions]), *sorted(local.items())):
        t = t.to(device).contiguous()
        bucket = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(bucket, t)
        gathered[name] = torch.cat(bucket).cpu()
    idx = gathered.pop("idx")
    order = torch.argsort(idx, stable=True)
    idx_sorted = idx[order]
    first = torch.ones_like(idx_sorted, dtype=torch.bool)
    first[1:] = idx_sorted[1:] != idx_sorted[:-1]
    keep = order[first]
    if len(keep) != n:
        raise RuntimeError(f"gathered {len(keep)} unique indices for {n} examples")
    return {k: v[keep] for k, v in gathered.items()}


@torch.no_grad()
def score_modes(module: ClusteringMethod, data: TensorSet, n_per_mode: int = 100,
                n_reference: int = 10000) -> dict[str, float]:
    """How well a generator's modes map onto the classes (a diagnostic; labels for evaluation only).

    ``n_per_mode`` samples of every mode (cluster id) are each labelled with the class of their nearest
    real image (pixel L2, the first ``n_reference`` images of ``data``); the report compares mode ids with
    those classes: ``acc`` (Hungarian, one mode per class), ``purity``, ``nmi``. Read beside the
    clustering ACC of real data: pure modes with a low ACC point at the encoder/classifier's transfer from
    generated to real images, impure modes at the generator. Training's RNG stream is left untouched.
    """
    samples, modes = [], []
    cuda = [module.device.index or 0] if module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        for k in range(module.n_clusters):
            try:
                x = module.sample(n_per_mode, cluster=k)
            except ValueError:  # a growing tree (HC-MGAN mid-run) has fewer leaves than n_clusters
                break
            if x is None:
                break
            samples.append(x.detach().float().flatten(1).cpu())
            modes.append(torch.full((len(x),), k, dtype=torch.long))
    if not samples:
        return {}
    generated = torch.cat(samples)
    reference = data.x[:n_reference].float().flatten(1)
    nearest = torch.cat([torch.cdist(chunk, reference).argmin(1) for chunk in generated.split(500)])
    report = clustering_report(data.y[:n_reference][nearest].numpy(), torch.cat(modes).numpy())
    result = {k: report[k] for k in ("acc", "purity", "nmi")}
    # label-free: does the method put mode k's samples back into cluster k? (a sweep may select on it)
    try:
        with torch.random.fork_rng(devices=cuda):
            back = module.predict_in_batches(generated.view(-1, *data.x.shape[1:]))["labels"]
        result["consistency"] = float((back == torch.cat(modes)).float().mean())
    except Exception as err:  # noqa: BLE001 - a method without a primary assignment of new images
        log.debug("modes/consistency skipped: %s", err)
    return result


class ClusteringEvaluator(Callback):
    """Evaluates every ``every_n_epochs`` epochs during training and once at the end."""

    def __init__(self, every_n_epochs: int = 1, batch_size: int = 1024, output_dir: str | None = None,
                 save_figures: bool = True, samples_per_cluster: int = 10, mode_samples: int = 100,
                 mode_reference: int = 10000, validity: bool = True) -> None:
        super().__init__()
        self.validity = bool(validity)  # silhouette / Calinski-Harabasz / Davies-Bouldin per split
        self.mode_samples = int(mode_samples)
        self.mode_reference = int(mode_reference)
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.output_dir = Path(output_dir) if output_dir else None
        self.save_figures = save_figures
        self.samples_per_cluster = int(samples_per_cluster)
        self.history: list[dict[str, Any]] = []
        self.started = time.perf_counter()  # time-to-accuracy is measured from the run's start

    # ------------------------------------------------------------ evaluation
    def evaluate(self, module: ClusteringMethod, datamodule: ClusteringDataModule
                 ) -> tuple[dict[str, float], dict[str, dict[str, Tensor]]]:
        """Metrics ``{eval/<split>/<metric>: value}`` (read-outs: ``eval/<split>/<readout>/<metric>``) and
        predictions ``{split: {probs, labels, <readout>/labels, ...}}``."""
        metrics: dict[str, float] = {}
        predictions: dict[str, dict[str, Tensor]] = {}
        sync = getattr(module, "sync_example_state", None)
        if callable(sync):  # per-example state written on other DDP ranks (a collective: every rank runs it)
            sync()
        for split, data in datamodule.eval_sets.items():
            pred = predict_set(module, data, self.batch_size, datamodule.fit_set)
            predictions[split] = pred
            y = data.y.numpy()
            for key, value in clustering_report(y, pred["labels"].numpy()).items():
                metrics[f"eval/{split}/{key}"] = value
            if self.validity:  # label-free indices on the pixels (what a sweep may optimise)
                for key, value in internal_validity(data.x.numpy(), pred["labels"].numpy()).items():
                    metrics[f"eval/{split}/{key}"] = value
            for name in module.readouts:
                if f"{name}/labels" in pred:
                    report = clustering_report(y, pred[f"{name}/labels"].numpy())
                    if self.validity:
                        report.update(internal_validity(data.x.numpy(), pred[f"{name}/labels"].numpy()))
                    metrics.update({f"eval/{split}/{name}/{k}": v for k, v in report.items()})
        primary = next(iter(datamodule.eval_sets))
        if self.mode_samples > 0 and module.generative and datamodule.kind == "image":
            modes = score_modes(module, datamodule.eval_sets[primary], self.mode_samples, self.mode_reference)
            metrics.update({f"eval/{primary}/modes/{k}": v for k, v in modes.items()})
        return metrics, predictions

    def _log(self, loggers: Iterable[Any], metrics: Mapping[str, float], step: int) -> None:
        if _dist_info()[0] != 0:
            return
        for logger in loggers:
            logger.log_metrics(dict(metrics), step=step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs <= 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ClusteringDataModule) or not isinstance(pl_module, ClusteringMethod):
            return
        if pl_module.clustering != "argmax":  # a read-out as the primary assignment follows the model: refit it
            pl_module.fit_readouts(datamodule.fit_set.x, self.batch_size)  # explicitly, on the fit set
        metrics, _ = self.evaluate(pl_module, datamodule)
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                  "elapsed_s": round(time.perf_counter() - self.started, 2), **metrics}
        self.history.append(record)
        self._log(trainer.loggers, metrics, trainer.global_step)
        primary = next(iter(datamodule.eval_sets))
        log.info("epoch %d: %s", trainer.current_epoch,
                 " ".join(f"{k}={metrics[f'eval/{primary}/{k}']:.4f}" for k in ("acc", "nmi", "ari")))

    # ------------------------------------------------------------------ final
    def final(self, module: ClusteringMethod, datamodule: ClusteringDataModule, loggers: Iterable[Any] = (),
              extra: Mapping[str, Any] | None = None, step: int = 0) -> dict[str, Any]:
        """Final evaluation: metrics.json, assignments.npz and figures in ``output_dir`` (rank zero)."""
        loggers = list(loggers)
        metrics, predictions = self.evaluate(module, datamodule)
        curve = self.per_k_curve(module, metrics, datamodule)
        primary = next(iter(datamodule.eval_sets))
        result: dict[str, Any] = {k: metrics[f"eval/{primary}/{k}"] for k in
                                  ("acc", "nmi", "ari", "purity", "mean_class_acc", "fraction_labeled",
                                   "acc_labeled", "clusters_found")}
        result.update(metrics)
        result["primary_split"] = primary
        result.update(extra or {})
        result["protocol"] = datamodule.protocol()
        result["method_info"] = module.describe()
        if len(module.readouts):
            result["readouts"] = module.readout_info()
        result["metric_definitions"] = {**DEFINITIONS, **UNSUPERVISED_DEFINITIONS}
        if curve:
            result["per_k"] = curve
        if self.history:
            result["history"] = self.history
        if _dist_info()[0] != 0:
            return result
        self._log(loggers, {k: v for k, v in metrics.items()}, step)
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
            save_assignments(self.output_dir / "assignments.npz", datamodule, predictions)
            if self.save_figures:
                paths = self.figures(module, datamodule, predictions)
                _log_images(loggers, paths)
        return result

    @staticmethod
    def per_k_curve(module: ClusteringMethod, metrics: Mapping[str, float],
                    datamodule: ClusteringDataModule) -> list[dict[str, Any]]:
        """Metrics at every number of clusters a hierarchy is cut at (read-outs with ``cut_k``)."""
        curve = []
        for name, readout in module.readouts.items():
            if readout.cut_k is None or f"eval/{next(iter(datamodule.eval_sets))}/{name}/acc" not in metrics:
                continue
            row: dict[str, Any] = {"k": readout.cut_k, "readout": name}
            for split in datamodule.eval_sets:
                row.update({f"{split}/{m}": metrics[f"eval/{split}/{name}/{m}"] for m in ("acc", "nmi", "ari", "purity")})
            curve.append(row)
        return sorted(curve, key=lambda r: r["k"])

    def figures(self, module: ClusteringMethod, datamodule: ClusteringDataModule,
                predictions: Mapping[str, Mapping[str, Tensor]]) -> list[Path]:
        from genclust.viz.figures import confusion_figure, sample_grid

        assert self.output_dir is not None
        fig_dir = self.output_dir / "figures"
        fig_dir.mkdir(exist_ok=True)
        paths = []
        for split, pred in predictions.items():
            paths.append(confusion_figure(datamodule.eval_sets[split].y.numpy(), pred["labels"].numpy(),
                                          fig_dir / f"confusion_{split}.png", title=f"{datamodule.name} / {split}"))
        if module.generative and datamodule.kind == "image":
            path = sample_grid(module, self.samples_per_cluster, fig_dir / "samples_per_cluster.png")
            if path is not None:
                paths.append(path)
        try:
            paths.extend(module.save_figures(fig_dir))
        except Exception as err:  # a figure must never cost the run its metrics
            log.warning("method figures failed: %s", err)
        return paths


def save_assignments(path: Path, datamodule: ClusteringDataModule,
                     predictions: Mapping[str, Mapping[str, Tensor]]) -> None:
    """Per eval split: ``<split>/index``, ``<split>/cluster`` and ``<split>/probs`` (the primary assignment),
    ``<split>/label``, and per read-out ``<split>/<readout>/cluster`` (-1 = noise) and ``.../probs``."""
    arrays: dict[str, np.ndarray] = {}
    for split, pred in predictions.items():
        data = datamodule.eval_sets[split]
        arrays[f"{split}/index"] = data.idx.numpy()
        arrays[f"{split}/cluster"] = pred["labels"].numpy()
        arrays[f"{split}/probs"] = pred["probs"].numpy().astype(np.float32)
        arrays[f"{split}/label"] = data.y.numpy()
        for key, value in pred.items():
            if "/" in key:
                name, kind = key.rsplit("/", 1)
                arrays[f"{split}/{name}/{'cluster' if kind == 'labels' else kind}"] = (
                    value.numpy() if kind == "labels" else value.numpy().astype(np.float32))
    np.savez_compressed(path, **arrays)


def _log_images(loggers: Iterable[Any], paths: list[Path]) -> None:
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            for p in paths:
                logger.log_image(key=f"figures/{p.stem}", images=[str(p)])


__all__ = ["ClusteringEvaluator", "predict_set", "score_modes", "save_assignments", "hungarian_match", "contingency"]
