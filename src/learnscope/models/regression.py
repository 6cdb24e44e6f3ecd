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
