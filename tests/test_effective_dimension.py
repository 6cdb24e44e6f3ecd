"""Oracles for the effective-dimension measures: participation ratio of a known spectrum,
near-duplicate units on constructed copies, and Lanczos against the exact Hessian."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from learnscope.measures.effective_dimension import (
    HessianSpectrum,
    hessian_effective_dimension,
    mean_abs_cosine,
    near_duplicate_units,
    participation_ratio,
    participation_ratio_of_eigenvalues,
    top_hessian_eigenvalues,
)
from learnscope.models import mlp

torch.set_num_threads(1)


def test_participation_ratio_of_known_eigenvalues():
    assert participation_ratio_of_eigenvalues(torch.ones(7)) == pytest.approx(7.0)
    assert participation_ratio_of_eigenvalues(torch.tensor([5.0, 0, 0])) == pytest.approx(1.0)
    # (3 + 1)^2 / (9 + 1) = 1.6
    assert participation_ratio_of_eigenvalues(torch.tensor([3.0, 1.0])) == pytest.approx(1.6)
    assert math.isnan(participation_ratio_of_eigenvalues(torch.zeros(3)))


def test_participation_ratio_of_activations_with_known_covariance():
    # columns scaled by sqrt(lambda) on orthonormal directions: covariance eigenvalues lambda
    g = torch.Generator().manual_seed(0)
    n, d = 4000, 6
    lam = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    q, _ = torch.linalg.qr(z)  # exactly orthonormal columns, centred
    rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    acts = (q * lam.sqrt()) @ rot.T + 3.0  # an offset must not matter
    expected = float(lam.sum()) ** 2 / float((lam ** 2).sum())  # 64 / 22
    assert participation_ratio(acts) == pytest.approx(expected, rel=1e-9)


def test_near_duplicates_count_copies_and_negations_only():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(5, 200, generator=g)
    units = torch.cat([base, 2.0 * base[:1], -base[1:2], torch.zeros(1, 200)])
    # units 0 and 5 are copies, 1 and 6 a negated pair; the rest (and the dead unit) are not
    assert near_duplicate_units(units, 0.95) == 4
    assert near_duplicate_units(base, 0.95) == 0
    noisy = base[2:3] + 0.05 * torch.randn(1, 200, generator=g)
    assert near_duplicate_units(torch.cat([base, noisy]), 0.95) == 2
    with pytest.raises(ValueError):
        near_duplicate_units(units, 1.0)


def test_mean_abs_cosine_brute_force_and_random_baseline():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(6, 3, generator=g, dtype=torch.float64)
    brute = [abs(float(torch.nn.functional.cosine_similarity(v[i], v[j], dim=0)))
             for i in range(6) for j in range(6) if i != j]
    assert mean_abs_cosine(v) == pytest.approx(sum(brute) / len(brute), rel=1e-12)
    wide = torch.randn(300, 400, generator=g)
    assert mean_abs_cosine(wide) == pytest.approx(math.sqrt(2 / (math.pi * 400)), rel=0.03)
    assert math.isnan(mean_abs_cosine(v[:1]))


def _tiny_problem():
    model = mlp([3, 4, 3], seed=0).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    return model, nn.functional.cross_entropy, x, y


def _exact_eigenvalues(model, loss_fn, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(flat):
        params = {n: c.view(s) for n, c, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return loss_fn(torch.func.functional_call(model, params, (x,)), y)

    h = torch.autograd.functional.hessian(loss_of, flat0)
    return torch.linalg.eigvalsh(h).flip(0)


def test_lanczos_top_eigenvalues_equal_exact_hessian():
    model, loss_fn, x, y = _tiny_problem()
    exact = _exact_eigenvalues(model, loss_fn, x, y)
    dim = len(exact)  # 31 parameters
    full = top_hessian_eigenvalues(model, loss_fn, x, y, steps=dim, generator=0)
    assert full.dimension == dim
    # distinct eigenvalues at a generic point: the top ones are recovered to float64 rounding
    torch.testing.assert_close(torch.tensor(full.eigenvalues[:8], dtype=torch.float64),
                               exact[:8], rtol=1e-9, atol=1e-11)
    for fraction in (0.01, 0.05, 0.2):
        brute = int((exact > fraction * exact[0]).sum())
        est = hessian_effective_dimension(full, fraction)
        assert est["count"] == brute and est["converged"] == 1.0 and est["saturated"] == 0.0
    # a few steps: the top Ritz value is already accurate, and never above the true top
    short = top_hessian_eigenvalues(model, loss_fn, x, y, steps=12, generator=1)
    assert short.steps == 12 and short.top <= float(exact[0]) + 1e-10
    assert short.top == pytest.approx(float(exact[0]), rel=1e-6)
    assert abs(short.top - float(exact[0])) <= short.residuals[0] + 1e-10


def test_lanczos_leaves_the_model_untouched_and_is_deterministic():
    model, loss_fn, x, y = _tiny_problem()
    before = [p.detach().clone() for p in model.parameters()]
    a = top_hessian_eigenvalues(model, loss_fn, x, y, steps=10, generator=5)
    b = top_hessian_eigenvalues(model, loss_fn, x, y, steps=10, generator=5)
    assert a == b
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_effective_dimension_flags_saturation_and_bad_input():
    spec = HessianSpectrum((5.0, 4.0, 3.0), (0.0, 0.0, 0.0), 3, 100, False)
    assert hessian_effective_dimension(spec, 0.01)["saturated"] == 1.0
    unconverged = HessianSpectrum((5.0, 4.0, 0.01), (0.0, 1.0, 0.0), 3, 100, False)
    est = hessian_effective_dimension(unconverged, 0.1)
    assert est["count"] == 2 and est["converged"] == 0.0 and est["saturated"] == 0.0
    assert math.isnan(hessian_effective_dimension(
        HessianSpectrum((-1.0,), (0.0,), 1, 1, True), 0.1)["count"])
    with pytest.raises(ValueError):
        hessian_effective_dimension(spec, 0.0)
    model, loss_fn, x, y = _tiny_problem()
    with pytest.raises(ValueError):
        top_hessian_eigenvalues(model, loss_fn, x, y, steps=0)
