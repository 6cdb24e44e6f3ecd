"""NTK probe: the empirical neural tangent kernel during training and how it ages."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from learnscope.measures._readonly import with_output
from learnscope.measures.ntk import empirical_ntk, input_sensitivity, ntk_summary
from learnscope.probes.base import Probe, ProbeContext
from learnscope.probes.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_schedule,
)
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.store.records import Record

__all__ = ["NTKProbe"]

_REDUCE = ("trace", "none")


class NTKProbe(Probe):
    """The empirical NTK ``K_t = J_t J_t^T`` on the first ``n_inputs`` probe inputs and its
    summary: trace, trace relative to the kernel at initialisation (``tr K_t / tr K_0``: a
    constant response in the lazy / NTK regime, a decay "aging" away from it), kernel width
    (fraction of input pairs whose normalised kernel ``K_ij / sqrt(K_ii K_jj)`` exceeds
    ``width_threshold``: how far one SGD step on one input moves the outputs at others) and
    effective rank.

    This is the training response of Nakazato 2024 operationalised through the NTK: one SGD
    step of size ``lr`` on ``x'`` changes ``f(x)`` by ``-lr dL/df(x') K_t(x, x')`` to first
    order, so ``tr K_t / tr K_0`` tracks the response magnitude and the width its specificity
    (our reading of the abstract of Nakazato 2024, arXiv 2405.04074, not a reproduction of
    the paper's own model).

    ``K_0`` is computed once, from the parameters the scope saw when it opened
    (``ctx.init_state``) and the buffers at ``setup``, on the same inputs, also when the first
    measurement comes later (e.g. ``schedule=at_end()``), using a temporary copy of the model.
    The kernel is computed in eval mode with ``torch.func`` on detached parameters; the model is
    not changed.

    Records (meta ``{"n_inputs", "reduce"}``): ``ntk_trace``, ``ntk_trace_ratio``,
    ``ntk_kernel_width`` (+ ``"width_threshold"``), ``ntk_effective_rank``. The final state
    is measured when the session closes unless the last scheduled step already was. NaN with
    ``meta["note"]`` when the parameters are non-finite (training diverged), for the effective
    rank of an all-zero kernel, and for the ratio when ``K_0`` has zero trace. With
    ``input_sensitivity=True`` also ``input_sensitivity``: the mean squared norm of the
    input-output Jacobian on the same inputs (first-order output change per unit variance of
    small input noise: the fragility to input perturbations).

    Memory: the per-example Jacobians, ``n_inputs x outputs x parameters`` floats (32 inputs,
    10 outputs, 100k parameters: 128 MB in float32); lower ``n_inputs`` for large models.

    Cost: expensive (one Jacobian per input per measurement; no shared capture pass needed).
    Sources: Jacot, Gabriel & Hongler 2018 (NTK); Fort et al. 2020 (empirical kernel during
    training); Nakazato 2024, arXiv 2405.04074 (training response, aging); Roy & Vetterli 2007
    (effective rank).

    Args:
        n_inputs: how many of the scope's probe inputs (the first ones) the kernel is taken on.
        schedule: when to measure.
        reduce: ``"trace"`` sums the kernel over the outputs (``n x n``); ``"none"`` keeps the
            full ``(n k) x (n k)`` kernel (width and rank then count output pairs too).
        width_threshold: normalised-kernel level above which a pair counts as "wide".
        input_sensitivity: also record the input sensitivity (off by default).
    """

    name = "ntk"
    cost = "expensive"
    source = "Jacot et al. 2018; Fort et al. 2020; Nakazato 2024"
    needs_activations = False

    def __init__(self, n_inputs: int = 32, *, schedule: Schedule | None = None,
                 reduce: str = "trace", width_threshold: float = 0.5,
                 input_sensitivity: bool = False) -> None:
        self.n_inputs = check_int(n_inputs, "n_inputs", 2)
        self.schedule = check_schedule(schedule, log_spaced(3))
        self.reduce = check_choice(reduce, "reduce", _REDUCE)
        self.width_threshold = check_number(width_threshold, "width_threshold")
        self.input_sensitivity = check_bool(input_sensitivity, "input_sensitivity")
        self._init_buffers: dict[str, torch.Tensor] = {}
        self._k0: torch.Tensor | None = None

    def uses_output(self) -> bool:
        return True

    def setup(self, model: nn.Module) -> None:
        from learnscope.probes.gradients import refuse_unbatchable

        refuse_unbatchable(model, "NTKProbe", "per-example Jacobians")
        self._init_buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self._k0 = None

    # -- measuring -------------------------------------------------------------------------
    def _inputs(self, ctx: ProbeContext) -> torch.Tensor:
        x = ctx.input_batch("NTKProbe", self.n_inputs)
        if x.shape[0] < 2:
            raise ValueError(f"NTKProbe needs at least 2 probe inputs, got {x.shape[0]}")
        return x

    def _kernel(self, model: nn.Module, x: torch.Tensor, ctx: ProbeContext) -> torch.Tensor:
        model = with_output(model, ctx.output_selector)
        return empirical_ntk(model, x, reduce=self.reduce).detach().to("cpu", torch.float64)

    def _initial_kernel(self, ctx: ProbeContext, x: torch.Tensor,
                        k_now: torch.Tensor) -> torch.Tensor:
        """K_0 on ``x``: ``k_now`` while the model is still at its initial state, otherwise
        the kernel of a temporary copy loaded with the initial parameters and buffers."""
        params = dict(ctx.model.named_parameters())
        init = {n: v for n, v in ctx.init_state.items() if n in params}
        unchanged = all(torch.equal(params[n].detach(), v.to(params[n].device))
                        for n, v in init.items())
        buffers = dict(ctx.model.named_buffers())
        unchanged = unchanged and all(torch.equal(buffers[n], v)
                                      for n, v in self._init_buffers.items() if n in buffers)
        if unchanged:
            return k_now
        clone = copy.deepcopy(ctx.model)
        with torch.no_grad():
            for n, p in clone.named_parameters():
                p.grad = None
                if n in init:
                    p.copy_(init[n])
            for n, b in clone.named_buffers():
                if n in self._init_buffers:
                    b.copy_(self._init_buffers[n])
        k0 = self._kernel(clone, x, ctx)
        del clone
        return k0

    def measure(self, ctx: ProbeContext) -> list[Record]:
        records = self._measure_kernel(ctx)
        if not self.input_sensitivity:
            return records
        x = self._inputs(ctx)
        meta = {"n_inputs": x.shape[0]}
        if not all(bool(torch.isfinite(p).all()) for p in ctx.model.parameters()):
            return records + [Record("input_sensitivity", math.nan, meta=meta | {
                "note": "non-finite parameters (training diverged): sensitivity undefined"})]
        model = with_output(ctx.model, ctx.output_selector)
        return records + [Record("input_sensitivity", input_sensitivity(model, x), meta=meta)]

    def _measure_kernel(self, ctx: ProbeContext) -> list[Record]:
        x = self._inputs(ctx)
        n = x.shape[0]
        meta: dict[str, Any] = {"n_inputs": n, "reduce": self.reduce}
        width_meta = meta | {"width_threshold": self.width_threshold}
        if not all(bool(torch.isfinite(p).all()) for p in ctx.model.parameters()):
            note = {"note": "non-finite parameters (training diverged): NTK undefined"}
            return [Record("ntk_trace", math.nan, meta=meta | note),
                    Record("ntk_trace_ratio", math.nan, meta=meta | note),
                    Record("ntk_kernel_width", math.nan, meta=width_meta | note),
                    Record("ntk_effective_rank", math.nan, meta=meta | note)]
        k = self._kernel(ctx.model, x, ctx)
        if self._k0 is None or self._k0.shape != k.shape:  # once (the probe data are fixed)
            self._k0 = self._initial_kernel(ctx, x, k)
        tr0 = float(torch.trace(self._k0))
        k0 = self._k0 if tr0 > 0 else None
        ratio_meta = dict(meta) if k0 is not None else \
            meta | {"note": "the NTK at initialisation has zero trace: ratio undefined"}
        if not bool(k.any()):
            rank_meta = meta | {"note": "all-zero kernel: effective rank undefined"}
            return [Record("ntk_trace", 0.0, meta=dict(meta)),
                    Record("ntk_trace_ratio", 0.0 if k0 is not None else math.nan,
                           meta=ratio_meta),
                    Record("ntk_kernel_width", 0.0, meta=width_meta),
                    Record("ntk_effective_rank", math.nan, meta=rank_meta)]
        s = ntk_summary(k, k0, width_threshold=self.width_threshold)
        ratio = s.trace_ratio_to_init if s.trace_ratio_to_init is not None else math.nan
        return [Record("ntk_trace", s.trace, meta=dict(meta)),
                Record("ntk_trace_ratio", ratio, meta=ratio_meta),
                Record("ntk_kernel_width", s.kernel_width, meta=width_meta),
                Record("ntk_effective_rank", s.effective_rank, meta=dict(meta))]
