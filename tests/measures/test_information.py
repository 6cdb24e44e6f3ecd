"""Oracle tests for learnscope.measures.information."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from learnscope.measures.information import (
    InformationPlanePoint,
    bin_activations,
    conditional_mutual_information_discrete,
    entropy_discrete,
    information_plane_binning,
    information_plane_kde,
    mutual_information_discrete,
)


def _samples_from_table(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples (a, b) whose empirical joint counts equal ``counts`` exactly."""
    a, b = [], []
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            a += [i] * int(counts[i, j])
            b += [j] * int(counts[i, j])
    return np.array(a), np.array(b)


def _h(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# --------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 10])
def test_entropy_uniform_is_log2_k(k):
    labels = np.repeat(np.arange(k), 7)
    assert entropy_discrete(labels) == pytest.approx(math.log2(k), abs=1e-12)


def test_entropy_ignores_label_values_and_counts_rows_as_symbols():
    assert entropy_discrete(np.array([7, -3, 7, -3])) == pytest.approx(1.0)
    rows = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 3)
    assert entropy_discrete(rows) == pytest.approx(2.0)
    # rows [0,1] and [1,0] are distinct symbols, not multisets
    assert entropy_discrete(np.array([[0, 1], [1, 0]])) == pytest.approx(1.0)


def test_entropy_known_nonuniform():
    labels = np.array([0] * 1 + [1] * 1 + [2] * 2)  # p = 1/4, 1/4, 1/2
    assert entropy_discrete(labels) == pytest.approx(1.5, abs=1e-12)


# --------------------------------------------------------------------------- MI


def test_mi_of_binary_symmetric_joint_matches_closed_form():
    # p(a,b) = [[3, 1], [1, 3]] / 8: uniform marginals, flip probability 1/4
    a, b = _samples_from_table(np.array([[3, 1], [1, 3]]))
    eps = 0.25
    expected = 1.0 + eps * math.log2(eps) + (1 - eps) * math.log2(1 - eps)  # 1 - H_b(eps)
    assert expected == pytest.approx(0.188721875540867, abs=1e-12)
    assert mutual_information_discrete(a, b) == pytest.approx(expected, abs=1e-12)


def test_mi_of_asymmetric_joint_matches_closed_form():
    counts = np.array([[1, 2, 0], [3, 4, 5]])
    a, b = _samples_from_table(counts)
    p = counts / counts.sum()
    expected = _h(p.sum(1)) + _h(p.sum(0)) - _h(p.ravel())
    assert mutual_information_discrete(a, b) == pytest.approx(expected, abs=1e-12)
    assert mutual_information_discrete(b, a) == pytest.approx(expected, abs=1e-12)


def test_mi_with_itself_is_entropy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=200)
    assert mutual_information_discrete(a, a) == pytest.approx(entropy_discrete(a), abs=1e-12)


def test_mi_of_product_grid_is_exactly_zero():
    a = np.repeat(np.arange(3), 4)
    b = np.tile(np.arange(4), 3)
    assert mutual_information_discrete(a, b) == pytest.approx(0.0, abs=1e-14)


def test_mi_of_a_bijection_is_entropy_and_2d_rows_work():
    a = np.arange(8) % 4
    b = np.stack([a // 2, a % 2], axis=1)  # 2-D code of the same symbol
    assert mutual_information_discrete(a, b) == pytest.approx(2.0, abs=1e-12)


# --------------------------------------------------------------------------- CMI


def _cmi_brute_force(a, b, c) -> float:
    n = len(a)
    pabc = Counter(zip(a, b, c, strict=True))
    pac = Counter(zip(a, c, strict=True))
    pbc = Counter(zip(b, c, strict=True))
    pc = Counter(c)
    total = 0.0
    for ai in set(a):
        for bi in set(b):
            for ci in set(c):
                nabc = pabc.get((ai, bi, ci), 0)
                if nabc == 0:
                    continue
                total += (nabc / n) * math.log2(
                    (pc[ci] / n) * (nabc / n) / ((pac[(ai, ci)] / n) * (pbc[(bi, ci)] / n))
                )
    return total


def test_cmi_matches_brute_force_triple_loop():
    rng = np.random.default_rng(1)
    c = rng.integers(0, 3, size=80)
    a = (c + rng.integers(0, 2, size=80)) % 4
    b = np.where(rng.random(80) < 0.7, a % 3, rng.integers(0, 3, size=80))
    got = conditional_mutual_information_discrete(a, b, c)
    expected = _cmi_brute_force(a.tolist(), b.tolist(), c.tolist())
    assert expected > 0.2  # the oracle is not trivially zero
    assert got == pytest.approx(expected, abs=1e-12)


def test_cmi_is_zero_when_a_is_a_function_of_c():
    rng = np.random.default_rng(2)
    c = rng.integers(0, 5, size=100)
    a = c % 2
    b = rng.integers(0, 3, size=100)
    assert conditional_mutual_information_discrete(a, b, c) == pytest.approx(0.0, abs=1e-14)


def test_cmi_with_constant_condition_is_mi():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, size=60)
    b = (a + rng.integers(0, 2, size=60)) % 4
    c = np.zeros(60, dtype=int)
    assert conditional_mutual_information_discrete(a, b, c) == pytest.approx(
        mutual_information_discrete(a, b), abs=1e-12
    )


def test_cmi_xor_is_one_bit():
    # A, C independent fair bits, B = A xor C: I(A;B) = 0 but I(A;B|C) = 1
    a = np.array([0, 0, 1, 1])
    c = np.array([0, 1, 0, 1])
    b = a ^ c
    assert mutual_information_discrete(a, b) == pytest.approx(0.0, abs=1e-14)
    assert conditional_mutual_information_discrete(a, b, c) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- binning


def test_bin_activations_fixed_range_codes_and_clipping():
    t = np.array([-5.0, -1.0, -0.99, 0.0, 0.5, 0.999, 1.0, 5.0])
    codes = bin_activations(t, bins=4, value_range=(-1.0, 1.0))
    assert codes.tolist() == [0, 0, 0, 2, 3, 3, 3, 3]
    assert codes.dtype.kind == "i"
    assert codes.shape == t.shape


def test_bin_activations_keeps_shape_of_a_layer():
    t = np.linspace(-1, 1, 12).reshape(4, 3)
    assert bin_activations(t, bins=30, value_range=(-1, 1)).shape == (4, 3)


def test_bin_size_and_bins_give_identical_codes_when_equivalent():
    rng = np.random.default_rng(4)
    t = rng.uniform(-1.2, 1.2, size=(50, 7))
    by_count = bin_activations(t, bins=20, value_range=(-1.0, 1.0))
    by_size = bin_activations(t, bins=None, bin_size=0.1, value_range=(-1.0, 1.0))
    np.testing.assert_array_equal(by_count, by_size)
    assert by_count.min() == 0 and by_count.max() == 19


def test_bins_without_range_use_data_min_max_and_record_it():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(40, 3))
    lo, hi = float(t.min()), float(t.max())
    np.testing.assert_array_equal(
        bin_activations(t, bins=10), bin_activations(t, bins=10, value_range=(lo, hi))
    )
    point = information_plane_binning(t, np.arange(40), np.arange(40) % 2, bins=10)
    assert point.params["value_range"] == (lo, hi)
    assert point.params["value_range_source"] == "data"
    assert point.params["bins"] == 10 and point.params["bin_size"] is None


def test_bin_size_without_range_is_anchored_at_zero():
    codes = bin_activations(np.array([-0.25, -0.1, 0.0, 0.49, 0.5, 1.7]), bins=None, bin_size=0.5)
    assert codes.tolist() == [-1, -1, 0, 0, 1, 3]


def test_binning_all_values_in_one_bin_gives_zero_information():
    # tanh-like layer whose values all fall in the bin [0, 1/15) of 30 bins on [-1, 1]
    rng = np.random.default_rng(6)
    t = np.tanh(rng.uniform(0.001, 0.06, size=(64, 5)))
    y = np.arange(64) % 2
    point = information_plane_binning(t, np.arange(64), y, bins=30, value_range=(-1, 1))
    assert point.i_xt == pytest.approx(0.0, abs=1e-14)
    assert point.i_ty == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_binning_k_equal_groups_gives_log2_k(k):
    # k groups of 6 inputs each, each group in its own bin (centres of bins 0, 4, 8, ...)
    width = 2.0 / 30
    centres = -1.0 + width * (4 * np.arange(k) + 0.5)
    rng = np.random.default_rng(k)
    group = np.repeat(np.arange(k), 6)
    t = np.tanh(np.arctanh(centres[group]))[:, None] + rng.uniform(-0.3, 0.3, (6 * k, 1)) * width
    t = np.hstack([t, t])  # two units, identical: still k symbols
    x_ids = np.arange(6 * k)
    point = information_plane_binning(t, x_ids, group, bins=30, value_range=(-1, 1))
    assert point.i_xt == pytest.approx(math.log2(k), abs=1e-12)
    assert point.i_ty == pytest.approx(math.log2(k), abs=1e-12)
    # labels independent of the groups (product grid) carry no information
    y_indep = np.tile(np.arange(2), 3 * k)
    point = information_plane_binning(t, x_ids, y_indep, bins=30, value_range=(-1, 1))
    assert point.i_ty == pytest.approx(0.0, abs=1e-12)


def test_binning_i_xt_equals_entropy_of_binned_layer_for_distinct_inputs():
    rng = np.random.default_rng(7)
    t = np.tanh(rng.normal(size=(100, 3)))
    codes = bin_activations(t, bins=5, value_range=(-1, 1))
    point = information_plane_binning(
        t, np.arange(100), rng.integers(0, 3, 100), bins=5, value_range=(-1, 1)
    )
    assert point.i_xt == pytest.approx(entropy_discrete(codes), abs=1e-12)
    assert 0 < point.i_xt < math.log2(100)


def test_binning_records_estimator_and_params():
    point = information_plane_binning(
        np.zeros((4, 2)),
        np.arange(4),
        [0, 1, 0, 1],
        bins=None,
        bin_size=0.5,
        value_range=(-1, 1),
    )
    assert isinstance(point, InformationPlanePoint)
    assert point.estimator == "binning"
    assert point.params["bin_size"] == 0.5 and point.params["bins"] is None
    assert point.params["value_range"] == (-1.0, 1.0)
    assert point.params["n"] == 4
    with pytest.raises(AttributeError):
        point.i_xt = 1.0  # frozen


# --------------------------------------------------------------------------- KDE bound


def _kde_bound_loop(t: np.ndarray, s2: float) -> float:
    n = len(t)
    total = 0.0
    for i in range(n):
        inner = sum(math.exp(-float(((t[i] - t[j]) ** 2).sum()) / (2 * s2)) for j in range(n))
        total += math.log(inner / n)
    return -total / n / math.log(2)


def test_kde_matches_loop_formula():
    rng = np.random.default_rng(8)
    t = rng.normal(size=(25, 3))
    y = rng.integers(0, 3, size=25)
    point = information_plane_kde(t, y, noise_variance=0.5)
    expected_xt = _kde_bound_loop(t, 0.5)
    expected_cond = sum((y == c).mean() * _kde_bound_loop(t[y == c], 0.5) for c in np.unique(y))
    assert point.i_xt == pytest.approx(expected_xt, abs=1e-10)
    assert point.i_ty == pytest.approx(expected_xt - expected_cond, abs=1e-10)


def test_kde_identical_points_give_zero():
    t = np.full((10, 4), 0.3)
    point = information_plane_kde(t, np.arange(10) % 3, noise_variance=0.1)
    assert point.i_xt == pytest.approx(0.0, abs=1e-12)
    assert point.i_ty == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_kde_far_apart_points_give_log2_n(n):
    t = np.stack([np.arange(n) * 1000.0, np.arange(n) * -500.0], axis=1)
    y = np.arange(n) % 2
    point = information_plane_kde(t, y, noise_variance=1.0)
    assert point.i_xt == pytest.approx(math.log2(n), abs=1e-6)
    # within-class points are far apart too: I(T;Y) = log2 n - sum_y p(y) log2 n_y = H(Y)
    assert point.i_ty == pytest.approx(entropy_discrete(y), abs=1e-6)


def test_kde_well_separated_classes_give_h_y():
    rng = np.random.default_rng(9)
    sizes = [2, 3, 5]
    y = np.repeat(np.arange(3), sizes)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    t = centres[y] + rng.normal(scale=1e-4, size=(10, 2))  # tight clusters
    point = information_plane_kde(t, y, noise_variance=1.0)
    h_y = _h(np.array(sizes) / 10)
    assert point.i_ty == pytest.approx(h_y, abs=1e-6)
    assert point.i_xt == pytest.approx(h_y, abs=1e-6)


def test_kde_bound_decreases_as_noise_variance_grows():
    rng = np.random.default_rng(10)
    t = rng.normal(size=(40, 3))
    y = rng.integers(0, 2, size=40)
    values = [information_plane_kde(t, y, noise_variance=s2).i_xt for s2 in np.logspace(-3, 2, 8)]
    assert all(b < a for a, b in zip(values, values[1:], strict=False))
    assert values[0] <= math.log2(40) + 1e-9


def test_kde_accepts_1d_and_records_params():
    point = information_plane_kde(np.array([0.0, 100.0]), [0, 1], noise_variance=2.0)
    assert point.estimator == "kde_pairwise_kl"
    assert point.params["noise_variance"] == 2.0
    assert point.params["dim"] == 1 and point.params["n"] == 2
    assert point.i_xt == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: entropy_discrete([]), "empty"),
        (lambda: entropy_discrete([0.5, 1.5]), "integer"),
        (lambda: mutual_information_discrete([0, 1], [0, 1, 2]), "length mismatch"),
        (lambda: conditional_mutual_information_discrete([0, 1], [0, 1], [0]), "length mismatch"),
        (lambda: bin_activations([], bins=3), "empty"),
        (lambda: bin_activations([0.1], bins=0), "bins must be >= 1"),
        (lambda: bin_activations([0.1], bins=3, bin_size=0.1), "exactly one"),
        (lambda: bin_activations([0.1], bins=None), "exactly one"),
        (lambda: bin_activations([0.1], bins=None, bin_size=0.0), "bin_size"),
        (lambda: bin_activations([0.1], bins=3, value_range=(1.0, 1.0)), "lo < hi"),
        (lambda: bin_activations([0.1], bins=3, value_range=(2.0, -1.0)), "lo < hi"),
        (lambda: bin_activations([np.nan], bins=3), "NaN"),
        (lambda: information_plane_binning([[0.1]], [0, 1], [0, 1]), "length mismatch"),
        (lambda: information_plane_binning([[0.1], [0.2]], [0, 1], [0]), "length mismatch"),
        (lambda: information_plane_kde([[0.0]], [0], noise_variance=0.0), "noise_variance"),
        (lambda: information_plane_kde([[0.0]], [0], noise_variance=-1.0), "noise_variance"),
        (lambda: information_plane_kde([[0.0], [1.0]], [0], noise_variance=1.0), "length"),
        (lambda: information_plane_kde(np.zeros((0, 2)), [], noise_variance=1.0), "empty"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
