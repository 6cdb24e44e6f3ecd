"""Spectral measures of weight matrices (WeightWatcher-style heavy-tailed analysis).

Follows Martin & Mahoney 2021 ("Implicit self-regularization in deep neural
networks: evidence from random matrix theory and implications for learning",
JMLR 22(165)) and Martin, Peng & Mahoney 2021 ("Predicting trends in the quality
of state-of-the-art neural networks without access to training or testing data").

Conventions
-----------
* A weight ``W`` of shape ``N x M`` (``N`` rows). Tensors with more than two
  dimensions (convolution kernels) are reshaped to ``(shape[0], -1)``.
* The empirical spectral density (ESD) is the set of the ``M`` eigenvalues of the
  correlation matrix ``X = W^T W / N``, sorted ascending. Nothing is dropped: when
  ``M > N`` the ``M - N`` structural zero eigenvalues are included.
* The aspect ratio for the Marchenko-Pastur law is ``q = M / N``; the non-zero
  part of the ESD of an i.i.d. matrix with entry variance ``sigma2`` lies in
  ``[sigma2 (1 - sqrt q)^2, sigma2 (1 + sqrt q)^2]`` for either ``q <= 1`` or
  ``q > 1``. At finite size its largest eigenvalue fluctuates above that edge on the
  Tracy-Widom scale; a "spike" is only an eigenvalue beyond a chosen Tracy-Widom
  quantile (:func:`tracy_widom_edge`), and ``sigma2`` is estimated from the bulk.
* Fits that rest on too little data say so (``PowerLawFit.reliable``) instead of
  returning a number that looks like any other.

Array results are ``numpy.float64``; scalar results are Python floats. Every
result object records the estimator settings that produced it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from learnscope.measures._finite import all_finite

__all__ = [
    "MIN_RELIABLE_TAIL",
    "MPFit",
    "PowerLawFit",
    "WeightSpectrum",
    "bbp_spike_location",
    "distance_from_init",
    "effective_rank",
    "esd",
    "marchenko_pastur_fit",
    "power_law_alpha",
    "stable_rank",
    "tracy_widom1_cdf",
    "tracy_widom1_quantile",
    "tracy_widom_edge",
    "weight_spectrum",
]


# --------------------------------------------------------------------------- helpers


def _as_matrix(w: Any, name: str = "weight") -> torch.Tensor:
    """A detached float64 CPU copy of ``w`` as a 2-D matrix (``(shape[0], -1)``)."""
    if isinstance(w, torch.Tensor):
        t = w.detach().to(device="cpu", dtype=torch.float64, copy=True)
    else:
        try:
            t = torch.as_tensor(np.asarray(w, dtype=np.float64)).clone()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a tensor or array of numbers: {exc}") from exc
    if t.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions, got shape {tuple(t.shape)}")
    if t.ndim > 2:
        t = t.reshape(t.shape[0], -1)
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not all_finite(t):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _as_vector(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- ESD and MP


def esd(weight: Any) -> np.ndarray:
    """Empirical spectral density: eigenvalues of ``W^T W / N`` for ``W`` of shape ``N x M``.

    Returns all ``M`` eigenvalues, sorted ascending, as a float64 array (when
    ``M > N`` the ``M - N`` structural zeros are kept). Computed from the smaller
    Gram matrix in float64; tiny negative round-off is clipped to 0.
    Source: Martin & Mahoney 2021, eq. for ``X = W^T W / N``.

    >>> esd(2.0 * torch.eye(4)).tolist()  # W^T W / 4 = I
    [1.0, 1.0, 1.0, 1.0]
    """
    w = _as_matrix(weight)
    n, m = w.shape
    if n >= m:
        eigs = torch.linalg.eigvalsh(w.T @ w / n)
    else:
        nz = torch.linalg.eigvalsh(w @ w.T / n)
        eigs = torch.cat([torch.zeros(m - n, dtype=torch.float64), nz])
    out = np.sort(eigs.numpy())
    return np.clip(out, 0.0, None)


# --------------------------------------------------------------------------- Tracy-Widom

# Nystrom discretisation of F1(s) = det(I - K_s) on L2(0, inf), K_s(x, y) = Ai((x + y)/2 + s)/2
# (Sasamoto 2005; Ferrari & Spohn 2005; Bornemann 2010, Math. Comp. 79, 871-915). The kernel
# decays like exp(-(2/3) t^1.5): (0, 16) holds all of it that matters for s > -4.
_TW_NODES, _TW_WEIGHTS = np.polynomial.legendre.leggauss(64)
_TW_LENGTH = 16.0


def tracy_widom1_cdf(s: float) -> float:
    """CDF of the Tracy-Widom law of order 1 (largest eigenvalue of real Wishart/GOE matrices).

    Evaluated as the Fredholm determinant ``F1(s) = det(I - K)`` with the kernel
    ``K(x, y) = Ai((x + y)/2 + s) / 2`` on ``(0, inf)``, by 64-point Gauss-Legendre Nystrom
    quadrature on ``(0, 16)`` (Bornemann 2010, "On the numerical evaluation of Fredholm
    determinants", Math. Comp. 79). Absolute error against 160 nodes on ``(0, 30)``: 3e-7 at
    ``s = -6``, 1e-8 at -4, 3e-12 at -2, < 1e-13 for ``s >= 0`` (the spike tests' range).

    >>> round(tracy_widom1_cdf(0.9793), 4)  # the 95% point tabulated by Johnstone 2001
    0.95
    """
    from scipy.special import airy

    x = (_TW_NODES + 1.0) * (_TW_LENGTH / 2.0)
    sw = np.sqrt(_TW_WEIGHTS * (_TW_LENGTH / 2.0))
    kernel = 0.5 * airy((x[:, None] + x[None, :]) / 2.0 + float(s))[0]
    value = float(np.linalg.det(np.eye(x.size) - sw[:, None] * kernel * sw[None, :]))
    return min(max(value, 0.0), 1.0)


# tracy_widom1_quantile's root search costs ~50 ms (about 15 Fredholm determinants), paid by
# the first spike test in every process: the levels a spike test uses by default or often are
# stored here, as computed by _tw1_quantile_by_root (a test recomputes every entry).
_TW1_QUANTILES = {0.9: 0.450143289058239, 0.95: 0.9793160534695408, 0.99: 2.0234492813801443,
                  0.999: 3.272196059001967}


@functools.lru_cache(maxsize=64)
def tracy_widom1_quantile(p: float) -> float:
    """The ``p`` quantile of the Tracy-Widom law of order 1 (inverse of :func:`tracy_widom1_cdf`).

    Reference values (Johnstone 2001, Table 1; reproduced here to 4 decimals): 0.90 -> 0.4501,
    0.95 -> 0.9793, 0.99 -> 2.0234. ``p`` must lie in ``[0.01, 1 - 1e-9]``.

    >>> round(tracy_widom1_quantile(0.99), 4)
    2.0234
    """
    p = float(p)
    if not 0.01 <= p <= 1.0 - 1e-9:
        raise ValueError(f"p must lie in [0.01, 1 - 1e-9], got {p!r}")
    stored = _TW1_QUANTILES.get(p)
    return stored if stored is not None else _tw1_quantile_by_root(p)


def _tw1_quantile_by_root(p: float) -> float:
    """The root of ``tracy_widom1_cdf(s) = p`` (Brent, to 1e-12)."""
    from scipy.optimize import brentq

    return float(brentq(lambda s: tracy_widom1_cdf(s) - p, -3.9, 9.0, xtol=1e-12))


def tracy_widom_edge(n_rows: int, n_cols: int, significance: float = 0.05) -> float:
    """Upper ``1 - significance`` point of the largest eigenvalue of ``W^T W / N`` (unit variance).

    For ``W`` of shape ``N x M`` with i.i.d. unit-variance entries, ``N lambda_max`` is
    approximately ``mu + sigma TW1`` with ``mu = (sqrt(N') + sqrt(M'))^2`` and ``sigma =
    (sqrt(N') + sqrt(M')) (1/sqrt(N') + 1/sqrt(M'))^(1/3)``, ``N' = N - 1/2``, ``M' = M - 1/2``.
    These are Johnstone's (2001) real-Wishart constants with the half-integer shifts of
    Ma (2012, Bernoulli 18(1)) that make the error O(min(N, M)^(-2/3)) and the formula
    symmetric in N and M (El Karoui 2003: the limit holds for any aspect ratio). Returns
    ``(mu + s sigma) / N`` with ``s`` the TW1 quantile at ``1 - significance``: multiply by the
    entry variance. Monte Carlo check (4000 draws each): the 5% edge is exceeded by 4.6%
    (10 x 256), 5.1% (256 x 10), 4.4% (30 x 30), 4.9% (100 x 25) of pure-noise matrices.

    >>> round(tracy_widom_edge(2000, 500), 4)  # MP edge (1 + sqrt(1/4))^2 = 2.25, plus 0.5%
    2.2622
    """
    n, m = int(n_rows), int(n_cols)
    if n < 1 or m < 1:
        raise ValueError(f"n_rows and n_cols must be >= 1, got {n_rows!r}, {n_cols!r}")
    sig = float(significance)
    if not 1e-9 <= sig <= 0.5:
        raise ValueError(f"significance must lie in [1e-9, 0.5], got {significance!r}")
    a, b = math.sqrt(n - 0.5), math.sqrt(m - 0.5)
    mu = (a + b) ** 2
    scale = (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0)
    return (mu + tracy_widom1_quantile(1.0 - sig) * scale) / n


# --------------------------------------------------------------------------- MP fit


def _mp_quantile(ratio: float, probs: np.ndarray) -> np.ndarray:
    """Quantiles of the Marchenko-Pastur law with ratio ``y <= 1`` and unit variance.

    The density ``sqrt((b - x)(x - a)) / (2 pi y x)`` on ``[a, b] = [(1 -+ sqrt y)^2]`` is
    integrated in ``x = (a + b)/2 + (b - a)/2 cos(t)``, which removes the square-root edges
    (midpoint rule, 20000 cells, error ~1e-8). The table is kept per ratio (a probe asks for
    the same layer shapes at every measurement).
    """
    cdf, x_edges = _mp_cdf_table(float(ratio))
    return np.interp(probs, cdf, x_edges)


@functools.lru_cache(maxsize=64)
def _mp_cdf_table(y: float) -> tuple[np.ndarray, np.ndarray]:
    """(CDF, x) at the 20001 cell edges of :func:`_mp_quantile`, ascending in x."""
    a, b = (1.0 - math.sqrt(y)) ** 2, (1.0 + math.sqrt(y)) ** 2
    cells = 20_000
    edges = np.linspace(0.0, math.pi, cells + 1)
    mid = (edges[1:] + edges[:-1]) / 2.0
    x_mid = (a + b) / 2.0 + (b - a) / 2.0 * np.cos(mid)
    mass = ((b - a) / 2.0) ** 2 * np.sin(mid) ** 2 / (2.0 * math.pi * y * x_mid)
    above = np.concatenate([[0.0], np.cumsum(mass)])  # mass of [x(edge_j), b]
    cdf = 1.0 - above / above[-1]
    x_edges = (a + b) / 2.0 + (b - a) / 2.0 * np.cos(edges)
    return _readonly(cdf[::-1].copy()), _readonly(x_edges[::-1].copy())


def bbp_spike_location(strength: Any, aspect_ratio: float) -> np.ndarray:
    """Where a planted spike ends up in the ESD (Baik, Ben Arous & Peche 2005).

    A rank-one signal that adds ``l * sigma2`` to one eigenvalue of ``W^T W / N`` (e.g.
    ``W = Z + sqrt(N l sigma2) u v^T`` with unit ``u``, ``v``, or population covariance
    ``sigma2 (I + l v v^T)``) produces the eigenvalue ``sigma2 (1 + l)(1 + q / l)`` when
    ``l > sqrt(q)`` and stays at the edge ``sigma2 (1 + sqrt q)^2`` otherwise; ``q = M / N``.
    Returned in units of ``sigma2``. Sources: Baik, Ben Arous & Peche 2005; Baik &
    Silverstein 2006; Benaych-Georges & Nadakuditi 2012 (additive rectangular case).

    >>> bbp_spike_location([3.0, 0.25], 0.25).round(4).tolist()
    [4.3333, 2.25]
    """
    q = float(aspect_ratio)
    lam = np.asarray(strength, dtype=np.float64)
    edge = (1.0 + math.sqrt(q)) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(lam > math.sqrt(q), (1.0 + lam) * (1.0 + q / lam), edge)
    return out


def _bbp_strength(location: np.ndarray, q: float) -> np.ndarray:
    """Inverse of :func:`bbp_spike_location` above the edge (``sqrt q`` at or below it)."""
    d = location - 1.0 - q
    return (d + np.sqrt(np.maximum(d * d - 4.0 * q, 0.0))) / 2.0


@dataclass(frozen=True, eq=False)
class MPFit:
    """Marchenko-Pastur bulk of an ESD and the eigenvalues that stand out from it.

    ``lambda_minus``/``lambda_plus`` are the asymptotic edges ``sigma2 (1 -+ sqrt q)^2`` of
    the bulk. A spike is an eigenvalue above ``spike_threshold``, the Tracy-Widom point
    that the largest eigenvalue of pure noise exceeds with probability ``significance``
    (:func:`tracy_widom_edge`, ``tw_quantile`` is the TW1 quantile used). ``spikes`` are
    those eigenvalues (ascending) and ``spike_strengths`` their signal strengths ``l`` in
    units of ``sigma2`` by inverting :func:`bbp_spike_location`. ``sigma2_method`` says how
    the noise variance was obtained: ``"bulk"``, ``"median"``, ``"mean"`` or ``"given"``
    (see :func:`marchenko_pastur_fit`). ``aspect_ratio`` is ``q = M / N``.
    """

    lambda_minus: float
    lambda_plus: float
    sigma2: float
    n_spikes: int
    spikes: np.ndarray
    spike_strengths: np.ndarray
    spike_threshold: float
    significance: float
    tw_quantile: float
    aspect_ratio: float
    n_rows: int
    n_cols: int
    sigma2_method: str


_SIGMA2_METHODS = ("bulk", "median", "mean")


def _sigma2_quantile(nonzero: np.ndarray, q: float, prob: float) -> float:
    """Entry variance whose MP ``prob`` quantile equals that of the non-zero eigenvalues."""
    y, scale = min(q, 1.0 / q), max(1.0, q)
    mp = float(_mp_quantile(y, np.array([prob]))[0])
    return float(np.quantile(nonzero, prob)) / (scale * mp)


def _sigma2_bulk(nonzero: np.ndarray, n_rows: int, n_cols: int, q: float,
                 edge: float) -> float | None:
    """Fixed point of the spike-corrected trace estimator; None if it does not settle."""
    s2 = _sigma2_quantile(nonzero, q, 0.25)  # start from the lower spectrum: spikes sit on top
    if not s2 > 0.0:
        return None
    for _ in range(200):
        above = nonzero > s2 * edge
        k = int(above.sum())
        strengths = _bbp_strength(nonzero[above] / s2, q)
        # a spike at sigma2 (1 + l)(1 + q/l) = sigma2 (l + 1 + q + q/l) holds l of signal and
        # 1 + q + q/l units of noise variance that the bulk no longer has; k^2/N is the
        # second-order term (exact for strong spikes: the bulk is then the noise on the
        # complement, sigma2 (N - k)(M - k) / N)
        units = n_cols - float(np.sum(1.0 + q + q / strengths)) + k * k / n_rows
        if units <= 0.0:
            return None
        new = float(np.sum(nonzero[~above])) / units
        if not new > 0.0:
            return None
        if abs(new - s2) <= 1e-12 * s2:
            return new
        s2 = new
    return None


def marchenko_pastur_fit(
    eigs: Any,
    aspect_ratio: float,
    *,
    sigma2: float | None = None,
    estimator: str = "bulk",
    significance: float = 0.05,
) -> MPFit:
    """Marchenko-Pastur edges, noise variance and Tracy-Widom-significant spikes of an ESD.

    ``eigs`` is the full ESD from :func:`esd` (all ``M`` eigenvalues, zeros included) and
    ``aspect_ratio`` is ``q = M / N``; ``N = round(M / q)``.

    The entry (noise) variance ``sigma2``, when not given, is estimated from the bulk so that
    spikes do not inflate the edge. ``estimator="bulk"`` (default): start where the MP lower
    quartile matches that of the non-zero eigenvalues (spikes sit on top), then iterate to
    the fixed point of

        sigma2 = (sum of eigenvalues <= threshold) / (M - sum_i (1 + q + q / l_i) + k^2 / N)

    over the ``k`` spikes, ``l_i`` the BBP strength of spike ``i`` at the current ``sigma2``.
    Why: the trace of ``W^T W / N`` is ``sigma2 (M + sum l_i)``; a spike at
    ``sigma2 (1 + l)(1 + q / l)`` carries ``l`` of signal and ``1 + q + q / l`` units of noise
    variance away from the bulk; ``k^2 / N`` is the second-order term (exact for strong
    spikes, whose bulk is the noise on the complement, ``sigma2 (N - k)(M - k) / N``).
    Without spikes this is the mean eigenvalue ``||W||_F^2 / (N M)``, the most precise
    estimate for pure noise (sd 0.15% at 2000 x 500). Measured with planted spikes (5 seeds):
    3 spikes (l = 3, 5, 10) in 2000 x 500: |error| <= 0.33% (20 seeds); 25 spikes
    (l = 1..5): -0.2..+0.1%; 100 spikes (l = 2..20) in 1000 x 500: +0.4..+0.9%. The mean
    eigenvalue is off by +3.6%, +15%, +220% there, the median match by +0.3%, +2.8%, +20%.
    When signal directions are a large share of the spectrum (e.g. 100 spikes of l = 5 in a
    300 x 300 matrix) the iteration can settle on "all bulk": a fit that misses structure,
    never one that invents it. If the iteration does not settle, or the spikes would claim
    all ``M`` units of noise variance, it falls back to ``"median"``: the ``sigma2`` whose MP
    median equals the median non-zero eigenvalue (breaks down only when half the spectrum is
    signal; ``"mean"`` if more than half the non-zero part is zero). ``"mean"`` is the plain
    mean eigenvalue. The method used is recorded in ``sigma2_method``.

    A spike is an eigenvalue above ``sigma2 * tracy_widom_edge(N, M, significance)``: pure
    noise produces at least one spike with probability ``significance`` (TW1 fluctuations of
    the largest eigenvalue, relative scale ~``N^(-2/3)``), where counting above
    ``lambda_plus`` flags ~9-11% of small pure-noise matrices (1000 draws each of 40 x 100,
    100 x 40, 60 x 60, 10 x 256). With ``sigma2`` estimated the rate runs a little above
    nominal: measured 5.1-5.7% at 5% and 1.1-2.1% at 1% on those shapes; 1000 x 1000 over
    400 draws: 6.8% and 1.8%. Sources: Marchenko & Pastur 1967; Johnstone 2001; Ma 2012;
    Baik, Ben Arous & Peche 2005; Martin & Mahoney 2021, sec. 3.

    >>> w = torch.randn(2000, 1000, generator=torch.Generator().manual_seed(0))
    >>> fit = marchenko_pastur_fit(esd(w), 0.5)
    >>> round(fit.sigma2, 2), round(fit.lambda_plus, 2)  # (1 + sqrt(0.5))^2 = 2.914
    (1.0, 2.91)
    """
    e = _as_vector(eigs, "eigs")
    q = float(aspect_ratio)
    if not math.isfinite(q) or q <= 0:
        raise ValueError(f"aspect_ratio must be positive and finite, got {aspect_ratio!r}")
    if estimator not in _SIGMA2_METHODS:
        raise ValueError(f"estimator must be one of {_SIGMA2_METHODS}, got {estimator!r}")
    n_cols = int(e.size)
    n_rows = max(1, round(n_cols / q))
    sig = float(significance)
    if not 1e-9 <= sig <= 0.5:
        raise ValueError(f"significance must lie in [1e-9, 0.5], got {significance!r}")
    edge = tracy_widom_edge(n_rows, n_cols, sig)
    nonzero = np.sort(e)[n_cols - min(n_rows, n_cols):]
    # round-off of a rank-deficient matrix is not a bulk: treat it as the zero it is
    nonzero = np.where(nonzero > 1e-12 * float(nonzero[-1]), nonzero, 0.0)
    if sigma2 is not None:
        s2 = float(sigma2)
        method = "given"
        if not math.isfinite(s2) or s2 <= 0:
            raise ValueError(f"sigma2 must be positive and finite, got {sigma2!r}")
    else:
        if float(np.mean(e)) <= 0:
            raise ValueError("cannot estimate sigma2: the mean eigenvalue is not positive")
        method = estimator
        found: float | None = None
        if estimator == "bulk":
            found = _sigma2_bulk(nonzero, n_rows, n_cols, q, edge)
            if found is None:
                method = "median"
        if method == "mean":
            found = float(np.mean(e))
        elif method == "median":
            found = _sigma2_quantile(nonzero, q, 0.5)
            if not found > 0:  # more than half the non-zero eigenvalues are zero
                found, method = float(np.mean(e)), "mean"
        assert found is not None
        s2 = found
    sq = math.sqrt(q)
    threshold = s2 * edge
    spikes = np.sort(e[e > threshold])
    return MPFit(
        lambda_minus=s2 * (1.0 - sq) ** 2,
        lambda_plus=s2 * (1.0 + sq) ** 2,
        sigma2=s2,
        n_spikes=int(spikes.size),
        spikes=_readonly(spikes),
        spike_strengths=_readonly(_bbp_strength(spikes / s2, q)),
        spike_threshold=threshold,
        significance=sig,
        tw_quantile=tracy_widom1_quantile(1.0 - sig),
        aspect_ratio=q,
        n_rows=n_rows,
        n_cols=n_cols,
        sigma2_method=method,
    )


# --------------------------------------------------------------------------- ranks


def stable_rank(w: Any) -> float:
    """Stable rank ``||W||_F^2 / ||W||_2^2`` (Rudelson & Vershynin 2007).

    Lies in ``[1, rank(W)]``; ValueError for an all-zero matrix.

    >>> stable_rank(torch.eye(4))
    4.0
    """
    m = _as_matrix(w, "w")
    s = torch.linalg.svdvals(m)
    top = float(s[0])
    if top == 0.0:
        raise ValueError("stable rank is undefined for an all-zero matrix")
    return float((s**2).sum()) / top**2


def effective_rank(w: Any) -> float:
    """Effective rank ``exp(H(p))`` with ``p_k = s_k / sum s`` over singular values.

    Source: Roy & Vetterli 2007, "The effective rank: a measure of effective
    dimensionality" (EUSIPCO). ValueError for an all-zero matrix.

    >>> round(effective_rank(torch.eye(5)), 6)
    5.0
    """
    m = _as_matrix(w, "w")
    s = torch.linalg.svdvals(m).numpy()
    total = float(s.sum())
    if total == 0.0:
        raise ValueError("effective rank is undefined for an all-zero matrix")
    p = s[s > 0] / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))


# --------------------------------------------------------------------------- power law


# Below this many tail eigenvalues a power-law alpha is flagged unreliable. Clauset, Shalizi &
# Newman 2009 (sec. 3.3) find xmin and alpha unreliable for small tails; measured here on pure
# Pareto samples with alpha = 2.5 and xmin="auto" (300 draws each), the 5-95% range of the
# fitted alpha is 2.07-4.17 at 10 tail values, 2.06-3.83 at 20, 2.21-3.35 at 50, 2.21-2.88 at
# 100. WeightWatcher does not fit layers with fewer than 10 eigenvalues at all.
MIN_RELIABLE_TAIL = 50


@dataclass(frozen=True)
class PowerLawFit:
    """Continuous power-law fit ``p(x) ~ x^-alpha`` for ``x >= xmin``.

    ``n_tail`` eigenvalues are ``>= xmin``; ``ks_distance`` is the Kolmogorov-Smirnov
    distance between the tail's empirical CDF and the fitted CDF;
    ``alpha_stderr = (alpha - 1) / sqrt(n_tail)``. ``xmin_method`` is ``"fixed"`` or
    ``"clauset_ks"``; ``min_tail`` is the smallest tail allowed in the search
    (``None`` for a fixed ``xmin``). ``reliable`` is False when the tail has fewer than
    ``min_reliable_tail`` values or the KS distance exceeds the 5% Kolmogorov critical value
    ``1.358 / sqrt(n_tail)`` (lenient: the parameters were fitted to the same data);
    ``unreliable_reason`` then says which, and is ``""`` for a reliable fit.
    """

    alpha: float
    xmin: float
    n_tail: int
    ks_distance: float
    xmin_method: str
    alpha_stderr: float
    min_tail: int | None
    reliable: bool = True
    unreliable_reason: str = ""
    min_reliable_tail: int = MIN_RELIABLE_TAIL


def _reliability(n_tail: int, ks_distance: float, min_reliable_tail: int) -> tuple[bool, str]:
    reasons = []
    if n_tail < min_reliable_tail:
        reasons.append(f"tail of {n_tail} eigenvalues < {min_reliable_tail}")
    critical = 1.358 / math.sqrt(n_tail)
    if ks_distance > critical:
        reasons.append(f"KS distance {ks_distance:.3g} > {critical:.3g} (5% critical value)")
    return not reasons, "; ".join(reasons)


def _mle_alpha(tail: np.ndarray, xmin: float) -> float:
    s = float(np.sum(np.log(tail / xmin)))
    if s <= 0.0:
        raise ValueError(
            f"power-law alpha is undefined: all {tail.size} tail values equal xmin={xmin}"
        )
    return 1.0 + tail.size / s


def _ks(tail_sorted: np.ndarray, xmin: float, alpha: float) -> float:
    n = tail_sorted.size
    cdf = 1.0 - (tail_sorted / xmin) ** (1.0 - alpha)
    upper = np.arange(1, n + 1) / n
    lower = np.arange(0, n) / n
    return float(max(np.max(np.abs(upper - cdf)), np.max(np.abs(cdf - lower))))


def _best_xmin(x: np.ndarray, cands: np.ndarray, first: np.ndarray
               ) -> tuple[float, float, float, int] | None:
    """Clauset's scan: (ks, alpha, xmin, start) of the candidate xmin whose MLE tail fits best.

    All candidates at once (candidate x value matrices, in chunks of about 2^20 cells): the
    same values as fitting and testing each tail in turn (:func:`_mle_alpha`, :func:`_ks`),
    about 10x faster on a 256-eigenvalue layer. O(n^2) work in the number of eigenvalues:
    fine for layer spectra (n <= ~10^4).
    """
    n_all = x.size
    logs = np.log(x)
    suffix = np.concatenate([np.cumsum(logs[::-1])[::-1], [0.0]])
    n_tail = (n_all - first).astype(np.float64)
    s = suffix[first] - n_tail * np.log(cands)
    ok = s > 0.0
    if not ok.any():
        return None
    alpha = np.where(ok, 1.0 + n_tail / np.where(ok, s, 1.0), np.nan)
    ks = np.full(cands.size, np.inf)
    pos = np.arange(n_all)
    chunk = max(1, (1 << 20) // n_all)
    for lo in range(0, cands.size, chunk):
        hi = min(lo + chunk, cands.size)
        f, a, nt = first[lo:hi, None], alpha[lo:hi, None], n_tail[lo:hi, None]
        rank = pos[None, :] - f  # position in the tail; < 0 before the tail starts
        inside = rank >= 0
        # fitted CDF 1 - (x / xmin)^(1 - alpha), as in _ks
        cdf = 1.0 - np.exp((1.0 - a) * (logs[None, :] - np.log(cands[lo:hi, None])))
        upper = np.abs((rank + 1) / nt - cdf)
        lower = np.abs(cdf - rank / nt)
        gap = np.where(inside, np.maximum(upper, lower), -np.inf)
        ks[lo:hi] = np.where(ok[lo:hi], gap.max(axis=1), np.inf)
    i = int(np.argmin(ks))  # the first of equal minima, as a sequential scan keeps
    if not np.isfinite(ks[i]):
        return None
    return float(ks[i]), float(alpha[i]), float(cands[i]), int(first[i])


def power_law_alpha(eigs: Any, *, xmin: str | float = "auto", min_tail: int = 10,
                    min_reliable_tail: int = MIN_RELIABLE_TAIL) -> PowerLawFit:
    """Power-law exponent of the ESD tail by continuous maximum likelihood.

    ``alpha = 1 + n / sum_i ln(x_i / xmin)`` over the ``n`` values ``x_i >= xmin``.
    With ``xmin="auto"`` every distinct positive value leaving at least ``min_tail``
    values in the tail is tried and the one minimising the KS distance is kept. The fit is
    always returned; ``reliable``/``unreliable_reason`` say whether to believe it (tails
    shorter than ``min_reliable_tail``, default :data:`MIN_RELIABLE_TAIL`, or a KS distance
    beyond the 5% critical value).
    Source: Clauset, Shalizi & Newman 2009, "Power-law distributions in empirical
    data", SIAM Review 51(4), eqs. (3.1), (3.7); used on ESDs by Martin & Mahoney 2021.

    >>> rng = np.random.default_rng(0)
    >>> x = (1 - rng.random(50_000)) ** (-1 / 1.5)  # Pareto, alpha = 2.5, xmin = 1
    >>> round(power_law_alpha(x, xmin=1.0).alpha, 1)
    2.5
    """
    e = _as_vector(eigs, "eigs")
    if isinstance(min_reliable_tail, bool) or int(min_reliable_tail) != min_reliable_tail \
            or min_reliable_tail < 2:
        raise ValueError(f"min_reliable_tail must be an integer >= 2, got {min_reliable_tail!r}")
    min_reliable_tail = int(min_reliable_tail)
    if isinstance(xmin, str):
        if xmin != "auto":
            raise ValueError(f"xmin must be 'auto' or a positive number, got {xmin!r}")
        if int(min_tail) != min_tail or min_tail < 2:
            raise ValueError(f"min_tail must be an integer >= 2, got {min_tail!r}")
        min_tail = int(min_tail)
        x = np.sort(e[e > 0])
        if x.size < min_tail:
            raise ValueError(
                f"need at least min_tail={min_tail} positive values for xmin='auto', got {x.size}"
            )
        cands, first = np.unique(x, return_index=True)
        n_tails = x.size - first
        keep = n_tails >= min_tail
        cands, first = cands[keep], first[keep]
        best = _best_xmin(x, cands, first)
        if best is None:
            raise ValueError("power-law alpha is undefined: no candidate xmin has a non-flat tail")
        d, alpha, xm, i = best
        n_tail = x.size - i
        reliable, reason = _reliability(n_tail, d, min_reliable_tail)
        return PowerLawFit(
            alpha=alpha,
            xmin=xm,
            n_tail=n_tail,
            ks_distance=d,
            xmin_method="clauset_ks",
            alpha_stderr=(alpha - 1.0) / math.sqrt(n_tail),
            min_tail=min_tail,
            reliable=reliable,
            unreliable_reason=reason,
            min_reliable_tail=min_reliable_tail,
        )
    try:
        xm = float(xmin)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"xmin must be 'auto' or a positive number, got {xmin!r}") from exc
    if not math.isfinite(xm) or xm <= 0:
        raise ValueError(f"xmin must be positive and finite, got {xmin!r}")
    tail = np.sort(e[e >= xm])
    if tail.size < 2:
        raise ValueError(f"need at least 2 values >= xmin={xm} to fit a power law, got {tail.size}")
    alpha = _mle_alpha(tail, xm)
    d = _ks(tail, xm, alpha)
    reliable, reason = _reliability(int(tail.size), d, min_reliable_tail)
    return PowerLawFit(
        alpha=alpha,
        xmin=xm,
        n_tail=int(tail.size),
        ks_distance=d,
        xmin_method="fixed",
        alpha_stderr=(alpha - 1.0) / math.sqrt(tail.size),
        min_tail=None,
        reliable=reliable,
        unreliable_reason=reason,
        min_reliable_tail=min_reliable_tail,
    )


# --------------------------------------------------------------------------- distance from init


def _named_tensors(p: Any, name: str) -> dict[str, torch.Tensor]:
    if isinstance(p, nn.Module):
        return {k: v for k, v in p.named_parameters()}
    if isinstance(p, Mapping):
        out = {}
        for k, v in p.items():
            if not isinstance(v, torch.Tensor | np.ndarray):
                raise ValueError(f"{name}[{k!r}] must be a tensor or array, got {type(v).__name__}")
            out[str(k)] = torch.as_tensor(v)
        return out
    raise ValueError(
        f"{name} must be an nn.Module or a mapping name -> tensor, got {type(p).__name__}"
    )


def distance_from_init(params: Any, init_params: Any) -> dict[str, float]:
    """Frobenius distance of each tensor from its initial value, absolute and relative.

    ``params``/``init_params`` are ``nn.Module`` s (their named parameters) or
    mappings name -> tensor (e.g. ``state_dict()`` copies) with the same names and
    shapes. Returns ``{"abs/<name>": ||W - W0||_F, "rel/<name>": ||W - W0||_F /
    ||W0||_F, ...}`` plus the totals over all tensors under keys ``"abs"`` and
    ``"rel"``. A relative distance from an all-zero initial tensor is ``0.0`` if the
    tensor is still zero and ``inf`` otherwise. Source: e.g. Jacot et al. 2018 and
    Lee et al. 2019 (lazy training: relative change -> 0 with width).

    >>> d = distance_from_init({"w": torch.ones(2, 2)}, {"w": torch.zeros(2, 2) + 0.5})
    >>> d["abs/w"], d["rel/w"]
    (1.0, 1.0)
    """
    cur = _named_tensors(params, "params")
    init = _named_tensors(init_params, "init_params")
    if set(cur) != set(init):
        missing = sorted(set(init) - set(cur))
        extra = sorted(set(cur) - set(init))
        raise ValueError(
            f"params and init_params name different tensors: missing from params {missing}, "
            f"not in init_params {extra}"
        )
    if not cur:
        raise ValueError("params is empty")

    def rel(a: float, b: float) -> float:
        if b > 0:
            return a / b
        return 0.0 if a == 0 else math.inf

    out: dict[str, float] = {}
    tot_d2 = 0.0
    tot_n2 = 0.0
    for k in cur:
        a = cur[k].detach().to(device="cpu", dtype=torch.float64)
        b = init[k].detach().to(device="cpu", dtype=torch.float64)
        if a.shape != b.shape:
            raise ValueError(
                f"shape mismatch for {k!r}: params {tuple(a.shape)} vs init {tuple(b.shape)}"
            )
        if not (all_finite(a) and all_finite(b)):
            raise ValueError(f"tensor {k!r} contains NaN or infinite values")
        d2 = float(((a - b) ** 2).sum())
        n2 = float((b**2).sum())
        tot_d2 += d2
        tot_n2 += n2
        out[f"abs/{k}"] = math.sqrt(d2)
        out[f"rel/{k}"] = rel(math.sqrt(d2), math.sqrt(n2))
    out["abs"] = math.sqrt(tot_d2)
    out["rel"] = rel(math.sqrt(tot_d2), math.sqrt(tot_n2))
    return out


# --------------------------------------------------------------------------- one SVD


@dataclass(frozen=True, eq=False)
class WeightSpectrum:
    """Everything :func:`esd`, :func:`stable_rank` and :func:`effective_rank` give, from one
    eigendecomposition of the smaller Gram matrix."""

    singular_values: np.ndarray
    eigenvalues: np.ndarray
    """``esd(W)``: all M eigenvalues of ``W^T W / N``, ascending, structural zeros kept."""
    stable_rank: float
    effective_rank: float


def weight_spectrum(w: Any) -> WeightSpectrum:
    """The ESD of ``W`` (N x M) from one float64 eigendecomposition of its smaller Gram matrix
    (exactly as :func:`esd`), and the ranks from the singular values ``sqrt(N * lambda)``.

    Equal to calling :func:`esd`, :func:`stable_rank` and :func:`effective_rank` separately
    (three decompositions); this is what a probe that measures often should use. The
    symmetric eigensolver is ~1.5x faster than an SVD (a 256 x 256 layer: 2.3-2.9 ms vs
    3.7-4.0 ms, one thread). Eigenvalues below the Gram matrix's round-off
    (``k * eps * lambda_max``, ``k`` its size) count as zero singular values, as an SVD would
    find them: the ranks then agree with the SVD's to ~1e-12 relative, also for a
    rank-deficient ``W``.

    >>> ws = weight_spectrum(2.0 * torch.eye(4))  # W^T W / 4 = I
    >>> ws.eigenvalues.tolist(), ws.stable_rank, round(ws.effective_rank, 6)
    ([1.0, 1.0, 1.0, 1.0], 4.0, 4.0)
    """
    m = _as_matrix(w, "w")
    n_rows, n_cols = m.shape
    gram = m.T @ m if n_rows >= n_cols else m @ m.T
    nonzero = np.clip(torch.linalg.eigvalsh(gram / n_rows).numpy(), 0.0, None)  # ascending
    top = float(nonzero[-1])
    if top == 0.0:
        raise ValueError("the spectrum of an all-zero matrix has no ranks")
    eigs = np.zeros(n_cols)
    eigs[n_cols - nonzero.size:] = nonzero
    roundoff = nonzero.size * np.finfo(np.float64).eps * top
    s = np.sqrt(np.where(nonzero > roundoff, nonzero, 0.0) * n_rows)[::-1]  # descending
    p = s[s > 0] / float(s.sum())
    return WeightSpectrum(_readonly(s), _readonly(eigs), float(nonzero.sum()) / top,
                          float(math.exp(-float(np.sum(p * np.log(p))))))
