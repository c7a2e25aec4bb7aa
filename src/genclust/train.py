"""The training entry point: ``python train.py method=X dataset=Y`` (== ``genclust-train``).

Composes method + dataset + trainer configs, trains through the method contract, runs the
shared final evaluation and writes the run folder:

    <run>/metrics.json  assignments.npz  model.pt  figures/  checkpoints/last.ckpt  csv/  .hydra/

Re-running with the same ``hydra.run.dir`` resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from genclust.errors import ConfigError, DivergenceError, GenclustError
from genclust.precision import cpu_bf16_speedup, trainer_precision

log = logging.getLogger("genclust")

# The configs ship inside the package (src/genclust/configs links to the repository's configs/), so
# `genclust-train` finds them after a plain `pip install .` as well as in an editable install.
CONFIG_DIR = Path(os.environ.get("GENCLUST_CONFIG_DIR", Path(__file__).resolve().parent / "configs"))
# groups whose option names are checked before Hydra runs (one clear line instead of a traceback)
CHECKED_GROUPS = ("method", "dataset", "trainer", "logger", "experiment", "callbacks", "hparams_search")
# metric names that need labels: never a sweeper's objective (no label-based model selection)
LABEL_METRICS = ("acc", "nmi", "ari", "purity", "mean_class_acc", "acc_labeled")


def known_options(group: str) -> list[str]:
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_overrides(argv: list[str]) -> str | None:
    """Return an error line for an unknown method/dataset/... option on the command line, else None."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key.startswith("override "):
            key = key[len("override "):]
        key = key.split("@")[0].strip("/")
        if key not in CHECKED_GROUPS or not value or value == "null" or "(" in value:
            continue
        known = known_options(key)
        for option in value.split(","):
            if option and option not in known:
                return f"genclust: unknown {key} '{option}'; known {key}s: {', '.join(known)}"
    return None


def build_datamodule(cfg: DictConfig, method: Any):
    from genclust.data.datamodule import ClusteringDataModule

    return ClusteringDataModule(
        dataset=OmegaConf.to_container(cfg.dataset, resolve=True),
        batch_size=method.batch_size,
        pixel_range=method.pixel_range,
        data_dir=cfg.paths.data_dir,
        download=cfg.paths.download,
        num_workers=cfg.get("num_workers", 0),
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the final metrics (also in metrics.json)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from genclust.evaluation import reference
    from genclust.evaluation.callback import ClusteringEvaluator
    from genclust.methods.base import RunGuard
    from genclust.progress import progress_callbacks

    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.seed is not None:
        pl.seed_everything(int(cfg.seed), workers=True)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)

    method = instantiate(cfg.method, _convert_="all")
    datamodule = build_datamodule(cfg, method)
    datamodule.setup("fit")  # load now: data errors surface before any model work
    from genclust.data.datamodule import content_digest

    method.fit_set_digest = content_digest(datamodule.fit_set.x)
    if method.n_clusters > len(datamodule.fit_set):
        raise GenclustError(f"n_clusters={method.n_clusters} exceeds the {len(datamodule.fit_set)} examples")
    log.info("method %s on %s: %d examples to cluster into K=%d%s", type(method).__name__, datamodule.name,
             len(datamodule.fit_set), method.n_clusters,
             f" (the dataset has {datamodule.n_clusters} classes)" if method.n_clusters != datamodule.n_clusters else "")

    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None and "_target_" in c]
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None and "_target_" in c]
    evaluators = [c for c in callbacks if isinstance(c, ClusteringEvaluator)]
    evaluator = evaluators[0] if evaluators else ClusteringEvaluator(every_n_epochs=0, output_dir=str(run_dir))
    for lg in loggers:
        if hasattr(lg, "log_hyperparams"):
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    # a bf16 trainer precision becomes "32-true" on a CPU that only emulates bf16 (~10x slower there) or where a
    # start-up matmul measures bf16 clearly slower (genclust.precision)
    precision = trainer_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    # a progress bar in a terminal; in CI / nohup / a cluster job a log line with ETA every few seconds
    progress = cfg.get("progress") or {}
    show_bar, progress_cbs = progress_callbacks(cfg.trainer, progress.get("mode", "auto"),
                                                progress.get("every_s", 15.0))

    def make_trainer(**overrides: Any) -> pl.Trainer:
        if precision is not None:
            overrides.setdefault("precision", precision)
        overrides.setdefault("enable_progress_bar", show_bar)
        # RunGuard first: its epoch-end divergence check runs before the evaluator and the checkpoint
        return instantiate(cfg.trainer, callbacks=[RunGuard(), *callbacks, *progress_cbs], logger=loggers or False,
                           default_root_dir=str(run_dir), **overrides)

    ckpt_path = cfg.get("ckpt_path")
    last = run_dir / "checkpoints" / "last.ckpt"
    method.run_identity = {"method": cfg.get("method_name"), "dataset": datamodule.name, "seed": cfg.seed,
                           "fit_set_digest": method.fit_set_digest,
                           "method_config": _flat(OmegaConf.to_container(cfg.method, resolve=True))}
    if ckpt_path is None and last.is_file():
        ckpt_path = str(last)
        log.info("resuming from %s", ckpt_path)
        check_resumable(last, method.run_identity)
    elif ckpt_path is not None:
        check_resumable(Path(ckpt_path), method.run_identity, strict=False)

    trainer = None
    try:
        trainer = method.fit_method(make_trainer, datamodule, ckpt_path=ckpt_path)
    except DivergenceError as err:
        raise DivergenceError(f"{err}; training stopped ({_kept(last)})") from err
    except GenclustError:
        raise
    except Exception as err:
        # a NaN that arrives between two divergence checks often breaks the next forward pass first (BCE on NaN
        # images, sampling from NaN probabilities): name the divergence, not the symptom
        try:  # this rank only (no collective); a CUDA device-side assert may have poisoned the context
            bad = method.diverged_losses() or method.nonfinite_parameters()
        except Exception:  # noqa: BLE001 - the check itself failed: report the original error
            bad = []
        if not bad:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise DivergenceError(f"{type(method).__name__}: training diverged ({', '.join(bad[:3])} NaN/inf) and then "
                              f"failed with {type(err).__name__}: {first}; training stopped ({_kept(last)})") from err

    # Lightning's teardown moved the model to the CPU; fit the read-outs and evaluate (and gather, NCCL
    # included) on the device it trained on. Read-outs (k-means / UMAP+HDBSCAN / tree cuts on an
    # embedding) are fitted once, on the fit set, now.
    if trainer is not None:
        method.to(trainer.strategy.root_device)
    method.fit_readouts(datamodule.fit_set.x, evaluator.batch_size)

    extra = {"method": cfg.get("method_name"), "dataset": datamodule.name, "seed": cfg.seed,
             "n_clusters": method.n_clusters, "run_dir": str(run_dir)}  # the method's K (protocol: the dataset's)
    if trainer is not None:
        extra.update(epochs=trainer.current_epoch, global_step=trainer.global_step,
                     precision=str(trainer.precision))
        if cpu_bf16_speedup.cache_info().currsize:  # measured in this process: why bf16 did or did not run
            extra["cpu_bf16_speedup"] = round(cpu_bf16_speedup(), 3)
        # the method's own losses as last logged (a sweep may minimise one: optimized_metric=train/<loss>)
        extra.update({k: float(v) for k, v in sorted(trainer.callback_metrics.items())
                      if k.startswith("train/") and v.numel() == 1})
    step = trainer.global_step if trainer is not None else 0
    if reference.wanted(cfg.get("reference_kmeans", "auto"), cfg.get("method_name"), len(datamodule.fit_set)):
        extra.update(reference.kmeans_reference(method, datamodule, cfg.seed))
    result = evaluator.final(method, datamodule, loggers=loggers, extra=extra, step=step)
    if trainer is None or trainer.is_global_zero:
        torch.save({"state_dict": method.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
                    "fit_set_digest": method.fit_set_digest}, run_dir / "model.pt")
        # what the headline is: the primary eval split, and the read-out when it is not the method's own
        scored = next(iter(datamodule.eval_sets))
        clustering = getattr(method, "clustering", "argmax")
        via = f", read-out {clustering}" if clustering != "argmax" else ""
        print(f"[genclust] {extra['method']} on {datamodule.name} (seed {cfg.seed}, {scored} split{via}): "
              f"ACC {result['acc']:.4f}  NMI {result['nmi']:.4f}  ARI {result['ari']:.4f}"
              f"{reference.result_line(result)}  -> {run_dir}")
    return result


def check_resumable(path: Path, identity: dict[str, Any], strict: bool = True) -> None:
    """A checkpoint that cannot be read, or (``strict``: the run folder's own last.ckpt) one written by another
    method, dataset, seed or fit set, is a one-line error rather than a traceback or a silent mix of two runs."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated / not a checkpoint: one line
        raise GenclustError(f"checkpoint {path} cannot be read ({type(err).__name__}: "
                            f"{(str(err).strip().splitlines() or [''])[0][:120]}); delete it to start over, "
                            "or point ckpt_path= at a good one") from err
    recorded = saved.get("genclust_run") if isinstance(saved, dict) else None
    if not recorded:
        return  # written before 2026-12-07 (or by another tool): nothing to compare
    differ = [f"{key} {recorded.get(key)!r} (now {value!r})" for key, value in identity.items()
              if key in recorded and recorded.get(key) != value and key != "method_config"]
    old_cfg, new_cfg = recorded.get("method_config"), identity.get("method_config")
    if isinstance(old_cfg, dict) and isinstance(new_cfg, dict) and not differ:  # same method: which settings moved
        keys = sorted(k for k in old_cfg.keys() | new_cfg.keys() if old_cfg.get(k) != new_cfg.get(k))
        differ = [f"method.{k} {old_cfg.get(k)!r} (now {new_cfg.get(k)!r})" for k in keys[:3]]
        differ += [f"{len(keys) - 3} more method settings"] if len(keys) > 3 else []
    if not differ:
        return
    message = (f"{path} was written by another run: {'; '.join(differ)}. Use a new output folder "
               "(hydra.run.dir=... or paths.output_dir=...), or ckpt_path=<file> to start from it on purpose")
    if strict:
        raise GenclustError(message)
    log.warning("starting from a checkpoint of another run: %s", "; ".join(differ))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested config (lists kept whole)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _kept(last: Path) -> str:
    return f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was saved before it"


def _close_loggers() -> None:
    """Always finish W&B so one failed multirun job cannot poison the next."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _user_error(err: BaseException | None) -> GenclustError | None:
    """The GenclustError behind ``err``: Hydra's ``instantiate`` wraps what a constructor raises."""
    while err is not None:
        if isinstance(err, GenclustError):
            return err
        err = err.__cause__
    return None


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_objective(metric: str | None) -> None:
    """Refuse an ``optimized_metric`` that needs labels or that no run records (one clear line)."""
    if not metric:
        return
    from genclust.evaluation.metrics import UNSUPERVISED_METRICS

    parts = str(metric).split("/")
    if any(part in LABEL_METRICS for part in parts):
        raise ConfigError(f"optimized_metric={metric!r} is computed from labels: selecting models on it "
                          "breaks the unsupervised protocol (labels are for evaluation only)")
    if (parts[0] == "train" and len(parts) >= 2) or (parts[0] == "eval" and len(parts) >= 3
                                                      and parts[-1] in UNSUPERVISED_METRICS):
        return
    raise ConfigError(f"optimized_metric={metric!r} is not a label-free metric that runs record: use "
                      "eval/<split>/{silhouette,calinski_harabasz,davies_bouldin} (also "
                      "eval/<split>/<readout>/...), eval/<split>/modes/consistency, or a train/<loss> the method logs")


class SweepCheck(HydraCallback):
    """Hydra callback (configs/hydra/default.yaml): a sweep on a label metric stops before its first job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_objective(config.get("optimized_metric"))
        except ConfigError as err:
            print(f"genclust: error: {err}", file=sys.stderr)
            sys.exit(2)


def check_config(cfg: DictConfig) -> None:
    """Refuse configurations that would silently misbehave (one clear line each)."""
    check_objective(cfg.get("optimized_metric"))
    if _is_multirun():
        devices = cfg.trainer.get("devices", 1)
        num_nodes = cfg.trainer.get("num_nodes", 1)
        strategy = str(cfg.trainer.get("strategy", "auto"))
        if "ddp" in strategy or (isinstance(devices, int) and devices > 1) or devices in ("auto", -1):
            # Lightning's subprocess launcher re-runs sys.argv (with -m) in every child rank: each rank would
            # run the whole sweep. Under SLURM Lightning starts no processes: submitit starts one task per
            # device and Lightning reads the ranks from SLURM, so there a sweep's jobs may be DDP jobs.
            layout = _slurm_task_layout()
            if layout is None:
                raise ConfigError("multirun jobs are single-device: use trainer=cpu|gpu with -m, run DDP jobs one "
                                  "at a time, or launch the sweep with hydra/launcher=submitit_slurm")
            if not isinstance(devices, int) or layout != (devices, num_nodes):
                raise ConfigError(f"DDP jobs under SLURM need one task per device: trainer.devices={devices} "
                                  f"trainer.num_nodes={num_nodes} but hydra.launcher.tasks_per_node={layout[0]} "
                                  f"hydra.launcher.nodes={layout[1]} (set trainer.devices to a number and both "
                                  "launcher keys to match)")


def _slurm_task_layout() -> tuple[int, int] | None:
    """(tasks_per_node, nodes) when the sweep runs through submitit's SLURM launcher, else None."""
    from hydra.core.hydra_config import HydraConfig

    launcher = HydraConfig.get().launcher
    if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return None
    return int(launcher.get("tasks_per_node", 1)), int(launcher.get("nodes", 1))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    try:
        check_config(cfg)
        result = run(cfg)
    except Exception as err:  # noqa: BLE001 - user errors become one line, the rest propagates
        user_error = _user_error(err)
        if user_error is None:
            raise
        print(f"genclust: error: {user_error}", file=sys.stderr)
        if _is_multirun():  # one failed job must not end the sweep: report it and go on
            log.error("job failed: %s", user_error)
            return None
        sys.exit(3 if isinstance(user_error, DivergenceError) else 2)
    finally:
        _close_loggers()
    metric = cfg.get("optimized_metric")
    return float(result[metric]) if metric and metric in result else None


def main() -> None:
    error = check_overrides(sys.argv[1:])
    if error:
        print(error, file=sys.stderr)
        sys.exit(2)
    # configs/hydra/launcher/submitit_*.yaml replace the plugin's nodes of the same name on purpose (validated
    # against the plugin's schema); Hydra warns about that matching three times per run
    warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema with the same name")
    hydra_main()


if __name__ == "__main__":
    main()


__all__ = ["main", "run", "check_overrides"]
