"""Oracles of the recorded-graph walker: the exact graph torch 2.13 records for
e = (a + b)(b + 1) and for a dense tanh layer with a squared error, and the backward order."""

import pytest
import torch

from learnscope.measures.autograd_graph import (
    GraphEdge,
    recorded_graph,
    topological_violations,
    traced_backward,
)

F64 = torch.float64


def _e_graph():
    a = torch.tensor(2.0, dtype=F64, requires_grad=True)
    b = torch.tensor(1.0, dtype=F64, requires_grad=True)
    return (a + b) * (b + 1), {"a": a, "b": b}


def _edges(graph):
    label = {n.index: n.label for n in graph.nodes}
    return sorted((label[e.source], label[e.target]) for e in graph.edges)


def test_graph_of_e_has_the_exact_nodes_and_edges():
    e, names = _e_graph()
    graph = recorded_graph(e, names)
    assert sorted(n.op for n in graph.nodes) == ["AccumulateGrad", "AccumulateGrad",
                                                  "AddBackward0", "AddBackward0", "MulBackward0"]
    assert graph.nodes[0].op == "MulBackward0"  # numbered from the output
    assert sorted(n.variable for n in graph.nodes if n.variable) == ["a", "b"]
    # a and b feed a + b; b feeds b + 1 (the 1 is a constant, not a node); both sums feed e
    assert _edges(graph) == [("AddBackward0", "MulBackward0")] * 2 + [
        ("a", "AddBackward0"), ("b", "AddBackward0"), ("b", "AddBackward0")]
    assert len(graph.edges) == 5 and graph.constant_inputs == 1
    assert recorded_graph(e, names) == graph  # deterministic numbering


def test_traced_backward_gradients_and_order_on_e():
    e, names = _e_graph()
    graph = traced_backward(e, names)
    by_label = {n.label: n for n in graph.nodes}
    # de/da = b + 1 = 2, de/db = (a + b) + (b + 1) = 5; de/dc = d = 2, de/dd = c = 3
    assert by_label["a"].grad_norm == pytest.approx(2.0)
    assert by_label["b"].grad_norm == pytest.approx(5.0)
    assert names["a"].grad.item() == pytest.approx(2.0)
    sums = sorted(n.grad_norm for n in graph.nodes if n.op == "AddBackward0")
    assert sums == pytest.approx([2.0, 3.0])
    assert by_label["MulBackward0"].backward_step == 0
    assert sorted(n.backward_step for n in graph.nodes) == list(range(5))
    # b receives 2 from c = a + b and 1 x 3 from d = b + 1: one edge each, summed at b
    into_b = sorted(e.grad_norm for e in graph.edges
                    if graph.nodes[e.source].variable == "b")
    assert into_b == pytest.approx([2.0, 3.0])
    assert topological_violations(graph) == (0, 0)


def test_dense_tanh_layer_graph_structure():
    layer = torch.nn.Linear(3, 2).double()
    x = torch.randn(1, 3, dtype=F64)  # data: needs no gradient, so it is no node
    loss = ((torch.tanh(layer(x)) - 0.5) ** 2).sum()
    graph = traced_backward(loss, dict(layer.named_parameters()))
    ops = [n.op for n in graph.nodes]
    assert sorted(ops) == sorted(["SumBackward0", "PowBackward0", "SubBackward0",
                                  "TanhBackward0", "AddmmBackward0", "TBackward0",
                                  "AccumulateGrad", "AccumulateGrad"])
    label = {n.index: n.label for n in graph.nodes}
    edges = _edges(graph)
    assert ("TanhBackward0", "SubBackward0") in edges
    assert ("AddmmBackward0", "TanhBackward0") in edges
    assert ("bias", "AddmmBackward0") in edges
    assert ("TBackward0", "AddmmBackward0") in edges  # addmm reads W^T
    assert ("weight", "TBackward0") in edges
    assert len(edges) == 7 and len(graph.nodes) == 8
    assert graph.constant_inputs == 2  # x into addmm, the constant 0.5 of the subtraction
    weight = next(n for n in graph.nodes if n.variable == "weight")
    assert weight.grad_shape == (2, 3)
    assert weight.grad_norm == pytest.approx(float(layer.weight.grad.norm()))
    assert topological_violations(graph) == (0, 0)
    assert all(label[e.source] != label[e.target] for e in graph.edges)


def test_topological_violations_counts_a_wrong_order():
    e, names = _e_graph()
    graph = traced_backward(e, names)
    assert topological_violations(graph) == (0, 0)
    root = graph.nodes[0]
    leaf = next(n for n in graph.nodes if n.variable == "a")
    root.backward_step, leaf.backward_step = leaf.backward_step, root.backward_step
    wrong, unvisited = topological_violations(graph)
    assert wrong == 3 and unvisited == 0  # a before its consumer, e after both sums
    graph.nodes[1].backward_step = None
    assert topological_violations(graph)[1] == 1


def test_unnamed_leaves_and_errors():
    w = torch.ones(2, requires_grad=True)
    graph = recorded_graph((w * 3).sum())
    assert [n.label for n in graph.nodes] == ["SumBackward0", "MulBackward0", "leaf 0"]
    assert graph.edges[0] == GraphEdge(1, 0, 0)
    with pytest.raises(ValueError, match="no recorded graph"):
        recorded_graph(torch.ones(2))


def test_deep_chain_does_not_recurse():
    x = torch.ones(1, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0
    graph = recorded_graph(y.sum())
    assert len(graph.nodes) == 3002 and len(graph.edges) == 3001
