"""Report audit: threshold markers where the data puts them (log and linear axes), plotly.js
shared by the reports of a results folder (embedded elsewhere), claims that are not gating
shown neutrally when not seen, and no user-facing text pointing at files users do not have."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
from plotly.offline import get_plotlyjs

from learnscope.analysis import FigureData, Results, SeriesData
from learnscope.analysis.figures import Marker
from learnscope.probes.defaults import default_probes
from learnscope.report.figures import Figure, draw, line_figure
from learnscope.report.html import (
    StudySection,
    plotlyjs_name,
    render,
    write_report,
)
from learnscope.report.probe_report import write_probe_report
from learnscope.runner import RunOutcome, run_study
from learnscope.scope import Scope
from learnscope.seeding import torch_generator
from learnscope.store.records import Record, TrialResult
from learnscope.studies import get_study
from learnscope.studies.double_descent import DoubleDescentConfig
from learnscope.studies.double_descent_mlp import mlp_claims, mlp_notes

SRC = Path(__file__).resolve().parents[1] / "src" / "learnscope"


@pytest.fixture(scope="module")
def tiny_double_descent(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    out = tmp_path_factory.mktemp("runs")
    return run_study("double-descent", quick=True, overrides=get_study("double-descent").tiny,
                     out=out)


def _marker_positions(fig: Figure) -> list[tuple[float, float]]:
    """(shape x0, annotation x) of each vertical marker, in figure order."""
    shapes = [s for s in fig.layout.shapes if s.x0 == s.x1 and s.xref == "x"]
    notes = [a for a in fig.layout.annotations if a.xref == "x"]
    assert len(shapes) == len(notes)
    return [(s.x0, a.x) for s, a in zip(shapes, notes, strict=True)]


def test_headline_figure_marks_p_equals_n_on_its_log_axis(
        tiny_double_descent: RunOutcome) -> None:
    """plotly takes a shape's x in data units on a log axis (it applies log10 itself) and an
    annotation's x in axis units (log10 of the value): the line and its label sit at p = n."""
    fig_data = tiny_double_descent.analysis.figures[0]
    assert fig_data.title.startswith("Model-wise double descent")
    n = tiny_double_descent.result["config"]["n_train"]
    fig = draw(fig_data)
    assert fig.layout.xaxis.type == "log"
    assert _marker_positions(fig) == [(n, pytest.approx(math.log10(n)))]
    # p = n sits inside the plotted range, not at its left edge.
    ps = [x for trace in fig.data for x in trace.x]
    assert min(ps) < n < max(ps)


def test_every_double_descent_threshold_marker_sits_at_its_threshold(
        tiny_double_descent: RunOutcome) -> None:
    cfg = tiny_double_descent.result["config"]
    expected = {"Model-wise": cfg["n_train"], "Sample-wise": cfg["samplewise_features"],
                "Polynomial": cfg["poly_points"]}
    seen = set()
    for fig_data in tiny_double_descent.analysis.figures:
        for prefix, threshold in expected.items():
            if fig_data.title.startswith(prefix):
                seen.add(prefix)
                fig = draw(fig_data)
                assert fig.layout.xaxis.type == "log"
                assert _marker_positions(fig) == [
                    (threshold, pytest.approx(math.log10(threshold)))]
    assert seen == set(expected)


def _figure(log_x: bool, log_y: bool, vlines=(), hlines=()) -> Figure:
    return draw(FigureData("line", "t", log_x=log_x, log_y=log_y,
                           series=[SeriesData("s", [1, 10, 100, 1000], [0.1, 1, 10, 100])],
                           markers=[Marker(x, label) for x, label in vlines],
                           hlines=list(hlines)))


def test_vertical_marker_on_a_linear_axis_uses_the_value_for_line_and_label() -> None:
    fig = _figure(False, False, vlines=[(40, "p = n")])
    assert fig.layout.xaxis.type == "linear"
    assert _marker_positions(fig) == [(40, 40)]


def test_horizontal_line_on_a_log_axis_sits_at_its_value() -> None:
    fig = _figure(False, True, hlines=[(3.0, "three")])
    [shape] = fig.layout.shapes
    [note] = fig.layout.annotations
    assert fig.layout.yaxis.type == "log"
    assert (shape.yref, shape.y0, shape.y1) == ("y", 3.0, 3.0)
    assert (note.yref, note.y, note.text) == ("y", pytest.approx(math.log10(3.0)), "three")


def test_horizontal_line_on_a_linear_axis_sits_at_its_value() -> None:
    fig = line_figure("t", [], x_title="x", y_title="y", hlines=[(0.1, "chance")])
    [shape] = fig.layout.shapes
    [note] = fig.layout.annotations
    assert (shape.y0, shape.y1, note.y) == (0.1, 0.1, 0.1)


def test_markers_with_no_place_on_a_log_axis_are_left_out() -> None:
    fig = _figure(True, True, vlines=[(0, "zero"), (10, "ten")], hlines=[(-1, "neg")])
    assert _marker_positions(fig) == [(10, pytest.approx(1.0))]
    assert [a.text for a in fig.layout.annotations] == ["ten"]
    fig.to_plotly()  # valid for plotly's own validation


def test_line_figures_with_bands_and_markers_are_valid_plotly() -> None:
    from learnscope.report.figures import Series, figure_json

    fig = line_figure("t", [Series("a", [1, 2, 3], [1.0, math.nan, 3.0], lo=[0, 0, 2],
                                   hi=[2, 2, 4], dash="dash"), Series("b", [1, 2], [2, 1])],
                      x_title="x", y_title="y", log_x=True, vlines=[(2, "two")],
                      hlines=[(1.5, "mid")], legend_title="module")
    plot = fig.to_plotly()
    assert plot.layout.template.layout.plot_bgcolor == "white"  # the report's look
    assert plot.layout.xaxis.title.text == "x" and plot.layout.legend.title.text == "module"
    assert [t.name for t in plot.data] == ["a spread", "a", "b"]
    assert figure_json(fig)["layout"]["template"]["layout"]["plot_bgcolor"] == "white"


# --- plotly.js shared by the reports of a results folder ------------------------------------

def _script_src(text: str) -> str | None:
    match = re.search(r"<script type='text/javascript' src='([^']+)'>", text)
    return match.group(1) if match else None


def test_run_report_is_small_and_loads_the_results_folders_plotlyjs(
        tiny_double_descent: RunOutcome) -> None:
    report = tiny_double_descent.run_dir / "report.html"
    text = report.read_text(encoding="utf-8")
    assert report.stat().st_size < 200_000
    src = _script_src(text)
    assert src == f"../../{plotlyjs_name()}"
    shared = (report.parent / src).resolve()
    assert shared == (tiny_double_descent.run_dir.parent.parent / plotlyjs_name()).resolve()
    assert shared.read_text(encoding="utf-8") == get_plotlyjs()
    assert "Plotly.newPlot" in text  # the figures are there, drawn by the shared library


def _section() -> StudySection:
    return StudySection("s", "S", "src", "r", "reproduced", {"a": 1}, [], figures=[
        FigureData("line", "f", series=[SeriesData("s", [1, 2], [3, 4])])])


def test_reports_of_one_results_folder_share_one_copy(tmp_path: Path) -> None:
    (tmp_path / "learnscope.db").write_bytes(b"")
    paths = [tmp_path / "study" / "run1" / "report.html",
             tmp_path / "tour" / "20260101-000000" / "report.html"]
    for path in paths:
        path.parent.mkdir(parents=True)
        write_report(path, [_section()], title="t")
        assert _script_src(path.read_text(encoding="utf-8")) == f"../../{plotlyjs_name()}"
    assert [p.name for p in tmp_path.glob("plotly-*.min.js")] == [plotlyjs_name()]


def test_a_damaged_shared_copy_is_rewritten(tmp_path: Path) -> None:
    (tmp_path / "learnscope.db").write_bytes(b"")
    (tmp_path / plotlyjs_name()).write_text("truncated", encoding="utf-8")
    path = tmp_path / "study" / "run1" / "report.html"
    path.parent.mkdir(parents=True)
    write_report(path, [_section()], title="t")
    assert (tmp_path / plotlyjs_name()).read_text(encoding="utf-8") == get_plotlyjs()


def test_a_report_elsewhere_or_standalone_embeds_plotlyjs(tmp_path: Path) -> None:
    (tmp_path / "learnscope.db").write_bytes(b"")
    elsewhere = write_report(tmp_path / "mine.html", [_section()], title="t")
    run_dir = tmp_path / "study" / "run1"
    run_dir.mkdir(parents=True)
    standalone = write_report(run_dir / "report.html", [_section()], title="t",
                              standalone=True)
    for path in (elsewhere, standalone):
        text = path.read_text(encoding="utf-8")
        assert _script_src(text) is None and get_plotlyjs() in text
    assert not list(tmp_path.glob("plotly-*.min.js"))


def test_shared_report_says_so_when_plotlyjs_is_missing() -> None:
    text = render([_section()], title="t", plotlyjs_src="../../plotly-x.min.js")
    assert "id='plotlyjs-missing'" in text and "if(!window.Plotly)" in text
    assert "plotlyjs-missing" not in render([_section()], title="t")


# --- claims that are not gating ------------------------------------------------------------

def _claim(holds: bool, gating: bool) -> dict[str, object]:
    return {"id": f"c-{holds}-{gating}", "statement": "s", "measured": {"x": 1.0},
            "threshold": "x > 2", "holds": holds, "gating": gating}


def _result_cell(text: str, claim_id: str) -> str:
    row = re.search(rf"<code>{claim_id}</code>.*?</tr>", text, re.S)
    assert row is not None
    return re.findall(r"<td>(.*?)</td>", row.group(0), re.S)[-1]


def test_a_non_gating_claim_not_seen_is_shown_neutrally_not_as_a_failure() -> None:
    section = StudySection("s", "S", "src", "r", "reproduced", {}, [
        _claim(True, True), _claim(False, True), _claim(True, False), _claim(False, False)])
    text = render([section], title="t", plotlyjs_src="x.js")
    assert "badge fails'>fails<" in _result_cell(text, "c-False-True")
    assert "badge holds'>holds<" in _result_cell(text, "c-True-True")
    assert "badge holds'>holds<" in _result_cell(text, "c-True-False")
    not_seen = _result_cell(text, "c-False-False")
    assert "fails" not in not_seen and "not seen at this size" in not_seen


# --- nothing user-facing points at files users do not have ---------------------------------

def test_no_source_file_cites_internal_documents() -> None:
    cited = [f"{path.relative_to(SRC)}: {line.strip()}"
             for path in SRC.rglob("*.py")
             for line in path.read_text(encoding="utf-8").splitlines()
             if re.search(r"PHENOMENA|DESIGN\.md", line)]
    assert cited == []


@pytest.mark.slow
def test_quick_double_descent_report_is_under_200_kb(tmp_path: Path) -> None:
    outcome = run_study("double-descent", quick=True, out=tmp_path)
    report = outcome.run_dir / "report.html"
    assert report.stat().st_size < 200_000
    src = _script_src(report.read_text(encoding="utf-8"))
    assert src is not None
    assert (report.parent / src).read_text(encoding="utf-8") == get_plotlyjs()


# --- the MLP claims at the size they are stated at -----------------------------------------

def _mlp_results(curves: dict[float, list[float]], widths: list[int], seeds: int) -> Results:
    """Hand-made MLP sweep: ``curves[noise]`` is the test error at each width, every seed."""
    return Results([
        TrialResult(f"{noise}-{w}-{s}", {"part": "mlp", "noise": noise, "width": w, "seed": s},
                    "finished", [Record("test_error", err, 0, "mlp")])
        for noise, errors in curves.items() for w, err in zip(widths, errors, strict=True)
        for s in range(seeds)])


CURVES = {0.15: [0.80, 0.60, 0.70, 0.65, 0.55], 0.0: [0.80, 0.60, 0.62, 0.58, 0.50]}
WIDTHS = [2, 4, 8, 16, 32]


def test_mlp_bump_and_rise_by_hand() -> None:
    cfg = dataclasses.replace(DoubleDescentConfig(), mlp_widths=tuple(WIDTHS), mlp_seeds=2)
    claims = {c.id: c for c in mlp_claims(cfg, _mlp_results(CURVES, WIDTHS, 2))}
    # Noisy: first minimum at h=4 (60), worst later width h=8 (70), widest 55 points.
    peak = claims["mlp-peak-with-noise"].to_dict()
    assert peak["measured"]["bump_points"] == pytest.approx(15.0)
    assert (peak["measured"]["peak_width"], peak["measured"]["first_min_width"]) == (8, 4)
    # Rises above the first minimum: noisy 70 - 60 = 10, clean 62 - 60 = 2.
    sharpen = claims["mlp-noise-sharpens-peak"].to_dict()
    assert sharpen["measured"]["rise_noisy_minus_clean"] == pytest.approx(8.0)
    assert sharpen["holds"]


def test_one_mlp_seed_does_not_state_the_noisy_versus_clean_comparison() -> None:
    cfg = dataclasses.replace(DoubleDescentConfig(), mlp_widths=tuple(WIDTHS), mlp_seeds=1)
    claims = mlp_claims(cfg, _mlp_results(CURVES, WIDTHS, 1))
    assert [c.id for c in claims] == ["mlp-peak-with-noise"]
    assert mlp_notes(cfg) and "mlp_seeds=2" in mlp_notes(cfg)[0]
    assert mlp_notes(dataclasses.replace(cfg, mlp_seeds=2)) == []


def test_probe_report_of_a_scope_run_shares_plotlyjs(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    gen = torch_generator(0, "test_report_audit")
    x, y = torch.randn(32, 4, generator=gen), torch.randint(0, 2, (32,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Scope(model, default_probes(), data=(x, y), out=tmp_path, name="tiny") as scope:
        for _ in range(3):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            scope.step(loss)
    report = scope.run_dir / "report.html"
    src = _script_src(report.read_text(encoding="utf-8"))
    assert src == f"../../{plotlyjs_name()}"
    assert (report.parent / src).read_text(encoding="utf-8") == get_plotlyjs()
    assert report.stat().st_size < 200_000
    records = [Record("loss", 1.0, 0)]
    standalone = write_probe_report(report, {"study": "tiny", "config": {}}, records,
                                    standalone=True)
    assert _script_src(standalone.read_text(encoding="utf-8")) is None


def test_report_command_standalone_embeds_plotlyjs(tiny_double_descent: RunOutcome) -> None:
    """`learnscope report RUN --standalone` rewrites the report with plotly.js inside, so it
    opens after the run folder is copied away; without it the shared copy is used."""
    from learnscope.cli import main

    report = tiny_double_descent.run_dir / "report.html"
    assert main(["report", str(tiny_double_descent.run_dir), "--standalone"]) == 0
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text) and report.stat().st_size > 1_000_000
    assert main(["report", str(tiny_double_descent.run_dir)]) == 0
    assert report.stat().st_size < 200_000


def test_terminal_shows_a_non_gating_miss_as_unseen() -> None:
    from rich.console import Console

    from learnscope.report.terminal import print_claims

    claims = [{"id": "weak", "statement": "s", "measured": {"x": 1}, "threshold": "x > 2",
               "holds": False, "gating": False},
              {"id": "strong", "statement": "s", "measured": {"x": 1}, "threshold": "x > 2",
               "holds": False, "gating": True}]
    console = Console(width=120, record=True, color_system="truecolor")
    print_claims({"study": "s", "verdict": "not reproduced", "claims": claims}, console)
    text = console.export_text()
    assert "unseen*" in text and "fails" in text


def test_a_series_keeps_its_colour_across_a_studys_figures() -> None:
    """The same series name (a layer, a noise level) gets one colour in every figure of a
    study section; the others take the palette colours those leave free."""
    from learnscope.report.figures import PALETTE, shared_series_colours

    a = FigureData("line", "a", series=[SeriesData("noise 0", [1, 2], [1, 2]),
                                         SeriesData("noise 0.5", [1, 2], [2, 3])])
    b = FigureData("line", "b", series=[SeriesData("only here", [1, 2], [1, 2]),
                                         SeriesData("noise 0.5", [1, 2], [0, 1]),
                                         SeriesData("noise 0", [1, 2], [3, 1])])
    colours = shared_series_colours([a, b])
    assert colours == {"noise 0": PALETTE[0], "noise 0.5": PALETTE[1]}
    fa, fb = draw(a, colours), draw(b, colours)
    by_name = {t.name: t.line.color for t in fb.data}
    assert by_name["noise 0.5"] == {t.name: t.line.color for t in fa.data}["noise 0.5"]
    assert by_name["noise 0"] == PALETTE[0] and by_name["only here"] == PALETTE[2]
    assert [t.line.color for t in draw(a).data] == [PALETTE[0], PALETTE[1]]  # no map: as before
