"""Oracle tests for learnscope.measures.ntk."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.measures.ntk import (
    empirical_ntk,
    input_sensitivity,
    ntk_summary,
    ntk_training_response,
)

torch.set_num_threads(1)


def _make(fn, seed: int = 0) -> nn.Module:
    """Build a model deterministically without disturbing the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn().double()


def _inputs(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mlp(d_in: int = 3, hidden: int = 6, d_out: int = 3) -> nn.Module:
    return _make(
        lambda: nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))
    )


def _snapshot(model: nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [(m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
    )


def _assert_unchanged(model: nn.Module, snap) -> None:
    state, flags, req, grads = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [
        (m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()
    ] == flags
    assert [p.requires_grad for p in model.parameters()] == req
    assert all(p.grad is None for p in model.parameters()) and all(g is None for g in grads)


def test_linear_model_ntk_is_gram_matrix():
    x = _inputs(5, 4, 0)
    lin = _make(lambda: nn.Linear(4, 1, bias=False))
    k = empirical_ntk(lin, x)
    assert k.shape == (5, 5)
    assert torch.allclose(k, x @ x.T, atol=1e-12)
    lin_b = _make(lambda: nn.Linear(4, 1))
    assert torch.allclose(empirical_ntk(lin_b, x), x @ x.T + 1.0, atol=1e-12)
    # cross kernel
    x2 = _inputs(3, 4, 1)
    assert torch.allclose(empirical_ntk(lin_b, x, x2), x @ x2.T + 1.0, atol=1e-12)


def _explicit_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows = (example, output) example-major; columns = all parameters, by autograd.grad."""
    m = copy.deepcopy(model)
    params = [p for p in m.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = m(x[i : i + 1]).reshape(-1)
        for a in range(out.shape[0]):
            g = torch.autograd.grad(out[a], params, retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def test_ntk_equals_explicit_jacobian_product():
    model = _mlp()
    x = _inputs(4, 3, 2)
    snap = _snapshot(model)
    k = empirical_ntk(model, x)
    j = _explicit_jacobian(model, x)
    assert k.shape == (12, 12)
    assert torch.allclose(k, j @ j.T, atol=1e-10)
    kt = empirical_ntk(model, x, reduce="trace")
    ref = (j @ j.T).reshape(4, 3, 4, 3).diagonal(dim1=1, dim2=3).sum(-1)
    assert kt.shape == (4, 4)
    assert torch.allclose(kt, ref, atol=1e-10)
    assert torch.allclose(empirical_ntk(model, x, chunk_size=2), k, atol=1e-12)
    _assert_unchanged(model, snap)


def test_frozen_parameters_excluded():
    model = _mlp(d_out=1)
    model[0].weight.requires_grad_(False)
    x = _inputs(3, 3, 3)
    k = empirical_ntk(model, x)
    j = _explicit_jacobian(model, x)  # only requires_grad parameters
    assert torch.allclose(k, j @ j.T, atol=1e-10)
    assert model[0].weight.requires_grad is False


def test_model_untouched_and_no_rng_use_with_dropout_batchnorm():
    model = _make(
        lambda: nn.Sequential(
            nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 1)
        )
    )
    model.train()
    model[3].eval()  # a mixed pattern of flags must be restored exactly
    x = _inputs(6, 3, 4)
    snap = _snapshot(model)
    rng = torch.get_rng_state()
    k1 = empirical_ntk(model, x)
    k2 = empirical_ntk(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(k1, k2)  # deterministic: dropout off, running statistics used
    _assert_unchanged(model, snap)
    assert model.training and not model[3].training


def test_kernel_width_oracles():
    s_id = ntk_summary(torch.eye(4) + 0.1 * (torch.ones(4, 4) - torch.eye(4)))
    assert s_id.kernel_width == 0.0
    assert s_id.trace == pytest.approx(4.0)
    s_ones = ntk_summary(torch.ones(4, 4))
    assert s_ones.kernel_width == 1.0
    assert s_ones.effective_rank == pytest.approx(1.0)
    assert ntk_summary(np.eye(5)).effective_rank == pytest.approx(5.0)
    # hand-made: normalised off-diagonals 0.9 (pair 0-1) and 0 elsewhere -> 2 of 6 ordered pairs
    k = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 4.0]])
    s = ntk_summary(k, K0=2.0 * np.eye(3))
    assert s.kernel_width == pytest.approx(1 / 3)
    assert s.trace_ratio_to_init == pytest.approx(6.0 / 6.0)
    assert s.width_threshold == 0.5 and s.n == 3
    assert ntk_summary(k).trace_ratio_to_init is None
    # a zero diagonal entry (zero gradient) counts as not wide, no NaN
    kz = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert ntk_summary(kz).kernel_width == pytest.approx(2 / 6)


def test_ntk_summary_errors():
    with pytest.raises(ValueError, match="square"):
        ntk_summary(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        ntk_summary(np.ones((1, 1)))
    with pytest.raises(ValueError, match="symmetric"):
        ntk_summary(np.array([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="negative diagonal"):
        ntk_summary(np.array([[-1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="all-zero"):
        ntk_summary(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="zero trace"):
        ntk_summary(np.eye(2), K0=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ntk_summary(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_empirical_ntk_errors():
    model = _mlp()
    with pytest.raises(ValueError, match="reduce"):
        empirical_ntk(model, _inputs(2, 3, 0), reduce="mean")
    with pytest.raises(ValueError, match="non-empty"):
        empirical_ntk(model, torch.zeros(0, 3, dtype=torch.float64))
    frozen = _mlp()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_ntk(frozen, _inputs(2, 3, 0))


def test_training_response_matches_actual_sgd_step():
    model = _mlp(d_out=2)
    x = _inputs(5, 3, 5)
    x_train = _inputs(1, 3, 6)
    y_train = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    lr = 1e-4

    # actual step on a copy
    m = copy.deepcopy(model)
    out_train = m(x_train)
    loss = 0.5 * ((out_train - y_train) ** 2).sum()
    (g_out,) = torch.autograd.grad(loss, out_train, retain_graph=True)
    f_before = m(x).detach()
    loss.backward()
    with torch.no_grad():
        for p in m.parameters():
            p -= lr * p.grad
    actual = m(x).detach() - f_before

    snap = _snapshot(model)
    pred = ntk_training_response(model, x, x_train, g_out, lr)
    _assert_unchanged(model, snap)
    assert pred.shape == actual.shape == (5, 2)
    rel = float((pred - actual).norm() / actual.norm())
    assert rel < 1e-3
    # same thing through the explicit cross kernel: -lr * K(x, x') dL/df(x')
    kx = empirical_ntk(model, x, x_train)  # (5*2) x (1*2)
    via_k = (-lr * kx @ g_out.reshape(-1)).reshape(5, 2)
    assert torch.allclose(via_k, pred, atol=1e-14)
    with pytest.raises(ValueError, match="output_grads must have shape"):
        ntk_training_response(model, x, x_train, g_out.reshape(-1), lr)


def test_input_sensitivity_of_a_linear_map_is_its_squared_frobenius_norm():
    lin = _make(lambda: nn.Linear(4, 3))
    expected = float(lin.weight.pow(2).sum())
    assert input_sensitivity(lin, _inputs(7, 4, 1)) == pytest.approx(expected, rel=1e-12)


def test_input_sensitivity_matches_central_differences():
    """Brute force: every input coordinate nudged by +-h, squared slopes summed, averaged."""
    model = _mlp(d_in=3, hidden=6, d_out=2)
    x = _inputs(5, 3, 2)
    h = 1e-5
    total = 0.0
    with torch.no_grad():
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                e = torch.zeros(3, dtype=torch.float64)
                e[j] = h
                slope = (model(x[i:i + 1] + e) - model(x[i:i + 1] - e)) / (2 * h)
                total += float(slope.pow(2).sum())
    assert input_sensitivity(model, x) == pytest.approx(total / x.shape[0], rel=1e-7)


def test_input_sensitivity_leaves_the_model_alone_and_refuses_bad_inputs():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    model.train()
    input_sensitivity(model, _inputs(4, 3, 0))
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError):
        input_sensitivity(model, torch.zeros(0, 3, dtype=torch.float64))
    with pytest.raises(ValueError):
        input_sensitivity(model, torch.zeros(2, 3, dtype=torch.long))
