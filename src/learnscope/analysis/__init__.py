"""What a run concludes, shared by studies, probe runs and the report: claims and the claim
library, ``Results`` (tidy frames aggregated over seeds), curves, figure declarations and
tables. Neutral ground: it imports nothing from studies, report or runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from learnscope.analysis.claims import (
    Claim,
    Test,
    above,
    all_of,
    at_least,
    at_most,
    below,
    between,
    claim,
    jsonable,
    monotone,
    peak_at,
    ratio,
    stands_out,
    verdict,
)
from learnscope.analysis.curves import Curve, median_ci, median_iqr
from learnscope.analysis.figures import (
    FigureData,
    Graph,
    Heatmap,
    LinePlot,
    Lines,
    Marker,
    Scatter,
    SeriesData,
    evaluate,
)


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
    figures: list[FigureData] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


__all__ = ["Analysis", "Claim", "Curve", "FigureData", "Graph", "Heatmap", "LinePlot", "Lines", "Marker",
           "Results", "Scatter", "SeriesData", "Table", "Test", "above", "all_of", "at_least", "at_most", "below",
           "between", "claim", "evaluate", "jsonable", "median_ci", "median_iqr", "monotone", "peak_at",
           "ratio", "stands_out", "verdict"]


if TYPE_CHECKING:
    from learnscope.analysis.results import Results


def __getattr__(name: str) -> Any:
    """``Results`` on first use: it needs pandas (~0.5 s to import), which a Scope's findings
    and claims do not."""
    if name == "Results":
        from learnscope.analysis.results import Results

        return Results
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
