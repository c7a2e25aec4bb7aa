"""Cluster (new) data with a trained run: ``genclust-predict RUN_DIR [--dataset NAME] [--split S] [--out FILE]``.

RUN_DIR is a run folder (its ``.hydra/config.yaml`` and ``model.pt``) or a Lightning checkpoint
inside one (``RUN_DIR/checkpoints/last.ckpt``). The dataset defaults to the training dataset;
``--dataset`` takes any dataset config with the same image shape; ``--split`` (repeatable) scores only
those eval splits (default: all of the dataset's). Writes ``assignments.npz``
(per eval split: index, cluster, probs, label, and each read-out's cluster/probs, read-outs as fitted at
the end of training) and prints the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genclust.errors import GenclustError
from genclust.train import CONFIG_DIR, known_options


def load_run(path: Path) -> tuple[object, dict, Path]:
    """(method with trained weights, run config, run folder) from a run folder or a checkpoint in one."""
    path = path.resolve()
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        weights = path
    else:
        run_dir = path
        weights = run_dir / "model.pt"
        if not weights.is_file():
            last = run_dir / "checkpoints" / "last.ckpt"
            weights = last if last.is_file() else weights
    cfg_file = run_dir / ".hydra" / "config.yaml"
    model_file = run_dir / "model.pt"
    if not cfg_file.is_file() and not model_file.is_file():
        raise GenclustError(f"{run_dir} is not a run folder (no .hydra/config.yaml or model.pt)")
    if not weights.is_file():
        raise GenclustError(f"no trained weights in {run_dir} (model.pt or checkpoints/last.ckpt)")
    try:
        saved = torch.load(weights, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated / not a model file: one line
        raise GenclustError(f"{weights} cannot be read ({type(err).__name__}); the run's model is damaged") from err
    if cfg_file.is_file():
        cfg = OmegaConf.load(cfg_file)
    else:  # a run made in-process (tests, notebooks): model.pt carries the resolved config
        cfg = OmegaConf.create(torch.load(model_file, map_location="cpu", weights_only=False)["config"])
    method = instantiate(cfg.method, _convert_="all")
    method.load_state_dict(saved["state_dict"])
    method.fit_set_digest = saved.get("fit_set_digest")  # absent in runs before 2026-12-07
    method.eval()
    return method, cfg, run_dir


def load_method(path: Path, kind: type) -> tuple[Any, Any, Path]:
    """``load_run`` for a script about one method: a GenclustError unless the run is a ``kind`` run."""
    method, cfg, run_dir = load_run(Path(path))
    if not isinstance(method, kind):
        raise GenclustError(f"{path} is not a {kind.__name__} run")
    return method, cfg, run_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genclust-predict", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder or checkpoint")
    parser.add_argument("--dataset", help="dataset config name (default: the training dataset)")
    parser.add_argument("--data-dir", help="IDX data folder (default: the run's paths.data_dir)")
    parser.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                        help="score only this eval split (repeatable; default: every split of the dataset)")
    parser.add_argument("--out", type=Path, help="output file (default: <run>/predictions/<dataset>.npz)")
    args = parser.parse_args(argv)
    try:
        result = predict(args.run, args.dataset, args.data_dir, args.out, args.splits)
    except GenclustError as err:
        print(f"genclust-predict: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result, indent=2))


def predict(run: Path, dataset: str | None = None, data_dir: str | None = None, out: Path | None = None,
            splits: list[str] | None = None) -> dict:
    from genclust.data.datamodule import ClusteringDataModule
    from genclust.evaluation.callback import predict_set, save_assignments
    from genclust.evaluation.metrics import clustering_report

    method, cfg, run_dir = load_run(run)
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    if dataset:
        if dataset not in known_options("dataset"):
            raise GenclustError(f"unknown dataset '{dataset}'; known datasets: {', '.join(known_options('dataset'))}")
        dataset_cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "dataset" / f"{dataset}.yaml"))
    if tuple(dataset_cfg["img_shape"]) != tuple(method.img_shape):
        raise GenclustError(f"dataset shape {dataset_cfg['img_shape']} differs from the model's {list(method.img_shape)}")
    dm = ClusteringDataModule(dataset_cfg, batch_size=1, pixel_range=method.pixel_range,
                              data_dir=data_dir or cfg.paths.data_dir, download=cfg.paths.download, drop_last=False)
    dm.setup("predict")
    unknown = sorted(set(splits or ()) - set(dm.eval_sets))
    if unknown:
        raise GenclustError(f"dataset '{dm.name}' has no eval split {', '.join(unknown)}; its splits: "
                            f"{', '.join(dm.eval_sets)}")
    eval_sets = {name: data for name, data in dm.eval_sets.items() if not splits or name in splits}
    predictions, result = {}, {}
    # the training examples keep their fit-set index (stored per-example results: UMAP coordinates, CGM's latents)
    # only when they are the run's own fit set: the same content, not only the same dataset name
    from genclust.data.datamodule import content_digest

    same_data = dm.name == cfg.dataset.name and (
        method.fit_set_digest is None or method.fit_set_digest == content_digest(dm.fit_set.x))
    from_checkpoint = Path(run).is_file() or not (run_dir / "model.pt").is_file()
    if from_checkpoint:
        # Lightning checkpoints are written before train.py fits the read-outs (model.pt carries them): fit
        # them now, once, on the run's fit set, exactly as train.py does at the end of training
        if same_data:
            method.fit_readouts(dm.fit_set.x)
            result["readouts_fitted_from_checkpoint"] = sorted(method.readouts)
        elif any(not r.fitted for r in method.readouts.values()):
            raise GenclustError("the checkpoint's read-outs are not fitted: predict with the run folder's model.pt, "
                                "or on the run's own dataset (read-outs are fitted on its fit set)")
    for split, data in eval_sets.items():
        pred = predict_set(method, data, fit_set=dm.fit_set if same_data else None)
        predictions[split] = pred
        report = clustering_report(data.y.numpy(), pred["labels"].numpy())
        result[split] = {k: report[k] for k in ("acc", "nmi", "ari")} | {"n": len(data)}
        for name in method.readouts:
            if f"{name}/labels" in pred:
                r = clustering_report(data.y.numpy(), pred[f"{name}/labels"].numpy())
                result[split][name] = {k: r[k] for k in ("acc", "nmi", "ari", "fraction_labeled", "clusters_found")}
    out = out or run_dir / "predictions" / f"{dm.name}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_assignments(out, dm, predictions)
    result["written"] = str(out)
    return result


if __name__ == "__main__":
    main()
