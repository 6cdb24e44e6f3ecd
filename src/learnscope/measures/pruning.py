"""Pruning masks for lottery-ticket experiments (Frankle & Carbin 2019).

Iterative magnitude pruning (IMP) trains a network, keeps the weights of largest magnitude in
each layer, rewinds the survivors to their initial values and trains again. The pieces here are
the masks, kept apart from any training loop so they can be checked on tiny matrices:

- :func:`imp_keep_fractions`: the per-layer fraction of weights remaining after each round, for
  a schedule of hidden-layer fractions, with the output layer pruned at a reduced rate per round
  (Frankle & Carbin prune the output layer of fully connected nets at half the rate);
- :func:`magnitude_masks`: per layer, the ``count`` largest ``|w|`` *among the weights that
  survived the previous round* (a pruned weight never comes back, so the masks are nested);
- :func:`random_masks`: uniformly random masks with the same per-layer counts (the random-
  pruning control);
- :func:`apply_masks`: multiply weights by their masks in place (biases are never masked:
  only the tensors given a mask are touched).

Masks are boolean tensors shaped like their weights; pass one model's weights (a stack of
models gets one mask per model, stacked by the caller).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["apply_masks", "imp_keep_fractions", "keep_count", "magnitude_masks",
           "random_masks"]


def keep_count(numel: int, fraction: float) -> int:
    """How many of ``numel`` weights a keep ``fraction`` leaves: rounded, at least 1.

    >>> keep_count(8000, 0.05), keep_count(10, 0.04)
    (400, 1)
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"keep fraction must lie in (0, 1], got {fraction}")
    return max(1, min(numel, round(fraction * numel)))


def imp_keep_fractions(hidden_fractions: Sequence[float], n_layers: int, *,
                       output_rate: float = 0.5) -> list[list[float]]:
    """Per round, the fraction of each layer's weights remaining after pruning.

    ``hidden_fractions`` are the remaining fractions of every layer but the last after each
    round (decreasing, in (0, 1]); a round that prunes ``r = 1 - f_i / f_{i-1}`` of the hidden
    weights prunes ``output_rate * r`` of the output layer's remaining weights.

    >>> [[round(f, 4) for f in layers] for layers in imp_keep_fractions([0.5, 0.2], 2)]
    [[0.5, 0.75], [0.2, 0.525]]
    """
    if n_layers < 1:
        raise ValueError("n_layers must be >= 1")
    if not 0.0 <= output_rate <= 1.0:
        raise ValueError(f"output_rate must lie in [0, 1], got {output_rate}")
    rounds: list[list[float]] = []
    previous, output = 1.0, 1.0
    for f in hidden_fractions:
        if not 0.0 < f <= previous:
            raise ValueError(f"hidden fractions must decrease within (0, 1], got "
                             f"{list(hidden_fractions)}")
        output *= 1.0 - output_rate * (1.0 - f / previous)
        previous = f
        rounds.append([f] * (n_layers - 1) + [output])
    return rounds


def magnitude_masks(weights: Sequence[torch.Tensor], counts: Sequence[int],
                    previous: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Per layer, a mask keeping the ``counts[i]`` largest ``|w|`` among the survivors.

    ``previous``: the masks of the last round (None: every weight survives). A count above the
    number of survivors is an error (pruning never revives a weight). Ties are broken by
    position (stable sort), so the masks are deterministic.
    """
    if len(counts) != len(weights):
        raise ValueError(f"{len(counts)} counts for {len(weights)} layers")
    if previous is not None and len(previous) != len(weights):
        raise ValueError(f"{len(previous)} previous masks for {len(weights)} layers")
    masks = []
    for i, (w, count) in enumerate(zip(weights, counts, strict=True)):
        alive = torch.ones_like(w, dtype=torch.bool) if previous is None else previous[i]
        if alive.shape != w.shape:
            raise ValueError(f"layer {i}: mask shape {tuple(alive.shape)} != weight shape "
                             f"{tuple(w.shape)}")
        n_alive = int(alive.sum())
        if not 0 <= count <= n_alive:
            raise ValueError(f"layer {i}: cannot keep {count} of {n_alive} surviving weights")
        score = torch.where(alive, w.detach().abs().double(), torch.tensor(-1.0,
                                                                          dtype=torch.float64))
        order = torch.argsort(score.flatten(), descending=True, stable=True)
        mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        mask[order[:count]] = True
        masks.append(mask.view(w.shape))
    return masks


def random_masks(shapes: Sequence[torch.Size | tuple[int, ...]], counts: Sequence[int],
                 generator: torch.Generator) -> list[torch.Tensor]:
    """Per layer, a mask keeping ``counts[i]`` positions drawn uniformly without replacement."""
    if len(counts) != len(shapes):
        raise ValueError(f"{len(counts)} counts for {len(shapes)} layers")
    masks = []
    for shape, count in zip(shapes, counts, strict=True):
        numel = int(torch.Size(shape).numel())
        if not 0 <= count <= numel:
            raise ValueError(f"cannot keep {count} of {numel} weights")
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[torch.randperm(numel, generator=generator)[:count]] = True
        masks.append(mask.view(tuple(shape)))
    return masks


@torch.no_grad()
def apply_masks(weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> None:
    """Zero every masked-out weight in place (``w *= mask``); nothing else is touched."""
    if len(masks) != len(weights):
        raise ValueError(f"{len(masks)} masks for {len(weights)} weights")
    for w, m in zip(weights, masks, strict=True):
        w.mul_(m.to(device=w.device, dtype=w.dtype))
