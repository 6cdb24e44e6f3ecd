"""Acquisition scores of pool-based active learning, and the batch they select.

Uncertainty sampling (Lewis & Gale 1994; surveyed by Settles 2009, "Active learning literature
survey") asks for the labels of the pool examples the current model is least sure about. Three
classic measures of that doubt, computed from the model's predicted class probabilities ``p``
(one row per example):

* least confidence (:func:`least_confidence`): ``1 - max_c p_c``, how far the top class is
  from certainty;
* margin (:func:`top_two_margin`): ``p_(1) - p_(2)``, the top probability minus the runner-up
  (a *small* margin is uncertain);
* entropy (:func:`predictive_entropy`): ``-sum_c p_c log p_c`` in nats (``unit="bits"``: log
  base 2), with ``0 log 0 = 0``.

:func:`acquisition_scores` turns each into a score where *higher means ask first* (margin
becomes ``1 - margin``), and :func:`select_top_k` picks a batch: the ``k`` highest scores among
the examples not yet labelled, ties broken by the lower index so a selection never depends on
sort internals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ACQUISITION_STRATEGIES", "acquisition_scores", "least_confidence",
           "predictive_entropy", "select_top_k", "top_two_margin"]

ACQUISITION_STRATEGIES = ("least-confidence", "margin", "entropy")
"""The uncertainty measures :func:`acquisition_scores` knows."""


def _probabilities(probs: Any) -> np.ndarray:
    """``probs`` as a float64 (examples, classes) array, refused unless rows are distributions:
    logits or a transposed array would otherwise give silently wrong scores."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"probabilities must be a 2-D array (examples, classes), got shape "
                         f"{p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    if p.shape[0] and not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each row of probabilities must sum to 1")
    return p


def least_confidence(probs: Any) -> np.ndarray:
    """``1 - max_c p_c`` per example: 0 for a certain prediction, ``1 - 1/C`` at most.

    >>> least_confidence([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]).round(3).tolist()
    [0.3, 0.6]
    """
    return 1.0 - _probabilities(probs).max(axis=1)


def top_two_margin(probs: Any) -> np.ndarray:
    """``p_(1) - p_(2)`` per example (top minus runner-up; a single class has margin ``p_(1)``).

    >>> top_two_margin([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]).round(3).tolist()
    [0.5, 0.0]
    """
    p = _probabilities(probs)
    if p.shape[1] == 1:
        return p[:, 0].copy()
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def predictive_entropy(probs: Any, unit: str = "nats") -> np.ndarray:
    """Shannon entropy per example, ``0 log 0 = 0``; ``unit`` is ``"nats"`` or ``"bits"``.

    >>> predictive_entropy([[0.5, 0.5], [1.0, 0.0]], unit="bits").tolist()
    [1.0, 0.0]
    """
    if unit not in ("nats", "bits"):
        raise ValueError(f"unit must be 'nats' or 'bits', got {unit!r}")
    p = _probabilities(probs)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    h = -(p * logs).sum(axis=1)
    h = np.maximum(h, 0.0)  # -0.0 and rounding below zero for one-hot rows
    return h / np.log(2.0) if unit == "bits" else h


def acquisition_scores(probs: Any, strategy: str) -> np.ndarray:
    """The score of each example under ``strategy`` (one of :data:`ACQUISITION_STRATEGIES`),
    higher = ask for its label first: least confidence, ``1 - margin``, or entropy in nats."""
    if strategy == "least-confidence":
        return least_confidence(probs)
    if strategy == "margin":
        return 1.0 - top_two_margin(probs)
    if strategy == "entropy":
        return predictive_entropy(probs)
    raise ValueError(f"unknown acquisition strategy {strategy!r}; "
                     f"known: {list(ACQUISITION_STRATEGIES)}")


def select_top_k(scores: Any, k: int, labelled: Any = None) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` among examples not marked in ``labelled`` (a
    boolean mask, or None for none labelled), best first; equal scores go to the lower index.

    >>> select_top_k([0.2, 0.9, 0.9, 0.5], 2, [False, True, False, False]).tolist()
    [2, 3]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores must not be NaN")
    taken = np.zeros(s.shape, dtype=bool) if labelled is None else np.asarray(labelled, bool)
    if taken.shape != s.shape:
        raise ValueError(f"labelled mask has shape {taken.shape}, scores {s.shape}")
    candidates = np.flatnonzero(~taken)
    if not 0 <= k <= len(candidates):
        raise ValueError(f"cannot select {k} of {len(candidates)} unlabelled examples")
    # lexsort: the last key is primary (score, descending), then the index (ascending)
    order = np.lexsort((candidates, -s[candidates]))
    return candidates[order[:k]]
