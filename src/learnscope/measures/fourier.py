"""Fourier concentration of token embeddings: a progress measure of modular arithmetic.

A network that computes (a + b) mod p with the trigonometric identities (Nanda et al. 2023)
embeds token a through cos(2 pi k a / p) and sin(2 pi k a / p) for a few key frequencies k.
Read each hidden unit's weights over the p tokens (one column of an embedding, one row of a
one-hot first layer) as a signal on the cycle Z_p: its concentration is the fraction of its
mean-removed energy in its single largest frequency (k and p - k count as one, the two halves
of a real sinusoid). A pure sinusoid scores 1, a square wave 8 / pi^2 = 0.81, white noise about
(ln(p / 2) + 0.58) / (p / 2) (0.14 for p = 59). Units are combined energy-weighted, so units
that carry little weight count little.
"""

from __future__ import annotations

import math

import torch

__all__ = ["fourier_concentration", "frequency_energy", "per_unit_concentration"]


def frequency_energy(weights: torch.Tensor) -> torch.Tensor:
    """Energy of each unit's signal at each frequency 1..floor(p/2): ``(units, p // 2)``.

    ``weights`` is ``(units, p)`` (one row per unit, one column per token). The mean (frequency
    0) is removed; the energies of each row sum to its mean-removed squared norm (Parseval)."""
    if weights.dim() != 2 or weights.shape[1] < 2:
        raise ValueError(f"weights must be (units, p) with p >= 2, got {tuple(weights.shape)}")
    w = weights.detach().double()
    p = w.shape[1]
    spectrum = torch.fft.rfft(w - w.mean(1, keepdim=True), dim=1).abs() ** 2 / p
    energy = 2 * spectrum[:, 1:]
    if p % 2 == 0:
        energy[:, -1] /= 2  # the Nyquist frequency has no mirror image
    return energy


def per_unit_concentration(weights: torch.Tensor) -> torch.Tensor:
    """Each unit's fraction of mean-removed energy in its largest frequency (NaN for a constant
    row, which has no energy to place)."""
    energy = frequency_energy(weights)
    total = energy.sum(1)
    return torch.where(total > 0, energy.max(1).values / total.clamp_min(1e-300),
                       torch.full_like(total, math.nan))


def fourier_concentration(weights: torch.Tensor) -> float:
    """Energy-weighted mean over units of :func:`per_unit_concentration`: sum over units of the
    energy in each unit's top frequency over the total energy (NaN if every row is constant).

    >>> t = torch.arange(59.0)
    >>> round(fourier_concentration(torch.stack([torch.cos(2 * math.pi * 5 * t / 59)])), 6)
    1.0
    """
    energy = frequency_energy(weights)
    total = float(energy.sum())
    return float(energy.max(1).values.sum()) / total if total > 0 else math.nan
