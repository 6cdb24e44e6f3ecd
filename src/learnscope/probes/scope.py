"""The Scope: attach probes to any PyTorch training loop in three lines.

::

    scope = Scope(model, probes=default_probes(), data=(x_probe, y_probe), out="runs")
    for epoch in range(epochs):
        for xb, yb in loader:
            ...  # the user's own forward, backward and optimizer step
            scope.step(loss)          # once per optimizer step
        scope.epoch()                 # once per epoch (for per-epoch probes)
    scope.close()                     # final measurements, store, report

(or ``with Scope(...) as scope:``, which also closes it when the loop raises). The model is
never changed: probes read parameters and gradients, and activations come from one shared
capture pass in eval mode, under ``torch.no_grad``, with hooks that are always removed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from learnscope.probes.base import Probe as Probe
from learnscope.probes.base import ProbeContext, capture, eval_mode, snapshot_parameters
from learnscope.store.records import Record


class Exporter(Protocol):
    def write(self, records: Sequence[Record]) -> None: ...
    def close(self) -> None: ...


class Scope:
    """Runs probes on a user's model during training and stores what they measure.

    Args:
        model: the model being trained; it is read, never modified.
        probes: the probes to run; ``None`` means :func:`learnscope.probes.default_probes`.
        data: ``(inputs, targets)`` every probe measures on (a fixed held-out batch is
            typical: e.g. 512 test examples); ``targets`` may be None for probes that do
            not need them.
        out: results directory (the same store as studies); ``None`` keeps records in
            memory only (``scope.records``).
        name: the run's name in the store (its folder is ``out/<name>/<run-id>``).
        exporters: e.g. :class:`learnscope.probes.TensorBoardExporter`.
        report: write ``report.html`` when the scope closes.
    """

    def __init__(self, model: nn.Module, probes: Sequence[Probe] | None = None,
                 data: tuple[torch.Tensor, torch.Tensor | None] | None = None, *,
                 out: str | Path | None = "runs", name: str = "probes",
                 exporters: Sequence[Exporter] = (), report: bool = True,
                 flush_every: int = 5000) -> None:
        from learnscope.probes.defaults import default_probes

        self.model = model
        self.probes = list(default_probes() if probes is None else probes)
        if not all(isinstance(p, Probe) for p in self.probes):
            raise TypeError("probes must be learnscope Probe instances")
        self.inputs, self.targets = (data if data is not None else (None, None))
        if self.inputs is not None and self.targets is not None and \
                len(self.inputs) != len(self.targets):
            raise ValueError("probe inputs and targets have different lengths")
        self.labels = _unique_labels(self.probes)
        self.out = out
        self.name = name
        self.exporters = list(exporters)
        self.write_report = report
        self.flush_every = flush_every
        self.records: list[Record] = []
        self.timings: dict[str, float] = dict.fromkeys(self.labels, 0.0)
        self.timings["capture"] = 0.0
        self.step_count = 0
        self.epoch_count = 0
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self._pending: list[Record] = []
        self._store: Any = None
        self._init_state: dict[str, torch.Tensor] = {}
        self._opened = False
        self._closed = False
        self._last_loss: float | None = None
        self._measured_at: dict[str, int] = {}
        self.open()

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        self._opened = True
        if self.out is not None:
            from learnscope.store import RunStore

            self._store = RunStore(self.out)
            run = self._store.create_run(self.name, self.config())
            self.run_id, self.run_dir = run.run_id, run.run_dir
        self._init_state = snapshot_parameters(self.model)
        for p in self.probes:
            p.setup(self.model)
        self._run([p for p in self.probes if p.schedule.at_start()])

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    def step(self, loss: torch.Tensor | float | None = None) -> None:
        """Call once after each optimizer step; runs the probes due at this step."""
        self._check_open()
        self.step_count += 1
        if loss is not None:
            self._last_loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else \
                float(loss)
        due = [p for p in self.probes if p.schedule.due_step(self.step_count)]
        if due:
            self._run(due)

    def epoch(self) -> None:
        """Call once after each epoch; runs the per-epoch probes."""
        self._check_open()
        self.epoch_count += 1
        due = [p for p in self.probes if p.schedule.due_epoch(self.epoch_count)]
        if due:
            self._run(due)

    def close(self) -> None:
        """Final measurements (every probe's ``finish``), flush to the store, write the report."""
        if self._closed:
            return
        try:
            self._run(self.probes, final=True)
        except BaseException:
            # Keep what was measured and leave the run marked failed, then re-raise.
            self._abort("failed")
            raise
        self._flush()
        self._closed = True
        for e in self.exporters:
            e.close()
        if self._store is not None:
            self._write_outputs("finished")
            self._store.set_run_status(self.run_id, "finished")
            self._store.close()

    # -- internals -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"kind": "probes", "model": type(self.model).__name__, "parameters": n_params,
                "probe_data": None if self.inputs is None else list(self.inputs.shape),
                "probes": [{"label": label, "class": type(p).__name__, "cost": p.cost,
                            "schedule": str(p.schedule), "params": p.params()}
                           for label, p in zip(self.labels, self.probes, strict=True)]}

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Scope is closed")

    def _run(self, probes: Sequence[Probe], final: bool = False) -> None:
        layers: list[str] = []
        for p in probes:
            if p.needs_activations:
                layers += [n for n in p.layers(self.model) if n not in layers]
        wants_forward = self.inputs is not None and any(
            p.needs_activations or p.needs_outputs for p in probes)
        acts: dict[str, torch.Tensor] = {}
        outputs = None
        if wants_forward:
            t0 = time.perf_counter()
            inputs = self.inputs.to(_device(self.model))
            with torch.no_grad(), eval_mode(self.model), capture(self.model, layers) as acts:
                outputs = self.model(inputs)
            acts = dict(acts)
            self.timings["capture"] += time.perf_counter() - t0
        ctx = ProbeContext(self.model, self.step_count, self.epoch_count, self.inputs,
                           self.targets, acts, outputs, self._last_loss, self._init_state, final)
        for p in probes:
            label = self.labels[self.probes.index(p)]
            t0 = time.perf_counter()
            if not final:
                recs = p.measure(ctx)
                self._measured_at[label] = self.step_count
            elif type(p).finish is not Probe.finish:
                recs = p.finish(ctx)
            elif self._measured_at.get(label) != self.step_count:
                recs = p.measure(ctx)  # by default the final state is measured once more
            else:
                recs = []
            self.timings[label] += time.perf_counter() - t0
            self._emit([self._stamp(r, label) for r in recs])

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
        self._pending.extend(recs)
        for e in self.exporters:
            e.write(recs)
        if len(self._pending) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        if self._store is not None and self._pending:
            self._store.append_records(self.run_id, "main", self._pending)
        self._pending = []

    def _abort(self, status: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._flush()
        for e in self.exporters:
            e.close()
        if self._store is not None:
            self._write_outputs(status)
            self._store.set_run_status(self.run_id, status)
            self._store.close()

    def _write_outputs(self, status: str) -> None:
        from learnscope.runner import versions

        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        result = {"kind": "probes", "study": self.name, "run_id": self.run_id, "status": status,
                  "config": self.config(), "steps": self.step_count, "epochs": self.epoch_count,
                  "records": len(self.records),
                  "timings": {k: round(v, 4) for k, v in self.timings.items()},
                  "summary": _summary(self.records), "versions": versions()}
        tmp = self.run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.replace(self.run_dir / "result.json")
        if self.write_report:
            from learnscope.report.probe_report import write_probe_report

            write_probe_report(self.run_dir / "report.html", result, self.records)


def _unique_labels(probes: Sequence[Probe]) -> list[str]:
    labels, seen = [], {}
    for p in probes:
        n = seen.get(p.name, 0)
        seen[p.name] = n + 1
        labels.append(p.name if n == 0 else f"{p.name}-{n + 1}")
    return labels


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _summary(records: list[Record]) -> dict[str, Any]:
    """Last value of every (probe, key, layer) series, for result.json."""
    out: dict[str, Any] = {}
    for r in records:
        layer = r.meta.get("layer")
        name = f"{r.probe}/{r.key}" + (f"[{layer}]" if layer is not None else "")
        out[name] = None if math.isnan(r.value) else r.value
    return out
