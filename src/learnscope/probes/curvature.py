"""Curvature probe: top Hessian eigenvalue (sharpness) and Hutchinson trace of the loss."""

from __future__ import annotations

import math

import torch

from learnscope.measures.curvature import hessian_trace, top_hessian_eigenvalue
from learnscope.measures.gradients import LossFn
from learnscope.probes.base import Probe, ProbeContext, eval_mode
from learnscope.probes.checks import check_int, check_loss_fn, check_number, check_schedule
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.seeding import torch_generator
from learnscope.store.records import Record

__all__ = ["CurvatureProbe"]


class CurvatureProbe(Probe):
    """The largest Hessian eigenvalue ("sharpness") and the Hessian trace of the loss.

    On the first ``n_examples`` of the probe data, the Hessian of the batch loss
    ``loss_fn(model(x), y)`` with respect to the trainable parameters is probed with exact
    Hessian-vector products (double backward, Pearlmutter 1994):

    - ``hessian_top_eigenvalue``: power iteration from a Gaussian start (at most
      ``power_iters`` products, stopping when the relative change is <= ``tol``); meta
      ``iterations``, ``converged``, ``tol``. Power iteration finds the eigenvalue of largest
      *magnitude*, which is the top eigenvalue whenever that dominates (the usual case in
      training; negative values mean a dominant negative direction).
    - ``hessian_trace``: Hutchinson's estimator with ``trace_samples`` Rademacher vectors;
      meta ``samples``, ``std_error`` (standard error of the mean), ``distribution``.

    Compare the sharpness with ``2 / learning_rate`` to see progressive sharpening and the
    edge of stability of full-batch gradient descent (Cohen et al. 2021).

    The Hessian is the one of the *eval-mode* network: the model is put in eval mode for the
    measurement (every module's flag is restored after), so dropout is off and BatchNorm uses
    its running statistics. The random vectors come from generators seeded by
    ``learnscope.seeding.torch_generator(seed, "hessian_eigenvalue", step)`` and
    ``(seed, "hessian_trace", step)``: deterministic, and the global RNG is untouched. A
    non-finite loss (a diverged run) gives NaN values with a note instead of an error. The
    final state is measured when the scope closes unless the last step was already measured.

    Cost: expensive (up to ``power_iters + trace_samples`` Hessian-vector products, each
    about two backward passes over ``n_examples``).
    Sources: Yao, Gholami, Keutzer & Mahoney 2020 (PyHessian); Hutchinson 1990; Cohen, Kaur,
    Li, Kolter & Talwalkar 2021 (edge of stability).

    Args:
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, e.g. ``F.cross_entropy``.
        schedule: when to measure (default log-spaced, 2 per decade).
        n_examples: how many probe examples (the first ones) define the loss.
        power_iters: the most Hessian-vector products for the eigenvalue.
        tol: relative tolerance of the power iteration.
        trace_samples: Rademacher vectors for the trace.
        seed: seed of the random vectors (combined with the step).
    """

    name = "curvature"
    cost = "expensive"
    source = "Yao et al. 2020 (PyHessian); Hutchinson 1990; Cohen et al. 2021"

    def __init__(self, loss_fn: LossFn, *, schedule: Schedule | None = None,
                 n_examples: int = 256, power_iters: int = 50, tol: float = 1e-3,
                 trace_samples: int = 20, seed: int = 0) -> None:
        self.loss_fn = check_loss_fn(loss_fn)
        self.schedule = check_schedule(schedule, log_spaced(2))
        self.n_examples = check_int(n_examples, "n_examples", 1)
        self.power_iters = check_int(power_iters, "power_iters", 1)
        self.tol = check_number(tol, "tol", low=0.0)
        self.trace_samples = check_int(trace_samples, "trace_samples", 1)
        self.seed = check_int(seed, "seed", 0)

    def measure(self, ctx: ProbeContext) -> list[Record]:
        x, y = ctx.labelled_batch("CurvatureProbe", self.n_examples)
        model = ctx.model
        meta = {"n_examples": int(x.shape[0]), "seed": self.seed, "mode": "eval"}
        eig_meta = meta | {"power_iters": self.power_iters, "tol": self.tol}
        tr_meta = meta | {"samples": self.trace_samples, "distribution": "rademacher"}
        with eval_mode(model):
            with torch.no_grad():
                loss = float(self.loss_fn(model(x), y))
            if not math.isfinite(loss):
                note = {"note": f"the loss on the probe data is {loss}"}
                return [Record("hessian_top_eigenvalue", math.nan, meta=eig_meta | note),
                        Record("hessian_trace", math.nan, meta=tr_meta | note)]
            eig = top_hessian_eigenvalue(
                model, self.loss_fn, x, y, iters=self.power_iters, tol=self.tol,
                generator=torch_generator(self.seed, "hessian_eigenvalue", ctx.step))
            tr = hessian_trace(
                model, self.loss_fn, x, y, samples=self.trace_samples,
                generator=torch_generator(self.seed, "hessian_trace", ctx.step),
                distribution="rademacher")
        std_error = tr.std_error if math.isfinite(tr.std_error) else None
        return [
            Record("hessian_top_eigenvalue", eig.value, meta=eig_meta | {
                "iterations": eig.iterations, "converged": eig.converged}),
            Record("hessian_trace", tr.value, meta=tr_meta | {"std_error": std_error}),
        ]
