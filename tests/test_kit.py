"""The study kit: claim library, Results aggregation, parts and batches, atomic batch stores."""

import dataclasses
import math

import numpy as np
import pytest

from learnscope.analysis import Curve, Results, median_iqr
from learnscope.analysis.claims import (
    above,
    all_of,
    at_least,
    at_most,
    below,
    between,
    claim,
    monotone,
    peak_at,
    ratio,
    verdict,
)
from learnscope.analysis.figures import Heatmap, LinePlot, Lines, Marker, evaluate
from learnscope.config import StudyConfig, param
from learnscope.store import Record, RunStore, TrialResult
from learnscope.store.sqlite import TrialWrite
from learnscope.studies.base import Study, TrialOutput, part

NAN = float("nan")


# -- claim library ----------------------------------------------------------------------------

@pytest.mark.parametrize("test, value, holds, text", [
    (at_least(2), 2.0, True, "x >= 2"), (at_least(2), 1.99, False, "x >= 2"),
    (at_most(0.5), 0.5, True, "x <= 0.5"), (above(1), 1.0, False, "x > 1"),
    (below(1), 0.999, True, "x < 1"), (between(1.5, 4), 4.0, True, "1.5 <= x <= 4"),
    (between(1.5, 4), 1.4, False, "1.5 <= x <= 4"),
    (at_least(-math.inf), NAN, False, "x >= -inf"), (between(0, 1), NAN, False, "0 <= x <= 1"),
])
def test_threshold_text_is_the_check(test, value, holds, text):
    c = claim("c", "statement", "x", value, test)
    assert c.holds is holds and c.threshold == text
    assert c.to_dict()["measured"]["x"] == (None if math.isnan(value) else value)


def test_all_of_ratio_and_verdict():
    c = all_of("c", "s", {"n": (3, at_least(3)), "acc": (0.1, between(0.05, 0.16))})
    assert c.holds and c.threshold == "n >= 3 and 0.05 <= acc <= 0.16"
    assert not all_of("c", "s", {"n": (2, at_least(3)), "acc": (0.1, between(0, 1))}).holds
    r = ratio("r", "s", "q", 6.0, 2.0, between(1.5, 4), names=("a", "b"))
    assert r.holds and r.measured == {"q": 3.0, "a": 6.0, "b": 2.0}
    assert not ratio("r", "s", "q", 1.0, 0.0, at_least(0)).holds  # 0 denominator: NaN
    holds, fails = claim("a", "", "x", 1, at_least(0)), claim("b", "", "x", 1, above(2))
    weak = claim("w", "", "x", 1, above(2), gating=False)
    assert verdict([holds, weak]) == "reproduced"
    assert verdict([holds, fails]) == "partial"
    assert verdict([fails, weak]) == "not reproduced" and verdict([weak]) == "not reproduced"


def _curve(points: dict[float, float]) -> Curve:
    return Curve.from_groups({x: [y] for x, y in points.items()}, "p", "mse")


def test_monotone_and_peak_at():
    down = _curve({1: 3.0, 2: 2.0, 3: 1.0})
    assert monotone("m", "", down).holds
    assert not monotone("m", "", down, increasing=True).holds
    flat = _curve({1: 1.0, 2: 1.0, 3: 2.0})
    assert not monotone("m", "", flat, increasing=True).holds
    assert monotone("m", "", flat, increasing=True, strict=False).holds
    assert not monotone("m", "", _curve({1: 1.0, 2: NAN, 3: 2.0}), increasing=True).holds
    assert not monotone("m", "", _curve({1: 1.0})).holds  # one point proves nothing
    peak = _curve({10: 1.0, 90: 3.0, 100: 50.0, 110: 2.0})
    c = peak_at("p", "", peak, 100, within=0.1)
    assert c.holds and c.measured["peak_p"] == 100
    assert not peak_at("p", "", _curve({10: 9.0, 100: 5.0}), 100, within=0.1).holds
    assert peak_at("p", "", _curve({10: 1.0, 95: 5.0}), 100, within=0.1).holds
    assert not peak_at("p", "", _curve({10: NAN, 100: NAN}), 100).holds


# -- Results ------------------------------------------------------------------------------------

def _trials():
    out = []
    for seed in range(4):
        for p in (10, 100):
            recs = [Record("mse", float(seed + p), step=1, meta={"fit": "min_norm"}),
                    Record("mse", float(seed + p) / 10, step=1, meta={"fit": "ridge"}),
                    Record("acc", 0.1 * seed, step=0), Record("acc", 0.5 + 0.1 * seed, step=5),
                    Record("acc", 0.2, step=9)]
            out.append(TrialResult(f"s{seed}p{p}", {"part": "rf", "seed": seed, "p": p},
                                   "finished", recs))
    out.append(TrialResult("x", {"part": "other", "seed": 0}, "diverged", []))
    return out


def test_median_and_quartiles_by_hand():
    # numpy's linear interpolation: for [10, 11, 12, 13] the quartiles are 10.75 and 12.25
    assert median_iqr([10.0, 11.0, 12.0, 13.0]) == (11.5, 10.75, 12.25)
    assert all(math.isnan(v) for v in median_iqr([1.0, NAN]))
    assert all(math.isnan(v) for v in median_iqr([]))
    c = Results(_trials()).where(part="rf", fit="min_norm").curve("mse", "p")
    assert c.x == (10, 100) and c.y == (11.5, 101.5)
    assert c.lo == (10.75, 100.75) and c.hi == (12.25, 102.25)
    assert c.values[0] == (10.0, 11.0, 12.0, 13.0)


def test_results_select_and_aggregate():
    r = Results(_trials())
    assert len(r) == 9 and len(r.where(part="rf")) == 8
    rf = r.where(part="rf", p=10)
    assert list(rf.values("acc", "final")) == [0.2] * 4
    assert list(rf.values("acc", "max")) == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert list(rf.values("acc", "first")) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert rf.where(fit="ridge").median("mse") == pytest.approx(1.15)
    assert r.where(seed=[0, 1], p=100).axis("seed") == [0, 1]
    # a trial without the key counts as missing: the median over it is NaN
    assert math.isnan(r.where(seed=0).median("acc"))
    assert r.where(seed=0).count_finite("acc") == 2
    with pytest.raises(ValueError, match="no field 'nosuch'"):
        r.where(nosuch=1)
    with pytest.raises(ValueError, match="stat must be one of"):
        r.values("acc", "median")
    t = r.where(part="rf").over_time("acc")
    assert t.x == (0, 5, 9) and t.y[2] == pytest.approx(0.2)


def test_curve_over_a_record_field_and_matrix():
    trials = [TrialResult(f"t{s}", {"seed": s}, "finished",
                          [Record("t90", 100 * (layer + 1) + s, meta={"layer": layer})
                           for layer in range(3)] +
                          [Record("cka", 0.1 * layer + 0.01 * step, step=step, meta={"layer": layer})
                           for layer in range(2) for step in (0, 10)])
              for s in range(3)]
    r = Results(trials)
    c = r.curve("t90", "layer")
    assert c.x == (0, 1, 2) and c.y == (101, 201, 301)
    rows, cols, z = r.matrix("cka", rows="layer")
    assert rows == [0, 1] and cols == [0, 10]
    np.testing.assert_allclose(z, [[0.0, 0.1], [0.1, 0.2]])


def test_figures_are_data():
    r = Results(_trials())
    fig = evaluate(LinePlot("t", "p", (Lines({"part": "rf"}, group="fit", label="{fit}"),),
                            key="mse", log_x=True, markers=(Marker(100, "n"),)), r)
    assert [s.name for s in fig.series] == ["min_norm", "ridge"]
    assert fig.series[0].x == [10, 100] and fig.series[0].y == [11.5, 101.5]
    assert fig.series[0].lo == [10.75, 100.75] and fig.markers[0].x == 100
    first = evaluate(LinePlot("t", "step", (Lines({"part": "rf", "p": 10}),), key="acc",
                              seeds="first"), r)
    assert len(first.series) == 1 and first.series[0].y == pytest.approx([0.0, 0.5, 0.2])
    assert evaluate(LinePlot("t", "p", (Lines({"part": "none"}),), key="mse"), r).empty
    heat = evaluate(Heatmap("h", "acc", rows="seed"), r.where(part="rf"))
    assert heat.rows == [0, 1, 2, 3] and heat.cols == [0, 5, 9]


def test_points_over_a_heat_map():
    """A map of a 2-D input window with the training points drawn over it: the points are read
    on the map's own coordinates, one marker set per group, on numeric axes."""
    from learnscope.analysis.figures import Scatter
    from learnscope.report.figures import draw

    grid = [Record("colour", 3 * i + j, meta={"x1": 0.5 * j, "x2": 0.5 * i})
            for i in range(2) for j in range(3)]
    points = [Record("px2", y, meta={"x1": x, "label": c})
              for x, y, c in ((0.1, 0.2, 0), (0.9, 0.4, 1), (0.3, 0.1, 1))]
    r = Results([TrialResult("t", {"seed": 0}, "finished", grid + points)])
    spec = Heatmap("map", "colour", rows="x2", cols="x1",
                   points=Scatter("", "px2", "x1", group="label", label="class {label}"))
    fig = evaluate(spec, r)
    assert fig.rows == [0, 0.5] and fig.cols == [0, 0.5, 1]
    assert fig.z == [[0, 1, 2], [3, 4, 5]]
    assert [(s.name, s.x, s.y) for s in fig.series] == [
        ("class 0", [0.1], [0.2]), ("class 1", [0.9, 0.3], [0.4, 0.1])]
    plotted = draw(fig)
    assert [t["type"] for t in plotted.data] == ["heatmap", "scatter", "scatter"]
    assert plotted.data[0]["x"] == [0, 0.5, 1] and plotted.data[0]["y"] == [0, 0.5]
    assert plotted.layout.xaxis.type == "linear" and plotted.layout.yaxis.type == "linear"
    symbols = [t["marker"]["symbol"] for t in plotted.data[1:]]
    assert len(set(symbols)) == 2
    plotted.to_plotly()  # valid for plotly
    # without points the map keeps one cell per label
    plain = draw(evaluate(Heatmap("map", "colour", rows="x2", cols="x1"), r))
    assert plain.layout.xaxis.type == "category" and plain.data[0]["x"] == ["0", "0.5", "1"]


# -- parts, batches, stores -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ToyConfig(StudyConfig):
    seeds: int = param(2, "seeds", ge=1)
    levels: tuple[float, ...] = param((0.0, 0.5, 1.0), "levels")


calls: list[list[dict]] = []


def run_batch(cfg, trials):
    calls.append([t.spec for t in trials])
    return [{"value": t.level + t.seed} for t in trials]


def run_one(cfg, trial):
    calls.append([trial.spec])
    return [Record("value", trial.seed)]


class Toy(Study[ToyConfig]):
    name, title, summary, source, Config = "toy", "Toy", "toy", "none", ToyConfig

    def parts(self, cfg):
        return [part("batched", run_batch, batch_by=["seed"], level=cfg.levels,
                     seed=cfg.seed_list()),
                part("single", run_one, seed=cfg.seed_list())]

    def claims(self, cfg, results):
        return [claim("c", "", "v", results.where(part="batched").median("value"), above(0))]


def test_parts_form_batches_and_dispatch():
    study, cfg = Toy(), ToyConfig()
    specs = study.trials(cfg)
    assert len(specs) == 8 and specs[0] == {"part": "batched", "level": 0.0, "seed": 0}
    groups = study.group_trials(cfg, specs)
    assert [[specs[i]["seed"] for i in g] for g in groups] == [[0, 0, 0], [1, 1, 1], [0], [1]]
    calls.clear()
    outs = study.run_group(cfg, [specs[i] for i in groups[1]])
    assert len(calls) == 1 and len(calls[0]) == 3  # one call for the whole batch
    assert [o.records[0].value for o in outs] == [1.0, 1.5, 2.0]
    assert isinstance(study.run_group(cfg, [specs[groups[2][0]]])[0], TrialOutput)
    with pytest.raises(ValueError, match="unknown axes"):
        part("x", run_one, batch_by=["nope"], seed=[0])
    assert part("x", run_one, n=[1, 1, 2]).axes == {"n": (1, 2)}


def test_a_batch_is_stored_whole_or_not_at_all(tmp_path):
    class Boom:
        def __iter__(self):
            raise KeyboardInterrupt

    with RunStore(tmp_path) as store:
        run = store.create_run("toy", {})
        batch = [TrialWrite("a", {"i": 1}, [Record("v", 1.0)]),
                 TrialWrite("b", {"i": 2}, Boom())]  # interrupted while writing the 2nd trial
        with pytest.raises(KeyboardInterrupt):
            store.save_trials(run.run_id, batch)
        assert store.finished_keys(run.run_id) == set()
        assert store.save_trials(run.run_id, batch[:1] + [TrialWrite("b", {}, [])]) == 2
        assert store.save_trials(run.run_id, batch[:1]) == 0  # already stored: skipped
        assert store.finished_keys(run.run_id) == {"a", "b"}


def test_median_ci_by_hand():
    from math import comb

    from learnscope.analysis import median_ci

    # 10 values: (x_(2), x_(9)) covers the median with 1 - 2 * (1 + 10) / 1024
    lo, hi, cov = median_ci([float(v) for v in range(10, 0, -1)])
    assert (lo, hi) == (2.0, 9.0) and cov == pytest.approx(1 - 2 * 11 / 1024)
    # 20 values at 95%: k = 6 is the largest with coverage >= 0.95
    lo, hi, cov = median_ci([float(v) for v in range(1, 21)])
    assert (lo, hi) == (6.0, 15.0)
    assert cov == pytest.approx(1 - 2 * sum(comb(20, i) for i in range(6)) / 2**20)
    assert median_ci([1.0, 2.0, 3.0]) == (1.0, 3.0, 0.75)  # too few for 95%: what 3 allow
    assert all(math.isnan(v) for v in median_ci([1.0, NAN, 2.0]))


def test_stands_out_uses_the_spread_over_seeds():
    from learnscope.analysis.claims import stands_out

    def curve(groups):
        return Curve.from_groups(groups, "p", "mse")

    peaked = curve({50: [1.0, 1.2, 0.9, 1.1], 100: [9.0, 20.0, 12.0, 15.0],
                    200: [0.5, 0.6, 0.4, 0.7]})
    c = stands_out("s", "", peaked, 100, [50, 200])
    assert c.holds and c.measured["ci_coverage"] == pytest.approx(0.875)  # 4 seeds: min..max
    assert c.measured["ci_high_at_50"] == 1.2 and c.measured["median_at_100"] == 13.5
    # one low seed at the peak overlaps the neighbours' spread: undecided, so it does not hold
    overlap = curve({50: [1.0, 1.2, 0.9, 1.1], 100: [1.1, 20.0, 12.0, 15.0],
                     200: [0.5, 0.6, 0.4, 0.7]})
    assert not stands_out("s", "", overlap, 100, [50, 200]).holds
    assert stands_out("s", "", overlap, 100, [50, 200], above_them=False).holds


def test_scatter_coloured_by_a_field_and_drawn_on_one_scale():
    """Scatter(color="epoch"): each point keeps its record's epoch; the report draws the
    groups as marker symbols on one colour scale spanning every group's epochs."""
    from learnscope.analysis.figures import Scatter
    from learnscope.report.figures import draw

    trials = [TrialResult(f"t{layer}", {"layer": layer}, "finished",
                          [Record("i_ty", 0.1 * e + layer, e, "p", {"i_xt": 5.0 - e, "epoch": e})
                           for e in range(4 + layer)])
              for layer in (1, 2)]
    spec = Scatter("plane", "i_ty", "i_xt", group="layer", label="layer {layer}",
                   color="epoch", color_title="epoch")
    fig = evaluate(spec, Results(trials))
    assert [s.name for s in fig.series] == ["layer 1", "layer 2"]
    assert fig.series[1].c == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert fig.series[1].x == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0] and fig.colorbar == "epoch"
    plot = draw(fig)
    symbols = [t.marker.symbol for t in plot.data]
    assert len(set(symbols)) == 2
    assert {(t.marker.cmin, t.marker.cmax) for t in plot.data} == {(0.0, 5.0)}
    assert [t.marker.showscale for t in plot.data] == [True, False]
    assert list(plot.data[0].marker.color) == [0.0, 1.0, 2.0, 3.0, 4.0]
    plot.to_plotly()  # valid for plotly's own validation
    plain = evaluate(dataclasses.replace(spec, color=None), Results(trials))
    assert all(s.c is None for s in plain.series)  # without color: the plain scatter
