"""tensor_norms (one host synchronisation for many norms) against NumPy, and the precision
option of the gradient and update norms built on it."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.measures.gradients import (
    layer_gradient_norms,
    parameter_snapshot,
    parameter_update_norms,
    relative_update_norms,
    tensor_norms,
)


def test_equal_numpy_for_real_complex_sparse_and_makers():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=g)
    c = torch.complex(torch.randn(5, generator=g), torch.randn(5, generator=g))
    sparse = torch.zeros(4, 4).index_put_((torch.tensor([0, 3]), torch.tensor([1, 2])),
                                          torch.tensor([3.0, 4.0])).to_sparse()
    calls = []

    def maker():
        calls.append(1)
        return a * 2

    norms = tensor_norms({"a": a, "c": c, "sparse": sparse, "made": maker, "empty":
                          torch.zeros(0)})
    assert list(norms) == ["a", "c", "sparse", "made", "empty"]  # order kept
    assert norms["a"] == pytest.approx(np.linalg.norm(a.double().numpy()), rel=1e-15)
    assert norms["c"] == pytest.approx(np.linalg.norm(c.to(torch.complex128).numpy()),
                                       rel=1e-15)
    assert norms["sparse"] == 5.0 and norms["empty"] == 0.0
    assert norms["made"] == pytest.approx(2 * norms["a"], rel=1e-15) and len(calls) == 1


def test_float32_precision_and_overflow_redone_in_float64():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    exact = float(np.linalg.norm(x.double().numpy()))
    fast = tensor_norms({"x": x}, precision=torch.float32)["x"]
    assert fast == pytest.approx(exact, rel=1e-6)
    huge = torch.full((4,), 1e30)  # the float32 sum of squares overflows, the norm does not
    assert tensor_norms({"h": huge}, precision=torch.float32)["h"] == pytest.approx(2e30)
    assert math.isinf(tensor_norms({"i": torch.tensor([1.0, math.inf])})["i"])
    # A float64 tensor keeps float64 whatever the requested precision: the same value.
    d = x.double()
    assert tensor_norms({"d": d}, precision=torch.float32) == tensor_norms({"d": d})


def test_gradient_and_update_norms_accept_a_precision():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    before = parameter_snapshot(model)
    model(torch.randn(8, 6)).square().sum().backward()
    with torch.no_grad():
        model.weight.add_(0.1)
    after = parameter_snapshot(model)
    for fn, args in [(layer_gradient_norms, (model,)),
                     (parameter_update_norms, (before, after)),
                     (relative_update_norms, (before, after))]:
        exact, fast = fn(*args), fn(*args, precision=torch.float32)
        assert exact.keys() == fast.keys() and exact
        for k in exact:
            assert fast[k] == pytest.approx(exact[k], rel=1e-6)
    assert parameter_update_norms(before, after)["weight"] == pytest.approx(0.1 * math.sqrt(18))
    assert parameter_update_norms(before, after)["bias"] == 0.0
