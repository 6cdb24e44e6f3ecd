"""Unit and oracle tests for the edge-of-stability study's helpers (the tiny and quick runs are
in tests/test_studies_e2e.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from learnscope.config import build_config
from learnscope.measures.curvature import top_hessian_eigenvalue
from learnscope.measures.sharpness import power_sharpness
from learnscope.studies import get_study
from learnscope.studies.edge_of_stability import (
    EdgeOfStabilityConfig,
    _summary,
    gd_steps,
    square_loss,
    up_step_fraction,
)

torch.set_num_threads(1)


def test_every_step_size_trains_for_the_same_flow_time():
    cfg = EdgeOfStabilityConfig()
    assert [gd_steps(cfg, e) for e in (0.05, 0.1, 0.2, 0.4)] == [5000, 2500, 1250, 1000]
    assert gd_steps(EdgeOfStabilityConfig(flow_time=3.0, min_steps=1), 0.3) == 10


def test_square_loss_is_half_the_summed_squares_averaged_over_examples():
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    expected = 0.5 * ((1 + 4) + (1 + 4) + (9 + 1)) / 3
    assert float(square_loss(out, target)) == pytest.approx(expected)


def test_sharpness_of_a_linear_model_is_the_top_eigenvalue_of_the_input_covariance():
    """Closed form: for out = W x the square loss has Hessian I_outputs (x) X^T X / n, so its
    top eigenvalue is lambda_max(X^T X) / n, whatever the targets (a mean over the outputs
    instead would divide it by their number)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, 6,
                                                                              dtype=torch.float64)
    y = torch.randn(50, 3, generator=g, dtype=torch.float64)
    model = nn.Linear(6, 3, bias=False).to(torch.float64)
    exact = float(torch.linalg.eigvalsh(x.T @ x / 50)[-1])
    power = power_sharpness(model, square_loss, x, y, iters=500, generator=0).value
    lanczos = top_hessian_eigenvalue(model, square_loss, x, y, iters=30, tol=1e-10).value
    assert power == pytest.approx(exact, rel=1e-8)
    assert lanczos == pytest.approx(exact, rel=1e-8)

    def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out - target) ** 2).mean()

    per_output = top_hessian_eigenvalue(model, mean_loss, x, y, iters=30, tol=1e-10).value
    assert per_output == pytest.approx(exact / 3, rel=1e-8)


def test_gd_on_a_quadratic_is_stable_exactly_below_two_over_eta():
    """The threshold the study compares with: GD on 0.5 * lam * w^2 multiplies w by
    (1 - eta * lam) per step, so it converges iff lam < 2 / eta."""
    lam = 4.0
    for eta, stable in ((0.49, True), (0.51, False)):
        w = torch.tensor(1.0)
        for _ in range(2000):
            w = w - eta * lam * w
        assert (abs(float(w)) < 1e-3) is stable
    assert 2 / 0.49 > lam > 2 / 0.51


def test_up_step_fraction_counts_rises_in_the_range():
    losses = [5.0, 4.0, 4.5, 3.0, 3.5, 3.4, 3.6]
    assert up_step_fraction(losses, 0, 6) == pytest.approx(3 / 6)
    assert up_step_fraction(losses, 0, 1) == 0.0
    assert up_step_fraction(losses, 1, 3) == pytest.approx(1 / 2)
    assert up_step_fraction(losses, 3, 100) == pytest.approx(2 / 3)  # clipped at the end
    assert math.isnan(up_step_fraction(losses, 6, 6))


def test_summary_finds_the_edge_and_splits_the_run_there():
    cfg = EdgeOfStabilityConfig(reach=0.9)
    eta = 0.2  # 2/eta = 10, the edge at 9
    checks = [(0, 2.0), (2, 6.0), (4, 9.5), (6, 10.5), (8, 9.5)]
    losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.7, 0.5, 0.55, 0.2]
    out = {r.key: r.value for r in _summary(cfg, eta, losses, checks, end=8)}
    assert out["initial_sharpness"] == 2.0 and out["eligible"] == 1.0
    assert out["reach_step"] == 4.0
    assert out["mean_ratio_after_reach"] == pytest.approx((0.95 + 1.05 + 0.95) / 3)
    assert out["max_ratio_after_reach"] == pytest.approx(1.05)
    assert out["max_sharpness"] == 10.5 and out["max_ratio"] == pytest.approx(1.05)
    assert out["up_steps_before_reach"] == 0.0
    assert out["up_steps_after_reach"] == pytest.approx(2 / 4)
    assert out["loss_at_reach"] == 0.6 and out["loss_end"] == 0.2
    assert out["loss_end_over_reach"] == pytest.approx(0.2 / 0.6)


def test_summary_of_a_run_that_never_reaches_or_starts_at_the_edge():
    cfg = EdgeOfStabilityConfig(reach=0.9)
    never = {r.key: r.value for r in _summary(cfg, 0.05, [1.0, 0.5, 0.4],
                                             [(0, 5.0), (2, 30.0)], end=2)}
    assert never["max_ratio"] == pytest.approx(0.75) and never["max_sharpness"] == 30.0
    assert all(math.isnan(never[k]) for k in ("reach_step", "mean_ratio_after_reach",
                                              "up_steps_before_reach", "loss_end_over_reach"))
    above = {r.key: r.value for r in _summary(cfg, 0.4, [1.0, 1.2, 0.6],
                                             [(0, 5.5), (2, 5.2)], end=2)}
    assert above["eligible"] == 0.0 and above["reach_step"] == 0.0
    assert math.isnan(above["up_steps_before_reach"])  # no phase before the edge
    assert above["up_steps_after_reach"] == pytest.approx(1 / 2)


def test_tiny_size_and_neighbours_are_valid_configs():
    study = get_study("edge-of-stability")
    tiny = build_config(EdgeOfStabilityConfig, study.quick, study.tiny)
    assert max(gd_steps(tiny, e) for e in (*tiny.step_sizes, tiny.control_step_size)) <= 200
    quick = build_config(EdgeOfStabilityConfig, study.quick)
    assert len(study.neighbours(quick)) >= 4
    for overrides in study.neighbours(quick).values():
        build_config(EdgeOfStabilityConfig, study.quick, overrides)  # in bounds
