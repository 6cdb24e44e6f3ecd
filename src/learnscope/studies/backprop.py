"""Backpropagation by hand: the computation graph, the chain rule, and what depth does to it.

Reverse-mode automatic differentiation records every operation of a forward pass as a node of a
graph, each with the local derivative of its output with respect to each input. One backward
sweep, in reverse topological order, multiplies these local derivatives along every path and
sums over paths (the chain rule), so all gradients cost about one more forward pass (Linnainmaa
1970; Rumelhart, Hinton and Williams 1986; Baydin et al. 2018, "Automatic differentiation in
machine learning: a survey"). This study makes every step checkable by hand, with a scalar
engine of a few dozen lines (``learnscope.measures.scalar_autograd``, in the spirit of
Karpathy's micrograd) next to torch.autograd, and shows the two consequences of the chain rule
in deep networks.

Setup (all in float64, no training):

- Graphs: e = (a + b)(b + 1) (the classic example of Olah 2015, "Calculus on computational
  graphs: backpropagation") and one dense tanh neuron y = tanh(w1 x1 + w2 x2 + b), with inputs
  drawn per seed, recorded by the scalar engine and drawn as graphs: each node with its value
  and gradient, each edge with its local derivative, the colour the step at which backward
  reached the node; the table lists the same nodes in backward order. Next to them,
  torch.autograd's own recorded graph (``learnscope.measures.autograd_graph``) of one dense
  layer nn.Linear(3, 2) with tanh and a squared error, L = sum((tanh(W x + b) - t)^2): its
  backward functions (AddmmBackward0, TBackward0, TanhBackward0, ..., AccumulateGrad for the
  weight and the bias), run with a hook on every node that records the order in which torch's
  engine ran them and the gradient sent along each edge.
- Engine vs torch: random expressions (random DAGs of +, -, *, safe division, squares, exp,
  tanh, ReLU and sigmoid over a few inputs), evaluated and differentiated by the scalar engine
  and by torch.autograd.
- Gradient check: an MLP (tanh) with cross-entropy on random inputs; autograd against central
  finite differences (f(w + h) - f(w - h)) / 2h on randomly chosen parameters, for a sweep of
  step sizes h in float64 and float32. Truncation error falls like h squared, rounding error
  grows like machine epsilon / h: the error is V-shaped in h with its floor near the cube root
  of epsilon.
- Depth: an MLP of ``depth`` hidden layers of equal width on MNIST-1D inputs, He (Kaiming)
  initialisation for both activations (He et al. 2015), one backward pass of the cross-entropy
  loss; the norm of each layer's weight gradient. A sigmoid's derivative is at most 1/4, so
  each layer multiplies the backward signal by about sqrt(2) x 0.2: the gradients vanish
  geometrically towards the input (Hochreiter 1991; Glorot and Bengio 2010). ReLU with He
  initialisation keeps the backward signal's scale from layer to layer.
- Linear collapse: a stack of linear layers (with biases, one narrow layer inside) computed
  layer by layer against one linear map, the product of the weight matrices with the combined
  bias: without non-linearities depth adds no expressive power, and the map's rank is at most
  the narrowest width.

Claims (each over all seeds):

- chain-rule-by-hand: the engine's gradients of e = (a + b)(b + 1) equal the closed forms
  de/da = b + 1 and de/db = (a + b) + (b + 1) to rounding (max error <= 1e-12).
- dense-layer-by-hand: torch's gradients of the dense layer's loss equal the closed forms
  dL/db = 2 (y - t)(1 - y^2) and dL/dW = dL/db x^T (max error <= 1e-12).
- backward-in-topological-order: in torch's recorded graphs of e and of the dense layer, the
  engine ran every node exactly once, each after every node that consumed its output (reverse
  topological order, as observed by the hooks, not assumed): no edge against the order, no node
  left out.
- engine-matches-torch: the scalar engine's gradients equal torch.autograd's on every random
  expression to a relative error of 1e-10 or less (the worst over seeds).
- autograd-matches-finite-differences: in float64 at the configured step h, autograd and central
  differences agree to a relative error <= 1e-6 (typically 1e-9 to 1e-10), and the best float64
  error over the sweep of h is at least 1000 times smaller than the best float32 error.
- sigmoid-gradients-vanish: for sigmoid, the per-layer factor of the weight-gradient norm
  (geometric mean over layers, from the last hidden layer towards the input) is below 0.6, and
  ReLU's per-layer factor is at least twice sigmoid's (a statement per layer, so it does not
  depend on the depth).
- relu-gradients-stay: for ReLU with He init, the largest over the smallest layer gradient
  norm (median over seeds) is within a factor of 10.
- linear-stack-is-one-map: layer by layer and the product map agree to a relative error
  <= 1e-12, and the product's rank equals the narrowest width.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, Graph, LinePlot, Lines, Results, Scatter, Table
from learnscope.analysis.claims import above, all_of, at_least, at_most, below, claim
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.measures.autograd_graph import (
    AutogradGraph,
    topological_violations,
    traced_backward,
)
from learnscope.measures.scalar_autograd import Value
from learnscope.seeding import numpy_rng, torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part

ACTIVATIONS = ("sigmoid", "relu")
ENGINE_NODE_LABEL = "<b>{node}</b><br>value {node_value:.3g}<br>grad {value:.3g}"
UNARY = ("exp", "tanh", "relu", "sigmoid", "square")
BINARY = ("add", "sub", "mul", "div")
F64 = torch.float64


@dataclasses.dataclass(frozen=True)
class BackpropConfig(StudyConfig):
    seeds: int = param(5, "seeds (independent draws of inputs, expressions and networks)", ge=1)
    expressions: int = param(40, "random expressions checked against torch.autograd per seed",
                             ge=1)
    expression_ops: int = param(24, "operations per random expression", ge=1, le=500)
    fd_hidden: int = param(16, "hidden width of the gradient-check MLP", ge=1)
    fd_checks: int = param(40, "parameters checked by central differences per seed", ge=1)
    fd_step: float = param(1e-6, "finite-difference step h of the float64 claim", gt=0, lt=1)
    depth: int = param(10, "hidden layers of the depth experiment", ge=2, le=100)
    width: int = param(128, "width of every hidden layer of the depth experiment", ge=2)
    n_inputs: int = param(512, "MNIST-1D inputs of the one backward pass", ge=2, le=4000)
    linear_layers: int = param(6, "layers of the linear stack", ge=2, le=50)
    linear_width: int = param(32, "width of the linear stack (one layer is a quarter of it)",
                              ge=4)


@register
class Backprop(Study[BackpropConfig]):
    name = "backprop"
    title = "Backpropagation by hand"
    summary = ("The chain rule on a recorded graph: a scalar engine equals torch.autograd and "
               "finite differences; sigmoid gradients vanish with depth, ReLU's do not; a "
               "stack of linear layers is one linear map.")
    source = ("Rumelhart, Hinton and Williams 1986; Baydin et al. 2018; Glorot and Bengio "
              "2010; He et al. 2015")
    Config = BackpropConfig
    quick = {"seeds": 3, "expressions": 20, "fd_checks": 24, "n_inputs": 256, "width": 64}
    tiny = {"seeds": 2, "expressions": 3, "expression_ops": 6, "fd_checks": 4, "depth": 3,
            "width": 8, "n_inputs": 32, "linear_layers": 3, "linear_width": 8}

    def parts(self, cfg: BackpropConfig) -> list[Part]:
        seeds = cfg.seed_list()
        return [part("graph", run_graphs, seed=seeds),
                part("engine", run_engine, seed=seeds),
                part("finite-differences", run_finite_differences, seed=seeds),
                part("depth", run_depth, activation=list(ACTIVATIONS), seed=seeds),
                part("linear", run_linear, seed=seeds)]

    def neighbours(self, cfg: BackpropConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "deeper, wider": {"depth": cfg.depth * 3 // 2, "width": cfg.width * 3 // 2,
                              "seed": cfg.seed + 7},
            "shallower, narrower": {"depth": max(cfg.depth // 2, 2), "width": cfg.width // 2,
                                    "expression_ops": cfg.expression_ops // 2,
                                    "seed": cfg.seed + 13},
            "longer expressions": {"expression_ops": cfg.expression_ops * 3 // 2,
                                   "fd_step": float(f"{cfg.fd_step * 10:.3g}"), "seed": cfg.seed + 29},
        }

    def claims(self, cfg: BackpropConfig, results: Results) -> list[Claim]:
        graph = results.where(part="graph")
        engine = results.where(part="engine")
        fd = results.where(part="finite-differences")
        linear = results.where(part="linear")
        chain_error = float(np.max(graph.values("chain_rule_abs_error")))
        engine_error = float(np.max(engine.values("engine_max_rel_error")))
        fd64 = fd.values("fd_rel_error_at_step")
        best64 = fd.values("fd_best_rel_error_float64")
        best32 = fd.values("fd_best_rel_error_float32")
        sig = results.where(part="depth", activation="sigmoid")
        relu = results.where(part="depth", activation="relu")
        sig_factor = sig.median("per_layer_factor")
        relu_factor = relu.median("per_layer_factor")
        relu_spread = relu.median("max_over_min")
        lin_error = float(np.max(linear.values("collapse_rel_error")))
        rank_gap = float(np.max(np.abs(linear.values("product_rank")
                                       - linear.values("narrowest_width"))))
        dense_error = float(np.max(graph.values("dense_closed_form_abs_error")))
        order = graph.records
        violations = order[order["key"] == "order_violations"]["value"]
        not_run = order[order["key"] == "nodes_not_run"]["value"]
        return [
            claim("chain-rule-by-hand", "the scalar engine's gradients of e = (a + b)(b + 1) "
                  "equal the closed forms de/da = b + 1, de/db = (a + b) + (b + 1) (worst over "
                  "seeds)", "max_abs_error", chain_error, at_most(1e-12)),
            claim("dense-layer-by-hand", "torch.autograd's gradients of L = sum((tanh(W x + "
                  "b) - t)^2) for one dense layer equal the closed forms dL/db = 2 (y - t)(1 - "
                  "y^2), dL/dW = dL/db x^T (worst over seeds)", "max_abs_error", dense_error,
                  at_most(1e-12)),
            all_of("backward-in-topological-order", "torch's engine, observed by a hook on "
                   "every node of its recorded graphs (e = (a + b)(b + 1) and the dense layer), "
                   "runs every node once and only after all the nodes that consumed its output "
                   "(all seeds)",
                   {"edges_run_against_the_order": (float(violations.sum()), at_most(0)),
                    "nodes_not_run": (float(not_run.sum()), at_most(0)),
                    "graphs_checked": (float(len(violations)), at_least(2 * cfg.seeds))}),
            claim("engine-matches-torch", f"a scalar engine of a few dozen lines computes the "
                  f"same gradients as torch.autograd on {cfg.expressions} random expressions of "
                  f"{cfg.expression_ops} operations per seed (float64, worst over seeds)",
                  "max_relative_error", engine_error, at_most(1e-10)),
            all_of("autograd-matches-finite-differences", f"autograd agrees with central "
                   f"differences at h = {cfg.fd_step:g} in float64 (worst over seeds), and "
                   "float64's best error over the sweep of h is at least 1000x smaller than "
                   "float32's (median over seeds)",
                   {"max_rel_error_float64": (float(np.max(fd64)), at_most(1e-6)),
                    "best_float32_over_best_float64": (
                        float(np.median(best32 / best64)), at_least(1e3))},
                   extra={"median_rel_error_float64": float(np.median(fd64)),
                          "median_best_float32": float(np.median(best32))}),
            all_of("sigmoid-gradients-vanish", "with sigmoid, each layer shrinks the weight "
                   "gradient by a factor (geometric mean, median over seeds) below 0.6 towards "
                   "the input, at least twice the per-layer shrinkage of ReLU's",
                   {"sigmoid_per_layer_factor": (sig_factor, below(0.6)),
                    "relu_factor_over_sigmoid_factor": (relu_factor / sig_factor,
                                                        at_least(2))},
                   extra={"sigmoid_first_over_last": sig.median("first_over_last"),
                          "relu_first_over_last": relu.median("first_over_last"),
                          "relu_per_layer_factor": relu_factor}),
            claim("relu-gradients-stay", "with ReLU and He initialisation the layer gradient "
                  "norms stay within a factor of 10 of each other (largest over smallest, "
                  "median over seeds)", "max_over_min", relu_spread, at_most(10) & above(0),
                  extra={"worst_seed": float(np.max(relu.values("max_over_min")))}),
            all_of("linear-stack-is-one-map", f"{cfg.linear_layers} linear layers computed one "
                   "by one equal one linear map (product of the weights, combined bias) to "
                   "rounding, and its rank is the narrowest width (worst over seeds)",
                   {"max_relative_error": (lin_error, at_most(1e-12)),
                    "max_rank_minus_narrowest": (rank_gap, at_most(0))}),
        ]

    def figures(self, cfg: BackpropConfig) -> list[Graph | LinePlot | Scatter]:
        return [
            Graph("The scalar engine's graph of e = (a + b)(b + 1) (first seed)",
                  "node_grad", "edge_local", where={"seed": cfg.seed, "graph": "e = (a+b)(b+1)"},
                  label=ENGINE_NODE_LABEL, color="backward_step",
                  color_title="backward step", x_title="forward pass: inputs to output",
                  caption="Each arrow carries its local derivative d(head)/d(tail); a node's "
                          "gradient is the sum over its outgoing arrows of local derivative "
                          "times the head's gradient, filled in backward order (colour): e "
                          "first, the inputs last."),
            Graph("The scalar engine's graph of one tanh neuron (first seed)",
                  "node_grad", "edge_local", where={"seed": cfg.seed, "graph": "tanh neuron"},
                  label=ENGINE_NODE_LABEL, color="backward_step",
                  color_title="backward step", x_title="forward pass: inputs to output",
                  caption="y = tanh(w1 x1 + w2 x2 + b): the tanh arrow carries 1 - y^2, each "
                          "product passes the other factor to a weight, so dy/dw1 = "
                          "(1 - y^2) x1; colour is the backward order."),
            Graph("torch.autograd's recorded graph of a dense layer (first seed)",
                  "torch_node_grad", "torch_edge_grad",
                  where={"seed": cfg.seed, "graph": TORCH_DENSE}, node="node_index",
                  label="{node}<br>|grad| {value:.3g} ({grad_shape})",
                  edge_label="{value:.3g}", color="backward_step",
                  color_title="backward step (as run)", x_title="forward pass: parameters to "
                  "loss L = sum((tanh(W x + b) - t)^2)",
                  caption="Nodes are torch's backward functions (weight and bias end in "
                          "AccumulateGrad; the input x needs no gradient, so it is no node); "
                          "arrow labels are the norms of the gradients torch sent back along "
                          "them, colour the order in which its engine ran the nodes (hooks)."),
            LinePlot("Weight-gradient norm per layer at initialisation (He init)", "layer",
                     (Lines({"part": "depth"}, group="activation", label="{activation}"),),
                     key="grad_norm", x_title="layer (1 = next to the input)",
                     y_title="gradient norm (median over seeds)", log_y=True,
                     caption="Sigmoid's line falls by a constant factor per layer towards the "
                             "input (vanishing gradients); ReLU's stays level."),
            LinePlot("Gradient check: autograd vs central differences over the step h",
                     "h", (Lines({"part": "finite-differences"}, group="dtype",
                                 label="{dtype}"),),
                     key="fd_rel_error", x_title="finite-difference step h",
                     y_title="relative error of the gradient (median over seeds)",
                     log_x=True, log_y=True,
                     caption="Right of the minimum truncation error (h squared) dominates, left "
                             "of it rounding error (epsilon / h): the floor is far lower in "
                             "float64."),
            Scatter("Scalar engine vs torch.autograd on random expressions",
                    "expression_rel_error", "expression_nodes", where={"part": "engine"},
                    x_title="nodes in the expression's graph",
                    y_title="relative gradient error (zero drawn as 1e-18)", log_y=True,
                    caption="Every point is one expression; all lie at rounding level."),
        ]

    def tables(self, cfg: BackpropConfig, results: Results) -> list[Table]:
        rows = []
        data = results.where(part="graph", seed=cfg.seed).records
        data = data[data["key"] == "node_grad"].sort_values(["graph", "backward_step"])
        for _, r in data.iterrows():
            rows.append([r["graph"], r["node"], r["op"], f"{r['node_value']:.4g}",
                         r["local"], f"{r['value']:.4g}", int(r["backward_step"])])
        return [Table("Nodes of the recorded graphs (first seed), in backward order",
                      ["graph", "node", "operation", "value", "local derivatives "
                       "d node / d parent", "gradient d output / d node", "backward step"],
                      rows)]


# -- graphs -----------------------------------------------------------------------------------

def run_graphs(cfg: BackpropConfig, trial: Trial) -> TrialOutput:
    """Record e = (a + b)(b + 1) and one tanh neuron with the scalar engine, node by node."""
    rng = numpy_rng(trial.seed, "backprop-graph")
    a0, b0 = (float(v) for v in rng.uniform(-2, 2, size=2))
    a, b = Value(a0, label="a"), Value(b0, label="b")
    c = a + b
    c.label = "c = a + b"
    d = b + 1
    d.label = "d = b + 1"
    d.parents[1].label = "1"
    e = c * d
    e.label = "e = c * d"
    records = _graph_records("e = (a+b)(b+1)", e)
    e.backward()
    error = max(abs(a.grad - (b0 + 1)), abs(b.grad - ((a0 + b0) + (b0 + 1))))
    records.append(Record("chain_rule_abs_error", error))

    x1, x2, w1, w2, bias = (float(v) for v in rng.normal(size=5))
    vx1, vx2 = Value(x1, label="x1"), Value(x2, label="x2")
    vw1, vw2, vb = Value(w1, label="w1"), Value(w2, label="w2"), Value(bias, label="b")
    p1, p2 = vw1 * vx1, vw2 * vx2
    p1.label, p2.label = "w1 x1", "w2 x2"
    s = p1 + p2
    s.label = "w1 x1 + w2 x2"
    z = s + vb
    z.label = "z = ... + b"
    y = z.tanh()
    y.label = "y = tanh(z)"
    records += _graph_records("tanh neuron", y)

    records += _torch_e_records(a0, b0)
    records += _torch_dense_records(trial.seed)
    return TrialOutput(records)


TORCH_DENSE = "torch: dense tanh layer"


def dense_layer_graph(seed: int) -> tuple[AutogradGraph, float]:
    """torch.autograd's traced graph of one dense layer with a squared error,
    L = sum((tanh(W x + b) - t)^2) for nn.Linear(3, 2), and the largest difference between its
    weight and bias gradients and the closed forms dL/db = 2 (y - t) (1 - y^2),
    dL/dW = dL/db x^T."""
    gen = torch_generator(seed, "backprop-dense")
    layer = torch.nn.Linear(3, 2).to(F64)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 3, generator=gen, dtype=F64))
        layer.bias.copy_(torch.randn(2, generator=gen, dtype=F64))
    x = torch.randn(1, 3, generator=gen, dtype=F64)
    target = torch.rand(1, 2, generator=gen, dtype=F64) * 2 - 1
    y = torch.tanh(layer(x))
    loss = ((y - target) ** 2).sum()
    graph = traced_backward(loss, dict(layer.named_parameters()))
    with torch.no_grad():
        delta = (2 * (y - target) * (1 - y ** 2))[0]
        error = max(float((layer.bias.grad - delta).abs().max()),
                    float((layer.weight.grad - torch.outer(delta, x[0])).abs().max()))
    return graph, error


def _torch_e_records(a0: float, b0: float) -> list[Record]:
    """The backward order of torch's graph of e = (a + b)(b + 1) (edges run against it, nodes
    it never ran)."""
    a = torch.tensor(a0, dtype=F64, requires_grad=True)
    b = torch.tensor(b0, dtype=F64, requires_grad=True)
    wrong, unvisited = topological_violations(traced_backward((a + b) * (b + 1),
                                                              {"a": a, "b": b}))
    meta = {"torch_graph": "e = (a+b)(b+1)"}
    return [Record("order_violations", float(wrong), meta=meta),
            Record("nodes_not_run", float(unvisited), meta=meta)]


def _torch_dense_records(seed: int) -> list[Record]:
    """Nodes (gradient norm received, backward step) and edges (gradient norm sent back) of
    torch's graph of one dense layer, its backward order and its closed-form check."""
    graph, error = dense_layer_graph(seed)
    wrong, unvisited = topological_violations(graph)
    meta = {"torch_graph": TORCH_DENSE}
    records = [Record("dense_closed_form_abs_error", error),
               Record("order_violations", float(wrong), meta=meta),
               Record("nodes_not_run", float(unvisited), meta=meta)]
    for n in graph.nodes:
        records.append(Record("torch_node_grad", n.grad_norm if n.grad_norm is not None
                              else math.nan,
                              meta={"graph": TORCH_DENSE, "node_index": n.index,
                                    "node": n.label, "op": n.op,
                                    "backward_step": n.backward_step if n.backward_step
                                    is not None else -1,
                                    "grad_shape": _shape(n.grad_shape)}))
    for e in graph.edges:
        records.append(Record("torch_edge_grad", e.grad_norm if e.grad_norm is not None
                              else math.nan,
                              meta={"graph": TORCH_DENSE, "source": e.source,
                                    "target": e.target, "grad_shape": _shape(e.grad_shape)}))
    return records


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "none"
    return "scalar" if not shape else " x ".join(str(d) for d in shape)


def _graph_records(graph: str, root: Value) -> list[Record]:
    """Per node: its gradient (with value, operation, local derivatives, level and backward
    step as metadata); per edge (parent to child): the local derivative d child / d parent."""
    order = root.backward()
    levels: dict[int, int] = {}
    for node in reversed(order):  # parents before children
        levels[id(node)] = 1 + max((levels[id(p)] for p in node.parents), default=-1)
    names = {id(node): node.label or f"{node.data:g}" for node in order}
    if len(set(names.values())) != len(order):
        raise ValueError(f"graph {graph!r}: two nodes share a label")
    records = []
    for step, node in enumerate(order):
        local = ", ".join(f"d/d({names[id(p)]}) = {dv:.4g}"
                          for p, dv in zip(node.parents, node.local, strict=True)) or "input"
        meta = {"graph": graph, "node": names[id(node)], "op": node.op or "leaf",
                "node_level": levels[id(node)], "backward_step": step, "local": local,
                "node_value": node.data}
        records.append(Record("node_grad", node.grad, meta=meta))
        records += [Record("edge_local", dv, meta={"graph": graph, "source": names[id(p)],
                                                   "target": names[id(node)]})
                    for p, dv in zip(node.parents, node.local, strict=True)]
    return records


# -- scalar engine vs torch -------------------------------------------------------------------

Program = list[tuple[str, int, int]]


def random_program(rng: np.random.Generator, n_inputs: int, n_ops: int) -> Program:
    """A random expression DAG: each op reads one or two earlier nodes (inputs included)."""
    program: Program = []
    for k in range(n_ops):
        n_nodes = n_inputs + k
        op = str(rng.choice(UNARY + BINARY))
        # favour recent nodes so the expression is deep, not only wide
        i = int(n_nodes - 1 - min(rng.geometric(0.4) - 1, n_nodes - 1))
        j = int(rng.integers(n_nodes))
        program.append((op, i, j))
    return program


def evaluate_program(program: Program, inputs: list[Any],
                     ops: dict[str, Callable[..., Any]]) -> Any:
    """Run a program on any backend (Values or tensors); the output sums every node so that
    each node matters."""
    nodes = list(inputs)
    for op, i, j in program:
        nodes.append(ops[op](nodes[i], nodes[j]) if op in BINARY else ops[op](nodes[i]))
    total = nodes[0]
    for n in nodes[1:]:
        total = total + n
    return total


VALUE_OPS: dict[str, Callable[..., Any]] = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "div": lambda x, y: x / (y * y + 1), "exp": lambda x: x.tanh().exp(),
    "tanh": lambda x: x.tanh(), "relu": lambda x: x.relu(), "sigmoid": lambda x: x.sigmoid(),
    "square": lambda x: x ** 2,
}
TORCH_OPS: dict[str, Callable[..., Any]] = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "div": lambda x, y: x / (y * y + 1), "exp": lambda x: torch.exp(torch.tanh(x)),
    "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
    "square": lambda x: x ** 2,
}


def engine_vs_torch(program: Program, xs: list[float]) -> tuple[float, int]:
    """Relative error (2-norm) of the engine's input gradients against torch.autograd's, and
    the number of nodes of the engine's graph."""
    leaves = [Value(x) for x in xs]
    out = evaluate_program(program, leaves, VALUE_OPS)
    order = out.backward()
    t = torch.tensor(xs, dtype=F64, requires_grad=True)
    t_out = evaluate_program(program, list(t.unbind()), TORCH_OPS)
    (grad,) = torch.autograd.grad(t_out, t)
    mine = torch.tensor([v.grad for v in leaves], dtype=F64)
    scale = max(float(grad.norm()), 1e-300)
    return float((mine - grad).norm()) / scale, len(order)


def run_engine(cfg: BackpropConfig, trial: Trial) -> TrialOutput:
    rng = numpy_rng(trial.seed, "backprop-engine")
    records, worst = [], 0.0
    for k in range(cfg.expressions):
        program = random_program(rng, 3, cfg.expression_ops)
        xs = [float(v) for v in rng.uniform(-1.5, 1.5, size=3)]
        error, n_nodes = engine_vs_torch(program, xs)
        worst = max(worst, error)
        records.append(Record("expression_rel_error", max(error, 1e-18),
                              meta={"expression": k, "expression_nodes": n_nodes}))
    records.append(Record("engine_max_rel_error", worst))
    return TrialOutput(records)


# -- finite differences -----------------------------------------------------------------------

FD_STEPS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)


def gradient_check(cfg: BackpropConfig, seed: int, dtype: torch.dtype,
                   steps: tuple[float, ...]) -> dict[float, float]:
    """Relative error ||g_fd - g_autograd|| / ||g_autograd|| on randomly chosen parameters of a
    tanh MLP's cross-entropy loss, for each step h."""
    gen = torch_generator(seed, "backprop-fd")
    sizes = (10, cfg.fd_hidden, cfg.fd_hidden, 3)
    weights = [torch.randn(o, i, generator=gen, dtype=F64) / math.sqrt(i)
               for i, o in zip(sizes, sizes[1:], strict=False)]
    x = torch.randn(32, sizes[0], generator=gen, dtype=F64)
    y = torch.randint(0, sizes[-1], (32,), generator=gen)
    flat0 = torch.cat([w.flatten() for w in weights]).to(dtype)
    x = x.to(dtype)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        h, at = x, 0
        for k, (i, o) in enumerate(zip(sizes, sizes[1:], strict=False)):
            w = flat[at:at + i * o].view(o, i)
            at += i * o
            h = h @ w.T
            if k < len(sizes) - 2:
                h = torch.tanh(h)
        return torch.nn.functional.cross_entropy(h, y)

    flat = flat0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(flat), flat)
    index = torch.randperm(flat0.numel(), generator=gen)[:cfg.fd_checks]
    g_ad = grad[index]
    out = {}
    with torch.no_grad():
        for h in steps:
            g_fd = torch.empty_like(g_ad)
            for n, i in enumerate(index.tolist()):
                plus, minus = flat0.clone(), flat0.clone()
                plus[i] += h
                minus[i] -= h
                # divide by the step actually taken (w + h is rounded in this dtype)
                g_fd[n] = (loss(plus) - loss(minus)) / (plus[i] - minus[i])
            error = float((g_fd - g_ad).double().norm() / g_ad.double().norm())
            if math.isfinite(error):  # a step below this dtype's resolution gives no number
                out[h] = error
    return out


def run_finite_differences(cfg: BackpropConfig, trial: Trial) -> TrialOutput:
    records = []
    best = {}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        errors = gradient_check(cfg, trial.seed, dtype, FD_STEPS)
        best[name] = min(errors.values())
        records += [Record("fd_rel_error", e, meta={"h": h, "dtype": name})
                    for h, e in errors.items()]
        records.append(Record(f"fd_best_rel_error_{name}", best[name]))
    at_step = gradient_check(cfg, trial.seed, torch.float64, (cfg.fd_step,))[cfg.fd_step]
    records.append(Record("fd_rel_error_at_step", at_step, meta={"h": cfg.fd_step}))
    return TrialOutput(records)


# -- depth --------------------------------------------------------------------------------------

def layer_gradient_norms(cfg: BackpropConfig, seed: int, activation: str) -> list[float]:
    """Weight-gradient norm of every layer (input side first) of an MLP with He init after one
    backward pass of the cross-entropy loss on MNIST-1D inputs."""
    data = mnist1d(max(cfg.n_inputs, 100))
    x = torch.as_tensor(data.x_train[:cfg.n_inputs], dtype=F64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    y = torch.as_tensor(data.y_train[:cfg.n_inputs]).long()
    gen = torch_generator(seed, "backprop-depth")
    sizes = [x.shape[1]] + [cfg.width] * cfg.depth + [data.n_classes]
    act = torch.sigmoid if activation == "sigmoid" else torch.relu
    weights = [(torch.randn(o, i, generator=gen, dtype=F64) * math.sqrt(2.0 / i))
               .requires_grad_(True) for i, o in zip(sizes, sizes[1:], strict=False)]
    h = x
    for k, w in enumerate(weights):
        h = h @ w.T
        if k < len(weights) - 1:
            h = act(h)
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(h, y), weights)
    return [float(g.norm()) for g in grads]


def run_depth(cfg: BackpropConfig, trial: Trial) -> TrialOutput:
    norms = layer_gradient_norms(cfg, trial.seed, trial.activation)
    hidden = norms[:-1]  # the hidden layers' weights (the output layer sees no activation')
    records = [Record("grad_norm", g, meta={"layer": k + 1}) for k, g in enumerate(norms)]
    first_over_last = hidden[0] / hidden[-1]
    records += [
        Record("first_over_last", first_over_last),
        Record("per_layer_factor", first_over_last ** (1 / (len(hidden) - 1))),
        Record("max_over_min", max(hidden) / min(hidden)),
    ]
    return TrialOutput(records)


# -- linear collapse ----------------------------------------------------------------------------

def linear_collapse(cfg: BackpropConfig, seed: int) -> tuple[float, int, int]:
    """Relative error of one product map against the layer-by-layer stack, the product's rank
    and the narrowest width."""
    gen = torch_generator(seed, "backprop-linear")
    widths = [cfg.linear_width] * (cfg.linear_layers + 1)
    widths[cfg.linear_layers // 2] = max(cfg.linear_width // 4, 1)
    layers = [(torch.randn(o, i, generator=gen, dtype=F64) / math.sqrt(i),
               torch.randn(o, generator=gen, dtype=F64))
              for i, o in zip(widths, widths[1:], strict=False)]
    x = torch.randn(64, widths[0], generator=gen, dtype=F64)
    h = x
    for w, b in layers:
        h = h @ w.T + b
    product = torch.eye(widths[0], dtype=F64)
    bias = torch.zeros(widths[0], dtype=F64)
    for w, b in layers:
        product, bias = w @ product, w @ bias + b
    one_map = x @ product.T + bias
    error = float((one_map - h).abs().max() / h.abs().max())
    return error, int(torch.linalg.matrix_rank(product)), min(widths)


def run_linear(cfg: BackpropConfig, trial: Trial) -> TrialOutput:
    error, rank, narrowest = linear_collapse(cfg, trial.seed)
    return TrialOutput([Record("collapse_rel_error", error),
                        Record("product_rank", float(rank)),
                        Record("narrowest_width", float(narrowest))])
