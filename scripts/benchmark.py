"""Training throughput of a method at a given configuration.

    python scripts/benchmark.py method=clustergan dataset=mnist_test [--steps 30] [--warmup 5] [overrides ...]
    python scripts/benchmark.py experiment=udc_mnist_test_cpu --threads 2

Times ``training_step`` calls (one call = one iteration of the method's game, e.g. one generator
update with its critic updates) inside a real Lightning fit, after ``--warmup`` untimed steps.
Prints JSON (ms per step: mean/median, real images/s) and appends it to
``benchmarks/results.jsonl`` with the command. Time-to-accuracy comes from a training run's
``metrics.json`` ``history`` (``elapsed_s`` per evaluation).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.jsonl")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from genclust.precision import trainer_precision
    from genclust.train import CONFIG_DIR, build_datamodule, check_overrides

    error = check_overrides(args.overrides)
    if error:
        print(error, file=sys.stderr)
        return 2
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=args.overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(ROOT / "outputs" / "benchmark")
        cfg.paths.root_dir = str(ROOT)
        cfg.method_name = "benchmark"
    pl.seed_everything(int(cfg.seed or 0))
    method = instantiate(cfg.method, _convert_="all")
    datamodule = build_datamodule(cfg, method)
    datamodule.setup("fit")

    times: list[float] = []

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            times.append(time.perf_counter() - self.t0)

    total = args.warmup + args.steps
    trainer_cfg = dict(cfg.trainer)
    # as train.py: a bf16 trainer precision runs "32-true" on a CPU where bf16 is not faster (genclust.precision)
    if trainer_cfg.get("precision") is not None:
        trainer_cfg["precision"] = trainer_precision(trainer_cfg["precision"], trainer_cfg.get("accelerator"))
    trainer_cfg.update(max_epochs=10**6, max_time=None, limit_train_batches=None, max_steps=-1,
                       enable_progress_bar=False, enable_checkpointing=False, logger=False, callbacks=[StepTimer()])

    class Done(Exception):
        """Raised once enough steps are timed: ends multi-fit methods (HC-MGAN) too."""

    class Stop(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if len(times) >= total:
                raise Done

    trainer_cfg["callbacks"].append(Stop())
    trainer = instantiate(trainer_cfg)
    start = time.perf_counter()
    try:
        method.fit_method(lambda **kw: trainer, datamodule)
    except Done:
        pass
    wall = time.perf_counter() - start
    timed = times[args.warmup : total]
    if not timed:
        print("benchmark: no step was timed (epoch shorter than --warmup?)", file=sys.stderr)
        return 1
    mean = statistics.mean(timed)
    result = {
        "command": "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "overrides": args.overrides,
        "method": type(method).__name__,
        "dataset": datamodule.name,
        "loader_batch": datamodule.batch_size,
        "steps_timed": len(timed),
        "ms_per_step_mean": round(1000 * mean, 2),
        "ms_per_step_median": round(1000 * statistics.median(timed), 2),
        "real_images_per_s": round(datamodule.batch_size / mean, 1),
        "precision": str(trainer.precision),  # what ran, after the bf16 fallback
        "autocast": method.describe().get("autocast", "none"),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": str(method.device),
        "wall_s": round(wall, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
