"""Per-frequency error of a fit on an equispaced periodic grid, and first-passage times.

Spectral bias is read frequency by frequency: sample the target f and the network's output on
n equispaced points of one period, take the residual r = net - f, and compare the Fourier
coefficient of r at each target frequency k with that of f: e_k = |R_k| / |F_k|. e_k = 1 means
the component is untouched (the network output has nothing at k), 0 that it is fitted exactly.
With an integer number of periods on the grid each sinusoid of the target is exactly one FFT bin,
so nothing leaks between frequencies; dividing by |F_k| makes a weak component and a strong one
comparable (the raw |R_k| would mix amplitude with learning speed).

The learning time of a component is a first-passage time: the first logged step at which e_k
drops below a threshold. Adam can briefly un-learn a component it had fitted, so "e_k at a fixed
step" is a noisy summary; the first passage is not. A component that never gets below the
threshold within the budget is censored: its time is only known to exceed the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["first_passage", "frequency_errors", "sine_sum"]


def sine_sum(n_points: int, frequencies: Sequence[int], amplitudes: Sequence[float],
             phases: Sequence[float]) -> torch.Tensor:
    """``sum_k A_k sin(2 pi k x + phi_k)`` at ``x = i / n_points`` (``i = 0..n-1``), float64:
    whole periods of every component on the grid, so each is exactly one FFT bin."""
    if not len(frequencies) == len(amplitudes) == len(phases):
        raise ValueError("frequencies, amplitudes and phases need the same length")
    x = torch.arange(n_points, dtype=torch.float64) / n_points
    out = torch.zeros(n_points, dtype=torch.float64)
    for k, a, phi in zip(frequencies, amplitudes, phases, strict=True):
        out += float(a) * torch.sin(2 * math.pi * int(k) * x + float(phi))
    return out


def frequency_errors(residual: torch.Tensor, target: torch.Tensor,
                     frequencies: Sequence[int]) -> torch.Tensor:
    """Relative error per frequency ``|FFT(residual)[k]| / |FFT(target)[k]|``, ``(..., F)``.

    ``residual`` is ``(..., n)`` (any leading axes, e.g. one row per model) and ``target``
    ``(n,)`` or broadcastable to it: samples on ``n`` equispaced points of one period. Every
    frequency must lie in ``1..n // 2 - 1`` (below Nyquist, where a real sinusoid is one bin) and
    carry target energy (a zero coefficient has no relative error).
    """
    n = residual.shape[-1]
    if target.shape[-1] != n:
        raise ValueError(f"residual has {n} points but target has {target.shape[-1]}")
    ks = [int(k) for k in frequencies]
    if not ks or any(k < 1 or k >= n // 2 for k in ks):
        raise ValueError(f"frequencies must lie in 1..{n // 2 - 1} for {n} points, got {ks}")
    index = torch.tensor(ks)
    r_hat = torch.fft.rfft(residual.detach().double(), dim=-1).abs().index_select(-1, index)
    f_hat = torch.fft.rfft(target.detach().double(), dim=-1).abs().index_select(-1, index)
    if bool((f_hat <= 1e-12 * n).any()):
        raise ValueError("the target has (almost) no energy at some of these frequencies")
    return r_hat / f_hat


def first_passage(steps: Sequence[float], values: Sequence[float], threshold: float) -> float:
    """The first step at which ``values`` is below ``threshold`` (strictly); ``inf`` when it
    never is (censored: later than the last step). ``steps`` increase; NaN values never pass.

    >>> first_passage([0, 10, 20, 30], [1.0, 0.6, 0.4, 0.7], 0.5)
    20.0
    >>> first_passage([0, 10], [1.0, 0.9], 0.5)
    inf
    """
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps but {len(values)} values")
    for step, value in zip(steps, values, strict=True):
        if value < threshold:  # NaN compares False: never a passage
            return float(step)
    return math.inf
