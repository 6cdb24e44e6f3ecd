"""One fast test for "no NaN or infinity in this tensor", shared by the measures."""

from __future__ import annotations

import math

import torch

__all__: list[str] = []


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite.

    A finite sum proves it (NaN and infinities propagate through a sum) without the boolean
    tensor of ``torch.isfinite``; only when the sum is not finite (a non-finite entry, or
    finite entries whose sum overflows) are the entries checked one by one.

    >>> all_finite(torch.tensor([1.0, 2.0])), all_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    >>> all_finite(torch.tensor([3e38, 3e38]))  # the float32 sum overflows; entries are finite
    True
    """
    if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
        return True
    if math.isfinite(abs(complex(t.sum()))) if t.is_complex() else math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())
