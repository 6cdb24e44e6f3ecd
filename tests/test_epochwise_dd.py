"""Epoch-wise double descent: closed-form gradient descent, the two-scale teacher, the bump
statistic, and the calibrated effect with its one-time-scale control."""

import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from learnscope.models.regression import gd_least_squares_path, min_norm_fit
from learnscope.studies.double_descent_epochwise import (
    DEFAULT_SETUP,
    epochwise_bump,
    epochwise_curves,
    epochwise_summary,
    log_steps,
    shows_epochwise_double_descent,
    two_scale_teacher,
)


def _iterative_gd(f, y, lr, steps):
    """Plain full-batch gradient descent from zero, recorded at the requested steps."""
    a = np.zeros(f.shape[1])
    out, wanted = [], set(steps.tolist())
    for t in range(int(steps.max()) + 1):
        if t in wanted:
            out.append(a.copy())
        a = a - lr * f.T @ (f @ a - y) / f.shape[0]
    return np.array(out)


@pytest.mark.parametrize("shape, lr_times_max", [((12, 5), 0.9), ((5, 12), 0.9),
                                                  ((12, 5), 1.7), ((8, 8), 0.01)])
def test_closed_form_gd_matches_iterative_gd(shape, lr_times_max):
    rng = np.random.default_rng(0)
    # Columns at different scales: slow and fast directions, as in the two-scale problem.
    f = rng.standard_normal(shape) * np.logspace(0, -1.5, shape[1])
    y = rng.standard_normal(shape[0])
    lr = lr_times_max / (np.linalg.norm(f, 2) ** 2 / shape[0])
    steps = np.array([0, 1, 2, 3, 7, 30, 150])
    expected = _iterative_gd(f, y, lr, steps)
    got = gd_least_squares_path(f, y, lr, steps)
    assert got.shape == (len(steps), shape[1])
    assert np.allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.all(got[0] == 0.0)


def test_closed_form_gd_tends_to_min_norm_fit_and_diverges_past_two():
    rng = np.random.default_rng(1)
    f, y = rng.standard_normal((6, 15)), rng.standard_normal(6)
    s_max = np.linalg.norm(f, 2) ** 2 / 6
    late = gd_least_squares_path(f, y, 1.0 / s_max, np.array([10**9]))[0]
    assert np.allclose(late, min_norm_fit(f, y), atol=1e-9)
    # lr * s_max > 2: the same closed form follows the iterates as they blow up.
    steps = np.array([0, 10, 40])
    diverging = gd_least_squares_path(f, y, 2.2 / s_max, steps)
    assert np.allclose(diverging, _iterative_gd(f, y, 2.2 / s_max, steps), rtol=1e-8)
    assert np.linalg.norm(diverging[2]) > 50 * np.linalg.norm(diverging[1])  # ~1.2^30


def test_closed_form_gd_rejects_bad_input():
    f, y = np.eye(3), np.ones(3)
    with pytest.raises(ValueError):
        gd_least_squares_path(f, y, 0.1, np.array([1.5]))
    with pytest.raises(ValueError):
        gd_least_squares_path(f, y, -0.1, np.array([1]))


def _global_states():
    return np.random.get_state()[1].copy()


def test_two_scale_teacher_is_deterministic_and_exact():
    before = _global_states()
    a = two_scale_teacher(50, 6, 3, 100.0, 0.5, 0.7, 0.2, seed=3)
    b = two_scale_teacher(50, 6, 3, 100.0, 0.5, 0.7, 0.2, seed=3)
    c = two_scale_teacher(50, 6, 3, 100.0, 0.5, 0.7, 0.2, seed=4)
    assert np.array_equal(_global_states(), before)
    for field in ("x_train", "y_train", "theta", "feature_var"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)
    # Each block carries exactly its signal: theta_block^T Sigma_block theta_block.
    signal = a.theta**2 * a.feature_var
    assert math.isclose(signal[:6].sum(), 0.7) and math.isclose(signal[6:].sum(), 0.2)
    assert np.allclose(a.feature_var, [1.0] * 6 + [0.01] * 3)
    # Without noise the targets are exactly the teacher's outputs.
    clean = two_scale_teacher(50, 6, 3, 100.0, 0.0, 0.7, 0.2, seed=3)
    assert np.allclose(clean.y_train, clean.x_train @ clean.theta)
    # The control is the same draw with the slow block at the fast scale: same function.
    same = two_scale_teacher(50, 6, 3, 100.0, 0.5, 0.7, 0.2, seed=3, equal_scales=True)
    assert np.allclose(same.x_train[:, 6:], a.x_train[:, 6:] * 10.0)
    assert np.allclose(same.x_train @ same.theta, a.x_train @ a.theta)
    assert np.array_equal(same.y_train, a.y_train)


def test_curves_start_at_the_zero_predictor_and_end_at_least_squares():
    kw = {"n_train": 60, "dim_fast": 10, "dim_slow": 3, "scale_ratio": 20.0,
          "noise_sd": 0.5, "signal_fast": 0.4, "signal_slow": 0.9, "lr": 0.1}
    out = epochwise_curves(2, steps=np.array([0, 1, 10**9]), **kw)
    data = two_scale_teacher(60, 10, 3, 20.0, 0.5, 0.4, 0.9, seed=2)
    assert math.isclose(out["test_mse"][0], 0.4 + 0.9)
    assert math.isclose(out["train_mse"][0], float(np.mean(data.y_train**2)))
    ols = np.linalg.lstsq(data.x_train, data.y_train, rcond=None)[0]
    # Excess risk of least squares, by brute force on a large fresh test set.
    x_test = np.random.default_rng(9).standard_normal((400_000, 13)) * np.sqrt(data.feature_var)
    brute = float(np.mean((x_test @ (ols - data.theta)) ** 2))
    assert math.isclose(out["test_mse"][-1], brute, rel_tol=0.02)
    assert math.isclose(out["train_mse"][-1], float(np.mean((data.x_train @ ols - data.y_train)
                                                            ** 2)), rel_tol=1e-9)
    assert float(out["t_fast"]) == pytest.approx(10.0)
    assert float(out["t_slow"]) == pytest.approx(200.0)
    assert float(out["t_fast_block_fit"]) == pytest.approx(10 / (1 - math.sqrt(10 / 60)) ** 2)


def test_log_steps():
    steps = log_steps()
    assert steps[0] == 1 and steps[-1] == 1_000_000
    assert np.all(np.diff(steps) > 0) and 80 <= len(steps) <= 97
    # Evenly spaced in log time once rounding no longer merges steps.
    assert np.allclose(np.diff(np.log10(steps[steps > 100])), 1 / 16, atol=0.01)


STEPS = np.arange(1, 9)


def test_bump_statistics_on_a_hand_made_curve():
    curve = np.array([4.0, 3.0, 2.0, 3.0, 5.0, 3.0, 1.0, 1.5])
    s = epochwise_bump(STEPS, curve)
    assert (s["first_min"], s["first_min_step"]) == (2.0, 3.0)
    assert (s["peak"], s["peak_step"]) == (5.0, 5.0)
    assert (s["later_min"], s["later_min_step"]) == (1.0, 7.0)
    assert s["half_fall_step"] == 6.0  # first value <= (5 + 1) / 2 after the peak
    assert s["initial_drop"] == pytest.approx(0.5)
    assert s["rise"] == pytest.approx(1.5)
    assert s["fall"] == pytest.approx(0.8)
    assert s["prominence"] == pytest.approx(3.0)
    assert s["later_min_over_first_min"] == pytest.approx(0.5)
    assert (s["start"], s["final"]) == (4.0, 1.5)
    assert shows_epochwise_double_descent(s)
    assert not shows_epochwise_double_descent(s, min_rise=2.0)


def test_bump_picks_the_most_prominent_peak_not_a_wiggle():
    curve = np.array([4.0, 3.0, 3.01, 2.9, 2.0, 6.0, 1.0, 1.0])
    s = epochwise_bump(STEPS, curve)
    assert s["peak_step"] == 6.0 and s["first_min"] == 2.0


@pytest.mark.parametrize("curve", [
    np.linspace(5.0, 1.0, 8),                                   # monotone descent
    np.linspace(1.0, 5.0, 8),                                   # monotone rise
    np.array([4.0, 2.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]),          # one U to a plateau
    np.array([4.0, 2.0, 1.0, 2.0, 3.0, 3.0 + 1e-12, 3.0, 3.0]),  # ... with rounding noise
])
def test_curves_without_a_second_descent_have_no_bump(curve):
    s = epochwise_bump(STEPS, curve)
    assert s["rise"] == 0.0 and s["fall"] == 0.0 and s["prominence"] == 0.0
    assert math.isnan(s["peak_step"]) and s["first_min"] == curve.min()
    assert not shows_epochwise_double_descent(s)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bump_of_a_non_finite_curve_is_nan_and_fails_the_claim(bad):
    curve = np.array([4.0, 3.0, 2.0, 3.0, 5.0, bad, 1.0, 1.5])
    s = epochwise_bump(STEPS, curve)
    assert all(math.isnan(v) for v in s.values())
    assert not shows_epochwise_double_descent(s)


def test_bump_rejects_malformed_input():
    with pytest.raises(ValueError):
        epochwise_bump(STEPS, np.ones(7))
    with pytest.raises(ValueError):
        epochwise_bump(STEPS[::-1], np.ones(8))


def test_summary_counts_seeds_and_uses_the_median_curve():
    bump = np.array([4.0, 3.0, 2.0, 3.0, 5.0, 3.0, 1.0, 1.5])
    flat = np.linspace(5.0, 1.0, 8)
    out = epochwise_summary(STEPS, np.stack([bump, bump, flat]))
    assert out["seeds"] == 3 and out["seeds_with_bump"] == 2
    assert out["median_curve_shows_bump"] == 1.0 and out["median_peak_step"] == 5.0
    assert out["min_rise"] == 0.0 and out["max_rise"] == pytest.approx(1.5)


def test_default_setup_shows_epochwise_double_descent_and_the_control_does_not():
    """Three seeds of the calibrated setup (about 0.1 s a curve)."""
    setup = dict(DEFAULT_SETUP)
    with threadpool_limits(1):
        runs = [epochwise_curves(seed, **setup) for seed in range(3)]
        control = [epochwise_curves(seed, **setup, equal_scales=True) for seed in range(3)]
    steps = runs[0]["steps"]
    found = epochwise_summary(steps, np.array([r["test_mse"] for r in runs]))
    assert found["seeds_with_bump"] == 3 and found["median_curve_shows_bump"] == 1.0
    assert found["min_rise"] > 0.3 and found["min_fall"] > 0.3
    t_fit, t_slow = float(runs[0]["t_fast_block_fit"]), float(runs[0]["t_slow"])
    # The peak: once the fast block has fitted the noise; the second descent: on the slow
    # time scale.
    assert 0.5 * t_fit <= found["median_peak_step"] <= 4 * t_fit
    assert 0.2 * t_slow <= found["median_half_fall_step"] <= 10 * t_slow
    assert float(runs[0]["lr_times_max_eig"]) < 1.0
    # One time scale: the same data and end point, a single U (no second descent).
    ctrl = epochwise_summary(steps, np.array([r["test_mse"] for r in control]))
    assert ctrl["seeds_with_bump"] == 0 and ctrl["median_curve_shows_bump"] == 0.0
    assert ctrl["max_fall"] == 0.0
    assert np.allclose([r["test_mse"][-1] for r in control], [r["test_mse"][-1] for r in runs])
