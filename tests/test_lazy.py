"""Oracle tests of learnscope.measures.lazy: closed-form NTK, linearised GD, l1/l2 interpolants,
the diagonal linear network."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.measures.lazy import (
    diagonal_net_gd,
    linearised_gd,
    min_l1_interpolant,
    min_l2_interpolant,
    two_layer_relu_ntk,
)
from learnscope.measures.ntk import empirical_ntk
from learnscope.seeding import numpy_rng, torch_generator


class _TwoLayer(nn.Module):
    def __init__(self, w: torch.Tensor, a: torch.Tensor) -> None:
        super().__init__()
        self.w, self.a = nn.Parameter(w.clone()), nn.Parameter(a.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, d = self.w.shape
        return (torch.relu(x @ self.w.T / math.sqrt(d)) @ self.a / math.sqrt(m))[:, None]


def test_closed_form_ntk_equals_empirical_ntk():
    g = torch_generator(0, "test-lazy-ntk")
    w = torch.randn(7, 4, generator=g, dtype=torch.float64)
    a = torch.randn(7, generator=g, dtype=torch.float64)
    x1 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    model = _TwoLayer(w, a)
    assert torch.allclose(two_layer_relu_ntk(w, a, x1), empirical_ntk(model, x1), atol=1e-12)
    assert torch.allclose(two_layer_relu_ntk(w, a, x1, x2), empirical_ntk(model, x1, x2),
                          atol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 30.0])
def test_linearised_gd_on_a_linear_model_equals_its_own_gd(alpha):
    """A model linear in its weights is its own linearisation: GD on the scaled model
    alpha (phi w - phi w0) with loss 0.5 mean (F - y)^2 / alpha^2, run step by step, equals
    the closed form with K = phi phi^T, on the train and on other points."""
    rng = numpy_rng(1, "test-lazy-linear")
    phi = torch.tensor(rng.standard_normal((8, 12)))
    phi_new = torch.tensor(rng.standard_normal((5, 12)))
    y = torch.tensor(rng.standard_normal(8))
    w0 = torch.tensor(rng.standard_normal(12))
    w, lr, steps = w0.clone(), 0.3, 57
    for _ in range(steps):
        big_f = alpha * (phi @ (w - w0))
        w -= lr * phi.T @ (big_f - y) / (len(y) * alpha)
    train, cross = linearised_gd(phi @ phi.T, y, lr=lr, steps=steps, k_cross=phi_new @ phi.T)
    assert torch.allclose(train, alpha * phi @ (w - w0), atol=1e-12)
    assert torch.allclose(cross, alpha * phi_new @ (w - w0), atol=1e-12)


def test_kernel_interpolant_is_the_limit_and_interpolates():
    rng = numpy_rng(2, "test-lazy-interp")
    phi = torch.tensor(rng.standard_normal((6, 10)))
    y = torch.tensor(rng.standard_normal(6))
    phi_new = torch.tensor(rng.standard_normal((4, 10)))
    k, kx = phi @ phi.T, phi_new @ phi.T
    train, cross = linearised_gd(k, y, lr=0.1, steps=None, k_cross=kx)
    assert torch.allclose(train, y, atol=1e-10)
    # the min-norm interpolant in feature space: w = phi^+ y
    assert torch.allclose(cross, phi_new @ torch.linalg.pinv(phi) @ y, atol=1e-10)
    _, late = linearised_gd(k, y, lr=0.1, steps=200_000, k_cross=kx)
    assert torch.allclose(late, cross, atol=1e-8)


def test_linearised_gd_with_a_singular_kernel_and_a_divergent_step():
    phi = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # rank 1
    y = torch.tensor([1.0, 3.0], dtype=torch.float64)
    train, _ = linearised_gd(phi @ phi.T, y, lr=0.5, steps=200)
    assert torch.allclose(train, torch.tensor([2.0, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="diverges"):
        linearised_gd(phi @ phi.T, y, lr=3.0, steps=5)


def test_min_l1_recovers_a_sparse_vector_and_min_l2_is_the_pinv():
    rng = numpy_rng(3, "test-lazy-l1")
    x = rng.standard_normal((12, 30))
    truth = np.zeros(30)
    truth[[2, 17]] = [1.5, -2.0]
    y = x @ truth
    l1 = min_l1_interpolant(x, y)
    assert np.allclose(x @ l1, y, atol=1e-8)
    assert np.allclose(l1, truth, atol=1e-7)
    l2 = min_l2_interpolant(x, y)
    assert np.allclose(x @ l2, y, atol=1e-10)
    assert np.allclose(l2, x.T @ np.linalg.solve(x @ x.T, y), atol=1e-10)  # row space
    assert np.abs(l1).sum() < np.abs(l2).sum() and np.linalg.norm(l2) < np.linalg.norm(l1)


def test_min_l1_brute_force_on_two_unknowns():
    """One equation x1 + 2 x2 = 2: the l1 minimiser puts everything on the larger coefficient."""
    l1 = min_l1_interpolant(np.array([[1.0, 2.0]]), np.array([2.0]))
    assert np.allclose(l1, [0.0, 1.0], atol=1e-9)


def test_diagonal_net_small_init_is_l1_large_init_is_l2():
    rng = numpy_rng(4, "test-lazy-diag")
    x = rng.standard_normal((15, 40))
    truth = np.zeros(40)
    truth[:3] = 1.0
    y = x @ truth
    l1, l2 = min_l1_interpolant(x, y), min_l2_interpolant(x, y)
    res = diagonal_net_gd(x, y, [0.01, 30.0], lr=0.02, tol=1e-10)
    assert res.converged.all() and (res.train_mse < 1e-10).all()
    gap = np.linalg.norm(l2 - l1)
    assert np.linalg.norm(res.beta[1] - l2) < 1e-3 * gap  # large init: min-l2 (kernel)
    assert np.linalg.norm(res.beta[0] - l1) < 0.15 * gap  # small init: near min-l1
    assert np.linalg.norm(res.beta[0] - l1) < np.linalg.norm(res.beta[0] - l2) / 5


def test_diagonal_net_rows_are_independent_and_deterministic():
    rng = numpy_rng(5, "test-lazy-diag-rows")
    x = rng.standard_normal((6, 10))
    y = x @ rng.standard_normal(10)
    both = diagonal_net_gd(x, y, [0.1, 1.0], max_steps=3000)
    alone = diagonal_net_gd(x, y, [1.0], max_steps=3000)
    assert np.allclose(both.beta[1], alone.beta[0], rtol=0, atol=1e-12)
    assert both.steps[1] == alone.steps[0]
    again = diagonal_net_gd(x, y, [0.1, 1.0], max_steps=3000)
    assert np.array_equal(both.beta, again.beta)
