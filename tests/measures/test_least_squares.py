"""Oracle tests for learnscope.measures.least_squares (brute force and closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from learnscope.measures.least_squares import (
    condition_number,
    gd_least_squares,
    ks_distance_to_mp,
    mp_cdf,
    mp_density,
    mp_edges,
    null_space_part,
    projection_solution,
)
from learnscope.seeding import numpy_rng


def _problem(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = numpy_rng(seed, "test-least-squares")
    return rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d)


def test_projection_solution_by_hand():
    # X = [1 1]: row space span(1, 1); from w0 = (1, 0) to reach y = 3 add (1, 1) * (3 - 1) / 2.
    x, y, w0 = np.array([[1.0, 1.0]]), np.array([3.0]), np.array([1.0, 0.0])
    assert np.allclose(projection_solution(x, y, w0), [2.0, 1.0])
    assert np.allclose(null_space_part(x, w0), [0.5, -0.5])


def test_projection_is_closest_interpolant_to_w0():
    """Brute force: among interpolants w = w_p + N c the formula minimises ||w - w0||."""
    x, y, w0 = _problem(3, 6)
    w = projection_solution(x, y, w0)
    assert np.allclose(x @ w, y)
    _, _, vt = np.linalg.svd(x)
    null = vt[3:].T
    rng = numpy_rng(1, "test-least-squares")
    for c in rng.standard_normal((200, 3)):
        other = w + null @ c
        assert np.allclose(x @ other, y)
        assert np.linalg.norm(other - w0) >= np.linalg.norm(w - w0)


def test_gd_reaches_pinv_from_zero_and_projection_from_w0():
    x, y, w0 = _problem(5, 12)
    lr = 1.0 / (np.linalg.norm(x, 2) ** 2 / 5)
    assert np.allclose(gd_least_squares(x, y, np.zeros(12), lr, 5000), np.linalg.pinv(x) @ y,
                       atol=1e-9)
    w = gd_least_squares(x, y, w0, lr, 5000)
    assert np.allclose(w, np.linalg.pinv(x) @ y + null_space_part(x, w0), atol=1e-9)
    assert np.allclose(null_space_part(x, w), null_space_part(x, w0), atol=1e-12)


def test_gd_one_step_by_hand():
    x, y = np.array([[2.0, 0.0]]), np.array([4.0])
    # gradient at 0: X^T (X 0 - y) / 1 = (-8, 0); w = 0.1 * (8, 0)
    assert np.allclose(gd_least_squares(x, y, np.zeros(2), 0.1, 1), [0.8, 0.0])
    with pytest.raises(ValueError):
        gd_least_squares(x, y, np.zeros(2), -1.0, 1)


def test_condition_number_of_diagonal():
    assert condition_number(np.diag([3.0, 1.0])) == pytest.approx(9.0)
    assert condition_number(np.array([[1.0, 0.0], [0.0, 0.0]])) == math.inf
    # wide: only the n non-zero eigenvalues count
    assert condition_number(np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])) == pytest.approx(4.0)


@pytest.mark.parametrize("q", [0.25, 0.5, 1.0, 2.0, 4.0])
def test_mp_density_moments(q):
    """Mass min(1, 1/q); first moment 1 = E x^2; second moment 1 + q (moments of the law)."""
    a, b = mp_edges(q)

    def moment(k: int) -> float:
        return quad(lambda t: t**k * float(mp_density(np.array([t]), q)[0]), a, b,
                    limit=200)[0]

    assert moment(0) == pytest.approx(min(1.0, 1.0 / q), abs=1e-6)
    assert moment(1) == pytest.approx(1.0, abs=1e-6)
    assert moment(2) == pytest.approx(1.0 + q, abs=1e-6)


def test_mp_cdf_against_quadrature():
    q = 0.3
    a, b = mp_edges(q)
    for t in (a + 0.1, 1.0, b - 0.2):
        exact = quad(lambda s: float(mp_density(np.array([s]), q)[0]), a, t)[0]
        assert float(mp_cdf(np.array([t]), q)[0]) == pytest.approx(exact, abs=1e-6)
    assert mp_cdf(np.array([a - 1, b + 1]), q).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("n, d", [(800, 200), (200, 800)])
def test_ks_small_for_gaussian_and_large_for_wrong_law(n, d):
    x, _, _ = _problem(n, d)
    eigs = np.linalg.eigvalsh(x.T @ x / n)
    nonzero = eigs[-min(n, d):]
    assert ks_distance_to_mp(nonzero, d / n) < 0.03
    assert ks_distance_to_mp(nonzero, 2 * d / n) > 0.1


def test_ks_of_one_point_by_hand():
    # one eigenvalue at 1, q = 1: the distance is max(F(1), 1 - F(1)) with the closed form
    # F(1) = 1/3 + sqrt(3) / (2 pi) (integrate sqrt((4 - x) x) / (2 pi x) from 0 to 1)
    f1 = 1.0 / 3.0 + math.sqrt(3.0) / (2.0 * math.pi)
    assert ks_distance_to_mp(np.array([1.0]), 1.0) == pytest.approx(f1, abs=1e-6)
