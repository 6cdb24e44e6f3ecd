"""Sharpness (the top Hessian eigenvalue of the loss) tracked along a training run.

Measuring the sharpness every few steps from scratch costs tens of Hessian-vector products per
check. Along gradient descent the top eigenvector changes slowly, so power iteration started
from the previous check's eigenvector needs only a few products (Cohen et al. 2021 track the
sharpness this way). :func:`power_sharpness` runs a fixed number of power steps from a given
start; :class:`SharpnessTracker` keeps the last eigenvector between calls. Both use the exact
Hessian-vector products of :mod:`learnscope.measures.curvature` (double backward; the model is
left untouched) and return its :class:`~learnscope.measures.curvature.EigenResult`, whose
``residual`` says how far the estimate may be from an eigenvalue.

Power iteration finds the eigenvalue of largest magnitude and undershoots the top one while the
top two are close; check the end of a run against Lanczos
(:func:`~learnscope.measures.curvature.top_hessian_eigenvalue`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from learnscope.measures.curvature import (
    EigenResult,
    LossFn,
    _as_generator,
    _HessianOperator,
    _norm,
    _power,
)

__all__ = ["SharpnessTracker", "power_sharpness"]


def power_sharpness(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, *,
                    iters: int = 10, start: Sequence[Tensor] | None = None,
                    generator: torch.Generator | int | None = None) -> EigenResult:
    """Largest-magnitude Hessian eigenvalue after exactly ``iters`` power steps.

    Starts from ``start`` (one tensor per trainable parameter, e.g. the ``vector`` of a
    previous result; normalised here) or, when None or zero, from a Gaussian vector drawn from
    ``generator``. Each step is one Hessian-vector product; the value is the Rayleigh quotient
    ``v^T H v`` of the last unit iterate ``v`` (returned as ``vector``). ``converged`` is True
    only if two successive quotients agreed exactly.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    op = _HessianOperator(model, loss_fn, inputs, targets, "power_sharpness")
    v = op.as_list(list(start)) if start is not None else []
    if not v or _norm(v) == 0.0:
        v = op.random(_as_generator(generator), "gaussian")
    norm = _norm(v)
    return _power(op, [x / norm for x in v], iters, 0.0)


class SharpnessTracker:
    """The sharpness of a model at successive points of its training, each measurement
    warm-started from the previous eigenvector.

    The first call runs ``first_iters`` power steps from a Gaussian vector (drawn from
    ``generator``), every later call ``iters`` steps from the last vector. The loss is
    ``loss_fn(model(inputs), targets)`` on the fixed batch given (the full training set for
    full-batch gradient descent).
    """

    def __init__(self, loss_fn: LossFn, inputs: Tensor, targets: Tensor, *, iters: int = 10,
                 first_iters: int = 30, generator: torch.Generator | int | None = None) -> None:
        for name, n in (("iters", iters), ("first_iters", first_iters)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
        self.loss_fn, self.inputs, self.targets = loss_fn, inputs, targets
        self.iters, self.first_iters = iters, first_iters
        self.generator = _as_generator(generator)
        self.vector: tuple[Tensor, ...] | None = None

    def __call__(self, model: nn.Module) -> EigenResult:
        first = self.vector is None
        result = power_sharpness(model, self.loss_fn, self.inputs, self.targets,
                                 iters=self.first_iters if first else self.iters,
                                 start=self.vector, generator=self.generator)
        self.vector = result.vector
        return result
