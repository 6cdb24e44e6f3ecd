"""Both studies end to end at --quick: real training, claims computed from the run."""

import json
import re

import pytest

from learnscope.cli import main
from learnscope.studies import get_study, study_names


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    results = {}
    for name in ("double-descent", "random-labels"):
        assert main(["run", name, "--quick", "--out", str(out)]) == 0
        (run_dir,) = (out / name).iterdir()
        results[name] = (run_dir, json.loads((run_dir / "result.json").read_text()))
    return out, results


@pytest.mark.parametrize("name", ["double-descent", "random-labels"])
def test_quick_run_reproduces(quick_runs, name):
    _, results = quick_runs
    run_dir, result = results[name]
    for key in ("study", "config", "claims", "verdict", "metrics", "timings", "versions"):
        assert key in result
    assert result["verdict"] == "reproduced", [c for c in result["claims"] if not c["holds"]]
    assert all({"id", "statement", "measured", "threshold", "holds"} <= set(c)
               for c in result["claims"])
    assert result["timings"]["total_s"] < 120


def _claim(result, claim_id):
    (c,) = [c for c in result["claims"] if c["id"] == claim_id]
    return c


def test_double_descent_numbers_are_measured(quick_runs):
    _, results = quick_runs
    result = results["double-descent"][1]
    assert _claim(result, "rf-peak-location")["measured"]["peak_p"] == 100
    curves = result["metrics"]["curves"]
    (title,) = [t for t in curves if t.startswith("Model-wise")]
    rf = {float(k): v for k, v in curves[title]["min-norm, noise sd 0.5"].items()}
    assert max(rf, key=rf.get) == 100
    assert rf[100] > 10 * rf[10]


def test_random_labels_numbers_are_measured(quick_runs):
    _, results = quick_runs
    result = results["random-labels"][1]
    assert 0.0 < _claim(result, "random-labels-test-at-chance")["measured"]["test_acc"] < 0.2
    assert _claim(result, "fit-time-small-factor")["measured"]["epochs_ratio"] > 1.0


def test_report_is_self_contained(quick_runs):
    _, results = quick_runs
    for run_dir, _ in results.values():
        html = (run_dir / "report.html").read_text()
        assert "Plotly" in html and len(html) > 1_000_000  # plotly.js embedded
        assert not re.search(r"<script[^>]+src=", html)  # no CDN or external scripts
        assert "Claims" in html and "holds" in html


def test_report_command_rebuilds_from_store(quick_runs, capsys):
    _, results = quick_runs
    run_dir, _ = results["double-descent"]
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").stat().st_size > 1_000_000


def test_every_study_has_docs_and_quick_size():
    for name in study_names():
        s = get_study(name)
        assert s.title and s.summary and s.source and s.quick


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
