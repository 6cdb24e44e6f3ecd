"""Oracle tests for the all-pairs CKA routes (feature space and Gram strips) and their choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import learnscope.measures.cka as cka_module
from learnscope.measures.cka import (
    MinibatchCKA,
    _allpairs_hsic,
    _allpairs_macs,
    _allpairs_route,
    _centered_gram,
    _centered_layers,
    cka_matrix,
)

torch.set_num_threads(1)

BOTH = pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
ROUTES = pytest.mark.parametrize("method", ["features", "gram", "auto"])
# (n, widths): every layer narrower than n, wider than n, exactly n, and mixed.
CASES = pytest.mark.parametrize(
    "n,widths",
    [(50, [3, 7, 5]), (9, [20, 13, 30]), (16, [16, 16]), (21, [2, 40, 21, 1])],
    ids=["d<n", "d>n", "d=n", "mixed"],
)


def _layers(n: int, widths: list[int], seed: int) -> list[np.ndarray]:
    """Related layers: each a noisy nonlinear map of the previous one, with nonzero means."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, widths[0]))
    out = []
    for d in widths:
        h = np.tanh(h @ rng.normal(size=(h.shape[1], d))) + 0.3 * rng.normal(size=(n, d)) + 2.0
        out.append(h)
    return out


def gram_form_hsic(x: np.ndarray, y: np.ndarray, unbiased: bool) -> float:
    """HSIC straight from the definitions, with n x n Grams, in extended precision.

    Biased: tr(K H L H) / (n-1)^2. Unbiased: Song et al. 2012, eq. 5, on the Grams with zeroed
    diagonals, written with explicit ones vectors. Both are invariant to shifting a feature, so
    the data are first centered in long double: on the raw data (means of 2) the unbiased
    formula cancels ~1e-12 of float64 away, more than the library's own error.
    """
    n = x.shape[0]
    x = x.astype(np.longdouble) - x.astype(np.longdouble).mean(axis=0)
    y = y.astype(np.longdouble) - y.astype(np.longdouble).mean(axis=0)
    k, l_ = x @ x.T, y @ y.T
    if not unbiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(n)
    value = (
        np.trace(k @ l_)
        + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l_ @ one)
    )
    return float(value) / (n * (n - 3))


def gram_form_cka(layers: list[np.ndarray], unbiased: bool) -> np.ndarray:
    """The pairwise Gram-form CKA matrix, one pair at a time."""
    h = [[gram_form_hsic(a, b, unbiased) for b in layers] for a in layers]
    return np.array(
        [[h[i][j] / math.sqrt(h[i][i] * h[j][j]) for j in range(len(layers))]
         for i in range(len(layers))]
    )


@BOTH
@ROUTES
@CASES
def test_cka_matrix_equals_pairwise_gram_form(n, widths, method, unbiased):
    layers = _layers(n, widths, seed=n)
    got = cka_matrix([torch.from_numpy(a) for a in layers], unbiased=unbiased, method=method)
    np.testing.assert_allclose(got.numpy(), gram_form_cka(layers, unbiased), rtol=0, atol=1e-12)
    assert torch.equal(got, got.T)


@BOTH
@CASES
def test_hsic_of_both_routes_equals_the_gram_form(n, widths, unbiased):
    layers = _layers(n, widths, seed=2 * n + 1)
    centered, _ = _centered_layers(layers, "a", unbiased=unbiased)
    expected = np.array([[gram_form_hsic(a, b, unbiased) for b in layers] for a in layers])
    scale = np.abs(expected).max()
    for method in ("features", "gram"):
        got = _allpairs_hsic(centered, unbiased, method).numpy()
        np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=1e-12)


@BOTH
def test_routes_agree_with_the_u_centered_gram_product_on_larger_input(unbiased):
    """n = 300 with widths on both sides of n: the derived feature-space correction terms
    against the U-centered (or centered) Grams multiplied as flattened vectors."""
    layers = _layers(300, [40, 300, 5, 450], seed=7)
    centered, n = _centered_layers(layers, "a", unbiased=unbiased)
    grams = torch.stack([_centered_gram(xc, unbiased).reshape(-1) for xc in centered])
    scale = 1.0 / (n * (n - 3)) if unbiased else 1.0 / (n - 1) ** 2
    expected = (grams @ grams.T * scale).numpy()
    for method in ("features", "gram"):
        got = _allpairs_hsic(centered, unbiased, method).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@BOTH
def test_many_strips_and_a_ragged_last_strip(unbiased, monkeypatch):
    """A tiny memory budget forces 3-row strips over n = 40 (the last one a single row)."""
    layers = _layers(40, [6, 50, 11], seed=3)
    expected = gram_form_cka(layers, unbiased)
    monkeypatch.setattr(cka_module, "_STRIP_BUDGET", 3 * 3 * 40)
    monkeypatch.setattr(cka_module, "_MIN_STRIP_ROWS", 1)
    assert cka_module._strip_rows(40, 3) == 3
    got = cka_matrix(layers, unbiased=unbiased, method="gram")
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


@BOTH
@ROUTES
@pytest.mark.parametrize("n,d", [(40, 5), (12, 30), (10, 10)], ids=["d<n", "d>n", "d=n"])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(n, d, method, unbiased):
    rng = np.random.default_rng(11)
    layers = _layers(n, [d, d, 3], seed=d)
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    q = q * np.sign(np.diag(r))
    base = cka_matrix(layers, unbiased=unbiased, method=method).numpy()
    moved = [layers[0] @ q, 7.5 * layers[1], layers[2]]
    np.testing.assert_allclose(
        cka_matrix(moved, unbiased=unbiased, method=method).numpy(), base, rtol=0, atol=1e-12)


@BOTH
@ROUTES
@pytest.mark.parametrize("n,d", [(40, 5), (12, 30), (10, 10)], ids=["d<n", "d>n", "d=n"])
def test_identical_inputs_give_one(n, d, method, unbiased):
    x = np.random.default_rng(d).normal(size=(n, d)) + 5.0
    got = cka_matrix([x, x, x], unbiased=unbiased, method=method).numpy()
    np.testing.assert_allclose(got, np.ones((3, 3)), rtol=0, atol=1e-13)


def test_multiply_add_counts_match_brute_force():
    n, widths = 11, [2, 5, 3]
    features = sum(n * widths[i] * widths[j]
                   for i in range(3) for j in range(3) if j >= i)
    assert _allpairs_macs(n, widths, "features") == features
    rows = cka_module._strip_rows(n, 3)
    assert rows == n  # n below the minimum strip: one strip, the whole Gram
    entries = n * n
    assert _allpairs_macs(n, widths, "gram") == entries * (sum(widths) + 9)


def test_gram_strip_count_is_the_upper_block_triangle(monkeypatch):
    monkeypatch.setattr(cka_module, "_MIN_STRIP_ROWS", 1)
    n = 20
    rows = cka_module._strip_rows(n, 2)
    assert rows == 3  # ceil(20 / 8)
    block = np.arange(n) // rows
    upper_block_triangle = int((block[:, None] <= block[None, :]).sum())
    assert _allpairs_macs(n, [4, 6], "gram") == upper_block_triangle * (10 + 4)


def test_route_choice_takes_the_cheaper_count():
    # 10 layers of width 256 on 1000 examples: the Grams are cheaper although d < n.
    assert _allpairs_route(1000, [256] * 10) == "gram"
    assert _allpairs_route(1000, [32] * 10) == "features"
    assert _allpairs_route(1000, [64, 64]) == "features"
    assert _allpairs_route(500, [2000, 2000]) == "gram"
    for n, widths in [(1000, [256] * 10), (1000, [32] * 10), (500, [2000, 2000])]:
        chosen = _allpairs_route(n, widths)
        assert _allpairs_macs(n, widths, chosen) == min(
            _allpairs_macs(n, widths, "features"), _allpairs_macs(n, widths, "gram"))
    assert _allpairs_route(1000, [256] * 10, "features") == "features"


def test_unknown_method_raises_before_any_work():
    with pytest.raises(ValueError, match="unknown method 'svd'"):
        cka_matrix([np.ones((5, 2))], method="svd")


@pytest.mark.parametrize("widths_a,widths_b", [([3, 5], [4]), ([30, 2], [25, 40, 1])],
                         ids=["narrow", "wide"])
def test_minibatch_cka_sums_gram_form_hsic_over_batches(widths_a, widths_b):
    """Two lists, three batches of 12 examples, with a layer constant in one batch: every
    pair's CKA is sum HSIC1(K_b, L_b) / sqrt(sum HSIC1(K_b, K_b) sum HSIC1(L_b, L_b))."""
    batches = []
    for b in range(3):
        layers = _layers(12, widths_a + widths_b, seed=40 + b)
        if b == 1:
            layers[0] = np.full_like(layers[0], 3.0)
        batches.append((layers[: len(widths_a)], layers[len(widths_a):]))
    metric = MinibatchCKA()
    for acts_a, acts_b in batches:
        metric.update(acts_a, acts_b)
    got = metric.compute().numpy()

    def total(i: int, j: int, side_i: int, side_j: int) -> float:
        return sum(gram_form_hsic(batch[side_i][i], batch[side_j][j], True)
                   for batch in batches)

    expected = np.array([
        [total(i, j, 0, 1) / math.sqrt(total(i, i, 0, 0) * total(j, j, 1, 1))
         for j in range(len(widths_b))]
        for i in range(len(widths_a))
    ])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)

    shared = MinibatchCKA()
    for acts_a, _ in batches:
        shared.update(acts_a)
    expected_shared = np.array([
        [total(i, j, 0, 0) / math.sqrt(total(i, i, 0, 0) * total(j, j, 0, 0))
         for j in range(len(widths_a))]
        for i in range(len(widths_a))
    ])
    np.testing.assert_allclose(shared.compute().numpy(), expected_shared, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inputs_are_left_unchanged(dtype):
    layers = [torch.from_numpy(a).to(dtype) for a in _layers(30, [4, 50], seed=5)]
    before = [a.clone() for a in layers]
    for method in ("features", "gram"):
        cka_matrix(layers, unbiased=True, method=method)
    for a, b in zip(layers, before, strict=True):
        assert torch.equal(a, b)
