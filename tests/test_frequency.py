"""Oracle tests of the per-frequency relative error and of first-passage times."""

import math

import pytest
import torch

from learnscope.measures.frequency import first_passage, frequency_errors, sine_sum


def _grid(n):
    return torch.arange(n, dtype=torch.float64) / n


def test_sine_sum_is_the_stated_formula():
    x = _grid(128)
    f = sine_sum(128, [1, 3], [0.5, 2.0], [0.3, -1.1])
    expected = 0.5 * torch.sin(2 * math.pi * x + 0.3) + 2.0 * torch.sin(6 * math.pi * x - 1.1)
    assert torch.allclose(f, expected, atol=1e-14)


def test_known_residual_gives_the_stated_errors():
    """A residual that keeps 30% of k=1, flips the sign of k=3 at 150%, removes k=7 and keeps
    k=15 whole, plus a component at a frequency the target lacks: e = 0.3, 1.5, 0, 1."""
    n, ks = 128, [1, 3, 7, 15]
    amps, phases = [1.0, 0.25, 0.75, 2.0], [0.1, 1.0, -2.0, 2.5]
    target = sine_sum(n, ks, amps, phases)
    residual = sine_sum(n, ks + [20], [0.3 * amps[0], -1.5 * amps[1], 0.0, amps[3], 5.0],
                        phases + [0.7])
    e = frequency_errors(residual, target, ks)
    assert torch.allclose(e, torch.tensor([0.3, 1.5, 0.0, 1.0], dtype=torch.float64),
                          atol=1e-12)


def test_phase_error_counts_in_full():
    """The same amplitude at a shifted phase: |e^{i d} - 1| = 2 sin(d / 2) of the amplitude."""
    n, d = 64, 0.9
    target = sine_sum(n, [5], [1.0], [0.0])
    output = sine_sum(n, [5], [1.0], [d])
    e = frequency_errors(output - target, target, [5])
    assert float(e[0]) == pytest.approx(2 * math.sin(d / 2), abs=1e-12)


def test_rows_are_independent_and_constant_offset_is_ignored():
    n, ks = 32, [2, 5]
    target = sine_sum(n, ks, [1.0, 1.0], [0.0, 0.0])
    rows = torch.stack([0.5 * target, -target + 3.0, torch.zeros(n, dtype=torch.float64)])
    e = frequency_errors(rows, target, ks)
    assert torch.allclose(e, torch.tensor([[0.5, 0.5], [1.0, 1.0], [0.0, 0.0]],
                                          dtype=torch.float64), atol=1e-12)


def test_brute_force_dft():
    g = torch.Generator().manual_seed(0)
    n, ks = 16, [1, 3, 6]
    target = sine_sum(n, ks, [1.0, 0.4, 2.0], [0.2, 0.4, 0.6])
    residual = torch.randn(n, generator=g, dtype=torch.float64)

    def coef(v, k):
        return abs(complex(sum(float(v[j]) * complex(math.cos(2 * math.pi * k * j / n),
                                                     -math.sin(2 * math.pi * k * j / n))
                               for j in range(n))))

    want = [coef(residual, k) / coef(target, k) for k in ks]
    assert frequency_errors(residual, target, ks).tolist() == pytest.approx(want, rel=1e-12)


def test_bad_inputs_are_refused():
    target = sine_sum(16, [1], [1.0], [0.0])
    with pytest.raises(ValueError, match="frequencies"):
        frequency_errors(target, target, [8])  # Nyquist
    with pytest.raises(ValueError, match="frequencies"):
        frequency_errors(target, target, [0])
    with pytest.raises(ValueError, match="energy"):
        frequency_errors(target, target, [2])
    with pytest.raises(ValueError, match="points"):
        frequency_errors(target[:8], target, [1])


def test_first_passage_on_constructed_curves():
    steps = [0, 10, 20, 30, 40]
    assert first_passage(steps, [1.0, 0.6, 0.4, 0.7, 0.1], 0.5) == 20.0  # first, not last
    assert first_passage(steps, [0.4, 0.6, 0.4, 0.7, 0.1], 0.5) == 0.0
    assert first_passage(steps, [1.0, 0.5, 0.5, 0.5, 0.5], 0.5) == math.inf  # strictly below
    assert first_passage(steps, [1.0, math.nan, 0.6, 0.2, 0.1], 0.5) == 30.0
    assert first_passage([], [], 0.5) == math.inf
    with pytest.raises(ValueError):
        first_passage([0, 1], [1.0], 0.5)
