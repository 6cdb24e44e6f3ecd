"""Mixup batches (Zhang et al. 2018, "mixup: Beyond empirical risk minimization").

mixup trains on convex combinations of pairs of examples and of their labels: for a batch
``(x, y)`` it draws one ``lam ~ Beta(alpha, alpha)`` and one permutation ``perm`` of the batch,
and trains on ``lam * x + (1 - lam) * x[perm]`` with the soft label
``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` (the paper's one-lambda-per-batch recipe).
Cross-entropy against that soft label equals ``lam * CE(y) + (1 - lam) * CE(y[perm])``, which is
how the batched trainer computes it without forming the soft labels.

Every draw comes from the sampler's own generator (seeded, no global RNG), so a run is
reproducible and the draws of one model do not depend on which other models train beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from learnscope.seeding import numpy_rng

__all__ = ["MixupSampler", "mix_batch"]


class MixupSampler:
    """The stream of ``(lam, perm)`` draws of one model's mixup training.

    ``alpha > 0``: ``lam ~ Beta(alpha, alpha)`` (mean 1/2, variance ``1 / (4 (2 alpha + 1))``:
    alpha = 1 is uniform, large alpha concentrates at 1/2); ``perm`` a uniform permutation of
    the batch. ``alpha = 0`` turns mixup off: ``lam = 1`` and the identity permutation, and
    nothing is drawn.

    >>> s = MixupSampler(1.0, seed=0)
    >>> lam, perm = s.draw(4)
    >>> 0.0 <= lam <= 1.0, sorted(perm.tolist())
    (True, [0, 1, 2, 3])
    """

    def __init__(self, alpha: float, *, seed: int) -> None:
        if not (alpha >= 0 and np.isfinite(alpha)):
            raise ValueError(f"mixup alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self._rng = numpy_rng(seed, "mixup")

    def draw(self, batch_size: int) -> tuple[float, torch.Tensor]:
        """One batch's mixing weight ``lam`` and partner permutation ``perm`` (long tensor)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.alpha == 0:
            return 1.0, torch.arange(batch_size)
        lam = float(self._rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(self._rng.permutation(batch_size)).long()
        return lam, perm


def mix_batch(x: torch.Tensor, y: torch.Tensor, n_classes: int, lam: float,
              perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixed inputs and soft labels ``(b, n_classes)`` of a batch for one draw.

    >>> x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1])
    >>> xm, ym = mix_batch(x, y, 2, 0.25, torch.tensor([1, 0]))
    >>> xm.flatten().tolist(), ym.tolist()
    ([0.75, 0.25], [[0.25, 0.75], [0.75, 0.25]])
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    onehot = torch.nn.functional.one_hot(y.long(), n_classes).to(x.dtype)
    # x + (1 - lam) * (x[perm] - x): an input feature equal across the pair stays exact
    mixed = torch.lerp(x, x[perm], 1.0 - lam)
    soft = lam * onehot + (1.0 - lam) * onehot[perm]
    return mixed, soft
