"""Superposition measures for toy-model weight matrices.

Follows Elhage et al. 2022, "Toy models of superposition" (Transformer Circuits
Thread): ``W`` has shape ``(m hidden, n features)``; column ``W_i`` is the
embedding of feature ``i`` and ``W_hat_i = W_i / ||W_i||``.

* feature norm ``||W_i||`` (a feature counts as represented when it exceeds a
  threshold, 0.5 by default);
* interference ``sum_{j != i} (W_hat_i . W_j)^2``;
* feature dimensionality ``D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2``;
* dimensions per feature ``m / ||W||_F^2``.

A zero column has no direction: its norm, interference and dimensionality are 0
(never NaN). Arrays are ``numpy.float64``; inputs may be tensors or arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "SuperpositionSummary",
    "feature_dimensionality",
    "feature_norms",
    "interference",
    "superposition_summary",
]


def _as_w(w: Any) -> np.ndarray:
    if isinstance(w, torch.Tensor):
        w = w.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.array(w, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"W must be a tensor or array of numbers: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"W must be 2-D (m hidden x n features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"W is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError("W contains NaN or infinite values")
    return arr


def _parts(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column norms and ``G[i, j] = (W_hat_i . W_j)^2`` (row i is zero for a zero column)."""
    norms = np.linalg.norm(w, axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    w_hat = np.where(norms > 0, w / safe, 0.0)
    g = (w_hat.T @ w) ** 2
    return norms, g


def _off_diagonal_sum(g: np.ndarray) -> np.ndarray:
    off = g.copy()
    np.fill_diagonal(off, 0.0)
    return off.sum(axis=1)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def feature_norms(W: Any) -> np.ndarray:
    """Norm ``||W_i||`` of each feature column of ``W`` (m hidden x n features).

    Source: Elhage et al. 2022, "Toy models of superposition", sec. 2.

    >>> feature_norms(np.array([[3.0, 0.0], [4.0, 1.0]])).tolist()
    [5.0, 1.0]
    """
    return np.linalg.norm(_as_w(W), axis=0)


def interference(W: Any) -> np.ndarray:
    """Interference ``sum_{j != i} (W_hat_i . W_j)^2`` for each feature ``i``.

    Source: Elhage et al. 2022, "Toy models of superposition", sec. 2.
    Zero for orthogonal features and for a zero column.

    >>> interference(np.array([[1.0, -1.0]])).tolist()  # antipodal pair in 1-D
    [1.0, 1.0]
    """
    w = _as_w(W)
    _, g = _parts(w)
    return _off_diagonal_sum(g)


def feature_dimensionality(W: Any) -> np.ndarray:
    """Feature dimensionality ``D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2``.

    Source: Elhage et al. 2022, "Toy models of superposition", section "Feature
    dimensionality". ``D_i = 1`` for a feature with a dedicated dimension, ``1/2``
    for an antipodal pair, ``2/5`` for a pentagon; ``0`` for a zero column.

    >>> feature_dimensionality(np.eye(3)).tolist()
    [1.0, 1.0, 1.0]
    """
    w = _as_w(W)
    norms, g = _parts(w)
    denom = g.sum(axis=1)  # >= ||W_i||^2 > 0 for a non-zero column
    safe = np.where(denom > 0, denom, 1.0)
    return np.where(norms > 0, norms**2 / safe, 0.0)


@dataclass(frozen=True, eq=False)
class SuperpositionSummary:
    """Summary of a toy-model weight matrix ``W`` (m hidden x n features).

    ``n_represented`` counts features with ``||W_i|| > threshold``;
    ``dims_per_feature = m / ||W||_F^2``; ``norms``, ``dimensionality`` and
    ``interference`` are per feature; ``n_hidden``/``n_features`` are ``m``/``n``.
    """

    n_represented: int
    dims_per_feature: float
    norms: np.ndarray
    dimensionality: np.ndarray
    interference: np.ndarray
    threshold: float
    n_hidden: int
    n_features: int


def superposition_summary(W: Any, threshold: float = 0.5) -> SuperpositionSummary:
    """All superposition measures of ``W`` (m hidden x n features) at once.

    Source: Elhage et al. 2022, "Toy models of superposition" (dimensions per
    feature ``m / ||W||_F^2``, feature dimensionality, interference). ValueError
    for an all-zero ``W`` (dimensions per feature undefined).

    >>> s = superposition_summary(np.eye(2))
    >>> s.n_represented, s.dims_per_feature
    (2, 1.0)
    """
    w = _as_w(W)
    t = float(threshold)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"threshold must be >= 0 and finite, got {threshold!r}")
    norms, g = _parts(w)
    fro2 = float(np.sum(w**2))
    if fro2 == 0.0:
        raise ValueError("dims_per_feature is undefined for an all-zero W")
    denom = g.sum(axis=1)
    dim = np.where(norms > 0, norms**2 / np.where(denom > 0, denom, 1.0), 0.0)
    inter = _off_diagonal_sum(g)
    m, n = w.shape
    return SuperpositionSummary(
        n_represented=int(np.sum(norms > t)),
        dims_per_feature=m / fro2,
        norms=_readonly(norms),
        dimensionality=_readonly(dim),
        interference=_readonly(inter),
        threshold=t,
        n_hidden=int(m),
        n_features=int(n),
    )
