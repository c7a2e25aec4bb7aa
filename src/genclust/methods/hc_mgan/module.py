"""HC-MGAN (de Mello, Assunção, Murai, AAAI 2022): top-down deep clustering with multi-generator GANs.

The tree grows by splitting the leaf with the largest mass until ``n_clusters`` leaves (Algorithm 1):
every split is a raw split (Algorithm 2) followed by ``refinement.count`` refinements (Algorithms 3-4),
each one Lightning fit (``make_trainer(max_epochs=<stage length>)``) driven from :meth:`HCMGAN.fit_method`;
real batches follow the stage's membership weights through ``sampling_weights()``. After every fit the
fit set's membership vectors are re-estimated with the fit's classifier(s); the tree (memberships, split
classifiers, leaf generators, metadata) is written to ``<root>/tree/`` after every stage and is part of
``state_dict``, so a run restarted in the same folder resumes at the first unfinished stage and a
checkpoint clusters new data. The per-K curve: one tree-cut read-out ``k<k>`` per number of leaves.
``trainer.max_time`` is the budget of the whole tree, not of one stage fit: stages are paced to it
(``hc_mgan/clock.py``).

Choices beyond the paper are documented where they are made and in ``configs/method/hc_mgan.yaml``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from genclust.errors import ConfigError
from genclust.methods.base import ClusteringMethod
from genclust.methods.hc_mgan.clock import (
    TreeClock,
    max_time_string,
    paced_epochs,
    planned_epochs,
    remaining_iterations,
)
from genclust.methods.hc_mgan.games import (
    GameSettings,
    RawSplitGame,
    RefinementGame,
    first_child_prob,
    sample_z,
)
from genclust.methods.hc_mgan.settings import Collapse, Noise, RawSplit, Refinement, check, settings
from genclust.methods.hc_mgan.store import TreeStore, commit_split, cpu_state
from genclust.methods.hc_mgan.tree import Tree
from genclust.nets.hc_mgan import SplitMember, check_shape
from genclust.progress import budget_timer
from genclust.readouts import Readout, TreeCutReadout

CUT_KEY = re.compile(r"readouts\.k(\d+)\._extra_state")


class HCMGAN(ClusteringMethod):
    generative = True
    save_at_stop = False  # stages checkpoint themselves (the tree, <run>/tree/); RunGuard leaves last.ckpt alone

    def __init__(
        self,
        n_clusters: int,
        img_shape: Sequence[int],
        nets: Mapping[str, Any],
        optim: Mapping[str, Any],
        readouts: Mapping[str, Readout] | None = None,
        clustering: str = "argmax",
        batch_size: int = 100,
        pixel_range: str = "tanh",
        divergence_check_every: int = 50,
        autocast: str = "none",
        gen_batch_size: int = 100,
        z_dim: int = 100,
        z_prior: str = "uniform01",
        init: str = "default",
        lambda_cls: float = 1.0,
        d_fake_weighting: str = "per_batch",
        raw_split: Mapping[str, Any] | None = None,
        refinement: Mapping[str, Any] | None = None,
        noise: Mapping[str, Any] | None = None,
        collapse: Mapping[str, Any] | None = None,
        inference_batch_size: int = 1000,
        tree_dir: str | None = None,
    ) -> None:
        super().__init__(n_clusters, img_shape, batch_size, pixel_range, divergence_check_every, nets=nets,
                         optim=optim, readouts=readouts, clustering=clustering, autocast=autocast)
        self.save_hyperparameters(ignore=["nets", "optim", "readouts"])
        self.raw = settings(RawSplit, raw_split, "raw_split")
        self.ref = settings(Refinement, refinement, "refinement")
        self.noise = settings(Noise, noise, "noise")
        self.collapse = settings(Collapse, collapse, "collapse")
        check(self.raw, self.ref, self.collapse)
        check_shape(self.img_shape)
        self.z_dim, self.z_prior = int(z_dim), str(z_prior)
        # Validates the prior by drawing from it; the draw is part of the seeded RNG stream (golden test).
        sample_z(1, 1, self.z_prior, torch.device("cpu"))
        self.inference_batch_size = int(inference_batch_size)
        self.tree_dir = tree_dir
        # What the games need (they never see the LightningModule's hparams); validates the choices.
        self.game_settings = GameSettings(
            z_dim=self.z_dim, z_prior=self.z_prior, gen_batch_size=int(gen_batch_size), init=init,
            lambda_cls=float(lambda_cls), raw_lambda_squared=self.raw.lambda_squared,
            gens_per_group=self.ref.gens_per_group, cls_reduction=self.ref.cls_reduction,
            fake_draw=self.ref.fake_draw, d_fake_weighting=d_fake_weighting, noise_kind=self.noise.kind)
        self.tree = Tree()
        self.game: RawSplitGame | RefinementGame | None = None
        # Transient training state (never in the state_dict).
        self._fit_x: Tensor | None = None  # the fit set, kept for re-estimation and figures
        self._fit_y: Tensor | None = None  # labels: figures' class keys only, never training
        self._dataset_name = ""
        self._stage_weights: Tensor | None = None  # P_{s_k} of the running stage (sampling_weights)
        self._real_cdf: dict[str, Tensor] = {}
        self._fit_x_dev: Tensor | None = None
        self._collapsed = False
        self._last_attempt = False
        self._store: TreeStore | None = None  # <root>/tree/ of the running fit_method
        self._clock: TreeClock | None = None  # the tree's trainer.max_time budget, when it has one
        self._batches_run = 0  # training steps of the running stage (all its attempts)
        self._progress = ""

    # ================================================================ nets
    def make_generator(self) -> torch.nn.Module:
        return self.build_net("generator", z_dim=self.z_dim, img_shape=self.img_shape, pixel_range=self.pixel_range)

    def make_critic(self) -> torch.nn.Module:
        return self.build_net("critic", img_shape=self.img_shape)

    def new_game(self, kind: str) -> RawSplitGame | RefinementGame:
        """Fresh nets of a raw split or a refinement, from the config factories."""
        cls = RawSplitGame if kind == "raw" else RefinementGame
        return cls(self.make_generator, self.make_critic, self.game_settings)

    # ================================================================ clustering contract
    def embed(self, x: Tensor, name: str) -> Tensor:
        """``split_probs``: p(first child | x) of every split [N, n_splits] (what the tree cuts read)."""
        if name != "split_probs":
            return super().embed(x, name)
        return self.tree.split_probs(x, None, self.inference_batch_size)

    def prepare_readouts(self) -> None:
        """One tree-cut read-out ``k<k>`` per number of leaves the tree passed through (the per-K curve)."""
        n = self.tree.n_leaves
        for name in [m for m, r in self.readouts.items() if isinstance(r, TreeCutReadout) and r.cut_k > n]:
            del self.readouts[name]
        for k in range(1, n + 1):
            if f"k{k}" not in self.readouts:
                self.readouts[f"k{k}"] = TreeCutReadout(k)

    def readout_fit_input(self, readout: Readout, x: Tensor, batch_size: int) -> Any:
        if isinstance(readout, TreeCutReadout):  # the root-to-leaf paths of the tree cut at k leaves
            return [self.tree.path(leaf) for leaf in self.tree.leaves(readout.cut_k - 1)]
        return super().readout_fit_input(readout, x, batch_size)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Tree cuts are created after construction (prepare_readouts): recreate the saved ones first.
        for key in state_dict:
            match = CUT_KEY.fullmatch(key[len(prefix):]) if key.startswith(prefix) else None
            if match and f"k{match[1]}" not in self.readouts:
                self.readouts[f"k{match[1]}"] = TreeCutReadout(int(match[1]))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def cluster_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """Leaf probabilities of the current tree (leaves by node id; the product of the split classifiers'
        outputs along each root-to-leaf path), zero-padded to ``n_clusters`` columns while it grows."""
        n = self.tree.n_splits if self.tree.initialized else 0
        if n == 0:
            probs = torch.ones(len(x), 1, device=x.device)
        else:
            probs = self.tree.leaf_probs_from_split_probs(self.embed(x, "split_probs"), n).float()
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
            out[rows] = self.generate_node(leaves[c], len(rows))
        return out

    def generate_node(self, node: int, n: int) -> Tensor:
        """n images of node ``node``'s generator(s) (each image from one of them, uniformly)."""
        gens = list(self.tree.generators[f"n{node}"])
        z = sample_z(n, self.z_dim, self.z_prior, self.device)
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
                            "splits": splits, "z_prior": self.z_prior,
                            "noise": {"kind": self.noise.kind, "start": self.noise.start},
                            "refinement_generators_per_group": self.ref.gens_per_group,
                            "d_fake_weighting": self.game_settings.d_fake_weighting,
                            "refinement_fake_draw": self.ref.fake_draw}}

    def save_figures(self, out_dir: Path) -> list[Path]:
        from genclust.viz.tree import save_tree_figures

        return save_tree_figures(self.tree, Path(out_dir), self.img_shape, self.generate_node, self.to_unit_range,
                                 self._fit_x, self._fit_y, self._dataset_name)

    # ================================================================ Lightning hooks (one stage)
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        if self.game is None:
            raise RuntimeError("HC-MGAN trains through fit_method (one fit per raw split/refinement), "
                               "not a bare trainer.fit")
        return [self.make_optimizer(player, params) for _, player, params in self.game.players()]

    def optimizer_names(self) -> list[str]:
        return [name for name, _, _ in self.game.players()] if self.game is not None else []

    def sampling_weights(self) -> Tensor | None:
        """The running stage's real-batch weights (P_{s_k}; the datamodule draws in proportion), else None."""
        return self._stage_weights

    def on_fit_start(self) -> None:
        if self.game is not None and self.game.kind == "refine":
            self._fit_x_dev = self._fit_x.to(self.device)
            self._real_cdf = {k: v.to(self.device) for k, v in self._real_cdf.items()}

    def noise_scale(self) -> float:
        """s_e = s0 (1 - e/E) for epoch e = 1..E: restarts every fit and reaches exactly 0 in the last epoch
        (code ``tree/raw_split.py`` L95)."""
        e, total = self.trainer.current_epoch + 1, max(int(self.trainer.max_epochs or 1), 1)
        return max(float(self.noise.start) * (1.0 - e / total), 0.0)

    def _draw_real(self, group: str, n: int) -> Tensor:
        """n i.i.d. draws with replacement from P_{s_group} (the refinement's two real streams)."""
        cdf = self._real_cdf[group]
        u = torch.rand(n, device=cdf.device, dtype=cdf.dtype) * cdf[-1]
        idx = torch.searchsorted(cdf, u, right=True).clamp_(max=len(cdf) - 1)
        return self._fit_x_dev[idx]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, _idx = batch  # labels never reach training
        self._batches_run += 1
        noise = self.noise_scale()
        with self.autocast():
            if self.game.kind == "raw":
                self.game.training_step(self, x, noise)
            else:
                n = len(x)
                self.game.training_step(self, self._draw_real("l", n), self._draw_real("m", n), noise)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        hp = self.collapse
        epoch = self.trainer.current_epoch + 1
        if epoch >= hp.check_from and (epoch - hp.check_from) % max(hp.check_every, 1) == 0:
            scores = self.game.collapse_scores(self.noise_scale(), self.device)
            # D's BCE on each generator's fakes: the curve that shows a generator dying before it is flagged.
            self.log_dict({f"train/fake_bce_g{i}": s for i, s in enumerate(scores)}, on_step=False, on_epoch=True)
            if min(scores) < hp.threshold:
                rank_zero_warn(f"HC-MGAN {self._progress}: generator collapse at epoch {epoch} "
                               f"(D's fake BCE per generator {[round(s, 4) for s in scores]} < {hp.threshold})"
                               + ("; last attempt: training on to the end of the schedule" if self._last_attempt else ""))
                self._collapsed = True
                # The last attempt is kept: it must finish its schedule (the noise reaches 0 only in the last epoch).
                self.trainer.should_stop = not self._last_attempt

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
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
        if int(datamodule.batch_size) != self.batch_size:
            rank_zero_warn(f"HC-MGAN: datamodule batch {datamodule.batch_size} != method batch_size "
                           f"{self.batch_size}; real batches follow the datamodule")
        # Each stage sets its own length (raw_split.epochs / refinement.epochs). A trainer that limits the
        # batches per epoch (trainer=smoke, debugging) is asking for a quick run: its max_epochs then caps
        # every stage, so `trainer=smoke` grows a whole (poor) tree in seconds instead of the configured schedule.
        probe = make_trainer()
        quick = isinstance(probe.limit_train_batches, int) or probe.fast_dev_run
        cap = int(probe.max_epochs) if quick and probe.max_epochs and probe.max_epochs > 0 else None
        timer = budget_timer(probe)

        def stage_trainer(epochs: int) -> pl.Trainer:
            overrides: dict[str, Any] = {"max_epochs": int(epochs) if cap is None else min(int(epochs), cap)}
            if self._clock is not None:  # what is left of the tree's budget caps the stage fit too
                overrides["max_time"] = max_time_string(self._clock.left())
            return make_trainer(**overrides)

        root = self.tree_dir or probe.default_root_dir or os.getcwd()
        self._store = TreeStore(Path(root) / "tree")
        self._restore(len(fit), ckpt_path)
        self._clock = None
        if timer is not None:  # stages already run (a resumed tree) count against the budget and set the pace
            self._clock = TreeClock(float(timer._duration))
            for split in self.tree.splits:
                self._clock.add_past_stages(split.get("seconds", []), split.get("iterations", []))
        trainer = probe
        try:
            while self.tree.n_leaves < self.n_clusters:
                trainer = self._grow_one_split(stage_trainer, datamodule) or trainer
        finally:
            self._stage_weights = None
            self.game = None
        if self._clock is not None:
            rank_zero_info(f"HC-MGAN: tree grown in {self._clock.elapsed() / 60:.1f} min of its "
                           f"{self._clock.budget_s / 60:.1f} (trainer.max_time)")
        rank_zero_info(f"HC-MGAN: tree complete with {self.tree.n_leaves} leaves ({self.tree.n_splits} splits)")
        return trainer

    def _restore(self, n_fit: int, ckpt_path: str | None) -> None:
        """Tree from <root>/tree/tree.pt, else from ``ckpt_path``, else a fresh root."""
        saved = self._store.saved_tree()
        sources = [("tree dir", saved)] if saved is not None else []
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
            if self.tree.n_fit != n_fit:
                raise ConfigError(f"HC-MGAN: the saved tree ({best[0]}) was grown on {self.tree.n_fit} examples, "
                                  f"this fit set has {n_fit}; use a fresh run folder")
            rank_zero_info(f"HC-MGAN: resuming from the {best[0]}: {self.tree.n_splits} splits done, "
                           f"{self.tree.n_leaves} leaves")
        elif not self.tree.initialized or self.tree.n_fit != n_fit:
            self.tree.init_root(n_fit)

    def _grow_one_split(self, next_trainer: Callable[[int], pl.Trainer],
                        datamodule: pl.LightningDataModule) -> pl.Trainer | None:
        ref = self.ref
        j, k = self.tree.n_splits, self.tree.next_node()
        s_k = self.tree.memberships[k]
        n_split_total = self.n_clusters - 1
        state = self._store.load_in_progress(j, k)
        trainer = None
        if state is None:
            state = {"split": j, "node": k, "stage": -1, "changes": [], "attempts": [], "seconds": [],
                     "iterations": [], "pace": [], "early_stopped": False, "done": False}
        else:
            rank_zero_info(f"HC-MGAN: resuming split {j + 1}/{n_split_total} at stage {state['stage'] + 1}")
            if self._clock is not None:
                self._clock.add_past_stages(state["seconds"], state.get("iterations", []))
        while not state["done"]:
            t = state["stage"] + 1
            kind = "raw" if t == 0 else "refine"
            self._progress = (f"split {j + 1}/{n_split_total} (node {k}, mass {float(s_k.sum()):.1f}): "
                              + ("raw split" if t == 0 else f"refinement {t}/{ref.count}"))
            pace = self._pace(k, float(s_k.sum()), state, t, int(datamodule.batch_size))
            rank_zero_info(f"HC-MGAN {self._progress}" + (f" at {pace:.2f}x its epochs (tree budget)" if pace < 1 else ""))
            start = time.perf_counter()
            s_l_prev = state.get("s_l")
            warm = state.get("game") if ref.warm_start == "refine" and kind == "refine" else None
            self._batches_run = 0
            trainer, members, p_first, attempts = self._run_stage(kind, s_k, state.get("s_l"), state.get("s_m"),
                                                                  next_trainer, datamodule, warm, pace)
            s_l = p_first * s_k
            s_m = s_k - s_l
            gens = self.game.child_generators()
            state.update({"stage": t, "s_l": s_l, "s_m": s_m, "members": [cpu_state(m) for m in members],
                          "gens": [[cpu_state(g) for g in side] for side in gens],
                          "arch": {"member": members[0].arch, "generator": gens[0][0].arch}})
            if ref.warm_start == "refine" and t < ref.count:  # the next refinement starts from these nets
                state["game"] = {"kind": kind, "state": cpu_state(self.game)}
            state["attempts"].append(attempts)
            state["seconds"].append(round(time.perf_counter() - start, 1))
            state.setdefault("iterations", []).append(self._batches_run)
            state.setdefault("pace", []).append(round(pace, 4))
            if self._clock is not None:
                self._clock.record(kind, state["seconds"][-1], self._batches_run)
            if s_l_prev is not None:
                change = float((s_l - s_l_prev).abs().sum())
                state["changes"].append(change)
                if t >= ref.stop_after and change < ref.stop_change * len(s_k):
                    state["early_stopped"] = t < ref.count
                    state["done"] = True
            if t >= ref.count:
                state["done"] = True
            elif min(float(s_l.sum()), float(s_m.sum())) < 1.0:
                # A child with less than one example's mass: the refinement's real stream for it would be
                # empty. Keep the split as it is (the next split takes the heaviest leaf anyway).
                rank_zero_warn(f"HC-MGAN {self._progress}: a child holds < 1 example's mass "
                               f"({float(s_l.sum()):.2f} / {float(s_m.sum()):.2f}); skipping the remaining refinements")
                state["early_stopped"] = True
                state["done"] = True
            self.game = None
            self._store.save_in_progress(state, self._writer())
            rank_zero_info(f"HC-MGAN {self._progress} done in {state['seconds'][-1]} s: masses "
                           f"{float(s_l.sum()):.1f} / {float(s_m.sum()):.1f}"
                           + (f", membership change {state['changes'][-1]:.1f}" if state["changes"] else ""))
        self._commit(state)
        return trainer

    def _pace(self, node: int, node_mass: float, state: dict[str, Any], t: int, batch_size: int) -> float:
        """Fraction of its epochs stage ``t`` of the split of ``node`` runs to keep the tree on its budget."""
        if self._clock is None:
            return 1.0
        others = [self.tree.nodes[n]["mass"] for n in self.tree.leaves() if n != node]
        children = (float(state["s_l"].sum()), float(state["s_m"].sum())) if "s_l" in state else None
        later = self.n_clusters - 2 - self.tree.n_splits  # splits after this one
        # Children not split yet are assumed to divide their parent as the tree's splits did so far.
        shares = [min(s["masses"]) / sum(s["masses"]) for s in self.tree.splits if sum(s["masses"]) > 0]
        share = sum(shares) / len(shares) if shares else 0.5
        work = remaining_iterations(others, node_mass, children, t, later, share, self.raw, self.ref, batch_size)
        pace = self._clock.pace(work)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank must run the same number of epochs: rank 0's clock decides
            on_gpu = torch.distributed.get_backend() == "nccl"  # NCCL broadcasts device tensors only
            shared = torch.tensor([pace], dtype=torch.float64,
                                  device=torch.device("cuda", torch.cuda.current_device()) if on_gpu else None)
            torch.distributed.broadcast(shared, src=0)
            pace = float(shared)
        if pace < 1.0 and not self._clock.paced:
            self._clock.paced = True
            need = self._clock.projected_s(work) or 0.0
            rank_zero_warn(f"HC-MGAN: at this host's pace the rest of the tree needs ~{need / 60:.1f} min and "
                           f"{self._clock.left() / 60:.1f} min of trainer.max_time are left: stages now run "
                           f"{pace:.2f}x their epochs (re-planned every stage; their noise schedules anneal faster)")
        return pace

    def _run_stage(self, kind: str, s_k: Tensor, s_l: Tensor | None, s_m: Tensor | None,
                   next_trainer: Callable[[int], pl.Trainer], datamodule: pl.LightningDataModule,
                   warm: dict[str, Any] | None = None,
                   pace: float = 1.0) -> tuple[pl.Trainer, list[SplitMember], Tensor, int]:
        stage = self.raw if kind == "raw" else self.ref
        max_attempts = self.collapse.max_attempts
        for attempt in range(1, max_attempts + 1):
            self.game = self.new_game(kind)
            if warm is not None and attempt == 1:  # a restart after a collapse starts from fresh nets
                self.game.warm_start(warm["kind"], warm["state"])
            if kind == "raw":
                # Real batches ~ P_{s_k}; an epoch is floor(mass / batch) iterations (code raw_split.py L74).
                self._stage_weights = s_k
            else:
                # Each group draws its own real batch from P_{s_l} / P_{s_m} (training_step); the loader
                # is the clock only: an epoch is floor(mass_k / (2 batch)) iterations (code refinement.py L73).
                self._stage_weights = s_k / 2.0
                self._real_cdf = {"l": torch.cumsum(s_l.double(), 0), "m": torch.cumsum(s_m.double(), 0)}  # float64: exact at 70k
            per_epoch = datamodule.batches_per_epoch(self._stage_weights)
            trainer = next_trainer(paced_epochs(planned_epochs(stage, per_epoch), pace))
            self._collapsed = False
            self._last_attempt = attempt == max_attempts
            trainer.fit(self, datamodule=datamodule)
            if not self._collapsed:
                break
            if attempt < max_attempts:
                rank_zero_warn(f"HC-MGAN {self._progress}: restarting the fit (attempt {attempt + 1}/{max_attempts})")
            else:
                rank_zero_warn(f"HC-MGAN {self._progress}: still collapsed after {attempt} attempts; keeping the last one")
        self._real_cdf, self._fit_x_dev, self._stage_weights = {}, None, None
        device = trainer.strategy.root_device
        self.game.to(device)
        members = self.game.split_members()
        p_first = self._first_child_prob(members, device)
        return trainer, members, p_first, attempt

    @torch.no_grad()
    def _first_child_prob(self, members: list[SplitMember], device: torch.device) -> Tensor:
        """Re-estimation over the whole fit set (Alg. 2 line 13 / Alg. 3 lines 7-8), noise-free, float64 on CPU."""
        bs = self.inference_batch_size
        x = self._fit_x
        out = [first_child_prob(members, x[i: i + bs].to(device)).double().cpu() for i in range(0, len(x), bs)]
        return torch.cat(out)

    def _commit(self, state: dict[str, Any]) -> None:
        commit_split(self.tree, state)
        self._store.save_tree(self.tree, self._writer())

    def _writer(self) -> bool:
        return self._trainer is None or self.trainer.global_rank == 0
