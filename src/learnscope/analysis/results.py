"""``Results``: a run's stored trials as tidy frames, filtered by axis values and aggregated over
seeds. Every study's claims, figures and tables are computed through it, so medians, quartiles
and "what happens to a trial that never produced the number" are decided once, here.

Two frames back it: ``trials`` (one row per trial: its key, status, wall time and one column per
spec field such as ``part``, ``seed``, ``noise``) and ``records`` (one row per record: trial,
step, probe, key, value, one column per metadata field such as ``layer`` or ``fit``, plus the
trial's spec columns).

>>> from learnscope.store.records import Record, TrialResult
>>> trials = [TrialResult(f"t{s}{p}", {"part": "rf", "seed": s, "p": p}, "finished",
...                       [Record("test_mse", (p - 2) ** 2 + s)])
...           for s in range(3) for p in (1, 2, 3)]
>>> r = Results(trials)
>>> r.where(part="rf").curve("test_mse", x="p").as_dict()
{1: 2.0, 2: 1.0, 3: 2.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, overload

import numpy as np
import pandas as pd

from learnscope.analysis.curves import Curve, median_iqr
from learnscope.store.frames import records_frame, trials_frame
from learnscope.store.records import TrialResult

__all__ = ["STATS", "Results"]

STATS = ("final", "first", "max", "min", "mean")
"""How one trial's series of a key becomes one number: the value at the last step (``final``),
at the first step, the largest, the smallest, or the mean."""


class Results:
    """The trials of a run (or a filtered part of them), ready to aggregate over seeds."""

    def __init__(self, trials: Sequence[TrialResult] | None = None, *,
                 frames: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> None:
        if frames is None:
            trials = list(trials or [])
            frames = (trials_frame(trials), records_frame(trials))
        self.trials, self._records = frames

    @property
    def records(self) -> pd.DataFrame:
        """The records joined with their trial's spec columns."""
        spec = self.trials.drop(columns=["status", "wall_s"]).reset_index(drop=True)
        return self._records.merge(spec, on="trial", how="left")

    def __len__(self) -> int:
        return len(self.trials)

    def __repr__(self) -> str:
        return f"Results({len(self.trials)} trials, {len(self._records)} records)"

    # -- selection --------------------------------------------------------------------------
    def where(self, **equal: Any) -> Results:
        """Trials whose spec fields equal the given values (a list or tuple means "any of"),
        and records whose metadata fields do. An unknown field name is an error."""
        trials, records = self.trials, self._records
        for name, want in equal.items():
            if name in trials.columns and name != "trial":
                trials = trials[_matches(trials[name], want)]
            elif name in records.columns:
                records = records[_matches(records[name], want)]
            else:
                known = sorted(set(trials.columns) | set(records.columns))
                raise ValueError(f"no field {name!r} in these results; known: {known}")
        records = records[records["trial"].isin(trials.index)]
        return Results(frames=(trials, records))

    def axis(self, name: str) -> list[Any]:
        """The distinct values of field ``name`` (a spec field, else a record field; sorted,
        missing values dropped)."""
        if name in self.trials.columns:
            column = self.trials[name]
        elif name in self._records.columns:
            column = self._records[name]
        else:
            return []
        return sorted(v for v in column.dropna().unique())

    def statuses(self) -> list[str]:
        return list(self.trials["status"])

    # -- one number per trial ---------------------------------------------------------------
    def per_trial(self, key: str, stat: str = "final") -> pd.Series:
        """One value of ``key`` per trial (indexed by trial key, in trial order); NaN for a trial
        without any record of ``key``."""
        if stat not in STATS:
            raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
        rows = self._records[self._records["key"] == key]
        if rows.empty:
            return pd.Series(math.nan, index=self.trials.index, dtype=float)
        rows = rows.sort_values("step", kind="stable")
        agg = _aggregate(rows.groupby("trial", sort=False)["value"], stat)
        return agg.reindex(self.trials.index).astype(float)

    def values(self, key: str, stat: str = "final") -> np.ndarray:
        return self.per_trial(key, stat).to_numpy()

    def median(self, key: str, stat: str = "final") -> float:
        """Median over the selected trials (NaN if any trial lacks the number)."""
        return median_iqr(self.values(key, stat))[0]

    def count_finite(self, key: str, stat: str = "final") -> int:
        """How many selected trials produced a finite number for ``key``."""
        return int(np.isfinite(self.values(key, stat)).sum())

    # -- curves -----------------------------------------------------------------------------
    def curve(self, key: str, x: str, stat: str = "final", *, name: str | None = None) -> Curve:
        """Median and quartiles of ``key`` at each value of field ``x``, over all other selected
        trials (e.g. the seeds). ``x`` is a spec field (each trial gives one number, by
        ``stat``) or a record field such as ``layer`` (each trial gives one number per value)."""
        groups: dict[Any, list[float]] = {}
        if x in self.trials.columns and x != "trial":
            for xv, v in zip(self.trials[x], self.per_trial(key, stat), strict=True):
                if not _missing(xv):
                    groups.setdefault(xv, []).append(float(v))
        elif x in self._records.columns:
            rows = self._records[self._records["key"] == key].sort_values("step", kind="stable")
            for (xv, _trial), v in _aggregate(rows.groupby([x, "trial"])["value"], stat).items():
                groups.setdefault(xv, []).append(float(v))
        else:
            known = sorted(set(self.trials.columns) | set(self._records.columns))
            raise ValueError(f"no field {x!r} in these results; known: {known}")
        return Curve.from_groups(groups, x, name or key)

    def over_time(self, key: str, *, name: str | None = None) -> Curve:
        """Median and quartiles of ``key`` at each recorded step, over the selected trials."""
        rows = self._records[self._records["key"] == key]
        groups = {int(s): [float(v) for v in g] for s, g in rows.groupby("step")["value"]}
        return Curve.from_groups(groups, "step", name or key)

    def matrix(self, key: str, rows: str, cols: str = "step"
               ) -> tuple[list[Any], list[Any], np.ndarray]:
        """Median of ``key`` over the selected trials for each (row, column) pair of record
        or spec fields, e.g. ``matrix("cka", rows="layer")`` for a layer-by-step heat map."""
        data = self.records
        data = data[data["key"] == key]
        if data.empty:
            return [], [], np.zeros((0, 0))
        table = data.pivot_table(index=rows, columns=cols, values="value", aggfunc="median",
                                 sort=True)
        return list(table.index), list(table.columns), table.to_numpy(dtype=float)

    @overload
    def points(self, key: str, x: str) -> tuple[list[float], list[float]]: ...

    @overload
    def points(self, key: str, x: str, *, color: str | None
               ) -> tuple[list[float], list[float], list[float]]: ...

    def points(self, key: str, x: str, *, color: str | None = None) -> Any:
        """Every record of ``key`` as an (x, value) point, ``x`` a spec or record field (no
        aggregation: e.g. each feature's dimensionality at each sparsity). With ``color`` (a
        field), also each point's value of that field (NaN where a record lacks it)."""
        data = self.records
        data = data[(data["key"] == key) & data[x].notna()] if x in data.columns else data[:0]
        xs, ys = [float(v) for v in data[x]], [float(v) for v in data["value"]]
        if color is None:
            return xs, ys
        cs = ([float(v) for v in data[color]] if color in data.columns
              else [math.nan] * len(xs))
        return xs, ys, cs

    def series(self, key: str) -> Iterable[tuple[dict[str, Any], list[int], list[float]]]:
        """Per trial: (its spec, steps, values) of ``key`` in step order."""
        rows = self._records[self._records["key"] == key].sort_values("step", kind="stable")
        by_trial = dict(iter(rows.groupby("trial", sort=False)))
        for key_, spec in self.trials.iterrows():
            g = by_trial.get(key_)
            if g is not None:
                yield (spec.to_dict(), [int(s) for s in g["step"]],
                       [float(v) for v in g["value"]])


def _aggregate(by: Any, stat: str) -> pd.Series:
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    return {"final": by.last, "first": by.first, "max": by.max, "min": by.min,
            "mean": by.mean}[stat]()


def _matches(column: pd.Series, want: Any) -> pd.Series:
    if isinstance(want, list | tuple | set):
        return column.isin(list(want))
    if isinstance(want, float) and math.isnan(want):
        return column.isna()
    return column == want


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
