"""Exact facts of over-parameterized least squares that a student can check by hand.

Gradient descent on ``||X w - y||^2 / (2 n)`` moves ``w`` only inside the row space of ``X``
(every gradient is ``X^T r / n``), so the part of the start ``w0`` in the null space of ``X``
never changes and the limit is ``w0 + X^+ (y - X w0)``: the minimum-norm interpolant ``X^+ y``
plus the null-space part of ``w0`` (from zero: ``X^+ y`` itself). The spectrum of
``X^T X / n`` for i.i.d. unit-variance entries follows the Marchenko-Pastur law
(Marchenko & Pastur 1967) with ratio ``q = d / n``; its smallest non-zero edge
``(1 - sqrt q)^2`` touches zero at ``d = n``, where the condition number blows up.
"""

from __future__ import annotations

import math

import numpy as np

from learnscope.models.regression import min_norm_fit

__all__ = [
    "condition_number",
    "gd_least_squares",
    "ks_distance_to_mp",
    "mp_cdf",
    "mp_density",
    "mp_edges",
    "null_space_part",
    "projection_solution",
]


def projection_solution(x: np.ndarray, y: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """``w0 + X^+ (y - X w0)``: where gradient descent from ``w0`` converges."""
    return w0 + min_norm_fit(x, y - x @ w0)


def null_space_part(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The component of ``w`` in the null space of ``X``: ``w - X^+ X w``."""
    return w - min_norm_fit(x, x @ w)


def gd_least_squares(x: np.ndarray, y: np.ndarray, w0: np.ndarray, lr: float,
                     steps: int) -> np.ndarray:
    """``steps`` explicit full-batch updates ``w <- w - lr X^T (X w - y) / n`` from ``w0``.

    Iterated for real (not the closed form), so the study checks the theory against the
    algorithm rather than against itself.
    """
    if lr <= 0 or steps < 0:
        raise ValueError(f"need lr > 0 and steps >= 0, got lr={lr}, steps={steps}")
    n = x.shape[0]
    w = np.array(w0, dtype=np.float64, copy=True)
    for _ in range(int(steps)):
        w -= lr * (x.T @ (x @ w - y)) / n
    return w


def condition_number(x: np.ndarray) -> float:
    """``lambda_max / lambda_min`` over the ``min(n, d)`` eigenvalues of ``X^T X / n`` that
    are not structural zeros (infinite when one of them is exactly 0)."""
    s = np.linalg.svd(x, compute_uv=False)
    return float(s[0] ** 2 / s[-1] ** 2) if s[-1] > 0 else math.inf


def mp_edges(q: float) -> tuple[float, float]:
    """Edges ``(1 -+ sqrt q)^2`` of the non-zero spectrum of ``X^T X / n`` (unit variance)."""
    if q <= 0:
        raise ValueError(f"ratio q = d / n must be positive, got {q}")
    return (1.0 - math.sqrt(q)) ** 2, (1.0 + math.sqrt(q)) ** 2


def mp_density(lam: np.ndarray, q: float) -> np.ndarray:
    """Marchenko-Pastur density of the eigenvalues of ``X^T X / n``, ``q = d / n``:
    ``sqrt((b - x)(x - a)) / (2 pi q x)`` on ``[a, b]``. For ``q > 1`` it carries mass ``1/q``;
    the rest, ``1 - 1/q``, is the atom at zero (the ``d - n`` structural zeros)."""
    a, b = mp_edges(q)
    lam = np.asarray(lam, dtype=np.float64)
    inside = (lam > a) & (lam < b)
    safe = np.where(inside, lam, 1.0)
    return np.where(inside, np.sqrt(np.abs((b - safe) * (safe - a))) / (2 * math.pi * q * safe),
                    0.0)


def mp_cdf(lam: np.ndarray, q: float, cells: int = 20_000) -> np.ndarray:
    """CDF of the non-zero part of the law (normalised to mass 1), by the midpoint rule in
    ``x = (a + b)/2 - (b - a)/2 cos t``, which removes the square-root edges."""
    a, b = mp_edges(q)
    t_edges = np.linspace(0.0, math.pi, cells + 1)
    t_mid = (t_edges[1:] + t_edges[:-1]) / 2
    x_mid = (a + b) / 2 - (b - a) / 2 * np.cos(t_mid)
    mass = ((b - a) / 2) ** 2 * np.sin(t_mid) ** 2 / (2 * math.pi * q * x_mid)
    cum = np.concatenate([[0.0], np.cumsum(mass)])
    x_edges = (a + b) / 2 - (b - a) / 2 * np.cos(t_edges)
    return np.interp(np.asarray(lam, dtype=np.float64), x_edges, cum / cum[-1])


def ks_distance_to_mp(nonzero_eigs: np.ndarray, q: float) -> float:
    """Kolmogorov distance between the non-zero eigenvalues and the non-zero MP law."""
    e = np.sort(np.asarray(nonzero_eigs, dtype=np.float64))
    m = e.size
    if m == 0:
        raise ValueError("no eigenvalues")
    cdf = mp_cdf(e, q)
    return float(max(np.max(np.arange(1, m + 1) / m - cdf), np.max(cdf - np.arange(m) / m)))
