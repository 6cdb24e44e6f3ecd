"""Stored runs as pandas DataFrames: analyse or compare runs in a notebook without SQL.

>>> import learnscope
>>> data = learnscope.load("runs")          # doctest: +SKIP
>>> data.records.query("key == 'test_mse'")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from learnscope.errors import StoreError
from learnscope.store.records import TrialResult

__all__ = ["Loaded", "load", "records_frame", "trials_frame"]

_TRIAL_COLUMNS = ("trial", "status", "wall_s")
_RECORD_COLUMNS = ("trial", "step", "probe", "key", "value")


def trials_frame(trials: Sequence[TrialResult]) -> pd.DataFrame:
    """One row per trial: ``trial``, ``status``, ``wall_s`` and the spec fields as columns."""
    rows = [{"trial": t.key, "status": t.status, "wall_s": t.wall_s,
             **{k: _cell(v) for k, v in t.spec.items() if k not in _TRIAL_COLUMNS}}
            for t in trials]
    frame = pd.DataFrame(rows, columns=_union_columns(_TRIAL_COLUMNS, rows))
    return frame.set_index("trial", drop=False)


def records_frame(trials: Sequence[TrialResult]) -> pd.DataFrame:
    """One row per record, with its metadata expanded into columns.

    A metadata field whose name is taken (by a record column or a spec field) is kept as
    ``meta.<name>``.
    """
    spec_names = {k for t in trials for k in t.spec}
    taken = set(_RECORD_COLUMNS) | set(_TRIAL_COLUMNS) | spec_names
    rows = []
    for t in trials:
        for r in t.records:
            row: dict[str, Any] = {"trial": t.key, "step": r.step, "probe": r.probe,
                                   "key": r.key, "value": r.value}
            for k, v in r.meta.items():
                row[f"meta.{k}" if k in taken else k] = _cell(v)
            rows.append(row)
    return pd.DataFrame(rows, columns=_union_columns(_RECORD_COLUMNS, rows))


@dataclass
class Loaded:
    """Every run of a results directory: ``runs`` (one row per run), ``trials`` (one row per
    trial, spec fields as columns) and ``records`` (one row per record, metadata and the trial's
    spec fields as columns); ``trials`` and ``records`` carry ``run_id`` and ``study``."""

    runs: pd.DataFrame
    trials: pd.DataFrame
    records: pd.DataFrame


def load(out_dir: str | os.PathLike[str] = "runs", *, study: str | None = None) -> Loaded:
    """Read the store of ``out_dir`` (default ``runs``) into DataFrames (``study`` filters).

    Raises StoreError when ``out_dir`` holds no learnscope store; nothing is written.
    """
    from learnscope.store.sqlite import RunStore

    db = Path(out_dir) / "learnscope.db"
    if not db.is_file():
        raise StoreError(f"no learnscope store in {out_dir} (no learnscope.db)")
    run_rows: list[dict[str, Any]] = []
    trial_frames, record_frames = [], []
    with RunStore(out_dir) as store:
        for run in store.list_runs(study):
            run_rows.append({"run_id": run.run_id, "study": run.study, "status": run.status,
                             "verdict": run.verdict, "created": pd.Timestamp(run.created, unit="s"),
                             "config_hash": run.config_hash, "run_dir": str(run.run_dir),
                             "config": json.dumps(run.config, sort_keys=True)})
            trials = store.load_trials(run.run_id)
            tags = {"run_id": run.run_id, "study": run.study}
            trial_frames.append(trials_frame(trials).reset_index(drop=True).assign(**tags))
            records = records_frame(trials)
            spec = trials_frame(trials).drop(columns=["status", "wall_s"]).reset_index(drop=True)
            record_frames.append(records.merge(spec, on="trial", how="left").assign(**tags))
    return Loaded(pd.DataFrame(run_rows),
                  _concat(trial_frames), _concat(record_frames))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()


def _cell(v: Any) -> Any:
    """Lists become tuples so that frames can compare and group them."""
    if isinstance(v, list):
        return tuple(_cell(x) for x in v)
    return v


def _union_columns(first: Sequence[str], rows: list[dict[str, Any]]) -> list[str]:
    cols = list(first)
    seen = set(cols)
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols
