"""Modular arithmetic: every pair (a, b) of residues mod p labelled (a + b) mod p, split at
random into a training and a test set (the algorithmic data of the grokking experiments)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnscope.data.classification import ClassificationData
from learnscope.seeding import torch_generator

__all__ = ["ModularData", "modular_addition"]


@dataclass(frozen=True)
class ModularData:
    """All ``p * p`` pairs (``a``, ``b`` in row-major order: pair ``i`` is ``(i // p, i % p)``),
    their labels ``(a + b) mod p`` and a random split into ``train_idx`` / ``test_idx``."""

    p: int
    a: torch.Tensor
    b: torch.Tensor
    labels: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor

    def one_hot(self) -> torch.Tensor:
        """The inputs ``one-hot(a) ++ one-hot(b)`` of every pair, ``(p * p, 2 p)`` float32."""
        eye = torch.eye(self.p)
        return torch.cat([eye[self.a], eye[self.b]], dim=1)

    def classification(self) -> ClassificationData:
        """The split as one-hot inputs and integer labels (the test set is never trained on)."""
        x = self.one_hot()
        return ClassificationData(f"modular-addition-{self.p}", x[self.train_idx],
                                  self.labels[self.train_idx], x[self.test_idx],
                                  self.labels[self.test_idx], self.p)


def modular_addition(p: int, train_fraction: float, *, seed: int = 0) -> ModularData:
    """Every pair of residues mod ``p`` once, ``floor(train_fraction * p^2)`` of them (chosen
    uniformly at random by ``seed``) for training and the rest for testing.

    >>> data = modular_addition(5, 0.5, seed=0)
    >>> len(data.train_idx), len(data.test_idx), int(data.labels[4 * 5 + 3])
    (12, 13, 2)
    """
    if p < 2:
        raise ValueError(f"the modulus p must be at least 2, got {p}")
    n = p * p
    n_train = int(train_fraction * n)
    if not 1 <= n_train < n:
        raise ValueError(f"train_fraction {train_fraction} leaves an empty train or test set "
                         f"of the {n} pairs")
    pairs = torch.arange(n)
    a, b = pairs // p, pairs % p
    order = torch.randperm(n, generator=torch_generator(seed, "modular-split", p))
    return ModularData(p, a, b, (a + b) % p, order[:n_train].sort().values,
                       order[n_train:].sort().values)
