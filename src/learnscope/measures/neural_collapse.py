"""Neural collapse metrics (Papyan, Han & Donoho 2020) of a layer's features.

In the terminal phase of training the last-layer features of the training set collapse:
(NC1) within-class variability vanishes relative to the spread of the class means; (NC2) the
centred class means become equal in norm and equiangular, the vertices of a simplex
equiangular tight frame (ETF: every cosine ``-1/(C-1)``); (NC3) the classifier's weight rows
become the centred class means up to scale (self-duality); (NC4) the classifier decides like
the nearest class centre (NCC).

Everything is computed in float64. NC1 = ``tr(S_W S_B^+) / C`` uses the pseudo-inverse of the
rank ``C - 1`` between-class covariance with ``rtol = 1e-10``; report :attr:`sv_ratio` (smallest
over largest nonzero singular value of the centred class-mean matrix, 1 for an ETF) beside it: a
rising NC1 can mean that the class means became nearly low-rank (``S_B^+`` then amplifies the
within-class spread along the weak directions), not that the features spread out.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = [
    "CollapseMetrics",
    "centred_class_means",
    "collapse_metrics",
    "equiangularity",
    "equinorm",
    "nc1",
    "ncc_disagreement",
    "self_duality",
    "sv_ratio",
]

PINV_RTOL = 1e-10


def _as64(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(torch.float64)


def centred_class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means minus the global mean ``(C, d)`` and the global mean ``(d,)``.

    The global mean is the mean of the class means (the paper's ``mu_G`` for balanced classes;
    with unbalanced classes it keeps the centred means summing to zero, so their rank is
    ``C - 1`` as for an ETF). Every class needs at least one example.
    """
    h, y = _as64(features), torch.as_tensor(labels).long()
    counts = torch.bincount(y, minlength=n_classes)
    if len(counts) != n_classes or bool((counts == 0).any()):
        raise ValueError(f"every one of the {n_classes} classes needs at least one example, "
                         f"got counts {counts.tolist()}")
    sums = torch.zeros(n_classes, h.shape[1], dtype=torch.float64).index_add_(0, y, h)
    means = sums / counts.unsqueeze(1).to(torch.float64)
    mu_g = means.mean(0)
    return means - mu_g, mu_g


def nc1(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """NC1 = ``tr(S_W S_B^+) / C``: within-class covariance ``S_W`` (over all n examples,
    around their class means) measured against the between-class covariance ``S_B`` (of the
    C centred class means). 0 when every example sits on its class mean."""
    h, y = _as64(features), torch.as_tensor(labels).long()
    centred, mu_g = centred_class_means(h, y, n_classes)
    within = h - (centred + mu_g)[y]
    s_w = within.T @ within / len(h)
    s_b = centred.T @ centred / n_classes
    return float(torch.trace(s_w @ torch.linalg.pinv(s_b, rtol=PINV_RTOL, hermitian=True))
                 / n_classes)


def equinorm(centred_means: torch.Tensor) -> float:
    """Coefficient of variation (population std / mean) of the centred class-mean norms
    (0: equal norms, as in an ETF)."""
    norms = _as64(centred_means).norm(dim=1)
    return float(norms.std(correction=0) / norms.mean())


def equiangularity(centred_means: torch.Tensor) -> tuple[float, float]:
    """(std of the pairwise cosines, mean of ``|cos + 1/(C-1)|``) over the ``C(C-1)/2`` pairs of
    centred class means; both 0 for a simplex ETF."""
    m = _as64(centred_means)
    c = m.shape[0]
    unit = m / m.norm(dim=1, keepdim=True)
    cos = (unit @ unit.T)[torch.triu_indices(c, c, offset=1).unbind()]
    return float(cos.std(correction=0)), float((cos + 1.0 / (c - 1)).abs().mean())


def sv_ratio(centred_means: torch.Tensor) -> float:
    """Smallest over largest nonzero singular value of the centred class-mean matrix: the
    ``C - 1``-th over the first (1 for an ETF, near 0 when the means are nearly low-rank)."""
    m = _as64(centred_means)
    if m.shape[1] < m.shape[0] - 1:
        raise ValueError(f"{m.shape[0]} class means need at least {m.shape[0] - 1} feature "
                         f"dimensions, got {m.shape[1]}")
    s = torch.linalg.svdvals(m)
    return float(s[m.shape[0] - 2] / s[0])


def self_duality(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """NC3 = ``|| W/||W|| - M/||M|| ||_F^2`` for the classifier rows ``W`` ``(C, d)`` and the
    centred class means ``M`` ``(C, d)`` (0: the classifier is the means up to scale; at most
    4)."""
    w, m = _as64(weight), _as64(centred_means)
    return float(((w / w.norm()) - (m / m.norm())).pow(2).sum())


def ncc_disagreement(features: torch.Tensor, logits: torch.Tensor,
                     class_means: torch.Tensor) -> float:
    """NC4: fraction of examples whose nearest class mean (Euclidean, uncentred means
    ``(C, d)``) differs from the classifier's decision ``argmax(logits)``."""
    h, mu = _as64(features), _as64(class_means)
    nearest = torch.cdist(h, mu).argmin(1)
    return float((nearest != torch.as_tensor(logits).argmax(1)).double().mean())


@dataclasses.dataclass(frozen=True)
class CollapseMetrics:
    """NC1-NC4 of one layer's training features (NC4 also on held-out features)."""

    nc1: float
    equinorm: float
    cos_std: float
    cos_etf_gap: float
    """Mean ``|cos + 1/(C-1)|``."""
    sv_ratio: float
    self_duality: float
    ncc_train: float
    ncc_test: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def collapse_metrics(features: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
                     weight: torch.Tensor, logits: torch.Tensor,
                     test_features: torch.Tensor | None = None,
                     test_logits: torch.Tensor | None = None) -> CollapseMetrics:
    """Every NC metric of the penultimate training ``features`` ``(n, d)`` with their
    ``labels``, the last layer's ``weight`` ``(C, d)`` and the network's ``logits`` ``(n, C)``;
    NC4 on the test set uses the training class means (NaN without test features)."""
    centred, mu_g = centred_class_means(features, labels, n_classes)
    means = centred + mu_g
    cos_std, gap = equiangularity(centred)
    test = (ncc_disagreement(test_features, test_logits, means)
            if test_features is not None and test_logits is not None else float("nan"))
    return CollapseMetrics(
        nc1=nc1(features, labels, n_classes), equinorm=equinorm(centred), cos_std=cos_std,
        cos_etf_gap=gap, sv_ratio=sv_ratio(centred), self_duality=self_duality(weight, centred),
        ncc_train=ncc_disagreement(features, logits, means), ncc_test=test)
