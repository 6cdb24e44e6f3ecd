"""Oracle tests for SVCCA."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from learnscope.measures.svcca import SVCCAResult, svcca

torch.set_num_threads(1)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def classical_cca(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations from covariance matrices: svd(Sxx^-1/2 Sxy Syy^-1/2)."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)

    def inv_sqrt(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w**-0.5) @ v.T

    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    return np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), compute_uv=False)


def with_spectrum(n: int, fractions: list[float], rng: np.random.Generator) -> np.ndarray:
    """Centered n x d data whose singular directions explain exactly ``fractions`` of variance."""
    d = len(fractions)
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    u = u - u.mean(axis=0)  # keep orthogonal to the constant vector ...
    u, _ = np.linalg.qr(u)  # ... and orthonormal
    return u @ np.diag(np.sqrt(fractions)) @ _random_orthogonal(d, rng) + 7.0


def test_invertible_map_gives_correlation_one():
    rng = _rng(0)
    n, d = 500, 8
    x = rng.normal(size=(n, d))
    # Well conditioned (singular values 1 ... 2) but not a scaled rotation.
    a = _random_orthogonal(d, rng) @ np.diag(np.linspace(1.0, 2.0, d)) @ _random_orthogonal(d, rng)
    result = svcca(x, x @ a + 3.0)
    assert result.kept_dims == (d, d)
    assert result.mean_correlation == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(result.correlations.numpy(), np.ones(d), atol=1e-10)


def test_independent_gaussians_give_small_value():
    rng = _rng(1)
    n, d = 4000, 10
    result = svcca(rng.normal(size=(n, d)), rng.normal(size=(n, d)))
    # Spurious canonical correlations scale like sqrt(d / n) = 0.05.
    assert result.mean_correlation < 0.1
    assert float(result.correlations.max()) < 0.15


def test_matches_classical_cca_when_keeping_everything():
    rng = _rng(2)
    n = 300
    x = rng.normal(size=(n, 5))
    y = np.concatenate([x[:, :2] @ rng.normal(size=(2, 3)), rng.normal(size=(n, 4))], axis=1)
    y = y + 0.3 * rng.normal(size=y.shape)
    result = svcca(torch.from_numpy(x), torch.from_numpy(y), variance_threshold=1.0)
    assert result.kept_dims == (5, 7)
    expected = classical_cca(x, y)
    np.testing.assert_allclose(result.correlations.numpy(), expected, atol=1e-10)
    assert result.mean_correlation == pytest.approx(expected.mean(), abs=1e-10)
    # Two directions are shared (up to noise), the rest are not.
    assert expected[1] > 0.8 > 0.3 > expected[2]


def test_svcca_on_reduced_subspaces_matches_cca_of_projected_data():
    """With truncation, SVCCA == classical CCA between the top-k principal-component scores."""
    rng = _rng(3)
    n = 400
    x = rng.normal(size=(n, 6)) @ np.diag([5.0, 4.0, 3.0, 0.3, 0.2, 0.1])
    y = x[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(n, 4)) * [2.0, 1.5, 0.05, 0.05]
    result = svcca(x, y, variance_threshold=0.95)
    kx, ky = result.kept_dims
    assert kx == 3 and 1 <= ky < 4

    def scores(a: np.ndarray, k: int) -> np.ndarray:
        ac = a - a.mean(axis=0)
        u, s, _ = np.linalg.svd(ac, full_matrices=False)
        return u[:, :k] * s[:k]

    expected = classical_cca(scores(x, kx), scores(y, ky))
    np.testing.assert_allclose(result.correlations.numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("threshold,kept", [(0.4, 1), (0.7, 2), (0.9, 3), (0.99, 4), (1.0, 4)])
def test_variance_threshold_selects_directions(threshold, kept):
    rng = _rng(4)
    x = with_spectrum(200, [0.5, 0.3, 0.15, 0.05], rng)
    y = rng.normal(size=(200, 6))
    result = svcca(x, y, variance_threshold=threshold)
    assert result.kept_dims[0] == kept
    assert result.correlations.shape == (min(kept, result.kept_dims[1]),)
    assert result.variance_threshold == threshold


def test_exact_threshold_does_not_pull_in_extra_direction():
    x = with_spectrum(100, [0.5, 0.25, 0.25], _rng(5))
    assert svcca(x, x, variance_threshold=0.75).kept_dims == (2, 2)


def test_rank_deficient_input_keeps_only_real_directions():
    rng = _rng(6)
    base = rng.normal(size=(300, 3))
    x = np.concatenate([base, base @ rng.normal(size=(3, 5))], axis=1)  # rank 3 in 8 columns
    result = svcca(x, base, variance_threshold=1.0)
    assert result.kept_dims == (3, 3)
    assert result.mean_correlation == pytest.approx(1.0, abs=1e-10)


def test_symmetry_and_invariance():
    rng = _rng(7)
    x = rng.normal(size=(300, 6))
    y = np.tanh(x @ rng.normal(size=(6, 5))) + 0.5 * rng.normal(size=(300, 5))
    a = svcca(x, y, variance_threshold=1.0)
    b = svcca(y, x, variance_threshold=1.0)
    c = svcca(4.0 * x @ _random_orthogonal(6, rng) - 2.0, y, variance_threshold=1.0)
    np.testing.assert_allclose(a.correlations.numpy(), b.correlations.numpy(), atol=1e-10)
    np.testing.assert_allclose(a.correlations.numpy(), c.correlations.numpy(), atol=1e-10)
    assert 0.2 < a.mean_correlation < 0.99


def test_result_is_frozen_dataclass_with_float64_correlations():
    x = _rng(8).normal(size=(50, 3)).astype(np.float32)
    result = svcca(x, x.reshape(50, 3, 1))
    assert isinstance(result, SVCCAResult)
    assert isinstance(result.mean_correlation, float)
    assert result.correlations.dtype == torch.float64
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.mean_correlation = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), True, "0.9"])
def test_variance_threshold_out_of_range_raises(bad):
    x = _rng(9).normal(size=(20, 3))
    with pytest.raises(ValueError, match="variance_threshold"):
        svcca(x, x, variance_threshold=bad)


def test_mismatched_examples_raise():
    rng = _rng(10)
    with pytest.raises(ValueError, match="mismatched numbers of examples"):
        svcca(rng.normal(size=(20, 3)), rng.normal(size=(21, 3)))


def test_constant_activations_raise():
    x = _rng(11).normal(size=(20, 3))
    with pytest.raises(ValueError, match="constant activations"):
        svcca(x, np.full((20, 4), 2.5))
    with pytest.raises(ValueError, match="constant activations"):
        svcca(torch.zeros(20, 2), x)


def test_non_finite_raises():
    x = _rng(12).normal(size=(20, 3))
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        svcca(x, bad)
