"""The HC-MGAN tree: nodes, membership vectors over the fit set, and each split's classifier.

* Node 0 is the root with membership s_0 = ones(N). Split j turns leaf k into nodes 2j+1 (first
  child, "l"/alpha) and 2j+2 (second child, "m"/beta), with s_l + s_m = s_k (float64; s_m is
  computed as s_k - s_l so the identity holds to rounding).
* Each split keeps the networks that define p(first child | x): one classifier after a raw split
  only, the two-classifier ensemble of the last refinement otherwise. A point's leaf
  probability is the product of these along the root-to-leaf path, so the tree clusters new data
  (and reproduces the membership vectors on the fit set).
* Everything lives in the module's ``state_dict``: networks as submodules, node/split metadata, the
  nets' ``arch`` (``genclust.nets.hc_mgan``) and the membership vectors as extra state (plain dicts, lists
  and tensors, so checkpoints load with ``weights_only=True``). ``set_extra_state`` rebuilds the
  submodules from the saved ``arch`` before their weights load.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from genclust.methods.hc_mgan.games import LABEL_L, first_child_prob
from genclust.nets.hc_mgan import Generator, SplitMember, from_arch

FORMAT = "hc_mgan-tree/1"


def _arch_v1(spec: dict[str, Any]) -> dict[str, Any]:
    """The nets' arch of a tree saved before the nets moved to ``genclust.nets.hc_mgan`` (tanh generators)."""
    gen = Generator.__module__ + ".Generator"
    member = SplitMember.__module__ + ".SplitMember"
    return {"generator": {"_target_": gen, "z_dim": spec["z_dim"], "img_shape": spec["img_shape"], "pixel_range": "tanh",
                          "g_channels": spec["g_channels"], "mlp_hidden": spec["mlp_hidden"]},
            "member": {"_target_": member, "img_shape": spec["img_shape"], "d_channels": spec["d_channels"],
                       "mlp_hidden": spec["mlp_hidden"]}}


class Tree(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {}  # {"generator": arch, "member": arch}: how to rebuild the nets
        self.classifiers = nn.ModuleDict()  # "s<j>" -> ModuleList[SplitMember]
        self.generators = nn.ModuleDict()  # "n<id>" -> ModuleList[generator] (non-root nodes)
        self.nodes: list[dict[str, Any]] = []
        self.splits: list[dict[str, Any]] = []
        self.memberships: dict[int, Tensor] = {}  # node id -> float64 [N] on CPU (fit set only)
        self.n_fit: int | None = None
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)

    # ------------------------------------------------------------------ structure
    def init_root(self, n_fit: int) -> None:
        self.reset()
        self.n_fit = int(n_fit)
        self.nodes = [{"id": 0, "parent": None, "children": None, "depth": 0, "mass": float(n_fit),
                       "split": None, "created_by": None}]
        self.memberships = {0: torch.ones(n_fit, dtype=torch.float64)}

    def reset(self) -> None:
        self.classifiers = nn.ModuleDict()
        self.generators = nn.ModuleDict()
        self.nodes, self.splits, self.memberships, self.n_fit = [], [], {}, None

    @property
    def initialized(self) -> bool:
        return bool(self.nodes)

    @property
    def n_splits(self) -> int:
        return len(self.splits)

    def leaves(self, n_splits: int | None = None) -> list[int]:
        """Leaf ids (ascending) of the tree after its first ``n_splits`` splits (default: all)."""
        n = self.n_splits if n_splits is None else int(n_splits)
        if not 0 <= n <= self.n_splits:
            raise ValueError(f"the tree has {self.n_splits} splits; asked for the tree after {n}")
        exists = {0} | {c for s in self.splits[:n] for c in s["children"]}
        split_nodes = {s["node"] for s in self.splits[:n]}
        return sorted(exists - split_nodes)

    @property
    def n_leaves(self) -> int:
        return len(self.leaves()) if self.initialized else 0

    def next_node(self) -> int:
        """The leaf with the largest total mass (ties: lowest id), split next (paper, "Overview")."""
        leaves = self.leaves()
        return max(leaves, key=lambda k: (self.nodes[k]["mass"], -k))

    def path(self, node: int) -> list[tuple[int, int]]:
        """[(split index, side)] from the root down to ``node`` (side 0 = first child)."""
        out = []
        while self.nodes[node]["parent"] is not None:
            parent = self.nodes[node]["parent"]
            split = self.nodes[parent]["split"]
            out.append((split, self.splits[split]["children"].index(node)))
            node = parent
        return out[::-1]

    def commit_split(self, node: int, s_first: Tensor, s_second: Tensor, members: list[nn.Module],
                     gens_first: list[nn.Module], gens_second: list[nn.Module], meta: dict[str, Any]) -> list[int]:
        """Record split ``node`` -> (first, second); checks mass conservation."""
        if node not in self.leaves():
            raise ValueError(f"node {node} is not a leaf")
        s_k = self.memberships[node]
        s_first = s_first.detach().to("cpu", torch.float64)
        s_second = s_second.detach().to("cpu", torch.float64)
        err = float((s_first + s_second - s_k).abs().max()) if len(s_k) else 0.0
        if err > 1e-9 or (s_first < 0).any() or (s_second < 0).any():
            raise RuntimeError(f"split of node {node} does not conserve mass (max error {err:.3g})")
        j = self.n_splits
        ids = [len(self.nodes), len(self.nodes) + 1]
        depth = self.nodes[node]["depth"] + 1
        for cid, s in zip(ids, (s_first, s_second)):
            self.nodes.append({"id": cid, "parent": node, "children": None, "depth": depth,
                               "mass": float(s.sum()), "split": None, "created_by": j})
            self.memberships[cid] = s
        self.nodes[node]["children"] = ids
        self.nodes[node]["split"] = j
        for role, nets in (("member", members), ("generator", [*gens_first, *gens_second])):
            if nets and hasattr(nets[0], "arch"):
                self.spec[role] = nets[0].arch
        dev = self._device_probe.device
        self.classifiers[f"s{j}"] = nn.ModuleList(members).to(dev)
        self.generators[f"n{ids[0]}"] = nn.ModuleList(gens_first).to(dev)
        self.generators[f"n{ids[1]}"] = nn.ModuleList(gens_second).to(dev)
        record = {"index": j, "node": node, "children": ids, "n_members": len(members),
                  "n_gens": [len(gens_first), len(gens_second)],
                  "masses": [self.nodes[ids[0]]["mass"], self.nodes[ids[1]]["mass"]]}
        record.update(meta)
        self.splits.append(record)
        return ids

    def truncate(self, n_splits: int) -> None:
        """Undo every split after the first ``n_splits`` (to re-run a later split alone, e.g. to study it).

        Split j created nodes 2j+1 and 2j+2, so the tree after n splits is exactly nodes[: 2n + 1].
        """
        n = int(n_splits)
        if not 0 <= n <= self.n_splits:
            raise ValueError(f"the tree has {self.n_splits} splits; cannot keep {n}")
        for split in self.splits[n:]:
            del self.classifiers[f"s{split['index']}"]
            for cid in split["children"]:
                del self.generators[f"n{cid}"]
                self.memberships.pop(cid)
        self.splits = self.splits[:n]
        self.nodes = self.nodes[: 2 * n + 1]
        still_split = {s["node"] for s in self.splits}
        for node in self.nodes:
            if node["id"] not in still_split:
                node["children"], node["split"] = None, None

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def split_probs(self, x: Tensor, n_splits: int | None = None, batch_size: int = 1000) -> Tensor:
        """p(first child | x) for the first ``n_splits`` splits: [N, n_splits] float64."""
        n = self.n_splits if n_splits is None else int(n_splits)
        cols = []
        for j in range(n):
            members = list(self.classifiers[f"s{j}"])  # no dropout/normalisation statistics: mode-free
            parts = [first_child_prob(members, x[i: i + batch_size]) for i in range(0, len(x), batch_size)]
            cols.append(torch.cat(parts).double() if parts else x.new_zeros(0, dtype=torch.float64))
        if not cols:
            return torch.zeros(len(x), 0, dtype=torch.float64, device=x.device)
        return torch.stack(cols, dim=1)

    def leaf_probs_from_split_probs(self, p: Tensor, n_splits: int) -> Tensor:
        """Leaf probabilities [N, n_splits + 1] (leaves ascending by id) from split probabilities."""
        cols = []
        for leaf in self.leaves(n_splits):
            prob = torch.ones(p.shape[0], dtype=torch.float64, device=p.device)
            for split, side in self.path(leaf):
                q = p[:, split]
                prob = prob * (q if side == LABEL_L else 1.0 - q)
            cols.append(prob)
        return torch.stack(cols, dim=1)

    def leaf_memberships(self, n_splits: int | None = None) -> Tensor:
        """The fit set's leaf membership vectors [N, n_leaves] (float64)."""
        return torch.stack([self.memberships[k] for k in self.leaves(n_splits)], dim=1)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        mem = (torch.stack([self.memberships[n["id"]] for n in self.nodes]) if self.nodes
               else torch.zeros(0, 0, dtype=torch.float64))
        return {"format": FORMAT, "spec": self.spec, "n_fit": self.n_fit, "nodes": self.nodes,
                "splits": self.splits, "memberships": mem}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"not an HC-MGAN tree state (expected format {FORMAT})")
        self.reset()
        spec = dict(state["spec"])
        self.spec = _arch_v1(spec) if "z_dim" in spec else spec
        self.n_fit = state["n_fit"]
        self.nodes = [dict(n) for n in state["nodes"]]
        self.splits = [dict(s) for s in state["splits"]]
        mem = state["memberships"]
        self.memberships = {n["id"]: mem[i].to("cpu", torch.float64) for i, n in enumerate(self.nodes)}
        dev = self._device_probe.device
        for s in self.splits:
            self.classifiers[f"s{s['index']}"] = nn.ModuleList(
                [from_arch(self.spec["member"]) for _ in range(s["n_members"])]).to(dev)
            for cid, n_gen in zip(s["children"], s["n_gens"]):
                self.generators[f"n{cid}"] = nn.ModuleList(
                    [from_arch(self.spec["generator"]) for _ in range(n_gen)]).to(dev)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly facts: nodes (without memberships) and splits."""
        return {"n_fit": self.n_fit, "n_leaves": self.n_leaves, "leaves": self.leaves() if self.nodes else [],
                "nodes": self.nodes, "splits": self.splits}
