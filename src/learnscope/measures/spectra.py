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
  ``q > 1``.

Array results are ``numpy.float64``; scalar results are Python floats. Every
result object records the estimator settings that produced it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "MPFit",
    "PowerLawFit",
    "WeightSpectrum",
    "distance_from_init",
    "effective_rank",
    "esd",
    "marchenko_pastur_fit",
    "power_law_alpha",
    "stable_rank",
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
    if not bool(torch.isfinite(t).all()):
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


@dataclass(frozen=True, eq=False)
class MPFit:
    """Marchenko-Pastur bulk edges for an ESD, and the eigenvalues above the bulk.

    ``lambda_minus``/``lambda_plus`` bound the non-zero part of the bulk;
    ``spikes`` are the eigenvalues ``> lambda_plus`` (ascending) and ``n_spikes``
    their count (with ``edge_tolerance > 0``: ``> lambda_plus * (1 + edge_tolerance)``).
    ``sigma2_method`` is ``"mean"`` (estimated as the mean eigenvalue) or
    ``"given"``; ``aspect_ratio`` is ``q = M / N``.
    """

    lambda_minus: float
    lambda_plus: float
    sigma2: float
    n_spikes: int
    spikes: np.ndarray
    aspect_ratio: float
    sigma2_method: str
    edge_tolerance: float


def marchenko_pastur_fit(
    eigs: Any,
    aspect_ratio: float,
    *,
    sigma2: float | None = None,
    edge_tolerance: float = 0.0,
) -> MPFit:
    """Marchenko-Pastur edges ``sigma2 (1 +- sqrt q)^2`` and the spikes above the bulk.

    ``eigs`` is the full ESD from :func:`esd` (zeros included) and ``aspect_ratio``
    is ``q = M / N``. If ``sigma2`` is None it is estimated as the mean of ``eigs``,
    which for the full ESD of ``W^T W / N`` equals ``||W||_F^2 / (N M)`` (the
    entry variance; spikes inflate it slightly). At finite size the largest bulk
    eigenvalues fluctuate a little above ``lambda_plus`` (Tracy-Widom, relative
    scale ``~ N^(-2/3)``); ``edge_tolerance`` (relative) keeps them out of
    ``spikes``. Source: Marchenko & Pastur 1967;
    Martin & Mahoney 2021, sec. 3.

    >>> w = torch.randn(2000, 1000, generator=torch.Generator().manual_seed(0))
    >>> fit = marchenko_pastur_fit(esd(w), 0.5)
    >>> round(fit.lambda_plus, 1)  # (1 + sqrt(0.5))^2
    2.9
    """
    e = _as_vector(eigs, "eigs")
    q = float(aspect_ratio)
    if not math.isfinite(q) or q <= 0:
        raise ValueError(f"aspect_ratio must be positive and finite, got {aspect_ratio!r}")
    if sigma2 is None:
        s2 = float(np.mean(e))
        method = "mean"
        if s2 <= 0:
            raise ValueError("cannot estimate sigma2: the mean eigenvalue is not positive")
    else:
        s2 = float(sigma2)
        method = "given"
        if not math.isfinite(s2) or s2 <= 0:
            raise ValueError(f"sigma2 must be positive and finite, got {sigma2!r}")
    tol = float(edge_tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"edge_tolerance must be >= 0 and finite, got {edge_tolerance!r}")
    sq = math.sqrt(q)
    lam_minus = s2 * (1.0 - sq) ** 2
    lam_plus = s2 * (1.0 + sq) ** 2
    spikes = np.sort(e[e > lam_plus * (1.0 + tol)])
    return MPFit(
        lambda_minus=lam_minus,
        lambda_plus=lam_plus,
        sigma2=s2,
        n_spikes=int(spikes.size),
        spikes=_readonly(spikes),
        aspect_ratio=q,
        sigma2_method=method,
        edge_tolerance=tol,
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


@dataclass(frozen=True)
class PowerLawFit:
    """Continuous power-law fit ``p(x) ~ x^-alpha`` for ``x >= xmin``.

    ``n_tail`` eigenvalues are ``>= xmin``; ``ks_distance`` is the Kolmogorov-Smirnov
    distance between the tail's empirical CDF and the fitted CDF;
    ``alpha_stderr = (alpha - 1) / sqrt(n_tail)``. ``xmin_method`` is ``"fixed"`` or
    ``"clauset_ks"``; ``min_tail`` is the smallest tail allowed in the search
    (``None`` for a fixed ``xmin``).
    """

    alpha: float
    xmin: float
    n_tail: int
    ks_distance: float
    xmin_method: str
    alpha_stderr: float
    min_tail: int | None


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


def power_law_alpha(eigs: Any, *, xmin: str | float = "auto", min_tail: int = 10) -> PowerLawFit:
    """Power-law exponent of the ESD tail by continuous maximum likelihood.

    ``alpha = 1 + n / sum_i ln(x_i / xmin)`` over the ``n`` values ``x_i >= xmin``.
    With ``xmin="auto"`` every distinct positive value leaving at least ``min_tail``
    values in the tail is tried and the one minimising the KS distance is kept.
    Source: Clauset, Shalizi & Newman 2009, "Power-law distributions in empirical
    data", SIAM Review 51(4), eqs. (3.1), (3.7); used on ESDs by Martin & Mahoney 2021.

    >>> rng = np.random.default_rng(0)
    >>> x = (1 - rng.random(50_000)) ** (-1 / 1.5)  # Pareto, alpha = 2.5, xmin = 1
    >>> round(power_law_alpha(x, xmin=1.0).alpha, 1)
    2.5
    """
    e = _as_vector(eigs, "eigs")
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
        best: tuple[float, float, float, int] | None = None  # (ks, alpha, xmin, start)
        logs = np.log(x)
        suffix = np.concatenate([np.cumsum(logs[::-1])[::-1], [0.0]])
        for xm, i in zip(cands, first, strict=True):
            n = x.size - i
            s = suffix[i] - n * math.log(xm)
            if s <= 0.0:
                continue
            alpha = 1.0 + float(n) / float(s)
            d = _ks(x[i:], float(xm), alpha)
            if best is None or d < best[0]:
                best = (d, alpha, float(xm), int(i))
        # O(n^2) in the number of eigenvalues: fine for layer spectra (n <= ~10^4).
        if best is None:
            raise ValueError("power-law alpha is undefined: no candidate xmin has a non-flat tail")
        d, alpha, xm, i = best
        n_tail = x.size - i
        return PowerLawFit(
            alpha=alpha,
            xmin=xm,
            n_tail=n_tail,
            ks_distance=d,
            xmin_method="clauset_ks",
            alpha_stderr=(alpha - 1.0) / math.sqrt(n_tail),
            min_tail=min_tail,
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
    return PowerLawFit(
        alpha=alpha,
        xmin=xm,
        n_tail=int(tail.size),
        ks_distance=_ks(tail, xm, alpha),
        xmin_method="fixed",
        alpha_stderr=(alpha - 1.0) / math.sqrt(tail.size),
        min_tail=None,
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
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
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
    """Everything :func:`esd`, :func:`stable_rank` and :func:`effective_rank` give, from one SVD."""

    singular_values: np.ndarray
    eigenvalues: np.ndarray
    """``esd(W)``: all M eigenvalues of ``W^T W / N``, ascending, structural zeros kept."""
    stable_rank: float
    effective_rank: float


def weight_spectrum(w: Any) -> WeightSpectrum:
    """One float64 SVD of ``W`` (N x M) and the spectral quantities derived from it.

    Equal to calling :func:`esd`, :func:`stable_rank` and :func:`effective_rank` separately
    (three decompositions); this is what a probe that measures often should use.

    >>> ws = weight_spectrum(2.0 * torch.eye(3))
    >>> ws.eigenvalues.tolist(), ws.stable_rank, round(ws.effective_rank, 6)
    ([1.0, 1.0, 1.0], 3.0, 3.0)
    """
    m = _as_matrix(w, "w")
    n_rows, n_cols = m.shape
    s = torch.linalg.svdvals(m).numpy()
    top, total = float(s[0]), float(s.sum())
    if top == 0.0:
        raise ValueError("the spectrum of an all-zero matrix has no ranks")
    eigs = np.zeros(n_cols)
    eigs[n_cols - len(s):] = np.sort(s**2 / n_rows)
    p = s[s > 0] / total
    return WeightSpectrum(_readonly(s), _readonly(eigs), float((s**2).sum()) / top**2,
                          float(math.exp(-float(np.sum(p * np.log(p))))))
