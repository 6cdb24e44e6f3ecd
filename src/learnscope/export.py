"""Export a stored run after the fact: a tidy table (CSV, parquet), TensorBoard event files and
the report's figures as image files.

Everything is read from the run store (``OUT/learnscope.db``), so it works for study runs and
probe runs alike, finished, failed or interrupted::

    from learnscope import export

    export.to_csv("runs/double-descent/<run-id>", "dd.csv")
    export.to_parquet("runs/my-mlp/<run-id>", "probes.parquet")      # needs pyarrow
    export.to_tensorboard("runs/double-descent/<run-id>", "tb")       # needs tensorboard
    export.figures("runs/double-descent/<run-id>", "figures", fmt="svg")  # needs kaleido

The same from the command line: ``learnscope export RUN_DIR --csv FILE`` (``--parquet FILE``,
``--tensorboard DIR``, ``--figures DIR --format png``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from learnscope.errors import LearnscopeError
from learnscope.store.records import Record, TrialResult
from learnscope.store.sqlite import RunInfo, opened_run

__all__ = ["FIGURE_FORMATS", "figures", "records_table", "tensorboard_tag", "to_csv",
           "to_parquet", "to_tensorboard"]

PathLike = str | os.PathLike[str]

FIGURE_FORMATS = ("png", "svg", "pdf")

# Metadata that names which series a value belongs to; always part of a TensorBoard tag when
# present (the same names, in the same order, as the live TensorBoardExporter uses).
_SERIES_META = ("layer", "parameter", "subset", "layer_a", "layer_b", "alpha", "feature")
_MAX_DIR_NAME = 120


# -- reading a run -------------------------------------------------------------------------
def _stored_run(run_dir: PathLike) -> tuple[RunInfo, list[TrialResult]]:
    """The run stored for ``run_dir`` and its trials; LearnscopeError (one line) when the
    folder is not a run of a learnscope store."""
    with opened_run(run_dir) as (store, run):
        trials = store.load_trials(run.run_id)
        if run.config.get("kind") == "probes" and not trials:
            # A Scope appends its records to one live trial that has no trial row.
            trials = [TrialResult("main", {}, run.status, store.load_records(run.run_id))]
    return run, trials


def records_table(run_dir: PathLike) -> pd.DataFrame:
    """The run's records as one tidy table: ``trial, step, probe, key, value``, a column per
    metadata field (``meta.<name>`` where the name is taken), the trial's spec fields, and
    ``run_id``, ``study`` (the layout of :func:`learnscope.load`'s ``records``)."""
    from learnscope.store.frames import records_frame, trials_frame

    run, trials = _stored_run(run_dir)
    records = records_frame(trials)
    spec = trials_frame(trials).drop(columns=["status", "wall_s"]).reset_index(drop=True)
    return records.merge(spec, on="trial", how="left").assign(run_id=run.run_id, study=run.study)


def _portable(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns a file format can hold: a column whose values are all text, all booleans or all
    numbers stays as it is; any other (lists, mixed types) becomes JSON text per cell."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        values = [v for v in out[col] if v is not None and not _is_nan(v)]
        kinds = {_kind(v) for v in values}
        if len(kinds) <= 1 and kinds <= {"str", "bool", "number"}:
            continue
        out[col] = [None if v is None or _is_nan(v) else json.dumps(_plain(v)) for v in out[col]]
    return out


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return "str" if isinstance(v, str) else "other"


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


# -- tables --------------------------------------------------------------------------------
def to_csv(run_dir: PathLike, path: PathLike) -> Path:
    """Write the run's records (:func:`records_table`) as CSV; list values and columns of
    mixed types as JSON text. Numbers are written in full precision (``pandas.read_csv``
    reads them back exactly)."""
    path = Path(path)
    table = _portable(records_table(run_dir))
    _parent(path)
    table.to_csv(path, index=False)
    return path


def to_parquet(run_dir: PathLike, path: PathLike) -> Path:
    """Write the run's records (:func:`records_table`) as parquet (needs pyarrow:
    ``pip install 'learnscope[export]'``); list values and columns of mixed types as JSON
    text."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LearnscopeError("parquet export needs pyarrow: pip install 'learnscope[export]'"
                              ) from None
    path = Path(path)
    table = _portable(records_table(run_dir))
    _parent(path)
    table.to_parquet(path, index=False, engine="pyarrow")
    return path


def _parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LearnscopeError(f"cannot create {path.parent}: {exc.strerror or exc}") from None


# -- TensorBoard ---------------------------------------------------------------------------
def tensorboard_tag(record: Record, series_meta: Sequence[str] = _SERIES_META) -> str:
    """``<probe>/<key>[/<name>=<value> for each series field]``, e.g.
    ``gradient_stats/grad_norm/layer=0``."""
    parts = [record.probe or "learnscope", record.key]
    parts += [f"{k}={record.meta[k]}" for k in series_meta if k in record.meta]
    return "/".join(str(p) for p in parts)


def _series_fields(records: Sequence[Record]) -> list[str]:
    """The metadata fields that tell the series of one (probe, key) apart: the usual series
    fields (layer, ...), then any other scalar field that still separates two values at the
    same step (so that every tag holds one value per step)."""
    present = [k for k in _SERIES_META if any(k in r.meta for r in records)]
    candidates = sorted({k for r in records for k, v in r.meta.items()
                         if k not in _SERIES_META and isinstance(v, str | int | float | bool)
                         and v is not None})
    fields = list(present)

    def groups() -> dict[tuple[Any, ...], list[Record]]:
        out: dict[tuple[Any, ...], list[Record]] = defaultdict(list)
        for r in records:
            out[(r.step, *(str(r.meta.get(k)) for k in fields))].append(r)
        return out

    for k in candidates:
        if any(len({str(r.meta.get(k)) for r in rs}) > 1 for rs in groups().values()):
            fields.append(k)
    return fields


def _trial_dir_names(trials: Sequence[TrialResult]) -> dict[str, str]:
    """One folder name per trial from its spec: the fields that differ between the run's
    trials (all fields when one trial), as ``name=value,...``; unique and filesystem-safe."""
    fields = sorted({k for t in trials for k in t.spec})
    varying = [k for k in fields
               if len({json.dumps(t.spec.get(k), sort_keys=True) for t in trials}) > 1]
    names: dict[str, str] = {}
    for t in trials:
        shown = varying or fields
        text = ",".join(f"{k}={_spec_text(t.spec.get(k))}" for k in shown) or t.key
        name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
        if len(name) > _MAX_DIR_NAME:
            digest = hashlib.sha1(name.encode()).hexdigest()[:8]
            name = f"{name[:_MAX_DIR_NAME]}-{digest}"
        if name in names.values():
            name = f"{name}-{t.key[:8]}"
        names[t.key] = name
    return names


def _spec_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"))


def to_tensorboard(run_dir: PathLike, log_dir: PathLike) -> Path:
    """Write every finite scalar record as a TensorBoard scalar, tag ``<probe>/<key>[/<series
    field>=<value>...]`` (:func:`tensorboard_tag`), at its own step. A probe run goes into
    ``log_dir`` itself; a study run gets one sub-folder per trial, named by its spec (the
    fields that differ between trials). Needs tensorboard: ``pip install tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LearnscopeError("TensorBoard export needs the tensorboard package: "
                              "pip install tensorboard") from None
    run, trials = _stored_run(run_dir)
    log_dir = Path(log_dir)
    _parent(log_dir / "x")
    is_probe_run = run.config.get("kind") == "probes"
    names = {} if is_probe_run else _trial_dir_names(trials)
    for t in trials:
        writer = SummaryWriter(log_dir=str(log_dir if is_probe_run else log_dir / names[t.key]))
        try:
            by_series: dict[tuple[str, str], list[Record]] = defaultdict(list)
            for r in t.records:
                by_series[(r.probe, r.key)].append(r)
            for recs in by_series.values():
                fields = _series_fields(recs)
                for r in recs:
                    if math.isfinite(r.value):
                        writer.add_scalar(tensorboard_tag(r, fields), r.value, global_step=r.step)
        finally:
            writer.flush()
            writer.close()
    return log_dir


# -- figures -------------------------------------------------------------------------------
def _figures_of(run_dir: PathLike) -> list[Any]:
    """The report's figures (plotly), re-analysed from the store alone."""
    from learnscope.config import build_config
    from learnscope.report.figures import draw
    from learnscope.studies import get_study

    run, trials = _stored_run(run_dir)
    if run.config.get("kind") == "probes":
        from learnscope.report.probe_report import probe_figures

        return [f.to_plotly() for f in probe_figures([r for t in trials for r in t.records])[0]]
    study = get_study(run.study)
    analysis = study.analyze(build_config(study.Config, run.config), trials)
    return [draw(f).to_plotly() for f in analysis.figures]


def figures(run_dir: PathLike, out_dir: PathLike, fmt: str = "png", *, scale: float = 2.0
            ) -> list[Path]:
    """Write each figure of the run's report as an image (``png``, ``svg`` or ``pdf``) into
    ``out_dir`` as ``NN-<title>.<fmt>``; returns the paths in report order.

    Needs kaleido (``pip install 'learnscope[export]'``) and a Chrome or Chromium on the
    machine (kaleido drives it; nothing is downloaded). ``scale`` multiplies the pixel size of
    a png.
    """
    if fmt not in FIGURE_FORMATS:
        raise LearnscopeError(f"unknown figure format {fmt!r}; choose one of "
                              f"{', '.join(FIGURE_FORMATS)}")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise LearnscopeError("figure export needs kaleido: pip install 'learnscope[export]'"
                              ) from None
    import plotly.io as pio

    plots = _figures_of(run_dir)
    out = Path(out_dir)
    _parent(out / "x")
    paths = []
    for i, plot in enumerate(plots, 1):
        title = plot.layout.title.text or "figure"
        slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:60] or "figure"
        paths.append(out / f"{i:02d}-{slug}.{fmt}")
    if plots:
        try:
            if hasattr(pio, "write_images"):  # plotly >= 6.1: one browser for all figures
                pio.write_images(plots, paths, format=fmt, scale=scale)
            else:  # pragma: no cover - older plotly
                for plot, path in zip(plots, paths, strict=True):
                    plot.write_image(path, format=fmt, scale=scale)
        except Exception as exc:  # kaleido without a browser, or a browser that fails
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise LearnscopeError(f"kaleido could not render the figures ({type(exc).__name__}"
                                  f"{': ' + first if first else ''}); it needs a Chrome or "
                                  "Chromium installed") from None
    return paths
