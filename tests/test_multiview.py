"""The multi-view generator: determinism, class balance, view counts and fractions, patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnscope.data.multiview import multiview, multiview_patterns, multiview_set
from learnscope.seeding import numpy_rng


def test_patterns_are_orthonormal_and_seeded():
    a = multiview_patterns(5, 3, 16, seed=1)
    flat = a.reshape(15, 16)
    np.testing.assert_allclose(flat @ flat.T, np.eye(15), atol=1e-12)
    np.testing.assert_array_equal(a, multiview_patterns(5, 3, 16, seed=1))
    assert not np.allclose(a, multiview_patterns(5, 3, 16, seed=2))


def test_patterns_need_room_for_every_view():
    with pytest.raises(ValueError, match="patch_dim"):
        multiview_patterns(10, 2, 19, seed=0)
    with pytest.raises(ValueError, match="n_views"):
        multiview_patterns(10, 1, 40, seed=0)


def test_same_seed_same_data_other_seed_other_data():
    a = multiview(60, 40, n_unlabeled=30, seed=3)
    b = multiview(60, 40, n_unlabeled=30, seed=3)
    c = multiview(60, 40, n_unlabeled=30, seed=4)
    for x, y in zip((a[0].x_train, a[0].x_test, a[3]), (b[0].x_train, b[0].x_test, b[3]),
                    strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0].x_train, c[0].x_train)
    assert not torch.equal(a[0].x_train[:40], a[0].x_test)  # independent streams


@pytest.mark.parametrize("n, fraction", [(103, 0.8), (50, 0.9), (20, 0.0), (31, 1.0)])
def test_class_balance_multi_view_count_and_views_shown(n, fraction):
    C, V = 4, 3
    _, train, _, _ = multiview(n, 10, n_classes=C, n_views=V, patch_dim=12, n_patches=5,
                               multi_fraction=fraction, seed=0)
    counts = torch.bincount(train.y, minlength=C).tolist()
    assert counts == [n // C + (c < n % C) for c in range(C)]
    assert int(train.multi.sum()) == round(fraction * n)
    shown = train.shown.sum(1)
    assert torch.all(shown[train.multi] == V) and torch.all(shown[~train.multi] == 1)
    for c in range(C):  # single-view examples of a class take its views in turn
        per_view = train.shown[(train.y == c) & ~train.multi].sum(0)
        assert int(per_view.max() - per_view.min()) <= 1


def test_each_shown_view_sits_in_its_own_patch_at_its_amplitude():
    patterns = multiview_patterns(3, 2, 8, seed=0)
    s = multiview_set(200, patterns, 4, multi_fraction=0.5, distractor_strength=0.1,
                      noise=0.0, rng=numpy_rng(0, "t"))
    x = s.x.view(200, 4, 8).double().numpy()
    for i in range(200):
        c, slots = int(s.y[i]), s.patch_of_view[i].numpy()
        used = slots[slots >= 0]
        assert len(set(used.tolist())) == len(used)  # one patch per view
        for v in range(2):
            if s.shown[i, v]:
                amp = x[i, slots[v]] @ patterns[c, v]
                assert 0.8 - 1e-6 <= amp <= 1.2 + 1e-6
                np.testing.assert_allclose(x[i, slots[v]], amp * patterns[c, v], atol=1e-6)
            else:
                assert slots[v] == -1
        for p in set(range(4)) - set(used.tolist()):  # a distractor of another class
            coef = np.einsum("cvd,d->cv", patterns, x[i, p])
            assert np.isclose(np.abs(coef).max(), 0.1, atol=1e-6)
            assert np.abs(coef[c]).max() < 1e-6


def test_noise_has_the_stated_standard_deviation():
    patterns = multiview_patterns(2, 2, 4, seed=0)
    clean = multiview_set(4000, patterns, 3, multi_fraction=0.8, distractor_strength=0.0,
                          noise=0.0, rng=numpy_rng(5, "t"))
    noisy = multiview_set(4000, patterns, 3, multi_fraction=0.8, distractor_strength=0.0,
                          noise=0.3, rng=numpy_rng(5, "t"))
    assert torch.equal(clean.y, noisy.y)
    std = float((noisy.x - clean.x).std())
    assert abs(std - 0.3) < 0.01  # 48000 draws: standard error ~0.001
