"""The Scope: attach probes to any PyTorch training loop in three lines, and keep a run.

::

    from learnscope import Scope

    scope = Scope(model, probes=default_probes(), data=(x_probe, y_probe), out="runs")
    for epoch in range(epochs):
        for xb, yb in loader:
            ...  # the user's own forward, backward and optimizer step
            scope.step(loss)          # once per optimizer step
        scope.epoch()                 # once per epoch (for per-epoch probes)
    scope.close()                     # final measurements, store, report

(or ``with Scope(...) as scope:``, which also closes it when the loop raises). A Scope is a
:class:`~learnscope.probes.session.ProbeSession` (which runs the probes, in memory) plus the
run store, ``result.json`` and ``report.html``; it sits beside the study runner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from learnscope.measures._readonly import OutputSelector
from learnscope.probes.base import Probe
from learnscope.probes.session import ProbeSession
from learnscope.store.records import Record


class Exporter(Protocol):
    """Receives every record as it is measured, e.g. :class:`~learnscope.probes.TensorBoardExporter`."""

    def write(self, records: Sequence[Record]) -> None: ...
    def close(self) -> None: ...


class Scope:
    """Runs probes on a user's model during training and stores what they measure.

    Args:
        model, probes, data: as for :class:`~learnscope.probes.session.ProbeSession` (the
            model is read, never modified; ``probes=None`` is the default set; ``data`` is
            the ``(inputs, targets)`` batch every probe measures on).
        out: results directory (the same store as studies); ``None`` keeps records in
            memory only (``scope.records``).
        name: the run's name in the store (its folder is ``out/<name>/<run-id>``).
        exporters: e.g. :class:`learnscope.probes.TensorBoardExporter`.
        report: write ``report.html`` when the scope closes.
        flush_every: write records to the store in batches of this many.
        output: which part of a dict/tuple model output the probes measure (a key, an
            index or a function; see :class:`~learnscope.probes.session.ProbeSession`).
        optimizer: the training's optimizer, read (never changed) for its kind, momentum and
            learning rate at every step (changes are kept in ``result.json``): the findings
            compare the sharpness with the stability threshold ``2 / lr``.
        lr: the learning rate, when no optimizer is given (taken as plain gradient descent).

    When it closes, the Scope computes *findings* from the records
    (:func:`~learnscope.analysis.findings.compute_findings`: loss curves, suspicious
    examples, layers that settled, edge of stability, gradient noise scale, weight-spectrum
    tails, gradient flow across depth, dead ReLU units), stores them in ``result.json``
    (``findings``, with what they were read from besides the records in
    ``findings_context``) and shows them in the report.

    ``step(loss)`` records the training loss at every step (key ``"loss"``, probe
    ``"scalars"``; tensors are converted in batches, without a host synchronisation per
    step). A probe that cannot read the model refuses when the Scope is created, with one
    sentence naming the layer or the output type.

    A probe that raises during training or in ``close()`` is switched off and recorded as
    failed (see :class:`~learnscope.probes.session.ProbeSession`); ``result.json`` lists it
    under ``failed_probes`` and the report shows the error. ``close()`` never raises for a
    probe or for the report: the user's code after it (saving the model) always runs.
    """

    def __init__(self, model: nn.Module, probes: Sequence[Probe] | None = None,
                 data: tuple[torch.Tensor, torch.Tensor | None] | None = None, *,
                 out: str | Path | None = "runs", name: str = "probes",
                 exporters: Sequence[Exporter] = (), report: bool = True,
                 flush_every: int = 5000, output: OutputSelector = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 lr: float | None = None) -> None:
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        if lr is not None and not (isinstance(lr, int | float) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.optimizer = optimizer
        self._lr_steps: list[list[float]] = []
        if lr is not None and optimizer is None:
            self._lr_steps = [[0, float(lr)]]
        self._read_lr(0)
        self.findings: list[Any] = []
        self.out = out
        self.name = name
        self.exporters = list(exporters)
        self.write_report = report
        self.flush_every = flush_every
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self._store: Any = None
        self._pending: list[Record] = []
        self._closed = False
        # The probes are set up (and their configuration checked) before any run is created.
        self.session = ProbeSession(model, probes, data, on_records=self._emit, output=output)
        if out is not None:
            from learnscope.store import RunStore

            self._store = RunStore(out)
            run = self._store.create_run(name, self.config())
            self.run_id, self.run_dir = run.run_id, run.run_dir
            self._flush()

    # -- what the session knows ----------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self.session.model

    @property
    def probes(self) -> list[Probe]:
        return self.session.probes

    @property
    def labels(self) -> list[str]:
        return self.session.labels

    @property
    def records(self) -> list[Record]:
        return self.session.records

    @property
    def timings(self) -> dict[str, float]:
        return self.session.timings

    @property
    def step_count(self) -> int:
        return self.session.step_count

    @property
    def epoch_count(self) -> int:
        return self.session.epoch_count

    def config(self) -> dict[str, Any]:
        cfg = self.session.config()
        optim = self._optimizer_info()
        if optim:
            cfg["optimizer"] = {k: v for k, v in optim.items() if k != "lr_steps"} | {
                "lr": optim["lr_steps"][0][1] if optim.get("lr_steps") else None}
        return cfg

    def _optimizer_info(self) -> dict[str, Any]:
        """Kind, momentum and learning-rate changes ``[[step, lr], ...]`` (first group)."""
        if self.optimizer is None:
            return {"lr_steps": self._lr_steps} if self._lr_steps else {}
        group = self.optimizer.param_groups[0]
        return {"optimizer": type(self.optimizer).__name__,
                "momentum": float(group.get("momentum", 0.0) or 0.0),
                "nesterov": bool(group.get("nesterov", False)),
                "dampening": float(group.get("dampening", 0.0) or 0.0),
                "param_groups": len(self.optimizer.param_groups), "lr_steps": self._lr_steps}

    def _read_lr(self, step: int) -> None:
        """Keep the optimizer's learning rate when it changed (no host sync for a device
        tensor lr: that one is read at the end only)."""
        if self.optimizer is None:
            return
        lr = self.optimizer.param_groups[0].get("lr")
        if isinstance(lr, torch.Tensor):
            if lr.device.type != "cpu":
                return
            lr = float(lr)
        if isinstance(lr, int | float) and (not self._lr_steps or self._lr_steps[-1][1] != lr):
            self._lr_steps.append([step, float(lr)])

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Scope:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    def step(self, loss: torch.Tensor | float | None = None, **scalars: float) -> None:
        """Call once after each optimizer step; runs the probes due at this step
        (see :meth:`ProbeSession.step <learnscope.probes.session.ProbeSession.step>`)."""
        if self._closed:
            raise RuntimeError("this Scope is closed")
        self.session.step(loss, **scalars)
        self._read_lr(self.session.step_count)

    def epoch(self) -> None:
        """Call once after each epoch; runs the per-epoch probes."""
        if self._closed:
            raise RuntimeError("this Scope is closed")
        self.session.epoch()

    def close(self) -> list[Record]:
        """Final measurements (every probe's ``finish``), flush to the store, write
        ``result.json`` and the report; returns every record."""
        if self._closed:
            return self.records
        try:
            self.session.close()
        except BaseException:
            # Keep what was measured and leave the run marked failed, then re-raise.
            self._abort("failed")
            raise
        self._finish("finished")
        return self.records

    # -- internals -----------------------------------------------------------------------
    def _emit(self, recs: list[Record]) -> None:
        for e in self.exporters:
            e.write(recs)
        if self.out is not None:  # kept until the store exists, then written in batches
            self._pending.extend(recs)
            if len(self._pending) >= self.flush_every:
                self._flush()

    def _flush(self) -> None:
        if self._store is not None and self._pending:
            self._store.append_records(self.run_id, "main", self._pending)
            self._pending = []

    def _abort(self, status: str) -> None:
        if self._closed:
            return
        self.session.close(final=False)
        self._finish(status)

    def _finish(self, status: str) -> None:
        self._closed = True
        self._flush()
        for e in self.exporters:
            try:
                e.close()
            except Exception as err:  # an exporter must not end the user's script
                _warn(f"exporter {type(e).__name__} failed to close: {err}")
        if self._store is not None:
            try:
                self._write_outputs(status)
            except Exception as err:
                _warn(f"the Scope could not write result.json or the report: "
                      f"{type(err).__name__}: {err}")
            self._store.set_run_status(self.run_id, status)
            self._store.close()

    def _write_outputs(self, status: str) -> None:
        from learnscope.versions import versions

        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        result = {"kind": "probes", "study": self.name, "run_id": self.run_id, "status": status,
                  "config": self.config(), "steps": self.step_count, "epochs": self.epoch_count,
                  "records": len(self.records), "failed_probes": dict(self.session.failed),
                  "timings": {k: round(v, 4) for k, v in self.timings.items()},
                  "summary": _summary(self.records), "versions": versions()}
        result |= self._findings(status)
        tmp = self.run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.replace(self.run_dir / "result.json")
        if self.write_report:
            from learnscope.report.probe_report import write_probe_report

            write_probe_report(self.run_dir / "report.html", result, self.records)


    def _findings(self, status: str) -> dict[str, Any]:
        """The findings and the context they were read from (never raises: a failure is
        reported under ``findings_error``)."""
        from learnscope.analysis.findings import compute_findings

        try:
            context = self._findings_context(final=status == "finished")
            self.findings = compute_findings(self.records, context)
            return {"findings": [c.to_dict() for c in self.findings],
                    "findings_context": context}
        except Exception as err:
            _warn(f"the Scope could not compute its findings: {type(err).__name__}: {err}")
            return {"findings": [], "findings_error": f"{type(err).__name__}: {err}"}

    def _findings_context(self, final: bool) -> dict[str, Any]:
        """What the findings need besides the records: the optimizer, and (after a finished
        run, from the final model) the suspicious examples' labels and predictions and the
        dead ReLU units on the probe data."""
        from learnscope.analysis.findings import dead_unit_counts
        from learnscope.measures._readonly import eval_mode, on_model_device, select_output
        from learnscope.probes.per_example import PerExampleProbe

        context: dict[str, Any] = {"optimizer": self._optimizer_info()}
        if not final:
            return context
        model, select = self.model, self.session.output
        examples: dict[str, dict[str, Any]] = {}
        inputs = self.session.inputs
        for label, probe in zip(self.labels, self.probes, strict=True):
            if not isinstance(probe, PerExampleProbe):
                continue
            inputs = probe.inputs if inputs is None else inputs
            idx = [int(r.value) for r in self.records
                   if r.probe == label and r.key == "suspicious_example"]
            if not idx:
                continue
            with torch.no_grad(), eval_mode(model):
                out = select_output(model(on_model_device(model, probe.inputs[idx])), select)
            pred = out.argmax(dim=1).cpu().tolist() if out.ndim == 2 else [None] * len(idx)
            examples[label] = {str(i): {"label": int(probe.targets[i]), "prediction": p}
                               for i, p in zip(idx, pred, strict=True)}
        context["examples"] = examples
        if inputs is not None:
            context["dead_units"] = dead_unit_counts(model, inputs[:4096])
        return context


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _summary(records: list[Record]) -> dict[str, Any]:
    """Last value of every (probe, key, layer) series, for result.json."""
    out: dict[str, Any] = {}
    for r in records:
        layer = r.meta.get("layer")
        name = f"{r.probe}/{r.key}" + (f"[{layer}]" if layer is not None else "")
        out[name] = None if math.isnan(r.value) else r.value
    return out
