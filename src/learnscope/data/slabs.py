"""Linear + slab data for simplicity bias (Shah et al. 2020, "The pitfalls of simplicity bias in
neural networks").

Binary labels ``y`` in {0, 1}. Coordinate 0 is *linear*: ``x0 = s * U(margin, 1)`` with
``s = +1`` for ``y = 1`` and ``-1`` for ``y = 0``, so ``sign(x0)`` predicts ``y`` with margin
``margin``. Every other coordinate is a *k-slab*: ``[-1, 1]`` is cut into ``k`` equal slabs whose
labels alternate (slab 0, the leftmost, is class 1), and a value is drawn uniformly inside a slab
of its class, at least ``gap / 2`` away from the slab's edges: the slab a value lies in predicts
``y`` perfectly, yet no threshold on that coordinate does (for k >= 3). Slab coordinates are
drawn independently given ``y``. "LMS-k" data is one linear and many k-slab coordinates.

Randomising a block of coordinates (one permutation of the examples applied to those columns)
keeps each coordinate's marginal but destroys its relation to the label: the tests of what a
trained network relies on. Every draw takes an explicit seed; no global RNG is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from learnscope.data.classification import ClassificationData
from learnscope.seeding import torch_generator

__all__ = ["lms_data", "shuffle_columns", "slab_coordinate", "slab_index", "slab_label"]


def slab_index(values: torch.Tensor, n_slabs: int) -> torch.Tensor:
    """The slab (0 = leftmost) each value of ``[-1, 1]`` lies in; 1 counts as the last slab."""
    width = 2.0 / n_slabs
    return ((values + 1.0) / width).floor().clamp(0, n_slabs - 1).to(torch.int64)


def slab_label(index: torch.Tensor) -> torch.Tensor:
    """The class of each slab: labels alternate, the leftmost slab is class 1."""
    return (1 - index % 2).to(torch.int64)


def slab_coordinate(y: torch.Tensor, n_slabs: int, gap: float,
                    generator: torch.Generator) -> torch.Tensor:
    """One k-slab coordinate for labels ``y`` (0/1): uniform inside a random slab of the
    example's class, at least ``gap / 2`` from the slab's edges."""
    _check_slabs(n_slabs, gap)
    width = 2.0 / n_slabs
    n = len(y)
    n_class1 = (n_slabs + 1) // 2  # slabs 0, 2, 4, ...
    n_class0 = n_slabs // 2        # slabs 1, 3, ...
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    pick1 = (u * n_class1).floor().clamp(max=n_class1 - 1) * 2
    pick0 = (u * n_class0).floor().clamp(max=n_class0 - 1) * 2 + 1
    index = torch.where(y == 1, pick1, pick0)
    offset = torch.rand(n, generator=generator, dtype=torch.float64) * (width - gap) + gap / 2
    return (-1.0 + index * width + offset).to(torch.float32)


def lms_data(n_train: int, n_test: int, *, dim: int = 50, n_slabs: int = 5,
             linear_margin: float = 0.1, slab_gap: float = 0.1,
             seed: int = 0) -> ClassificationData:
    """LMS-k data: coordinate 0 linear (margin ``linear_margin``), coordinates 1..dim-1 k-slab
    (gap ``slab_gap`` between adjacent slabs); balanced random labels. Each coordinate alone
    predicts the label perfectly."""
    if dim < 2:
        raise ValueError(f"dim must be at least 2 (one linear and one slab coordinate), got {dim}")
    if not 0.0 <= linear_margin < 1.0:
        raise ValueError(f"linear_margin must lie in [0, 1), got {linear_margin}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train}, {n_test}")
    _check_slabs(n_slabs, slab_gap)
    gen = torch_generator(seed, "lms", dim, n_slabs)
    n = n_train + n_test
    y = (torch.rand(n, generator=gen) < 0.5).to(torch.int64)
    sign = (2 * y - 1).to(torch.float64)
    magnitude = linear_margin + (1.0 - linear_margin) * torch.rand(n, generator=gen,
                                                                   dtype=torch.float64)
    columns = [(sign * magnitude).to(torch.float32)]
    columns += [slab_coordinate(y, n_slabs, slab_gap, gen) for _ in range(dim - 1)]
    x = torch.stack(columns, dim=1)
    return ClassificationData(f"lms-{n_slabs}-d{dim}", x[:n_train], y[:n_train], x[n_train:],
                              y[n_train:], 2)


def shuffle_columns(x: torch.Tensor, columns: Sequence[int], *, seed: int) -> torch.Tensor:
    """A copy of ``x`` whose ``columns`` are permuted across examples (one permutation for the
    whole block), so they no longer carry the label; other columns are unchanged."""
    cols = list(columns)
    out = x.clone()
    if cols:
        perm = torch.randperm(len(x), generator=torch_generator(seed, "shuffle", *cols))
        out[:, cols] = x[perm][:, cols]
    return out


def _check_slabs(n_slabs: int, gap: float) -> None:
    if n_slabs < 2:
        raise ValueError(f"n_slabs must be at least 2, got {n_slabs}")
    if not 0.0 <= gap < 2.0 / n_slabs:
        raise ValueError(f"slab gap must lie in [0, slab width {2.0 / n_slabs:g}), got {gap}")
