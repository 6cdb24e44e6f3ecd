"""The report of a probe run: one figure per measured quantity, one line per layer/parameter."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learnscope.analysis import Table
from learnscope.probes.session import PROBE_FAILED
from learnscope.report.figures import Series, line_figure
from learnscope.report.html import StudySection, write_report
from learnscope.store.records import Record

# Metadata that names *which* series a value belongs to (the rest describes how it was
# measured and is shown in the configuration table instead).
_SERIES_KEYS = ("layer", "parameter", "subset", "feature", "layer_a", "layer_b")
_MAX_SERIES = 12


def probe_figures(records: Sequence[Record]) -> tuple[list[Any], list[Table]]:
    """Figures of value vs step for every (probe, key); tables for ranked lists."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.probe, r.key)].append(r)
    figures, tables = [], []
    for (probe, key), recs in groups.items():
        if key == PROBE_FAILED:
            tables.append(Table(f"{probe}: failed and switched off", ["step", "phase", "error"],
                                [[r.step, r.meta.get("phase"), r.meta.get("error")]
                                 for r in recs]))
            continue
        if key == "suspicious_example":
            rows = [[r.meta.get("rank"), int(r.value)] + [r.meta.get(k) for k in
                    ("score", "confidence", "variability", "learned_epoch", "forgetting")]
                    for r in sorted(recs, key=lambda r: r.meta.get("rank", 0))]
            tables.append(Table(f"{probe}: examples that look memorized or mislabeled",
                                ["rank", "example", "score", "confidence", "variability",
                                 "learned epoch", "forgetting events"], rows))
            continue
        series: dict[tuple[Any, ...], list[Record]] = defaultdict(list)
        x_name = "alpha" if any("alpha" in r.meta for r in recs) else "step"
        for r in recs:
            series[tuple((k, r.meta[k]) for k in _SERIES_KEYS if k in r.meta)].append(r)
        if len(series) > _MAX_SERIES:  # e.g. per-feature values: keep the first few
            series = dict(list(series.items())[:_MAX_SERIES])
        lines = []
        for ident, rs in series.items():
            rs = sorted(rs, key=lambda r: r.meta.get(x_name, r.step) if x_name != "step"
                        else r.step)
            xs = [r.meta.get("alpha") if x_name == "alpha" else r.step for r in rs]
            name = ", ".join(f"{k}={v}" for k, v in ident) or key
            lines.append(Series(name, xs, [r.value for r in rs]))
        steps = [x for s in lines for x in s.x if isinstance(x, int | float)]
        log_x = x_name == "step" and len(steps) > 2 and max(steps) >= 100 and min(
            s for s in steps) >= 0
        if log_x:  # step 0 cannot sit on a log axis: plot it at 0.5 and say so
            lines = [Series(s.name, [max(x, 0.5) for x in s.x], s.y) for s in lines]
        finite = [v for s in lines for v in s.y if math.isfinite(v)]
        if not finite:
            continue
        figures.append(line_figure(f"{probe}: {key}", lines,
                                   x_title="step (0 plotted at 0.5)" if log_x else x_name,
                                   y_title=key, log_x=log_x, height=360))
    return figures, tables


def write_probe_report(path: str | Path, result: dict[str, Any],
                       records: Sequence[Record]) -> Path:
    """The report of a probe run; ``result["findings"]`` (claim-like dicts, see
    :mod:`learnscope.analysis.findings`) fill the claims table."""
    figures, tables = probe_figures(records)
    probes = result["config"].get("probes", [])
    tables.insert(0, Table("Probes", ["probe", "class", "cost", "schedule", "parameters"],
                           [[p["label"], p["class"], p["cost"], p["schedule"], p["params"]]
                            for p in probes]))
    timings = result.get("timings", {})
    section = StudySection(
        study=result["study"], title=f"Probe run: {result['study']}", source="learnscope probes",
        run_id=result.get("run_id", ""), verdict=result.get("status", ""),
        config={k: v for k, v in result["config"].items() if k != "probes"}
        | {"steps": result.get("steps"), "epochs": result.get("epochs")},
        claims=list(result.get("findings", [])), figures=figures, tables=tables,
        notes=["Findings (the table above): what the records say about this run, each with "
               "the numbers it was read from and the condition it checks; 'holds' says "
               "whether that condition is met, the statement gives the reading. Findings "
               "whose probe was not attached are absent."]
        + ([f"Findings could not be computed: {result['findings_error']}"]
           if result.get("findings_error") else [])
        + [f"{len(records)} records. Seconds spent per probe: " + ", ".join(
            f"{k} {v:.3g}" for k, v in timings.items())])
    return write_report(path, [section], title=f"learnscope probes: {result['study']}")
