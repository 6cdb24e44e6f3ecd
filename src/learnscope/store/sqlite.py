"""The run store: runs, trials and tidy records in one SQLite database (WAL mode).

Layout of a results directory ``DIR``::

    DIR/learnscope.db                 every run, trial and record
    DIR/<study>/<run-id>/result.json  the run's resolved config, claims, verdict, metrics
    DIR/<study>/<run-id>/report.html  self-contained report

A study trial is written in one transaction together with all its records, so a run killed at
any moment holds each trial either completely or not at all; ``--resume`` then runs only the
missing trials. Probes of a live training loop append records as they go (``append_records``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnscope.errors import StoreError
from learnscope.store.records import Record, TrialResult

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    study       TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config      TEXT NOT NULL,
    status      TEXT NOT NULL,
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    run_dir     TEXT NOT NULL,
    verdict     TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_config ON runs (study, config_hash, created);
CREATE TABLE IF NOT EXISTS trials (
    run_id    TEXT NOT NULL REFERENCES runs (run_id),
    trial_key TEXT NOT NULL,
    spec      TEXT NOT NULL,
    status    TEXT NOT NULL,
    wall_s    REAL NOT NULL,
    info      TEXT NOT NULL,
    finished  REAL NOT NULL,
    PRIMARY KEY (run_id, trial_key)
);
CREATE TABLE IF NOT EXISTS records (
    run_id    TEXT NOT NULL,
    trial_key TEXT NOT NULL,
    step      INTEGER NOT NULL,
    probe     TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     REAL,
    meta      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_trial ON records (run_id, trial_key);
"""


@dataclass(frozen=True)
class TrialWrite:
    """A finished trial to store: its key, spec, records, status, wall time and info."""

    key: str
    spec: dict[str, Any]
    records: list[Record]
    status: str = "finished"
    wall_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    study: str
    config_hash: str
    config: dict[str, Any]
    status: str
    created: float
    run_dir: Path
    verdict: str | None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class RunStore:
    """An open results directory. Use as a context manager or call :meth:`close`.

    >>> import tempfile
    >>> with RunStore(tempfile.mkdtemp()) as store:
    ...     run = store.create_run("demo", {"seeds": 1})
    ...     _ = store.save_trial(run.run_id, "t0", {"x": 1}, [Record("loss", 0.5)])
    ...     [t.records[0].value for t in store.load_trials(run.run_id)]
    [0.5]
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create results directory {self.out_dir}: "
                             f"{exc.strerror or exc}") from None
        if not os.access(self.out_dir, os.W_OK | os.X_OK):
            raise StoreError(f"results directory {self.out_dir} is not writable")
        self.db_path = self.out_dir / "learnscope.db"
        try:
            self._db = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.db_path} has schema version {row[0]}, "
                                 f"this learnscope reads version {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.db_path} is not a usable learnscope database ({exc}); "
                             "it was left untouched") from None

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, study: str, config: dict[str, Any], *, config_hash: str | None = None,
                   run_id: str | None = None) -> RunInfo:
        from learnscope.config import stable_hash

        chash = config_hash or stable_hash({"study": study, "config": config})
        now = time.time()
        if run_id is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
            run_id = f"{stamp}-{chash[:6]}"
            n = 1
            while self.get_run(run_id) is not None:
                n += 1
                run_id = f"{stamp}-{chash[:6]}-{n}"
        run_dir = self.out_dir / study / run_id
        self._write("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)",
                    (run_id, study, chash, _dumps(config), "running", now, now,
                     str(run_dir.relative_to(self.out_dir)), None))
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> RunInfo | None:
        row = self._db.execute(
            "SELECT run_id, study, config_hash, config, status, created, run_dir, verdict "
            "FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return self._run_info(row) if row else None

    def latest_run(self, study: str, config_hash: str) -> RunInfo | None:
        """The newest run of ``study`` with exactly this resolved config (for ``--resume``)."""
        row = self._db.execute(
            "SELECT run_id, study, config_hash, config, status, created, run_dir, verdict "
            "FROM runs WHERE study=? AND config_hash=? ORDER BY created DESC, rowid DESC LIMIT 1",
            (study, config_hash)).fetchone()
        return self._run_info(row) if row else None

    def list_runs(self, study: str | None = None) -> list[RunInfo]:
        sql = ("SELECT run_id, study, config_hash, config, status, created, run_dir, verdict "
               "FROM runs")
        args: tuple[Any, ...] = ()
        if study:
            sql += " WHERE study=?"
            args = (study,)
        return [self._run_info(r) for r in self._db.execute(sql + " ORDER BY created", args)]

    def set_run_status(self, run_id: str, status: str, verdict: str | None = None) -> None:
        self._write("UPDATE runs SET status=?, verdict=COALESCE(?, verdict), updated=? "
                    "WHERE run_id=?", (status, verdict, time.time(), run_id))

    def run_for_dir(self, run_dir: Path) -> RunInfo | None:
        try:
            rel = str(Path(run_dir).resolve().relative_to(self.out_dir.resolve()))
        except ValueError:
            return None
        row = self._db.execute(
            "SELECT run_id, study, config_hash, config, status, created, run_dir, verdict "
            "FROM runs WHERE run_dir=?", (rel,)).fetchone()
        return self._run_info(row) if row else None

    def _run_info(self, row: tuple[Any, ...]) -> RunInfo:
        return RunInfo(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5],
                       self.out_dir / row[6], row[7])

    # -- trials ----------------------------------------------------------------------------
    def finished_keys(self, run_id: str) -> set[str]:
        return {r[0] for r in self._db.execute(
            "SELECT trial_key FROM trials WHERE run_id=?", (run_id,))}

    def save_trial(self, run_id: str, trial_key: str, spec: dict[str, Any],
                   records: Iterable[Record], *, status: str = "finished", wall_s: float = 0.0,
                   info: dict[str, Any] | None = None) -> bool:
        """Write a finished trial and all its records atomically.

        Returns False (and writes nothing) when the trial is already stored for this run.
        """
        return self.save_trials(run_id, [TrialWrite(trial_key, spec, list(records), status,
                                                    wall_s, info or {})]) == 1

    def save_trials(self, run_id: str, trials: Sequence[TrialWrite]) -> int:
        """Write several finished trials (e.g. a batch trained together) and all their records
        in ONE transaction: a kill leaves all of them stored or none. Trials already stored for
        this run are skipped; returns how many were written."""
        written = 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for t in trials:
                try:
                    self._db.execute("INSERT INTO trials VALUES (?,?,?,?,?,?,?)",
                                     (run_id, t.key, _dumps(t.spec), t.status, float(t.wall_s),
                                      _dumps(t.info), time.time()))
                except sqlite3.IntegrityError:
                    continue
                self._db.executemany(
                    "INSERT INTO records VALUES (?,?,?,?,?,?,?)",
                    [(run_id, t.key, r.step, r.probe, r.key, _sql_value(r.value), _dumps(r.meta))
                     for r in t.records])
                written += 1
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot write to {self.db_path}: {exc}") from None
        except BaseException:  # Ctrl-C / SIGTERM mid-write: nothing half-written stays
            self._rollback()
            raise
        return written

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def append_records(self, run_id: str, trial_key: str, records: Iterable[Record]) -> int:
        """Append records of a live (still running) trial, e.g. from probes; one transaction."""
        rows = [(run_id, trial_key, r.step, r.probe, r.key, _sql_value(r.value), _dumps(r.meta))
                for r in records]
        if rows:
            try:
                with self._transaction():
                    self._db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?)", rows)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to {self.db_path}: {exc}") from None
        return len(rows)

    def load_trials(self, run_id: str) -> list[TrialResult]:
        trials = {}
        for key, spec, status, wall_s, info in self._db.execute(
                "SELECT trial_key, spec, status, wall_s, info FROM trials WHERE run_id=? "
                "ORDER BY rowid", (run_id,)):
            trials[key] = TrialResult(key, json.loads(spec), status, [], wall_s, json.loads(info))
        for key, step, probe, rkey, value, meta in self._db.execute(
                "SELECT trial_key, step, probe, key, value, meta FROM records WHERE run_id=? "
                "ORDER BY rowid", (run_id,)):
            if key in trials:
                trials[key].records.append(
                    Record(rkey, math.nan if value is None else value, step, probe,
                           json.loads(meta)))
        return list(trials.values())

    def load_records(self, run_id: str, trial_key: str | None = None) -> list[Record]:
        sql = "SELECT step, probe, key, value, meta FROM records WHERE run_id=?"
        args: tuple[Any, ...] = (run_id,)
        if trial_key is not None:
            sql += " AND trial_key=?"
            args += (trial_key,)
        return [Record(k, math.nan if v is None else v, s, p, json.loads(m))
                for s, p, k, v, m in self._db.execute(sql + " ORDER BY rowid", args)]

    def count_records(self, run_id: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM records WHERE run_id=?",
                                (run_id,)).fetchone()[0]

    # -- helpers ---------------------------------------------------------------------------
    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            with self._transaction():
                self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.db_path}: {exc}") from None

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


@contextlib.contextmanager
def opened_run(run_dir: str | os.PathLike[str]) -> Iterator[tuple[RunStore, RunInfo]]:
    """The store that holds the run folder ``run_dir`` (``OUT/<study>/<run-id>``) and that run;
    StoreError (one line) when the folder is not a run of a learnscope store."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StoreError(f"run directory not found: {run_dir}")
    out_dir = run_dir.resolve().parent.parent
    if not (out_dir / "learnscope.db").is_file():
        raise StoreError(f"{run_dir} is not a run directory (no learnscope.db in {out_dir})")
    with RunStore(out_dir) as store:
        run = store.run_for_dir(run_dir)
        if run is None:
            raise StoreError(f"no run stored for {run_dir} in {out_dir / 'learnscope.db'}")
        yield store, run


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _sql_value(value: float) -> float | None:
    # SQLite has no NaN (it would become NULL anyway); keep that explicit.
    return None if math.isnan(value) else value
