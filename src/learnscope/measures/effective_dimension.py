"""How many of a network's dimensions are actually used: effective dimensions and redundancy.

Three views of the same question, each cheap enough to run on every width of a sweep:

- :func:`participation_ratio`: ``(sum λ)^2 / sum λ^2`` of the covariance of a layer's activations
  over a set of inputs (Gao et al. 2017; Recanatesi et al. 2019). It is the number of
  equally-strong directions that would give the same spread: ``d`` for isotropic activations,
  1 when one direction carries all the variance.
- :func:`near_duplicate_units`: units whose activation (or incoming weight) vector is a near copy
  of another unit's, ``|cosine| > threshold`` (``-1`` copies count too: a ReLU unit and its
  negation are one feature up to sign). :func:`mean_abs_cosine` is the average pairwise
  ``|cosine|``, a continuous measure of how alike units are (symmetry breaking: units start as
  random vectors and specialise, or drift together, during training).
- :func:`top_hessian_eigenvalues` and :func:`hessian_effective_dimension`: the top of the loss
  Hessian's spectrum by Lanczos with full reorthogonalisation on Hessian-vector products
  (the HVP machinery of :mod:`learnscope.measures.curvature`), and the number of eigenvalues
  above a fraction of the largest one: the directions in which the loss is sharply curved
  (Sagun et al. 2017; Ghorbani et al. 2019; Maddox et al. 2020, "Rethinking parameter counting
  in deep models: effective dimensionality revisited").

Lanczos with ``m`` steps returns ``m`` Ritz values; by Cauchy interlacing the ``i``-th largest
Ritz value never exceeds the ``i``-th largest eigenvalue, and the extreme ones converge first.
Each Ritz value comes with its residual bound ``beta_m |s_{m,i}|`` (some eigenvalue lies within
it), so a count above a threshold can be checked: the result says whether every Ritz value
counted had converged and whether the count reached ``m`` (then it is only a lower bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from learnscope.measures.curvature import _as_generator, _HessianOperator

__all__ = [
    "HessianSpectrum",
    "hessian_effective_dimension",
    "mean_abs_cosine",
    "near_duplicate_units",
    "participation_ratio",
    "participation_ratio_of_eigenvalues",
    "top_hessian_eigenvalues",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


def participation_ratio_of_eigenvalues(eigenvalues: Tensor) -> float:
    """``(sum λ)^2 / sum λ^2`` of non-negative eigenvalues (tiny negative rounding is clipped);
    NaN when every eigenvalue is zero."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64).clamp(min=0.0)
    squares = float((lam ** 2).sum())
    return float(lam.sum()) ** 2 / squares if squares > 0 else math.nan


def participation_ratio(activations: Tensor) -> float:
    """Participation ratio of the covariance of ``activations`` (``(n examples, d units)``).

    Computed from the centred activations' singular values (``λ_i ∝ s_i^2``; the covariance's
    normalisation cancels), in float64. NaN when no unit varies.
    """
    a = torch.as_tensor(activations).detach().to(torch.float64)
    if a.dim() != 2 or a.shape[0] < 2:
        raise ValueError(f"activations must be (n >= 2, d), got {tuple(a.shape)}")
    s = torch.linalg.svdvals(a - a.mean(0, keepdim=True))
    return participation_ratio_of_eigenvalues(s ** 2)


def _unit_cosines(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """``|cosine|`` between every pair of rows (``(d, d)``, float64) and which rows are nonzero;
    a zero row (a dead unit) has cosine 0 with everything."""
    v = torch.as_tensor(vectors).detach().to(torch.float64)
    if v.dim() != 2:
        raise ValueError(f"vectors must be (units, dimensions), got {tuple(v.shape)}")
    norms = v.norm(dim=1)
    alive = norms > 1e-12 * max(float(norms.max()), 1e-300) if len(v) else norms > 0
    unit = torch.where(alive[:, None], v / norms.clamp(min=1e-300)[:, None], torch.zeros_like(v))
    return (unit @ unit.T).abs(), alive


def near_duplicate_units(vectors: Tensor, threshold: float = 0.95) -> int:
    """How many units (rows of ``vectors``: ``(units, dimensions)``, e.g. each unit's
    activations over a set of inputs, or its incoming weights) have at least one *other* unit
    with ``|cosine| > threshold``. A group of ``g`` mutual copies counts ``g``. Zero rows (dead
    units) never count."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    cos, alive = _unit_cosines(vectors)
    cos.fill_diagonal_(0.0)
    dup = (cos > threshold).any(dim=1) & alive
    return int(dup.sum())


def mean_abs_cosine(vectors: Tensor) -> float:
    """Mean ``|cosine|`` over all pairs of distinct rows of ``vectors`` (``(units, dims)``);
    NaN for fewer than two rows. Random Gaussian vectors in ``D`` dimensions give about
    ``sqrt(2 / (π D))``."""
    cos, _ = _unit_cosines(vectors)
    d = cos.shape[0]
    if d < 2:
        return math.nan
    return float((cos.sum() - cos.diagonal().sum()) / (d * (d - 1)))


@dataclass(frozen=True)
class HessianSpectrum:
    """Top of a Hessian's spectrum from Lanczos.

    ``eigenvalues``: the Ritz values, largest first (float64, ``steps`` of them, or fewer when
    the Krylov space became invariant: then they are exact). ``residuals``: for each, the bound
    ``beta |s_i|`` on its distance to an eigenvalue. ``steps``: Hessian-vector products used.
    ``dimension``: the number of parameters.
    """

    eigenvalues: tuple[float, ...]
    residuals: tuple[float, ...]
    steps: int
    dimension: int
    invariant: bool

    @property
    def top(self) -> float:
        return self.eigenvalues[0]


def top_hessian_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    steps: int = 60,
    generator: torch.Generator | int | None = None,
) -> HessianSpectrum:
    """The top of the Hessian spectrum of ``loss_fn(model(inputs), targets)`` by ``steps``
    Lanczos steps (full reorthogonalisation, twice) from a Gaussian start drawn from
    ``generator``. The model is left untouched (see :mod:`learnscope.measures.curvature`).

    Memory: ``steps`` vectors of the parameters' size (float64). With ``steps`` at least the
    number of parameters the Ritz values are the exact eigenvalues (each distinct eigenvalue
    once: Krylov methods do not see multiplicities).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    gen = _as_generator(generator)
    op = _HessianOperator(model, loss_fn, inputs, targets, "top_hessian_eigenvalues")
    shapes = [p.shape for p in op.params]
    sizes = [p.numel() for p in op.params]
    dim = sum(sizes)

    def hv(flat: Tensor) -> Tensor:
        parts = [c.view(s).to(p.dtype) for c, s, p in
                 zip(flat.split(sizes), shapes, op.params, strict=True)]
        out = torch.cat([h.reshape(-1) for h in op(parts)]).to(torch.float64)
        if not bool(torch.isfinite(out).all()):
            raise ValueError("non-finite Hessian-vector product (is the loss finite?)")
        return out

    v = torch.cat([r.reshape(-1) for r in op.random(gen, "gaussian")]).to(torch.float64)
    v = v / v.norm()
    m = min(steps, dim)
    basis = torch.zeros(m, dim, dtype=torch.float64)
    basis[0] = v
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    invariant = False
    for k in range(m):
        w = hv(basis[k])
        alphas.append(float(w @ basis[k]))
        q = basis[: k + 1]
        for _ in range(2):  # classical Gram-Schmidt twice keeps the basis orthogonal
            w = w - q.T @ (q @ w)
        beta = float(w.norm())
        scale = max(abs(a) for a in alphas + betas) if alphas else 1.0
        if beta <= 1e-10 * max(scale, 1e-300) or k + 1 == dim:
            invariant = True
            break
        if k + 1 < m:
            betas.append(beta)
            basis[k + 1] = w / beta
    tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if len(alphas) > 1:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        tri += torch.diag(off, 1) + torch.diag(off, -1)
    ritz, vecs = torch.linalg.eigh(tri)
    order = torch.argsort(ritz, descending=True)
    tail = 0.0 if invariant else beta
    residuals = (tail * vecs[-1].abs())[order]
    return HessianSpectrum(tuple(float(x) for x in ritz[order]),
                           tuple(float(x) for x in residuals), len(alphas), dim, invariant)


def hessian_effective_dimension(spectrum: HessianSpectrum, fraction: float = 0.01
                                ) -> dict[str, float]:
    """The number of Hessian eigenvalues above ``fraction`` times the largest one.

    Returns ``count``; ``converged`` (1.0 when every Ritz value counted is within
    ``fraction * top`` of an eigenvalue by its residual bound, else 0.0); ``saturated`` (1.0
    when every Ritz value was counted, so the count is only a lower bound: run more steps);
    ``top`` (the largest eigenvalue). NaN count when the top eigenvalue is not positive.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    top = spectrum.top
    if not top > 0:
        return {"count": math.nan, "converged": 0.0, "saturated": 0.0, "top": top}
    cut = fraction * top
    counted = [i for i, lam in enumerate(spectrum.eigenvalues) if lam > cut]
    converged = all(spectrum.residuals[i] <= cut for i in counted)
    saturated = len(counted) == len(spectrum.eigenvalues) and not spectrum.invariant
    return {"count": float(len(counted)), "converged": float(converged),
            "saturated": float(saturated), "top": top}
