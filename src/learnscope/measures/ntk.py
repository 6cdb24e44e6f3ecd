"""Empirical neural tangent kernel (NTK), its summary, and the first-order training response.

The empirical NTK of a network ``f(x; theta)`` is ``K(x, x') = J(x) J(x')^T`` with
``J(x) = d f(x) / d theta`` over the trainable parameters (Jacot, Gabriel &
Hongler 2018, "Neural tangent kernel: convergence and generalization in neural
networks"; Fort et al. 2020 for the empirical kernel during training).

Per-example Jacobians are taken with ``torch.func`` (``jacrev`` + ``vmap``) on a
functional call with detached parameters and cloned buffers, so the model is
never modified. The kernel is computed with the model in eval mode (dropout
off, batch-norm running statistics): every module's ``training`` flag is
restored afterwards, and no random numbers are drawn.

For a model with ``k`` outputs per example the full kernel is ``(n k) x (n k)``
with example-major ordering: row ``i * k + a`` is output ``a`` of example ``i``.
``reduce="trace"`` sums the diagonal output blocks, giving ``n x n``.

Training response (Nakazato 2024), first order in the learning rate: one SGD
step of size ``lr`` on a loss ``L`` of the outputs at training inputs ``x'``
changes the output at ``x`` by ``-lr * sum_{x'} K(x, x') dL/df(x')``.

Input sensitivity (fragility to input perturbations): the mean squared Frobenius norm of the
input-output Jacobian, ``E_x ||d f(x) / d x||_F^2``, is the expected squared output change per
unit variance of small isotropic input noise, to first order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from learnscope.measures._readonly import check_batch, eval_mode
from learnscope.measures.spectra import effective_rank as _effective_rank

__all__ = ["NTKSummary", "empirical_ntk", "input_sensitivity", "ntk_summary",
           "ntk_training_response"]

_REDUCE = ("none", "trace")


def _jacobians(
    model: nn.Module, x: torch.Tensor, chunk_size: int | None
) -> tuple[list[torch.Tensor], torch.Size]:
    """Per-example Jacobians, one ``(n, k, P_p)`` tensor per trainable parameter."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=True)")
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    out_shape: list[torch.Size] = []

    def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**p, **frozen, **buffers}, (xi.unsqueeze(0),))
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the model must return a tensor, got {type(out).__name__}")
        if out.ndim == 0 or out.shape[0] != 1:
            raise ValueError(
                "the model must map a batch (1, ...) to outputs (1, ...); got output shape "
                f"{tuple(out.shape)}"
            )
        if not out_shape:
            out_shape.append(out.shape[1:])
        return out.reshape(-1)

    with eval_mode(model):
        jac = vmap(jacrev(f), in_dims=(None, 0), chunk_size=chunk_size)(params, x)
    n = x.shape[0]
    mats = []
    for name in params:
        j = jac[name]
        if not bool(torch.isfinite(j).all()):
            raise ValueError(f"the Jacobian for parameter {name!r} has NaN or infinite values")
        mats.append(j.reshape(n, j.shape[1], -1))
    return mats, out_shape[0]


def empirical_ntk(
    model: nn.Module,
    inputs: torch.Tensor,
    inputs2: torch.Tensor | None = None,
    *,
    reduce: str = "none",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Empirical NTK ``K = J J^T`` over the trainable parameters, from per-example Jacobians.

    ``inputs`` is a batch ``(n, ...)``; with ``inputs2`` ``(m, ...)`` the cross
    kernel ``K(inputs, inputs2)`` is returned. For ``k`` outputs per example the
    result is ``(n k) x (m k)`` (example-major), or ``n x m`` with
    ``reduce="trace"`` (sum over outputs) or when ``k = 1``. ``chunk_size`` is
    passed to ``vmap`` to bound memory. Source: Jacot et al. 2018.

    >>> lin = nn.Linear(2, 1, bias=False)
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    >>> empirical_ntk(lin, x).tolist()  # X X^T
    [[1.0, 1.0], [1.0, 2.0]]
    """
    if reduce not in _REDUCE:
        raise ValueError(f"reduce must be one of {_REDUCE}, got {reduce!r}")
    x1 = check_batch(inputs, "inputs")
    j1, shape1 = _jacobians(model, x1, chunk_size)
    if inputs2 is None:
        j2 = j1
    else:
        x2 = check_batch(inputs2, "inputs2")
        j2, shape2 = _jacobians(model, x2, chunk_size)
        if shape2 != shape1:
            raise ValueError(f"output shapes differ: {tuple(shape1)} vs {tuple(shape2)}")
    n, k = j1[0].shape[:2]
    m = j2[0].shape[0]
    if reduce == "trace" or k == 1:
        out = sum(torch.einsum("iap,jap->ij", a, b) for a, b in zip(j1, j2, strict=True))
        return out.detach()
    out = sum(torch.einsum("iap,jbp->iajb", a, b) for a, b in zip(j1, j2, strict=True))
    return out.reshape(n * k, m * k).detach()


def ntk_training_response(
    model: nn.Module,
    inputs: torch.Tensor,
    train_inputs: torch.Tensor,
    output_grads: torch.Tensor,
    lr: float,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """First-order change of the outputs at ``inputs`` from one SGD step on ``train_inputs``.

    ``delta f(x) = -lr * sum_{x'} K(x, x') dL/df(x')`` where ``output_grads`` holds
    ``dL/df(x')`` for the loss actually stepped (shape of the model's outputs on
    ``train_inputs``, e.g. ``torch.autograd.grad(loss, outputs)``). Returns a tensor
    shaped like the model's outputs on ``inputs``. Sources: Jacot et al. 2018;
    Nakazato 2024 (training response through the NTK).

    >>> lin = nn.Linear(1, 1, bias=False)
    >>> ntk_training_response(lin, torch.ones(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.1)
    tensor([[-0.1000]])
    """
    lr_f = float(lr)
    if not math.isfinite(lr_f):
        raise ValueError(f"lr must be finite, got {lr!r}")
    x = check_batch(inputs, "inputs")
    xt = check_batch(train_inputs, "train_inputs")
    if not isinstance(output_grads, torch.Tensor):
        raise ValueError(f"output_grads must be a torch.Tensor, got {type(output_grads).__name__}")
    j1, shape1 = _jacobians(model, x, chunk_size)
    j2, shape2 = _jacobians(model, xt, chunk_size)
    g = output_grads.detach()
    if tuple(g.shape) != (xt.shape[0], *shape2):
        raise ValueError(
            f"output_grads must have shape {(xt.shape[0], *shape2)} (the outputs on "
            f"train_inputs), got {tuple(g.shape)}"
        )
    g = g.reshape(xt.shape[0], -1).to(j2[0].dtype)
    # -lr * J(x) (J(x')^T g), without forming the kernel
    jt_g = [torch.einsum("jbp,jb->p", b, g) for b in j2]
    delta = sum(torch.einsum("iap,p->ia", a, v) for a, v in zip(j1, jt_g, strict=True))
    return (-lr_f * delta).reshape(x.shape[0], *shape1).detach()


def input_sensitivity(model: nn.Module, inputs: torch.Tensor, *,
                      chunk_size: int | None = None) -> float:
    """Mean over ``inputs`` of ``||d f(x) / d x||_F^2`` (all outputs, all input coordinates).

    For small isotropic input noise ``e ~ N(0, s^2 I)``, ``E ||f(x + e) - f(x)||^2 =
    s^2 ||d f / d x||_F^2`` to first order: how fragile the outputs are to input perturbations.
    Computed in eval mode with ``torch.func`` on detached parameters; the model is not changed.

    >>> lin = nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
    >>> input_sensitivity(lin, torch.zeros(5, 2))  # ||W||_F^2
    25.0
    """
    x = check_batch(inputs, "inputs")
    if not x.is_floating_point():
        raise ValueError(f"inputs must be floating point, got {x.dtype}")
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}

    def f(xi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**params, **buffers}, (xi.unsqueeze(0),))
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the model must return a tensor, got {type(out).__name__}")
        return out.reshape(-1)

    with eval_mode(model):
        jac = vmap(jacrev(f), chunk_size=chunk_size)(x)
    if not bool(torch.isfinite(jac).all()):
        raise ValueError("the input-output Jacobian has NaN or infinite values")
    return float(jac.reshape(x.shape[0], -1).to(torch.float64).pow(2).sum(1).mean())


@dataclass(frozen=True)
class NTKSummary:
    """Scalar summary of an NTK Gram matrix ``K`` (n x n).

    ``trace``; ``trace_ratio_to_init = trace(K) / trace(K0)`` (``None`` without
    ``K0``); ``kernel_width`` = fraction of off-diagonal pairs ``(i, j), i != j``
    whose normalised kernel ``K_ij / sqrt(K_ii K_jj)`` exceeds ``width_threshold``
    (pairs touching a zero diagonal entry count as not exceeding it);
    ``effective_rank`` = Roy & Vetterli effective rank of ``K``.
    """

    trace: float
    trace_ratio_to_init: float | None
    kernel_width: float
    effective_rank: float
    width_threshold: float
    n: int


def _as_kernel(k: Any, name: str) -> np.ndarray:
    if isinstance(k, torch.Tensor):
        k = k.detach().cpu().to(torch.float64).numpy()
    arr = np.array(k, dtype=np.float64, copy=True)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} must be at least 2 x 2 (kernel width needs pairs)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    scale = float(np.max(np.abs(arr)))
    if not np.allclose(arr, arr.T, rtol=0.0, atol=1e-4 * scale):
        raise ValueError(f"{name} is not symmetric")
    if np.any(np.diag(arr) < -1e-8 * scale):
        raise ValueError(f"{name} has negative diagonal entries (not a kernel Gram matrix)")
    return arr


def ntk_summary(K: Any, K0: Any = None, *, width_threshold: float = 0.5) -> NTKSummary:
    """Trace, trace relative to init, kernel width and effective rank of an NTK.

    Sources: Jacot et al. 2018; Fort et al. 2020 ("Deep learning versus kernel
    learning", kernel velocity / evolution); Roy & Vetterli 2007 (effective rank).
    ValueError for an all-zero ``K`` (effective rank undefined) or a ``K0`` with
    zero trace.

    >>> s = ntk_summary(torch.ones(3, 3))
    >>> s.trace, s.kernel_width
    (3.0, 1.0)
    """
    k = _as_kernel(K, "K")
    thr = float(width_threshold)
    if not math.isfinite(thr):
        raise ValueError(f"width_threshold must be finite, got {width_threshold!r}")
    n = k.shape[0]
    tr = float(np.trace(k))
    ratio = None
    if K0 is not None:
        k0 = _as_kernel(K0, "K0")
        if k0.shape != k.shape:
            raise ValueError(f"K0 has shape {k0.shape} but K has shape {k.shape}")
        tr0 = float(np.trace(k0))
        if tr0 <= 0:
            raise ValueError("trace_ratio_to_init is undefined: K0 has zero trace")
        ratio = tr / tr0
    d = np.clip(np.diag(k), 0.0, None)
    denom = np.sqrt(np.outer(d, d))
    ok = denom > 0
    normed = np.where(ok, k / np.where(ok, denom, 1.0), 0.0)
    off = ~np.eye(n, dtype=bool)
    wide = (normed > thr) & ok & off
    width = float(wide.sum()) / float(n * (n - 1))
    if not np.any(k):
        raise ValueError("effective rank is undefined for an all-zero kernel")
    return NTKSummary(
        trace=tr,
        trace_ratio_to_init=ratio,
        kernel_width=width,
        effective_rank=_effective_rank(k),
        width_threshold=thr,
        n=int(n),
    )
