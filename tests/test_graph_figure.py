"""The graph figure kind: a declared Graph evaluated from records (nodes, edges, layered
layout, labels) and drawn into the report."""

from __future__ import annotations

import math

import pytest

from learnscope.analysis import FigureData, Graph, Results, evaluate
from learnscope.analysis.figures import layered_layout
from learnscope.report.figures import draw
from learnscope.report.html import StudySection, render
from learnscope.store.records import Record, TrialResult

# e = (a + b)(b + 1) with a = 2, b = 1: c = a + b, d = b + 1
NODES = {"e": (9.0, 1.0, 0), "c": (3.0, 3.0, 1), "d": (2.0, 3.0, 2), "a": (2.0, 3.0, 3),
         "b": (1.0, 5.0, 4), "one": (1.0, 3.0, 5)}
EDGES = [("c", "e", 3.0), ("d", "e", 3.0), ("a", "c", 1.0), ("b", "c", 1.0), ("b", "d", 1.0),
         ("one", "d", 1.0)]


def _records(scale: float = 1.0) -> list[Record]:
    recs = [Record("node_grad", grad * scale, meta={"node": n, "node_value": value,
                                                    "backward_step": step})
            for n, (value, grad, step) in NODES.items()]
    recs += [Record("edge_local", v, meta={"source": s, "target": t}) for s, t, v in EDGES]
    recs.append(Record("other", 1.0))
    return recs


def _results() -> Results:
    return Results([TrialResult(f"t{seed}", {"part": "graph", "seed": seed}, "finished",
                                _records(scale=1.0 + seed)) for seed in (0, 1)])


SPEC = Graph("e", "node_grad", "edge_local", label="{node}: {node_value:g} grad {value:g}",
             edge_label="{value:g}", color="backward_step", color_title="backward step",
             caption="how to read it")


def test_evaluate_gives_nodes_edges_levels_and_labels():
    fig = evaluate(SPEC, _results())
    assert fig.kind == "graph" and not fig.empty and fig.caption == "how to read it"
    assert len(fig.nodes) == 6 and len(fig.edges) == 6
    by_id = {n["id"]: n for n in fig.nodes}
    # longest path from the inputs; an input sits one level before its first consumer
    assert {i: n["level"] for i, n in by_id.items()} == {"a": 0, "b": 0, "one": 0, "c": 1,
                                                         "d": 1, "e": 2}
    assert all(n["x"] == n["level"] for n in fig.nodes)
    assert by_id["e"]["label"] == "e: 9 grad 1"  # the first trial (seed 0) only
    assert by_id["b"]["value"] == 5.0 and by_id["b"]["color"] == 4.0
    assert by_id["b"]["fields"]["seed"] == 0 and "other" not in str(by_id["b"]["fields"])
    assert sorted((e["source"], e["target"], e["label"]) for e in fig.edges) == sorted(
        (s, t, f"{v:g}") for s, t, v in EDGES)
    assert fig.colorbar == "backward step"
    # each level centred on row 0, rows one apart, no two nodes at one place
    places = [(n["x"], n["y"]) for n in fig.nodes]
    assert len(set(places)) == 6
    assert sorted(n["y"] for n in fig.nodes if n["level"] == 0) == [-1.0, 0.0, 1.0]
    assert evaluate(SPEC, _results()) == fig  # deterministic


def test_where_selects_a_trial_and_an_unknown_selection_is_empty():
    fig = evaluate(Graph("e", "node_grad", "edge_local", where={"seed": 1}), _results())
    assert {n["id"]: n["value"] for n in fig.nodes}["b"] == 10.0
    assert evaluate(Graph("e", "node_grad", "edge_local", where={"seed": 7}), _results()).empty
    assert evaluate(Graph("e", "missing", "edge_local"), _results()).empty
    assert evaluate(Graph("e", "node_grad", "edge_local"), Results([])).empty


def test_given_levels_and_positions_are_used():
    recs = [Record("n", 1.0, meta={"node": k, "lv": 5 - k, "px": k * 2.0, "py": -k})
            for k in range(3)] + [Record("edge", 0.5, meta={"source": 0, "target": 1})]
    res = Results([TrialResult("t", {"seed": 0}, "finished", recs)])
    fig = evaluate(Graph("g", "n", "edge", level="lv"), res)
    assert [n["level"] for n in fig.nodes] == [5, 4, 3]
    fig = evaluate(Graph("g", "n", "edge", position=("px", "py")), res)
    assert [(n["x"], n["y"]) for n in fig.nodes] == [(0.0, 0.0), (2.0, -1.0), (4.0, -2.0)]
    # a missing field reads as empty; a format that does not fit the value falls back to str
    fig = evaluate(Graph("g", "n", "edge", label="{node:.2f}|{nothing}|{node:>3}"), res)
    assert fig.nodes[0]["label"] == "0.00||  0"
    assert fig.nodes[0]["color"] is None and fig.edges[0]["label"] == "0.5"


def test_an_edge_to_a_node_without_a_record_still_shows_the_node():
    recs = [Record("n", 1.0, meta={"node": "x"}),
            Record("edge", 2.0, meta={"source": "x", "target": "y"})]
    fig = evaluate(Graph("g", "n", "edge"), Results([TrialResult("t", {}, "finished", recs)]))
    assert [n["id"] for n in fig.nodes] == ["x", "y"]
    assert math.isnan(fig.nodes[1]["value"]) and fig.nodes[1]["level"] == 1


def test_layered_layout_is_the_longest_path_and_rejects_cycles():
    # a -> b -> c and a -> c: c is two levels from a; the layout is a pure function
    places = layered_layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    assert {k: v[0] for k, v in places.items()} == {"a": 0.0, "b": 1.0, "c": 2.0}
    # an input feeding only the last node sits just before it
    places = layered_layout(["a", "b", "c", "z"], [("a", "b"), ("b", "c"), ("z", "c")])
    assert places["z"][0] == 1.0
    # crossings: the predecessors' order decides the order within a level
    places = layered_layout(["p", "q", "P", "Q"], [("p", "P"), ("q", "Q")])
    assert places["P"][1] < places["Q"][1] and places["p"][1] < places["q"][1]
    places = layered_layout(["p", "q", "Q", "P"], [("p", "P"), ("q", "Q")])
    assert places["P"][1] < places["Q"][1]
    with pytest.raises(ValueError, match="cycle"):
        layered_layout(["a", "b"], [("a", "b"), ("b", "a")])


def test_drawn_graph_has_arrows_labels_and_a_colour_bar():
    fig = evaluate(SPEC, _results())
    plot = draw(fig)
    arrows = [a for a in plot.layout.annotations if a.showarrow]
    texts = [a.text for a in plot.layout.annotations if not a.showarrow]
    assert len(arrows) == 6  # one per edge, from the source to the target
    assert {(a.ax, a.ay, a.x, a.y) for a in arrows} == {
        (n["x"], -n["y"], m["x"], -m["y"]) for e in fig.edges
        for n in fig.nodes if n["id"] == e["source"]
        for m in fig.nodes if m["id"] == e["target"]}
    assert "e: 9 grad 1" in texts and texts.count("3") == 2  # node and edge labels
    (trace,) = plot.data
    assert trace.marker.showscale and trace.marker.colorbar.title.text == "backward step"
    assert "node_value: 9" in trace.hovertext[0]
    plot.to_plotly()  # valid for plotly's own validation


def test_report_html_contains_the_graph():
    fig = evaluate(SPEC, _results())
    section = StudySection("s", "S", "src", "r", "reproduced", {"a": 1}, [], figures=[
        fig, FigureData("line", "a line")])
    html = render([section], title="t")
    assert "e: 9 grad 1" in html and "backward step" in html and "how to read it" in html


def test_a_wide_graph_puts_every_other_level_label_above():
    recs = [Record("n", 1.0, meta={"node": k}) for k in range(7)]
    recs += [Record("edge", 1.0, meta={"source": k, "target": k + 1}) for k in range(6)]
    fig = evaluate(Graph("chain", "n", "edge"), Results([TrialResult("t", {}, "finished", recs)]))
    labels = [a for a in draw(fig).layout.annotations if a.yshift]  # node labels, not edges
    assert [a.yanchor for a in sorted(labels, key=lambda a: a.x)] == [
        "top", "bottom", "top", "bottom", "top", "bottom", "top"]
    narrow = evaluate(Graph("chain", "n", "edge"),
                      Results([TrialResult("t", {}, "finished", recs[:3] + recs[7:9])]))
    assert {a.yanchor for a in draw(narrow).layout.annotations if a.yshift} == {"top"}
