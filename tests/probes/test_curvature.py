"""Tests for learnscope.probes.curvature (CurvatureProbe)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnscope import Scope
from learnscope.measures.curvature import hessian_trace, top_hessian_eigenvalue
from learnscope.probes.base import ProbeContext
from learnscope.probes.curvature import CurvatureProbe
from learnscope.probes.schedule import every
from learnscope.seeding import torch_generator
from learnscope.testing import assert_same_model

torch.set_num_threads(1)

_g = torch.Generator().manual_seed(7)
X = torch.randn(48, 4, generator=_g)
Y = torch.randint(0, 3, (48,), generator=_g)

def probed(scope):
    """The probes' records (without the loss and scalars the loop passed to step())."""
    return [r for r in scope.records if r.probe != "scalars"]



def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 3))


def train(probes=None, steps: int = 6):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    scope = Scope(model, probes, data=(X, Y), out=None) if probes is not None else None
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(X), Y)
        loss.backward()
        opt.step()
        if scope is not None:
            scope.step(loss)
    if scope is not None:
        scope.close()
    return model, scope, torch.get_rng_state()


def small_probe(**kw) -> CurvatureProbe:
    args = {"schedule": every(3), "n_examples": 24, "eigen_iters": 15, "trace_samples": 4,
            "seed": 5} | kw
    return CurvatureProbe(F.cross_entropy, **args)


def test_in_scope_keys_steps_and_values_equal_the_measures():
    probe = small_probe()
    model, scope, _ = train([probe], steps=7)
    recs = probed(scope)
    assert sorted({r.step for r in recs}) == [0, 3, 6, 7]  # 7: the final state, at close
    for step in (0, 3, 6, 7):
        at = {r.key: r for r in recs if r.step == step}
        assert set(at) == {"hessian_top_eigenvalue", "hessian_trace"}
        eig, tr = at["hessian_top_eigenvalue"], at["hessian_trace"]
        assert {"method", "iterations", "converged", "tol", "residual", "max_iters",
                "n_examples", "seed"} <= set(eig.meta)
        assert eig.meta["method"] == "lanczos" and eig.meta["residual"] >= 0
        assert tr.meta["samples"] == 4 and tr.meta["distribution"] == "rademacher"
        assert tr.meta["std_error"] > 0
        assert "converged" not in tr.meta and "rel_tol" not in tr.meta  # fixed mode
    assert all(m.training for m in model.modules())  # flags restored (dropout in train mode)
    oracle = copy.deepcopy(model).eval()
    x, y = X[:24], Y[:24]
    eig = top_hessian_eigenvalue(oracle, F.cross_entropy, x, y, iters=15, tol=1e-4,
                                 generator=torch_generator(5, "hessian_eigenvalue", 7))
    tr = hessian_trace(oracle, F.cross_entropy, x, y, samples=4,
                       generator=torch_generator(5, "hessian_trace", 7))
    final = {r.key: r for r in recs if r.step == 7}
    assert final["hessian_top_eigenvalue"].value == eig.value
    assert final["hessian_top_eigenvalue"].meta["iterations"] == eig.iterations
    assert final["hessian_top_eigenvalue"].meta["converged"] == eig.converged
    assert final["hessian_top_eigenvalue"].meta["residual"] == eig.residual
    assert final["hessian_trace"].value == tr.value
    assert final["hessian_trace"].meta["std_error"] == tr.std_error


def test_defaults_are_those_of_the_measure_functions():
    model = make_model().eval()
    probe = CurvatureProbe(F.cross_entropy)
    recs = {r.key: r for r in probe.measure(ProbeContext(model, 2, 0, X, Y))}
    eig = top_hessian_eigenvalue(model, F.cross_entropy, X, Y,
                                 generator=torch_generator(0, "hessian_eigenvalue", 2))
    tr = hessian_trace(model, F.cross_entropy, X, Y,
                       generator=torch_generator(0, "hessian_trace", 2))
    assert recs["hessian_top_eigenvalue"].value == eig.value
    assert recs["hessian_top_eigenvalue"].meta["tol"] == eig.tol
    assert recs["hessian_trace"].value == tr.value and recs["hessian_trace"].meta["samples"] == 100


def test_records_carry_the_uncertainty_against_the_exact_hessian():
    # A tiny float64 network with its exact Hessian: the eigenvalue's residual bounds its
    # distance to an eigenvalue, and the trace lies within a few standard errors.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = X[:32].double(), Y[:32]
    params = dict(model.named_parameters())
    sizes = [p.numel() for p in params.values()]

    def loss_of(flat):
        chunks = torch.split(flat, sizes)
        pd = {n: c.reshape(p.shape) for (n, p), c in zip(params.items(), chunks, strict=True)}
        return F.cross_entropy(torch.func.functional_call(model, pd, (x,)), y)

    h = torch.autograd.functional.hessian(
        loss_of, torch.cat([p.detach().reshape(-1) for p in params.values()]))
    eigs = torch.linalg.eigvalsh(h)
    top = float(eigs[eigs.abs().argmax()])
    for iters, expect_converged in ((3, False), (100, True)):
        probe = CurvatureProbe(F.cross_entropy, eigen_iters=iters, trace_samples=200)
        recs = {r.key: r for r in probe.measure(ProbeContext(model, 0, 0, x, y))}
        eig, tr = recs["hessian_top_eigenvalue"], recs["hessian_trace"]
        assert eig.meta["converged"] is expect_converged and eig.meta["iterations"] <= iters
        nearest = float((eigs - eig.value).abs().min())
        assert nearest <= eig.meta["residual"] * abs(eig.value) * (1 + 1e-9)
        if expect_converged:
            assert eig.value == pytest.approx(top, rel=1e-7)
        else:
            assert eig.meta["residual"] > 1e-3
        exact_trace = float(torch.trace(h))
        assert 0 < tr.meta["std_error"] < 0.2 * abs(exact_trace)
        assert abs(tr.value - exact_trace) < 3 * tr.meta["std_error"]


def test_adaptive_trace_records_tolerance_and_convergence():
    model = make_model().eval()
    probe = small_probe(trace_samples=10, trace_rel_tol=0.1, trace_max_samples=500)
    tr = {r.key: r for r in probe.measure(ProbeContext(model, 3, 0, X, Y))}["hessian_trace"]
    assert tr.meta["rel_tol"] == 0.1 and tr.meta["max_samples"] == 500
    assert tr.meta["converged"] is True and 10 <= tr.meta["samples"] < 500
    assert tr.meta["std_error"] <= 0.1 * abs(tr.value)
    oracle = hessian_trace(model, F.cross_entropy, X[:24], Y[:24], samples=10, rel_tol=0.1,
                           max_samples=500, generator=torch_generator(5, "hessian_trace", 3))
    assert tr.value == oracle.value and tr.meta["samples"] == oracle.samples
    capped = small_probe(trace_samples=3, trace_rel_tol=1e-9, trace_max_samples=5)
    tr = {r.key: r for r in capped.measure(ProbeContext(model, 3, 0, X, Y))}["hessian_trace"]
    assert tr.meta["converged"] is False and tr.meta["samples"] == 5


def test_power_method_is_available():
    model = make_model().eval()
    probe = small_probe(eigen_method="power", eigen_iters=200, eigen_tol=1e-8)
    eig = {r.key: r for r in probe.measure(ProbeContext(model, 0, 0, X, Y))}
    eig = eig["hessian_top_eigenvalue"]
    lanczos = {r.key: r for r in small_probe().measure(ProbeContext(model, 0, 0, X, Y))}
    assert eig.meta["method"] == "power"
    assert eig.value == pytest.approx(lanczos["hessian_top_eigenvalue"].value, rel=1e-4)


def test_closed_form_linear_regression():
    # loss = mean((X w - y)^2): H = 2/n X^T X = diag(0.5, 2, 4.5) for orthogonal columns;
    # the Hessian is diagonal, so Hutchinson with Rademacher vectors is exact.
    x = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 0, 0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [0.0], [-1.0], [2.0]], dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    probe = CurvatureProbe(F.mse_loss, eigen_iters=300, eigen_tol=1e-12, trace_samples=3)
    recs = {r.key: r for r in probe.measure(ProbeContext(model, 0, 0, x, y))}
    assert recs["hessian_top_eigenvalue"].value == pytest.approx(4.5, rel=1e-9)
    assert recs["hessian_top_eigenvalue"].meta["converged"] is True
    assert recs["hessian_top_eigenvalue"].meta["residual"] < 1e-9
    assert recs["hessian_trace"].value == pytest.approx(7.0, rel=1e-12)
    assert recs["hessian_trace"].meta["std_error"] == pytest.approx(0.0, abs=1e-12)


def test_deterministic_per_step_and_seed():
    model = make_model()
    probe = small_probe()
    ctx = ProbeContext(model, 3, 0, X, Y)
    a, b = probe.measure(ctx), probe.measure(ctx)
    assert [r.value for r in a] == [r.value for r in b]
    other = small_probe(seed=6).measure(ctx)
    assert [r.value for r in other][1] != [r.value for r in a][1]


def test_nonfinite_loss_gives_nan_with_note():
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    recs = small_probe().measure(ProbeContext(model, 0, 0, X, Y))
    assert len(recs) == 2 and all(math.isnan(r.value) and "note" in r.meta for r in recs)


def test_does_not_change_training():
    ref_model, _, ref_rng = train(None)
    model, _, rng = train([small_probe(schedule=every(1), eigen_iters=5, trace_samples=2)])
    assert_same_model(ref_model, model)
    assert torch.equal(rng, ref_rng)
    assert all(p.grad is not None and p.requires_grad for p in model.parameters())


def test_bad_args_and_missing_targets():
    for kw, word in [({"n_examples": 0}, "n_examples"), ({"eigen_iters": 0}, "eigen_iters"),
                     ({"trace_samples": 0}, "trace_samples"), ({"eigen_tol": -1.0}, "eigen_tol"),
                     ({"eigen_tol": float("nan")}, "eigen_tol"), ({"seed": -1}, "seed"),
                     ({"schedule": 3}, "schedule"), ({"eigen_method": "qr"}, "eigen_method"),
                     ({"trace_rel_tol": -0.1}, "trace_rel_tol"),
                     ({"trace_rel_tol": 0.1, "trace_samples": 1}, "trace_samples"),
                     ({"trace_rel_tol": 0.1, "trace_samples": 50, "trace_max_samples": 20},
                      "trace_max_samples")]:
        with pytest.raises(ValueError, match=word):
            CurvatureProbe(F.cross_entropy, **kw)
    with pytest.raises(ValueError, match="loss_fn"):
        CurvatureProbe(None)
    with pytest.raises(ValueError, match="targets"):
        small_probe().measure(ProbeContext(make_model(), 0, 0, X, None))


def test_params():
    p = small_probe()
    assert p.params() == {"loss_fn": "cross_entropy", "schedule": "every 3 steps", "n_examples": 24,
                          "eigen_method": "lanczos", "eigen_iters": 15, "eigen_tol": 1e-4,
                          "trace_samples": 4, "trace_rel_tol": None, "trace_max_samples": 1000,
                          "seed": 5}
