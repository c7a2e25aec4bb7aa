"""The whole tree on one wall-clock budget: ``trainer.max_time`` paces every stage.

HC-MGAN grows its tree through one Lightning fit per stage (a raw split, then its refinements), so
Lightning's ``max_time`` on its own would cap each of those fits, not the run. The tree reads
``trainer.max_time`` as the budget of the whole tree instead:

* every stage fit gets what is left of the budget as its own ``max_time`` (a safety net only);
* before each stage the clock projects the rest of the tree (this stage, the rest of its split, and the
  splits still to come, heaviest leaf first) from the seconds per iteration measured so far. When that
  projection does not fit in the time left, the stage runs ``pace`` (< 1) of its epochs; its instance-noise
  schedule then anneals over the shorter fit. Re-planned at every stage, so all later stages shrink alike.

A host fast enough for the configured schedule never paces: its tree is the unbudgeted one, bit for bit.
On a slower host the tree ends near its budget with all its splits, instead of running past it. The first
stage has no measured pace yet and runs as configured (capped by the budget).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

from genclust.methods.hc_mgan.settings import RawSplit, Refinement

# Seconds per refinement iteration / per raw-split iteration, until a refinement has been timed: a
# refinement iteration updates two groups (two generators, a classifier and D each), ~1.9x a raw-split
# iteration in the mnist_test budget trees (RESULTS, HC-MGAN seed 2: root raw split 43 ms, refinements ~83 ms).
REFINE_COST_GUESS = 2.0


def planned_epochs(stage: RawSplit | Refinement, per_epoch: int) -> int:
    """A stage's epochs: ``stage.epochs``, more for light nodes so that it runs at least ``min_iters``
    iterations (a budget knob)."""
    if stage.min_iters > 0:
        return max(stage.epochs, math.ceil(stage.min_iters / per_epoch))
    return stage.epochs


def stage_epochs(mass: float, kind: str, stage: RawSplit | Refinement, batch_size: int) -> tuple[int, int]:
    """(epochs, iterations per epoch) of a stage on a node of ``mass``, as ``HCMGAN._run_stage`` plans them:
    an epoch is floor(mass / batch) iterations (refinements: floor(mass / (2 batch)))."""
    per_epoch = max(1, math.floor((mass if kind == "raw" else mass / 2.0) / batch_size))
    return planned_epochs(stage, per_epoch), per_epoch


def split_iterations(mass: float, raw: RawSplit, ref: Refinement, batch_size: int,
                     from_stage: int = 0) -> dict[str, int]:
    """Planned iterations of one split's stages ``from_stage`` .. ``ref.count`` (0 = the raw split)."""
    work = {"raw": 0, "refine": 0}
    for t in range(from_stage, ref.count + 1):
        kind = "raw" if t == 0 else "refine"
        epochs, per_epoch = stage_epochs(mass, kind, raw if t == 0 else ref, batch_size)
        work[kind] += epochs * per_epoch
    return work


def remaining_iterations(leaf_masses: list[float], node_mass: float, children: tuple[float, float] | None,
                         next_stage: int, n_later_splits: int, child_share: float, raw: RawSplit,
                         ref: Refinement, batch_size: int) -> dict[str, int]:
    """Planned iterations left in the tree: stages ``next_stage``.. of the split being grown (of a node of
    ``node_mass``; ``leaf_masses`` are the other leaves), then ``n_later_splits`` more splits, each of the
    heaviest leaf (paper, "Overview"). Children not yet known split their parent ``child_share`` /
    ``1 - child_share``."""
    work = split_iterations(node_mass, raw, ref, batch_size, next_stage)
    if children is None:
        children = (node_mass * child_share, node_mass * (1.0 - child_share))
    heap = [-m for m in (*leaf_masses, *children)]
    heapq.heapify(heap)
    for _ in range(n_later_splits):
        mass = -heapq.heappop(heap)
        for kind, n in split_iterations(mass, raw, ref, batch_size).items():
            work[kind] += n
        heapq.heappush(heap, -mass * child_share)
        heapq.heappush(heap, -mass * (1.0 - child_share))
    return work


@dataclass
class TreeClock:
    """The tree's budget (``trainer.max_time``, seconds) and the pace measured against it."""

    budget_s: float
    start: float = field(default_factory=time.perf_counter)  # perf_counter() at the tree's time zero
    seconds: dict[str, float] = field(default_factory=lambda: {"raw": 0.0, "refine": 0.0})
    iterations: dict[str, int] = field(default_factory=lambda: {"raw": 0, "refine": 0})
    paced: bool = False  # a stage was shortened (the warning is said once)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return max(self.budget_s - self.elapsed(), 0.0)

    def record(self, kind: str, seconds: float, iterations: int) -> None:
        """A finished stage: its seconds (restarts, re-estimation and fit set-up included) and iterations."""
        if iterations > 0:
            self.seconds[kind] += float(seconds)
            self.iterations[kind] += int(iterations)

    def add_past_stages(self, seconds: list[float], iterations: list[int]) -> None:
        """One split's stages run before a restart (stage 0 = its raw split): their time counts against the
        budget and their pace is measured (trees saved before iterations were recorded: time only)."""
        self.start -= float(sum(seconds))
        for t, (sec, n) in enumerate(zip(seconds, iterations)):
            self.record("raw" if t == 0 else "refine", sec, n)

    def seconds_per_iteration(self, kind: str) -> float | None:
        if self.iterations[kind] > 0:
            return self.seconds[kind] / self.iterations[kind]
        raw = self.seconds_per_iteration("raw") if kind == "refine" else None
        return None if raw is None else raw * REFINE_COST_GUESS

    def projected_s(self, work: dict[str, int]) -> float | None:
        """Seconds the planned ``work`` takes at the measured pace (None before any stage is timed)."""
        rates = {kind: self.seconds_per_iteration(kind) for kind in work}
        if any(rate is None for kind, rate in rates.items() if work[kind] > 0):
            return None
        return sum(work[kind] * (rates[kind] or 0.0) for kind in work)

    def pace(self, work: dict[str, int]) -> float:
        """Fraction of its planned epochs the next stage runs: 1 while the projected rest fits the time left."""
        need = self.projected_s(work)
        if need is None or need <= self.left():
            return 1.0
        return self.left() / need


def paced_epochs(epochs: int, pace: float) -> int:
    """``epochs`` scaled by ``pace`` (at least one epoch: every stage trains)."""
    return epochs if pace >= 1.0 else max(1, math.floor(epochs * pace))


def max_time_string(seconds: float) -> str:
    """``trainer.max_time`` ("DD:HH:MM:SS") for ``seconds`` left, rounded up, at least 1 s."""
    s = max(1, math.ceil(seconds))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
