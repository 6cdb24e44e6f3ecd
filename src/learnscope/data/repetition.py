"""A fixed budget of training samples in which a small subset is repeated (Hernandez et al. 2022).

A run sees ``budget`` training samples (gradient examples). Of them, ``repeats * subset_size``
(about ``fraction * budget``) are ``repeats`` copies of each example of a small *repeated
subset*; the rest are *unique* examples, each seen once. Varying ``repeats`` at a fixed
``fraction`` and ``budget`` moves from all-unique data (``repeats=1``) to a tiny subset seen very
many times, the axis along which Hernandez et al. found the damage to peak in the middle.

The draw is nested so that conditions of one seed differ only in how they repeat: the pool is
permuted once per seed (whatever ``repeats``), the repeated subset is a prefix of that
permutation and the unique part a suffix. A larger ``repeats`` therefore repeats a prefix of a
smaller one's subset (the examples memorized are the same ones), and unique parts of different
sizes contain one another.

:func:`balanced_multiset` is the deduplicated control: the same distinct examples spread evenly
over the same budget (each seen ``budget // n`` or one more times), so it costs the same compute
and sees the same examples, only without the concentration on one subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnscope.seeding import torch_generator

__all__ = ["RepeatedSample", "balanced_multiset", "pool_order", "repeated_subset", "subset_size"]


@dataclass(frozen=True)
class RepeatedSample:
    """One training multiset: which pool examples it uses and how often."""

    samples: torch.Tensor
    """``(budget,)`` pool indices, the unique part first, then the repeated subset ``repeats``
    times in a row (the trainer shuffles them)."""
    unique: torch.Tensor
    """``(n_unique,)`` distinct indices seen once."""
    repeated: torch.Tensor
    """``(subset_size,)`` distinct indices seen ``repeats`` times each."""
    repeats: int

    @property
    def budget(self) -> int:
        return len(self.samples)

    @property
    def repeated_fraction(self) -> float:
        """The fraction of the budget spent on the repeated subset (``repeats * subset / budget``)."""
        return self.repeats * len(self.repeated) / self.budget

    @property
    def distinct(self) -> torch.Tensor:
        """Every distinct example of the multiset: the unique part, then the repeated subset."""
        return torch.cat([self.unique, self.repeated])


def subset_size(budget: int, fraction: float, repeats: int) -> int:
    """Size of the repeated subset: ``round(fraction * budget / repeats)`` (at least 1)."""
    return max(1, round(fraction * budget / repeats))


def pool_order(pool_size: int, *, seed: int) -> torch.Tensor:
    """The permutation of the pool that :func:`repeated_subset` draws from for ``seed``: its
    repeated subset is a prefix, its unique part a suffix."""
    return torch.randperm(pool_size, generator=torch_generator(seed, "repeated-subset"))


def repeated_subset(pool_size: int, budget: int, fraction: float, repeats: int, *,
                    seed: int) -> RepeatedSample:
    """A multiset of ``budget`` pool indices: a subset of ``round(fraction * budget / repeats)``
    examples repeated ``repeats`` times, the rest unique examples seen once.

    ``repeats=1`` gives ``budget`` distinct examples (the all-unique baseline of the same budget).
    Raises ValueError when the pool holds fewer distinct examples than the multiset needs.

    >>> s = repeated_subset(1000, 100, 0.5, 10, seed=0)
    >>> len(s.samples), len(s.unique), len(s.repeated), s.repeated_fraction
    (100, 50, 5, 0.5)
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    size = subset_size(budget, fraction, repeats)
    if size * repeats > budget:
        raise ValueError(f"{size} examples repeated {repeats} times exceed the budget {budget}")
    n_unique = budget - size * repeats
    if n_unique + size > pool_size:
        raise ValueError(f"the multiset needs {n_unique + size} distinct examples but the pool "
                         f"holds {pool_size}")
    order = pool_order(pool_size, seed=seed)
    repeated, unique = order[:size], order[pool_size - n_unique:]
    samples = torch.cat([unique, repeated.repeat(repeats)])
    return RepeatedSample(samples, unique, repeated, int(repeats))


def balanced_multiset(distinct: torch.Tensor, budget: int, *, seed: int) -> torch.Tensor:
    """``budget`` samples that spread ``distinct`` examples evenly: each appears
    ``budget // n`` times, and ``budget % n`` of them (chosen at random) once more."""
    n = len(distinct)
    if n < 1:
        raise ValueError("no distinct examples to spread")
    if budget < n:
        raise ValueError(f"a budget of {budget} cannot hold each of {n} examples once")
    whole, extra = divmod(budget, n)
    pick = torch.randperm(n, generator=torch_generator(seed, "balanced-multiset"))[:extra]
    return torch.cat([distinct.repeat(whole), distinct[pick]])
