"""The 12-bit task of Shwartz-Ziv & Tishby 2017: every binary pattern of 12 bits, one label each.

The inputs are all ``2**12 = 4096`` patterns of 12 bits (0/1), so X is uniform over a finite
set and H(X) = 12 bits exactly: a deterministic network's I(X;T) is then H(T) and the
information plane is well defined for every estimator that discretises or smooths T. The labels
come from a fixed random threshold function of a seed: a score ``w . x + sum_{i<j} v_ij x_i x_j``
with standard normal ``w`` and ``v`` (``v`` scaled by ``pair_weight``), thresholded at its median,
so the classes are balanced (2048 each; the scores are distinct with probability one). The pair
terms make the task not linearly separable, so the hidden layers must do some work, as in the
original (which labelled the patterns by a spherically symmetric function of them). A seeded
split holds out ``test_fraction`` of the patterns.
"""

from __future__ import annotations

import torch

from learnscope.data.classification import ClassificationData
from learnscope.seeding import torch_generator

__all__ = ["N_BITS", "all_patterns", "bits12", "threshold_labels"]

N_BITS = 12


def all_patterns(n_bits: int = N_BITS) -> torch.Tensor:
    """All ``2**n_bits`` binary patterns as a float tensor ``(2**n_bits, n_bits)`` of 0/1, row
    ``i`` the binary digits of ``i`` (most significant bit first).

    >>> all_patterns(2).tolist()
    [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    if not 1 <= int(n_bits) <= 20:
        raise ValueError(f"n_bits must be in 1..20, got {n_bits}")
    codes = torch.arange(2 ** n_bits).unsqueeze(1)
    shifts = torch.arange(n_bits - 1, -1, -1)
    return ((codes >> shifts) & 1).to(torch.float32)


def threshold_labels(patterns: torch.Tensor, *, seed: int,
                     pair_weight: float = 0.5) -> torch.Tensor:
    """Labels 0/1 of ``patterns`` from the random score ``w . x + sum_{i<j} v_ij x_i x_j`` of
    ``seed`` (``w``, ``v`` standard normal, ``v`` times ``pair_weight``), thresholded at its
    median: half the patterns (rounded down) get label 1.
    """
    if pair_weight < 0:
        raise ValueError(f"pair_weight must be >= 0, got {pair_weight}")
    x = patterns.to(torch.float64)
    n_bits = x.shape[1]
    g = torch_generator(seed, "bits12-labels")
    w = torch.randn(n_bits, generator=g, dtype=torch.float64)
    v = torch.randn(n_bits, n_bits, generator=g, dtype=torch.float64).triu(1) * pair_weight
    score = x @ w + ((x @ v) * x).sum(dim=1)
    order = torch.argsort(score, stable=True)
    labels = torch.zeros(len(x), dtype=torch.int64)
    labels[order[len(x) - len(x) // 2:]] = 1
    return labels


def bits12(*, seed: int = 0, test_fraction: float = 0.15,
           pair_weight: float = 0.5) -> ClassificationData:
    """The 12-bit task: all 4096 patterns, labels of :func:`threshold_labels` for ``seed``,
    a seeded random split with ``test_fraction`` of the patterns held out (rounded)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x = all_patterns(N_BITS)
    y = threshold_labels(x, seed=seed, pair_weight=pair_weight)
    perm = torch.randperm(len(x), generator=torch_generator(seed, "bits12-split"))
    n_test = round(test_fraction * len(x))
    test, train = perm[:n_test].sort().values, perm[n_test:].sort().values
    return ClassificationData("bits12", x[train], y[train], x[test], y[test], n_classes=2)
