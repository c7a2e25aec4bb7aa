"""HC-MGAN's grouped hyperparameters (config nodes ``method.raw_split``, ``.refinement``, ``.noise``,
``.collapse``); the meaning and sources of every knob are in ``configs/method/hc_mgan.yaml``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from genclust.errors import ConfigError


@dataclass(frozen=True)
class RawSplit:
    epochs: int = 120  # Table 3
    min_iters: int = 0  # budget knob: at least this many iterations per raw-split fit
    lambda_squared: bool = False  # the code's lambda^2 on the classification term


@dataclass(frozen=True)
class Refinement:
    count: int = 6  # T (Table 3)
    epochs: int = 120
    min_iters: int = 0
    gens_per_group: int = 1
    cls_reduction: str = "sum"
    fake_draw: str = "once"
    warm_start: str = "none"
    stop_change: float = 0.0
    stop_after: int = 2


@dataclass(frozen=True)
class Noise:
    start: float = 1.0
    kind: str = "multiplicative"


@dataclass(frozen=True)
class Collapse:
    check_from: int = 40
    check_every: int = 10
    threshold: float = 0.01
    max_attempts: int = 4


T = TypeVar("T")


def settings(cls: type[T], value: Any, node: str) -> T:
    """``cls`` from a config node (a mapping, None for the defaults, or an instance); unknown keys fail."""
    if isinstance(value, cls):
        return value
    given = dict(value or {})
    known = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"hc_mgan: unknown {node} keys {unknown} (known: {sorted(known)})")
    defaults = asdict(cls())  # type: ignore[call-overload]
    cast = {k: type(defaults[k])(v) for k, v in given.items()}
    return cls(**cast)


def check(raw: RawSplit, ref: Refinement, collapse: Collapse) -> None:
    if ref.warm_start not in ("none", "refine"):
        raise ConfigError(f"hc_mgan: refinement.warm_start must be none|refine, got {ref.warm_start!r}")
    if ref.count < 0 or collapse.max_attempts < 1:
        raise ConfigError("hc_mgan: refinement.count >= 0 and collapse.max_attempts >= 1")
    if raw.epochs < 1 or (ref.count > 0 and ref.epochs < 1):
        raise ConfigError("hc_mgan: raw_split.epochs and refinement.epochs must be >= 1")
