"""Figures as plain data.

A study *declares* its figures (:class:`LinePlot`, :class:`Heatmap`: which key against which
axis, grouped by which field, log axes, a band, markers); :func:`evaluate` turns a declaration
into :class:`FigureData` (the numbers to draw) from a :class:`~learnscope.analysis.Results`; the
report layer draws ``FigureData``. Studies never build plotting objects.

A :class:`LinePlot` has one or more :class:`Lines` selections. Each selection filters the
results (``where``), optionally splits them into one line per value of ``group``, and names each
line with ``label`` (a format string over the group's fields, e.g. ``"{noise:.0%} noise"``).
With ``x="step"`` the lines run over training time (recorded steps); otherwise ``x`` is a spec
field and each trial contributes one number (``stat``: its final, max, ... value). Lines are the
median over the remaining trials (e.g. seeds) with a quartile band, or with ``seeds="first"``
the curves of the first seed only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from learnscope.analysis.curves import Curve

__all__ = ["FigureData", "Heatmap", "LinePlot", "Lines", "Marker", "Scatter", "SeriesData",
           "evaluate"]


@dataclass(frozen=True)
class Marker:
    """A labelled vertical line at ``x`` (e.g. the interpolation threshold p = n)."""

    x: float
    label: str


@dataclass(frozen=True)
class Lines:
    """One selection of a line plot: a filter, an optional grouping, a label and a style."""

    where: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    """The record key (default: the plot's ``key``)."""
    group: str | tuple[str, ...] | None = None
    label: str = "{key}"
    dash: str | None = None
    stat: str = "final"
    band: bool = True


@dataclass(frozen=True)
class LinePlot:
    title: str
    x: str
    lines: tuple[Lines, ...]
    key: str = ""
    x_title: str = ""
    y_title: str = ""
    caption: str = ""
    """One sentence on how to read the figure."""
    log_x: bool = False
    log_y: bool = False
    markers: tuple[Marker, ...] = ()
    hlines: tuple[tuple[float, str], ...] = ()
    seeds: str = "median"
    """``median`` (median over trials, quartile band) or ``first`` (the first seed's lines)."""
    scale: float = 1.0
    """Multiply every value (e.g. 100 for percent)."""


@dataclass(frozen=True)
class Heatmap:
    """Median of ``key`` for each (row, column) pair of record fields, e.g. layer x step."""

    title: str
    key: str
    rows: str
    cols: str = "step"
    where: dict[str, Any] = field(default_factory=dict)
    x_title: str = ""
    y_title: str = ""
    caption: str = ""
    colorbar: str = ""


@dataclass(frozen=True)
class Scatter:
    """Every value of ``key`` against field ``x``, one point per record (no aggregation), in
    one colour per value of ``group``; with ``color`` (a record or spec field, e.g.
    ``"epoch"``) each point is coloured by that field's value on one continuous scale and the
    groups are told apart by marker symbol instead."""

    title: str
    key: str
    x: str
    where: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    label: str = "{key}"
    x_title: str = ""
    y_title: str = ""
    caption: str = ""
    log_x: bool = False
    log_y: bool = False
    hlines: tuple[tuple[float, str], ...] = ()
    color: str | None = None
    color_title: str = ""


@dataclass
class SeriesData:
    name: str
    x: list[float]
    y: list[float]
    lo: list[float] | None = None
    hi: list[float] | None = None
    dash: str | None = None
    c: list[float] | None = None
    """Per-point values for a continuous colour scale (a scatter's ``color`` field)."""


@dataclass
class FigureData:
    """What the report draws: plain numbers and labels."""

    kind: str  # "line", "scatter" or "heatmap"
    title: str
    x_title: str = ""
    y_title: str = ""
    caption: str = ""
    log_x: bool = False
    log_y: bool = False
    series: list[SeriesData] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    hlines: list[tuple[float, str]] = field(default_factory=list)
    z: list[list[float]] | None = None
    rows: list[Any] = field(default_factory=list)
    cols: list[Any] = field(default_factory=list)
    colorbar: str = ""

    @property
    def empty(self) -> bool:
        return not self.z if self.kind == "heatmap" else not self.series


def evaluate(spec: LinePlot | Heatmap | Scatter, results: Any) -> FigureData:
    """The numbers of a declared figure, computed from ``results`` (a ``Results``)."""
    if isinstance(spec, Scatter):
        sub = results.where(**spec.where)
        series = []
        for fields, part in _groups(sub, spec.group) if len(sub) else []:
            cs: list[float] | None = None
            if spec.color:
                xs, ys, cs = part.points(spec.key, spec.x, color=spec.color)
            else:
                xs, ys = part.points(spec.key, spec.x)
            if xs:
                label = spec.label.format(key=spec.key, **{k: _tidy(v) for k, v in fields.items()})
                series.append(SeriesData(label, xs, ys, c=cs))
        return FigureData("scatter", spec.title, spec.x_title or spec.x,
                          spec.y_title or spec.key, spec.caption, spec.log_x, spec.log_y,
                          series, hlines=list(spec.hlines),
                          colorbar=(spec.color_title or spec.color or ""))
    if isinstance(spec, Heatmap):
        rows, cols, z = results.where(**spec.where).matrix(spec.key, spec.rows, spec.cols)
        return FigureData("heatmap", spec.title, spec.x_title or spec.cols,
                          spec.y_title or spec.rows, spec.caption, z=z.tolist(),
                          rows=[_tidy(r) for r in rows], cols=[_tidy(c) for c in cols],
                          colorbar=spec.colorbar or spec.key)
    series: list[SeriesData] = []
    for sel in spec.lines:
        key = sel.key or spec.key
        sub = results.where(**sel.where)
        if not len(sub):
            continue
        for fields, part in _groups(sub, sel.group):
            label = sel.label.format(key=key, **{k: _tidy(v) for k, v in fields.items()})
            series += _lines(spec, sel, key, part, label)
    return FigureData("line", spec.title, spec.x_title or spec.x, spec.y_title or spec.key,
                      spec.caption, spec.log_x, spec.log_y, series, list(spec.markers),
                      list(spec.hlines))


def _tidy(v: Any) -> Any:
    """An integral float read back from a frame column with gaps (1.0) shown as 1."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v.item() if hasattr(v, "item") else v


def _groups(results: Any, group: str | tuple[str, ...] | None
            ) -> list[tuple[dict[str, Any], Any]]:
    if group is None:
        return [({}, results)]
    names = (group,) if isinstance(group, str) else tuple(group)
    combos: list[dict[str, Any]] = [{}]
    for name in names:
        combos = [c | {name: v} for c in combos for v in results.axis(name)]
    out = []
    for combo in combos:
        part = results.where(**combo)
        if len(part):
            out.append((combo, part))
    return out


def _lines(spec: LinePlot, sel: Lines, key: str, results: Any, label: str) -> list[SeriesData]:
    if spec.seeds == "first" and "seed" in results.trials.columns:
        first = results.axis("seed")[0] if results.axis("seed") else None
        if first is not None:
            results = results.where(seed=first)
            label = f"{label} (seed {first})"
    if spec.x == "step":
        if spec.seeds == "first":
            out = []
            for _fields, steps, values in results.series(key):
                out.append(SeriesData(label, [float(s) for s in steps],
                                      [v * spec.scale for v in values], dash=sel.dash))
            return out[:1] if len(out) == 1 else [
                SeriesData(f"{s.name} #{i + 1}", s.x, s.y, dash=s.dash) for i, s in enumerate(out)]
        curve = results.over_time(key)
    else:
        curve = results.curve(key, spec.x, sel.stat)
    if not len(curve):
        return []
    return [_series(curve.scaled(spec.scale), label, sel.band and spec.seeds == "median",
                    sel.dash)]


def _series(curve: Curve, label: str, band: bool, dash: str | None) -> SeriesData:
    def clean(seq: Sequence[float]) -> list[float]:
        return [float(v) if not math.isnan(v) else math.nan for v in seq]

    spread = band and any(len(v) > 1 for v in curve.values)
    return SeriesData(label, [float(x) for x in curve.x], clean(curve.y),
                      clean(curve.lo) if spread else None, clean(curve.hi) if spread else None,
                      dash)
