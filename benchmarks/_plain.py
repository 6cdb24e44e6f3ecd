"""The plain PyTorch way every benchmark compares against: one model, autograd, torch.optim.SGD,
minibatches in the batch order learnscope's trainers draw for that seed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learnscope.seeding import torch_generator


def plain_sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch: int,
              seed: int, lr: float, momentum: float) -> None:
    """Train ``model`` in place for ``steps`` cross-entropy SGD steps."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    order = torch_generator(seed, "batch-order")
    n, done = len(x), 0
    while done < steps:
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, batch):
            idx = perm[i:i + batch].to(x.device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                return
