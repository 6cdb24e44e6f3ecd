"""Evaluation options and helpers of the batched trainer (learnscope.train.batched)."""

from __future__ import annotations

import torch

from learnscope.train.batched import _class_argmax


def test_class_argmax_equals_argmax_with_ties_and_nans():
    g = torch.Generator().manual_seed(0)
    # few distinct values: many ties across the class axis; all-equal columns; NaNs
    z = torch.randint(0, 3, (3, 10, 257), generator=g).float()
    z[:, :, :5] = 0.0
    z[1, 4, 7] = float("nan")
    z[2, 0, 9] = z[2, 9, 9] = float("nan")
    assert torch.equal(_class_argmax(z), z.argmax(1))
    z64 = torch.randn(2, 7, 33, generator=g, dtype=torch.float64)
    assert torch.equal(_class_argmax(z64), z64.argmax(1))
