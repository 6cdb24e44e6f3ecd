"""Gradient probes: gradient and update norms (cheap), gradient noise from per-example
gradients (expensive)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from learnscope.measures.gradients import (
    LossFn,
    gradient_noise,
    layer_gradient_norms,
    parameter_snapshot,
    parameter_update_norms,
    per_example_gradients,
    tensor_norms,
)
from learnscope.probes.base import Probe, ProbeContext, eval_mode
from learnscope.probes.checks import (
    check_bool,
    check_int,
    check_loss_fn,
    check_optional_int,
    check_schedule,
)
from learnscope.probes.schedule import Schedule, every, log_spaced
from learnscope.store.records import Record

__all__ = ["GradientNoiseProbe", "GradientStatsProbe", "refuse_unbatchable"]


UPDATE_KIND = "norm of the net change over the interval / over_steps"


class GradientStatsProbe(Probe):
    """Gradient norms and parameter-update sizes, read from what the training loop left.

    ``grad_norm``: the L2 norm of the ``.grad`` fields left by the user's last ``backward()``
    (the scope's ``step()`` runs after ``optimizer.step()`` and before the next
    ``zero_grad``), in total (``meta["parameter"] == "all"``) and, with ``per_layer``, per
    parameter (``meta["parameter"]`` is its name). Nothing is backpropagated; parameters
    without a gradient are skipped, and when no parameter has one nothing is recorded for
    gradients.

    ``update_norm`` and ``relative_update_norm``: the probe only runs at due steps, so it keeps
    a snapshot of the parameters from its previous measurement (step ``t - k``) and records
    ``||θ_t - θ_{t-k}|| / k`` and ``||θ_t - θ_{t-k}|| / (k ||θ_{t-k}||)`` with
    ``meta["over_steps"] == k``. For ``k == 1`` this is exactly the last optimizer step's
    update; for ``k > 1`` it is the size of the *mean* update per step over the interval, a
    lower bound on the mean per-step update norm (the two agree when successive updates point
    the same way; oscillating updates cancel). The first measurement after step 0 compares
    with the parameters when the scope opened. A parameter whose norm was 0 at the start of
    the interval (e.g. a zero-initialised bias) gets a NaN relative update with a note. The
    final state is measured when the scope closes unless the last step was already measured.
    The values are those of :func:`~learnscope.measures.gradients.layer_gradient_norms` and
    :func:`~learnscope.measures.gradients.parameter_update_norms` with ``precision=float32``:
    norms accumulated in the parameters' precision, at least float32 (about 1e-7 relative to
    the float64 defaults; a float32 overflow is redone in float64), for speed: this probe is
    in the default set.

    Cost: cheap (no forward pass: norms of the gradients, and one copy of the parameters kept
    between measurements; three host synchronisations per measurement).
    Sources: Glorot & Bengio 2010, Pascanu, Mikolov & Bengio 2013 (gradient norms per layer);
    You, Gitman & Ginsburg 2017 (LARS: update/weight ratio).

    Args:
        schedule: when to measure (default every 10 steps).
        per_layer: also record every parameter's values, not only the totals.
    """

    name = "gradient_stats"
    cost = "cheap"
    source = "Glorot & Bengio 2010; Pascanu et al. 2013; You et al. 2017"

    def __init__(self, *, schedule: Schedule | None = None, per_layer: bool = True) -> None:
        self.schedule = check_schedule(schedule, every(10))
        self.per_layer = check_bool(per_layer, "per_layer")
        self._before: dict[str, Tensor] | None = None
        self._before_step: int | None = None

    def setup(self, model: nn.Module) -> None:
        self._before = None
        self._before_step = None

    def measure(self, ctx: ProbeContext) -> list[Record]:
        fast = torch.float32  # see the class docstring
        grads = layer_gradient_norms(ctx.model, precision=fast)
        before, before_step = self._before, self._before_step
        if before is None and ctx.init_state and ctx.step > 0:
            before, before_step = ctx.init_state, 0
        recs: list[Record] = []
        if grads:
            recs.append(Record("grad_norm", _total(grads.values()), meta={"parameter": "all"}))
            if self.per_layer:
                recs += [Record("grad_norm", v, meta={"parameter": n}) for n, v in grads.items()]
        if before is not None and before_step is not None and ctx.step > before_step:
            now = {n: p for n, p in ctx.model.named_parameters() if n in before}
            start = {n: before[n] for n in now}
            if before is self._before:  # our own copy: differences taken in place, no copies
                sizes, diffs = _sizes_then_differences(start, now, fast)
            else:
                diffs = parameter_update_norms(start, now, precision=fast)
                sizes = tensor_norms({n: start[n] for n in diffs}, precision=fast)
            recs += self._update_records(diffs, sizes, ctx.step - before_step)
        self._before = _refreshed_snapshot(self._before, ctx.model)
        self._before_step = ctx.step
        return recs

    def _update_records(self, diffs: dict[str, float], sizes: dict[str, float],
                        k: int) -> list[Record]:
        meta = {"over_steps": k, "kind": UPDATE_KIND}
        recs: list[Record] = []
        rows = [("all", _total(diffs.values()), _total(sizes.values()))]
        if self.per_layer:
            rows += [(n, diffs[n], sizes[n]) for n in diffs]
        for name, diff, size in rows:
            m = meta | {"parameter": name}
            recs.append(Record("update_norm", diff / k, meta=m))
            if size > 0.0:
                recs.append(Record("relative_update_norm", diff / size / k, meta=m))
            else:
                recs.append(Record("relative_update_norm", math.nan, meta=m | {
                    "note": "parameter norm was 0 at the start of the interval"}))
        return recs


def refuse_unbatchable(model: nn.Module, who: str, what: str) -> None:
    """ValueError naming the first layer that ``torch.func.vmap`` cannot batch (nn.RNN and
    nn.GRU: their fused kernels fail under vmap; nn.LSTM works)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.RNN | nn.GRU):
            raise ValueError(f"{who} cannot compute {what} through layer {name!r} "
                             f"({type(module).__name__}), which torch.func.vmap cannot batch")


def _sizes_then_differences(start: dict[str, Tensor], now: dict[str, Tensor],
                            precision: torch.dtype) -> tuple[dict[str, float], dict[str, float]]:
    """Norms of ``start``, then of ``now - start``; ``start`` (the probe's own snapshot) is
    overwritten with ``start - now`` where the dtypes let that be exact enough: float32 and
    float64 tensors take the difference in their own precision, as
    :func:`~learnscope.measures.gradients.parameter_update_norms` does; the others (e.g.
    bfloat16, whose difference it takes in float32) go through that function."""
    sizes = tensor_norms(start, precision=precision)
    in_place = [n for n in start if start[n].dtype in (torch.float32, torch.float64)
                and start[n].dtype == now[n].dtype and start[n].device == now[n].device]
    if in_place:
        torch._foreach_sub_([start[n] for n in in_place], [now[n].detach() for n in in_place])
    diffs = tensor_norms({n: start[n] for n in in_place}, precision=precision)
    rest = [n for n in start if n not in diffs]
    if rest:
        diffs |= parameter_update_norms({n: start[n] for n in rest}, {n: now[n] for n in rest},
                                        precision=precision)
    return sizes, {n: diffs[n] for n in start}


def _refreshed_snapshot(snapshot: dict[str, Tensor] | None, model: nn.Module
                        ) -> dict[str, Tensor]:
    """``parameter_snapshot(model)``, reusing the buffers of ``snapshot`` when they fit."""
    params = dict(model.named_parameters())
    if snapshot is None or snapshot.keys() != params.keys() or any(
            snapshot[n].shape != p.shape or snapshot[n].dtype != p.dtype
            or snapshot[n].device != p.device for n, p in params.items()):
        return parameter_snapshot(model)
    torch._foreach_copy_([snapshot[n] for n in params], [p.detach() for p in params.values()])
    return snapshot


def _total(norms: Iterable[float]) -> float:
    """The norm of the concatenation, from the parts' norms."""
    return math.sqrt(math.fsum(v * v for v in norms))


class GradientNoiseProbe(Probe):
    """Gradient signal-to-noise ratio and the gradient noise scale from per-example gradients.

    On the first ``n_examples`` of the probe data, the gradient of ``loss_fn`` on every
    example alone is computed with ``torch.func`` (``vmap(grad)``), and from these ``g_i``:
    ``mean_grad_norm_sq`` ``||ḡ||²``, ``trace_covariance`` ``tr Σ̂`` (unbiased), ``grad_snr``
    ``||ḡ||² / tr Σ̂``, the simple noise scale ``grad_noise_scale`` ``B_simple = tr Σ̂ / ||ḡ||²``
    (McCandlish et al. 2018; the critical batch size is about ``B_simple``), and the
    bias-corrected ``mean_grad_norm_sq_unbiased`` ``||ḡ||² - tr Σ̂ / n`` with
    ``grad_noise_scale_unbiased`` ``tr Σ̂ / (||ḡ||² - tr Σ̂ / n)`` (NaN with a note when the
    corrected signal is <= 0: the noise dominates at this ``n``).

    The gradients are those of the *eval-mode* network (dropout off, BatchNorm with its
    running statistics): per-example gradients are not defined with batch statistics, and
    dropout would make the loss random. The model is put in eval mode for the measurement
    and every module's flag is restored after. Non-finite gradients (a diverged run) give
    NaN values with a note instead of an error. The final state is measured when the scope
    closes unless the last step was already measured.

    Cost: expensive (one per-example backward pass over ``n_examples``; memory
    ``n_examples`` times the parameter count, bounded with ``chunk_size``).
    Sources: McCandlish, Kaplan, Amodei et al. 2018 (gradient noise scale); the torch.func
    per-sample-gradient recipe.

    Args:
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, e.g. ``F.cross_entropy``; applied to
            one example at a time.
        schedule: when to measure (default log-spaced, 3 per decade).
        n_examples: how many probe examples (the first ones); at least 2.
        chunk_size: forwarded to ``vmap`` to bound memory (None: all at once).
    """

    name = "gradient_noise"
    cost = "expensive"
    source = "McCandlish et al. 2018"

    def __init__(self, loss_fn: LossFn, *, schedule: Schedule | None = None,
                 n_examples: int = 64, chunk_size: int | None = None) -> None:
        self.loss_fn = check_loss_fn(loss_fn)
        self.schedule = check_schedule(schedule, log_spaced(3))
        self.n_examples = check_int(n_examples, "n_examples", 2)
        self.chunk_size = check_optional_int(chunk_size, "chunk_size", 1)

    def setup(self, model: nn.Module) -> None:
        refuse_unbatchable(model, "GradientNoiseProbe", "per-example gradients")

    def uses_output(self) -> bool:
        return True

    def measure(self, ctx: ProbeContext) -> list[Record]:
        x, y = ctx.labelled_batch("GradientNoiseProbe", self.n_examples)
        n = int(x.shape[0])
        if n < 2:
            raise ValueError(f"GradientNoiseProbe needs at least 2 probe examples, got {n}")
        with eval_mode(ctx.model):
            grads = per_example_gradients(ctx.output_model, self.loss_fn, x, y,
                                          chunk_size=self.chunk_size)
        meta = {"n_examples": n, "mode": "eval"}
        keys = {
            "mean_grad_norm_sq": "plug-in ||mean g||^2",
            "trace_covariance": "unbiased tr Cov(g), ddof=1",
            "grad_snr": "||mean g||^2 / tr Cov(g)",
            "grad_noise_scale": "B_simple = tr Cov(g) / ||mean g||^2 (McCandlish 2018)",
            "mean_grad_norm_sq_unbiased": "||mean g||^2 - tr Cov(g) / n",
            "grad_noise_scale_unbiased": "tr Cov(g) / (||mean g||^2 - tr Cov(g) / n)",
        }
        if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
            return [Record(k, math.nan, meta=meta | {
                "estimator": est, "note": "non-finite per-example gradients"})
                for k, est in keys.items()]
        res = gradient_noise(grads)
        values = {
            "mean_grad_norm_sq": res.mean_grad_norm_sq,
            "trace_covariance": res.trace_covariance,
            "grad_snr": res.snr,
            "grad_noise_scale": res.noise_scale,
            "mean_grad_norm_sq_unbiased": res.mean_grad_norm_sq_unbiased,
            "grad_noise_scale_unbiased": res.noise_scale_unbiased,
        }
        recs = []
        for key, est in keys.items():
            m = meta | {"estimator": est}
            value = values[key]
            if key == "grad_noise_scale_unbiased" and not res.mean_grad_norm_sq_unbiased > 0:
                value = math.nan
                m["note"] = "bias-corrected ||E g||^2 estimate is <= 0 (noise dominates)"
            elif not math.isfinite(value):
                value = math.nan
                m["note"] = "zero denominator"
            recs.append(Record(key, value, meta=m))
        return recs
