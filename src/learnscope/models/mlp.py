"""Multi-layer perceptrons initialised from an explicit seed (the global RNG is untouched)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from learnscope.seeding import torch_generator

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
}


def mlp(sizes: Sequence[int], *, activation: str = "relu", dropout: float = 0.0,
        seed: int = 0, bias: bool = True) -> nn.Sequential:
    """``sizes = [in, h1, ..., out]``: Linear layers with ``activation`` between them.

    Weights use PyTorch's default ``nn.Linear`` initialisation, drawn from a generator seeded
    by ``seed`` so the same seed gives the same network and the global RNG is not consumed.

    >>> net = mlp([64, 32, 10], seed=0)
    >>> torch.equal(net[0].weight, mlp([64, 32, 10], seed=0)[0].weight)
    True
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"mlp sizes must be at least two positive integers, got {list(sizes)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
    g = torch_generator(seed, "mlp-init")
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG
            lin = nn.Linear(int(fan_in), int(fan_out), bias=bias)
        reset_linear(lin, g)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@torch.no_grad()
def reset_linear(lin: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear init (Kaiming-uniform, a=sqrt(5)) from ``generator``."""
    nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=generator)
    if lin.bias is not None:
        bound = 1.0 / math.sqrt(lin.in_features)
        lin.bias.uniform_(-bound, bound, generator=generator)
