"""The classification data container shared by studies and trainers."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class ClassificationData:
    """Train/test tensors of a classification task.

    ``y_train`` are the labels the model is trained on (possibly corrupted); ``y_train_clean``
    the original ones and ``noisy_mask`` marks the corrupted examples. Test labels are always
    clean: report train accuracy on ``y_train`` and test accuracy on ``y_test``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    y_train_clean: torch.Tensor | None = None
    noisy_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("inputs and labels have different lengths")
        if self.y_train_clean is None:
            object.__setattr__(self, "y_train_clean", self.y_train)
        if self.noisy_mask is None:
            object.__setattr__(self, "noisy_mask",
                               torch.zeros(len(self.y_train), dtype=torch.bool))

    @property
    def n_features(self) -> int:
        return int(self.x_train[0].numel())

    def with_train(self, **changes: torch.Tensor) -> ClassificationData:
        return replace(self, **changes)
