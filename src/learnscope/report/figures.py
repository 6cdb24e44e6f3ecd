"""Drawing: declared figures (:class:`~learnscope.analysis.FigureData`) as plotly figures, one
look across every report.

A figure is a :class:`Figure`: plotly.js's own JSON (``data``, a list of traces, and
``layout``) built as plain dictionaries with the few methods of ``plotly.graph_objects.Figure``
the kit uses. plotly's object model validates every property as it is set, which made up most
of the time of writing a report (~25 ms a line figure; the dictionaries take well under 1 ms);
:meth:`Figure.to_plotly` gives the validated plotly object where one is needed (image export,
notebooks), and the tests check that every figure of the kit passes that validation.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape as html_escape
from typing import TYPE_CHECKING, Any

from plotly.colors import sample_colorscale

from learnscope.analysis.figures import FigureData

if TYPE_CHECKING:
    from plotly.graph_objects import Figure as PlotlyFigure

TEMPLATE = "plotly_white"
"""The look of every figure, applied when a figure is written (:func:`figure_json`)."""


class Props(dict):  # type: ignore[type-arg]
    """Plotly properties as nested dictionaries, also readable as attributes as on plotly's
    objects (``fig.layout.xaxis.type``); a property that is not set reads as None."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)


def _props(value: Any) -> Any:
    """``value`` with every mapping in it (also inside lists) a :class:`Props`."""
    if isinstance(value, Mapping):
        return Props({k: _props(v) for k, v in value.items()})
    if isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
        return [_props(v) for v in value]
    return value


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """plotly's ``update``: nested properties are merged, the others replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), Mapping):
            _merge(into[key], value)
        else:
            into[key] = _props(value)


def _titled_props(props: Mapping[str, Any]) -> dict[str, Any]:
    """A plain string ``title`` as plotly.js reads titles: ``{"text": title}``."""
    out = dict(props)
    if isinstance(out.get("title"), str):
        out["title"] = {"text": out["title"]}
    return out


def _plain(value: Any) -> Any:
    """Props as plain dicts, for JSON; a property set to None is left out (unset, as plotly
    reads None)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class Figure:
    """A plotly.js figure as plain data: ``data`` (traces, each a :class:`Props` with its
    ``type``), ``layout`` (:class:`Props`) and the one-sentence ``caption`` a report prints
    under it. Built with the methods of ``plotly.graph_objects.Figure`` the kit needs
    (``add_trace`` takes the trace as a mapping), without plotly's per-property validation."""

    def __init__(self, data: Iterable[Mapping[str, Any]] = ()) -> None:
        self.data: list[Props] = [_props(t) for t in data]
        self.layout: Props = Props()
        self.caption: str = ""

    def add_trace(self, trace: Mapping[str, Any]) -> Figure:
        self.data.append(_props(trace))
        return self

    def add_scatter(self, **props: Any) -> Figure:
        return self.add_trace({"type": "scatter", **props})

    def add_shape(self, **props: Any) -> Figure:
        self.layout.setdefault("shapes", []).append(_props(props))
        return self

    def add_annotation(self, **props: Any) -> Figure:
        self.layout.setdefault("annotations", []).append(_props(props))
        return self

    def update_layout(self, **props: Any) -> Figure:
        _merge(self.layout, _titled_props(props))
        return self

    def update_xaxes(self, **props: Any) -> Figure:
        _merge(self.layout.setdefault("xaxis", Props()), _titled_props(props))
        return self

    def update_yaxes(self, **props: Any) -> Figure:
        _merge(self.layout.setdefault("yaxis", Props()), _titled_props(props))
        return self

    def to_plotly_json(self) -> dict[str, Any]:
        """``{"data": [...], "layout": {...}}`` as plain dictionaries (no template)."""
        return {"data": _plain(self.data), "layout": _plain(self.layout)}

    def to_plotly(self) -> PlotlyFigure:
        """The validated ``plotly.graph_objects.Figure``, with the report's look (raises
        ``ValueError`` on a property plotly does not know)."""
        import plotly.graph_objects as go

        return go.Figure(figure_json(self))

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22"]


@dataclass
class Series:
    """One line: x, y (e.g. medians), optional band (lo, hi) such as a quartile range."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None
    dash: str | None = None
    mode: str = "lines+markers"
    color: str | None = None
    """A fixed colour (e.g. the layer's colour across a report); default: the palette by
    position."""


def draw(fig: FigureData, colours: Mapping[str, str] | None = None) -> Figure:
    """The plotly figure of a declared figure's data; ``colours`` fixes the colour of series
    by name (see :func:`shared_series_colours`), the others take the palette by position."""
    if fig.kind == "heatmap":
        return heatmap_figure(fig)
    if fig.kind == "graph":
        return graph_figure(fig)
    if fig.kind == "scatter" and any(s.c is not None for s in fig.series):
        return coloured_scatter_figure(fig)
    colours = colours or {}
    taken = {colours[s.name] for s in fig.series if s.name in colours}
    free = iter([c for c in PALETTE if c not in taken])  # for the series without a fixed one
    many_points = any(len(s.x) > 60 for s in fig.series)
    mode = "markers" if fig.kind == "scatter" else "lines" if many_points else "lines+markers"
    return line_figure(
        fig.title, [Series(s.name, s.x, s.y, s.lo, s.hi, s.dash, mode,
                           colours.get(s.name) or (next(free, None) if taken else None))
                    for s in fig.series],
        x_title=fig.x_title, y_title=fig.y_title, log_x=fig.log_x, log_y=fig.log_y,
        vlines=[(m.x, m.label) for m in fig.markers], hlines=fig.hlines)


def line_figure(title: str, series: Sequence[Series], *, x_title: str, y_title: str,
                log_x: bool = False, log_y: bool = False,
                vlines: Sequence[tuple[float, str]] = (),
                hlines: Sequence[tuple[float, str]] = (), height: int = 420,
                legend_title: str = "") -> Figure:
    """Lines with optional shaded bands and labelled vertical / horizontal markers."""
    fig = Figure()
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        if s.lo is not None and s.hi is not None:
            fig.add_scatter(
                x=list(s.x) + list(s.x)[::-1], y=list(s.hi) + list(s.lo)[::-1], fill="toself",
                fillcolor=_rgba(color, 0.15), line={"width": 0}, mode="lines", hoverinfo="skip",
                showlegend=False, name=f"{s.name} spread")
        fig.add_scatter(x=list(s.x), y=list(s.y), name=s.name, mode=s.mode,
                        line={"color": color, "dash": s.dash}, marker={"size": 5})
    # plotly places a shape's x0/x1 (y0/y1) in data units also on a log axis (it takes the log
    # itself), but an annotation's x (y) in axis units: log10 of the value on a log axis.
    for x, label in vlines:
        if log_x and not x > 0:
            continue  # no place on a log axis
        fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, xref="x", yref="paper",
                      line={"dash": "dot", "color": "#555"})
        fig.add_annotation(x=_annotation_position(x, log_x), y=1, xref="x", yref="paper",
                           text=label, showarrow=False, yanchor="bottom")
    for y, label in hlines:
        if log_y and not y > 0:
            continue
        fig.add_shape(type="line", x0=0, x1=1, y0=y, y1=y, xref="paper", yref="y",
                      line={"dash": "dash", "color": "#999"})
        fig.add_annotation(x=1, y=_annotation_position(y, log_y), xref="paper", yref="y",
                           text=label, showarrow=False, xanchor="right", yanchor="bottom")
    fig.update_layout(title=title, height=height, margin={"l": 60, "r": 20, "t": 70, "b": 50},
                      legend={"orientation": "h", "y": -0.2, "title": {"text": legend_title}})
    fig.update_xaxes(title=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title=y_title, type="log" if log_y else "linear")
    return fig


SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star",
           "triangle-down", "pentagon", "hexagon")


def coloured_scatter_figure(fig: FigureData, height: int = 460) -> Figure:
    """Points coloured by a value on one shared scale (e.g. the epoch), the series told apart by
    marker symbol; the colour bar is titled ``fig.colorbar``."""
    values = [v for s in fig.series for v in (s.c or []) if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    out = Figure()
    for i, s in enumerate(fig.series):
        out.add_scatter(
            x=list(s.x), y=list(s.y), name=s.name, mode="markers",
            marker={"symbol": SYMBOLS[i % len(SYMBOLS)], "size": 7, "color": list(s.c or []),
                    "colorscale": "Viridis", "cmin": lo, "cmax": hi,
                    "line": {"width": 0.5, "color": "#333"}, "showscale": i == 0,
                    "colorbar": {"title": {"text": fig.colorbar}}})
    out.update_layout(title=fig.title, height=height, margin={"l": 60, "r": 20, "t": 70, "b": 50},
                      legend={"orientation": "h", "y": -0.2, "itemsizing": "constant"})
    out.update_xaxes(title=fig.x_title, type="log" if fig.log_x else "linear")
    out.update_yaxes(title=fig.y_title, type="log" if fig.log_y else "linear")
    return out


def graph_figure(fig: FigureData, *, row_px: int = 80) -> Figure:
    """A directed graph: nodes as markers with their label below on a white ground (coloured
    by ``color`` on one scale with a colour bar), edges as arrows from source to target with
    their label at the middle, every field of a node in its hover text. The height grows with the rows of the
    tallest level and the lines of a label, so labels keep their room; the width is the
    report's."""
    xs = [float(n["x"]) for n in fig.nodes]
    ys = [-float(n["y"]) for n in fig.nodes]  # row 0 on top
    at = {n["id"]: (x, y) for n, x, y in zip(fig.nodes, xs, ys, strict=True)}
    colours = [n["color"] for n in fig.nodes]
    coloured = any(c is not None for c in colours)
    out = Figure()
    for e in fig.edges:
        (x0, y0), (x1, y1) = at[e["source"]], at[e["target"]]
        out.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowsize=1.3, arrowwidth=1.4,
                           arrowcolor="#777", standoff=13, startstandoff=13, text="")
        if e["label"]:
            out.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, xref="x",
                               yref="y", text=e["label"], showarrow=False,
                               font={"size": 10, "color": "#444"},
                               bgcolor="rgba(255,255,255,0.85)", borderpad=1)
    hover = ["<br>".join(f"{html_escape(str(k))}: {html_escape(_hover_value(v))}"
                         for k, v in n["fields"].items()) or html_escape(str(n["id"]))
             for n in fig.nodes]
    values = [c for c in colours if c is not None and math.isfinite(c)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    out.add_scatter(
        x=xs, y=ys, mode="markers", hovertext=hover,
        hoverinfo="text", showlegend=False,
        marker={"size": 20, "line": {"width": 1, "color": "#333"},
                "color": [c if c is not None else math.nan for c in colours] if coloured
                else PALETTE[0],
                "colorscale": "Viridis", "cmin": lo, "cmax": hi, "showscale": coloured,
                "colorbar": {"title": {"text": fig.colorbar}, "thickness": 14}})
    # Labels go below their node; with many levels, every other level's go above, so the
    # labels of neighbouring levels do not run into each other on a narrow page.
    columns = sorted(set(xs))
    alternate = len(columns) > 5
    above = {x for k, x in enumerate(columns) if alternate and k % 2 == 1}
    for n, x, y in zip(fig.nodes, xs, ys, strict=True):  # after the arrows: drawn over them
        up = x in above
        out.add_annotation(x=x, y=y, xref="x", yref="y", text=n["label"], showarrow=False,
                           yanchor="bottom" if up else "top", yshift=13 if up else -13,
                           font={"size": 11}, bgcolor="rgba(255,255,255,0.85)", borderpad=1)
    rows = max(ys) - min(ys) + 1 if ys else 1
    lines = max((n["label"].count("<br>") + 1 for n in fig.nodes), default=1)
    # pixels between two rows: a label (or two facing labels), the marker and a gap
    row_gap = (2 if above else 1) * (15 * lines + 18) + 24
    top = 0.75 if above else 0.4
    out.update_layout(title=fig.title,
                      height=int(110 + (rows - 1 + 0.75 + top) * max(row_px, row_gap)),
                      margin={"l": 30, "r": 30, "t": 70, "b": 40})
    pad = 0.45
    out.update_xaxes(visible=bool(fig.x_title), showgrid=False, zeroline=False,
                     showticklabels=False, title=fig.x_title,
                     range=[min(xs, default=0) - pad, max(xs, default=0) + pad])
    out.update_yaxes(visible=False, range=[min(ys, default=0) - 0.75, max(ys, default=0) + top])
    return out


def _hover_value(v: object) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


# points over a heat map: white and black fills with the other as outline, by series
_OVER_MAP = (("white", "black"), ("black", "white"))


def heatmap_figure(fig: FigureData, height: int = 420) -> Figure:
    """One cell per (row, column) label; with points over it (``fig.series``), numeric axes
    that the points share with the map, each series a marker symbol and fill."""
    axis = "linear" if fig.series else "category"
    label = (lambda v: v) if fig.series else str
    out = Figure([{"type": "heatmap", "z": fig.z, "x": [label(c) for c in fig.cols],
                   "y": [label(r) for r in fig.rows], "colorscale": "Viridis",
                   "colorbar": {"title": {"text": fig.colorbar}}}])
    for i, s in enumerate(fig.series):
        fill, edge = _OVER_MAP[i % len(_OVER_MAP)]
        out.add_scatter(x=list(s.x), y=list(s.y), name=s.name, mode="markers",
                        marker={"symbol": SYMBOLS[i % len(SYMBOLS)], "size": 7, "color": fill,
                                "line": {"width": 1, "color": edge}})
    out.update_layout(title=fig.title, height=height + (40 if fig.series else 0),
                      margin={"l": 80, "r": 20, "t": 70, "b": 50},
                      legend={"orientation": "h", "y": -0.2, "itemsizing": "constant"})
    out.update_xaxes(title=fig.x_title, type=axis)
    out.update_yaxes(title=fig.y_title, type=axis)
    return out


def bar_figure(title: str, names: Sequence[str], values: Sequence[float], *, x_title: str,
               y_title: str, colors: Sequence[str] | None = None, height: int = 340
               ) -> Figure:
    """One bar per name, for a value measured once (e.g. per layer); a NaN value is shown as
    the words "not reached" instead of a bar."""
    finite = [v if math.isfinite(v) else None for v in values]
    text = [f"{v:.4g}" if v is not None else "not reached" for v in finite]
    fig = Figure([{"type": "bar", "x": list(names), "y": finite, "text": text,
                   "textposition": "outside",
                   "marker": {"color": list(colors) if colors else PALETTE[0]},
                   "cliponaxis": False, "showlegend": False}])
    fig.update_layout(title=title, height=height, margin={"l": 60, "r": 20, "t": 70, "b": 50})
    fig.update_xaxes(title=x_title, type="category")
    fig.update_yaxes(title=y_title, rangemode="tozero")
    return fig


def matrix_figure(title: str, z: Sequence[Sequence[float | None]], rows: Sequence[str],
                  cols: Sequence[str], *, x_title: str, y_title: str, colorbar: str,
                  zmin: float | None = None, zmax: float | None = None, height: int = 420
                  ) -> Figure:
    """A heat map of a matrix (e.g. layer by layer); each cell shows its value."""
    text = [[f"{v:.2f}" if v is not None and math.isfinite(v) else "" for v in row]
            for row in z]
    fig = Figure([{"type": "heatmap", "z": [list(row) for row in z], "x": list(cols),
                   "y": list(rows), "text": text, "texttemplate": "%{text}",
                   "colorscale": "Viridis", "zmin": zmin, "zmax": zmax,
                   "colorbar": {"title": {"text": colorbar}}}])  # None: unset, as in plotly
    fig.update_layout(title=title, height=height, margin={"l": 80, "r": 20, "t": 70, "b": 50})
    fig.update_xaxes(title=x_title, type="category")
    fig.update_yaxes(title=y_title, type="category", autorange="reversed")
    return fig


def captioned(fig: Figure, caption: str) -> Figure:
    """``fig`` with the sentence on how to read it that the report prints under it."""
    fig.caption = caption
    return fig


@functools.cache
def _template_json() -> dict[str, Any]:
    import plotly.io as pio

    return pio.templates[TEMPLATE].to_plotly_json()


def figure_json(plot: Figure) -> dict[str, Any]:
    """The figure as plotly.js reads it, with the report's look (:data:`TEMPLATE`)."""
    out = plot.to_plotly_json()
    out["layout"]["template"] = _template_json()
    return out


def figure_html(plot: Figure) -> str:
    """A ``<div>`` that draws ``plot`` (plotly.js loaded by the page)."""
    import plotly.io as pio

    return pio.to_html(figure_json(plot), full_html=False, include_plotlyjs=False,
                       validate=False)


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that orders ``blocks.2`` before ``blocks.10`` (module order in most models)."""
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", name) if part]


def shared_series_colours(figures: Iterable[FigureData]) -> dict[str, str]:
    """One colour per series name that appears in two or more of ``figures`` (e.g. "hidden
    layer 2" or "noise 0.5" in every figure of a study), so a reader follows it from figure to
    figure; assigned in order of first appearance. Other series keep the palette by position.
    """
    seen: dict[str, int] = {}
    for fig in figures:
        for name in dict.fromkeys(s.name for s in fig.series):
            seen[name] = seen.get(name, 0) + 1
    shared = [name for name, count in seen.items() if count >= 2]
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(shared)}


def layer_colours(names: Iterable[str], *, fixed: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """One colour per layer name, assigned in natural (module) order: the palette for up to
    ten layers, evenly spaced samples of a sequential scale (shallow to deep) beyond."""
    fixed = dict(fixed or {})
    ordered = sorted({n for n in names if n not in fixed}, key=natural_key)
    if len(ordered) <= len(PALETTE):
        colours = PALETTE[:len(ordered)]
    else:
        colours = sample_colorscale("Viridis", [i / (len(ordered) - 1) * 0.9
                                                for i in range(len(ordered))])
    return dict(zip(ordered, colours, strict=True)) | fixed


def _annotation_position(value: float, log: bool) -> float:
    """Where an annotation at data value ``value`` goes: plotly reads annotation positions on
    a log axis as log10 of the value (shapes, by contrast, take the value itself)."""
    return math.log10(value) if log else value


def _rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` or ``rgb(r, g, b)`` with an opacity."""
    if color.startswith("rgb("):
        r, g, b = (round(float(v)) for v in color[4:-1].split(","))
    else:
        h = color.lstrip("#")
        r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
