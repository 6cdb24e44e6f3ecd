"""ProbeSession: run probes during training, in memory (no store, no files).

::

    session = ProbeSession(model, probes, data=(x_probe, y_probe))   # measures step 0
    for epoch in range(epochs):
        for xb, yb in loader:
            ...                        # the training step, unchanged
            session.step(loss)         # once per optimizer step: runs the probes due now
        session.epoch()                # once per epoch (for per-epoch probes)
    records = session.close()          # final measurements; every record

:class:`learnscope.Scope` is a session plus the run store, ``result.json`` and the report.
A trainer that keeps its weights elsewhere (e.g. K models in one stacked tensor) copies them
into ``model`` before creating the session (step 0 is measured then) and before
:meth:`~ProbeSession.close`, and during training only when :meth:`~ProbeSession.due_at_step`
(or :meth:`~ProbeSession.due_at_epoch`) says a probe will read them; it still calls
:meth:`~ProbeSession.step` after every optimizer step (that call is cheap when nothing is due).

The model is never changed: probes read parameters and gradients, and activations come from
ONE shared capture pass per measurement (eval mode, ``torch.no_grad``, hooks always removed,
every module's train flag restored), whatever the number of probes due.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import torch
from torch import nn

from learnscope.measures._readonly import (
    OutputSelector,
    describe_output,
    eval_mode,
    on_model_device,
    select_output,
    uncompiled,
)
from learnscope.measures.gradients import parameter_snapshot
from learnscope.probes.base import LayerProbe, Probe, ProbeContext, capture
from learnscope.store.records import Record

__all__ = ["ProbeSession"]

SCALARS = "scalars"
"""The probe label of the records of ``step(**scalars)``."""
PROBE_FAILED = "probe_failed"
"""The key of the record left by a probe that raised during training."""
LOSS = "loss"
"""The key of the training loss passed to ``step(loss)`` (probe ``"scalars"``)."""
PENDING_LIMIT = 1024
"""Losses and tensor scalars are kept as tensors and converted to numbers in one batch (one
host synchronisation) when a probe runs, when the session closes, or after this many steps."""


class ProbeSession:
    """Runs probes on a model during training and keeps what they measure in memory.

    Args:
        model: the model being trained; it is read, never modified.
        probes: the probes to run; ``None`` means :func:`learnscope.probes.default_probes`.
        data: ``(inputs, targets)`` every probe measures on (a fixed held-out batch is
            typical: e.g. 512 test examples); ``targets`` may be None for probes that do
            not need them.
        on_records: called with every new batch of records, as they are measured (the
            :class:`~learnscope.Scope` stores and exports them this way).
        output: which part of the model's output the probes measure when the model returns
            a dict, a tuple or an object: a key (``"logits"``), an index (``0``) or a
            function of the output; ``None`` when it returns a tensor.

    A ``torch.compile``-d model is measured through its eager module (the same parameters):
    probes never call the compiled one, so they cannot make dynamo compile new graphs.

    Errors while the session starts (an unknown layer, missing probe data: a configuration
    mistake) raise. A probe that raises later, in :meth:`step`, :meth:`epoch` or
    :meth:`close`, does not end the training: it leaves a ``probe_failed`` record (value NaN,
    ``meta["error"]`` the message), a RuntimeWarning, and is switched off; the other probes
    carry on (``session.failed`` maps its label to the error).
    """

    def __init__(self, model: nn.Module, probes: Sequence[Probe] | None = None,
                 data: tuple[torch.Tensor, torch.Tensor | None] | None = None, *,
                 on_records: Callable[[list[Record]], None] | None = None,
                 output: OutputSelector = None) -> None:
        from learnscope.probes.defaults import default_probes

        if output is not None and not isinstance(output, str | int) and not callable(output):
            raise ValueError(f"output must be a key, an index or a function, got {output!r}")
        self.model = uncompiled(model)
        self.output = output
        self.probes = list(default_probes() if probes is None else probes)
        if not all(isinstance(p, Probe) for p in self.probes):
            raise TypeError("probes must be learnscope Probe instances")
        if len({id(p) for p in self.probes}) != len(self.probes):
            raise ValueError("the same probe instance is given twice; make a second one")
        self.inputs, self.targets = (data if data is not None else (None, None))
        if self.inputs is not None and self.targets is not None and \
                len(self.inputs) != len(self.targets):
            raise ValueError("probe inputs and targets have different lengths")
        self.labels = _unique_labels(self.probes)
        self.records: list[Record] = []
        self.timings: dict[str, float] = dict.fromkeys(self.labels, 0.0)
        self.timings["capture"] = 0.0
        self.step_count = 0
        self.epoch_count = 0
        self.failed: dict[str, str] = {}
        self._on_records = on_records
        self._closed = False
        self._last_loss: torch.Tensor | float | None = None
        self._scalars: dict[str, torch.Tensor | float] = {}
        # (step, epoch, key, value) not yet converted to floats (see PENDING_LIMIT)
        self._pending: list[tuple[int, int, str, torch.Tensor | float]] = []
        self._measured_at: dict[str, int] = {}
        self._active_cache: tuple[int, list[Probe]] | None = None
        self._next_due: float = 1  # the first step a probe may be due at (_next_due_after)
        self._init_state = parameter_snapshot(self.model)
        for p in self.probes:
            p.setup(self.model)
        self._check_model()
        self._run([p for p in self.probes if p.schedule.at_start()], strict=True)

    # -- the training loop's calls -------------------------------------------------------
    def step(self, loss: torch.Tensor | float | None = None, **scalars: float) -> None:
        """Call once after each optimizer step; runs the probes due at this step.

        ``loss`` is recorded at this step (key ``"loss"``, probe ``"scalars"``) and handed to
        the probes (``ctx.loss``); each keyword (e.g. ``lr=0.1``) is recorded the same way and
        handed to them in ``ctx.scalars``. Tensors are kept as they are and converted in
        batches (see ``PENDING_LIMIT``): no host synchronisation per step.
        """
        if self._closed:
            self._check_open()
        # The common call, step(a 0-d loss tensor), with the fewest tensor calls: each costs
        # ~1-5 us right after a training step (measured), a large part of this method.
        if type(loss) is torch.Tensor and not scalars and loss.dim() == 0:
            value: torch.Tensor | float | None = loss.detach()
            extra: Sequence[tuple[str, torch.Tensor | float]] = ()
        else:
            value = None if loss is None else _scalar(loss, "loss")  # checked before anything
            extra = [(k, _scalar(v, k)) for k, v in scalars.items()] if scalars else ()
        self.step_count += 1
        step, pending = self.step_count, self._pending
        if value is not None:
            self._last_loss = value
            pending.append((step, self.epoch_count, LOSS, value))
        for k, v in extra:
            self._scalars[k] = v
            pending.append((step, self.epoch_count, k, v))
        if step >= self._next_due:  # most steps stop here: nothing is due
            due = [p for p in self._active() if p.schedule.due_step(self.step_count)]
            if due:
                self._run(due)
            self._next_due = self._next_due_after(self.step_count)
        if len(self._pending) >= PENDING_LIMIT:
            self._flush_scalars()

    def epoch(self) -> None:
        """Call once after each epoch; runs the per-epoch probes."""
        self._check_open()
        self.epoch_count += 1
        due = [p for p in self._active() if p.schedule.due_epoch(self.epoch_count)]
        if due:
            self._run(due)

    def close(self, *, final: bool = True) -> list[Record]:
        """Final measurements (every probe's ``finish``; skipped with ``final=False``, e.g.
        when training failed); returns every record. Closing twice does nothing."""
        if not self._closed:
            self._closed = True
            self._flush_scalars()
            if final:
                # No capture pass for probes whose final state is already measured.
                self._run([p for label, p in zip(self.labels, self.probes, strict=True)
                           if label not in self.failed and (
                               type(p).finish is not Probe.finish
                               or self._measured_at.get(label) != self.step_count)],
                          final=True)
        return self.records

    def due_at_step(self, step: int) -> bool:
        """Whether any probe measures after optimizer step ``step`` (to copy weights into
        ``model`` only when needed)."""
        return any(p.schedule.due_step(step) for p in self._active())

    def due_at_epoch(self, epoch: int) -> bool:
        """Whether any probe measures after epoch ``epoch``."""
        return any(p.schedule.due_epoch(epoch) for p in self._active())

    @property
    def closed(self) -> bool:
        return self._closed

    def config(self) -> dict[str, Any]:
        """The model and every probe's label, class, cost, schedule and parameters."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"kind": "probes", "model": type(self.model).__name__, "parameters": n_params,
                "probe_data": None if self.inputs is None else list(self.inputs.shape),
                "probes": [{"label": label, "class": type(p).__name__, "cost": p.cost,
                            "schedule": str(p.schedule), "params": p.params()}
                           for label, p in zip(self.labels, self.probes, strict=True)]}

    # -- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this probe session is closed")

    def _next_due_after(self, step: int) -> float:
        """The first step after ``step`` at which an active probe is due (inf: none)."""
        steps = [p.schedule.next_due_step(step) for p in self._active()]
        return min((s for s in steps if s is not None), default=math.inf)

    def _active(self) -> list[Probe]:
        """The probes not switched off (kept until one fails: ``step`` asks every step)."""
        if self._active_cache is None or self._active_cache[0] != len(self.failed):
            self._active_cache = (len(self.failed), [
                p for label, p in zip(self.labels, self.probes, strict=True)
                if label not in self.failed])
        return self._active_cache[1]

    def _context(self, acts: dict[str, torch.Tensor], outputs: torch.Tensor | None,
                 final: bool) -> ProbeContext:
        loss = self._last_loss
        return ProbeContext(self.model, self.step_count, self.epoch_count, self.inputs,
                            self.targets, acts, outputs,
                            None if loss is None else _as_float(loss), self._init_state, final,
                            {k: _as_float(v) for k, v in self._scalars.items()}, self.output)

    def _flush_scalars(self) -> None:
        """Convert the pending losses and scalars to records, with one host synchronisation
        for all tensors on a device."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = _to_floats([v for _, _, _, v in pending])
        self._emit([Record(k, v, step, SCALARS, {"epoch": epoch})
                    for (step, epoch, k, _), v in zip(pending, values, strict=True)])

    def _check_model(self) -> None:
        """Refuse at construction, in one sentence, a model the probes cannot read: an output
        that is not a tensor (for probes that measure the output) or a layer that produces no
        tensor output with the batch first; default layers that produce none are left out."""
        layer_probes = [p for p in self.probes if isinstance(p, LayerProbe)]
        users = [label for label, p in zip(self.labels, self.probes, strict=True)
                 if p.uses_output()]
        inputs = self.inputs
        if inputs is None:  # a probe with its own inputs (e.g. PerExampleProbe)
            inputs = next((p.own_inputs() for p in self.probes if p.own_inputs() is not None),
                          None)
        if inputs is None or not (users or layer_probes):
            return
        x = inputs[:2]
        layers: list[str] = []
        for p in layer_probes:
            layers += [n for n in p.layers(self.model) if n not in layers]
        with torch.no_grad(), eval_mode(self.model), capture(self.model, layers) as captured:
            raw = self.model(on_model_device(self.model, x))
        if users:
            try:
                select_output(raw, self.output)
            except ValueError as e:
                raise ValueError(f"{e} (needed by {', '.join(users)})") from None
        acts = {n: a for n, a in captured.items() if a.shape[0] == x.shape[0]}
        modules = dict(self.model.named_modules())
        for p in layer_probes:
            names = p.layers(self.model)
            missing = [n for n in names if n not in acts]
            if p.layer_names is None:
                p.keep_layers([n for n in names if n in acts])
            elif missing:
                kind = type(modules[missing[0]]).__name__
                raise ValueError(f"{type(p).__name__}: layer {missing[0]!r} ({kind}) produces no "
                                 "tensor output with the batch on the first axis in a forward "
                                 "pass on the probe data; choose other layers")

    def _run(self, probes: Sequence[Probe], final: bool = False, strict: bool = False) -> None:
        """Measure ``probes`` now, after one shared capture pass if any of them needs it.

        With ``strict`` (when the session starts) an error raises; otherwise it switches the
        probe off (see the class docstring).
        """
        labelled = [(label, p) for label, p in zip(self.labels, self.probes, strict=True)
                    if any(p is q for q in probes)]
        layers: list[str] = []
        for _, p in labelled:
            if p.needs_activations:
                layers += [n for n in p.layers(self.model) if n not in layers]
        forward = [p for _, p in labelled if p.needs_activations or p.needs_outputs]
        acts: dict[str, torch.Tensor] = {}
        outputs = None
        capture_error: Exception | None = None
        output_error: Exception | None = None
        self._flush_scalars()  # a probe run synchronises anyway
        if self.inputs is not None and forward:
            t0 = time.perf_counter()
            try:
                with torch.no_grad(), eval_mode(self.model), \
                        capture(self.model, layers) as captured:
                    raw = self.model(on_model_device(self.model, self.inputs))
                acts = dict(captured)
                try:
                    outputs = select_output(raw, self.output)
                except ValueError as e:
                    output_error = e
            except Exception as e:
                if strict:
                    _raise_refusal("the capture pass", e)
                capture_error = e
            self.timings["capture"] += time.perf_counter() - t0
        ctx = self._context(acts, outputs, final)
        for label, p in labelled:
            if capture_error is not None and any(p is q for q in forward):
                self._fail(label, capture_error, "capture pass")
                continue
            if output_error is not None and p.needs_outputs:
                if strict:
                    raise output_error
                self._fail(label, output_error, "capture pass")
                continue
            t0 = time.perf_counter()
            try:
                recs = self._measure(label, p, ctx)
            except Exception as e:
                if strict:
                    _raise_refusal(f"probe {label!r}", e)
                self._fail(label, e, "finish" if final else "measure")
                continue
            finally:
                self.timings[label] += time.perf_counter() - t0
            self._emit([self._stamp(r, label) for r in recs])

    def _measure(self, label: str, p: Probe, ctx: ProbeContext) -> list[Record]:
        if not ctx.final:
            self._measured_at[label] = ctx.step
            return p.measure(ctx)
        if type(p).finish is not Probe.finish:
            return p.finish(ctx)
        return p.measure(ctx)  # by default the final state is measured once more

    def _fail(self, label: str, error: Exception, phase: str) -> None:
        message = f"{type(error).__name__}: {error}"
        self.failed[label] = message
        warnings.warn(f"probe {label!r} failed in {phase} at step {self.step_count} and is "
                      f"switched off (training and the other probes carry on): {message}",
                      RuntimeWarning, stacklevel=4)
        self._emit([Record(PROBE_FAILED, math.nan, self.step_count, label,
                           {"error": message, "phase": phase, "epoch": self.epoch_count})])

    def _stamp(self, r: Record, label: str) -> Record:
        """The record at the current step (or at ``meta['checkpoint_step']`` for values that
        a probe computes later about an earlier checkpoint), with its probe label and epoch."""
        step = r.meta.get("checkpoint_step", self.step_count)
        meta = r.meta if "epoch" in r.meta else r.meta | {"epoch": self.epoch_count}
        return Record(r.key, r.value, step, label, meta)

    def _emit(self, recs: list[Record]) -> None:
        if not recs:
            return
        self.records.extend(recs)
        if self._on_records is not None:
            self._on_records(recs)


def _unique_labels(probes: Sequence[Probe]) -> list[str]:
    labels, seen = [], {}
    for p in probes:
        n = seen.get(p.name, 0)
        seen[p.name] = n + 1
        labels.append(p.name if n == 0 else f"{p.name}-{n + 1}")
    return labels


def _as_float(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _scalar(value: Any, name: str) -> torch.Tensor | float:
    """A detached one-element tensor (not synchronised) or a float; ValueError otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.detach()
        return value if value.dim() == 0 else value.reshape(())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a one-element tensor, got "
                         f"{describe_output(value)}") from None


def _to_floats(values: list[torch.Tensor | float]) -> list[float]:
    """Floats of ``values``: the tensors of each device and dtype stacked and copied in one go
    (one host synchronisation per device); real CPU tensors are read one by one (no device to
    wait for, and ``item`` is ~4x cheaper than a stack of 0-d tensors)."""
    out: list[float | None] = [v if isinstance(v, float) else None for v in values]
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            if v.is_cpu and not v.is_complex():
                out[i] = float(v.item())
            else:
                groups.setdefault((v.device, v.dtype), []).append(i)
    for idx in groups.values():
        stacked = torch.stack([values[i] for i in idx])  # type: ignore[misc]
        for i, f in zip(idx, stacked.to(torch.float64).cpu().tolist(), strict=True):
            out[i] = f
    return [math.nan if f is None else f for f in out]


def _raise_refusal(what: str, error: Exception) -> NoReturn:
    """Raise an error met while the session starts as one sentence (the original chained);
    a ValueError (a configuration check) is one already."""
    if isinstance(error, ValueError):
        raise error
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    raise ValueError(f"{what} cannot run on this model ({type(error).__name__}: {first})") \
        from error
