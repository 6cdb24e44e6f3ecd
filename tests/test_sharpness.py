"""Oracle tests for learnscope.measures.sharpness (warm-started power iteration)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from learnscope.measures.sharpness import SharpnessTracker, power_sharpness
from learnscope.testing import assert_model_unchanged, snapshot_model

torch.set_num_threads(1)
DT = torch.float64


class Quadratic(nn.Module):
    """forward returns the parameter; with ``quad_loss`` the loss is 0.5 w^T A w (Hessian A)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w


def quad_loss(out: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return 0.5 * out @ a @ out


def spectrum_matrix(eigenvalues: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, Q)`` with ``A = Q diag(eigenvalues) Q^T`` for a random orthogonal ``Q``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g,
                                       dtype=DT))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=DT)) @ q.T, q


def test_power_steps_follow_the_closed_form_rayleigh_quotient():
    """From v0 = (a, b) on diag(l1, l2), k power steps return the Rayleigh quotient of
    H^(k-1) v0: (a^2 l1^(2k-1) + b^2 l2^(2k-1)) / (a^2 l1^(2k-2) + b^2 l2^(2k-2))."""
    l1, l2, a, b = 3.0, 2.0, 0.3, 0.8
    h = torch.diag(torch.tensor([l1, l2], dtype=DT))
    for k in (1, 2, 5, 9):
        r = power_sharpness(Quadratic(2), quad_loss, torch.zeros(1), h, iters=k,
                            start=[torch.tensor([a, b], dtype=DT)])
        m = k - 1
        expected = (a**2 * l1**(2 * m + 1) + b**2 * l2**(2 * m + 1)) / (
            a**2 * l1**(2 * m) + b**2 * l2**(2 * m))
        assert r.value == pytest.approx(expected, rel=1e-12)
        assert r.iterations == k and r.method == "power"


def test_enough_iterations_find_the_top_eigenvalue():
    eig = [7.0, 3.0, 1.0, 0.5, -0.2, 0.1]
    a, _ = spectrum_matrix(eig)
    r = power_sharpness(Quadratic(6), quad_loss, torch.zeros(1), a, iters=200, generator=1)
    assert r.value == pytest.approx(7.0, rel=1e-10)
    assert r.residual < 1e-6


def test_start_at_the_eigenvector_is_exact_in_one_step():
    a, q = spectrum_matrix([5.0, 4.9, 1.0, 0.3])
    r = power_sharpness(Quadratic(4), quad_loss, torch.zeros(1), a, iters=1,
                        start=[3.0 * q[:, 0]])  # any scale: the start is normalised
    assert r.value == pytest.approx(5.0, rel=1e-12)
    assert r.residual == pytest.approx(0.0, abs=1e-10)
    assert torch.allclose(r.vector[0].abs(), q[:, 0].abs(), atol=1e-12)


def test_zero_start_falls_back_to_a_random_vector():
    a, _ = spectrum_matrix([2.0, 1.0, 0.5])
    r = power_sharpness(Quadratic(3), quad_loss, torch.zeros(1), a, iters=100,
                        start=[torch.zeros(3, dtype=DT)], generator=0)
    assert r.value == pytest.approx(2.0, rel=1e-8)


def test_warm_start_tracks_a_slowly_rotating_hessian_better_than_a_cold_start():
    """Close top eigenvalues (10 vs 9.5): 3 cold power steps undershoot, 3 steps started from
    the previous eigenvector stay on the slowly rotating top eigenvector."""
    eig = torch.tensor([10.0, 9.5, 4.0, 2.0, 1.0, 0.5, 0.2, 0.1], dtype=DT)
    _, q = spectrum_matrix(eig.tolist(), seed=3)
    g = torch.Generator().manual_seed(5)
    skew = torch.randn(8, 8, generator=g, dtype=DT)
    rotation = torch.linalg.matrix_exp(0.02 * (skew - skew.T))  # a small rotation per step
    tracker = SharpnessTracker(quad_loss, torch.zeros(1), None, iters=3, first_iters=100,
                               generator=0)
    model = Quadratic(8)
    warm_errors, cold_errors = [], []
    for t in range(15):
        a = q @ torch.diag(eig) @ q.T
        tracker.targets = a
        warm = tracker(model)
        cold = power_sharpness(model, quad_loss, torch.zeros(1), a, iters=3, generator=100 + t)
        assert warm.iterations <= 100 if t == 0 else warm.iterations == 3
        if t > 0:
            warm_errors.append(abs(warm.value - 10.0) / 10.0)
            cold_errors.append(abs(cold.value - 10.0) / 10.0)
        q = rotation @ q
    assert max(warm_errors) < 0.005
    assert sum(cold_errors) / len(cold_errors) > 5 * sum(warm_errors) / len(warm_errors)


def test_matches_the_exact_hessian_of_a_small_tanh_network():
    """Brute force: the full Hessian of a 3-4-2 tanh MLP's square loss by autograd."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    x = torch.randn(16, 3, generator=g, dtype=DT)
    y = torch.randn(16, 2, generator=g, dtype=DT)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out - target) ** 2).sum(1).mean()

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def flat_loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(flat_loss, flat0)
    eig = torch.linalg.eigvalsh(hessian)
    top = float(eig[eig.abs().argmax()])
    before = snapshot_model(model)
    r = power_sharpness(model, loss_fn, x, y, iters=3000, generator=0)
    assert_model_unchanged(model, before)
    assert r.value == pytest.approx(top, rel=1e-6)


def test_tracker_is_deterministic_for_a_seed():
    a, _ = spectrum_matrix([3.0, 2.9, 1.0])
    runs = []
    for _ in range(2):
        tracker = SharpnessTracker(quad_loss, torch.zeros(1), a, iters=2, first_iters=4,
                                   generator=7)
        runs.append([tracker(Quadratic(3)).value for _ in range(3)])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]  # the warm start continued the iteration


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_iteration_counts_are_refused(bad):
    a, _ = spectrum_matrix([1.0, 0.5])
    with pytest.raises(ValueError, match="iters"):
        power_sharpness(Quadratic(2), quad_loss, torch.zeros(1), a, iters=bad)
    with pytest.raises(ValueError, match="iters"):
        SharpnessTracker(quad_loss, torch.zeros(1), a, iters=bad)


def test_start_with_the_wrong_shape_is_refused():
    a, _ = spectrum_matrix([1.0, 0.5])
    with pytest.raises(ValueError, match="shape"):
        power_sharpness(Quadratic(2), quad_loss, torch.zeros(1), a,
                        start=[torch.ones(3, dtype=DT)])
