"""Oracle tests for learnscope.measures.spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.measures.spectra import (
    distance_from_init,
    effective_rank,
    esd,
    marchenko_pastur_fit,
    power_law_alpha,
    stable_rank,
)

torch.set_num_threads(1)


def _gauss(n: int, m: int, seed: int, std: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return std * torch.randn(n, m, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- esd


def test_esd_convention_and_zeros_kept():
    w = _gauss(5, 8, 0)
    e = esd(w)
    assert e.shape == (8,)
    assert np.all(np.diff(e) >= 0)
    # exactly M - N = 3 structural zeros, non-zero part = eigenvalues of W W^T / N
    assert np.allclose(e[:3], 0.0, atol=1e-12)
    ref = np.sort(np.linalg.eigvalsh((w @ w.T / 5).numpy()))
    assert np.allclose(e[3:], ref)
    # tall matrix: eigenvalues of W^T W / N
    w2 = _gauss(8, 5, 1)
    ref2 = np.sort(np.linalg.eigvalsh((w2.T @ w2 / 8).numpy()))
    assert np.allclose(esd(w2), ref2)
    # mean eigenvalue = ||W||_F^2 / (N M)
    assert math.isclose(float(np.mean(e)), float((w**2).sum()) / 40, rel_tol=1e-12)


def test_esd_reshapes_conv_and_rejects_bad_input():
    k = _gauss(4, 18, 2).reshape(4, 2, 3, 3)
    assert esd(k).shape == (18,)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        esd(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        esd(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


@pytest.mark.parametrize(("n", "m"), [(2000, 1000), (1000, 2000)])
def test_marchenko_pastur_edges_of_gaussian(n, m):
    sigma = 0.7
    w = _gauss(n, m, 3, std=sigma)
    e = esd(w)
    q = m / n
    fit = marchenko_pastur_fit(e, q)
    assert fit.sigma2_method == "mean"
    assert fit.aspect_ratio == q
    assert fit.sigma2 == pytest.approx(sigma**2, rel=0.01)
    nonzero = e[e > 1e-9 * e.max()]
    assert nonzero.size == min(n, m)
    lam_minus = sigma**2 * (1 - math.sqrt(q)) ** 2
    lam_plus = sigma**2 * (1 + math.sqrt(q)) ** 2
    assert fit.lambda_plus == pytest.approx(lam_plus, rel=0.01)
    assert fit.lambda_minus == pytest.approx(lam_minus, rel=0.01)
    # the observed bulk fills [lambda_-, lambda_+] up to a few percent
    assert nonzero.max() == pytest.approx(fit.lambda_plus, rel=0.03)
    assert nonzero.min() == pytest.approx(fit.lambda_minus, rel=0.05)
    # with a Tracy-Widom-sized tolerance no spike is reported for pure noise
    assert marchenko_pastur_fit(e, q, edge_tolerance=0.03).n_spikes == 0


def test_marchenko_pastur_given_sigma2_and_errors():
    e = np.array([0.5, 1.0, 1.5, 10.0])
    fit = marchenko_pastur_fit(e, 0.25, sigma2=1.0)
    assert fit.sigma2_method == "given"
    assert fit.lambda_plus == pytest.approx(2.25)
    assert fit.lambda_minus == pytest.approx(0.25)
    assert fit.n_spikes == 1 and fit.spikes.tolist() == [10.0]
    with pytest.raises(ValueError, match="aspect_ratio"):
        marchenko_pastur_fit(e, 0.0)
    with pytest.raises(ValueError, match="sigma2"):
        marchenko_pastur_fit(e, 0.5, sigma2=-1.0)
    with pytest.raises(ValueError, match="sigma2"):
        marchenko_pastur_fit(np.zeros(4), 0.5)
    with pytest.raises(ValueError, match="empty"):
        marchenko_pastur_fit([], 0.5)


def test_spike_detected_for_rank_one_signal():
    n, m = 800, 400
    g = torch.Generator().manual_seed(4)
    u = torch.randn(n, 1, generator=g, dtype=torch.float64)
    v = torch.randn(1, m, generator=g, dtype=torch.float64)
    u, v = u / u.norm(), v / v.norm()
    signal = 5.0 * math.sqrt(n) * (u @ v)  # eigenvalue of W^T W / N ~ 25 >> lambda_+ ~ 2.9
    w = _gauss(n, m, 5) + signal
    fit = marchenko_pastur_fit(esd(w), m / n, edge_tolerance=0.03)
    assert fit.n_spikes == 1
    assert fit.spikes[0] > 5 * fit.lambda_plus
    assert fit.spikes[0] == pytest.approx(esd(w).max())


# --------------------------------------------------------------------------- ranks


def test_stable_rank_oracles():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(7, 1, generator=g, dtype=torch.float64)
    b = torch.randn(1, 5, generator=g, dtype=torch.float64)
    assert stable_rank(a @ b) == pytest.approx(1.0, rel=1e-10)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    assert stable_rank(q) == pytest.approx(6.0, rel=1e-10)
    assert stable_rank(np.diag([2.0, 1.0])) == pytest.approx(5.0 / 4.0)
    with pytest.raises(ValueError, match="all-zero"):
        stable_rank(torch.zeros(3, 3))


def test_effective_rank_oracles():
    assert effective_rank(torch.eye(7)) == pytest.approx(7.0, rel=1e-12)
    assert effective_rank(3.0 * torch.eye(4)) == pytest.approx(4.0, rel=1e-12)
    g = torch.Generator().manual_seed(7)
    a = torch.randn(5, 1, generator=g) @ torch.randn(1, 4, generator=g)
    assert effective_rank(a) == pytest.approx(1.0, abs=1e-4)
    # singular values (2, 1): p = (2/3, 1/3)
    p = np.array([2 / 3, 1 / 3])
    assert effective_rank(np.diag([2.0, 1.0])) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    with pytest.raises(ValueError, match="all-zero"):
        effective_rank(torch.zeros(2, 3))


# --------------------------------------------------------------------------- power law


def _pareto(alpha: float, xmin: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [2.0, 3.5])
def test_power_law_alpha_fixed_xmin(alpha):
    x = _pareto(alpha, 2.0, 20_000, seed=8)
    fit = power_law_alpha(x, xmin=2.0)
    assert fit.xmin_method == "fixed" and fit.min_tail is None
    assert fit.alpha == pytest.approx(alpha, rel=0.05)
    assert fit.n_tail == x.size
    assert fit.ks_distance < 0.02
    assert fit.alpha_stderr == pytest.approx((fit.alpha - 1) / math.sqrt(x.size))


def test_power_law_alpha_closed_form():
    x = np.array([1.0, math.e, math.e**2, 0.5])  # 0.5 is below xmin and ignored
    fit = power_law_alpha(x, xmin=1.0)
    assert fit.n_tail == 3
    assert fit.alpha == pytest.approx(1.0 + 3.0 / 3.0)


def test_power_law_alpha_auto_finds_tail():
    rng = np.random.default_rng(9)
    body = rng.uniform(0.0, 1.0, 1500)  # not a power law
    tail = _pareto(3.0, 1.0, 1500, seed=10)
    fit = power_law_alpha(np.concatenate([body, tail]))
    assert fit.xmin_method == "clauset_ks" and fit.min_tail == 10
    # the uniform body is excluded; KS minimisation may settle a little inside the tail
    assert 0.98 <= fit.xmin <= 2.0
    assert fit.n_tail >= 300
    assert fit.alpha == pytest.approx(3.0, rel=0.08)
    assert isinstance(fit.alpha, float)


def test_power_law_alpha_errors():
    with pytest.raises(ValueError, match="xmin"):
        power_law_alpha([1.0, 2.0], xmin=0.0)
    with pytest.raises(ValueError, match="xmin"):
        power_law_alpha([1.0, 2.0], xmin="clauset")
    with pytest.raises(ValueError, match="at least 2"):
        power_law_alpha([1.0, 2.0], xmin=1.5)
    with pytest.raises(ValueError, match="equal xmin"):
        power_law_alpha([1.0, 1.0, 1.0], xmin=1.0)
    with pytest.raises(ValueError, match="min_tail"):
        power_law_alpha(np.arange(1.0, 6.0))
    with pytest.raises(ValueError, match="NaN"):
        power_law_alpha([1.0, float("nan")], xmin=1.0)


# --------------------------------------------------------------------------- distance from init


def test_distance_from_init_values():
    init = {"w": torch.zeros(2, 2) + 0.5, "b": torch.zeros(3)}
    cur = {"w": torch.ones(2, 2), "b": torch.tensor([3.0, 4.0, 0.0])}
    d = distance_from_init(cur, init)
    assert d["abs/w"] == pytest.approx(1.0)
    assert d["rel/w"] == pytest.approx(1.0)
    assert d["abs/b"] == pytest.approx(5.0)
    assert d["rel/b"] == math.inf  # moved away from an all-zero init
    assert d["abs"] == pytest.approx(math.sqrt(26.0))
    assert d["rel"] == pytest.approx(math.sqrt(26.0) / 1.0)
    same = distance_from_init(init, init)
    assert same["rel/b"] == 0.0 and same["abs"] == 0.0


def test_distance_from_init_modules_unchanged():
    with torch.random.fork_rng():  # deterministic init without disturbing the global RNG
        torch.manual_seed(0)
        m0 = nn.Linear(3, 2)
        m1 = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in m1.state_dict().items()}
    d = distance_from_init(m1, m0)
    ref = float(((m1.weight - m0.weight).norm() / m0.weight.norm()).detach())
    assert d["rel/weight"] == pytest.approx(ref, rel=1e-6)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, before[k])


def test_distance_from_init_errors():
    with pytest.raises(ValueError, match="different tensors"):
        distance_from_init({"a": torch.ones(1)}, {"b": torch.ones(1)})
    with pytest.raises(ValueError, match="shape mismatch"):
        distance_from_init({"a": torch.ones(2)}, {"a": torch.ones(3)})
    with pytest.raises(ValueError, match="empty"):
        distance_from_init({}, {})
    with pytest.raises(ValueError, match="mapping"):
        distance_from_init([torch.ones(1)], {"a": torch.ones(1)})


@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (25, 25)])
def test_weight_spectrum_equals_separate_measures(shape):
    from learnscope.measures.spectra import (
        effective_rank,
        esd,
        stable_rank,
        weight_spectrum,
    )

    g = torch.Generator().manual_seed(3)
    w = torch.randn(shape, generator=g)
    ws = weight_spectrum(w)
    np.testing.assert_allclose(ws.eigenvalues, esd(w), rtol=1e-9, atol=1e-12)
    assert ws.stable_rank == pytest.approx(stable_rank(w), rel=1e-12)
    assert ws.effective_rank == pytest.approx(effective_rank(w), rel=1e-12)
    with pytest.raises(ValueError, match="all-zero"):
        weight_spectrum(torch.zeros(3, 3))
