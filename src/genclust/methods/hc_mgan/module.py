"""HC-MGAN (de Mello, Assunção, Murai, AAAI 2022): top-down deep clustering with multi-generator GANs.

The tree grows by splitting the leaf with the largest mass until ``n_clusters`` leaves (Algorithm 1):
every split is a raw split (Algorithm 2) followed by ``n_refinements`` refinements (Algorithms 3-4),
each one Lightning fit driven from :meth:`HCMGAN.fit_method`. After every fit the fit set's membership
vectors are re-estimated with the fit's classifier(s); the tree (memberships, split classifiers, leaf
generators, metadata) is written to ``<root>/tree/`` after every stage and is part of ``state_dict``, so
a run restarted in the same folder resumes at the first unfinished stage and a checkpoint clusters new data.

Choices beyond the paper are documented where they are made and in ``configs/method/hc_mgan.yaml``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from genclust.errors import ConfigError
from genclust.methods.base import ClusteringMethod
from genclust.methods.hc_mgan.games import (
    NOISE_KINDS,
    RawSplitGame,
    RefinementGame,
    SplitMember,
    build_generator,
    check_spec,
    first_child_prob,
    net_spec,
    sample_z,
)
from genclust.methods.hc_mgan.tree import Tree

IN_PROGRESS = "in_progress.pt"
TREE_FILE = "tree.pt"


class HCMGAN(ClusteringMethod):
    generative = True

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        batch_size: int = 100,
        pixel_range: str = "tanh",
        divergence_check_every: int = 50,
        gen_batch_size: int = 100,
        z_dim: int = 100,
        z_prior: str = "uniform01",
        g_channels: int = 128,
        d_channels: Sequence[int] = (128, 256, 512),
        mlp_hidden: int = 256,
        init: str = "default",
        lr_g: float = 2e-4,
        lr_d: float = 1e-4,
        lr_c: float = 2e-5,
        betas: Sequence[float] = (0.5, 0.999),
        lambda_cls: float = 1.0,
        raw_lambda_squared: bool = False,
        raw_epochs: int = 120,
        refine_epochs: int = 120,
        n_refinements: int = 6,
        refine_gens_per_group: int = 1,
        refine_cls_reduction: str = "sum",
        warm_start: str = "none",
        noise_start: float = 1.0,
        noise_kind: str = "multiplicative",
        min_raw_iters: int = 0,
        min_refine_iters: int = 0,
        refine_stop_change: float = 0.0,
        refine_stop_after: int = 2,
        collapse_check_from: int = 40,
        collapse_check_every: int = 10,
        collapse_threshold: float = 0.01,
        max_attempts: int = 4,
        inference_batch_size: int = 1000,
        tree_dir: str | None = None,
    ) -> None:
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every)
        self.save_hyperparameters()
        if warm_start not in ("none", "refine"):
            raise ConfigError(f"hc_mgan: warm_start must be none|refine, got {warm_start!r}")
        if noise_kind not in NOISE_KINDS:
            raise ConfigError(f"hc_mgan: noise_kind must be {'|'.join(NOISE_KINDS)}, got {noise_kind!r}")
        if refine_cls_reduction not in ("sum", "mean"):
            raise ConfigError(f"hc_mgan: refine_cls_reduction must be sum|mean, got {refine_cls_reduction!r}")
        if int(refine_gens_per_group) < 1 or int(n_refinements) < 0 or int(max_attempts) < 1:
            raise ConfigError("hc_mgan: refine_gens_per_group >= 1, n_refinements >= 0, max_attempts >= 1")
        if int(raw_epochs) < 1 or (int(n_refinements) > 0 and int(refine_epochs) < 1):
            raise ConfigError("hc_mgan: raw_epochs and refine_epochs must be >= 1")
        sample_z(1, 1, z_prior, torch.device("cpu"))  # validates the prior's name
        self.spec = net_spec(img_shape, z_dim, g_channels, list(d_channels), mlp_hidden)
        check_spec(self.spec)
        # Game hyperparameters as a plain dict (the games never see the LightningModule's hparams).
        self.game_hp = {"gen_batch_size": int(gen_batch_size), "z_prior": z_prior, "lr_g": float(lr_g),
                        "lr_d": float(lr_d), "lr_c": float(lr_c), "betas": [float(b) for b in betas],
                        "lambda_cls": float(lambda_cls), "raw_lambda_squared": bool(raw_lambda_squared),
                        "refine_gens_per_group": int(refine_gens_per_group),
                        "refine_cls_reduction": refine_cls_reduction, "init": init, "noise_kind": noise_kind}
        self.tree = Tree(self.spec)
        self.game: RawSplitGame | RefinementGame | None = None
        # Transient training state (never in the state_dict).
        self._fit_x: Tensor | None = None  # the fit set, kept for re-estimation and figures
        self._fit_y: Tensor | None = None  # labels: figures' class keys only, never training
        self._dataset_name = ""
        self._real_cdf: dict[str, Tensor] = {}
        self._fit_x_dev: Tensor | None = None
        self._collapsed = False
        self._last_attempt = False
        self._collapse_log: list[float] = []
        self._tree_dir: Path | None = None
        self._progress = ""
        self._probs_cache: tuple | None = None
        self._tree_version = 0

    # ================================================================ clustering contract
    @torch.no_grad()
    def _split_probs(self, x: Tensor) -> Tensor:
        """p(first child | x) of every split [N, n_splits], cached for the last ``x`` seen.

        The evaluator asks ``probs_at_k`` for every K on the same eval tensor: the cache makes the
        whole curve cost one pass through the split classifiers instead of K-1 passes.
        """
        key = (id(x), tuple(x.shape), x.device, self.tree.n_splits, self._tree_version)
        if self._probs_cache is not None and self._probs_cache[0] == key and self._probs_cache[1] is x:
            return self._probs_cache[2]
        p = self.tree.split_probs(x, None, self.hparams.inference_batch_size)
        self._probs_cache = (key, x, p)
        return p

    @torch.no_grad()
    def leaf_probs_at(self, x: Tensor, n_leaves: int) -> Tensor:
        """Leaf probabilities [N, n_leaves] of the tree as it was when it had ``n_leaves`` leaves
        (leaves ordered by node id; a point's leaf probability is the product of the split
        classifiers' outputs along the root-to-leaf path)."""
        n_leaves = int(n_leaves)
        if not self.tree.initialized or self.tree.n_splits == 0:
            if n_leaves != 1:
                raise ValueError("the tree has no split yet: only n_leaves=1 is available")
            return torch.ones(len(x), 1, device=x.device)
        if not 1 <= n_leaves <= self.tree.n_leaves:
            raise ValueError(f"the tree has 1..{self.tree.n_leaves} leaves; asked for {n_leaves}")
        if n_leaves == 1:
            return torch.ones(len(x), 1, device=x.device)
        p = self.tree.split_probs(x, n_leaves - 1, self.hparams.inference_batch_size)
        return self.tree.leaf_probs_from_split_probs(p, n_leaves - 1).float()

    def available_k(self) -> list[int]:
        """Every number of leaves the tree passed through while growing (the metric curve over K)."""
        return list(range(1, self.tree.n_leaves + 1)) if self.tree.initialized else []

    @torch.no_grad()
    def probs_at_k(self, x: Tensor, k: int, batch_size: int = 1024) -> Tensor:
        """Leaf probabilities [N, k] of the tree cut after its first k-1 splits (on the CPU)."""
        k = int(k)
        if k not in self.available_k():
            raise ValueError(f"HC-MGAN answers for k in {self.available_k()}, not {k}")
        was_training = self.training
        self.eval()
        try:
            p = self._split_probs(x.to(self.device))
            return self.tree.leaf_probs_from_split_probs(p, k - 1).float().cpu()
        finally:
            self.train(was_training)

    def cluster_probs(self, x: Tensor) -> Tensor:
        """Leaf probabilities of the current tree, zero-padded to ``n_clusters`` columns while it grows."""
        probs = self.leaf_probs_at(x, max(self.tree.n_leaves, 1))
        if probs.shape[1] < self.n_clusters:
            probs = torch.cat([probs, probs.new_zeros(len(x), self.n_clusters - probs.shape[1])], dim=1)
        return probs

    @torch.no_grad()
    def sample(self, n: int, cluster: int | None = None) -> Tensor | None:
        """Images from the generator(s) of leaf ``cluster`` (or of leaves drawn by mass)."""
        if not self.tree.initialized or self.tree.n_splits == 0:
            return None  # K = 1: the root has no generator
        leaves = self.tree.leaves()
        if cluster is None:
            mass = torch.tensor([self.tree.nodes[k]["mass"] for k in leaves], dtype=torch.double)
            choice = torch.multinomial(mass / mass.sum(), n, replacement=True).tolist()
        else:
            if not 0 <= int(cluster) < len(leaves):
                raise ValueError(f"cluster {cluster} out of range: the tree has {len(leaves)} leaves")
            choice = [int(cluster)] * n
        out = torch.empty(n, *self.img_shape, device=self.device)
        for c in sorted(set(choice)):
            rows = [i for i, v in enumerate(choice) if v == c]
            out[rows] = self._generate_node(leaves[c], len(rows))
        return out

    def _generate_node(self, node: int, n: int) -> Tensor:
        gens = list(self.tree.generators[f"n{node}"])
        z = sample_z(n, self.spec["z_dim"], self.hparams.z_prior, self.device)
        which = torch.randint(len(gens), (n,)).tolist()
        out = torch.empty(n, *self.img_shape, device=self.device)
        for g_idx in sorted(set(which)):
            rows = [i for i, v in enumerate(which) if v == g_idx]
            out[rows] = gens[g_idx](z[rows])
        return out

    def describe(self) -> dict[str, Any]:
        splits = [{k: v for k, v in s.items()} for s in self.tree.splits]
        return {"hc_mgan": {"n_leaves": self.tree.n_leaves, "n_splits": self.tree.n_splits,
                            "leaves": self.tree.leaves() if self.tree.initialized else [],
                            "splits": splits, "z_prior": self.hparams.z_prior,
                            "noise": {"kind": self.hparams.noise_kind, "start": self.hparams.noise_start},
                            "refinement_generators_per_group": self.hparams.refine_gens_per_group}}

    def save_figures(self, out_dir: Path) -> list[Path]:
        from genclust.methods.hc_mgan.figures import save_tree_figures

        return save_tree_figures(self, Path(out_dir))

    # ================================================================ Lightning hooks (one stage)
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        if self.game is None:
            raise RuntimeError("HC-MGAN trains through fit_method (one fit per raw split/refinement), "
                               "not a bare trainer.fit")
        return self.game.configure_optimizers()

    def optimizer_names(self) -> list[str]:
        return self.game.optimizer_names() if self.game is not None else []

    def on_fit_start(self) -> None:
        if self.game is not None and self.game.kind == "refine":
            self._fit_x_dev = self._fit_x.to(self.device)
            self._real_cdf = {k: v.to(self.device) for k, v in self._real_cdf.items()}

    def noise_scale(self) -> float:
        """s_e = s0 (1 - e/E) for epoch e = 1..E: restarts every fit and reaches exactly 0 in the last epoch
        (code ``tree/raw_split.py`` L95)."""
        e, total = self.trainer.current_epoch + 1, max(int(self.trainer.max_epochs or 1), 1)
        return max(float(self.hparams.noise_start) * (1.0 - e / total), 0.0)

    def _draw_real(self, group: str, n: int) -> Tensor:
        """n i.i.d. draws with replacement from P_{s_group} (the refinement's two real streams)."""
        cdf = self._real_cdf[group]
        u = torch.rand(n, device=cdf.device, dtype=cdf.dtype) * cdf[-1]
        idx = torch.searchsorted(cdf, u, right=True).clamp_(max=len(cdf) - 1)
        return self._fit_x_dev[idx]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, _idx = batch  # labels never reach training
        noise = self.noise_scale()
        if self.game.kind == "raw":
            self.game.training_step(self, x, noise)
        else:
            n = len(x)
            self.game.training_step(self, self._draw_real("l", n), self._draw_real("m", n), noise)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        hp = self.hparams
        epoch = self.trainer.current_epoch + 1
        if epoch >= hp.collapse_check_from and (epoch - hp.collapse_check_from) % max(hp.collapse_check_every, 1) == 0:
            scores = self.game.collapse_scores(self.noise_scale(), self.device)
            self._collapse_log = scores
            # D's BCE on each generator's fakes: the curve that shows a generator dying before it is flagged.
            self.log_dict({f"train/fake_bce_g{i}": s for i, s in enumerate(scores)}, on_step=False, on_epoch=True)
            if min(scores) < hp.collapse_threshold:
                rank_zero_warn(f"HC-MGAN {self._progress}: generator collapse at epoch {epoch} "
                               f"(D's fake BCE per generator {[round(s, 4) for s in scores]} < {hp.collapse_threshold})"
                               + ("; last attempt: training on to the end of the schedule" if self._last_attempt else ""))
                self._collapsed = True
                # The last attempt is kept: it must finish its schedule (the noise reaches 0 only in the last epoch).
                self.trainer.should_stop = not self._last_attempt

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The current stage's game is transient (a run resumes per stage from <root>/tree/):
        # checkpoints carry the tree only, so they load into a fresh module and stay small.
        sd = checkpoint.get("state_dict", {})
        for key in [k for k in sd if k.startswith("game.")]:
            del sd[key]
        checkpoint["optimizer_states"] = []
        checkpoint["lr_schedulers"] = []
        checkpoint["hc_mgan_stage"] = self._progress

    # ================================================================ tree growth
    def fit_method(self, make_trainer: Callable[..., pl.Trainer], datamodule: pl.LightningDataModule,
                   ckpt_path: str | None = None) -> pl.Trainer:
        datamodule.setup("fit")
        fit = datamodule.fit_set
        self._fit_x, self._fit_y = fit.x, fit.y
        self._dataset_name = str(getattr(datamodule, "name", ""))
        if int(datamodule.batch_size) != int(self.hparams.batch_size):
            rank_zero_warn(f"HC-MGAN: datamodule batch {datamodule.batch_size} != method batch_size "
                           f"{self.hparams.batch_size}; real batches follow the datamodule")
        first = make_trainer()
        pending = [first]
        # Each stage sets its own length (raw_epochs / refine_epochs). A trainer that limits the batches
        # per epoch (trainer=smoke, debugging) is asking for a quick run: its max_epochs then caps every
        # stage, so `trainer=smoke` grows a whole (poor) tree in seconds instead of the configured schedule.
        quick = isinstance(first.limit_train_batches, int) or first.fast_dev_run
        cap = int(first.max_epochs) if quick and first.max_epochs and first.max_epochs > 0 else None

        def next_trainer(epochs: int) -> pl.Trainer:
            trainer = pending.pop() if pending else make_trainer()
            trainer.fit_loop.max_epochs = int(epochs) if cap is None else min(int(epochs), cap)
            return trainer

        root = self.hparams.tree_dir or first.default_root_dir or os.getcwd()
        self._tree_dir = Path(root) / "tree"
        self._restore(len(fit), ckpt_path)
        trainer = first
        try:
            while self.tree.n_leaves < self.n_clusters:
                trainer = self._grow_one_split(next_trainer, datamodule) or trainer
        finally:
            datamodule.set_sample_weights(None)
            self.game = None
        rank_zero_info(f"HC-MGAN: tree complete with {self.tree.n_leaves} leaves ({self.tree.n_splits} splits)")
        return trainer

    def _restore(self, n_fit: int, ckpt_path: str | None) -> None:
        """Tree from <root>/tree/tree.pt, else from ``ckpt_path``, else a fresh root."""
        sources = []
        tree_file = self._tree_dir / TREE_FILE
        if tree_file.is_file():
            sources.append(("tree dir", torch.load(tree_file, map_location="cpu", weights_only=True)["tree"]))
        if ckpt_path:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            sd = {k[len("tree."):]: v for k, v in ck.get("state_dict", {}).items() if k.startswith("tree.")}
            if sd:
                sources.append(("checkpoint", sd))
        best = None
        for name, sd in sources:
            n = len(sd["_extra_state"]["splits"])
            if best is None or n > best[2]:
                best = (name, sd, n)
        if best is not None:
            self.tree.load_state_dict(best[1])
            self._tree_version += 1
            if self.tree.n_fit != n_fit:
                raise ConfigError(f"HC-MGAN: the saved tree ({best[0]}) was grown on {self.tree.n_fit} examples, "
                                  f"this fit set has {n_fit}; use a fresh run folder")
            rank_zero_info(f"HC-MGAN: resuming from the {best[0]}: {self.tree.n_splits} splits done, "
                           f"{self.tree.n_leaves} leaves")
        elif not self.tree.initialized or self.tree.n_fit != n_fit:
            self.tree.init_root(n_fit)

    def _grow_one_split(self, next_trainer: Callable[[int], pl.Trainer],
                        datamodule: pl.LightningDataModule) -> pl.Trainer | None:
        hp = self.hparams
        j, k = self.tree.n_splits, self.tree.next_node()
        s_k = self.tree.memberships[k]
        n_split_total = self.n_clusters - 1
        state = self._load_in_progress(j, k)
        trainer = None
        if state is None:
            state = {"split": j, "node": k, "stage": -1, "changes": [], "attempts": [], "seconds": [],
                     "early_stopped": False, "done": False}
        else:
            rank_zero_info(f"HC-MGAN: resuming split {j + 1}/{n_split_total} at stage {state['stage'] + 1}")
        while not state["done"]:
            t = state["stage"] + 1
            kind = "raw" if t == 0 else "refine"
            self._progress = (f"split {j + 1}/{n_split_total} (node {k}, mass {float(s_k.sum()):.1f}): "
                              + ("raw split" if t == 0 else f"refinement {t}/{hp.n_refinements}"))
            rank_zero_info(f"HC-MGAN {self._progress}")
            start = time.perf_counter()
            s_l_prev = state.get("s_l")
            warm = state.get("game") if hp.warm_start == "refine" and kind == "refine" else None
            trainer, members, p_first, attempts = self._run_stage(kind, s_k, state.get("s_l"), state.get("s_m"),
                                                                  next_trainer, datamodule, warm)
            s_l = p_first * s_k
            s_m = s_k - s_l
            state.update({"stage": t, "s_l": s_l, "s_m": s_m,
                          "members": [_cpu_state(m) for m in members],
                          "gens": [[_cpu_state(g) for g in side] for side in self.game.child_generators()]})
            if hp.warm_start == "refine" and t < hp.n_refinements:  # the next refinement starts from these nets
                state["game"] = {"kind": kind, "state": _cpu_state(self.game)}
            state["attempts"].append(attempts)
            state["seconds"].append(round(time.perf_counter() - start, 1))
            if s_l_prev is not None:
                change = float((s_l - s_l_prev).abs().sum())
                state["changes"].append(change)
                if t >= hp.refine_stop_after and change < hp.refine_stop_change * len(s_k):
                    state["early_stopped"] = t < hp.n_refinements
                    state["done"] = True
            if t >= hp.n_refinements:
                state["done"] = True
            elif min(float(s_l.sum()), float(s_m.sum())) < 1.0:
                # A child with less than one example's mass: the refinement's real stream for it would be
                # empty. Keep the split as it is (the next split takes the heaviest leaf anyway).
                rank_zero_warn(f"HC-MGAN {self._progress}: a child holds < 1 example's mass "
                               f"({float(s_l.sum()):.2f} / {float(s_m.sum()):.2f}); skipping the remaining refinements")
                state["early_stopped"] = True
                state["done"] = True
            self.game = None
            self._save_in_progress(state)
            rank_zero_info(f"HC-MGAN {self._progress} done in {state['seconds'][-1]} s: masses "
                           f"{float(s_l.sum()):.1f} / {float(s_m.sum()):.1f}"
                           + (f", membership change {state['changes'][-1]:.1f}" if state["changes"] else ""))
        self._commit(state)
        return trainer

    def _run_stage(self, kind: str, s_k: Tensor, s_l: Tensor | None, s_m: Tensor | None,
                   next_trainer: Callable[[int], pl.Trainer], datamodule: pl.LightningDataModule,
                   warm: dict[str, Any] | None = None) -> tuple[pl.Trainer, list[SplitMember], Tensor, int]:
        hp = self.hparams
        epochs = int(hp.raw_epochs if kind == "raw" else hp.refine_epochs)
        for attempt in range(1, int(hp.max_attempts) + 1):
            self.game = (RawSplitGame if kind == "raw" else RefinementGame)(self.spec, self.game_hp)
            if warm is not None and attempt == 1:  # a restart after a collapse starts from fresh nets
                self.game.warm_start(warm["kind"], warm["state"])
            if kind == "raw":
                # Real batches ~ P_{s_k}; an epoch is floor(mass / batch) iterations (code raw_split.py L74).
                datamodule.set_sample_weights(s_k)
            else:
                # Each group draws its own real batch from P_{s_l} / P_{s_m} (training_step); the loader
                # is the clock only: an epoch is floor(mass_k / (2 batch)) iterations (code refinement.py L73).
                datamodule.set_sample_weights(s_k / 2.0)
                self._real_cdf = {"l": torch.cumsum(s_l.double(), 0), "m": torch.cumsum(s_m.double(), 0)}  # float64: exact at 70k
            # Budget knob: light nodes get at least this many iterations (more epochs of their short length).
            floor = int(hp.min_raw_iters if kind == "raw" else hp.min_refine_iters)
            stage_epochs = max(epochs, math.ceil(floor / datamodule.batches_per_epoch())) if floor > 0 else epochs
            trainer = next_trainer(stage_epochs)
            self._collapsed = False
            self._last_attempt = attempt == int(hp.max_attempts)
            trainer.fit(self, datamodule=datamodule)
            if not self._collapsed:
                break
            if attempt < int(hp.max_attempts):
                rank_zero_warn(f"HC-MGAN {self._progress}: restarting the fit (attempt {attempt + 1}/{hp.max_attempts})")
            else:
                rank_zero_warn(f"HC-MGAN {self._progress}: still collapsed after {attempt} attempts; keeping the last one")
        self._real_cdf, self._fit_x_dev = {}, None
        device = trainer.strategy.root_device
        self.game.to(device)
        members = self.game.split_members()
        p_first = self._first_child_prob(members, device)
        return trainer, members, p_first, attempt

    @torch.no_grad()
    def _first_child_prob(self, members: list[SplitMember], device: torch.device) -> Tensor:
        """Re-estimation over the whole fit set (Alg. 2 line 13 / Alg. 3 lines 7-8), noise-free, float64 on CPU."""
        bs = int(self.hparams.inference_batch_size)
        x = self._fit_x
        out = [first_child_prob(members, x[i: i + bs].to(device)).double().cpu() for i in range(0, len(x), bs)]
        return torch.cat(out)

    def _commit(self, state: dict[str, Any]) -> None:
        members = [SplitMember(self.spec) for _ in state["members"]]
        for m, sd in zip(members, state["members"]):
            m.load_state_dict(sd)
        gens = []
        for side in state["gens"]:
            side_gens = [build_generator(self.spec) for _ in side]
            for g, sd in zip(side_gens, side):
                g.load_state_dict(sd)
            gens.append(side_gens)
        meta = {"refinements": state["stage"], "early_stopped": state["early_stopped"],
                "membership_changes": [round(c, 3) for c in state["changes"]], "attempts": state["attempts"],
                "seconds": state["seconds"]}
        self.tree.commit_split(state["node"], state["s_l"], state["s_m"], members, gens[0], gens[1], meta)
        self._tree_version += 1
        self._save_tree()
        (self._tree_dir / IN_PROGRESS).unlink(missing_ok=True)

    # ---------------------------------------------------------------- files
    def _save_tree(self) -> None:
        if self._tree_dir is None or (self._trainer is not None and self.trainer.global_rank != 0):
            return
        self._tree_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save({"tree": self.tree.state_dict()}, self._tree_dir / TREE_FILE)
        with open(self._tree_dir / "nodes.json", "w") as fh:
            json.dump(self.tree.summary(), fh, indent=1)

    def _save_in_progress(self, state: dict[str, Any]) -> None:
        if self._tree_dir is None or (self._trainer is not None and self.trainer.global_rank != 0):
            return
        self._tree_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save(state, self._tree_dir / IN_PROGRESS)

    def _load_in_progress(self, split: int, node: int) -> dict[str, Any] | None:
        path = self._tree_dir / IN_PROGRESS if self._tree_dir is not None else None
        if path is None or not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("split") != split or state.get("node") != node:
            rank_zero_warn(f"HC-MGAN: ignoring {path} (it is for split {state.get('split')}, node {state.get('node')})")
            return None
        return state


def _cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
