"""Gradient statistics: per-layer norms, update sizes, per-example gradients, gradient noise.

Every function here is read-only with respect to the model it is given: no parameter,
buffer, ``requires_grad`` flag, ``.grad`` field, training flag or hook is changed.
Per-example gradients are computed with :mod:`torch.func` (``functional_call`` +
``vmap(grad(...))``) on detached aliases of the parameters and clones of the buffers.

References
----------
- Per-example gradients with ``vmap(grad)``: the torch.func "per-sample gradients" recipe
  (after JAX; Horace He & Richard Zou, functorch, 2021).
- Gradient noise scale: McCandlish, Kaplan, Amodei & OpenAI Dota Team (2018),
  "An Empirical Model of Large-Batch Training", arXiv:1812.06162.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = [
    "GradientNoise",
    "gradient_noise",
    "layer_gradient_norms",
    "parameter_snapshot",
    "parameter_update_norms",
    "per_example_gradients",
    "relative_update_norms",
    "tensor_norms",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------------------
# shared private helpers (also used by curvature.py)
# ----------------------------------------------------------------------------------------


def _trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Name -> parameter for every parameter with ``requires_grad`` (tied ones listed once)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")
    return params


def _buffer_copies(model: nn.Module) -> dict[str, Tensor]:
    """Clones of all buffers, so that in-place updates (BatchNorm in train mode) stay local."""
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def _check_deterministic(model: nn.Module, what: str) -> None:
    """Refuse models whose forward pass is random (dropout in training mode).

    A stochastic loss has no well-defined gradient/Hessian for these measures, and its
    forward pass would draw from the global RNG.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            raise ValueError(
                f"{what}: module {name or '<root>'!r} ({type(module).__name__}) is in training "
                "mode, so the loss is random and would consume the global RNG; pass a model "
                "(or a copy.deepcopy of it) in eval mode"
            )


def _check_scalar_loss(loss: Tensor) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(
            "loss_fn(model(inputs), targets) must return a scalar tensor, got "
            f"{type(loss).__name__}"
            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else "")
        )
    return loss.reshape(())


# ----------------------------------------------------------------------------------------
# norms of gradients and updates
# ----------------------------------------------------------------------------------------


def tensor_norms(
    tensors: Mapping[str, Tensor | Callable[[], Tensor]], *, precision: torch.dtype = torch.float64
) -> dict[str, float]:
    """L2 norm of each tensor, with one host synchronisation per device.

    A value may be a tensor or a function that makes one (so that temporaries such as
    differences are made and freed one at a time). Each norm is accumulated in ``precision``
    or the tensor's own dtype, whichever is wider (complex tensors keep their imaginary part).
    ``precision=torch.float32`` is several times faster than float64 on a CPU and accurate to
    about 1e-7 relative; a norm that overflows it (``inf`` while the float64 value is finite,
    beyond about 1.8e19) is recomputed in float64 (calling its maker again). Sparse tensors
    count their stored values.
    """
    makers = {n: t if callable(t) and not isinstance(t, Tensor) else _const(t)
              for n, t in tensors.items()}
    by_device: dict[torch.device, list[tuple[str, Tensor]]] = {}
    # Dense real tensors given as such: one fused norm call per (device, dtype) group.
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[str, Tensor]]] = {}
    for name, t in tensors.items():
        if isinstance(t, Tensor) and t.is_floating_point() and t.layout == torch.strided:
            groups.setdefault((t.device, t.dtype), []).append((name, t.detach()))
        else:
            t = _dense(makers[name]())
            acc = torch.promote_types(t.dtype, precision)
            by_device.setdefault(t.device, []).append(
                (name, torch.linalg.vector_norm(t, dtype=acc).to(torch.float64)))
    for (device, dtype), items in groups.items():
        acc = torch.promote_types(dtype, precision)
        norms = torch._foreach_norm([t for _, t in items], 2, dtype=acc)
        by_device.setdefault(device, []).extend(
            (name, v.to(torch.float64)) for (name, _), v in zip(items, norms, strict=True))
    out: dict[str, float] = {}
    for items in by_device.values():
        values = torch.stack([v for _, v in items]).tolist()
        out.update((name, float(v)) for (name, _), v in zip(items, values, strict=True))
    for name, v in out.items():
        if math.isinf(v):  # an overflow of `precision`, or a genuinely infinite entry
            t = _dense(makers[name]())
            out[name] = float(torch.linalg.vector_norm(t, dtype=_widest(t.dtype)))
    return {name: out[name] for name in makers}


def _const(t: Tensor) -> Callable[[], Tensor]:
    return lambda: t


def _dense(t: Tensor) -> Tensor:
    t = t.detach()
    return t.coalesce().values() if t.is_sparse else t


def _widest(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def layer_gradient_norms(
    model: nn.Module, *, precision: torch.dtype = torch.float64
) -> dict[str, float]:
    """Euclidean norm of each parameter's existing ``.grad`` field (read-only).

    Records, for every parameter name in ``model.named_parameters()`` whose ``.grad`` is not
    ``None``, the L2 norm ``||grad||_2`` (accumulated in ``precision``, see
    :func:`tensor_norms`). Parameters without a gradient are omitted. Nothing is computed by
    backpropagation: this only reads what the last ``backward()`` left behind. Per-layer
    gradient norms are the standard diagnostic of vanishing/exploding gradients (Glorot &
    Bengio 2010; Pascanu, Mikolov & Bengio 2013).
    """
    return tensor_norms({name: p.grad for name, p in model.named_parameters()
                         if p.grad is not None}, precision=precision)


def parameter_snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Detached clones of the model's parameters, keyed by name (for update-norm measures).

    ``model.state_dict()`` returns *aliases* of the live tensors, so a "before" state taken with
    it would silently change during training; use this (or clone yourself).
    """
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _update_items(
    before: Mapping[str, Tensor], after: Mapping[str, Tensor], precision: torch.dtype
) -> dict[str, tuple[Tensor, Callable[[], Tensor]]]:
    """name -> (before tensor, maker of ``after - before`` in ``precision`` or wider)."""
    if set(before) != set(after):
        missing = sorted(set(before) ^ set(after))
        raise ValueError(f"before and after have different keys: {missing[:10]}")
    items: dict[str, tuple[Tensor, Callable[[], Tensor]]] = {}
    for name in before:
        b, a = before[name], after[name]
        if not isinstance(b, Tensor) or not isinstance(a, Tensor):
            continue
        if b.shape != a.shape:
            raise ValueError(
                f"shape mismatch for {name!r}: before {tuple(b.shape)}, after {tuple(a.shape)}"
            )
        if not (b.is_floating_point() or b.is_complex()):
            continue  # integer buffers such as num_batches_tracked
        items[name] = (b, functools.partial(_difference, a, b, precision))
    return items


def _difference(a: Tensor, b: Tensor, precision: torch.dtype) -> Tensor:
    """``a - b`` computed in ``precision`` or the dtype of ``b``, whichever is wider."""
    dtype = torch.promote_types(b.dtype, precision)
    return a.detach().to(b.device, dtype) - b.detach().to(dtype)


def parameter_update_norms(
    before: Mapping[str, Tensor], after: Mapping[str, Tensor], *,
    precision: torch.dtype = torch.float64
) -> dict[str, float]:
    """L2 norm of the change ``||after[k] - before[k]||_2`` for every floating tensor.

    ``before`` and ``after`` are name -> tensor mappings (e.g. :func:`parameter_snapshot` taken
    before and after an optimizer step, or cloned state_dicts). Keys must match and shapes
    must agree (``ValueError`` otherwise); integer tensors (e.g. ``num_batches_tracked``) and
    non-tensor entries are skipped. Differences and norms are taken in ``precision`` (float64
    by default; see :func:`tensor_norms`). Update-size diagnostics as in e.g. Karpathy's
    "update/data ratio" and LARS (You, Gitman & Ginsburg 2017).
    """
    items = _update_items(before, after, precision)
    return tensor_norms({n: diff for n, (_, diff) in items.items()}, precision=precision)


def relative_update_norms(
    before: Mapping[str, Tensor], after: Mapping[str, Tensor], *,
    precision: torch.dtype = torch.float64
) -> dict[str, float]:
    """Relative update size ``||after[k] - before[k]||_2 / ||before[k]||_2`` per tensor.

    Same key/shape rules as :func:`parameter_update_norms`. When ``||before[k]|| == 0`` the
    ratio is ``inf`` if the tensor changed and ``0.0`` if it did not. This is the per-layer
    update/weight ratio used by LARS (You, Gitman & Ginsburg 2017) to monitor learning rates.
    """
    items = _update_items(before, after, precision)
    nums = tensor_norms({n: diff for n, (_, diff) in items.items()}, precision=precision)
    dens = tensor_norms({n: b for n, (b, _) in items.items()}, precision=precision)
    out: dict[str, float] = {}
    for name, num in nums.items():
        den = dens[name]
        if den == 0.0:
            out[name] = math.inf if num > 0.0 else 0.0
        else:
            out[name] = num / den
    return out


# ----------------------------------------------------------------------------------------
# per-example gradients
# ----------------------------------------------------------------------------------------


def per_example_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Gradient of the loss of each example separately, via ``torch.func``.

    For example ``i`` the recorded gradient is ``d/dθ loss_fn(model(inputs[i:i+1]),
    targets[i:i+1])``, i.e. ``loss_fn`` applied to a batch of one (so ``reduction="mean"`` and
    ``"sum"`` agree). It is computed as ``vmap(grad(f))`` over ``functional_call(model,
    (params, buffers), ...)`` — the torch.func per-sample-gradient recipe — on detached aliases
    of the parameters and clones of the buffers, so the model is untouched.

    Returns ``{name: tensor of shape (n, *param.shape)}`` for every parameter with
    ``requires_grad=True`` (detached). The model is run in its current mode; buffers (e.g.
    BatchNorm running statistics in eval mode) are passed through ``functional_call``.

    Raises ``ValueError`` when a BatchNorm layer is in training mode (batch statistics couple
    the examples, so per-example gradients are not defined), when dropout is active in
    training mode, or when ``inputs`` and ``targets`` have different lengths.
    ``chunk_size`` is forwarded to ``vmap`` to bound memory. Memory is ``n`` times the
    parameter count.
    """
    _check_deterministic(model, "per_example_gradients")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"per_example_gradients: BatchNorm layer {name!r} "
                f"({type(module).__name__}) is in training mode; its batch statistics couple "
                "the examples. Pass a model (or a copy.deepcopy of it) in eval mode"
            )
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs and targets have different batch sizes: {inputs.shape[0]} vs "
            f"{targets.shape[0]}"
        )
    if inputs.shape[0] == 0:
        raise ValueError("inputs is an empty batch")
    params = {n: p.detach() for n, p in _trainable_parameters(model).items()}
    buffers = _buffer_copies(model)

    def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return _check_scalar_loss(loss_fn(out, y.unsqueeze(0)))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(
        params, inputs, targets
    )
    return {n: g.detach() for n, g in grads.items()}


# ----------------------------------------------------------------------------------------
# gradient noise
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientNoise:
    """Gradient signal and noise estimated from ``n`` per-example gradients ``g_1..g_n``.

    - ``mean_grad_norm_sq``: ``||ḡ||²`` with ``ḡ = (1/n) Σ g_i`` (plug-in estimate of
      ``||E g||²``; biased upward by ``tr Σ / n``).
    - ``trace_covariance``: ``tr Σ̂ = (1/(n-1)) Σ_i ||g_i - ḡ||²`` (unbiased for ``tr Cov(g)``).
    - ``snr``: ``mean_grad_norm_sq / trace_covariance``.
    - ``noise_scale``: ``B_simple = trace_covariance / mean_grad_norm_sq`` (McCandlish et al.
      2018, eq. 2.9, with the plug-in numerator/denominator above). Because of the upward bias
      of ``||ḡ||²``, this plug-in value stays below about ``n`` when the signal is weak.
    - ``mean_grad_norm_sq_unbiased``: ``||ḡ||² - tr Σ̂ / n``, unbiased for ``||E g||²``
      (McCandlish et al. 2018, App. A); can be negative for a small batch.
    - ``noise_scale_unbiased``: ``tr Σ̂ / mean_grad_norm_sq_unbiased`` (ratio of unbiased
      estimates; ``inf`` or negative when the unbiased signal estimate is <= 0).
    - ``batch_size``: ``n``.

    Ratios with a zero denominator are ``inf`` (or ``nan`` for 0/0).
    """

    mean_grad_norm_sq: float
    trace_covariance: float
    snr: float
    noise_scale: float
    mean_grad_norm_sq_unbiased: float
    noise_scale_unbiased: float
    batch_size: int


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return math.nan if num == 0.0 else math.copysign(math.inf, num)
    return num / den


def gradient_noise(per_example_grads: Mapping[str, Tensor] | Tensor) -> GradientNoise:
    """Signal-to-noise ratio and gradient noise scale from per-example gradients.

    ``per_example_grads`` is the output of :func:`per_example_gradients` (name -> ``(n, ...)``)
    or a single tensor of shape ``(n, ...)``; all entries are flattened per example and
    concatenated into ``G ∈ R^{n×D}`` (computed in float64). Estimators (see
    :class:`GradientNoise`): the mean gradient ``ḡ``, the *unbiased* covariance trace
    ``tr Σ̂ = Σ_i ||g_i - ḡ||² / (n-1)``, ``snr = ||ḡ||² / tr Σ̂`` and the simple gradient noise
    scale ``B_simple = tr Σ̂ / ||ḡ||²`` of McCandlish et al. (2018), plus the bias-corrected
    ``||ḡ||² - tr Σ̂/n`` and the corresponding ``B_simple``. Requires ``n >= 2`` and finite
    values (``ValueError`` otherwise).
    """
    if isinstance(per_example_grads, Tensor):
        tensors = [per_example_grads]
    else:
        tensors = list(per_example_grads.values())
    if not tensors:
        raise ValueError("per_example_grads is empty")
    n = tensors[0].shape[0] if tensors[0].dim() > 0 else 0
    for t in tensors:
        if t.dim() == 0 or t.shape[0] != n:
            raise ValueError("all per-example gradient tensors must share the leading dim n")
    if n < 2:
        raise ValueError(f"need at least 2 per-example gradients for a covariance, got {n}")
    g = torch.cat([t.detach().reshape(n, -1).to(torch.float64) for t in tensors], dim=1)
    if not bool(torch.isfinite(g).all()):
        raise ValueError("per_example_grads contains non-finite values")
    mean = g.mean(dim=0)
    mean_sq = float(mean.square().sum())
    trace_cov = float((g - mean).square().sum() / (n - 1))
    mean_sq_unbiased = mean_sq - trace_cov / n
    return GradientNoise(
        mean_grad_norm_sq=mean_sq,
        trace_covariance=trace_cov,
        snr=_ratio(mean_sq, trace_cov),
        noise_scale=_ratio(trace_cov, mean_sq),
        mean_grad_norm_sq_unbiased=mean_sq_unbiased,
        noise_scale_unbiased=_ratio(trace_cov, mean_sq_unbiased),
        batch_size=int(n),
    )
