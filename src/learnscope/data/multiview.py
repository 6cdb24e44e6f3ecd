"""Multi-view classification data: each class has several feature views (Allen-Zhu & Li 2020).

Allen-Zhu & Li ("Towards understanding ensemble, knowledge distillation and self-distillation
in deep learning", 2020) explain why an ensemble of independently trained networks beats each
of them with data in which every class can be recognised by several *views* (feature
patterns), most examples show all views of their class and a few show only one. A network
picks up some views of a class, fits the multi-view examples with them and memorises the
single-view examples of the views it missed; another initialisation picks other views, so an
ensemble covers more views than any member.

As in the paper, an input is a set of ``n_patches`` patches of ``patch_dim`` numbers (given
flattened, patch after patch: ``d = n_patches * patch_dim``):

- view ``(c, v)`` of class c is a fixed unit vector of the patch space; the ``C * V`` views are
  orthonormal (``patch_dim >= C * V``) and come from ``seed`` alone, so the training, test and
  unlabeled sets share them;
- an example of class c is *multi-view* with probability ``multi_fraction`` (exactly
  ``round(multi_fraction * n)`` examples of a split, placed at random) and then shows each of
  its V views in a patch of its own; a *single-view* example shows one view, chosen so that
  the views of a class take turns (counts per view differ by at most one within a class);
  each shown view has an amplitude uniform in ``[0.8, 1.2]``;
- every other patch carries feature noise: a view of another class (uniformly chosen) at
  amplitude ``distractor_strength``;
- every number gets independent Gaussian noise of standard deviation ``noise``.

Statistics (exact, tested): classes are balanced in each split (``n // C`` or one more per
class, the first ``n % C`` classes getting one more); the multi-view count above; per example,
the number of patches carrying one of its own class's views is V (multi-view) or 1
(single-view). Everything is a deterministic function of ``seed``: the training, test and
unlabeled sets use independent streams of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learnscope.data.classification import ClassificationData
from learnscope.seeding import numpy_rng

__all__ = ["MultiViewSet", "multiview", "multiview_patterns", "multiview_set"]


def multiview_patterns(n_classes: int, n_views: int, patch_dim: int, *, seed: int
                       ) -> np.ndarray:
    """The views ``(C, V, patch_dim)``: orthonormal unit vectors of the patch space."""
    if n_classes < 2 or n_views < 2 or patch_dim < n_classes * n_views:
        raise ValueError("need n_classes >= 2, n_views >= 2 and patch_dim >= n_classes * "
                         f"n_views, got {n_classes}, {n_views}, {patch_dim}")
    rng = numpy_rng(seed, "multiview-patterns")
    q, _ = np.linalg.qr(rng.standard_normal((patch_dim, patch_dim)))
    return q[:, :n_classes * n_views].T.reshape(n_classes, n_views, patch_dim).copy()


@dataclass(frozen=True)
class MultiViewSet:
    """One split: flat inputs ``x`` (n, n_patches * patch_dim), labels ``y``, which views of
    its class each example shows (``shown`` (n, V)), whether it is multi-view (``multi``) and
    the patch holding each shown view (``patch_of_view`` (n, V), -1 where not shown)."""

    x: torch.Tensor
    y: torch.Tensor
    shown: torch.Tensor
    multi: torch.Tensor
    patch_of_view: torch.Tensor


def multiview_set(n: int, patterns: np.ndarray, n_patches: int, *, multi_fraction: float,
                  distractor_strength: float, noise: float, rng: np.random.Generator
                  ) -> MultiViewSet:
    """``n`` examples on the views ``patterns`` (C, V, p), drawn from ``rng`` (see the
    module)."""
    C, V, p = patterns.shape
    if n < 1 or not 0.0 <= multi_fraction <= 1.0:
        raise ValueError(f"need n >= 1 and 0 <= multi_fraction <= 1, got {n}, {multi_fraction}")
    if n_patches < V:
        raise ValueError(f"n_patches must be at least n_views = {V}, got {n_patches}")
    y = np.arange(n) % C
    multi = np.zeros(n, dtype=bool)
    multi[:round(multi_fraction * n)] = True
    order = rng.permutation(n)
    y, multi = y[order], multi[order]
    shown = np.zeros((n, V), dtype=bool)
    shown[multi] = True
    for c in range(C):  # the single-view examples of a class take its views in turn
        idx = np.flatnonzero((y == c) & ~multi)
        shown[idx, (np.arange(len(idx)) + rng.integers(V)) % V] = True
    x = noise * rng.standard_normal((n, n_patches, p))
    patch_of_view = np.full((n, V), -1)
    for i in range(n):
        slots = rng.permutation(n_patches)
        views = np.flatnonzero(shown[i])
        patch_of_view[i, views] = slots[:len(views)]
        x[i, slots[:len(views)]] += rng.uniform(0.8, 1.2, (len(views), 1)) * patterns[y[i], views]
        rest = slots[len(views):]
        other = (y[i] + rng.integers(1, C, len(rest))) % C  # any class but its own
        x[i, rest] += distractor_strength * patterns[other, rng.integers(V, size=len(rest))]
    return MultiViewSet(torch.from_numpy(x.reshape(n, -1).astype(np.float32)),
                        torch.from_numpy(y), torch.from_numpy(shown), torch.from_numpy(multi),
                        torch.from_numpy(patch_of_view))


def multiview(n_train: int, n_test: int, *, n_classes: int = 10, n_views: int = 2,
              n_patches: int = 4, patch_dim: int = 24, multi_fraction: float = 0.9,
              distractor_strength: float = 0.1, noise: float = 0.1, n_unlabeled: int = 0,
              seed: int = 0) -> tuple[ClassificationData, MultiViewSet, MultiViewSet,
                                      torch.Tensor]:
    """Training and test sets of multi-view data, plus ``n_unlabeled`` inputs of the same mix.

    Returns ``(data, train, test, unlabeled_x)``: ``data`` the ClassificationData for
    trainers, ``train``/``test`` with the views each example shows.
    """
    patterns = multiview_patterns(n_classes, n_views, patch_dim, seed=seed)

    def draw(count: int, stream: str) -> MultiViewSet:
        return multiview_set(count, patterns, n_patches, multi_fraction=multi_fraction,
                             distractor_strength=distractor_strength, noise=noise,
                             rng=numpy_rng(seed, stream))

    train, test = draw(n_train, "multiview-train"), draw(n_test, "multiview-test")
    unlabeled = (draw(n_unlabeled, "multiview-unlabeled").x if n_unlabeled
                 else torch.zeros(0, n_patches * patch_dim))
    data = ClassificationData("multiview", train.x, train.y, test.x, test.y, n_classes)
    return data, train, test, unlabeled
