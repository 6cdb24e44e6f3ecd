"""Singular vector canonical correlation analysis (SVCCA) between layer activations.

Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017, "SVCCA: Singular Vector Canonical Correlation
Analysis for Deep Learning Dynamics and Interpretability" (NeurIPS): reduce each representation
to the top singular directions that explain a fixed fraction of its variance, then run CCA
between the two reduced subspaces.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from learnscope.measures.cka import _as_matrix, _center, _common_n

__all__ = ["SVCCAResult", "svcca"]

# Slack when comparing cumulative explained-variance fractions with the threshold, so that a
# threshold hit exactly (up to rounding) does not pull in one more direction.
_THRESHOLD_SLACK = 1e-12


@dataclass(frozen=True)
class SVCCAResult:
    """Outcome of :func:`svcca`.

    ``correlations`` holds the ``min(kx, ky)`` canonical correlations (float64, descending),
    ``mean_correlation`` their mean, ``kept_dims`` the numbers ``(kx, ky)`` of singular
    directions kept for ``x`` and ``y``.
    """

    mean_correlation: float
    correlations: Tensor
    kept_dims: tuple[int, int]
    variance_threshold: float


def _reduced_basis(xc: Tensor, variance_threshold: float, name: str) -> Tensor:
    """Orthonormal ``n x k`` basis of the top-``k`` singular directions of centered ``xc``.

    ``k`` is the smallest number of directions whose squared singular values reach
    ``variance_threshold`` of the total, capped at the numerical rank.
    """
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    eps = torch.finfo(s.dtype).eps
    rank = int((s > s[0] * max(xc.shape) * eps).sum()) if s.numel() else 0
    if rank == 0 or not float(s[0]) > 0.0:
        raise ValueError(f"{name} has constant activations (zero variance); SVCCA is undefined")
    var = s[:rank] ** 2
    frac = torch.cumsum(var, dim=0) / var.sum()
    k = int((frac < variance_threshold - _THRESHOLD_SLACK).sum()) + 1
    return u[:, : min(k, rank)]


def svcca(x: Any, y: Any, *, variance_threshold: float = 0.99) -> SVCCAResult:
    """SVCCA similarity between two activation matrices with the same examples.

    Centers ``x`` and ``y`` (``(n, ...)``, trailing dims flattened; tensors or numpy arrays),
    keeps for each the top singular directions explaining ``variance_threshold`` of its
    variance, and computes the canonical correlations between the two reduced subspaces as the
    singular values of ``Qx^T Qy`` for orthonormal bases ``Qx``, ``Qy`` of those subspaces (the
    left singular vectors themselves). Returns their mean and the correlations themselves
    (Raghu et al. 2017, "SVCCA"). Computed in float64. CCA overfits when the kept dimensions
    approach ``n``: use many more examples than kept directions.

    Raises ``ValueError`` for ``variance_threshold`` outside ``(0, 1]``, mismatched numbers of
    examples, constant activations, or non-finite values.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 6, generator=g)
    >>> a = torch.eye(6) + 0.1 * torch.randn(6, 6, generator=g)
    >>> r = svcca(x, x @ a)
    >>> round(r.mean_correlation, 6), r.kept_dims
    (1.0, (6, 6))
    """
    is_real = isinstance(variance_threshold, numbers.Real) and not isinstance(
        variance_threshold, bool
    )
    threshold = float(variance_threshold) if is_real else math.nan
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"variance_threshold must be in (0, 1], got {variance_threshold!r}")
    xm, ym = _as_matrix(x, "x"), _as_matrix(y, "y")
    n = _common_n([xm, ym], ["x", "y"])
    if n < 2:
        raise ValueError(f"SVCCA needs at least 2 examples, got {n}")
    qx = _reduced_basis(_center(xm, "x"), threshold, "x")
    qy = _reduced_basis(_center(ym, "y"), threshold, "y").to(qx.device)
    correlations = torch.linalg.svdvals(qx.T @ qy).clamp(0.0, 1.0)
    return SVCCAResult(
        mean_correlation=float(correlations.mean()),
        correlations=correlations,
        kept_dims=(qx.shape[1], qy.shape[1]),
        variance_threshold=threshold,
    )
