"""scikit-learn's 8x8 handwritten digits (1797 images ship inside scikit-learn)."""

from __future__ import annotations

import torch

from learnscope.data.classification import ClassificationData
from learnscope.seeding import numpy_rng


def digits(n_train: int = 1000, *, seed: int = 0) -> ClassificationData:
    """Digits scaled to [0, 1] (pixels / 16), split at random into ``n_train`` and the rest.

    >>> d = digits(1000, seed=0)
    >>> tuple(d.x_train.shape), tuple(d.x_test.shape), d.n_classes
    ((1000, 64), (797, 64), 10)
    """
    from sklearn.datasets import load_digits  # here: sklearn takes ~2 s to import

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    if not 1 <= n_train < len(y):
        raise ValueError(f"n_train must be in [1, {len(y) - 1}], got {n_train}")
    order = torch.from_numpy(numpy_rng(seed, "digits-split").permutation(len(y)))
    tr, te = order[:n_train], order[n_train:]
    return ClassificationData("digits", x[tr], y[tr], x[te], y[te], 10)
