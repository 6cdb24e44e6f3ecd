"""The computation graph torch.autograd records, as plain nodes and edges.

Every differentiable operation on a tensor that requires a gradient leaves a backward node
(``tensor.grad_fn``, e.g. ``MulBackward0``) whose ``next_functions`` point to the nodes that
produced its inputs; a leaf tensor (a parameter) ends in an ``AccumulateGrad`` node that adds
the incoming gradient to ``.grad``. :func:`recorded_graph` walks that structure from an
output into plain data (so a report can draw it), and :func:`traced_backward` also runs the
backward pass with a hook on every node, recording the order in which the engine ran the
nodes and the gradient that crossed each edge: what "backpropagation visits the graph in
reverse topological order" means, measured rather than asserted.

Edges point the way data flows in the forward pass: from the node that made an input to the
node that consumed it (the gradient flows against the arrow).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["AutogradGraph", "GraphEdge", "GraphNode", "recorded_graph", "topological_violations",
           "traced_backward"]


@dataclass
class GraphNode:
    """One backward node: ``op`` is its class name (``AddmmBackward0``, ``AccumulateGrad``);
    ``variable`` names the leaf tensor of an ``AccumulateGrad`` (from the name map, else
    ``"leaf k"``)."""

    index: int
    op: str
    variable: str | None = None
    backward_step: int | None = None
    """When the engine ran this node in :func:`traced_backward` (0 = first)."""
    grad_norm: float | None = None
    """Norm of the gradient with respect to the node's forward output (what the node
    received), from :func:`traced_backward`."""
    grad_shape: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        return self.variable if self.variable is not None else self.op


@dataclass
class GraphEdge:
    """Node ``source`` produced input ``slot`` of node ``target`` in the forward pass."""

    source: int
    target: int
    slot: int
    grad_norm: float | None = None
    """Norm of the gradient the backward pass sent from ``target`` to ``source``."""
    grad_shape: tuple[int, ...] | None = None


@dataclass
class AutogradGraph:
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    constant_inputs: int = 0
    """Inputs of recorded operations that need no gradient (a constant, a data tensor)."""

    def node(self, index: int) -> GraphNode:
        return self.nodes[index]


def recorded_graph(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None
                   ) -> AutogradGraph:
    """The recorded graph behind ``output`` (nodes numbered depth first from the output's
    ``grad_fn``, so the numbering is deterministic); ``names`` maps a name to each leaf tensor
    (e.g. ``dict(model.named_parameters())``) to label its ``AccumulateGrad`` node."""
    graph, _ = _walk(output, names)
    return graph


def traced_backward(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None,
                    grad_output: torch.Tensor | None = None) -> AutogradGraph:
    """Run ``output.backward(grad_output)`` with a hook on every node of its recorded graph:
    the graph with, per node, the step at which the engine ran it and the norm of the gradient
    it received, and per edge the gradient it carried. Leaf ``.grad`` fields are filled as by
    any backward call."""
    graph, functions = _walk(output, names)
    slots: dict[tuple[int, int], GraphEdge] = {(e.target, e.slot): e for e in graph.edges}
    step = iter(range(len(functions)))
    handles = []

    def hook_for(index: int) -> Any:
        def hook(grad_inputs: tuple[torch.Tensor | None, ...],
                 grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            node = graph.nodes[index]
            node.backward_step = next(step)
            received = [g for g in grad_outputs if g is not None]
            if received:
                node.grad_norm = float(torch.linalg.vector_norm(received[0].detach()))
                node.grad_shape = tuple(received[0].shape)
            for slot, g in enumerate(grad_inputs):
                edge = slots.get((index, slot))
                if edge is not None and g is not None:
                    edge.grad_norm = float(torch.linalg.vector_norm(g.detach()))
                    edge.grad_shape = tuple(g.shape)
        return hook

    try:
        for index, fn in enumerate(functions):
            handles.append(fn.register_hook(hook_for(index)))
        output.backward(grad_output)
    finally:
        for h in handles:
            h.remove()
    return graph


def topological_violations(graph: AutogradGraph) -> tuple[int, int]:
    """(edges whose producer ran before its consumer in the backward pass, nodes that never
    ran): both 0 when backward visited every node after all the nodes that consumed it."""
    steps = [n.backward_step for n in graph.nodes]
    unvisited = sum(s is None for s in steps)
    wrong = sum(1 for e in graph.edges
                if steps[e.source] is not None and steps[e.target] is not None
                and steps[e.source] < steps[e.target])  # type: ignore[operator]
    return wrong, unvisited


def _walk(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None
          ) -> tuple[AutogradGraph, list[Any]]:
    if output.grad_fn is None:
        raise ValueError("the tensor has no recorded graph (it does not require a gradient or "
                         "is a leaf)")
    by_tensor = {id(t): name for name, t in (names or {}).items()}
    graph = AutogradGraph()
    index: dict[Any, int] = {}
    functions: list[Any] = []
    leaves = 0

    def add(fn: Any) -> int:
        nonlocal leaves
        i = len(functions)
        index[fn] = i
        functions.append(fn)
        variable = None
        if hasattr(fn, "variable"):
            variable = by_tensor.get(id(fn.variable), f"leaf {leaves}")
            leaves += 1
        graph.nodes.append(GraphNode(i, type(fn).__name__, variable))
        return i

    # depth first, numbering nodes when first reached (an explicit stack: deep graphs do not
    # hit Python's recursion limit)
    stack = [(add(output.grad_fn), iter(enumerate(output.grad_fn.next_functions)))]
    while stack:
        i, children = stack[-1]
        for slot, (child, _) in children:
            if child is None:
                graph.constant_inputs += 1
                continue
            known = child in index
            j = index[child] if known else add(child)
            graph.edges.append(GraphEdge(j, i, slot))
            if not known:
                stack.append((j, iter(enumerate(child.next_functions))))
                break
        else:
            stack.pop()
    return graph, functions
