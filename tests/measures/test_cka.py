"""Oracle tests for linear CKA, the all-pairs CKA matrix and minibatch CKA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learnscope.measures.cka import (
    MinibatchCKA,
    _linear_hsic_terms,
    cka_matrix,
    linear_cka,
    minibatch_cka,
)

torch.set_num_threads(1)

BOTH = pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
# (n, d): d < n takes the feature-space route, d > n the Gram-matrix route.
SHAPES = pytest.mark.parametrize("n,d", [(60, 7), (12, 30)], ids=["features", "gram"])


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _related_pair(n: int, dx: int, dy: int, rng: np.random.Generator):
    x = rng.normal(size=(n, dx))
    y = np.tanh(x @ rng.normal(size=(dx, dy))) + 0.5 * rng.normal(size=(n, dy))
    return x, y


# ----------------------------------------------------------------------------------------------
# Brute-force oracles, written independently of the library
# ----------------------------------------------------------------------------------------------


def brute_biased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with an explicit centering matrix H."""
    n = x.shape[0]
    x = x.reshape(n, -1)
    y = y.reshape(n, -1)
    k = x @ x.T
    l_ = y @ y.T
    h = np.eye(n) - np.ones((n, n)) / n
    kh = k @ h
    lh = l_ @ h
    return np.trace(kh @ lh) / math.sqrt(np.trace(kh @ kh) * np.trace(lh @ lh))


def brute_unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. 2012, eq. 5, with explicit loops over the entries of K~ and L~."""
    n = k.shape[0]
    kt = [[0.0 if i == j else float(k[i, j]) for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else float(l_[i, j]) for j in range(n)] for i in range(n)]
    trace_kl = 0.0
    for i in range(n):
        for j in range(n):
            trace_kl += kt[i][j] * lt[j][i]
    sum_k = sum(kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i][j] for i in range(n) for j in range(n))
    one_kl_one = 0.0
    for i in range(n):
        for j in range(n):
            for q in range(n):
                one_kl_one += kt[i][j] * lt[j][q]
    return (trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one_kl_one) / (
        n * (n - 3)
    )


def brute_unbiased_hsic_ustat(k: np.ndarray, l_: np.ndarray) -> float:
    """The same estimator as a U-statistic over ordered 4-tuples of distinct indices."""
    n = k.shape[0]
    total = 0.0
    count = 0
    for i in range(n):
        for j in range(n):
            for q in range(n):
                for r in range(n):
                    if len({i, j, q, r}) < 4:
                        continue
                    total += k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2.0 * k[i, j] * l_[i, q]
                    count += 1
    return total / count


def brute_unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    k = x @ x.T
    l_ = y @ y.T
    return brute_unbiased_hsic(k, l_) / math.sqrt(
        brute_unbiased_hsic(k, k) * brute_unbiased_hsic(l_, l_)
    )


# ----------------------------------------------------------------------------------------------
# The oracles themselves agree (guards against a shared mistake in the test helpers)
# ----------------------------------------------------------------------------------------------


def test_song_formula_matches_u_statistic():
    x, y = _related_pair(7, 3, 2, _rng(1))
    k, l_ = x @ x.T, y @ y.T
    assert brute_unbiased_hsic(k, l_) == pytest.approx(brute_unbiased_hsic_ustat(k, l_), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# linear_cka
# ----------------------------------------------------------------------------------------------


@BOTH
@SHAPES
def test_self_similarity_is_one(unbiased, n, d):
    x = _rng(2).normal(size=(n, d))
    assert linear_cka(x, x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)


@BOTH
@SHAPES
def test_invariant_to_orthogonal_transform(unbiased, n, d):
    rng = _rng(3)
    x, y = _related_pair(n, d, 5, rng)
    q = _random_orthogonal(d, rng)
    base = linear_cka(x, y, unbiased=unbiased)
    assert linear_cka(x @ q, y, unbiased=unbiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, x @ q, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)


@BOTH
@SHAPES
def test_invariant_to_isotropic_scaling(unbiased, n, d):
    x, y = _related_pair(n, d, 5, _rng(4))
    base = linear_cka(x, y, unbiased=unbiased)
    assert linear_cka(3.7 * x, y, unbiased=unbiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, 1e-3 * y, unbiased=unbiased) == pytest.approx(base, abs=1e-12)


@BOTH
def test_not_invariant_to_general_invertible_map(unbiased):
    rng = _rng(5)
    n, d = 80, 6
    x, y = _related_pair(n, d, 4, rng)
    # Invertible but far from a scaled rotation: singular values 1 ... 30.
    a = _random_orthogonal(d, rng) @ np.diag(np.linspace(1.0, 30.0, d)) @ _random_orthogonal(d, rng)
    assert np.linalg.matrix_rank(a) == d
    assert linear_cka(x, x @ a, unbiased=unbiased) < 0.95
    assert abs(linear_cka(x @ a, y, unbiased=unbiased) - linear_cka(x, y, unbiased=unbiased)) > 1e-2


@pytest.mark.parametrize("n,dx,dy", [(40, 5, 3), (10, 25, 40), (30, 3, 50)])
def test_biased_matches_brute_force_hsic(n, dx, dy):
    x, y = _related_pair(n, dx, dy, _rng(6))
    x = x + 5.0  # uncentered input: the centering must happen inside
    assert linear_cka(x, y) == pytest.approx(brute_biased_cka(x, y), abs=1e-12)


@pytest.mark.parametrize("n,dx,dy", [(9, 3, 2), (6, 12, 10), (8, 2, 30)])
def test_unbiased_matches_brute_force_loop(n, dx, dy):
    x, y = _related_pair(n, dx, dy, _rng(7))
    x = x - 3.0
    # The uncentered brute force loses ~1e-12 to cancellation (checked against exact rational
    # arithmetic, which agrees with the library to 1e-15), hence the looser tolerance.
    assert linear_cka(x, y, unbiased=True) == pytest.approx(brute_unbiased_cka(x, y), abs=1e-10)


@pytest.mark.parametrize("method", ["features", "gram"])
@pytest.mark.parametrize("n", [4, 5, 11])
def test_unbiased_hsic_value_matches_brute_force_loop(method, n):
    """The HSIC values themselves (not only their ratio) are Song et al.'s estimator."""
    x, y = _related_pair(n, 3, 4, _rng(8))
    x = x + 2.0
    hxy, hxx, hyy = _linear_hsic_terms(x, y, unbiased=True, method=method)
    k, l_ = x @ x.T, y @ y.T
    assert hxy == pytest.approx(brute_unbiased_hsic(k, l_), rel=1e-10, abs=1e-12)
    assert hxx == pytest.approx(brute_unbiased_hsic(k, k), rel=1e-10)
    assert hyy == pytest.approx(brute_unbiased_hsic(l_, l_), rel=1e-10)


@pytest.mark.parametrize("method", ["features", "gram"])
def test_biased_hsic_value_matches_trace_formula(method):
    x, y = _related_pair(15, 4, 6, _rng(9))
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hxy, hxx, hyy = _linear_hsic_terms(x, y, unbiased=False, method=method)
    assert hxy == pytest.approx(np.trace(k @ h @ l_ @ h) / (n - 1) ** 2, rel=1e-10)
    assert hxx == pytest.approx(np.trace(k @ h @ k @ h) / (n - 1) ** 2, rel=1e-10)
    assert hyy == pytest.approx(np.trace(l_ @ h @ l_ @ h) / (n - 1) ** 2, rel=1e-10)


@BOTH
def test_feature_and_gram_routes_agree(unbiased):
    x, y = _related_pair(50, 20, 35, _rng(10))
    feats = _linear_hsic_terms(x, y, unbiased=unbiased, method="features")
    grams = _linear_hsic_terms(x, y, unbiased=unbiased, method="gram")
    np.testing.assert_allclose(feats, grams, rtol=1e-10)


def test_unbiased_differs_from_biased():
    x, y = _related_pair(12, 3, 3, _rng(11))
    assert abs(linear_cka(x, y) - linear_cka(x, y, unbiased=True)) > 1e-3


def test_accepts_torch_numpy_float32_and_trailing_dims():
    rng = _rng(12)
    x = rng.normal(size=(20, 2, 3, 2)).astype(np.float32)
    y = rng.normal(size=(20, 5)).astype(np.float32)
    expected = brute_biased_cka(x.astype(np.float64).reshape(20, -1), y.astype(np.float64))
    assert linear_cka(x, y) == pytest.approx(expected, abs=1e-12)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        expected, abs=1e-12
    )
    assert isinstance(linear_cka(x, y), float)


def test_large_offset_is_handled_in_float64():
    x, y = _related_pair(30, 4, 4, _rng(13))
    assert linear_cka(x + 1e4, y - 1e4, unbiased=True) == pytest.approx(
        linear_cka(x, y, unbiased=True), abs=1e-9
    )


def test_constant_feature_beside_varying_ones_is_ignored():
    x, y = _related_pair(25, 4, 3, _rng(14))
    x_with_const = np.concatenate([x, np.full((25, 1), 0.1)], axis=1)
    assert linear_cka(x_with_const, y) == pytest.approx(linear_cka(x, y), abs=1e-14)


# ----------------------------------------------------------------------------------------------
# cka_matrix
# ----------------------------------------------------------------------------------------------


@BOTH
def test_cka_matrix_equals_pairwise_linear_cka(unbiased):
    rng = _rng(15)
    n = 24
    base = rng.normal(size=(n, 6))
    layers = [
        torch.from_numpy(base),
        torch.from_numpy(np.tanh(base @ rng.normal(size=(6, 40)))),  # wider than n
        torch.from_numpy(rng.normal(size=(n, 3, 2, 2))),  # trailing dims
        torch.from_numpy(base[:, :2] ** 2 + 0.1 * rng.normal(size=(n, 2))),
    ]
    m = cka_matrix(layers, unbiased=unbiased)
    assert m.shape == (4, 4)
    assert m.dtype == torch.float64
    expected = np.array([[linear_cka(a, b, unbiased=unbiased) for b in layers] for a in layers])
    np.testing.assert_allclose(m.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(m.numpy(), m.numpy().T, atol=0)


def test_cka_matrix_single_layer_and_numpy_input():
    x = _rng(16).normal(size=(10, 3))
    m = cka_matrix([x])
    assert m.shape == (1, 1)
    assert float(m[0, 0]) == pytest.approx(1.0, abs=1e-14)


# ----------------------------------------------------------------------------------------------
# MinibatchCKA / minibatch_cka
# ----------------------------------------------------------------------------------------------


def test_minibatch_single_batch_equals_unbiased_cka():
    rng = _rng(17)
    x, y = _related_pair(30, 5, 7, rng)
    z = rng.normal(size=(30, 2))
    metric = MinibatchCKA()
    metric.update([x, y, z])
    got = metric.compute()
    layers = [x, y, z]
    expected = np.array([[linear_cka(a, b, unbiased=True) for b in layers] for a in layers])
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_minibatch_several_batches_equal_hand_formula():
    """sum_b HSIC1(K_b, L_b) / sqrt(sum_b HSIC1(K_b, K_b) sum_b HSIC1(L_b, L_b))."""
    rng = _rng(18)
    sizes = [6, 9, 5]  # unequal batch sizes: the per-batch 1/(n(n-3)) weights matter
    batches = [_related_pair(s, 3, 4, rng) for s in sizes]
    metric = MinibatchCKA()
    for x, y in batches:
        metric.update([x], [y])
    kl = sum(brute_unbiased_hsic(x @ x.T, y @ y.T) for x, y in batches)
    kk = sum(brute_unbiased_hsic(x @ x.T, x @ x.T) for x, _ in batches)
    ll = sum(brute_unbiased_hsic(y @ y.T, y @ y.T) for _, y in batches)
    assert float(metric.compute()[0, 0]) == pytest.approx(kl / math.sqrt(kk * ll), abs=1e-12)
    assert metric.num_batches == 3
    assert metric.num_examples == sum(sizes)
    # ... and differs from the unbiased CKA of the pooled data, so the test can tell them apart.
    pooled = linear_cka(
        np.concatenate([x for x, _ in batches]),
        np.concatenate([y for _, y in batches]),
        unbiased=True,
    )
    assert abs(float(metric.compute()[0, 0]) - pooled) > 1e-4


def test_minibatch_lists_a_and_b_and_functional_twin():
    rng = _rng(19)
    batches_a, batches_b = [], []
    for _ in range(3):
        x, y = _related_pair(16, 4, 6, rng)
        batches_a.append([x, x**2])
        batches_b.append([y, rng.normal(size=(16, 3)), x])
    metric = MinibatchCKA()
    for a, b in zip(batches_a, batches_b, strict=True):
        metric.update(a, b)
    got = metric.compute()
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            kl = sum(
                brute_unbiased_hsic(a[i] @ a[i].T, b[j] @ b[j].T)
                for a, b in zip(batches_a, batches_b, strict=True)
            )
            kk = sum(brute_unbiased_hsic(a[i] @ a[i].T, a[i] @ a[i].T) for a in batches_a)
            ll = sum(brute_unbiased_hsic(b[j] @ b[j].T, b[j] @ b[j].T) for b in batches_b)
            assert float(got[i, j]) == pytest.approx(kl / math.sqrt(kk * ll), abs=1e-12)
    assert float(got[0, 2]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(minibatch_cka(batches_a, batches_b).numpy(), got.numpy(), atol=0)
    shared = minibatch_cka(batches_a)
    assert shared.shape == (2, 2)
    np.testing.assert_allclose(torch.diagonal(shared).numpy(), [1.0, 1.0], atol=1e-12)


def test_minibatch_reset_and_constant_layer_in_one_batch():
    rng = _rng(20)
    metric = MinibatchCKA()
    metric.update([rng.normal(size=(8, 3)) + 100.0])
    metric.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    x1, x2 = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    metric.update([np.ones((8, 3)), x1])  # layer 0 constant in this batch: contributes zero
    metric.update([x2, x2])
    got = metric.compute()
    k1, k2 = x1 @ x1.T, x2 @ x2.T
    expected = brute_unbiased_hsic(k2, k2) / math.sqrt(
        brute_unbiased_hsic(k2, k2) * (brute_unbiased_hsic(k1, k1) + brute_unbiased_hsic(k2, k2))
    )
    assert float(got[0, 1]) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_unbiased_needs_four_examples():
    x = _rng(21).normal(size=(3, 5))
    with pytest.raises(ValueError, match="at least 4 examples"):
        linear_cka(x, x, unbiased=True)
    with pytest.raises(ValueError, match="at least 4 examples"):
        cka_matrix([x, x], unbiased=True)
    with pytest.raises(ValueError, match="at least 4 examples"):
        MinibatchCKA().update([x])
    assert linear_cka(x, x) == pytest.approx(1.0)  # the biased form is fine with 3


def test_mismatched_numbers_of_examples():
    rng = _rng(22)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(11, 3))
    with pytest.raises(ValueError, match="mismatched numbers of examples"):
        linear_cka(x, y)
    with pytest.raises(ValueError, match="mismatched numbers of examples"):
        cka_matrix([x, y], unbiased=True)
    with pytest.raises(ValueError, match="mismatched numbers of examples"):
        MinibatchCKA().update([x], [y])
    with pytest.raises(ValueError, match="mismatched numbers of examples"):
        MinibatchCKA().update([x, y])


@BOTH
def test_constant_activations_raise(unbiased):
    x = _rng(23).normal(size=(10, 3))
    const = np.full((10, 4), 0.1)
    with pytest.raises(ValueError, match="constant activations"):
        linear_cka(x, const, unbiased=unbiased)
    with pytest.raises(ValueError, match="constant activations"):
        linear_cka(torch.zeros(10, 2), x, unbiased=unbiased)
    with pytest.raises(ValueError, match="constant activations"):
        cka_matrix([x, const], unbiased=unbiased)


def test_minibatch_all_constant_layer_raises_at_compute():
    x = _rng(24).normal(size=(10, 3))
    metric = MinibatchCKA()
    metric.update([x, np.ones((10, 2))])
    metric.update([x, np.ones((10, 2))])
    with pytest.raises(ValueError, match=r"acts_a\[1\].*CKA is undefined"):
        metric.compute()


def test_empty_layer_lists_raise():
    with pytest.raises(ValueError, match="empty list of layers"):
        cka_matrix([])
    with pytest.raises(ValueError, match="empty list of layers"):
        MinibatchCKA().update([])
    with pytest.raises(ValueError, match="empty list of layers"):
        MinibatchCKA().update([np.eye(5)], [])
    with pytest.raises(ValueError, match="no batches"):
        minibatch_cka([])


def test_inconsistent_updates_raise():
    rng = _rng(25)
    metric = MinibatchCKA()
    metric.update([rng.normal(size=(8, 2)), rng.normal(size=(8, 2))])
    with pytest.raises(ValueError, match="layer counts changed"):
        metric.update([rng.normal(size=(8, 2))])
    with pytest.raises(ValueError, match="acts_b must be given"):
        metric.update([rng.normal(size=(8, 2))], [rng.normal(size=(8, 2))])
    batches = [[rng.normal(size=(8, 2))] for _ in range(2)]
    with pytest.raises(ValueError, match="fewer batches"):
        minibatch_cka(batches, batches[:1])
    with pytest.raises(ValueError, match="more batches"):
        minibatch_cka(batches[:1], batches)


def test_non_finite_and_single_array_inputs_raise():
    x = _rng(26).normal(size=(10, 3))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        linear_cka(x, bad)
    with pytest.raises(ValueError, match="sequence of per-layer activations"):
        cka_matrix(torch.from_numpy(x))


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("shape", [(40, 6), (12, 50)])  # feature-space and Gram routes
def test_linear_cka_to_equals_pairwise_calls(unbiased, shape):
    from learnscope.measures.cka import linear_cka_to

    g = torch.Generator().manual_seed(5)
    n, d = shape
    y = torch.randn(n, d, generator=g)
    xs = [torch.randn(n, d, generator=g), y + 0.1 * torch.randn(n, d, generator=g),
          torch.ones(n, 3), torch.randn(n, d + 2, generator=g).numpy()]
    got = linear_cka_to(xs, y, unbiased=unbiased)
    assert math.isnan(got[2])  # constant: undefined, as linear_cka says
    with pytest.raises(ValueError, match="constant"):
        linear_cka(xs[2], y, unbiased=unbiased)
    for x, v in zip([xs[0], xs[1], xs[3]], [got[0], got[1], got[3]], strict=True):
        assert v == pytest.approx(linear_cka(x, y, unbiased=unbiased), rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="examples"):
        linear_cka_to([torch.randn(n + 1, d)], y)
    with pytest.raises(ValueError, match="constant"):
        linear_cka_to(xs[:1], torch.ones(n, 2))
