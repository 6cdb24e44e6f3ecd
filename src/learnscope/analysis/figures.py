"""Figures as plain data.

A study *declares* its figures (:class:`LinePlot`, :class:`Heatmap`: which key against which
axis, grouped by which field, log axes, a band, markers); :func:`evaluate` turns a declaration
into :class:`FigureData` (the numbers to draw) from a :class:`~learnscope.analysis.Results`; the
report layer draws ``FigureData``. Studies never build plotting objects.

A :class:`Graph` draws a directed graph (e.g. a recorded computation graph) from one trial's
records: one record per node and one per edge, their metadata naming the nodes; positions come
from the records or from a small deterministic layered layout.

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
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from learnscope.analysis.curves import Curve

__all__ = ["FigureData", "Graph", "Heatmap", "LinePlot", "Lines", "Marker", "Scatter",
           "SeriesData", "evaluate", "layered_layout"]


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
    points: Scatter | None = None
    """Points drawn over the map (e.g. the training points over a map of the input space):
    the scatter's ``x`` and ``key`` are read on the map's columns and rows, whose axes are then
    numeric rather than one cell per label."""


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


@dataclass(frozen=True)
class Graph:
    """A directed graph from the records of one trial (the first that matches ``where``, e.g.
    the first seed): each record of ``node_key`` is a node (its metadata field ``node`` is the
    node's id), each record of ``edge_key`` an edge from the node ``source`` to the node
    ``target`` (ids as in ``node``). ``label`` and ``edge_label`` are format strings over the
    record's fields and ``value`` (a field a record lacks reads as empty). Nodes sit at
    ``position`` (two fields, x and y) when given, else at their ``level`` field when given,
    else by :func:`layered_layout` (levels by longest path from the inputs); ``color`` (a
    field, e.g. the backward step) colours the nodes on one scale."""

    title: str
    node_key: str
    edge_key: str
    where: dict[str, Any] = field(default_factory=dict)
    node: str = "node"
    source: str = "source"
    target: str = "target"
    label: str = "{node}"
    edge_label: str = "{value:.3g}"
    level: str | None = None
    position: tuple[str, str] | None = None
    color: str | None = None
    color_title: str = ""
    x_title: str = ""
    """What the horizontal direction means (e.g. "forward pass: inputs to output")."""
    caption: str = ""


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

    kind: str  # "line", "scatter", "heatmap" or "graph"
    title: str
    x_title: str = ""
    y_title: str = ""
    caption: str = ""
    log_x: bool = False
    log_y: bool = False
    series: list[SeriesData] = field(default_factory=list)
    """The lines or point sets; on a heat map, the points drawn over it."""
    markers: list[Marker] = field(default_factory=list)
    hlines: list[tuple[float, str]] = field(default_factory=list)
    z: list[list[float]] | None = None
    rows: list[Any] = field(default_factory=list)
    cols: list[Any] = field(default_factory=list)
    colorbar: str = ""
    nodes: list[dict[str, Any]] = field(default_factory=list)
    """A graph's nodes: ``id``, ``label``, ``x``, ``y``, ``level``, ``color`` (a number or
    None), ``value`` and ``fields`` (every field of its record, for hover text)."""
    edges: list[dict[str, Any]] = field(default_factory=list)
    """A graph's edges: ``source``, ``target`` (node ids), ``label`` and ``value``."""

    @property
    def empty(self) -> bool:
        if self.kind == "graph":
            return not self.nodes
        return not self.z if self.kind == "heatmap" else not self.series


def evaluate(spec: LinePlot | Heatmap | Scatter | Graph, results: Any) -> FigureData:
    """The numbers of a declared figure, computed from ``results`` (a ``Results``)."""
    if isinstance(spec, Graph):
        return _graph(spec, results)
    if isinstance(spec, Scatter):
        return _scatter(spec, results)
    if isinstance(spec, Heatmap):
        rows, cols, z = results.where(**spec.where).matrix(spec.key, spec.rows, spec.cols)
        points = _scatter(spec.points, results).series if spec.points is not None else []
        return FigureData("heatmap", spec.title, spec.x_title or spec.cols,
                          spec.y_title or spec.rows, spec.caption, series=points, z=z.tolist(),
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


def _scatter(spec: Scatter, results: Any) -> FigureData:
    """The points of a declared scatter (also drawn over a heat map)."""
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


# -- graphs -----------------------------------------------------------------------------------

class _LenientFormatter(string.Formatter):
    """``str.format`` where a missing or NaN field reads as empty and a format spec that does
    not fit the value (``{op:.3g}`` on a string) falls back to ``str``."""

    def get_value(self, key: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        value = kwargs.get(key) if isinstance(key, str) else None
        return None if _missing(value) else value

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return ""
        try:
            return format(value, format_spec)
        except (ValueError, TypeError):
            return str(value)


_FORMAT = _LenientFormatter()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _graph(spec: Graph, results: Any) -> FigureData:
    out = FigureData("graph", spec.title, spec.x_title, "", spec.caption,
                     colorbar=spec.color_title or spec.color or "")
    data = results.where(**spec.where).records if len(results) else None
    if data is None or data.empty:
        return out
    data = data[data["key"].isin([spec.node_key, spec.edge_key])]
    node_rows = data[data["key"] == spec.node_key]
    if node_rows.empty:
        return out
    data = data[data["trial"] == node_rows["trial"].iloc[0]]  # one trial: the first
    skip = {"trial", "key", "probe", "step"}

    def fields_of(row: Any) -> dict[str, Any]:
        return {k: _tidy(v) for k, v in row.items() if k not in skip and not _missing(v)}

    nodes: dict[Any, dict[str, Any]] = {}
    for _, row in data[data["key"] == spec.node_key].iterrows():
        fields = fields_of(row)
        ident = fields.get(spec.node)
        if ident is None or ident in nodes:
            continue
        colour = fields.get(spec.color) if spec.color else None
        nodes[ident] = {"id": ident, "label": _FORMAT.format(spec.label, **fields),
                        "value": float(row["value"]), "fields": fields,
                        "color": float(colour) if isinstance(colour, int | float) else None}
    edges = []
    for _, row in data[data["key"] == spec.edge_key].iterrows():
        fields = fields_of(row)
        src, dst = fields.get(spec.source), fields.get(spec.target)
        if src is None or dst is None:
            continue
        for end in (src, dst):  # an edge to a node without a record still shows the node
            nodes.setdefault(end, {"id": end, "label": str(end), "value": math.nan,
                                   "fields": {spec.node: end}, "color": None})
        edges.append({"source": src, "target": dst, "value": float(row["value"]),
                      "label": _FORMAT.format(spec.edge_label, **fields)})
    ids = list(nodes)
    if spec.position is not None:
        xf, yf = spec.position
        places = {i: (float(nodes[i]["fields"].get(xf, 0.0)),
                      float(nodes[i]["fields"].get(yf, 0.0))) for i in ids}
        levels = {i: int(places[i][0]) for i in ids}
    else:
        given = ({i: int(nodes[i]["fields"][spec.level]) for i in ids
                  if spec.level in nodes[i]["fields"]} if spec.level else {})
        pairs = [(e["source"], e["target"]) for e in edges]
        if len(given) == len(ids):
            levels = given
            places = _place(ids, pairs, levels)
        else:
            places = layered_layout(ids, pairs)
            levels = {i: int(places[i][0]) for i in ids}
    for i in ids:
        nodes[i]["x"], nodes[i]["y"] = places[i]
        nodes[i]["level"] = levels[i]
    out.nodes, out.edges = [nodes[i] for i in ids], edges
    return out


def layered_layout(nodes: Sequence[Any], edges: Sequence[tuple[Any, Any]]
                   ) -> dict[Any, tuple[float, float]]:
    """Positions ``(level, row)`` of a directed acyclic graph: the level of a node is the
    longest path to it from a node without incoming edges (an input, which has none, sits one
    level before its first consumer, so its edge does not run across other levels); within a
    level nodes are ordered by
    the mean row of their predecessors (fewer crossings), ties in the given order, and each
    level is centred on row 0. Deterministic; a cycle is an error."""
    preds: dict[Any, list[Any]] = {n: [] for n in nodes}
    succs: dict[Any, list[Any]] = {n: [] for n in nodes}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    waiting = {n: len(preds[n]) for n in nodes}
    ready = [n for n in nodes if waiting[n] == 0]
    level: dict[Any, int] = {}
    for n in ready:  # grows while it is read: Kahn's algorithm in the given order
        level[n] = 1 + max((level[p] for p in preds[n]), default=-1)
        for s in succs[n]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    if len(level) != len(nodes):
        raise ValueError("the graph has a cycle; a layered layout needs a DAG")
    for n in nodes:  # an input sits just before its first consumer: no edge jumps over nodes
        if not preds[n] and succs[n]:
            level[n] = min(level[s] for s in succs[n]) - 1
    return _place(nodes, edges, level)


def _place(nodes: Sequence[Any], edges: Sequence[tuple[Any, Any]], level: Mapping[Any, int]
           ) -> dict[Any, tuple[float, float]]:
    """Rows within each level: barycentre sweeps (forward by predecessors, back by successors,
    forward again), each level centred on row 0."""
    preds: dict[Any, list[Any]] = {n: [] for n in nodes}
    succs: dict[Any, list[Any]] = {n: [] for n in nodes}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    by_level: dict[int, list[Any]] = {}
    for n in nodes:
        by_level.setdefault(level[n], []).append(n)
    row: dict[Any, float] = {}

    def sweep(levels: list[int], neighbours: dict[Any, list[Any]]) -> None:
        for lv in levels:
            members = by_level[lv]

            def centre(n: Any) -> float:
                placed = [row[p] for p in neighbours[n] if p in row]
                return sum(placed) / len(placed) if placed else row.get(n, math.inf)

            keys = {n: (centre(n), i) for i, n in enumerate(members)}
            by_level[lv] = members = sorted(members, key=keys.__getitem__)
            for k, n in enumerate(members):
                row[n] = k - (len(members) - 1) / 2

    order = sorted(by_level)
    sweep(order, preds)
    sweep(order[::-1], succs)
    sweep(order, preds)
    return {n: (float(level[n]), row[n]) for n in nodes}
