"""Synthetic sparse features for toy models of superposition.

The data of Elhage et al. 2022, "Toy models of superposition": ``n`` features, each present
independently with probability ``1 - S`` (``S`` the sparsity) and then uniform on ``[0, 1)``,
absent (exactly 0) otherwise; the loss weights feature ``i`` by an importance ``r**i``.
Henighan et al. 2023, "Superposition, memorization and double descent", train the same model
on a fixed set of ``T`` such points, each rescaled to unit norm.

Many models train as one stack, so ``sparsity`` may be one number (output ``(points, n)``),
one number per model ``(K,)`` or one per model and feature ``(K, n)`` (output
``(K, points, n)``). Every draw takes an explicit generator or seed; no global RNG is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from learnscope.seeding import torch_generator

__all__ = ["feature_importance", "sparse_feature_batch", "sparse_feature_set"]

SparsityLike = float | Sequence[float] | Sequence[Sequence[float]] | torch.Tensor


def feature_importance(n_features: int, decay: float | Sequence[float] | torch.Tensor, *,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Importance ``I_i = decay**i`` of features ``i = 0..n-1`` (the first feature weighs 1).

    ``decay`` is one ratio (output ``(n,)``) or one per model (output ``(K, n)``); 1 gives
    equal importance. Elhage et al. 2022 use 0.7.

    >>> feature_importance(3, 0.5).tolist()
    [1.0, 0.5, 0.25]
    """
    n = _positive_int(n_features, "n_features")
    r = torch.as_tensor(decay, dtype=torch.float64)
    if r.ndim > 1 or r.numel() == 0:
        raise ValueError(f"decay must be a number or a 1-D sequence, got shape {tuple(r.shape)}")
    if not bool(torch.all(torch.isfinite(r) & (r > 0))):
        raise ValueError(f"decay must be > 0 and finite, got {r.tolist()}")
    powers = torch.arange(n, dtype=torch.float64)
    return (r.unsqueeze(-1) ** powers).to(dtype)


def sparse_feature_batch(batch_size: int, n_features: int, sparsity: SparsityLike, *,
                         generator: torch.Generator, unit_norm: bool = False,
                         coupled: bool = False,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A fresh batch of sparse feature vectors drawn from ``generator`` (one call per step).

    Each entry is present with probability ``1 - sparsity`` and then ``U[0, 1)``, else 0.
    ``unit_norm`` rescales every non-zero point to norm 1 (Henighan et al. 2023); all-zero
    points stay zero. Shape ``(batch_size, n)`` for one sparsity, else ``(K, batch_size, n)``.

    ``coupled=True`` draws one set of uniforms for all K models (common random numbers): model
    ``k`` gets exactly the batch a one-sparsity call with ``sparsity[k]`` would have drawn, a
    sparser model's entries are a subset of a denser one's, and each model's distribution is
    unchanged. It draws K times fewer random numbers, which matters when data generation is
    a large part of a training step; use independent draws (the default) across seeds.

    >>> g = torch.Generator().manual_seed(0)
    >>> sparse_feature_batch(4, 5, [0.0, 1.0], generator=g).shape
    torch.Size([2, 4, 5])
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    b = _positive_int(batch_size, "batch_size")
    n = _positive_int(n_features, "n_features")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    presence = 1.0 - _sparsity(sparsity, n)  # () or (K, n), float64
    k = presence.shape[0] if presence.ndim else 0
    # Points lead so that the first T rows of a larger draw equal a draw of T rows; the last
    # axis holds (presence test, value) so one stream serves both.
    shape = (b, k, n, 2) if k and not coupled else (b, n, 2)
    u = torch.rand(shape, generator=generator, dtype=dtype)
    if k and coupled:
        present = u[..., 0].unsqueeze(0) < presence.to(dtype).unsqueeze(1)  # (K, b, n)
        x = torch.where(present, u[..., 1].unsqueeze(0), 0.0)
    else:
        x = torch.where(u[..., 0] < presence.to(dtype), u[..., 1], 0.0)
        if k:
            x = x.permute(1, 0, 2)
    if unit_norm:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        x = x / torch.where(norm > 0, norm, 1.0)
    return x.contiguous()


def sparse_feature_set(n_points: int, n_features: int, sparsity: SparsityLike, *, seed: int,
                       split: str = "train", unit_norm: bool = False, coupled: bool = False,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A fixed set of ``n_points`` sparse feature vectors, a function of ``(seed, split)``.

    For finite-data training (Henighan et al. 2023): ``split`` names independent streams
    (``"train"``, ``"test"``). Sets are nested: the set of ``T`` points is the first ``T``
    points of any larger set with the same arguments, so a sweep over ``T`` adds data rather
    than redrawing it. Calls that differ only in a (single) sparsity share their uniforms, so
    at a higher sparsity the present entries are a subset of those at a lower one; with K
    sparsities in one call, ``coupled=True`` does the same across the K models. Shapes as
    :func:`sparse_feature_batch`.

    >>> a = sparse_feature_set(3, 4, 0.5, seed=0)
    >>> bool(torch.equal(a, sparse_feature_set(10, 4, 0.5, seed=0)[:3]))
    True
    """
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty name, got {split!r}")
    generator = torch_generator(int(seed), "sparse-feature-set", split)
    return sparse_feature_batch(n_points, n_features, sparsity, generator=generator,
                                unit_norm=unit_norm, coupled=coupled, dtype=dtype)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _sparsity(sparsity: SparsityLike, n_features: int) -> torch.Tensor:
    """Sparsity as a float64 scalar or a ``(K, n)`` tensor, checked to lie in [0, 1]."""
    try:
        s = torch.as_tensor(sparsity, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"sparsity must be numbers in [0, 1]: {exc}") from exc
    if s.ndim > 2 or (s.ndim and s.numel() == 0):
        raise ValueError(f"sparsity must be a number, (K,) or (K, n), got shape {tuple(s.shape)}")
    if not bool(torch.all((s >= 0) & (s <= 1))):  # also rejects NaN
        raise ValueError(f"sparsity must lie in [0, 1], got {s.tolist()}")
    if s.ndim == 1:
        s = s.unsqueeze(-1).expand(-1, n_features)
    elif s.ndim == 2 and s.shape[1] != n_features:
        raise ValueError(f"sparsity of shape {tuple(s.shape)} needs {n_features} columns")
    return s
