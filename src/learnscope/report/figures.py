"""Small plotly figure builders shared by the studies (one look across every report)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

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


def line_figure(title: str, series: Sequence[Series], *, x_title: str, y_title: str,
                log_x: bool = False, log_y: bool = False,
                vlines: Sequence[tuple[float, str]] = (), height: int = 420) -> go.Figure:
    """Lines with optional shaded bands and labelled vertical markers."""
    fig = go.Figure()
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if s.lo is not None and s.hi is not None:
            fig.add_trace(go.Scatter(
                x=list(s.x) + list(s.x)[::-1], y=list(s.hi) + list(s.lo)[::-1], fill="toself",
                fillcolor=_rgba(color, 0.15), line={"width": 0}, mode="lines", hoverinfo="skip",
                showlegend=False, name=f"{s.name} spread"))
        fig.add_trace(go.Scatter(x=list(s.x), y=list(s.y), name=s.name, mode=s.mode,
                                 line={"color": color, "dash": s.dash}, marker={"size": 5}))
    for x, label in vlines:
        # Shapes on a log axis are placed in log10 units.
        fig.add_vline(x=math.log10(x) if log_x else x, line={"dash": "dot", "color": "#555"}, annotation_text=label,
                      annotation_position="top")
    fig.update_layout(title=title, height=height, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 60, "b": 50},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title=y_title, type="log" if log_y else "linear")
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
