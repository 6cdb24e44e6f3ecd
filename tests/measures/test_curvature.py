"""Oracle tests for learnscope.measures.curvature (HVP, power iteration, Hutchinson)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from learnscope.measures.curvature import (
    EigenResult,
    TraceResult,
    hessian_trace,
    hessian_vector_product,
    top_hessian_eigenvalue,
)
from learnscope.testing import assert_model_unchanged, snapshot_model

torch.set_num_threads(1)
DT = torch.float64


# ---------------------------------------------------------------- model-untouched helpers


snapshot = snapshot_model
assert_unchanged = assert_model_unchanged


def with_grads(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give the model non-trivial .grad fields, so that 'unchanged' is a real check."""
    model(x).square().sum().backward()
    return model


# ---------------------------------------------------------------- test models


class Quadratic(nn.Module):
    """forward returns the parameter; with `quad_loss` the loss is 0.5 w^T A w (Hessian A)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w


def quad_loss(out: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return 0.5 * out @ a @ out


class Diagonal(nn.Module):
    """out = w * x; with 0.5 * sum(out^2) the Hessian is diag(x^2)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, n, dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x


def half_sq(out: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
    return 0.5 * out.square().sum()


def sym_with_spectrum(eigs: list[float], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=DT))
    return q @ torch.diag(torch.tensor(eigs, dtype=DT)) @ q.T


def linear_problem(seed: int = 0, n: int = 40, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT) * torch.linspace(0.5, 2.0, d, dtype=DT)
    y = torch.randn(n, 1, generator=g, dtype=DT)
    torch.manual_seed(seed)
    model = nn.Linear(d, 1).double()
    xa = torch.cat([x, torch.ones(n, 1, dtype=DT)], dim=1)  # [X 1]
    hess = 2.0 * xa.T @ xa / n  # Hessian of mean((Xw + b - y)^2) wrt (w, b)
    return model, x, y, hess


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()  # 32 params


def dense_hessian(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])

    def f(flat):
        chunks = torch.split(flat, sizes)
        pd = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return loss_fn(functional_call(model, pd, (x,)), y)

    return torch.autograd.functional.hessian(f, flat0)


def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def mlp_data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(24, 3, generator=g, dtype=DT), torch.randn(24, 2, generator=g, dtype=DT)


# ---------------------------------------------------------------- HVP


def test_hvp_linear_mse_matches_closed_form():
    model, x, y, hess = linear_problem()
    with_grads(model, x)
    snap = snapshot(model)
    g = torch.Generator().manual_seed(3)
    v = [torch.randn(1, 5, generator=g, dtype=DT), torch.randn(1, generator=g, dtype=DT)]
    hv = hessian_vector_product(model, nn.MSELoss(), x, y, v)
    assert [h.shape for h in hv] == [torch.Size([1, 5]), torch.Size([1])]
    torch.testing.assert_close(flat(hv), hess @ flat(v), rtol=1e-12, atol=1e-12)
    # mapping form gives the same
    hv2 = hessian_vector_product(model, nn.MSELoss(), x, y, {"weight": v[0], "bias": v[1]})
    torch.testing.assert_close(flat(hv2), flat(hv))
    assert_unchanged(model, snap)


def test_hvp_tiny_mlp_matches_dense_hessian():
    model = tiny_mlp()
    x, y = mlp_data()
    loss_fn = nn.MSELoss()
    h = dense_hessian(model, loss_fn, x, y)
    snap = snapshot(model)
    g = torch.Generator().manual_seed(5)
    v = [torch.randn(p.shape, generator=g, dtype=DT) for p in model.parameters()]
    hv = hessian_vector_product(model, loss_fn, x, y, v)
    torch.testing.assert_close(flat(hv), h @ flat(v), rtol=1e-10, atol=1e-12)
    assert_unchanged(model, snap)


def test_hvp_frozen_parameter_is_held_fixed():
    model, x, y, hess = linear_problem()
    model.bias.requires_grad_(False)
    snap = snapshot(model)
    v = [torch.ones(1, 5, dtype=DT)]
    hv = hessian_vector_product(model, nn.MSELoss(), x, y, v)
    assert len(hv) == 1
    torch.testing.assert_close(hv[0].reshape(-1), hess[:5, :5] @ torch.ones(5, dtype=DT))
    assert_unchanged(model, snap)


def test_hvp_under_no_grad_and_with_batchnorm_in_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
    model.train()
    x, y = torch.randn(16, 3, dtype=DT), torch.randn(16, 1, dtype=DT)
    with_grads(model, x)
    snap = snapshot(model)  # running stats must not move although BN is in train mode
    v = [torch.ones_like(p) for p in model.parameters()]
    with torch.no_grad():
        hv = hessian_vector_product(model, nn.MSELoss(), x, y, v)
    h = dense_hessian(copy.deepcopy(model), nn.MSELoss(), x, y)
    torch.testing.assert_close(flat(hv), h @ flat(v), rtol=1e-10, atol=1e-12)
    assert_unchanged(model, snap)


def test_hvp_rejects_bad_vectors():
    model, x, y, _ = linear_problem()
    ok = [torch.ones(1, 5, dtype=DT), torch.ones(1, dtype=DT)]
    with pytest.raises(ValueError, match="non-finite"):
        hessian_vector_product(
            model, nn.MSELoss(), x, y, [ok[0], torch.tensor([float("nan")], dtype=DT)]
        )
    with pytest.raises(ValueError, match="shape"):
        hessian_vector_product(model, nn.MSELoss(), x, y, [torch.ones(5, dtype=DT), ok[1]])
    with pytest.raises(ValueError, match="2 trainable"):
        hessian_vector_product(model, nn.MSELoss(), x, y, ok[:1])
    with pytest.raises(ValueError, match="keys"):
        hessian_vector_product(model, nn.MSELoss(), x, y, {"weight": ok[0]})
    with pytest.raises(ValueError, match="scalar"):
        hessian_vector_product(model, nn.MSELoss(reduction="none"), x, y, ok)


def test_dropout_in_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 1)).double()
    x, y = torch.randn(4, 3, dtype=DT), torch.randn(4, 1, dtype=DT)
    with pytest.raises(ValueError, match="Dropout"):
        top_hessian_eigenvalue(model, nn.MSELoss(), x, y)
    model.eval()  # fine in eval mode
    assert isinstance(top_hessian_eigenvalue(model, nn.MSELoss(), x, y, iters=3), EigenResult)


# ---------------------------------------------------------------- top eigenvalue

METHODS = ["lanczos", "power"]


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenvalue_equals_dense_eigendecomposition_linear(method):
    model, x, y, hess = linear_problem()
    with_grads(model, x)
    snap = snapshot(model)
    res = top_hessian_eigenvalue(model, nn.MSELoss(), x, y, iters=500, tol=1e-10, generator=0,
                                 method=method)
    expected = float(torch.linalg.eigvalsh(hess)[-1])
    assert res.converged and res.iterations < 500
    assert res.tol == 1e-10 and res.method == method
    assert res.value == pytest.approx(expected, rel=1e-8)
    assert res.residual < 1e-4
    assert_unchanged(model, snap)


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenvalue_is_the_largest_magnitude_negative_eigenvalue(method):
    a = sym_with_spectrum([3.0, 1.0, -6.0, 0.5], seed=2)
    model = Quadratic(torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=DT))
    res = top_hessian_eigenvalue(model, quad_loss, torch.zeros(1), a, iters=500, tol=1e-12,
                                 method=method)
    assert res.converged
    assert res.value == pytest.approx(-6.0, rel=1e-8)  # largest |lambda|, not largest lambda


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenvalue_equals_dense_hessian_tiny_mlp(method):
    model = tiny_mlp()
    x, y = mlp_data()
    loss_fn = nn.MSELoss()
    h = dense_hessian(model, loss_fn, x, y)
    eigs, vecs = torch.linalg.eigh(h)
    order = eigs.abs().argsort(descending=True)
    assert abs(eigs[order[1]]) / abs(eigs[order[0]]) < 0.95  # a gap, so the oracle is meaningful
    snap = snapshot(model)
    rng_before = torch.get_rng_state()
    gen = torch.Generator().manual_seed(11)
    res = top_hessian_eigenvalue(model, loss_fn, x, y, iters=2000, tol=1e-12, generator=gen,
                                 method=method)
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched
    assert res.converged
    assert res.value == pytest.approx(float(eigs[order[0]]), rel=1e-7)
    v = flat(res.vector)
    assert float(v.norm()) == pytest.approx(1.0, rel=1e-12)
    assert abs(float(v @ vecs[:, order[0]])) == pytest.approx(1.0, abs=1e-6)  # the eigenvector
    assert_unchanged(model, snap)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("iters", [2, 3, 5])
def test_residual_is_that_of_the_returned_vector_and_bounds_an_eigenvalue(method, iters):
    # Stopped early, the estimate is off; the residual must be the true one of the returned
    # vector, and some eigenvalue must lie within residual * |value| of the value.
    model = tiny_mlp()
    x, y = mlp_data()
    loss_fn = nn.MSELoss()
    h = dense_hessian(model, loss_fn, x, y)
    eigs = torch.linalg.eigvalsh(h)
    res = top_hessian_eigenvalue(model, loss_fn, x, y, iters=iters, tol=0.0, generator=4,
                                 method=method)
    assert not res.converged and res.iterations == iters
    v = flat(res.vector)
    assert float(v.norm()) == pytest.approx(1.0, rel=1e-12)
    assert res.value == pytest.approx(float(v @ h @ v), rel=1e-10)  # a Rayleigh quotient
    expected = float((h @ v - res.value * v).norm()) / abs(res.value)
    assert res.residual == pytest.approx(expected, rel=1e-8)
    assert res.residual > 1e-3  # not converged: a real residual
    nearest = float((eigs - res.value).abs().min())
    assert nearest <= res.residual * abs(res.value) * (1 + 1e-10)


def test_lanczos_beats_power_iteration_when_the_top_eigenvalues_are_close():
    # Spectrum with a relative gap of 1% at the top: power iteration converges like
    # 0.99^(2k), Lanczos like a Chebyshev polynomial in sqrt(gap).
    eigs = [1.0, 0.99] + torch.linspace(-0.5, 0.9, 38).tolist()
    a = sym_with_spectrum(eigs, seed=3)
    model = Quadratic(torch.zeros(40, dtype=DT))
    lan = top_hessian_eigenvalue(model, quad_loss, torch.zeros(1), a, iters=60, tol=1e-6,
                                 generator=1)
    power = top_hessian_eigenvalue(model, quad_loss, torch.zeros(1), a, iters=60, tol=1e-6,
                                   generator=1, method="power")
    assert lan.converged and lan.iterations < 40
    assert lan.value == pytest.approx(1.0, abs=1e-10)
    assert not power.converged
    assert abs(power.value - 1.0) > 1e-4  # off by 3.6e-4 after the same 60 products
    assert lan.value <= 1.0 + 1e-12  # a Ritz value never exceeds the largest eigenvalue


def test_lanczos_stops_when_the_krylov_space_is_the_whole_space():
    a = sym_with_spectrum([2.0, 0.5, -1.0, 0.25], seed=6)
    model = Quadratic(torch.zeros(4, dtype=DT))
    res = top_hessian_eigenvalue(model, quad_loss, torch.zeros(1), a, iters=100, tol=0.0)
    assert res.converged and res.iterations <= 4
    assert res.value == pytest.approx(2.0, rel=1e-12)
    assert res.residual < 1e-10


def test_opposite_eigenvalues_of_equal_magnitude():
    # +2 and -2 both dominate. Lanczos finds both and returns the positive one. Power
    # iteration flips between them with a constant Rayleigh quotient, so its relative-change
    # rule reports convergence to a value that is no eigenvalue; the residual exposes it.
    a = sym_with_spectrum([2.0, -2.0, 1.0, 0.5, -0.25], seed=8)
    model = Quadratic(torch.zeros(5, dtype=DT))
    lan = top_hessian_eigenvalue(model, quad_loss, torch.zeros(1), a, iters=50, tol=1e-10)
    assert lan.converged and lan.value == pytest.approx(2.0, rel=1e-10)
    assert lan.residual < 1e-10
    power = top_hessian_eigenvalue(model, quad_loss, torch.zeros(1), a, iters=50, tol=1e-10,
                                   method="power")
    assert power.converged and abs(abs(power.value) - 2.0) > 0.1  # fooled
    assert power.residual > 0.1  # and the residual says so


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenvalue_reports_non_convergence_and_is_reproducible(method):
    model = tiny_mlp()
    x, y = mlp_data()
    kw = {"iters": 2, "tol": 0.0, "generator": 7, "method": method}
    r1 = top_hessian_eigenvalue(model, nn.MSELoss(), x, y, **kw)
    r2 = top_hessian_eigenvalue(model, nn.MSELoss(), x, y, **kw)
    assert not r1.converged and r1.iterations == 2
    assert r1 == r2
    assert all(torch.equal(a, b) for a, b in zip(r1.vector, r2.vector, strict=True))
    for bad in ({"iters": 0}, {"iters": 2.5}, {"tol": -1.0}, {"tol": float("inf")},
                {"method": "arnoldi"}):
        with pytest.raises(ValueError):
            top_hessian_eigenvalue(model, nn.MSELoss(), x, y, **({"method": method} | bad))


def test_non_finite_loss_is_reported():
    model = Quadratic(torch.ones(3, dtype=DT))

    def bad(out, t):
        return (out * float("nan")).square().sum()

    with pytest.raises(ValueError, match="non-finite"):
        top_hessian_eigenvalue(model, bad, torch.zeros(1), None)
    with pytest.raises(ValueError, match="non-finite"):
        hessian_trace(model, bad, torch.zeros(1), None, samples=2)


@pytest.mark.parametrize("method", METHODS)
def test_zero_hessian(method):
    # loss linear in the parameter: H == 0
    model = Quadratic(torch.ones(3, dtype=DT))
    res = top_hessian_eigenvalue(model, lambda out, t: out.sum(), torch.zeros(1), None,
                                 method=method)
    assert res.value == 0.0 and res.converged and res.residual == 0.0
    tr = hessian_trace(model, lambda out, t: out.sum(), torch.zeros(1), None, samples=3)
    assert tr.value == 0.0 and tr.std_error == 0.0


# ---------------------------------------------------------------- Hutchinson


def test_hutchinson_rademacher_is_exact_for_diagonal_hessian():
    model = Diagonal(7)
    x = torch.linspace(0.5, 3.0, 7, dtype=DT)
    snap = snapshot(model)
    res = hessian_trace(model, half_sq, x, None, samples=5, generator=1)
    assert isinstance(res, TraceResult) and res.samples == 5
    assert res.value == pytest.approx(float(x.square().sum()), rel=1e-14)
    assert res.std_error == pytest.approx(0.0, abs=1e-12)
    # Gaussian probes are not exact on the same problem
    res_g = hessian_trace(model, half_sq, x, None, samples=5, generator=1, distribution="gaussian")
    assert res_g.std_error > 0.1
    assert_unchanged(model, snap)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_within_three_standard_errors(distribution):
    model = tiny_mlp()
    x, y = mlp_data()
    loss_fn = nn.MSELoss()
    exact = float(torch.trace(dense_hessian(model, loss_fn, x, y)))
    snap = snapshot(model)
    rng_before = torch.get_rng_state()
    res = hessian_trace(model, loss_fn, x, y, samples=400, generator=123, distribution=distribution)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert 0 < res.std_error < 0.2 * abs(exact)
    assert abs(res.value - exact) < 3 * res.std_error
    assert_unchanged(model, snap)


def test_hutchinson_quadratic_and_errors():
    a = sym_with_spectrum([3.0, 1.0, -6.0, 0.5], seed=4)
    model = Quadratic(torch.zeros(4, dtype=DT))
    res = hessian_trace(model, quad_loss, torch.zeros(1), a, samples=2000, generator=0)
    assert abs(res.value - float(torch.trace(a))) < 3 * res.std_error
    one = hessian_trace(model, quad_loss, torch.zeros(1), a, samples=1)
    assert one.std_error != one.std_error  # nan for a single sample
    with pytest.raises(ValueError):
        hessian_trace(model, quad_loss, torch.zeros(1), a, samples=0)
    with pytest.raises(ValueError, match="distribution"):
        hessian_trace(model, quad_loss, torch.zeros(1), a, distribution="uniform")


def test_trace_standard_error_is_calibrated():
    # Over 50 seeds the exact trace lies within 2 standard errors about 95% of the time;
    # >= 80% cannot flake (the seeds are fixed) and fails for an SE too small by half.
    model = tiny_mlp()
    x, y = mlp_data()
    loss_fn = nn.MSELoss()
    exact = float(torch.trace(dense_hessian(model, loss_fn, x, y)))
    results = [hessian_trace(model, loss_fn, x, y, samples=30, generator=seed)
               for seed in range(50)]
    assert all(r.samples == 30 and r.distribution == "rademacher" for r in results)
    assert all(r.rel_tol is None and r.converged is None for r in results)
    within = [abs(r.value - exact) <= 2 * r.std_error for r in results]
    assert sum(within) >= 40
    assert sum(abs(r.value - exact) <= r.std_error for r in results) < 50  # SE not inflated
    # the SE estimates the spread of the estimate over seeds
    values = torch.tensor([r.value for r in results], dtype=DT)
    mean_se = sum(r.std_error for r in results) / 50
    assert float(values.std()) == pytest.approx(mean_se, rel=0.3)


def test_adaptive_trace_stops_on_the_standard_error_and_is_calibrated():
    model = tiny_mlp()
    x, y = mlp_data()
    loss_fn = nn.MSELoss()
    exact = float(torch.trace(dense_hessian(model, loss_fn, x, y)))
    results = [hessian_trace(model, loss_fn, x, y, samples=20, rel_tol=0.1, max_samples=2000,
                             generator=seed) for seed in range(50)]
    for r in results:
        assert r.converged and r.rel_tol == 0.1 and 20 <= r.samples < 2000
        assert r.std_error <= 0.1 * abs(r.value)
    assert max(r.samples for r in results) > 20  # the tolerance needed more than the minimum
    assert sum(abs(r.value - exact) <= 2 * r.std_error for r in results) >= 40
    # one more sample than needed is not drawn: the same generator in fixed mode with the
    # number used gives the same estimate
    r = results[0]
    fixed = hessian_trace(model, loss_fn, x, y, samples=r.samples, generator=0)
    assert fixed.value == r.value and fixed.std_error == r.std_error


def test_adaptive_trace_cap_and_errors():
    model = tiny_mlp()
    x, y = mlp_data()
    capped = hessian_trace(model, nn.MSELoss(), x, y, samples=5, rel_tol=1e-6, max_samples=12)
    assert capped.samples == 12 and capped.converged is False
    # a diagonal Hessian: zero standard error, stops at the minimum
    diag = hessian_trace(Diagonal(5), half_sq, torch.ones(5, dtype=DT), None, samples=3,
                         rel_tol=0.0)
    assert diag.samples == 3 and diag.converged is True and diag.value == pytest.approx(5.0)
    for bad in ({"rel_tol": -0.1}, {"rel_tol": float("nan")}, {"rel_tol": 0.1, "samples": 1},
                {"rel_tol": 0.1, "samples": 10, "max_samples": 9}, {"samples": 2.0}):
        with pytest.raises(ValueError):
            hessian_trace(model, nn.MSELoss(), x, y, **bad)
