"""Oracle tests of the scalar reverse-mode engine: closed forms, torch.autograd, finite
differences."""

import math

import pytest
import torch

from learnscope.measures.scalar_autograd import Value, topological_order


def test_chain_rule_example_closed_form():
    a, b = Value(2.0), Value(1.0)
    c = a + b
    d = b + 1
    e = c * d
    order = e.backward()
    assert e.data == 6.0
    assert a.grad == 2.0  # de/da = b + 1
    assert b.grad == 5.0  # de/db = (b + 1) + (a + b)
    assert order[0] is e and order.index(c) < order.index(a) and order.index(d) < order.index(b)


@pytest.mark.parametrize("x", [-1.3, 0.4, 2.0])
def test_unary_ops_match_closed_form_derivatives(x):
    cases = {
        "exp": (lambda v: v.exp(), math.exp(x)),
        "tanh": (lambda v: v.tanh(), 1 - math.tanh(x) ** 2),
        "relu": (lambda v: v.relu(), 1.0 if x > 0 else 0.0),
        "sigmoid": (lambda v: v.sigmoid(), math.exp(-x) / (1 + math.exp(-x)) ** 2),
        "pow3": (lambda v: v ** 3, 3 * x * x),
        "div": (lambda v: 1 / v, -1 / x ** 2),
        "sub": (lambda v: 5 - v, -1.0),
    }
    for name, (f, want) in cases.items():
        v = Value(x)
        f(v).backward()
        assert v.grad == pytest.approx(want, rel=1e-12, abs=1e-15), name


def test_shared_node_gradients_accumulate_and_backward_resets():
    x = Value(3.0)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward()
    y.backward()
    assert x.grad == 7.0


def test_against_torch_autograd_on_a_neuron():
    xs, ws, bias = [0.5, -1.5, 2.0], [0.3, -0.7, 0.2], 0.1
    vx, vw, vb = [Value(v) for v in xs], [Value(v) for v in ws], Value(bias)
    out = sum((w * x for w, x in zip(vw, vx, strict=True)), vb).tanh()
    out.backward()
    tx = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(ws, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    t = torch.tanh((tw * tx).sum() + tb)
    t.backward()
    assert out.data == pytest.approx(t.item(), rel=1e-14)
    assert [v.grad for v in vw] == pytest.approx(tw.grad.tolist(), rel=1e-12)
    assert [v.grad for v in vx] == pytest.approx(tx.grad.tolist(), rel=1e-12)
    assert vb.grad == pytest.approx(tb.grad.item(), rel=1e-12)


def test_central_differences_agree():
    def f(a: float, b: float):
        va, vb = Value(a), Value(b)
        out = (va * vb + va.sigmoid()) / (vb ** 2 + 1) - (va - vb).exp()
        return out, va, vb

    out, va, vb = f(0.7, -0.4)
    out.backward()
    h = 1e-6
    da = (f(0.7 + h, -0.4)[0].data - f(0.7 - h, -0.4)[0].data) / (2 * h)
    db = (f(0.7, -0.4 + h)[0].data - f(0.7, -0.4 - h)[0].data) / (2 * h)
    assert va.grad == pytest.approx(da, rel=1e-8)
    assert vb.grad == pytest.approx(db, rel=1e-8)


def test_topological_order_puts_parents_first_and_survives_depth():
    x = Value(1.0)
    y = x
    for _ in range(5000):
        y = y * 1.0 + 0.0
    order = topological_order(y)
    assert order[0] is x and order[-1] is y
    position = {id(n): i for i, n in enumerate(order)}
    assert all(position[id(p)] < position[id(n)] for n in order for p in n.parents)
    y.backward()
    assert x.grad == 1.0
