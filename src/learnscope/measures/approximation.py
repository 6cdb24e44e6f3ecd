"""Steep sigmoids as steps: the textbook construction behind universal approximation.

A sigmoid ``sigma(k (x - c))`` tends to the unit step at ``c`` as the steepness ``k`` grows, so a
sum of ``N`` of them, weighted by the target's increments between the knots ``j/N``, is a
staircase. On ``[0, 1]`` with steps at the midpoints ``(j + 1/2)/N`` the staircase takes, away
from its steps, the target's value at the nearest knot, so its sup error is at most ``L / (2N)``
for an ``L``-Lipschitz target: the error falls as ``1/N`` as long as ``k`` grows with ``N``. With
``k`` fixed each sigmoid is wider than a step once ``N`` exceeds about ``k``, and the error stops
falling. These functions are the exact arithmetic of that argument (float64 NumPy), and a
random smooth target with a known Lipschitz constant to test it on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from learnscope.seeding import numpy_rng

__all__ = ["TrigTarget", "loglog_slope", "nearest_knot", "random_trig_target", "sigmoid",
           "sigmoid_staircase", "staircase_centers"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, written with tanh so that it never overflows for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def staircase_centers(n: int) -> np.ndarray:
    """Where the ``n`` steps sit: the midpoints ``(j + 1/2)/n`` between the knots ``j/n``."""
    if n < 1:
        raise ValueError(f"need at least one step, got n={n}")
    return (np.arange(n, dtype=np.float64) + 0.5) / n


def sigmoid_staircase(x: np.ndarray, knot_values: np.ndarray, steepness: float) -> np.ndarray:
    """``v_0 + sum_j (v_{j+1} - v_j) sigma(k (x - (j + 1/2)/N))``: a one-hidden-layer sigmoid
    net with ``N = len(knot_values) - 1`` units whose output weights are the target's
    increments between the knots ``j/N`` (``knot_values[j] = f(j/N)``)."""
    values = np.asarray(knot_values, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError("knot_values needs the target at the N+1 knots j/N, N >= 1")
    if not steepness > 0:
        raise ValueError(f"steepness must be positive, got {steepness}")
    centers = staircase_centers(len(values) - 1)
    xs = np.asarray(x, dtype=np.float64)
    units = sigmoid(steepness * (xs[..., None] - centers))
    return values[0] + units @ np.diff(values)


def nearest_knot(x: np.ndarray, knot_values: np.ndarray) -> np.ndarray:
    """The limit of the staircase as ``k -> inf``: the target's value at the nearest knot
    ``j/N`` (ties, exactly at a step, go to the right)."""
    values = np.asarray(knot_values, dtype=np.float64)
    n = len(values) - 1
    index = np.clip(np.floor(np.asarray(x, dtype=np.float64) * n + 0.5), 0, n).astype(int)
    return values[index]


def loglog_slope(sizes: np.ndarray, errors: np.ndarray) -> float:
    """Least-squares slope of ``log error`` against ``log size``: -1 for an error ``~ 1/N``,
    0 for a plateau. NaN when fewer than two points are positive and finite."""
    n = np.asarray(sizes, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    keep = (n > 0) & (e > 0) & np.isfinite(n) & np.isfinite(e)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(n[keep]), np.log(e[keep]), 1)[0])


@dataclass(frozen=True)
class TrigTarget:
    """``f(x) = sum_m a_m sin(2 pi m x + phi_m)``, m = 1..degree: smooth, with a Lipschitz
    constant that is its largest slope on [0, 1]."""

    amplitudes: tuple[float, ...]
    phases: tuple[float, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        xs = np.asarray(x, dtype=np.float64)[..., None]
        m = np.arange(1, len(self.amplitudes) + 1)
        return (np.asarray(self.amplitudes) * np.sin(2 * np.pi * m * xs
                                                     + np.asarray(self.phases))).sum(-1)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        xs = np.asarray(x, dtype=np.float64)[..., None]
        m = np.arange(1, len(self.amplitudes) + 1)
        return (np.asarray(self.amplitudes) * 2 * np.pi * m
                * np.cos(2 * np.pi * m * xs + np.asarray(self.phases))).sum(-1)

    def lipschitz(self, grid: int = 100_001) -> float:
        """The largest ``|f'|`` on [0, 1] (on a fine grid: the derivative is smooth, so the
        grid's miss is of order ``f''' / grid^2``)."""
        return float(np.abs(self.derivative(np.linspace(0.0, 1.0, grid))).max())


def random_trig_target(seed: int, degree: int, lipschitz: float) -> TrigTarget:
    """A random trigonometric polynomial (amplitudes ``N(0, 1)/m``, uniform phases) scaled so
    that its Lipschitz constant is ``lipschitz``: every seed is a different target with the same
    ``L``, so the theory's bound ``L/(2N)`` is the same for all of them."""
    if degree < 1 or not lipschitz > 0:
        raise ValueError("need degree >= 1 and a positive Lipschitz constant")
    rng = numpy_rng(seed, "trig-target", degree)
    amplitudes = rng.standard_normal(degree) / np.arange(1, degree + 1)
    phases = rng.uniform(0.0, 2 * np.pi, degree)
    raw = TrigTarget(tuple(float(a) for a in amplitudes), tuple(float(p) for p in phases))
    scale = lipschitz / raw.lipschitz()
    return TrigTarget(tuple(float(a * scale) for a in amplitudes), raw.phases)
