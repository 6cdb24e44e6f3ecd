"""The deep-linear study's math: whitened inputs, the teacher, crossing times, and Saxe et al.'s
closed-form trajectory against a trained depth-2 network."""

from __future__ import annotations

import math

import torch
from torch import nn

from learnscope.models import deep_linear
from learnscope.studies.deep_linear import (
    crossing_step,
    linear_teacher,
    saxe_mode_strength,
    whitened_inputs,
)
from learnscope.train.stacked import make_stack

torch.set_num_threads(1)


def test_whitened_inputs_have_identity_covariance_and_are_deterministic():
    x = whitened_inputs(20, 5, seed=3)
    assert x.shape == (20, 5)
    torch.testing.assert_close(x.T @ x / 20, torch.eye(5, dtype=torch.float64))
    assert torch.equal(x, whitened_inputs(20, 5, seed=3))
    assert not torch.equal(x, whitened_inputs(20, 5, seed=4))


def test_linear_teacher_has_the_stated_singular_values_and_modes():
    x = whitened_inputs(30, 6, seed=0)
    y, u, v = linear_teacher(x, (5.0, 2.0, 0.5), seed=1)
    recovered = y.T @ x / 30  # least squares with whitened x: S itself
    torch.testing.assert_close(torch.linalg.svdvals(recovered)[:3],
                               torch.tensor([5.0, 2.0, 0.5], dtype=torch.float64))
    assert float(torch.linalg.svdvals(recovered)[3:].abs().max()) < 1e-10
    torch.testing.assert_close(u.T @ recovered @ v, torch.diag(torch.tensor(
        [5.0, 2.0, 0.5], dtype=torch.float64)))
    torch.testing.assert_close(u.T @ u, torch.eye(3, dtype=torch.float64))
    noisy, _, _ = linear_teacher(x, (5.0, 2.0, 0.5), seed=1, noise=0.1)
    assert 0.05 < float((noisy - y).std()) < 0.15


def test_crossing_step_matches_brute_force_interpolation():
    curve = torch.tensor([0.0, 0.2, 0.4, 0.8, 1.0], dtype=torch.float64)
    assert abs(crossing_step(curve, 0.6) - 2.5) < 1e-12  # between 0.4 (step 2) and 0.8 (step 3)
    assert crossing_step(curve, 0.4) == 2.0
    assert crossing_step(curve, 0.0) == 0.0
    assert math.isnan(crossing_step(curve, 1.5))
    # the first crossing, even when the curve dips back below later
    assert crossing_step(torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64), 0.5) == 0.5
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        c = torch.rand(12, generator=g, dtype=torch.float64).cumsum(0)
        level = float(c[3] + 0.5 * (c[4] - c[3]))
        assert abs(crossing_step(c, level) - 3.5) < 1e-12


def test_saxe_mode_strength_solves_its_ode():
    s, u0 = 3.0, 1e-3
    assert abs(saxe_mode_strength(s, u0, 0.0) - u0) < 1e-15
    h = 1e-6
    for t in (0.1, 0.7, 1.3, 3.0):
        u = saxe_mode_strength(s, u0, t)
        du = (saxe_mode_strength(s, u0, t + h) - saxe_mode_strength(s, u0, t - h)) / (2 * h)
        assert abs(du - 2 * u * (s - u)) < 1e-5 * max(1.0, abs(du))
    t_half = math.log(s / u0 - 1) / (2 * s)
    assert abs(saxe_mode_strength(s, u0, t_half) - s / 2) < 1e-12
    assert abs(saxe_mode_strength(s, u0, 50.0) - s) < 1e-12


def _balanced_aligned_net(u: torch.Tensor, v: torch.Tensor, width: int,
                          u0: float) -> nn.Sequential:
    """A depth-2 deep_linear net whose every teacher mode starts at strength u0, split equally
    between the layers (Saxe's balanced, aligned start)."""
    dim, r = u.shape
    net = deep_linear([dim, width, dim], init_scale=0.0, seed=0)
    e = torch.eye(width, r, dtype=torch.float64)
    with torch.no_grad():
        net[0].weight.copy_(math.sqrt(u0) * e @ v.T)
        net[1].weight.copy_(math.sqrt(u0) * u @ e.T)
    return net


def test_trained_depth2_mode_follows_saxe_closed_form_and_scales_as_inverse_s():
    """Oracle: gradient descent with a small step on the study's loss (mean squared error over
    examples and outputs, whose gradient is 2/dim times Saxe's) follows the closed form; half
    times scale as ln(s/u0 - 1) / (2 s)."""
    dim, n, width, lr, u0, steps = 6, 24, 8, 0.01, 1e-3, 1500
    s_values = (4.0, 2.0, 1.0)
    x = whitened_inputs(n, dim, seed=0)
    y, u, v = linear_teacher(x, s_values, seed=0)
    stack = make_stack([_balanced_aligned_net(u, v, width, u0)], seeds=[0], loss="mse",
                       optimizer="sgd", lr=lr, momentum=0.0, batch_size=None, x_train=x,
                       y_train=y, dtype=torch.float64)
    strengths = []

    def measure(step: int, st: object) -> None:
        out = stack.predict(v.T.unsqueeze(0), per_model=True)[0]  # (r, dim): W v_i
        strengths.append((out * u.T).sum(-1))

    measure(0, stack)
    stack.train(steps=steps, on_step=measure)
    traj = torch.stack(strengths)  # (steps + 1, r)
    time_per_step = lr * 2 / dim
    for i, s in enumerate(s_values):
        for step in range(0, steps + 1, 50):
            want = saxe_mode_strength(s, u0, step * time_per_step)
            assert abs(float(traj[step, i]) - want) < 0.03 * s, (s, step)
        half = crossing_step(traj[:, i] / s, 0.5)
        predicted = math.log(s / u0 - 1) / (2 * s) / time_per_step
        assert abs(half - predicted) / predicted < 0.03, (s, half, predicted)


def test_every_seed_of_a_stack_learns_its_own_teacher():
    """Models of one stack share the inputs but not the teacher: each seed's modes are learned
    (finite half times, strongest first) and its end-to-end map equals its own teacher."""
    from learnscope.studies.base import Trial
    from learnscope.studies.deep_linear import DeepLinearConfig, train_depth

    cfg = DeepLinearConfig(seeds=2, steps=600, log_every=100)
    trials = [Trial({"part": "train", "depth": 2, "init": 0.1, "seed": s}) for s in (0, 1)]
    for out in train_depth(cfg, trials):
        times = [r.value for r in out.records if r.key == "learn_step"]
        assert len(times) == 4 and all(math.isfinite(t) for t in times)
        assert times == sorted(times)
        final = [r.value for r in out.records if r.key == "mode_fraction" and r.step == 600]
        assert all(abs(f - 1) < 1e-3 for f in final)


def test_log_schedule_is_dense_early_and_keeps_both_ends():
    from learnscope.studies.deep_linear import log_schedule

    steps = log_schedule(8000, 120)
    assert {0, 8000} <= steps and max(steps) == 8000 and min(steps) == 0
    assert set(range(0, 11)) <= steps  # every step at first
    assert 60 <= len(steps) <= 121
    late = sorted(s for s in steps if s > 1000)
    assert all(b / a < 1.1 for a, b in zip(late, late[1:], strict=False))  # geometric
    assert log_schedule(5, 20) == set(range(6))


def test_completion_part_depth1_is_the_zero_fill_and_depth3_recovers():
    """The completion part on a small problem: depth 1 ends at the zero fill (error 1 on the
    unobserved entries, up to its tiny random start), depth 3 recovers M* at 3 observations per
    degree of freedom with an effective rank near M*'s, learning the larger singular value
    first; every trial of the batch has its own M* and mask."""
    from learnscope.studies.base import Trial
    from learnscope.studies.deep_linear import DeepLinearConfig, train_completion

    cfg = DeepLinearConfig(completion_n=12, completion_rank=2, obs_per_dof=(1.5, 3.0),
                           completion_steps=3000, completion_log_points=60)
    trials = [Trial({"part": "completion", "depth": d, "obs_per_dof": 3.0, "seed": s})
              for d in (1, 3) for s in (0, 1)]

    def final(out, key):
        (last,) = [r.value for r in out.records if r.key == key
                   and r.step == cfg.completion_steps]
        return last

    shallow = train_completion(cfg, trials[:2])
    deep = train_completion(cfg, trials[2:])
    for out in shallow:
        assert abs(final(out, "unobserved_error") - 1.0) < 1e-3
        assert final(out, "effective_rank") > 4
        assert final(out, "observed_residual") < 1e-8
    for out in deep:
        assert final(out, "unobserved_error") < 0.05
        truth = [r.value for r in out.records if r.key == "truth_effective_rank"][0]
        assert abs(final(out, "effective_rank") - truth) < 0.1
        t1, t2 = [r.value for r in out.records if r.key == "sv_learn_step"]
        assert t1 < t2
    assert final(deep[0], "observed_residual") != final(deep[1], "observed_residual")
    (count,) = [r.value for r in deep[0].records if r.key == "observed_entries"]
    assert count == round(3.0 * 2 * (2 * 12 - 2))


def test_completion_config_checks():
    import pytest

    from learnscope.errors import ConfigError
    from learnscope.studies.deep_linear import DeepLinearConfig

    for bad in ({"completion_depths": (2, 3, 4)}, {"completion_depths": (1, 2, 2)},
                {"obs_per_dof": (2.0, 1.5)}, {"completion_n": 8, "completion_rank": 2},
                {"completion_rank": 20}):
        with pytest.raises(ConfigError):
            DeepLinearConfig(**bad).check()
