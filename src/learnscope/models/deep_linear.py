"""Deep linear networks: bias-free Linear layers with no nonlinearity in between.

The network computes ``x -> W_L ... W_2 W_1 x``, a linear map, but gradient descent on its
factors is not linear: from a small initialisation it learns the input-output modes one at a
time, each after a plateau (saddle-to-saddle dynamics, Saxe et al. 2014), and depth strengthens
the bias towards low rank. From a large initialisation the factors barely move relative to
their size (the lazy regime) and the plateaus disappear. ``init_scale`` selects the regime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from learnscope.seeding import torch_generator

__all__ = ["deep_linear", "product_matrix"]


def deep_linear(sizes: Sequence[int], *, init_scale: float = 1.0, seed: int = 0
                ) -> nn.Sequential:
    """``sizes = [in, h1, ..., out]``: bias-free ``nn.Linear`` layers, nothing in between.

    Each weight is drawn i.i.d. from ``N(0, init_scale**2 / fan_in)``, so ``init_scale = 1``
    keeps the expected squared norm of a signal through every layer (LeCun-normal; the
    end-to-end map starts at size ~1, the lazy end) and ``init_scale << 1`` shrinks the product
    of ``L`` layers by ``init_scale**L`` (the saddle-to-saddle regime). The draws come from
    ``torch_generator(seed, "deep-linear-init")``; the global RNG is not consumed.

    >>> net = deep_linear([4, 3, 2], init_scale=1e-3, seed=0)
    >>> [tuple(layer.weight.shape) for layer in net], net[0].bias is None
    ([(3, 4), (2, 3)], True)
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"deep_linear sizes must be at least two positive integers, got {sizes}")
    if not (math.isfinite(init_scale) and init_scale >= 0):
        raise ValueError(f"init_scale must be a finite number >= 0, got {init_scale}")
    g = torch_generator(seed, "deep-linear-init")
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG
            layer = nn.Linear(fan_in, fan_out, bias=False)
        with torch.no_grad():
            layer.weight.normal_(0.0, init_scale / math.sqrt(fan_in), generator=g)
        layers.append(layer)
    return nn.Sequential(*layers)


@torch.no_grad()
def product_matrix(net: nn.Sequential) -> torch.Tensor:
    """The end-to-end matrix ``W_L ... W_1`` (shape ``(out, in)``) of a ``deep_linear`` net."""
    layers = [m for m in net if isinstance(m, nn.Linear)]
    if not layers or len(layers) != len(net):
        raise ValueError("product_matrix needs an nn.Sequential of nn.Linear layers only")
    out = layers[0].weight.detach().clone()
    for layer in layers[1:]:
        out = layer.weight @ out
    return out
