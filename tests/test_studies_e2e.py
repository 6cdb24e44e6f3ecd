"""Every registered study end to end: at a tiny size in the default suite (the pipeline: trials,
store, analysis, figures, report), and at its --quick size with its verdict (marked slow; CI runs
them in parallel over both cores)."""

import json
import re

import pytest

from learnscope.cli import main
from learnscope.report.figures import draw
from learnscope.runner import run_study
from learnscope.studies import get_study, study_names

STUDIES = study_names()


def _claim(result, claim_id):
    (c,) = [c for c in result["claims"] if c["id"] == claim_id]
    return c


class _TinyRuns(dict):
    """Each study's tiny run, made on first use (``-k name`` runs only that study)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def __missing__(self, name):
        self[name] = run_study(name, quick=True, overrides=get_study(name).tiny, out=self.out)
        return self[name]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return out, _TinyRuns(out)


@pytest.mark.parametrize("name", STUDIES)
def test_tiny_run_end_to_end(tiny_runs, name):
    _, outcomes = tiny_runs
    outcome = outcomes[name]
    result = json.loads((outcome.run_dir / "result.json").read_text())
    for key in ("study", "config", "claims", "verdict", "metrics", "timings", "versions"):
        assert key in result
    assert result["verdict"] in ("reproduced", "partial", "not reproduced")
    assert result["claims"] and all(
        {"id", "statement", "measured", "threshold", "holds", "gating"} <= set(c)
        for c in result["claims"])
    assert outcome.analysis.figures and all(not f.empty for f in outcome.analysis.figures)
    for fig in outcome.analysis.figures:  # the kit's plain figures are valid plotly figures
        draw(fig).to_plotly()
    html = (outcome.run_dir / "report.html").read_text()
    # offline: plotly.js from the one local copy in the results folder, no URL
    (src,) = re.findall(r"<script[^>]+src='([^']+)'", html)
    assert src.startswith("../../plotly-") and (outcome.run_dir / src).is_file()
    assert "About this study" in html and "Claims" in html


def test_report_command_rebuilds_from_store(tiny_runs):
    _, outcomes = tiny_runs
    run_dir = outcomes[STUDIES[0]].run_dir
    before = json.loads((run_dir / "result.json").read_text())["claims"]
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "Plotly.newPlot" in (run_dir / "report.html").read_text()
    assert json.loads((run_dir / "result.json").read_text())["claims"] == before


def test_every_study_explains_itself():
    for name in STUDIES:
        s = get_study(name)
        assert s.title and s.summary and s.source and s.quick
        assert len(s.about()) > 300, f"{name}: the module docstring explains the study"
        assert "PHENOMENA" not in s.about() + s.source


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_quick_verdict(name, tmp_path):
    outcome = run_study(name, quick=True, out=tmp_path)
    failing = [c for c in outcome.result["claims"] if c["gating"] and not c["holds"]]
    assert outcome.result["verdict"] == "reproduced", failing
    assert outcome.result["timings"]["total_s"] < 120


def _neighbours():
    from learnscope.runner import resolve_config

    out = []
    for name in STUDIES:
        study = get_study(name)
        for label, overrides in study.neighbours(resolve_config(study, quick=True)).items():
            out.append(pytest.param(name, overrides, id=f"{name}: {label}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", _neighbours())
def test_quick_verdict_at_neighbour(name, overrides, tmp_path):
    """The robustness sweep: every gating claim also holds at the study's neighbouring
    configurations (other seeds, sizes +-50%, another noise level)."""
    outcome = run_study(name, quick=True, overrides=overrides, out=tmp_path)
    failing = [c for c in outcome.result["claims"] if c["gating"] and not c["holds"]]
    assert outcome.result["verdict"] == "reproduced", failing


def test_every_study_declares_neighbours():
    from learnscope.runner import resolve_config

    for name in STUDIES:
        study = get_study(name)
        assert len(study.neighbours(resolve_config(study, quick=True))) >= 4, name


@pytest.mark.slow
def test_quick_numbers_are_measured(tmp_path):
    dd = run_study("double-descent", quick=True, out=tmp_path).result
    assert _claim(dd, "rf-peak-location")["measured"]["peak_p"] == 100
    curves = dd["metrics"]["curves"]
    (title,) = [t for t in curves if t.startswith("Model-wise")]
    rf = {float(k): v for k, v in curves[title]["min-norm, noise sd 0.5"].items()}
    assert max(rf, key=rf.get) == 100 and rf[100] > 10 * rf[10]
    rl = run_study("random-labels", quick=True, out=tmp_path).result
    assert 0.0 < _claim(rl, "random-labels-test-at-chance")["measured"]["test_acc"] < 0.2
    assert _claim(rl, "fit-time-small-factor")["measured"]["epochs_ratio"] > 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["double-descent", "random-labels"])
def test_default_size_reproduces(name, tmp_path):
    assert main(["run", name, "--out", str(tmp_path), "--json"]) == 0


def test_mlp_bump_definition():
    from learnscope.analysis import Curve
    from learnscope.studies.double_descent_mlp import bump_of

    def curve(d):
        return Curve.from_groups({k: [v] for k, v in d.items()}, "width", "err")

    b = bump_of(curve({2: 80.0, 4: 60.0, 8: 66.0, 16: 64.0, 32: 58.0}))
    assert (b["first_min"], b["peak"]) == (4, 8)
    assert b["bump"] == 8.0 and b["rise"] == 6.0
    flat = bump_of(curve({2: 50.0, 4: 40.0, 8: 30.0}))  # monotone: no bump
    assert flat["bump"] == 0 and flat["rise"] == 0
