"""Curvature of the loss: Hessian-vector products, top eigenvalue, Hutchinson trace.

After PyHessian (Yao, Gholami, Keutzer & Mahoney 2020, "PyHessian: Neural Networks Through
the Lens of the Hessian", arXiv:1912.07145). The Hessian is the one of the scalar
``loss_fn(model(inputs), targets)`` on the single batch given, with respect to every
parameter that has ``requires_grad=True`` (in ``model.named_parameters()`` order; frozen
parameters are held fixed). Hessian-vector products use double backward
(Pearlmutter 1994) through ``torch.func.functional_call`` on detached aliases of the
parameters and clones of the buffers, so the model itself is never modified: parameters,
buffers (BatchNorm statistics too), ``requires_grad`` flags, ``.grad`` fields, the training
flag and hooks are all left as they were.

The model is evaluated in its current mode (put it in eval mode first for fixed BatchNorm
statistics). Dropout in training mode is refused (``ValueError``): the loss would be random.
Random probe vectors come from an explicit ``torch.Generator`` (or an integer seed); the
global RNG is never used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from learnscope.measures.gradients import (
    _buffer_copies,
    _check_deterministic,
    _check_scalar_loss,
    _trainable_parameters,
)

__all__ = [
    "EigenResult",
    "TraceResult",
    "hessian_trace",
    "hessian_vector_product",
    "top_hessian_eigenvalue",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
DEFAULT_SEED = 0


@dataclass(frozen=True)
class EigenResult:
    """Power-iteration estimate of the largest-magnitude Hessian eigenvalue.

    ``value``: Rayleigh quotient ``v^T H v`` at the last iterate (``||v|| = 1``);
    ``iterations``: Hessian-vector products used; ``converged``: whether the relative change
    of the estimate fell to ``<= tol``; ``tol``: the tolerance used.
    """

    value: float
    iterations: int
    converged: bool
    tol: float


@dataclass(frozen=True)
class TraceResult:
    """Hutchinson estimate of ``tr H``: ``value`` (mean of ``v^T H v``), ``std_error``
    (sample standard deviation / sqrt(samples); ``nan`` for one sample) and ``samples``."""

    value: float
    std_error: float
    samples: int


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A generator from a generator, an integer seed, or ``None`` (seed ``DEFAULT_SEED``)."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = DEFAULT_SEED
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, got {type(generator)}"
        )
    return torch.Generator().manual_seed(generator)


def _random_like(t: Tensor, generator: torch.Generator, distribution: str = "gaussian") -> Tensor:
    """A random tensor shaped like ``t`` drawn from ``generator`` only (global RNG untouched)."""
    dtype = t.dtype if t.is_floating_point() else torch.float32
    if distribution == "gaussian":
        r = torch.randn(t.shape, generator=generator, device=generator.device, dtype=dtype)
    elif distribution == "rademacher":
        r = torch.randint(0, 2, t.shape, generator=generator, device=generator.device)
        r = r.to(dtype) * 2 - 1
    else:  # pragma: no cover - validated by callers
        raise ValueError(f"unknown distribution {distribution!r}")
    return r.to(t.device)


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(
        sum((x.to(torch.float64) * y.to(torch.float64)).sum() for x, y in zip(a, b, strict=True))
    )


def _norm(a: Sequence[Tensor]) -> float:
    return math.sqrt(_dot(a, a))


class _HessianOperator:
    """``v -> H v`` for a fixed batch; the gradient graph is built once and reused."""

    def __init__(
        self, model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, what: str
    ) -> None:
        _check_deterministic(model, what)
        trainable = _trainable_parameters(model)
        self.names = list(trainable)
        self.shapes = [p.shape for p in trainable.values()]
        self.params = [p.detach().requires_grad_(True) for p in trainable.values()]
        buffers = _buffer_copies(model)
        with torch.enable_grad():
            out = functional_call(
                model, (dict(zip(self.names, self.params, strict=True)), buffers), (inputs,)
            )
            loss = _check_scalar_loss(loss_fn(out, targets))
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        # Keep only gradient entries that still depend on the parameters.
        self.grads = [(i, g) for i, g in enumerate(grads) if g is not None and g.requires_grad]

    def as_list(self, vector: Sequence[Tensor] | Mapping[str, Tensor]) -> list[Tensor]:
        if isinstance(vector, Mapping):
            if set(vector) != set(self.names):
                raise ValueError(
                    "vector keys must be the names of the trainable parameters: "
                    f"{self.names}, got {sorted(vector)}"
                )
            vector = [vector[n] for n in self.names]
        vector = list(vector)
        if len(vector) != len(self.params):
            raise ValueError(
                f"vector has {len(vector)} tensors, the model has {len(self.params)} "
                "trainable parameters"
            )
        out = []
        for name, v, p in zip(self.names, vector, self.params, strict=True):
            if not isinstance(v, Tensor):
                raise ValueError(f"vector entry for {name!r} is not a tensor")
            if v.shape != p.shape:
                raise ValueError(
                    f"vector entry for {name!r} has shape {tuple(v.shape)}, parameter has "
                    f"{tuple(p.shape)}"
                )
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"vector entry for {name!r} contains non-finite values")
            out.append(v.detach().to(p.device, p.dtype))
        return out

    def __call__(self, vector: list[Tensor]) -> list[Tensor]:
        result = [torch.zeros_like(p) for p in self.params]
        if not self.grads:
            return result
        with torch.enable_grad():
            hv = torch.autograd.grad(
                [g for _, g in self.grads],
                self.params,
                grad_outputs=[vector[i] for i, _ in self.grads],
                retain_graph=True,
                allow_unused=True,
            )
        return [h.detach() if h is not None else r for h, r in zip(hv, result, strict=True)]

    def random(self, generator: torch.Generator, distribution: str) -> list[Tensor]:
        return [_random_like(p, generator, distribution) for p in self.params]


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    vector: Sequence[Tensor] | Mapping[str, Tensor],
) -> list[Tensor]:
    """Exact Hessian-vector product ``H v`` of the batch loss (Pearlmutter 1994; PyHessian).

    ``H`` is the Hessian of ``loss_fn(model(inputs), targets)`` with respect to the trainable
    parameters (``requires_grad=True``, ``named_parameters()`` order). ``vector`` is a
    sequence of tensors in that order (or a mapping name -> tensor) with the parameters'
    shapes. Returns the detached list ``[H v]_k`` in the same order. Computed by double
    backward through ``torch.func.functional_call``; the model is untouched.

    Raises ``ValueError`` for a vector with the wrong number of tensors, wrong shapes or
    non-finite values, or a non-scalar loss.
    """
    op = _HessianOperator(model, loss_fn, inputs, targets, "hessian_vector_product")
    return op(op.as_list(vector))


def top_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    iters: int = 100,
    tol: float = 1e-4,
    generator: torch.Generator | int | None = None,
) -> EigenResult:
    """Largest-*magnitude* Hessian eigenvalue by power iteration (PyHessian, Yao et al. 2020).

    Starting from a Gaussian vector drawn from ``generator`` (a ``torch.Generator``, an int
    seed, or ``None`` for seed 0), repeats ``v <- H v / ||H v||`` and records the Rayleigh
    quotient ``v^T H v``. Stops when ``|λ_k - λ_{k-1}| <= tol * |λ_k|`` or after ``iters``
    Hessian-vector products.

    Power iteration converges to the eigenvalue of largest *absolute* value: for a loss at a
    saddle with a dominant negative direction the result is negative; it is the top
    eigenvalue ("sharpness") only when that eigenvalue dominates in magnitude, as is usual
    for trained networks. If ``λ_max`` and ``-λ_max`` are both eigenvalues the iteration does
    not converge (``converged=False``). The convergence rate is governed by the gap
    ``|λ_2| / |λ_1|``.

    Returns :class:`EigenResult` (value, iterations, converged, tol).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    gen = _as_generator(generator)
    op = _HessianOperator(model, loss_fn, inputs, targets, "top_hessian_eigenvalue")
    v = op.random(gen, "gaussian")
    norm = _norm(v)
    v = [x / norm for x in v]
    prev: float | None = None
    eig = 0.0
    for it in range(1, iters + 1):
        hv = op(v)
        eig = _dot(v, hv)
        hv_norm = _norm(hv)
        if not math.isfinite(hv_norm):
            raise ValueError("non-finite Hessian-vector product (is the loss finite?)")
        if hv_norm == 0.0:  # v is in the null space; with a random start, H == 0 on it
            return EigenResult(value=0.0, iterations=it, converged=True, tol=tol)
        v = [x / hv_norm for x in hv]
        if prev is not None and abs(eig - prev) <= tol * abs(eig):
            return EigenResult(value=eig, iterations=it, converged=True, tol=tol)
        prev = eig
    return EigenResult(value=eig, iterations=iters, converged=False, tol=tol)


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    samples: int = 100,
    generator: torch.Generator | int | None = None,
    distribution: str = "rademacher",
) -> TraceResult:
    """Hutchinson estimate of the Hessian trace (Hutchinson 1990; PyHessian, Yao et al. 2020).

    Draws ``samples`` independent probe vectors ``v`` with ``E[v v^T] = I`` from
    ``generator`` (``"rademacher"``: entries ±1, or ``"gaussian"``: N(0, 1)) and records the
    mean of ``v^T H v`` and its standard error (sample std with ``ddof=1`` divided by
    ``sqrt(samples)``; ``nan`` for a single sample). The estimator is unbiased; with
    Rademacher probes its variance is ``2 Σ_{i≠j} H_ij²`` per sample, so it is exact for a
    diagonal Hessian.

    Returns :class:`TraceResult` (value, std_error, samples).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    gen = _as_generator(generator)
    op = _HessianOperator(model, loss_fn, inputs, targets, "hessian_trace")
    estimates = []
    for _ in range(samples):
        v = op.random(gen, distribution)
        estimates.append(_dot(v, op(v)))
        if not math.isfinite(estimates[-1]):
            raise ValueError("non-finite Hessian-vector product (is the loss finite?)")
    est = torch.tensor(estimates, dtype=torch.float64)
    value = float(est.mean())
    std_error = float(est.std(correction=1)) / math.sqrt(samples) if samples > 1 else math.nan
    return TraceResult(value=value, std_error=std_error, samples=samples)
