"""Oracle tests for learnscope.measures.superposition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learnscope.measures.superposition import (
    feature_dimensionality,
    feature_norms,
    interference,
    superposition_summary,
)

torch.set_num_threads(1)


def _orthonormal(m: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return q[:, :n]


def test_orthonormal_columns():
    w = _orthonormal(6, 4, 0)
    assert np.allclose(feature_norms(w), 1.0)
    assert np.allclose(feature_dimensionality(w), 1.0)
    assert np.allclose(interference(w), 0.0, atol=1e-24)
    assert np.all(interference(w) >= 0)
    s = superposition_summary(w)
    assert s.n_represented == 4
    assert s.dims_per_feature == pytest.approx(6 / 4)
    assert s.n_hidden == 6 and s.n_features == 4 and s.threshold == 0.5


def test_scaled_orthogonal_features_keep_dimensionality_one():
    w = _orthonormal(3, 3, 1) * np.array([2.0, 0.3, 1.0])
    assert np.allclose(feature_dimensionality(w), 1.0)
    assert np.allclose(feature_norms(w), [2.0, 0.3, 1.0])
    assert superposition_summary(w).n_represented == 2


def test_antipodal_pair():
    w = np.array([[1.0, -1.0], [0.0, 0.0]])
    assert np.allclose(feature_dimensionality(w), [0.5, 0.5])
    assert np.allclose(interference(w), [1.0, 1.0])


def test_pentagon():
    angles = 2 * math.pi * np.arange(5) / 5
    w = np.stack([np.cos(angles), np.sin(angles)])  # 2 x 5
    assert np.allclose(feature_dimensionality(w), 2 / 5)
    # sum_j cos^2 = 5/2, minus the self term 1
    assert np.allclose(interference(w), 1.5)
    s = superposition_summary(torch.tensor(w, dtype=torch.float32))
    assert s.dims_per_feature == pytest.approx(2 / 5, rel=1e-6)
    assert s.n_represented == 5


def test_hand_computed_non_unit():
    # W_0 = (2, 0), W_1 = (1, 1): W_hat_0 . W_1 = 1, W_hat_1 . W_0 = sqrt(2)
    w = np.array([[2.0, 1.0], [0.0, 1.0]])
    assert np.allclose(interference(w), [1.0, 2.0])
    assert np.allclose(feature_dimensionality(w), [4.0 / 5.0, 2.0 / 4.0])


def test_zero_columns_no_nan():
    w = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    d = feature_dimensionality(w)
    assert np.all(np.isfinite(d))
    assert d.tolist() == [1.0, 0.0, 1.0]
    assert interference(w).tolist() == [0.0, 0.0, 0.0]
    s = superposition_summary(w)
    assert np.all(np.isfinite(s.dimensionality)) and np.all(np.isfinite(s.interference))
    assert s.n_represented == 2
    assert s.dimensionality[1] == 0.0


def test_summary_arrays_read_only_and_input_untouched():
    w = torch.eye(2, requires_grad=True)
    s = superposition_summary(w)
    with pytest.raises(ValueError):
        s.norms[0] = 3.0
    assert torch.equal(w.detach(), torch.eye(2))


def test_errors():
    with pytest.raises(ValueError, match="all-zero"):
        superposition_summary(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        feature_norms(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        interference(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="threshold"):
        superposition_summary(np.eye(2), threshold=-1.0)
    with pytest.raises(ValueError, match="empty"):
        feature_dimensionality(np.zeros((2, 0)))
