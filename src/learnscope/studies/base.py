"""The study contract: a typed config, a list of trials, a trial runner, and an analysis that
turns the stored records into claims, metrics, figures and tables.

Data flows one way: config -> ``trials(cfg)`` (plain JSON-able specs) -> ``run_trial(cfg, spec)``
(records, possibly in another process) -> the store -> ``analyze(cfg, results)``. ``analyze`` sees
only what the store holds, so ``learnscope report`` can rebuild a report from the store alone.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from learnscope.config import StudyConfig
from learnscope.store.records import Record, TrialResult

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}


@dataclass(frozen=True)
class Claim:
    """A paper's result phrased as a checkable assertion, with what this run measured.

    ``gating`` claims decide the verdict; non-gating ones are reported (e.g. effects the
    literature itself calls weak) but never turn a run into ``partial``.
    """

    id: str
    statement: str
    measured: dict[str, Any]
    threshold: str
    holds: bool
    gating: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "statement": self.statement, "measured": _clean(self.measured),
                "threshold": self.threshold, "holds": bool(self.holds), "gating": self.gating}


def compare_claim(id: str, statement: str, name: str, value: float, op: str, threshold: float,
                  *, extra: dict[str, Any] | None = None, gating: bool = True) -> Claim:
    """A claim ``value <op> threshold``; a NaN value never holds.

    >>> compare_claim("c", "ratio is large", "ratio", 12.0, ">=", 10).holds
    True
    """
    holds = (not math.isnan(value)) and _OPS[op](value, threshold)
    measured = {name: value, **(extra or {})}
    return Claim(id, statement, measured, f"{name} {op} {threshold:g}", holds, gating)


def verdict(claims: Sequence[Claim]) -> str:
    """``reproduced`` when every gating claim holds, ``not reproduced`` when none does."""
    gating = [c for c in claims if c.gating]
    if not gating:
        return "not reproduced"
    n = sum(c.holds for c in gating)
    if n == len(gating):
        return "reproduced"
    return "partial" if n else "not reproduced"


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Analysis:
    """What a study concludes from its stored trials."""

    claims: list[Claim]
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[Any] = field(default_factory=list)  # plotly figures
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class TrialOutput:
    """What ``run_trial`` returns: the records, and ``diverged`` when training hit NaN/inf."""

    records: list[Record]
    status: str = "finished"
    info: dict[str, Any] = field(default_factory=dict)


class Study(ABC):
    """Base class of every study. Subclasses set the class attributes and three methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    source: ClassVar[str]
    """Papers and the seed document (in shared/seeds) the study comes from."""
    Config: ClassVar[type[StudyConfig]]
    quick: ClassVar[dict[str, Any]] = {}
    """Overrides that make the ``--quick`` size (under a minute on 2 cores)."""

    @abstractmethod
    def trials(self, cfg: Any) -> list[dict[str, Any]]:
        """The trials of a run: JSON-able specs, each unique (its hash is the trial key)."""

    @abstractmethod
    def run_trial(self, cfg: Any, spec: dict[str, Any]) -> TrialOutput:
        """Run one trial. Pure function of (cfg, spec): deterministic, no global RNG use."""

    @abstractmethod
    def analyze(self, cfg: Any, results: list[TrialResult]) -> Analysis:
        """Claims, metrics, figures and tables, computed only from ``results``."""

    def group_trials(self, cfg: Any, specs: list[dict[str, Any]]) -> list[list[int]]:
        """Which trials run together (e.g. trained as one batch of models).

        Indices into ``specs``; the default runs every trial on its own. Grouping must depend
        only on the specs, so every executor forms the same groups.
        """
        return [[i] for i in range(len(specs))]

    def run_group(self, cfg: Any, specs: list[dict[str, Any]]) -> list[TrialOutput]:
        """Run a group of trials; the default runs them one by one."""
        return [self.run_trial(cfg, spec) for spec in specs]


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "item"):
        return _clean(obj.item())
    return obj
