"""Linear centered kernel alignment (CKA) between layer activations.

Everything here is a pure function of activation matrices (``n`` examples x features; any
trailing shape is flattened, so ``(n, C, H, W)`` becomes ``(n, C*H*W)``). Inputs may be torch
tensors or numpy arrays; all arithmetic is done in float64.

Two estimators of the Hilbert-Schmidt independence criterion (HSIC) are offered:

* biased (``unbiased=False``): ``HSIC0(K, L) = tr(K H L H) / (n-1)^2`` with the centering matrix
  ``H = I - 11^T/n``, as in Kornblith et al. 2019, "Similarity of Neural Network Representations
  Revisited" (ICML).
* unbiased (``unbiased=True``): the U-statistic of Song et al. 2012, "Feature Selection via
  Dependence Maximization" (JMLR), eq. 5,
  ``HSIC1(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``
  with ``K~``, ``L~`` the Gram matrices with zeroed diagonals. This is the estimator behind the
  minibatch CKA of Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same
  Things?" (ICLR). It equals ``<U(K), U(L)>_F / (n(n-3))`` where ``U`` is the U-centering of
  Szekely & Rizzo 2014, which is what lets all layer pairs come from one matrix product.

CKA is ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels ``K = X X^T``,
``L = Y Y^T``.

For column-centered data both estimators are the Frobenius product ``<K, L>_F`` (with the
diagonals left out for the unbiased one) plus ``O(n)`` terms of the Grams' diagonals, and
``<K, L>_F = ||X^T Y||_F^2``. So :func:`cka_matrix` computes one ``L x L`` Frobenius matrix
for all layer pairs, either from ``d x d`` cross-covariances or from ``n x n`` Grams, whichever
needs fewer multiply-adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from learnscope.measures._finite import all_finite

__all__ = ["MinibatchCKA", "cka_matrix", "linear_cka", "linear_cka_to", "minibatch_cka"]

_MIN_UNBIASED_EXAMPLES = 4
# A feature whose deviations from its mean are below this fraction of its magnitude is treated
# as exactly constant (the deviations are rounding noise from computing the mean).
_CONSTANT_RTOL = 1e-12


# ----------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------


def _as_matrix(x: Any, name: str, *, keep_float32: bool = False) -> Tensor:
    """Convert ``x`` to a float64 ``(n, d)`` tensor (trailing dims flattened) and validate it.

    ``keep_float32`` leaves float32 input as it is (every float32 is a float64, so
    :func:`_center` then makes the same float64 result without a separate converted copy).
    """
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim == 0:
        raise ValueError(f"{name} must have a leading examples dimension, got a scalar")
    if t.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    n = t.shape[0]
    if n == 0:
        raise ValueError(f"{name} has no examples (shape {tuple(t.shape)})")
    if t.numel() == 0:
        raise ValueError(f"{name} has no features (shape {tuple(t.shape)})")
    t = t.detach().reshape(n, -1)
    if not (keep_float32 and t.dtype == torch.float32):
        t = t.to(torch.float64)
    if not all_finite(t):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _center(t: Tensor, name: str, *, allow_constant: bool = False) -> Tensor:
    """Subtract per-feature means (in float64); raise if every feature is constant.

    Features that are constant up to rounding are set to exactly zero, so the rounding noise of
    the mean cannot masquerade as signal.
    """
    centered = t.to(torch.float64, copy=True)  # float32 input is promoted exactly
    mean = centered.mean(dim=0)
    centered -= mean
    # max |.| without an |.| copy (aminmax is slower)
    low, high = t.amin(dim=0).to(torch.float64), t.amax(dim=0).to(torch.float64)
    magnitude = torch.maximum(high, -low)
    # Rounded subtraction is monotone, so the centered column's extremes are exactly these:
    deviation = torch.maximum(high - mean, mean - low)
    constant = deviation <= _CONSTANT_RTOL * magnitude
    if bool(constant.all()):
        if not allow_constant:
            raise ValueError(
                f"{name} has constant activations (zero variance across the {t.shape[0]} "
                "examples); CKA is undefined"
            )
        return torch.zeros_like(centered)
    if bool(constant.any()):
        centered[:, constant] = 0.0
    return centered


def _common_n(mats: Sequence[Tensor], names: Sequence[str]) -> int:
    n = mats[0].shape[0]
    for m, name in zip(mats, names, strict=True):
        if m.shape[0] != n:
            raise ValueError(
                f"mismatched numbers of examples: {names[0]} has {n} but {name} has {m.shape[0]}"
            )
    return n


def _check_n(n: int, unbiased: bool) -> None:
    if unbiased and n < _MIN_UNBIASED_EXAMPLES:
        raise ValueError(
            f"the unbiased HSIC estimator needs at least {_MIN_UNBIASED_EXAMPLES} examples, got {n}"
        )
    if n < 2:
        raise ValueError(f"CKA needs at least 2 examples, got {n}")


# ----------------------------------------------------------------------------------------------
# HSIC building blocks
# ----------------------------------------------------------------------------------------------


def _u_center(gram: Tensor) -> Tensor:
    """U-centering (Szekely & Rizzo 2014) of a symmetric ``n x n`` Gram matrix (n >= 4).

    ``<U(K), U(L)>_F / (n(n-3))`` is Song et al.'s unbiased HSIC1. Returns a new matrix.
    """
    n = gram.shape[0]
    k = gram.clone()
    k.fill_diagonal_(0.0)
    row = k.sum(dim=1)
    total = row.sum()
    k -= row[:, None] / (n - 2)
    k -= row[None, :] / (n - 2)
    k += total / ((n - 1) * (n - 2))
    k.fill_diagonal_(0.0)
    return k


def _centered_gram(xc: Tensor, unbiased: bool) -> Tensor:
    """``H K H`` (biased) or ``U(K)`` (unbiased) for the linear kernel of centered ``xc``.

    For column-centered ``xc``, ``H (X X^T) H = xc xc^T``; U-centering is invariant to the
    column centering, so it may also start from ``xc``.
    """
    gram = xc @ xc.T
    return _u_center(gram) if unbiased else gram


def _hsic_scale(n: int, unbiased: bool) -> float:
    return 1.0 / (n * (n - 3)) if unbiased else 1.0 / (n - 1) ** 2


def _feature_space_cheaper(n: int, dx: int, dy: int) -> bool:
    """Compare flop counts: d x d cross-covariances vs n x n Gram matrices."""
    return dx * dy + dx * dx + dy * dy < n * (dx + dy)


def _hsic_terms_features(xc: Tensor, yc: Tensor, unbiased: bool,
                         cache: dict[str, Any] | None = None) -> tuple[float, float, float]:
    """(HSIC(K,L), HSIC(K,K), HSIC(L,L)) from ``d x d`` products; needs column-centered input.

    Biased: ``tr(KHLH) = ||Y^T X||_F^2``. Unbiased: with centered data ``K 1 = 0``, so with
    ``k = diag(K)``: ``tr(K~L~) = ||Y^T X||_F^2 - k.l``, ``1'K~1 = -sum(k)``, ``K~1 = -k``,
    which turns Song et al.'s formula into ``d x d`` products plus ``O(n)`` corrections.
    ``cache`` keeps ``y``'s own terms between calls with the same ``yc``.
    """
    n = xc.shape[0]
    scale = _hsic_scale(n, unbiased)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    self_x = torch.linalg.matrix_norm(xc.T @ xc) ** 2
    if cache is not None and "features" in cache:
        self_y, ky = cache["features"]
    else:
        self_y = torch.linalg.matrix_norm(yc.T @ yc) ** 2
        ky = (yc * yc).sum(dim=1)
        if cache is not None:
            cache["features"] = (self_y, ky)
    if not unbiased:
        return float(cross * scale), float(self_x * scale), float(self_y * scale)

    kx = (xc * xc).sum(dim=1)

    def song(frob2: Tensor, a: Tensor, b: Tensor) -> float:
        ab = a @ b
        value = frob2 - ab + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)
        return float(value * scale)

    return song(cross, kx, ky), song(self_x, kx, kx), song(self_y, ky, ky)


def _hsic_terms_gram(xc: Tensor, yc: Tensor, unbiased: bool,
                     cache: dict[str, Any] | None = None) -> tuple[float, float, float]:
    """(HSIC(K,L), HSIC(K,K), HSIC(L,L)) from ``n x n`` (centered or U-centered) Gram matrices;
    ``cache`` keeps ``y``'s Gram between calls with the same ``yc``."""
    n = xc.shape[0]
    scale = _hsic_scale(n, unbiased)
    gx = _centered_gram(xc, unbiased)
    if cache is not None and "gram" in cache:
        gy = cache["gram"]
    else:
        gy = _centered_gram(yc, unbiased)
        if cache is not None:
            cache["gram"] = gy
    return (
        float((gx * gy).sum() * scale),
        float((gx * gx).sum() * scale),
        float((gy * gy).sum() * scale),
    )


def _linear_hsic_terms(
    x: Any, y: Any, *, unbiased: bool, method: str = "auto"
) -> tuple[float, float, float]:
    """Validated (HSIC(K,L), HSIC(K,K), HSIC(L,L)); ``method`` is "auto", "features" or "gram"."""
    xm, ym = _as_matrix(x, "x"), _as_matrix(y, "y")
    n = _common_n([xm, ym], ["x", "y"])
    _check_n(n, unbiased)
    return _hsic_terms_centered(_center(xm, "x"), _center(ym, "y"), unbiased, method)


def _hsic_terms_centered(xc: Tensor, yc: Tensor, unbiased: bool, method: str = "auto",
                         cache: dict[str, Any] | None = None) -> tuple[float, float, float]:
    n = xc.shape[0]
    if method == "auto":
        method = "features" if _feature_space_cheaper(n, xc.shape[1], yc.shape[1]) else "gram"
    if method == "features":
        return _hsic_terms_features(xc, yc, unbiased, cache)
    if method == "gram":
        return _hsic_terms_gram(xc, yc, unbiased, cache)
    raise ValueError(f"unknown method {method!r}; expected 'auto', 'features' or 'gram'")


def _check_self_hsic(value: float, name: str) -> None:
    if not value > 0.0:
        raise ValueError(
            f"HSIC of {name} with itself is {value:.3g} (not positive): its representation has "
            "no usable variance (constant or degenerate activations), so CKA is undefined"
        )


def _normalize_matrix(
    cross: Tensor, self_a: Tensor, self_b: Tensor, name_a: str, name_b: str
) -> Tensor:
    for values, name in ((self_a, name_a), (self_b, name_b)):
        bad = torch.nonzero(~(values > 0.0)).flatten()
        if bad.numel():
            i = int(bad[0])
            _check_self_hsic(float(values[i]), f"{name}[{i}]")
    return cross / torch.sqrt(self_a[:, None] * self_b[None, :])


def _centered_layers(
    activations: Sequence[Any], name: str, *, unbiased: bool, allow_constant: bool = False
) -> tuple[list[Tensor], int]:
    """Validate a list of layers; return them column-centered (float64, one device) and n."""
    if isinstance(activations, Tensor | np.ndarray):
        raise ValueError(
            f"{name} must be a sequence of per-layer activations, got a single array; "
            "wrap it in a list"
        )
    layers = list(activations)
    if not layers:
        raise ValueError(f"{name} is an empty list of layers")
    names = [f"{name}[{i}]" for i in range(len(layers))]
    mats = [_as_matrix(a, nm, keep_float32=True) for a, nm in zip(layers, names, strict=True)]
    n = _common_n(mats, names)
    _check_n(n, unbiased)
    device = mats[0].device
    centered = [
        _center(m.to(device), nm, allow_constant=allow_constant)
        for m, nm in zip(mats, names, strict=True)
    ]
    return centered, n


# ----------------------------------------------------------------------------------------------
# All-pairs HSIC: feature-space or Gram route, chosen by counting multiply-adds
# ----------------------------------------------------------------------------------------------

# Rows of each Gram strip on the Gram route: only strips on and right of the diagonal are formed,
# so ~n/8 rows cost 9/16 of the full Gram; much thinner products run below the matmul peak.
_STRIP_SPLITS = 8
_MIN_STRIP_ROWS = 128
# At most this many float64 entries of Gram strips (all layers together) are held at once.
_STRIP_BUDGET = 1 << 24


def _strip_rows(n: int, n_layers: int) -> int:
    """Rows per Gram strip: ~n/8, at least 128, and L strips within the memory budget."""
    rows = max(_MIN_STRIP_ROWS, -(-n // _STRIP_SPLITS))
    rows = min(rows, max(1, _STRIP_BUDGET // max(1, n_layers * n)))
    return max(1, min(rows, n))


def _allpairs_macs(n: int, widths: Sequence[int], route: str) -> int:
    """Multiply-adds of the all-pairs Frobenius products on ``route`` ("features" or "gram").

    Features: ``X_i^T [X_i .. X_L]`` for every ``i`` (the block upper triangle of ``Z^T Z``).
    Gram: the strips of every ``K_i = X_i X_i^T`` on and right of the diagonal, plus the
    ``L x L`` products of the stacked strips. Lower-order terms (centering, squares) are left out.
    """
    if route == "features":
        total, tail = 0, sum(widths)
        for d in widths:
            total += n * d * tail
            tail -= d
        return total
    if route == "gram":
        rows = _strip_rows(n, len(widths))
        strip_entries = sum(min(rows, n - s) * (n - s) for s in range(0, n, rows))
        return strip_entries * (sum(widths) + len(widths) ** 2)
    raise ValueError(f"unknown method {route!r}; expected 'auto', 'features' or 'gram'")


def _check_method(method: str) -> None:
    if method not in ("auto", "features", "gram"):
        raise ValueError(f"unknown method {method!r}; expected 'auto', 'features' or 'gram'")


def _allpairs_route(n: int, widths: Sequence[int], method: str = "auto") -> str:
    """The route :func:`cka_matrix` takes: the one with fewer multiply-adds for "auto"."""
    if method == "auto":
        features = _allpairs_macs(n, widths, "features")
        return "features" if features <= _allpairs_macs(n, widths, "gram") else "gram"
    _check_method(method)
    return method


def _frobenius_features(centered: Sequence[Tensor], row_norms: Tensor | None) -> Tensor:
    """Upper triangle of ``F_ij = <K_i, K_j>_F = ||X_i^T X_j||_F^2`` from ``d x d`` products.

    Given ``row_norms`` (``L x n``, ``k_i = diag(K_i)``), the Grams' diagonals are excluded:
    ``<K~_i, K~_j> = F_ij - k_i.k_j`` (this route runs when the widths are small next to ``n``,
    where ``F`` is not dominated by the diagonal, so the subtraction loses little).
    """
    n_layers = len(centered)
    z = torch.cat(list(centered), dim=1)
    layer_of_column = torch.repeat_interleave(
        torch.arange(n_layers, device=z.device),
        torch.tensor([c.shape[1] for c in centered], device=z.device),
    )
    out = torch.zeros(n_layers, n_layers, dtype=torch.float64, device=z.device)
    start = 0
    for i, xc in enumerate(centered):
        block = xc.T @ z[:, start:]  # d_i x (d_i + ... + d_L)
        column_sums = (block * block).sum(dim=0)
        out[i].index_add_(0, layer_of_column[start:], column_sums)
        start += xc.shape[1]
    if row_norms is not None:
        out -= row_norms @ row_norms.T
    return torch.triu(out)


def _frobenius_gram(centered: Sequence[Tensor], zero_diagonal: bool) -> Tensor:
    """Upper triangle of ``F_ij = <K_i, K_j>_F`` (``K~`` with ``zero_diagonal``) from the Grams.

    The Grams are formed in horizontal strips, each from its diagonal block rightwards:
    ``<K_i, K_j> = sum over strips of <diag_i, diag_j> + 2 <right_i, right_j>``. The strips of
    all layers are stacked so each strip adds to all pairs in two products.
    """
    n = centered[0].shape[0]
    n_layers = len(centered)
    device = centered[0].device
    rows = _strip_rows(n, n_layers)
    diag_part = torch.zeros(n_layers, n_layers, dtype=torch.float64, device=device)
    right_part = torch.zeros_like(diag_part)
    # One buffer each, reused by every strip: fresh memory per strip costs page faults.
    diag_buffer = torch.empty(n_layers * rows * rows, dtype=torch.float64, device=device)
    right_buffer = torch.empty(n_layers * rows * (n - min(rows, n)), dtype=torch.float64,
                               device=device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        diag = diag_buffer[: n_layers * (e - s) ** 2].view(n_layers, e - s, e - s)
        right = right_buffer[: n_layers * (e - s) * (n - e)].view(n_layers, e - s, n - e)
        for i, xc in enumerate(centered):
            torch.mm(xc[s:e], xc[s:e].T, out=diag[i])
            if e < n:
                torch.mm(xc[s:e], xc[e:].T, out=right[i])
        if zero_diagonal:
            diag.diagonal(dim1=1, dim2=2).zero_()
        flat = diag.reshape(n_layers, -1)
        diag_part += flat @ flat.T
        if e < n:
            flat = right.reshape(n_layers, -1)
            right_part += flat @ flat.T
    return torch.triu(diag_part + 2.0 * right_part)


def _allpairs_hsic(centered: Sequence[Tensor], unbiased: bool, method: str = "auto") -> Tensor:
    """``L x L`` HSIC of every pair of column-centered layers (exactly symmetric).

    Biased: ``HSIC0 = <K_i, K_j>_F / (n-1)^2`` (centered data already gives ``H K H = K``).
    Unbiased (Song et al. 2012, eq. 5): centered data gives ``K 1 = 0``, hence with
    ``k = diag(K)``: ``1'K~1 = -sum(k)`` and ``K~1 = -k``, so
    ``HSIC1 = [<K~_i, K~_j> + s_i s_j / ((n-1)(n-2)) - 2 k_i.k_j / (n-2)] / (n(n-3))``
    with ``s = sum(k)``: one Frobenius matrix plus ``O(L^2 n)`` corrections on either route.
    """
    n = centered[0].shape[0]
    route = _allpairs_route(n, [c.shape[1] for c in centered], method)
    row_norms = (torch.stack([torch.einsum("ij,ij->i", xc, xc) for xc in centered])
                 if unbiased else None)
    if route == "features":
        frobenius = _frobenius_features(centered, row_norms)
    else:
        frobenius = _frobenius_gram(centered, zero_diagonal=unbiased)
    if row_norms is not None:
        sums = row_norms.sum(dim=1)
        frobenius = frobenius + torch.triu(
            torch.outer(sums, sums) / ((n - 1) * (n - 2))
            - (2.0 / (n - 2)) * (row_norms @ row_norms.T))
    upper = frobenius * _hsic_scale(n, unbiased)
    return upper + torch.triu(upper, diagonal=1).T


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def linear_cka(x: Any, y: Any, *, unbiased: bool = False) -> float:
    """Linear CKA between two activation matrices with the same examples.

    Computes ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` for ``K = X X^T``, ``L = Y Y^T``
    (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited").
    ``unbiased=False`` uses the biased HSIC with centered Gram matrices; ``unbiased=True``
    uses the unbiased HSIC1 of Song et al. 2012, as in the minibatch CKA of Nguyen, Raghu &
    Kornblith 2021 (needs at least 4 examples). ``x``: ``(n, ...)`` and ``y``: ``(n, ...)``,
    torch tensors or numpy arrays; trailing dims are flattened. Computed in float64, in feature
    space (``||Y^T X||_F^2``) when that is cheaper than ``n x n`` Gram matrices; both routes give
    the same value.

    Raises ``ValueError`` for mismatched numbers of examples, constant activations, too few
    examples, or non-finite values.

    >>> import torch
    >>> x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    >>> round(linear_cka(x, 3.0 * x), 6)
    1.0
    >>> q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    >>> round(linear_cka(x, x @ q, unbiased=True), 6)
    1.0
    """
    hxy, hxx, hyy = _linear_hsic_terms(x, y, unbiased=unbiased)
    _check_self_hsic(hxx, "x")
    _check_self_hsic(hyy, "y")
    return hxy / float(np.sqrt(hxx * hyy))


def linear_cka_to(xs: Sequence[Any], y: Any, *, unbiased: bool = False) -> list[float]:
    """``[linear_cka(x, y, unbiased=unbiased) for x in xs]`` with ``y`` validated, centered and
    its own HSIC term computed once (e.g. every checkpoint against the final state).

    An ``x`` on which CKA is undefined (constant or non-finite activations) gives NaN;
    :func:`linear_cka` on it says why. A bad ``y``, or an ``x`` with another number of
    examples, raises ``ValueError``.

    >>> import torch
    >>> x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    >>> [round(v, 6) for v in linear_cka_to([x, 2 * x, torch.ones(30, 5)], x)][:2]
    [1.0, 1.0]
    """
    ym = _as_matrix(y, "y")
    n = ym.shape[0]
    _check_n(n, unbiased)
    yc = _center(ym, "y")
    cache: dict[str, Any] = {}
    out: list[float] = []
    for i, x in enumerate(xs):
        name = f"xs[{i}]"
        t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
        if t.ndim == 0 or t.shape[0] != n:
            raise ValueError(f"mismatched numbers of examples: y has {n} but {name} has "
                             f"{t.shape[0] if t.ndim else 'none'}")
        try:
            xc = _center(_as_matrix(t, name), name)
        except ValueError:
            out.append(math.nan)
            continue
        hxy, hxx, hyy = _hsic_terms_centered(xc, yc, unbiased, cache=cache)
        _check_self_hsic(hyy, "y")
        out.append(hxy / math.sqrt(hxx * hyy) if hxx > 0.0 else math.nan)
    return out


def cka_matrix(
    activations: Sequence[Any], *, unbiased: bool = False, method: str = "auto"
) -> Tensor:
    """Linear CKA between every pair of layers, as an ``L x L`` float64 tensor.

    Equals ``linear_cka(a_i, a_j, unbiased=...)`` for every pair (Kornblith et al. 2019;
    unbiased form: Song et al. 2012 / Nguyen et al. 2021) and is exactly symmetric. All HSIC
    values come from one Frobenius matrix ``<K_i, K_j>_F``, computed on one of two routes:

    * ``"features"``: ``||X_i^T X_j||_F^2`` from each layer against the concatenation of the
      layers after it, ``O(n (sum d)^2 / 2)``: cheap when the layers are narrow next to ``n``;
    * ``"gram"``: the ``n x n`` Grams, formed in strips from the diagonal rightwards (about
      half of each Gram) and stacked over layers, ``O(n^2 (sum d + L^2) / 2)``: cheap when
      the layers are wide or many.

    ``method="auto"`` takes the route with fewer multiply-adds (for ``L`` layers of width
    ``d`` about ``features`` when ``L d < n``); both give the same values to rounding.
    Everything is float64. All layers must share the same ``n`` examples; widths may differ.
    Memory: the centered float64 layers, plus their concatenation (features) or at most
    128 MiB of Gram strips (gram).

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(40, 6, generator=g)
    >>> m = cka_matrix([x, 2 * x, torch.randn(40, 3, generator=g)])
    >>> m.shape, round(float(m[0, 1]), 6)
    (torch.Size([3, 3]), 1.0)
    """
    _check_method(method)  # before any work
    centered, _ = _centered_layers(activations, "activations", unbiased=unbiased)
    hsic = _allpairs_hsic(centered, unbiased, method)
    diag = torch.diagonal(hsic).clone()
    return _normalize_matrix(hsic, diag, diag, "activations", "activations")


class MinibatchCKA:
    """Accumulating minibatch linear CKA (Nguyen, Raghu & Kornblith 2021).

    Over batches ``b`` with Grams ``K_b`` (layer from list A) and ``L_b`` (layer from list B):
    ``CKA = sum_b HSIC1(K_b, L_b) / sqrt(sum_b HSIC1(K_b, K_b) * sum_b HSIC1(L_b, L_b))``,
    with ``HSIC1`` the unbiased estimator of Song et al. 2012 (each batch needs >= 4
    examples). Every ``update`` handles all pairs at once on the cheaper route of
    :func:`cka_matrix`. ``acts_b`` defaults to ``acts_a`` (self-similarity);
    that choice and the layer counts must stay the same across updates. A layer that is
    constant within one batch just contributes zero to that batch.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> metric = MinibatchCKA()
    >>> for _ in range(3):
    ...     x = torch.randn(32, 5, generator=g)
    ...     metric.update([x, 2 * x])
    >>> [round(v, 6) for v in metric.compute().flatten().tolist()]
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._cross: Tensor | None = None
        self._self_a: Tensor | None = None
        self._self_b: Tensor | None = None
        self._shared: bool | None = None
        self.num_batches = 0
        self.num_examples = 0

    def update(self, acts_a: Sequence[Any], acts_b: Sequence[Any] | None = None) -> None:
        """Add one minibatch: per-layer activations for list A (and optionally list B)."""
        shared = acts_b is None
        if self._shared is not None and shared != self._shared:
            raise ValueError(
                "acts_b must be given in every update or in none (it defaults to acts_a)"
            )
        centered_a, n = _centered_layers(acts_a, "acts_a", unbiased=True, allow_constant=True)
        if shared:
            cross = _allpairs_hsic(centered_a, True)
            self_a = torch.diagonal(cross).clone()
            self_b = self_a
        else:
            centered_b, n_b = _centered_layers(acts_b, "acts_b", unbiased=True,
                                               allow_constant=True)
            if n_b != n:
                raise ValueError(
                    f"mismatched numbers of examples: acts_a has {n} but acts_b has {n_b}"
                )
            device = centered_a[0].device
            both = _allpairs_hsic(centered_a + [c.to(device) for c in centered_b], True)
            n_a = len(centered_a)
            cross = both[:n_a, n_a:].clone()
            self_a = torch.diagonal(both)[:n_a].clone()
            self_b = torch.diagonal(both)[n_a:].clone()
        if self._cross is None:
            self._cross, self._self_a, self._self_b = cross, self_a, self_b
            self._shared = shared
        else:
            if cross.shape != self._cross.shape:
                raise ValueError(
                    f"layer counts changed between updates: expected {tuple(self._cross.shape)} "
                    f"(A x B), got {tuple(cross.shape)}"
                )
            dev = self._cross.device
            self._cross = self._cross + cross.to(dev)
            self._self_a = self._self_a + self_a.to(dev)
            self._self_b = self._self_b + self_b.to(dev)
        self.num_batches += 1
        self.num_examples += n

    def compute(self) -> Tensor:
        """Return the ``L_A x L_B`` float64 minibatch CKA matrix of everything seen so far."""
        if self._cross is None:
            raise RuntimeError("MinibatchCKA.compute() called before any update()")
        name_b = "acts_a" if self._shared else "acts_b"
        return _normalize_matrix(self._cross, self._self_a, self._self_b, "acts_a", name_b)


_END = object()


def minibatch_cka(
    batches_a: Iterable[Sequence[Any]], batches_b: Iterable[Sequence[Any]] | None = None
) -> Tensor:
    """Functional twin of :class:`MinibatchCKA`: minibatch CKA over an iterable of batches.

    Each element of ``batches_a`` is a list of per-layer activations for one minibatch;
    ``batches_b`` (same number of batches) defaults to ``batches_a``. Returns the
    ``L_A x L_B`` matrix ``sum_b HSIC1(K_b, L_b) / sqrt(sum_b HSIC1(K_b, K_b) sum_b
    HSIC1(L_b, L_b))`` (Nguyen, Raghu & Kornblith 2021).

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> batches = [[torch.randn(16, 4, generator=g)] for _ in range(2)]
    >>> round(float(minibatch_cka(batches)[0, 0]), 6)
    1.0
    """
    metric = MinibatchCKA()
    if batches_b is None:
        for acts_a in batches_a:
            metric.update(acts_a)
    else:
        it_b = iter(batches_b)
        for acts_a in batches_a:
            acts_b = next(it_b, _END)
            if acts_b is _END:
                raise ValueError("batches_b has fewer batches than batches_a")
            metric.update(acts_a, acts_b)
        if next(it_b, _END) is not _END:
            raise ValueError("batches_b has more batches than batches_a")
    if metric.num_batches == 0:
        raise ValueError("no batches given to minibatch_cka")
    return metric.compute()
