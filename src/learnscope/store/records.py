"""The tidy record: one measured number with what makes it reproducible."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Record:
    """One measurement ``(step, probe, key, value)`` plus metadata.

    ``meta`` holds what makes the value reproducible and what it is *of*: estimator and its
    parameters (``{"bins": 30, "range": [-1, 1]}``), layer name, split, sweep coordinate
    (``{"p": 100}``). Arrays are not records; store them as artifacts and reference them here.
    """

    key: str
    value: float
    step: int = 0
    probe: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept numpy / torch scalars; keep the record itself plain data.
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "step", int(self.step))


@dataclass
class TrialResult:
    """What one trial of a study produced, as loaded back from the store."""

    key: str
    spec: dict[str, Any]
    status: str
    records: list[Record]
    wall_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def values(self, key: str, **meta: Any) -> list[float]:
        """All values of ``key`` (in step order) whose metadata matches ``meta``."""
        return [r.value for r in self._select(key, meta)]

    def series(self, key: str, **meta: Any) -> tuple[list[int], list[float]]:
        rows = self._select(key, meta)
        return [r.step for r in rows], [r.value for r in rows]

    def last(self, key: str, default: float = math.nan, **meta: Any) -> float:
        rows = self._select(key, meta)
        return rows[-1].value if rows else default

    def _select(self, key: str, meta: dict[str, Any]) -> list[Record]:
        rows = [r for r in self.records
                if r.key == key and all(r.meta.get(k) == v for k, v in meta.items())]
        return sorted(rows, key=lambda r: r.step)
