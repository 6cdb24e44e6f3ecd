"""How much of a network's performance a simpler classifier explains.

Nakkiran, Kalimeris, Kaplun, Edelman, Yang, Barak & Zhang 2019, "SGD on neural
networks learns functions of increasing complexity" (NeurIPS 2019): with F the
network's predictions, L the predictions of a simpler (e.g. linear) classifier
and Y the labels, the paper tracks I(F;Y), the conditional mutual information
I(F;Y|L) (performance of F not explained by L) and the performance correlation
mu_Y(F;L) = I(F;Y) - I(F;Y|L) (performance of F explained by L). All values are
plug-in estimates in bits from discrete predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learnscope.measures.information import (
    conditional_mutual_information_discrete,
    mutual_information_discrete,
)

__all__ = ["SimplicityPoint", "agreement", "simplicity_measures"]


@dataclass(frozen=True)
class SimplicityPoint:
    """Nakkiran et al. 2019 quantities, in bits (plug-in estimates).

    ``i_fy`` = I(F;Y); ``i_fy_given_l`` = I(F;Y|L), the part of F's information
    about Y that L does not explain; ``i_ly`` = I(L;Y); ``agreement`` = P(F = L);
    ``linear_part`` = I(F;Y) - I(F;Y|L), the paper's performance correlation
    mu_Y(F;L) (an interaction information: it can be negative).
    """

    i_fy: float
    i_fy_given_l: float
    i_ly: float
    agreement: float
    linear_part: float
    estimator: str = "plugin"
    params: dict[str, Any] = field(default_factory=dict)


def _preds(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be a 1-D or 2-D array, got {arr.ndim} dimensions")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return arr


def agreement(f_pred: Any, l_pred: Any) -> float:
    """Fraction of samples on which two classifiers predict the same label.

    Nakkiran et al. 2019 report P(F = L) alongside the information measures. Rows
    of 2-D arrays are compared as whole symbols.

    >>> agreement([0, 1, 2, 3], [0, 1, 0, 0])
    0.5
    """
    f = _preds(f_pred, "f_pred")
    ll = _preds(l_pred, "l_pred")
    if f.shape != ll.shape:
        raise ValueError(
            f"length mismatch: f_pred has shape {f.shape}, l_pred has shape {ll.shape}"
        )
    eq = f == ll
    if eq.ndim == 2:
        eq = eq.all(axis=1)
    return float(np.mean(eq))


def simplicity_measures(f_pred: Any, l_pred: Any, y: Any) -> SimplicityPoint:
    """I(F;Y), I(F;Y|L), I(L;Y), agreement and I(F;Y) - I(F;Y|L), in bits.

    Nakkiran et al. 2019: F = network predictions, L = simpler classifier's
    predictions, Y = labels, all integer-coded. I(F;Y|L) ~ 0 means L explains all
    of F's performance; ``linear_part`` = mu_Y(F;L) = I(F;Y) - I(F;Y|L).
    Plug-in estimates (see :mod:`learnscope.measures.information`).

    >>> p = simplicity_measures([0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1])
    >>> (p.i_fy, p.i_fy_given_l, p.linear_part, p.agreement)
    (1.0, 0.0, 1.0, 1.0)
    """
    f = _preds(f_pred, "f_pred")
    ll = _preds(l_pred, "l_pred")
    yy = _preds(y, "y")
    lengths = {"f_pred": len(f), "l_pred": len(ll), "y": len(yy)}
    if len(set(lengths.values())) != 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"length mismatch: {desc} samples")
    i_fy = mutual_information_discrete(f, yy)
    i_fy_given_l = conditional_mutual_information_discrete(f, yy, ll)
    i_ly = mutual_information_discrete(ll, yy)
    agree = agreement(f, ll)
    return SimplicityPoint(
        i_fy=i_fy,
        i_fy_given_l=i_fy_given_l,
        i_ly=i_ly,
        agreement=agree,
        linear_part=i_fy - i_fy_given_l,
        estimator="plugin",
        params={"n": int(f.shape[0]), "units": "bits"},
    )
