"""Logger helpers: a W&B logger that is offline unless the user says otherwise."""

from __future__ import annotations

import os
from typing import Any


def wandb_is_online() -> bool:
    """Online when WANDB_MODE=online, or when an API key is set and WANDB_MODE does not say offline/disabled."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return False
    return mode == "online" or bool(os.environ.get("WANDB_API_KEY"))


def make_wandb_logger(project: str, save_dir: str, name: str | None = None, group: str | None = None,
                      entity: str | None = None, job_type: str | None = None, tags: list[str] | None = None,
                      **kwargs: Any):
    """Lightning's WandbLogger (one run, rank zero only), offline by default on machines without a key."""
    from pytorch_lightning.loggers import WandbLogger

    online = wandb_is_online()
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, entity=entity, save_dir=save_dir, name=name, group=group,
                       job_type=job_type, tags=tags, offline=not online, log_model=False, **kwargs)
