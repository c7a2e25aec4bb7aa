"""The tree's files in ``<root>/tree/``: ``tree.pt`` (the committed tree), ``nodes.json`` (its summary) and
``in_progress.pt`` (the split being grown, after every stage), all loadable with ``weights_only=True``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from genclust.methods.hc_mgan.tree import Tree
from genclust.nets.hc_mgan import from_arch

IN_PROGRESS = "in_progress.pt"
TREE_FILE = "tree.pt"


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def commit_split(tree: Tree, state: dict[str, Any]) -> None:
    """Commit a finished split from its in-progress state (nets rebuilt from their saved ``arch``)."""
    members = [from_arch(state["arch"]["member"]) for _ in state["members"]]
    for m, sd in zip(members, state["members"]):
        m.load_state_dict(sd)
    gens = []
    for side in state["gens"]:
        side_gens = [from_arch(state["arch"]["generator"]) for _ in side]
        for g, sd in zip(side_gens, side):
            g.load_state_dict(sd)
        gens.append(side_gens)
    meta = {"refinements": state["stage"], "early_stopped": state["early_stopped"],
            "membership_changes": [round(c, 3) for c in state["changes"]], "attempts": state["attempts"],
            "seconds": state["seconds"], "iterations": state.get("iterations", []), "pace": state.get("pace", [])}
    tree.commit_split(state["node"], state["s_l"], state["s_m"], members, gens[0], gens[1], meta)


class TreeStore:
    """Reads and writes one run's tree folder; ``writer=False`` (DDP ranks > 0) makes writes no-ops.
    Saving the tree removes ``in_progress.pt`` (its split is committed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def saved_tree(self) -> dict[str, Tensor] | None:
        path = self.folder / TREE_FILE
        return torch.load(path, map_location="cpu", weights_only=True)["tree"] if path.is_file() else None

    def save_tree(self, tree: Tree, writer: bool = True) -> None:
        if writer:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_save({"tree": tree.state_dict()}, self.folder / TREE_FILE)
            (self.folder / "nodes.json").write_text(json.dumps(tree.summary(), indent=1))
            (self.folder / IN_PROGRESS).unlink(missing_ok=True)

    def save_in_progress(self, state: dict[str, Any], writer: bool = True) -> None:
        if writer:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_save(state, self.folder / IN_PROGRESS)

    def load_in_progress(self, split: int, node: int) -> dict[str, Any] | None:
        """The saved state of split ``split`` (of node ``node``), or None."""
        path = self.folder / IN_PROGRESS
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("split") != split or state.get("node") != node:
            rank_zero_warn(f"HC-MGAN: ignoring {path} (it is for split {state.get('split')}, node {state.get('node')})")
            return None
        if "arch" not in state:  # written before the nets recorded their arch: redo the split
            rank_zero_warn(f"HC-MGAN: ignoring {path} (no net arch: written by an older version)")
            return None
        return state
