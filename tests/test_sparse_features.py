"""Tests for learnscope.data.sparse_features: shapes, determinism and the stated statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learnscope.data.sparse_features import (
    feature_importance,
    sparse_feature_batch,
    sparse_feature_set,
)

torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _within_binomial(count: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    """``count`` successes out of ``trials`` is within ``sigmas`` standard deviations of p."""
    sd = math.sqrt(trials * p * (1 - p))
    return abs(count - trials * p) <= sigmas * sd + 1e-9


def test_importance_is_geometric_per_model():
    assert feature_importance(4, 0.7).tolist() == pytest.approx([1.0, 0.7, 0.49, 0.343])
    imp = feature_importance(3, [0.5, 1.0, 0.8], dtype=torch.float64)
    assert imp.shape == (3, 3) and imp.dtype == torch.float64
    assert torch.allclose(imp[0], torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64))
    assert torch.equal(imp[1], torch.ones(3, dtype=torch.float64))
    assert imp[2, 2].item() == pytest.approx(0.64)


@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan, math.inf, [[0.5]], []])
def test_importance_rejects_bad_decay(bad):
    with pytest.raises(ValueError):
        feature_importance(3, bad)


def test_shapes_for_each_sparsity_form():
    g = _gen(0)
    assert sparse_feature_batch(7, 5, 0.5, generator=g).shape == (7, 5)
    assert sparse_feature_batch(7, 5, [0.1, 0.9, 0.5], generator=g).shape == (3, 7, 5)
    per_feature = torch.full((2, 5), 0.3)
    out = sparse_feature_batch(7, 5, per_feature, generator=g, dtype=torch.float64)
    assert out.shape == (2, 7, 5) and out.dtype == torch.float64 and out.is_contiguous()


@pytest.mark.parametrize("sparsity", [0.0, 0.7, 0.97])
def test_fraction_present_matches_one_minus_sparsity(sparsity):
    x = sparse_feature_batch(4000, 50, sparsity, generator=_gen(1))
    present = int((x != 0).sum())
    # A present entry is U[0, 1), so it is exactly 0 only with probability 2**-24 per draw.
    assert _within_binomial(present, x.numel(), 1.0 - sparsity)


def test_per_model_and_per_feature_sparsity_are_honoured():
    sparsity = torch.tensor([0.0, 0.5, 0.9, 0.99, 1.0])
    x = sparse_feature_batch(4000, 40, sparsity, generator=_gen(2))
    for k, s in enumerate(sparsity.tolist()):
        count = int((x[k] != 0).sum())
        assert _within_binomial(count, x[k].numel(), 1.0 - s), (k, s, count)
    assert torch.all(x[-1] == 0)  # sparsity 1: never present
    per_feature = torch.tensor([[0.0, 0.8, 1.0]])
    y = sparse_feature_batch(5000, 3, per_feature, generator=_gen(3))
    assert int((y[0, :, 0] == 0).sum()) <= 2  # sparsity 0: present (0 only w.p. 2**-24)
    assert _within_binomial(int((y[0, :, 1] != 0).sum()), 5000, 0.2)
    assert torch.all(y[0, :, 2] == 0)


def test_present_values_are_uniform_on_unit_interval():
    x = sparse_feature_batch(2000, 50, 0.5, generator=_gen(4), dtype=torch.float64)
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    values = x[x != 0].numpy()
    n = values.size
    # U[0, 1): mean 1/2 (sd 1/sqrt(12 n)), variance 1/12, quartiles at 1/4, 1/2, 3/4.
    assert abs(values.mean() - 0.5) < 5 / math.sqrt(12 * n)
    assert values.var() == pytest.approx(1 / 12, rel=0.02)
    for q in (0.25, 0.5, 0.75):
        assert _within_binomial(int(np.sum(values < q)), n, q)


def test_presence_is_independent_across_features():
    x = sparse_feature_batch(20000, 2, 0.5, generator=_gen(5))
    both = int(((x[:, 0] != 0) & (x[:, 1] != 0)).sum())
    assert _within_binomial(both, 20000, 0.25)


def test_batches_are_deterministic_per_generator_and_advance_it():
    a = sparse_feature_batch(64, 10, [0.2, 0.9], generator=_gen(7))
    b = sparse_feature_batch(64, 10, [0.2, 0.9], generator=_gen(7))
    assert torch.equal(a, b)
    g = _gen(7)
    first = sparse_feature_batch(64, 10, [0.2, 0.9], generator=g)
    second = sparse_feature_batch(64, 10, [0.2, 0.9], generator=g)
    assert torch.equal(first, a) and not torch.equal(first, second)
    assert not torch.equal(a, sparse_feature_batch(64, 10, [0.2, 0.9], generator=_gen(8)))


def test_no_global_rng_use():
    torch.manual_seed(123)
    before = torch.get_rng_state().clone()
    sparse_feature_batch(32, 8, 0.5, generator=_gen(0))
    sparse_feature_set(32, 8, [0.5, 0.9], seed=0)
    assert torch.equal(before, torch.get_rng_state())


def test_unit_norm_rescales_nonzero_points_only():
    x = sparse_feature_batch(3000, 30, 0.95, generator=_gen(9), unit_norm=True,
                             dtype=torch.float64)
    norms = torch.linalg.vector_norm(x, dim=-1)
    nonzero = norms > 0
    assert torch.allclose(norms[nonzero], torch.ones(int(nonzero.sum()), dtype=torch.float64))
    # All-zero points (probability 0.95**30 ~ 0.21 each) stay zero, none become NaN.
    assert torch.isfinite(x).all()
    assert _within_binomial(int((~nonzero).sum()), 3000, 0.95**30)
    raw = sparse_feature_batch(3000, 30, 0.95, generator=_gen(9), dtype=torch.float64)
    assert torch.equal(raw != 0, x != 0)  # same support, only rescaled


def test_training_sets_are_fixed_nested_and_split_apart():
    a = sparse_feature_set(50, 12, [0.3, 0.99], seed=4)
    assert torch.equal(a, sparse_feature_set(50, 12, [0.3, 0.99], seed=4))
    big = sparse_feature_set(500, 12, [0.3, 0.99], seed=4)
    assert torch.equal(big[:, :50], a)  # the small set is the start of the large one
    assert not torch.equal(a, sparse_feature_set(50, 12, [0.3, 0.99], seed=5))
    test = sparse_feature_set(50, 12, [0.3, 0.99], seed=4, split="test")
    assert not torch.equal(a, test)


def test_training_set_supports_are_nested_in_sparsity():
    dense = sparse_feature_set(400, 20, 0.5, seed=2)
    sparse = sparse_feature_set(400, 20, 0.9, seed=2)
    present = sparse != 0
    assert torch.all(dense[present] != 0)  # higher sparsity keeps a subset of the entries
    assert torch.equal(sparse[present], dense[present])


@pytest.mark.parametrize("kwargs", [
    {"sparsity": -0.1}, {"sparsity": 1.5}, {"sparsity": math.nan},
    {"sparsity": [[[0.5]]]}, {"sparsity": []}, {"sparsity": torch.full((2, 3), 0.5)},
    {"batch_size": 0}, {"batch_size": 2.0}, {"batch_size": True}, {"n_features": 0},
    {"dtype": torch.int64}, {"generator": 0},
])
def test_bad_arguments_are_value_errors(kwargs):
    args = {"batch_size": 4, "n_features": 5, "sparsity": 0.5, "generator": _gen(0)} | kwargs
    with pytest.raises(ValueError):
        sparse_feature_batch(**args)


def test_bad_split_is_a_value_error():
    with pytest.raises(ValueError):
        sparse_feature_set(4, 5, 0.5, seed=0, split="")


def test_coupled_models_share_uniforms_and_keep_their_marginals():
    sparsity = [0.0, 0.5, 0.9]
    x = sparse_feature_batch(3000, 20, sparsity, generator=_gen(11), coupled=True)
    assert x.shape == (3, 3000, 20)
    for k, s in enumerate(sparsity):
        # Model k gets exactly what a one-sparsity call from the same generator state draws.
        assert torch.equal(x[k], sparse_feature_batch(3000, 20, s, generator=_gen(11)))
        assert _within_binomial(int((x[k] != 0).sum()), x[k].numel(), 1.0 - s)
    assert torch.all(x[0][x[2] != 0] == x[2][x[2] != 0])  # sparser support is a subset
    assert torch.all((x[1] != 0) | (x[2] == 0))
    independent = sparse_feature_batch(3000, 20, sparsity, generator=_gen(11))
    assert not torch.equal(independent[1], x[1])


def test_coupled_training_set_matches_single_sparsity_sets():
    both = sparse_feature_set(30, 6, [0.2, 0.8], seed=3, coupled=True, unit_norm=True)
    assert torch.equal(both[1], sparse_feature_set(30, 6, 0.8, seed=3, unit_norm=True))
    assert torch.equal(both[:, :10], sparse_feature_set(10, 6, [0.2, 0.8], seed=3, coupled=True,
                                                        unit_norm=True))
