"""Curvature probe: top Hessian eigenvalue (sharpness) and Hutchinson trace of the loss."""

from __future__ import annotations

import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from learnscope.measures.curvature import hessian_trace, top_hessian_eigenvalue
from learnscope.measures.gradients import LossFn
from learnscope.probes.base import Probe, ProbeContext, eval_mode
from learnscope.probes.checks import (
    check_choice,
    check_int,
    check_loss_fn,
    check_number,
    check_schedule,
)
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.seeding import torch_generator
from learnscope.store.records import Record

__all__ = ["CurvatureProbe"]


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


class CurvatureProbe(Probe):
    """The largest Hessian eigenvalue ("sharpness") and the Hessian trace, with their errors.

    On the first ``n_examples`` of the probe data, the Hessian of the batch loss
    ``loss_fn(model(x), y)`` with respect to the trainable parameters is probed with exact
    Hessian-vector products (double backward, Pearlmutter 1994). The defaults are those of
    the measure functions, :func:`~learnscope.measures.top_hessian_eigenvalue` and
    :func:`~learnscope.measures.hessian_trace`; each value is recorded with its uncertainty:

    - ``hessian_top_eigenvalue``: the eigenvalue of largest magnitude by Lanczos (or power
      iteration, ``eigen_method="power"``, PyHessian's method) from a Gaussian start, at
      most ``eigen_iters`` products, stopping at relative residual (Lanczos) or relative
      change (power) ``eigen_tol``. Meta: ``method``, ``iterations``, ``converged``, ``tol``,
      ``residual`` (``||Hv - λv|| / |λ|`` of the returned vector: some eigenvalue lies within
      ``residual * |λ|`` of the value). It is the top eigenvalue whenever that dominates in
      magnitude (the usual case in training; a negative value means a dominant negative
      direction).
    - ``hessian_trace``: Hutchinson's estimator with Rademacher vectors (PyHessian's choice;
      lower variance than Gaussian ones). Meta: ``samples`` (used), ``std_error`` (standard
      error of the mean: ``value ± 2 std_error`` covers the trace about 95% of the time),
      ``distribution``; in adaptive mode (``trace_rel_tol`` set) also ``rel_tol``,
      ``max_samples`` and ``converged``: at least ``trace_samples`` vectors, then more until
      ``std_error <= trace_rel_tol * |trace|`` or ``trace_max_samples``.

    Accuracy and cost of the defaults, measured against the exact Hessian of MNIST-1D MLPs
    40-64-64-10 and 40-256-10 (256 examples, cross-entropy, at initialisation and after 800
    SGD steps, 10 seeds each): eigenvalue relative error <= 4e-7 with 10-28 products (the
    former defaults, power iteration with at most 50 products and tolerance 1e-3, erred by
    up to 4-11% when the top eigenvalues were close); trace relative standard error 1.5-10%
    with 100 products (20 before: 3-22%), largest at initialisation where the Hessian's
    off-diagonal mass is large; ``trace_rel_tol`` buys more where it matters. One
    measurement took 0.17-0.25 s on one loaded CPU thread (the former defaults 0.06 s).

    Compare the sharpness with ``2 / learning_rate`` to see progressive sharpening and the
    edge of stability of full-batch gradient descent (Cohen et al. 2021).

    The Hessian is the one of the *eval-mode* network: the model is put in eval mode for the
    measurement (every module's flag is restored after), so dropout is off and BatchNorm uses
    its running statistics. The random vectors come from generators seeded by
    ``learnscope.seeding.torch_generator(seed, "hessian_eigenvalue", step)`` and
    ``(seed, "hessian_trace", step)``: deterministic, and the global RNG is untouched. A
    non-finite loss (a diverged run) gives NaN values with a note instead of an error. The
    final state is measured when the scope closes unless the last step was already measured.

    Cost: expensive (up to ``eigen_iters + 1`` products for the eigenvalue and
    ``trace_samples``, or up to ``trace_max_samples`` in adaptive mode, for the trace;
    Lanczos keeps up to ``eigen_iters`` vectors of the parameters' size).
    Sources: Yao, Gholami, Keutzer & Mahoney 2020 (PyHessian); Lanczos 1950; Hutchinson 1990;
    Cohen, Kaur, Li, Kolter & Talwalkar 2021 (edge of stability).

    Args:
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, e.g. ``F.cross_entropy``.
        schedule: when to measure (default log-spaced, 2 per decade).
        n_examples: how many probe examples (the first ones) define the loss.
        eigen_method: ``"lanczos"`` or ``"power"``.
        eigen_iters: the most Hessian-vector products for the eigenvalue.
        eigen_tol: tolerance of the eigenvalue's stopping rule.
        trace_samples: Rademacher vectors for the trace (the minimum in adaptive mode).
        trace_rel_tol: ``None`` (fixed number of samples) or the relative standard error to
            reach.
        trace_max_samples: the most vectors in adaptive mode.
        seed: seed of the random vectors (combined with the step).
    """

    name = "curvature"
    cost = "expensive"
    source = "Yao et al. 2020 (PyHessian); Lanczos 1950; Hutchinson 1990; Cohen et al. 2021"

    def __init__(self, loss_fn: LossFn, *, schedule: Schedule | None = None,
                 n_examples: int = 256, eigen_method: str = "lanczos", eigen_iters: int = 100,
                 eigen_tol: float = 1e-4, trace_samples: int = 100,
                 trace_rel_tol: float | None = None, trace_max_samples: int = 1000,
                 seed: int = 0) -> None:
        self.loss_fn = check_loss_fn(loss_fn)
        self.schedule = check_schedule(schedule, log_spaced(2))
        self.n_examples = check_int(n_examples, "n_examples", 1)
        self.eigen_method = check_choice(eigen_method, "eigen_method", ("lanczos", "power"))
        self.eigen_iters = check_int(eigen_iters, "eigen_iters", 1)
        self.eigen_tol = check_number(eigen_tol, "eigen_tol", low=0.0)
        self.trace_samples = check_int(trace_samples, "trace_samples", 1)
        self.trace_rel_tol = None if trace_rel_tol is None else check_number(
            trace_rel_tol, "trace_rel_tol", low=0.0)
        self.trace_max_samples = check_int(trace_max_samples, "trace_max_samples", 1)
        if self.trace_rel_tol is not None:
            check_int(self.trace_samples, "trace_samples (the minimum in adaptive mode)", 2)
            check_int(self.trace_max_samples, "trace_max_samples", self.trace_samples)
        self.seed = check_int(seed, "seed", 0)

    def uses_output(self) -> bool:
        return True

    def measure(self, ctx: ProbeContext) -> list[Record]:
        x, y = ctx.labelled_batch("CurvatureProbe", self.n_examples)
        model = ctx.model
        meta = {"n_examples": int(x.shape[0]), "seed": self.seed, "mode": "eval"}
        eig_meta = meta | {"method": self.eigen_method, "max_iters": self.eigen_iters,
                           "tol": self.eigen_tol}
        tr_meta = meta | {"distribution": "rademacher"}
        if self.trace_rel_tol is not None:
            tr_meta |= {"rel_tol": self.trace_rel_tol, "max_samples": self.trace_max_samples}
        with eval_mode(model), sdpa_kernel([SDPBackend.MATH]):
            # The math attention kernel: the fused ones have no double backward.
            with torch.no_grad():
                loss = float(self.loss_fn(ctx.select(model(x)), y))
            model = ctx.output_model
            if not math.isfinite(loss):
                note = {"note": f"the loss on the probe data is {loss}"}
                return [Record("hessian_top_eigenvalue", math.nan, meta=eig_meta | note),
                        Record("hessian_trace", math.nan, meta=tr_meta | note)]
            eig = top_hessian_eigenvalue(
                model, self.loss_fn, x, y, iters=self.eigen_iters, tol=self.eigen_tol,
                method=self.eigen_method,
                generator=torch_generator(self.seed, "hessian_eigenvalue", ctx.step))
            tr = hessian_trace(
                model, self.loss_fn, x, y, samples=self.trace_samples,
                rel_tol=self.trace_rel_tol, max_samples=self.trace_max_samples,
                generator=torch_generator(self.seed, "hessian_trace", ctx.step),
                distribution="rademacher")
        tr_extra: dict[str, object] = {"samples": tr.samples,
                                       "std_error": _finite_or_none(tr.std_error)}
        if tr.converged is not None:
            tr_extra["converged"] = tr.converged
        return [
            Record("hessian_top_eigenvalue", eig.value, meta=eig_meta | {
                "iterations": eig.iterations, "converged": eig.converged,
                "residual": _finite_or_none(eig.residual)}),
            Record("hessian_trace", tr.value, meta=tr_meta | tr_extra),
        ]
