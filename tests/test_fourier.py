"""Oracle tests of the per-unit Fourier concentration (closed forms and Parseval)."""

import math

import pytest
import torch

from learnscope.measures.fourier import (
    fourier_concentration,
    frequency_energy,
    per_unit_concentration,
)


@pytest.mark.parametrize("p", [59, 60, 97])
def test_pure_sinusoid_concentrates_fully(p):
    t = torch.arange(p, dtype=torch.float64)
    rows = torch.stack([3.0 * torch.cos(2 * math.pi * k * t / p + phase) + 7.0
                        for k, phase in [(1, 0.0), (5, 1.3), (p // 2 - 1, -0.4)]])
    assert torch.allclose(per_unit_concentration(rows), torch.ones(3, dtype=torch.float64),
                          atol=1e-12)
    assert fourier_concentration(rows) == pytest.approx(1.0, abs=1e-12)
    top = frequency_energy(rows).argmax(1) + 1
    assert top.tolist() == [1, 5, p // 2 - 1]


def test_nyquist_sinusoid_of_even_p():
    t = torch.arange(8, dtype=torch.float64)
    assert fourier_concentration(torch.cos(math.pi * t)[None]) == pytest.approx(1.0)


def test_square_wave_matches_8_over_pi_squared():
    """A square wave's energy is 1/k^2 at odd harmonics k: the fundamental holds 8/pi^2."""
    n = 1024
    square = torch.where(torch.arange(n) < n // 2, 1.0, -1.0)[None]
    assert fourier_concentration(square) == pytest.approx(8 / math.pi**2, abs=1e-5)
    square_59 = torch.where(torch.arange(59) < 29, 1.0, -1.0)[None]
    assert fourier_concentration(square_59) == pytest.approx(8 / math.pi**2, abs=0.01)


def test_white_noise_is_spread_over_frequencies():
    """The largest of p/2 exponential energies holds about (ln(p/2) + 0.58) / (p/2)."""
    g = torch.Generator().manual_seed(0)
    value = fourier_concentration(torch.randn(512, 59, generator=g))
    expected = (math.log(29) + 0.5772) / 29
    assert value == pytest.approx(expected, abs=0.02)
    assert value < 0.2


def test_parseval_and_energy_weighting():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 11, generator=g, dtype=torch.float64)
    centred = w - w.mean(1, keepdim=True)
    assert torch.allclose(frequency_energy(w).sum(1), (centred**2).sum(1), atol=1e-12)
    even = torch.randn(4, 10, generator=g, dtype=torch.float64)
    assert torch.allclose(frequency_energy(even).sum(1),
                          ((even - even.mean(1, keepdim=True))**2).sum(1), atol=1e-12)
    # a tiny noisy unit barely moves the energy-weighted mean of a big clean one
    t = torch.arange(11, dtype=torch.float64)
    rows = torch.stack([10 * torch.sin(2 * math.pi * 2 * t / 11), 1e-3 * w[0]])
    assert fourier_concentration(rows) == pytest.approx(1.0, abs=1e-6)
    assert per_unit_concentration(rows)[1] < 0.9


def test_constant_rows_have_no_concentration():
    rows = torch.ones(2, 7)
    assert torch.isnan(per_unit_concentration(rows)).all()
    assert math.isnan(fourier_concentration(rows))
    with pytest.raises(ValueError):
        fourier_concentration(torch.ones(5))
