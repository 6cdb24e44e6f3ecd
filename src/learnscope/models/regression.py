"""Closed-form linear fits on a feature matrix: minimum-norm least squares and ridge."""

from __future__ import annotations

import numpy as np


def min_norm_fit(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The minimum-norm least-squares coefficients ``F^+ y``.

    This is where gradient descent from zero converges; it interpolates when the model has at
    least as many features as points. Computed with an SVD without a relative cut-off beyond
    machine precision: a cut-off (as in ``lstsq(rcond=...)``) regularises and hides the
    double-descent peak.
    """
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    tol = s.max(initial=0.0) * max(features.shape) * np.finfo(features.dtype).eps
    inv = np.where(s > tol, 1.0 / np.where(s > tol, s, 1.0), 0.0)
    return vt.T @ (inv * (u.T @ targets))


def ridge_fit(features: np.ndarray, targets: np.ndarray, lam: float) -> np.ndarray:
    """Ridge coefficients solving ``(F^T F + lam * n * I) a = F^T y`` (``n`` = rows)."""
    if lam <= 0:
        raise ValueError(f"ridge lambda must be positive, got {lam}")
    n, p = features.shape
    if p <= n:
        return np.linalg.solve(features.T @ features + lam * n * np.eye(p), features.T @ targets)
    # Dual form: a = F^T (F F^T + lam n I)^-1 y, cheaper when p > n.
    return features.T @ np.linalg.solve(features @ features.T + lam * n * np.eye(n), targets)


def ridge_path(features: np.ndarray, targets: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """Ridge coefficients for every ``lam`` in ``lams`` from one SVD, shape ``(len(lams), p)``:
    the solutions of ``(F^T F + lam * n * I) a = F^T y`` (as :func:`ridge_fit`)."""
    lams = np.asarray(lams, dtype=float)
    if np.any(lams <= 0):
        raise ValueError("ridge lambdas must be positive")
    n = features.shape[0]
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    uty = u.T @ targets
    shrink = s / (s**2 + lams[:, None] * n)  # (L, r)
    return (shrink * uty) @ vt


def gd_least_squares_path(features: np.ndarray, targets: np.ndarray, lr: float,
                          steps: np.ndarray) -> np.ndarray:
    """Coefficients of full-batch gradient descent from zero on ``||F a - y||^2 / (2 n)``.

    Returned at every requested step (rows, shape ``(len(steps), p)``), in closed form, so a
    whole training curve over steps 1..1e6 costs one SVD instead of a million updates.
    With ``F = U S V^T`` and ``s_i = S_i^2 / n``, the update ``a <- a - lr F^T (F a - y) / n``
    acts on each right singular direction separately:
    ``a_t = V diag((1 - (1 - lr s_i)^t) / s_i) V^T F^T y / n``. Directions outside the row
    space of ``F`` never move, so ``a_t`` tends to the minimum-norm fit. ``lr * s_max >= 2``
    diverges (the values grow without bound, possibly to inf); no exception is raised so that a
    caller can record the divergence.
    """
    steps = np.asarray(steps)
    if steps.ndim != 1 or np.any(steps < 0) or np.any(steps != np.round(steps)):
        raise ValueError("steps must be a 1-D array of non-negative integers")
    if lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    n = features.shape[0]
    u, sv, vt = np.linalg.svd(features, full_matrices=False)
    eig = sv**2 / n
    proj = sv * (u.T @ targets) / n  # V^T F^T y / n
    t = steps.astype(np.float64)[:, None]
    base = 1.0 - lr * eig
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # 1 - (1 - lr s)^t through expm1/log1p: exact to rounding even when lr s is 1e-8 (a
        # slow direction); a non-positive base (lr s >= 1) is raised to the integer power.
        fitted = np.where(base > 0, -np.expm1(t * np.log1p(-lr * eig)), 1.0 - np.power(base, t))
        gain = np.where(eig > 0, fitted / np.where(eig > 0, eig, 1.0), lr * t)
    return (gain * proj) @ vt
