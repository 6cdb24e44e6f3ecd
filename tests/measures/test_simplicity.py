"""Oracle tests for learnscope.measures.simplicity (Nakkiran et al. 2019)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learnscope.measures.information import (
    conditional_mutual_information_discrete,
    mutual_information_discrete,
)
from learnscope.measures.simplicity import SimplicityPoint, agreement, simplicity_measures


def test_agreement_counts_equal_predictions():
    assert agreement([0, 1, 2, 3], [0, 1, 0, 0]) == pytest.approx(0.5)
    assert agreement(np.array([1, 1, 1]), np.array([1, 1, 1])) == 1.0
    assert agreement([0, 1], [1, 0]) == 0.0
    assert agreement([[0, 1], [1, 1]], [[0, 1], [1, 0]]) == pytest.approx(0.5)


def test_f_equal_l_has_no_unexplained_information():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=120)
    f = np.where(rng.random(120) < 0.7, y, rng.integers(0, 4, size=120))
    point = simplicity_measures(f, f.copy(), y)
    assert point.i_fy_given_l == pytest.approx(0.0, abs=1e-14)
    assert point.linear_part == pytest.approx(point.i_ly, abs=1e-12)
    assert point.i_ly == pytest.approx(mutual_information_discrete(f, y), abs=1e-12)
    assert point.i_fy > 0.1
    assert point.agreement == 1.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_f_independent_of_l_product_grid(k):
    f = np.repeat(np.arange(k), k)
    ll = np.tile(np.arange(k), k)
    point = simplicity_measures(f, ll, f)  # y = f
    assert point.agreement == pytest.approx(1.0 / k, abs=1e-12)
    assert point.i_fy == pytest.approx(math.log2(k), abs=1e-12)
    assert point.i_ly == pytest.approx(0.0, abs=1e-14)
    assert point.i_fy_given_l == pytest.approx(math.log2(k), abs=1e-12)
    assert point.linear_part == pytest.approx(0.0, abs=1e-12)


def test_values_are_consistent_with_information_functions():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=90)
    ll = np.where(rng.random(90) < 0.6, y, rng.integers(0, 3, size=90))
    f = np.where(rng.random(90) < 0.8, y, ll)
    point = simplicity_measures(f, ll, y)
    assert isinstance(point, SimplicityPoint)
    assert point.i_fy == pytest.approx(mutual_information_discrete(f, y), abs=1e-12)
    assert point.i_fy_given_l == pytest.approx(
        conditional_mutual_information_discrete(f, y, ll), abs=1e-12
    )
    assert point.linear_part == pytest.approx(point.i_fy - point.i_fy_given_l, abs=1e-12)
    assert point.agreement == pytest.approx(float(np.mean(f == ll)))
    assert point.estimator == "plugin"
    assert point.params == {"n": 90, "units": "bits"}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: agreement([0, 1], [0]), "length mismatch"),
        (lambda: agreement([], []), "empty"),
        (lambda: simplicity_measures([0, 1], [0, 1], [0]), "length mismatch"),
        (lambda: simplicity_measures([0, 1], [0], [0, 1]), "length mismatch"),
        (lambda: simplicity_measures([], [], []), "empty"),
        (lambda: simplicity_measures([0.2, 0.5], [0, 1], [0, 1]), "integer"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
