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
                 flush_every: int = 5000, output: OutputSelector = None) -> None:
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
        return self.session.config()

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
        from learnscope.runner import versions

        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        result = {"kind": "probes", "study": self.name, "run_id": self.run_id, "status": status,
                  "config": self.config(), "steps": self.step_count, "epochs": self.epoch_count,
                  "records": len(self.records), "failed_probes": dict(self.session.failed),
                  "timings": {k: round(v, 4) for k, v in self.timings.items()},
                  "summary": _summary(self.records), "versions": versions()}
        tmp = self.run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.replace(self.run_dir / "result.json")
        if self.write_report:
            from learnscope.report.probe_report import write_probe_report

            write_probe_report(self.run_dir / "report.html", result, self.records)


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
