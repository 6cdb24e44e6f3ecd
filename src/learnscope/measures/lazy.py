"""Lazy (kernel) vs rich (feature-learning) training: the closed forms a network is compared with.

- :func:`two_layer_relu_ntk`: the empirical neural tangent kernel of ``f(x) = a . relu(W x /
  sqrt(d)) / sqrt(m)`` with respect to ``(W, a)``, in closed form (two matrix products instead
  of per-example Jacobians; equals :func:`learnscope.measures.ntk.empirical_ntk`).
- :func:`linearised_gd`: gradient descent on the model linearised at its initialisation,
  ``F(x) = J(x) (w - w0)``, on ``0.5 mean (F - y)^2``, in closed form with the init kernel
  ``K = J J^T`` (eigendecomposition of the train Gram); ``steps=None`` is its limit, the
  kernel interpolant (minimum-norm fit). With the output scale ``alpha`` of Chizat et al. (model
  ``alpha (f(w) - f(w0))``, loss divided by ``alpha^2``) the linearised dynamics of the outputs
  do not depend on ``alpha``: large ``alpha`` trains the network along exactly this path.
- :func:`diagonal_net_gd`: the two-layer diagonal linear network ``beta = u*u - v*v`` from
  ``u = v = s`` (Woodworth et al. 2020), batched over init scales ``s``; small ``s`` ends near
  the minimum-l1 interpolant, large ``s`` at the minimum-l2 one.
- :func:`min_l1_interpolant` (a linear program, scipy's HiGHS) and :func:`min_l2_interpolant`
  (the pseudo-inverse).

Sources: Chizat, Oyallon & Bach 2019 (lazy training); Jacot et al. 2018 (NTK); Woodworth et al.
2020 (kernel and rich regimes in overparametrized models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog

__all__ = ["DiagonalNetResult", "diagonal_net_gd", "linearised_gd", "min_l1_interpolant",
           "min_l2_interpolant", "two_layer_relu_ntk"]


def two_layer_relu_ntk(w: torch.Tensor, a: torch.Tensor, x1: torch.Tensor,
                       x2: torch.Tensor | None = None) -> torch.Tensor:
    """NTK Gram ``K(x1, x2)`` of ``f(x) = a . relu(W x / sqrt(d)) / sqrt(m)`` over ``(W, a)``.

    ``df/da_j = relu(h_j) / sqrt(m)`` and ``df/dW_j = a_j 1[h_j > 0] x / sqrt(d m)`` with
    ``h = W x / sqrt(d)``, so ``K = (relu(H1) relu(H2)^T + (x1 x2^T / d) * (D1 D2^T)) / m``
    with ``D = a * 1[H > 0]``. ``w (m, d)``, ``a (m,)``, ``x (n, d)``; computed in the dtype
    of the inputs.
    """
    x2 = x1 if x2 is None else x2
    m, d = w.shape
    h1, h2 = x1 @ w.T / math.sqrt(d), x2 @ w.T / math.sqrt(d)
    d1, d2 = (h1 > 0).to(w.dtype) * a, (h2 > 0).to(w.dtype) * a
    return (h1.clamp_min(0) @ h2.clamp_min(0).T + (x1 @ x2.T / d) * (d1 @ d2.T)) / m


def linearised_gd(k_train: torch.Tensor, y: torch.Tensor, *, lr: float, steps: int | None,
                  k_cross: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions ``(on the train points, on the cross points)`` of the linearised model after
    ``steps`` full-batch GD steps of size ``lr`` on ``0.5 mean (F - y)^2`` from ``F = 0``.

    With ``q_i = lr lambda_i / n`` for the eigenpairs ``(lambda_i, v_i)`` of ``k_train`` the
    train residual decays as ``(1 - q_i)^t`` per mode, and the predictions are ``K c`` with
    ``c = V diag((1 - (1 - q)^t) / lambda) V^T y`` (``t lr / n`` for a zero eigenvalue).
    ``steps=None``: the limit ``t -> infinity``, the minimum-norm kernel interpolant
    ``c = K^+ y`` (eigenvalues below ``1e-10 lambda_max`` dropped). Computed in float64.
    ``k_cross (n_cross, n)`` is the kernel between the cross points and the train points.
    """
    k = k_train.double()
    n = k.shape[0]
    lam, v = torch.linalg.eigh((k + k.T) / 2)
    lam = lam.clamp_min(0.0)
    small = lam <= 1e-10 * float(lam.max())
    if steps is None:
        gain = torch.where(small, torch.zeros_like(lam), 1.0 / torch.where(small, 1.0, lam))
    else:
        q = lr * lam / n
        if bool((q >= 2).any()):
            raise ValueError(f"lr {lr:g} diverges: lr * lambda_max / n = {float(q.max()):.3g} >= 2")
        decayed = -torch.expm1(steps * torch.log1p(-q.clamp(max=1.0 - 1e-16)))
        gain = torch.where(small, torch.full_like(lam, steps * lr / n),
                           decayed / torch.where(small, 1.0, lam))
    c = v @ (gain * (v.T @ y.double()))
    cross = k_cross.double() @ c if k_cross is not None else torch.empty(0, dtype=torch.float64)
    return k @ c, cross


def min_l2_interpolant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The minimum-l2-norm solution of ``x beta = y`` (under-determined): ``x^+ y``."""
    return np.linalg.pinv(x) @ y


def min_l1_interpolant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The minimum-l1-norm solution of ``x beta = y`` (basis pursuit) as a linear program:
    ``beta = p - q`` with ``p, q >= 0``, minimise ``sum(p + q)`` subject to ``x (p - q) = y``."""
    n, dim = x.shape
    res = linprog(np.ones(2 * dim), A_eq=np.hstack([x, -x]), b_eq=y, bounds=(0, None),
                  method="highs")
    if not res.success:
        raise ValueError(f"the l1 linear program failed: {res.message}")
    return res.x[:dim] - res.x[dim:]


@dataclass(frozen=True)
class DiagonalNetResult:
    """Per init scale: the final ``beta`` (rows), steps taken, final train MSE ``mean (x beta -
    y)^2`` and whether it reached the tolerance."""

    beta: np.ndarray
    steps: np.ndarray
    train_mse: np.ndarray
    converged: np.ndarray


def diagonal_net_gd(x: np.ndarray, y: np.ndarray, scales: np.ndarray | list[float], *,
                    lr: float = 0.01, tol: float = 1e-6, max_steps: int = 200_000,
                    check_every: int = 100) -> DiagonalNetResult:
    """Full-batch GD on ``0.5 mean (x beta - y)^2`` with ``beta = u*u - v*v`` from ``u = v = s``,
    for every init scale ``s`` at once (one row each), until the train MSE is below ``tol``
    (checked every ``check_every`` steps; a converged row stops moving) or ``max_steps``.

    The step is ``lr`` for ``s <= 1`` and ``lr / s^2`` above: at scale ``s`` the curvature in
    ``(u, v)`` grows as ``s^2``. float64.
    """
    s = np.asarray(scales, dtype=np.float64)
    n = x.shape[0]
    u = np.repeat(s[:, None], x.shape[1], axis=1)
    v = u.copy()
    step_size = np.where(s > 1, lr / s ** 2, lr)[:, None]
    active = np.ones(len(s), dtype=bool)
    steps = np.zeros(len(s), dtype=np.int64)
    xt = x.T
    for t in range(1, max_steps + 1):
        g = ((u * u - v * v) @ xt - y) @ x / n  # dL/dbeta, one row per scale
        eta = step_size * active[:, None]
        u, v = u - eta * 2 * u * g, v + eta * 2 * v * g
        steps += active
        if t % check_every == 0 or t == max_steps:
            mse = (((u * u - v * v) @ xt - y) ** 2).mean(axis=1)
            active &= mse >= tol
            if not active.any():
                break
    beta = u * u - v * v
    mse = ((beta @ xt - y) ** 2).mean(axis=1)
    return DiagonalNetResult(beta, steps, mse, mse < tol)
