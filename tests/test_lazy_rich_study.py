"""Unit tests of the lazy-vs-rich study's pieces: the hand-written batched GD step, the data and
the config checks (the end-to-end runs are in test_studies_e2e.py)."""

import math

import pytest
import torch

from learnscope.errors import ConfigError
from learnscope.studies.lazy_rich import (
    LazyRichConfig,
    part_a_data,
    part_b_problem,
    scaled_gd_step,
    two_layer,
)


def test_hand_gradient_step_equals_autograd_per_alpha():
    g = torch.Generator().manual_seed(0)
    n, m, d = 9, 6, 4
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    w0 = torch.randn(m, d, generator=g, dtype=torch.float64)
    a0 = torch.randn(m, generator=g, dtype=torch.float64)
    alphas = [0.05, 1.0, 20.0]
    f0 = two_layer(w0, a0, x)
    w = w0.expand(3, -1, -1).clone() + 0.1 * torch.randn(3, m, d, generator=g,
                                                          dtype=torch.float64)
    a = a0.expand(3, -1).clone()
    expected = []
    for k, alpha in enumerate(alphas):
        wk, ak = w[k].clone().requires_grad_(), a[k].clone().requires_grad_()
        big_f = alpha * (two_layer(wk, ak, x) - f0)
        loss = 0.5 * ((big_f - y) ** 2).mean() / alpha ** 2
        gw, ga = torch.autograd.grad(loss, [wk, ak])
        expected.append((w[k] - 0.3 * gw, a[k] - 0.3 * ga, big_f.detach()))
    big_f = scaled_gd_step(w, a, torch.tensor(alphas, dtype=torch.float64), x, y, f0, 0.3)
    for k, (we, ae, fe) in enumerate(expected):
        assert torch.allclose(w[k], we, atol=1e-12)
        assert torch.allclose(a[k], ae, atol=1e-12)
        assert torch.allclose(big_f[k], fe, atol=1e-12)


def test_two_layer_matches_its_formula():
    w = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    a = torch.tensor([1.0, -3.0])
    x = torch.tensor([[1.0, 0.0], [-1.0, 2.0]])
    # h = W x / sqrt(2); f = a . relu(h) / sqrt(2)
    by_hand = [(1 - 3 * 2) / 2, 0.0]
    assert torch.allclose(two_layer(w, a, x), torch.tensor(by_hand))


def test_data_is_deterministic_with_the_stated_target():
    cfg = LazyRichConfig(n_train=50, n_test=4000)
    x, y, xt, yt = part_a_data(cfg, 3)
    x2, y2, _, _ = part_a_data(cfg, 3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(y, x[:, 0] * x[:, 1]) and torch.equal(yt, xt[:, 0] * xt[:, 1])
    assert abs(float((yt ** 2).mean()) - 1.0) < 0.15  # predicting 0 gives test MSE ~1
    assert not torch.equal(part_a_data(cfg, 4)[0], x)
    noisy = part_a_data(LazyRichConfig(n_train=50, n_test=10, label_noise=0.5), 3)
    assert torch.equal(noisy[0], part_a_data(LazyRichConfig(n_train=50, n_test=10), 3)[0])
    assert 0.2 < float((noisy[1] - y).std()) < 1.0


def test_part_b_problem_is_sparse_and_consistent():
    cfg = LazyRichConfig()
    x, y, truth = part_b_problem(cfg, 0)
    assert x.shape == (40, 100) and int((truth != 0).sum()) == 5
    assert math.isclose(float(abs(x @ truth - y).max()), 0.0, abs_tol=1e-12)


@pytest.mark.parametrize("bad", [{"alphas": (0.03, 1.0, 100.0)},
                                 {"kernel_points": 400},
                                 {"b_dim": 30},
                                 {"b_sparsity": 40}])
def test_config_checks(bad):
    with pytest.raises(ConfigError):
        LazyRichConfig(**bad).check()
