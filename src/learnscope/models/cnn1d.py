"""The 1-D convolutional network of the MNIST-1D paper, initialised from an explicit seed.

Greydanus 2020 ("Scaling down deep learning", the MNIST-1D data set) uses three strided
convolutions and a linear read-out: ``Conv1d(1, 25, 5, stride 2, pad 1)``, ``Conv1d(25, 25, 3,
stride 2, pad 1)`` twice, ReLU after each, flatten, ``Linear(125, 10)``. On 40-long inputs the
lengths go 40 -> 19 -> 10 -> 5, so the read-out sees 25 * 5 = 125 features and the network has
5210 parameters (the paper's count). The module is an ``nn.Sequential`` (``Unflatten`` adds the
channel axis), so it needs no custom class and stacks with ``torch.func`` like any other.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learnscope.seeding import torch_generator

__all__ = ["cnn1d", "conv_output_length"]


def conv_output_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a 1-D convolution (no dilation).

    >>> conv_output_length(40, 5, 2, 1)
    19
    """
    return (length + 2 * padding - kernel) // stride + 1


def cnn1d(n_in: int = 40, n_classes: int = 10, *, channels: int = 25, seed: int = 0
          ) -> nn.Sequential:
    """The MNIST-1D paper's CNN: inputs ``(N, n_in)``, logits ``(N, n_classes)``.

    ``channels`` is the width of every convolution (25 in the paper; a width sweep varies it).
    Weights use PyTorch's default ``Conv1d`` / ``Linear`` initialisation (Kaiming-uniform with
    ``a = sqrt(5)``, biases uniform in ``+-1/sqrt(fan_in)``) drawn from the generator
    ``torch_generator(seed, "cnn1d-init")``; the global RNG is not consumed.

    >>> net = cnn1d(seed=0)
    >>> sum(p.numel() for p in net.parameters())
    5210
    >>> net(torch.zeros(3, 40)).shape
    torch.Size([3, 10])
    """
    if n_in < 1 or n_classes < 1 or channels < 1:
        raise ValueError("n_in, n_classes and channels must be positive")
    length = n_in
    for kernel, stride, padding in ((5, 2, 1), (3, 2, 1), (3, 2, 1)):
        length = conv_output_length(length, kernel, stride, padding)
    if length < 1:
        raise ValueError(f"inputs of length {n_in} are too short for three strided convolutions")
    with torch.random.fork_rng(devices=[]):  # the layers' own init draws from the global RNG
        net = nn.Sequential(
            nn.Unflatten(1, (1, n_in)),
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(1),
            nn.Linear(channels * length, n_classes),
        )
    g = torch_generator(seed, "cnn1d-init")
    for layer in net:
        if isinstance(layer, nn.Conv1d | nn.Linear):
            _reset(layer, g)
    return net


@torch.no_grad()
def _reset(layer: nn.Conv1d | nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Conv/Linear init (Kaiming-uniform, a=sqrt(5)) from ``generator``."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        fan_in = layer.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        layer.bias.uniform_(-bound, bound, generator=generator)
