"""Oracle tests of the sigmoid-staircase construction: brute force and closed forms."""

import math

import numpy as np
import pytest

from learnscope.measures.approximation import (
    TrigTarget,
    loglog_slope,
    nearest_knot,
    random_trig_target,
    sigmoid,
    sigmoid_staircase,
    staircase_centers,
)


def test_sigmoid_matches_logistic_and_never_overflows():
    z = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(sigmoid(z), 1 / (1 + np.exp(-z)), rtol=1e-12, atol=1e-15)
    assert sigmoid(np.array([-1e6]))[0] == 0.0 and sigmoid(np.array([1e6]))[0] == 1.0


def test_centers_are_midpoints():
    np.testing.assert_allclose(staircase_centers(4), [0.125, 0.375, 0.625, 0.875])
    with pytest.raises(ValueError):
        staircase_centers(0)


def test_staircase_is_a_sum_of_sigmoids_brute_force():
    values = np.array([0.3, -1.0, 2.0, 0.5])
    x = np.linspace(-0.2, 1.2, 37)
    k = 7.0
    brute = np.array([values[0] + sum((values[j + 1] - values[j])
                                      * (1 / (1 + math.exp(-k * (xi - (j + 0.5) / 3))))
                                      for j in range(3)) for xi in x])
    np.testing.assert_allclose(sigmoid_staircase(x, values, k), brute, rtol=1e-12, atol=1e-12)


def test_very_steep_staircase_is_the_nearest_knot_value():
    values = np.array([1.0, 4.0, -2.0, 0.0, 3.0])  # N = 4: steps at 1/8, 3/8, 5/8, 7/8
    x = np.array([0.0, 0.1, 0.2, 0.3, 0.45, 0.55, 0.7, 0.8, 0.95, 1.0])
    brute = np.array([values[round(xi * 4)] for xi in x])  # no x is at a step
    np.testing.assert_allclose(nearest_knot(x, values), brute)
    np.testing.assert_allclose(sigmoid_staircase(x, values, 1e6), brute, atol=1e-12)


def test_flat_staircase_is_the_average_of_the_ends():
    # k -> 0: every sigmoid is 1/2, so the sum telescopes to (v_0 + v_N) / 2.
    values = np.array([2.0, 9.0, -3.0, 6.0])
    np.testing.assert_allclose(sigmoid_staircase(np.linspace(0, 1, 5), values, 1e-12), 4.0)


def test_identity_target_sup_error_is_one_over_2n():
    # f(x) = x is 1-Lipschitz: the nearest-knot staircase misses by at most 1/(2N), and by
    # nearly that just before a step.
    for n in (3, 10, 40):
        x = np.linspace(0, 1, 20001)
        err = np.abs(sigmoid_staircase(x, np.arange(n + 1) / n, 1e4 * n) - x)
        assert err.max() <= 1 / (2 * n) + 1e-9
        assert err.max() >= 0.99 / (2 * n)


def test_loglog_slope_of_exact_power_laws():
    n = np.array([4.0, 8, 16, 32])
    assert loglog_slope(n, 3.0 / n) == pytest.approx(-1.0, abs=1e-12)
    assert loglog_slope(n, 0.5 * n ** -2) == pytest.approx(-2.0, abs=1e-12)
    assert loglog_slope(n, np.full(4, 0.1)) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(loglog_slope(n, np.array([0.0, 0.0, 0.0, 1.0])))


def test_trig_target_value_derivative_and_lipschitz():
    f = TrigTarget((2.0,), (0.0,))
    assert f(np.array([0.25]))[0] == pytest.approx(2.0)
    assert f.lipschitz() == pytest.approx(4 * math.pi, rel=1e-9)  # |a| 2 pi m
    g = TrigTarget((1.0, -0.5, 0.2), (0.3, 1.1, 2.0))
    x = np.linspace(0, 1, 200001)
    finite_diff = np.abs(np.diff(g(x)) / np.diff(x)).max()
    assert g.lipschitz() == pytest.approx(finite_diff, rel=1e-6)


def test_random_target_is_deterministic_and_has_the_stated_lipschitz_constant():
    a, b = random_trig_target(3, 4, 5.0), random_trig_target(3, 4, 5.0)
    assert a == b and a != random_trig_target(4, 4, 5.0)
    assert a.lipschitz() == pytest.approx(5.0, rel=1e-9)
    with pytest.raises(ValueError):
        random_trig_target(0, 0, 1.0)


def test_staircase_error_obeys_the_lipschitz_bound():
    target = random_trig_target(0, 3, 2 * math.pi)
    x = np.linspace(0, 1, 5001)
    for n in (5, 20, 80):
        err = np.abs(sigmoid_staircase(x, target(np.arange(n + 1) / n), 50 * n) - target(x))
        assert err.max() <= 2 * math.pi / (2 * n)
