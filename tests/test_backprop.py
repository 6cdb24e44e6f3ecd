"""Oracle tests of the backprop study's measures: recorded graphs, random expressions, the
gradient check, layer gradient norms and the linear collapse."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from learnscope.measures.scalar_autograd import Value
from learnscope.studies.backprop import (
    TORCH_OPS,
    VALUE_OPS,
    BackpropConfig,
    _graph_records,
    dense_layer_graph,
    engine_vs_torch,
    evaluate_program,
    gradient_check,
    layer_gradient_norms,
    linear_collapse,
    random_program,
    run_graphs,
)
from learnscope.studies.base import Trial

TINY = dataclasses.replace(BackpropConfig(), fd_hidden=4, fd_checks=6, depth=6, width=32,
                           n_inputs=64, linear_layers=4, linear_width=8)


def test_graph_of_e_levels_and_backward_order():
    a, b = Value(2.0, label="a"), Value(1.0, label="b")
    c, d = a + b, b + 1
    e = c * d
    c.label, d.label, e.label = "c", "d", "e"
    recs = [r for r in _graph_records("e", e) if r.key == "node_grad"]
    by_node = {r.meta["node"]: r for r in recs}
    assert {n: by_node[n].meta["node_level"] for n in ("a", "b", "c", "d", "e")} == \
        {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2}
    assert by_node["e"].meta["backward_step"] == 0
    assert by_node["a"].value == 2.0 and by_node["b"].value == 5.0  # b+1, (a+b)+(b+1)
    assert by_node["c"].meta["local"] == "d/d(a) = 1, d/d(b) = 1"
    edges = {(r.meta["source"], r.meta["target"]): r.value
             for r in _graph_records("e", e) if r.key == "edge_local"}
    # de/dc = d = 2, de/dd = c = 3; the constant 1 of d = b + 1 is a node too
    assert edges == {("c", "e"): 2.0, ("d", "e"): 3.0, ("a", "c"): 1.0, ("b", "c"): 1.0,
                     ("b", "d"): 1.0, ("1", "d"): 1.0}


def test_graph_records_need_unique_labels():
    a = Value(1.0, label="x")
    with pytest.raises(ValueError, match="share a label"):
        _graph_records("g", a * Value(2.0, label="x"))


def test_dense_layer_graph_matches_the_closed_form_and_runs_in_order():
    graph, error = dense_layer_graph(4)
    assert error <= 1e-12
    assert sorted(n.label for n in graph.nodes if n.op == "AccumulateGrad") == ["bias", "weight"]
    assert len(graph.nodes) == 8 and len(graph.edges) == 7
    assert sorted(n.backward_step for n in graph.nodes) == list(range(8))
    again, _ = dense_layer_graph(4)
    assert [n.grad_norm for n in again.nodes] == [n.grad_norm for n in graph.nodes]


def test_run_graphs_chain_rule_error_is_rounding_and_deterministic():
    first = run_graphs(TINY, Trial({"seed": 3})).records
    again = run_graphs(TINY, Trial({"seed": 3})).records
    assert [(r.key, r.value) for r in first] == [(r.key, r.value) for r in again]
    (err,) = [r.value for r in first if r.key == "chain_rule_abs_error"]
    assert err <= 1e-12
    assert sum(r.value for r in first if r.key in ("order_violations", "nodes_not_run")) == 0
    assert len([r for r in first if r.key == "order_violations"]) == 2  # e and the dense layer
    assert len([r for r in first if r.key == "torch_node_grad"]) == 8


def test_random_program_runs_identically_on_both_backends():
    rng = np.random.default_rng(0)
    for _ in range(20):
        program = random_program(rng, 3, 15)
        xs = [0.3, -0.8, 1.1]
        v = evaluate_program(program, [Value(x) for x in xs], VALUE_OPS).data
        t = evaluate_program(program, list(torch.tensor(xs, dtype=torch.float64).unbind()),
                             TORCH_OPS)
        assert v == pytest.approx(float(t), rel=1e-12, abs=1e-12)
        assert engine_vs_torch(program, xs)[0] <= 1e-10


def test_engine_vs_torch_detects_a_wrong_derivative():
    program = [("tanh", 0, 0)]
    wrong = dict(VALUE_OPS, tanh=lambda x: Value(math.tanh(x.data), (x,), (1.0,), "tanh"))
    leaves = [Value(0.9)]
    evaluate_program(program, leaves, wrong).backward()
    right = 1 + (1 - math.tanh(0.9) ** 2)  # output sums the input and tanh(input)
    assert abs(leaves[0].grad - right) > 0.1
    assert engine_vs_torch(program, [0.9])[0] <= 1e-14


def test_gradient_check_is_v_shaped_in_the_step():
    errors = gradient_check(TINY, 0, torch.float64, (1e-1, 1e-5, 1e-12))
    assert errors[1e-5] < 1e-7
    assert errors[1e-1] > 100 * errors[1e-5]  # truncation error ~ h^2
    assert errors[1e-12] > 10 * errors[1e-5]  # rounding error ~ eps / h
    e32 = gradient_check(TINY, 0, torch.float32, (1e-2, 1e-3))
    assert min(e32.values()) > 1e3 * errors[1e-5]


def test_layer_gradient_norms_vanish_for_sigmoid_and_stay_for_relu():
    norms = layer_gradient_norms(TINY, 1, "sigmoid")
    assert len(norms) == TINY.depth + 1
    assert norms == layer_gradient_norms(TINY, 1, "sigmoid")
    hidden = norms[:-1]
    assert all(a < b for a, b in zip(hidden, hidden[1:], strict=False))  # vanishing
    relu = layer_gradient_norms(TINY, 1, "relu")[:-1]
    assert max(relu) / min(relu) < 10


def test_linear_collapse_is_exact_and_rank_is_the_bottleneck():
    error, rank, narrowest = linear_collapse(TINY, 0)
    assert error <= 1e-13
    assert narrowest == 2 and rank == narrowest
