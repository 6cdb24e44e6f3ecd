"""Fast linear-region counts: activation patterns packed into integer codes.

:func:`learnscope.measures.linear_regions.count_linear_regions` finds distinct patterns with
``torch.unique(dim=0)`` over boolean rows, one column per ReLU unit. Counting regions on a dense
2-D grid (tens of thousands of inputs) at every checkpoint of many models is faster when each
pattern is first packed into a few 63-bit integers (63 units per word, so every code stays a
non-negative int64); equal codes mean equal patterns, so the count is the same. The region id of
every input (an index into the distinct patterns) lets a study draw the regions as an image.
Sources: Montufar et al. 2014; Hanin & Rolnick 2019.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learnscope.measures.linear_regions import activation_patterns

__all__ = ["BITS_PER_WORD", "count_regions", "pack_patterns", "region_colour", "region_ids"]

BITS_PER_WORD = 63
"""Units packed into one int64 word (bit 63 unused, so codes are never negative)."""

_GOLDEN = (math.sqrt(5) - 1) / 2


def pack_patterns(patterns: torch.Tensor) -> torch.Tensor:
    """Bool patterns ``(n, units)`` as int64 codes ``(n, ceil(units / 63))``: unit ``j`` is bit
    ``j % 63`` of word ``j // 63``. Injective: two rows get equal codes iff they are equal.

    >>> pack_patterns(torch.tensor([[True, False, True], [False, True, False]])).tolist()
    [[5], [2]]
    """
    if patterns.dim() != 2 or patterns.dtype != torch.bool:
        raise ValueError(f"patterns must be a 2-D bool tensor, got {patterns.dtype} "
                         f"{tuple(patterns.shape)}")
    n, units = patterns.shape
    words = max(1, math.ceil(units / BITS_PER_WORD))
    padded = torch.zeros(n, words * BITS_PER_WORD, dtype=torch.int64)
    padded[:, :units] = patterns.long()
    weights = torch.pow(2, torch.arange(BITS_PER_WORD, dtype=torch.int64))
    return (padded.view(n, words, BITS_PER_WORD) * weights).sum(-1)


def region_ids(patterns: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(number of distinct patterns, each input's region id in ``0..count-1``) for bool
    patterns ``(n, units)``; inputs with equal patterns share an id."""
    codes = pack_patterns(patterns)
    distinct, inverse = torch.unique(codes, dim=0, return_inverse=True)
    return int(distinct.shape[0]), inverse


def count_regions(model: nn.Module, inputs: torch.Tensor, *, chunk: int = 65536) -> int:
    """Distinct ReLU activation patterns (linear regions) met by ``inputs``, read in chunks of
    ``chunk`` inputs; equals ``count_linear_regions(model, inputs)``."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    codes = [pack_patterns(activation_patterns(model, inputs[i:i + chunk]))
             for i in range(0, len(inputs), chunk)]
    if not codes:
        return 0
    return int(torch.unique(torch.cat(codes), dim=0).shape[0])


def region_colour(ids: torch.Tensor) -> torch.Tensor:
    """A colour index in [0, 1) per region id (float64): ``frac(id * golden ratio)``, so
    regions with nearby ids get distant colours and a region map shows its borders."""
    return torch.frac(ids.to(torch.float64) * _GOLDEN)
