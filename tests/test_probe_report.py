"""The probe report's figures, from synthetic records: axis choice, layer colours, bars for
values measured once, heat maps for matrices, the order and the words around each figure."""

from __future__ import annotations

import math

import pytest

from learnscope.probes.schedule import every, log_spaced
from learnscope.report.figures import PALETTE, Figure, captioned, layer_colours, natural_key
from learnscope.report.html import StudySection, render
from learnscope.report.probe_report import (
    FIGURE_TEXT,
    ZERO_STEP_AT,
    figure_text,
    is_log_spaced,
    module_of,
    probe_figures,
)
from learnscope.store.records import Record


def _steps(schedule, last: int) -> list[int]:
    return [s for s in range(last + 1) if schedule.due_step(s)]


def _title(fig: Figure) -> str:
    return fig.layout.title.text


def _figure(figs: list[Figure], key: str) -> Figure:
    [fig] = [f for f in figs if f.layout.title.subtitle.text.endswith(f": {key}")]
    return fig


def _colour_of(fig: Figure, name: str) -> str:
    [trace] = [t for t in fig.data if t.name == name]
    return trace.line.color


@pytest.mark.parametrize("per_decade,last", [(1, 1000), (2, 240), (4, 100), (10, 5000)])
def test_log_spaced_schedules_are_recognised(per_decade: int, last: int) -> None:
    assert is_log_spaced(_steps(log_spaced(per_decade), last))


@pytest.mark.parametrize("steps", [
    _steps(every(25), 240), _steps(every(1), 300), list(range(1, 11)), [25, 50, 75],
    [1, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000], [0, 1, 2], []])
def test_evenly_spaced_or_short_schedules_are_linear(steps: list[int]) -> None:
    assert not is_log_spaced(steps)


def _series(key: str, steps: list[int], probe: str = "p", **meta: object) -> list[Record]:
    return [Record(key, 1.0 + 0.01 * s, step=s, probe=probe, meta=dict(meta)) for s in steps]


def test_log_axis_for_log_spaced_steps_and_linear_for_every_n() -> None:
    recs = (_series("stable_rank", _steps(log_spaced(2), 1000), "weight_spectrum", layer="fc1")
            + _series("grad_norm", _steps(every(25), 1000), "gradient_stats", parameter="all"))
    figs, _ = probe_figures(recs)
    spectrum, grads = _figure(figs, "stable_rank"), _figure(figs, "grad_norm")
    assert spectrum.layout.xaxis.type == "log"
    # step 0 is drawn at ZERO_STEP_AT, labelled "0", and the axis title says so
    assert spectrum.data[0].x[0] == ZERO_STEP_AT
    assert spectrum.layout.xaxis.tickvals[0] == ZERO_STEP_AT
    assert spectrum.layout.xaxis.ticktext[:2] == ["0", "1"]
    assert f"step 0 drawn at {ZERO_STEP_AT}" in spectrum.layout.xaxis.title.text
    assert grads.layout.xaxis.type == "linear"
    assert list(grads.data[0].x) == [float(s) for s in _steps(every(25), 1000)]


def test_one_colour_per_layer_across_every_figure() -> None:
    steps = [0, 1, 10, 100]
    recs = []
    for layer in ("fc1", "fc2", "fc10"):
        recs += _series("lambda_max", steps, "weight_spectrum", layer=layer)
        recs += _series("similarity_to_final", steps, "layer_similarity", layer=layer)
        recs += _series("grad_norm", steps, "gradient_stats", parameter=f"{layer}.weight")
        recs += _series("grad_norm", steps, "gradient_stats", parameter=f"{layer}.bias")
    recs += _series("grad_norm", steps, "gradient_stats", parameter="all")
    figs, _ = probe_figures(recs)
    spectrum, similarity = _figure(figs, "lambda_max"), _figure(figs, "similarity_to_final")
    grads = _figure(figs, "grad_norm")
    colours = {}
    for layer in ("fc1", "fc2", "fc10"):
        colours[layer] = _colour_of(spectrum, layer)
        assert _colour_of(similarity, layer) == colours[layer]
        assert _colour_of(grads, layer) == colours[layer]  # fc1.weight is drawn as fc1
        assert _colour_of(grads, f"{layer} bias") == colours[layer]
        [bias] = [t for t in grads.data if t.name == f"{layer} bias"]
        assert bias.line.dash == "dot"
    assert len(set(colours.values())) == 3
    # module order, not string order: fc1, fc2, fc10 take the palette in that order
    assert [colours[n] for n in ("fc1", "fc2", "fc10")] == PALETTE[:3]
    assert _colour_of(grads, "all parameters") not in colours.values()
    assert [t.name for t in spectrum.data] == ["fc1", "fc2", "fc10"]
    assert spectrum.layout.legend.title.text == "module"


def test_layer_colours_stay_distinct_beyond_the_palette() -> None:
    names = [f"blocks.{i}" for i in range(25)]
    colours = layer_colours(reversed(names), fixed={"all": "#333333"})
    assert len({colours[n] for n in names}) == 25
    assert colours["all"] == "#333333"
    assert sorted(names, key=natural_key)[:3] == ["blocks.0", "blocks.1", "blocks.2"]
    assert sorted(["blocks.10.mlp", "blocks.2.mlp"], key=natural_key)[0] == "blocks.2.mlp"
    assert module_of("blocks.2.mlp.weight") == "blocks.2.mlp"
    assert module_of("W") == "W"


def test_values_measured_once_become_bars_or_numbers() -> None:
    recs = [Record("steps_to_threshold", 32.0, step=240, probe="layer_similarity",
                   meta={"layer": "fc1", "threshold": 0.9}),
            Record("steps_to_threshold", math.nan, step=240, probe="layer_similarity",
                   meta={"layer": "fc2", "threshold": 0.9, "note": "never reached"}),
            Record("barrier_loss", 0.25, step=240, probe="linear_path", meta={"n_alphas": 5})]
    recs += _series("similarity_to_final", [0, 1, 10, 100, 240], "layer_similarity",
                    layer="fc2")
    figs, tables = probe_figures(recs)
    bars = _figure(figs, "steps_to_threshold")
    [bar] = bars.data
    assert bar.type == "bar"
    assert list(bar.x) == ["fc1", "fc2"]
    assert bar.y[0] == 32.0 and bar.y[1] is None
    assert list(bar.text) == ["32", "not reached"]
    # the bar of fc2 has the colour of fc2's line in the other figure
    assert bar.marker.color[1] == _colour_of(_figure(figs, "similarity_to_final"), "fc2")
    assert not any(f.layout.title.subtitle.text.endswith("barrier_loss") for f in figs)
    [once] = [t for t in tables if t.title == "Measured once"]
    [row] = once.rows
    assert row[:2] == ["Barrier loss", 0.25] and row[5] == "barrier_loss"


def test_layer_pairs_become_a_heat_map_at_the_last_step() -> None:
    pairs = {("fc1", "fc2"): 0.8, ("fc1", "fc3"): 0.3, ("fc2", "fc3"): 0.6}
    recs = [Record("layer_similarity", 0.1, step=10, probe="ls",
                   meta={"layer_a": a, "layer_b": b}) for a, b in pairs]
    recs += [Record("layer_similarity", v, step=100, probe="ls",
                    meta={"layer_a": a, "layer_b": b}) for (a, b), v in pairs.items()]
    figs, _ = probe_figures(recs)
    [heat] = figs
    [trace] = heat.data
    assert trace.type == "heatmap"
    names = list(trace.x)
    assert names == list(trace.y) == ["fc1", "fc2", "fc3"]
    z = [list(row) for row in trace.z]
    for (a, b), v in pairs.items():
        i, j = names.index(a), names.index(b)
        assert z[i][j] == z[j][i] == v
    assert [z[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert "at step 100" in _title(heat)


def test_two_dimensional_loss_slice_becomes_a_heat_map() -> None:
    grid = [-1.0, 0.0, 1.0]
    recs = [Record("slice_loss", a * a + 10 * b * b, step=50, probe="loss_slice",
                   meta={"alpha": a, "beta": b, "dims": 2}) for a in grid for b in grid]
    [heat], _ = probe_figures(recs)
    [trace] = heat.data
    assert trace.type == "heatmap"
    assert list(trace.x) == list(trace.y) == ["-1", "0", "1"]
    for i, b in enumerate(grid):
        for j, a in enumerate(grid):
            assert trace.z[i][j] == a * a + 10 * b * b


def test_loss_first_then_scalars_then_probes_each_with_words() -> None:
    recs = (_series("lambda_max", [0, 1, 10], "weight_spectrum", layer="0")
            + _series("accuracy_top5", list(range(1, 50)), "scalars")
            + _series("my_quantity", [0, 5, 10], "my_probe")
            + _series("loss", list(range(1, 50)), "scalars"))
    figs, _ = probe_figures(recs)
    titles = [_title(f) for f in figs]
    assert titles[0].startswith("Training loss")
    assert figs[1].layout.title.subtitle.text == "scalars: accuracy_top5"
    assert titles[2].startswith(FIGURE_TEXT["lambda_max"].title)
    for fig in figs:
        assert fig.caption.endswith(".") and len(fig.caption) > 20
        assert fig.layout.yaxis.title.text
    # a key without words of its own gets a generic description naming probe and key
    generic = figure_text("my_probe", "my_quantity")
    assert generic.title == "My quantity"
    assert "my_probe" in generic.caption and "my_quantity" in generic.caption
    assert _figure(figs, "my_quantity").caption.startswith(generic.caption)


def test_series_beyond_the_limit_are_named_in_the_caption() -> None:
    recs = []
    for feature in range(20):
        recs += _series("feature_norm", [0, 1, 10, 100], "superposition", feature=feature)
    [fig], _ = probe_figures(recs)
    assert len(fig.data) == 12
    assert "first 12 of 20" in fig.caption


def test_the_caption_reaches_the_html_report() -> None:
    fig = captioned(Figure([{"type": "scatter", "x": [1, 2], "y": [3, 4]}]),
                    "How to read this figure.")
    section = StudySection("s", "S", "", "r", "finished", {}, [], figures=[fig])
    assert "How to read this figure." in render([section], title="t")


def test_information_plane_is_one_figure_of_i_xt_against_i_ty() -> None:
    """i_xt and i_ty of one probe are drawn as a plane: x = I(X;T), y = I(T;Y), one line per
    layer in step order, in the layer's colour of the whole report; not against step."""
    recs = []
    for step in (0, 10, 100):
        for k, layer in enumerate(("fc1", "fc2")):
            meta = {"layer": layer, "estimator": "binning"}
            recs += [Record("i_xt", 5.0 - 0.01 * step - k, step, "information_plane", meta),
                     Record("i_ty", 0.1 + 0.005 * step + k, step, "information_plane",
                            dict(meta))]
    recs += [Record("grad_norm", 1.0, s, "gradient_stats", {"parameter": p})
             for s in (5, 10) for p in ("fc1.weight", "fc2.weight")]
    figs, _ = probe_figures(recs)
    planes = [f for f in figs if _title(f) == "Information plane"]
    assert len(planes) == 1
    assert not [f for f in figs if f.layout.title.subtitle.text.endswith((": i_xt", ": i_ty"))]
    fc2 = [t for t in planes[0].data if t.name == "fc2"][0]
    assert list(fc2.x) == pytest.approx([4.0, 3.9, 3.0])
    assert list(fc2.y) == pytest.approx([1.1, 1.15, 1.6])
    assert "I(X;T)" in planes[0].layout.xaxis.title.text
    assert "I(T;Y)" in planes[0].layout.yaxis.title.text
    grads = _figure(figs, "grad_norm")
    assert fc2.line.color == _colour_of(grads, "fc2")
    assert "step 0 to step 100" in planes[0].caption and "binning" in planes[0].caption


def test_information_plane_says_when_the_estimator_is_saturated() -> None:
    meta = {"layer": "fc1", "estimator": "binning", "n": 512}
    recs = [Record(k, v, s, "information_plane", dict(meta)) for s in (0, 10)
            for k, v in (("i_xt", 9.0), ("i_ty", 3.3))]
    [plane], _ = probe_figures(recs)
    assert "saturated" in plane.caption and "log2(512)" in plane.caption
    recs = [Record(k, v - 0.5 * s / 10, s, "information_plane", dict(meta)) for s in (0, 10)
            for k, v in (("i_xt", 9.0), ("i_ty", 3.3))]
    [plane], _ = probe_figures(recs)
    assert "saturated" not in plane.caption


def test_every_kind_of_probe_figure_is_valid_plotly() -> None:
    """The kit builds figures as plain data; plotly's own validation accepts every kind the
    probe report draws (lines on log and linear steps, bars, heat maps, the information
    plane, scalars)."""
    recs = _series("stable_rank", _steps(log_spaced(2), 1000), "weight_spectrum", layer="fc1")
    recs += _series("grad_norm", _steps(every(25), 500), "gradient_stats", parameter="fc1.weight")
    recs += _series("loss", list(range(1, 200)), "scalars")
    recs += [Record("steps_to_threshold", v, step=240, probe="layer_similarity",
                    meta={"layer": layer, "threshold": 0.9})
             for layer, v in (("fc1", 32.0), ("fc2", math.nan))]
    recs += [Record("layer_similarity", 0.5, step=10, probe="ls",
                    meta={"layer_a": "fc1", "layer_b": "fc2"})]
    recs += [Record("slice_loss", a + b, step=5, probe="loss_slice",
                    meta={"alpha": a, "beta": b, "dims": 2}) for a in (-1.0, 1.0)
             for b in (-1.0, 1.0)]
    for step in (0, 10):
        recs += [Record(k, v, step, "information_plane", {"layer": "fc1", "estimator": "kde"})
                 for k, v in (("i_xt", 3.0 - 0.1 * step), ("i_ty", 0.5))]
    figs, _ = probe_figures(recs)
    assert {t.type for f in figs for t in f.data} >= {"scatter", "bar", "heatmap"}
    for fig in figs:
        plot = fig.to_plotly()
        assert plot.layout.title.text == fig.layout.title.text
