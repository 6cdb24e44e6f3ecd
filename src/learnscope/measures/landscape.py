"""Loss-landscape measures: linear mode connectivity, filter-normalized slices.

- Linear mode connectivity and the loss/error barrier: Frankle, Dziugaite, Roy & Carbin
  (2020), "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML.
- Resetting BatchNorm statistics along the path: as in Jordan, Sedghi, Saukh, Entezari &
  Neyshabur (2023), "REPAIR", and Entezari et al. (2022).
- Filter-normalized random directions and 1-D/2-D slices: Li, Xu, Taylor, Studer &
  Goldstein (2018), "Visualizing the Loss Landscape of Neural Nets", NeurIPS.

Every function works on a ``copy.deepcopy`` of the model it is given; the models passed in
are never modified (parameters, buffers, flags, ``.grad``, training mode, hooks). The copies
are evaluated in eval mode. Random directions come from an explicit ``torch.Generator`` (or
an integer seed); the global RNG is never used.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from learnscope.measures.curvature import _as_generator, _random_like

__all__ = [
    "PathResult",
    "filter_normalized_direction",
    "interpolate_state",
    "linear_path",
    "loss_slice_1d",
    "loss_slice_2d",
    "recompute_batchnorm_statistics",
]

EvalFn = Callable[[nn.Module], Any]


def _is_interpolable(t: Any) -> bool:
    return isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex())


def _check_compatible_states(state_a: Mapping[str, Any], state_b: Mapping[str, Any]) -> None:
    if set(state_a) != set(state_b):
        diff = sorted(set(state_a) ^ set(state_b))
        raise ValueError(
            f"the two states have different parameter/buffer names (differing: {diff[:10]})"
        )
    for name, a in state_a.items():
        b = state_b[name]
        if isinstance(a, Tensor) != isinstance(b, Tensor):
            raise ValueError(f"entry {name!r} is a tensor in one state only")
        if isinstance(a, Tensor):
            if a.shape != b.shape:
                raise ValueError(
                    f"shape mismatch for {name!r}: {tuple(a.shape)} vs {tuple(b.shape)}"
                )
            if a.dtype != b.dtype:
                raise ValueError(f"dtype mismatch for {name!r}: {a.dtype} vs {b.dtype}")


def interpolate_state(
    state_a: Mapping[str, Any], state_b: Mapping[str, Any], alpha: float
) -> dict[str, Any]:
    """Linear interpolation ``(1 - alpha) * a + alpha * b`` of two state_dicts.

    Floating (and complex) tensors are interpolated with ``torch.lerp``; at ``alpha == 0``
    and ``alpha == 1`` the result is an exact clone of ``state_a`` / ``state_b``. Integer
    tensors (e.g. BatchNorm ``num_batches_tracked``) and non-tensor entries are taken from
    ``a`` when ``alpha < 0.5`` and from ``b`` otherwise. Values outside [0, 1] extrapolate.
    Used for linear mode connectivity (Frankle et al. 2020). Returns a new dict (clones, in
    ``state_a``'s key order, on ``state_a``'s devices); the inputs are not modified.

    Raises ``ValueError`` for different keys, shapes or dtypes, or a non-finite alpha.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    _check_compatible_states(state_a, state_b)
    out: dict[str, Any] = {}
    for name, a in state_a.items():
        b = state_b[name]
        if _is_interpolable(a):
            b = b.detach().to(a.device)
            if alpha == 0.0:
                out[name] = a.detach().clone()
            elif alpha == 1.0:
                out[name] = b.clone()
            else:
                out[name] = torch.lerp(a.detach(), b, alpha)
        else:
            src = a if alpha < 0.5 else b
            if isinstance(src, Tensor):
                out[name] = src.detach().to(a.device).clone()
            else:
                out[name] = copy.deepcopy(src)
    return out


def _batchnorm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _recompute_batchnorm_inplace(model: nn.Module, loader: Iterable[Any]) -> int:
    """In-place worker of :func:`recompute_batchnorm_statistics` (for our own copies only)."""
    bns = _batchnorm_modules(model)
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in loader:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                model(x)
                seen += 1
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.eval()
    if seen == 0:
        raise ValueError("bn_recompute_loader yielded no batches")
    return seen


def recompute_batchnorm_statistics(model: nn.Module, loader: Iterable[Any]) -> nn.Module:
    """A copy of ``model`` with BatchNorm running statistics recomputed on ``loader``.

    ``model`` itself is not modified: a ``copy.deepcopy`` is made. In the copy, every
    ``_BatchNorm`` with ``track_running_stats`` is reset (mean 0, var 1, count 0) and given
    ``momentum=None`` (cumulative average); the copy is then run with only those layers in
    train mode (dropout etc. stay in eval mode, so no randomness) under ``torch.no_grad`` over
    ``loader``. The result is, per layer, ``running_mean`` = average over batches of the batch
    means and ``running_var`` = average over batches of the unbiased batch variances (the exact
    data statistics for a single batch), ``num_batches_tracked`` = number of batches. Loader
    items are input tensors, or tuples/lists whose first element is the input. The momenta
    are restored and the copy is returned in eval mode. This is the "reset BN statistics"
    step used when interpolating networks (Frankle et al. 2020; Jordan et al. 2023).
    Raises ``ValueError`` for an empty loader.
    """
    work = copy.deepcopy(model)
    _recompute_batchnorm_inplace(work, loader)
    return work


@dataclass(frozen=True)
class PathResult:
    """Loss and error along the linear path ``θ(α) = (1-α) θ_a + α θ_b``.

    ``alphas``, ``losses``, ``errors``: float64 arrays, in the order of the ``alphas`` given.
    ``barrier_loss`` / ``barrier_error``: ``max_α f(α) - (f(0) + f(1)) / 2`` (Frankle et al.
    2020, "error barrier height").
    """

    alphas: np.ndarray
    losses: np.ndarray
    errors: np.ndarray
    barrier_loss: float
    barrier_error: float


def _as_alphas(alphas: Sequence[float] | np.ndarray | Tensor, what: str) -> np.ndarray:
    arr = np.asarray(
        alphas.detach().cpu() if isinstance(alphas, Tensor) else alphas, dtype=np.float64
    ).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains non-finite values")
    return arr


def _eval_pair(eval_fn: EvalFn, model: nn.Module) -> tuple[float, float]:
    res = eval_fn(model)
    if not isinstance(res, tuple | list) or len(res) != 2:
        raise ValueError("eval_fn(model) must return a (loss, error) pair")
    return float(res[0]), float(res[1])


def linear_path(
    model_a: nn.Module,
    model_b: nn.Module,
    eval_fn: EvalFn,
    *,
    alphas: Sequence[float] | np.ndarray | Tensor | None = None,
    bn_recompute_loader: Iterable[Any] | None = None,
) -> PathResult:
    """Loss and error on the linear path between two networks (Frankle et al. 2020).

    For each ``alpha`` (default: 11 points ``0, 0.1, ..., 1``; must lie in [0, 1] and include
    0 and 1) a single ``copy.deepcopy(model_a)`` is loaded with
    ``interpolate_state(model_a.state_dict(), model_b.state_dict(), alpha)``, put in eval
    mode, and ``eval_fn(copy) -> (loss, error)`` is recorded. Without BN recomputation the
    endpoints are bit-for-bit the two models (exact state clones). With
    ``bn_recompute_loader`` (a re-iterable of input batches such as a list or DataLoader,
    iterated again at every alpha; a one-shot generator fails at the second alpha) the
    BatchNorm running statistics of the copy are reset and recomputed on those batches at
    *every* alpha, endpoints included (see :func:`recompute_batchnorm_statistics`), as in
    Jordan et al. (2023); interpolated running statistics are otherwise meaningless.

    Barrier (Frankle et al. 2020): ``max over the path - mean of the two endpoints``, for loss
    and error. (Entezari et al. 2022 instead subtract the linear interpolation of the
    endpoints pointwise; it can be computed from the returned arrays.)

    Raises ``ValueError`` for models with different parameter/buffer names, shapes or dtypes,
    empty or non-finite ``alphas``, ``alphas`` outside [0, 1] or lacking 0 or 1, an empty
    loader, or an ``eval_fn`` not returning a pair. ``model_a`` and ``model_b`` are untouched.
    """
    grid = _as_alphas(np.linspace(0.0, 1.0, 11) if alphas is None else alphas, "alphas")
    if (grid < 0).any() or (grid > 1).any():
        raise ValueError("alphas must lie in [0, 1] for a linear path")
    if not ((grid == 0.0).any() and (grid == 1.0).any()):
        raise ValueError("alphas must contain 0 and 1 to compute the barrier")
    state_a = model_a.state_dict()
    state_b = model_b.state_dict()
    _check_compatible_states(state_a, state_b)
    work = copy.deepcopy(model_a)
    losses = np.empty_like(grid)
    errors = np.empty_like(grid)
    for i, alpha in enumerate(grid):
        work.load_state_dict(interpolate_state(state_a, state_b, float(alpha)))
        if bn_recompute_loader is not None:
            _recompute_batchnorm_inplace(work, bn_recompute_loader)
        work.eval()
        losses[i], errors[i] = _eval_pair(eval_fn, work)
    i0 = int(np.flatnonzero(grid == 0.0)[0])
    i1 = int(np.flatnonzero(grid == 1.0)[0])
    barrier_loss = float(losses.max() - 0.5 * (losses[i0] + losses[i1]))
    barrier_error = float(errors.max() - 0.5 * (errors[i0] + errors[i1]))
    return PathResult(
        alphas=grid,
        losses=losses,
        errors=errors,
        barrier_loss=barrier_loss,
        barrier_error=barrier_error,
    )


def filter_normalized_direction(
    model: nn.Module,
    *,
    generator: torch.Generator | int,
    ignore_bias_and_bn: bool = True,
) -> dict[str, Tensor]:
    """Random filter-normalized direction in parameter space (Li et al. 2018).

    For every parameter in ``model.named_parameters()`` a standard Gaussian tensor is drawn
    from ``generator`` (a ``torch.Generator`` or an int seed; the global RNG is not used).
    For parameters with ``dim >= 2`` each filter (slice along dim 0: a conv output filter or
    a row of a linear weight) is rescaled to the Frobenius norm of the corresponding filter
    of the weight: ``d_i <- d_i / (||d_i|| + 1e-10) * ||θ_i||``. Parameters with ``dim <= 1``
    (biases, BatchNorm affine parameters) get a zero direction when ``ignore_bias_and_bn``
    (the paper's default), and otherwise a copy of the parameter itself, as in the authors'
    reference implementation (``net_plotter.normalize_directions_for_weights``). Random
    numbers are drawn for every parameter in order regardless, so the choice does not shift
    the stream. Returns ``{name: tensor}`` (same shapes/dtypes/devices as the parameters).
    """
    if generator is None:
        raise ValueError("filter_normalized_direction needs an explicit generator or seed")
    gen = _as_generator(generator)
    direction: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        w = p.detach()
        d = _random_like(w, gen, "gaussian")
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w) if ignore_bias_and_bn else w.clone()
            continue
        w_rows = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1)
        d_rows = torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1)
        scale = (w_rows / (d_rows + 1e-10)).reshape((-1,) + (1,) * (w.dim() - 1))
        direction[name] = d * scale
    return direction


def _check_direction(model: nn.Module, direction: Mapping[str, Tensor], what: str) -> None:
    params = dict(model.named_parameters())
    if not direction:
        raise ValueError(f"{what} is empty")
    unknown = sorted(set(direction) - set(params))
    if unknown:
        raise ValueError(f"{what} has names that are not parameters of the model: {unknown[:10]}")
    for name, d in direction.items():
        if not isinstance(d, Tensor) or d.shape != params[name].shape:
            shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(
                f"{what}[{name!r}] has shape {shape}, parameter has {tuple(params[name].shape)}"
            )
        if not bool(torch.isfinite(d).all()):
            raise ValueError(f"{what}[{name!r}] contains non-finite values")


def _eval_values(eval_fn: EvalFn, model: nn.Module) -> np.ndarray:
    res = eval_fn(model)
    if isinstance(res, tuple | list):
        return np.asarray([float(r) for r in res], dtype=np.float64)
    return np.asarray(float(res), dtype=np.float64)


def _slice(
    model: nn.Module,
    eval_fn: EvalFn,
    directions: list[Mapping[str, Tensor]],
    grids: list[np.ndarray],
) -> np.ndarray:
    work = copy.deepcopy(model)
    work.eval()
    params = dict(work.named_parameters())
    names = sorted(set().union(*directions))
    base = {n: params[n].detach().clone() for n in names}
    dirs = [{n: d[n].detach().to(base[n].device, base[n].dtype) for n in d} for d in directions]
    results = []
    for coords in np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, len(grids)):
        with torch.no_grad():
            for n in names:
                value = base[n].clone()
                for c, d in zip(coords, dirs, strict=True):
                    if c != 0.0 and n in d:
                        value = value + float(c) * d[n]
                params[n].copy_(value)
        results.append(_eval_values(eval_fn, work))
    arr = np.stack(results)
    return arr.reshape(tuple(g.size for g in grids) + arr.shape[1:])


def loss_slice_1d(
    model: nn.Module,
    eval_fn: EvalFn,
    direction: Mapping[str, Tensor],
    alphas: Sequence[float] | np.ndarray | Tensor,
) -> np.ndarray:
    """Values of ``eval_fn`` along ``θ + α d`` (Li et al. 2018, 1-D plot).

    ``direction`` maps parameter names to tensors of the parameters' shapes (e.g. from
    :func:`filter_normalized_direction`; missing names are held fixed; buffers such as
    BatchNorm statistics are not moved). A ``copy.deepcopy`` of ``model`` in eval mode is
    evaluated at each alpha; at ``α = 0`` it is exactly the model. ``eval_fn(model)`` returns
    a number or a tuple of numbers (e.g. ``(loss, error)``). Returns a float64 array of shape
    ``(len(alphas),)`` or ``(len(alphas), k)`` for k-tuples.

    Raises ``ValueError`` for empty/non-finite alphas, or a direction with unknown names,
    wrong shapes or non-finite values.
    """
    grid = _as_alphas(alphas, "alphas")
    _check_direction(model, direction, "direction")
    return _slice(model, eval_fn, [direction], [grid])


def loss_slice_2d(
    model: nn.Module,
    eval_fn: EvalFn,
    d1: Mapping[str, Tensor],
    d2: Mapping[str, Tensor],
    alphas: Sequence[float] | np.ndarray | Tensor,
    betas: Sequence[float] | np.ndarray | Tensor,
) -> np.ndarray:
    """Values of ``eval_fn`` on the plane ``θ + α d1 + β d2`` (Li et al. 2018, 2-D plot).

    Same conventions as :func:`loss_slice_1d`. Returns a float64 array of shape
    ``(len(alphas), len(betas))`` (``[..., k]`` for k-tuples); entry ``[i, j]`` is at
    ``(alphas[i], betas[j])``.
    """
    grid_a = _as_alphas(alphas, "alphas")
    grid_b = _as_alphas(betas, "betas")
    _check_direction(model, d1, "d1")
    _check_direction(model, d2, "d2")
    return _slice(model, eval_fn, [d1, d2], [grid_a, grid_b])
