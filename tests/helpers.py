"""Shared test helpers: compose the real configs, run train.py in-process or as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
SHARED_DATA = ROOT.parent / "shared" / "datasets"
DATA_DIR = Path(os.environ.get("GENCLUST_DATA_DIR", SHARED_DATA))
HAS_MNIST_TEST = (DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
HAS_FMNIST = (DATA_DIR / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()

requires_mnist_test = pytest.mark.skipif(not HAS_MNIST_TEST, reason=f"no MNIST test files in {DATA_DIR}")
requires_fmnist = pytest.mark.skipif(not HAS_FMNIST, reason=f"no Fashion-MNIST files in {DATA_DIR}")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


# The default job (HRWAE-GAN on the bundled Fashion-MNIST test images, ~4 min) is too slow for tests: a test
# that names no method / dataset (nor an experiment or sweep that does) runs ClusterGAN on the 8x8 digits, the
# defaults the tests were written against. tests/test_train.py::test_default_job_* covers the real defaults.
TEST_DEFAULTS = {"method": "clustergan", "dataset": "digits"}


def with_test_defaults(overrides: list[str]) -> list[str]:
    if any(o.split("=", 1)[0] in ("experiment", "hparams_search", "+experiment") for o in overrides if "=" in o):
        return list(overrides)
    named = {o.split("=", 1)[0] for o in overrides if "=" in o}
    return [f"{group}={choice}" for group, choice in TEST_DEFAULTS.items() if group not in named] + list(overrides)


def compose_cfg(overrides: list[str], output_dir: Path | None = None, real_defaults: bool = False) -> DictConfig:
    """The real composed config, with hydra-runtime interpolations replaced for in-process runs."""
    if not real_defaults:
        overrides = with_test_defaults(overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    method = next((o.split("=", 1)[1] for o in overrides if o.startswith("method=")), None)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir) if output_dir else "unused"
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.data_dir = str(DATA_DIR)
        cfg.paths.download = False
        cfg.method_name = method or "default"
    return cfg


def run_cli(args: list[str], tmp_path: Path | None = None, timeout: int = 600, script: str = "train.py",
            env: dict | None = None, real_defaults: bool = False) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` (run folder under tmp_path) and capture its output."""
    if script == "train.py" and not real_defaults:
        args = with_test_defaults(args)
    cmd = [sys.executable, str(ROOT / script), *args]
    if tmp_path is not None and script == "train.py" and not any(a.startswith("hydra.run.dir") for a in args):
        if "-m" not in args:
            cmd.append(f"hydra.run.dir={tmp_path}")
    full_env = {**os.environ, "GENCLUST_DATA_DIR": str(DATA_DIR), "GENCLUST_ROOT": str(tmp_path or ROOT),
                "WANDB_MODE": "offline", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A free TCP port on localhost (MASTER_PORT of a test's gloo process group)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
