"""HTML reports that open offline. plotly.js (4.8 MB) is written once into the results folder
(``OUT/plotly-<version>.min.js``) and every report below it (``OUT/<study>/<run>/report.html``,
the tour's ``OUT/tour/<time>/report.html``) loads it by relative path; a report written anywhere
else, or asked to be standalone, embeds it."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnscope.analysis import Analysis, FigureData, Table
from learnscope.report.figures import draw, figure_html, shared_series_colours

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:8px 0 4px} h2{font-size:21px;border-bottom:2px solid #ddd;
padding-bottom:4px;margin-top:36px} h3{font-size:16px;margin:20px 0 6px}
.meta{color:#666;font-size:13px} .card{background:#fff;border:1px solid #e3e3e3;
border-radius:6px;padding:12px 16px;margin:12px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0} th,td{border:1px solid #ddd;
padding:4px 8px;text-align:left;vertical-align:top} th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;font-size:13px}
.reproduced,.holds{background:#d4f4dd;color:#11602a} .partial{background:#fff1c2;color:#7a5a00}
.not-reproduced,.fails,.failed{background:#fbd5d5;color:#8a1c1c} .info{background:#e7eefc;color:#23427a}
.neutral{background:#eeeeee;color:#444;white-space:nowrap}
details{margin:8px 0} code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
nav a{margin-right:12px}
"""


@dataclass
class StudySection:
    """Everything the report shows about one run of one study."""

    study: str
    title: str
    source: str
    run_id: str
    verdict: str
    config: dict[str, Any]
    claims: list[dict[str, Any]]
    figures: list[Any] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    """The study's explanation (phenomenon, setup, sources, what its claims mean)."""
    findings: bool = False
    """The claims are findings about a user's run (conditions read from its records, not a
    paper's result): titled "Findings", answered yes/no without a pass/fail colour."""
    wall_s: float | None = None
    """Seconds the study took in a tour (its process's wall clock), shown in the summary."""
    cpu_s: float | None = None
    """CPU seconds of the process that ran the study in a tour."""

    @classmethod
    def from_result(cls, result: dict[str, Any], analysis: Analysis,
                    about: str = "") -> StudySection:
        return cls(result["study"], result.get("title", result["study"]),
                   result.get("source", ""), result.get("run_id", ""), result["verdict"],
                   result["config"], result["claims"], analysis.figures, analysis.tables,
                   analysis.notes, result.get("metrics", {}), result.get("timings", {}), about)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def _table_html(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for v in row:
            cls = ' class="num"' if isinstance(v, int | float) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _claims_html(claims: list[dict[str, Any]], findings: bool = False) -> str:
    rows = []
    for c in claims:
        if findings:
            state, css = ("yes", "info") if c["holds"] else ("no", "info")
            gate = ""
        elif c["holds"] or c.get("gating", True):
            state = css = "holds" if c["holds"] else "fails"
            gate = "" if c.get("gating", True) else ' <span class="badge info">not gating</span>'
        else:
            # A weak effect that does not decide the verdict: not seeing it at this size is
            # a result to read, not a failure of the run.
            state, css = "not seen at this size", "neutral"
            gate = ' <span class="badge info">not gating</span>'
        rows.append(
            f"<tr><td><code>{html.escape(c['id'])}</code></td>"
            f"<td>{html.escape(c['statement'])}{gate}</td>"
            f"<td>{html.escape(_fmt(c['measured']))}</td>"
            f"<td>{html.escape(c['threshold'])}</td>"
            f"<td><span class='badge {css}'>{state}</span></td></tr>")
    head = ("<th>finding</th><th>reading</th><th>measured</th><th>condition</th>"
            "<th>condition met</th>") if findings else (
        "<th>claim</th><th>statement</th><th>measured</th><th>expected</th><th>result</th>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _section_html(s: StudySection, index: int) -> str:
    parts = [f"<h2 id='s{index}'>{html.escape(s.title)} "
             f"<span class='badge {s.verdict.replace(' ', '-')}'>{html.escape(s.verdict)}</span>"
             "</h2>",
             f"<div class='meta'>study <code>{html.escape(s.study)}</code> · run "
             f"<code>{html.escape(s.run_id)}</code> · source: {html.escape(s.source)}</div>",
             _about_html(s.about), "<h3>Findings</h3>" if s.findings else "<h3>Claims</h3>",
             _claims_html(s.claims, s.findings)]
    if s.notes:
        parts.append("<div class='card'>" + "".join(f"<p>{html.escape(n)}</p>" for n in s.notes)
                     + "</div>")
    if s.figures:
        parts.append("<h3>Figures</h3>")
        colours = shared_series_colours(f for f in s.figures if isinstance(f, FigureData))
        for fig in s.figures:
            parts.append("<div class='card'>" + _figure_html(fig, colours) + "</div>")
    for t in s.tables:
        parts.append(f"<h3>{html.escape(t.title)}</h3>" + _table_html(t.columns, t.rows))
    parts.append("<details><summary>Resolved configuration</summary>"
                 + _table_html(["field", "value"], [[k, v] for k, v in s.config.items()])
                 + "</details>")
    if s.timings:
        parts.append("<details><summary>Timings</summary>"
                     + _table_html(["what", "seconds"], [[k, v] for k, v in s.timings.items()])
                     + "</details>")
    if s.metrics:
        parts.append("<details><summary>Metrics (as in result.json)</summary><pre>"
                     + html.escape(json.dumps(s.metrics, indent=1, default=str)[:200_000])
                     + "</pre></details>")
    return "\n".join(parts)


def _figure_html(fig: Any, colours: dict[str, str] | None = None) -> str:
    plot = draw(fig, colours) if isinstance(fig, FigureData) else fig
    html_ = figure_html(plot)
    caption = getattr(fig, "caption", "")
    return html_ + (f"<p class='meta'>{html.escape(caption)}</p>" if caption else "")


def _about_html(about: str) -> str:
    if not about:
        return ""
    body = []
    for para in about.split("\n\n"):
        lines = para.splitlines()
        items = [ln[2:] for ln in lines if ln.startswith("- ")]
        head = [ln for ln in lines if not ln.startswith("- ")]
        body += [f"<p>{html.escape(ln)}</p>" for ln in head]
        if items:
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
    return ("<details open><summary>About this study</summary><div class='card'>"
            + "".join(body) + "</div></details>")


def _seconds(value: float | None) -> float | str:
    return "-" if value is None else round(value, 1)


def render(sections: Sequence[StudySection], *, title: str,
           plotlyjs_src: str | None = None, total_wall_s: float | None = None) -> str:
    """The report's HTML; plotly.js is loaded from ``plotlyjs_src`` (a relative URL), or
    embedded when that is None. A tour's summary also lists each study's seconds (where its
    sections carry them) and the tour's ``total_wall_s``."""
    nav = ""
    if len(sections) > 1 or total_wall_s is not None:
        timed = any(s.wall_s is not None for s in sections)
        columns = ["study", "verdict", "claims holding", "claims"]
        columns += ["wall s", "CPU s"] if timed else []
        rows = [[s.title, s.verdict, sum(c["holds"] for c in s.claims), len(s.claims)]
                + ([_seconds(s.wall_s), _seconds(s.cpu_s)] if timed else [])
                for s in sections]
        total = ("" if total_wall_s is None else
                 f"<p class='meta'>total wall time: {total_wall_s:.1f} s</p>")
        nav = ("<h2>Summary</h2>" + _table_html(columns, rows) + total
               + "<nav>" + "".join(f"<a href='#s{i}'>{html.escape(s.study)}</a>"
                                   for i, s in enumerate(sections)) + "</nav>")
    body = "\n".join(_section_html(s, i) for i, s in enumerate(sections))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style>{_plotlyjs_html(plotlyjs_src)}</head><body><main>"
            f"{_missing_plotlyjs_html(plotlyjs_src)}<h1>{html.escape(title)}</h1>{nav}{body}"
            "</main></body></html>")


def write_report(path: str | Path, sections: Sequence[StudySection], *, title: str,
                 standalone: bool = False, total_wall_s: float | None = None) -> Path:
    """Write a report; the file appears only when complete. Below a results folder it shares
    that folder's copy of plotly.js (written on first use); elsewhere, or with ``standalone``,
    plotly.js is embedded."""
    path = Path(path)
    root = None if standalone else results_root(path)
    src = None
    if root is not None:
        shared = write_shared_plotlyjs(root)
        src = os.path.relpath(shared, path.absolute().parent).replace(os.sep, "/")
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(sections, title=title, plotlyjs_src=src,
                          total_wall_s=total_wall_s), encoding="utf-8")
    tmp.replace(path)
    return path


def plotlyjs_name() -> str:
    """The shared plotly.js file's name; the version in it keeps reports of different plotly
    versions apart."""
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{get_plotlyjs_version()}.min.js"


def results_root(report: Path) -> Path | None:
    """The results folder ``OUT`` when ``report`` is ``OUT/<folder>/<run>/report.html`` beside
    ``OUT/learnscope.db`` (the layout of run, probe and tour reports); else None."""
    root = report.absolute().parent.parent.parent
    return root if (root / "learnscope.db").is_file() else None


def write_shared_plotlyjs(root: Path) -> Path:
    """``root/plotly-<version>.min.js``, written (atomically) unless already there intact."""
    from plotly.offline import get_plotlyjs

    target = root / plotlyjs_name()
    js = get_plotlyjs()
    if not (target.is_file() and target.stat().st_size == len(js.encode("utf-8"))
            and target.read_text(encoding="utf-8") == js):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(js, encoding="utf-8")
        tmp.replace(target)
    return target


def _plotlyjs_html(src: str | None) -> str:
    if src is None:
        from plotly.offline import get_plotlyjs

        return f"<script type='text/javascript'>{get_plotlyjs()}</script>"
    return f"<script type='text/javascript' src='{html.escape(src)}'></script>"


def _missing_plotlyjs_html(src: str | None) -> str:
    """A notice, shown only when the shared plotly.js did not load (e.g. the run folder was
    copied without its results folder), instead of silently empty figures."""
    if src is None:
        return ""
    text = html.escape(
        f"The figures are missing: this report loads plotly.js from {src} (the results folder "
        "it was written in), which is not there. Copy that file to the same place relative to "
        "this report, or write a self-contained report with: learnscope report RUN_FOLDER "
        "--standalone")
    return (f"<div id='plotlyjs-missing' class='card fails' style='display:none'>{text}</div>"
            "<script>if(!window.Plotly){document.getElementById('plotlyjs-missing')"
            ".style.display='block'}</script>")
