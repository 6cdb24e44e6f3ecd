"""Oracle tests of the neural collapse metrics: a constructed simplex ETF, closed forms and a
brute-force NC1."""

import math

import numpy as np
import pytest
import torch

from learnscope.measures.neural_collapse import (
    centred_class_means,
    collapse_metrics,
    equiangularity,
    equinorm,
    nc1,
    ncc_disagreement,
    self_duality,
    sv_ratio,
)
from learnscope.seeding import torch_generator


def _etf(c: int, d: int, scale: float = 2.0) -> torch.Tensor:
    """C simplex-ETF vertices (C, d) of norm ``scale``, embedded by a random rotation in R^d."""
    vertices = math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=torch.float64) - 1.0 / c)  # rows of norm 1
    q, _ = torch.linalg.qr(torch.randn(d, c, generator=torch_generator(0, "etf"),
                                       dtype=torch.float64))
    return scale * vertices @ q.T


def _collapsed(c: int = 5, d: int = 12, per_class: int = 4):
    means = _etf(c, d) + 0.7  # shifted by a global mean
    labels = torch.arange(c).repeat_interleave(per_class)
    return means[labels], labels, means


def test_simplex_etf_with_no_spread_is_fully_collapsed():
    features, labels, means = _collapsed()
    c = 5
    centred, mu_g = centred_class_means(features, labels, c)
    assert torch.allclose(mu_g, torch.full((12,), 0.7, dtype=torch.float64), atol=1e-12)
    w = centred * 3.0  # self-dual classifier, any scale
    logits = features @ w.T
    m = collapse_metrics(features, labels, c, weight=w, logits=logits,
                         test_features=features, test_logits=logits)
    assert m.nc1 == pytest.approx(0.0, abs=1e-20)
    assert m.equinorm == pytest.approx(0.0, abs=1e-12)
    assert m.cos_std == pytest.approx(0.0, abs=1e-12)
    assert m.cos_etf_gap == pytest.approx(0.0, abs=1e-12)
    assert m.sv_ratio == pytest.approx(1.0, abs=1e-12)
    assert m.self_duality == pytest.approx(0.0, abs=1e-20)
    assert m.ncc_train == 0.0 and m.ncc_test == 0.0
    unit = centred / centred.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    off = cos[~torch.eye(c, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / (c - 1)), atol=1e-12)


def test_nc1_closed_form_for_spread_along_the_means():
    """Two examples per class at mu_c +- s * mu_c/|mu_c| on an ETF of norm r: S_W = s^2/C sum
    u_c u_c^T = s^2/(C-1) P, S_B = r^2/(C-1) P (P the projection on the means' span), so
    NC1 = (s^2 / r^2) (C-1) / C."""
    c, r, s = 4, 2.0, 0.3
    means = _etf(c, 9, r)
    unit = means / means.norm(dim=1, keepdim=True)
    features = torch.cat([means + s * unit, means - s * unit])
    labels = torch.cat([torch.arange(c), torch.arange(c)])
    assert nc1(features, labels, c) == pytest.approx(s**2 / r**2 * (c - 1) / c, rel=1e-10)


def test_nc1_matches_brute_force_on_tiny_input():
    rng = np.random.default_rng(3)
    c, d = 3, 5
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2, 1])
    h = rng.normal(size=(len(labels), d))
    means = np.stack([h[labels == k].mean(0) for k in range(c)])
    mu_g = means.mean(0)
    s_w = np.zeros((d, d))
    for i in range(len(labels)):
        v = h[i] - means[labels[i]]
        s_w += np.outer(v, v)
    s_w /= len(labels)
    s_b = sum(np.outer(means[k] - mu_g, means[k] - mu_g) for k in range(c)) / c
    expected = np.trace(s_w @ np.linalg.pinv(s_b, rcond=1e-10)) / c
    assert nc1(torch.from_numpy(h), torch.from_numpy(labels), c) == pytest.approx(expected,
                                                                                rel=1e-9)


def test_random_features_are_not_collapsed():
    """Pure noise features N(0, I_d) with d >> C: the centred class means are near-orthogonal
    of squared norm ~ d/m (m per class), so S_B has C-1 eigenvalues ~ d/(mC) and NC1 ~ (C-1)m/d;
    their directions are those of random vectors (near-ETF angles in high dimension) and a
    random classifier disagrees with the nearest class centre about (C-1)/C of the time."""
    g = torch_generator(1, "noise")
    c, m, d = 5, 200, 2000
    labels = torch.arange(c).repeat_interleave(m)
    features = torch.randn(c * m, d, generator=g, dtype=torch.float64)
    assert nc1(features, labels, c) == pytest.approx((c - 1) * m / d, rel=0.15)
    centred, mu_g = centred_class_means(features, labels, c)
    assert equinorm(centred) < 0.1
    w = torch.randn(c, d, generator=g, dtype=torch.float64)
    assert self_duality(w, centred) == pytest.approx(2.0, abs=0.2)  # orthogonal unit matrices
    disagree = ncc_disagreement(features, features @ w.T, centred + mu_g)
    assert disagree == pytest.approx((c - 1) / c, abs=0.06)


def test_low_rank_means_show_in_sv_ratio_and_angles():
    means = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0.01]],
                         dtype=torch.float64)
    centred = means - means.mean(0)
    assert sv_ratio(centred) < 0.02
    std, gap = equiangularity(centred)
    assert std > 0.3 and gap > 0.3


def test_ncc_disagreement_counts_examples():
    means = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    features = torch.tensor([[0.1, 0.0], [3.9, 0.0], [1.0, 0.0], [3.0, 1.0]])
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # second is wrong
    assert ncc_disagreement(features, logits, means) == 0.25


def test_every_class_needs_an_example():
    with pytest.raises(ValueError, match="classes"):
        nc1(torch.zeros(3, 2), torch.tensor([0, 0, 2]), 3)
