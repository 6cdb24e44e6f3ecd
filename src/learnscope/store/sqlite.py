"""The run store: runs, trials and tidy records in one SQLite database (WAL mode).

Layout of a results directory ``DIR``::

    DIR/learnscope.db                 every run, trial and record
    DIR/<study>/<run-id>/result.json  the run's resolved config, claims, verdict, metrics
    DIR/<study>/<run-id>/report.html  self-contained report

A study trial is written in one transaction together with all its records, so a run killed at
any moment holds each trial either completely or not at all; ``--resume`` then runs only the
missing trials. Probes of a live training loop append records as they go (``append_records``).

An existing ``learnscope.db`` is first opened read-only and checked (an SQLite file, a ``meta``
table with a schema version this learnscope reads, our tables with our columns, ``PRAGMA
quick_check``); only a sound store is opened for writing, so a foreign or damaged file is never
changed. A new store is made only where the file is missing, empty (0 bytes) or an SQLite file
without any table. One writer at a time may *claim* a run (``claim_run``, ``running``) so that two
``--resume`` of one run do not train the same trials twice.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import socket
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

# Who is running a run now (one row per claimed run). Made on the first claim, so that opening a
# store writes nothing; schema version 1 stores without it stay version 1 (older learnscope
# ignores the extra table).
_CLAIMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_claims (
    run_id    TEXT PRIMARY KEY,
    pid       INTEGER NOT NULL,
    host      TEXT NOT NULL,
    identity  TEXT NOT NULL,
    claimed   REAL NOT NULL,
    heartbeat REAL NOT NULL
)
"""

#: A claim from another host is taken over after this many seconds without a write by its owner
#: (its liveness cannot be checked from here). Writes of trials, records and status refresh it.
CLAIM_STALE_AFTER_S = 3600.0

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _statements(script: str) -> list[str]:
    return [sql.strip() for sql in script.split(";") if sql.strip()]


def _table_columns(script: str) -> dict[str, tuple[str, ...]]:
    """The columns of each table that ``script`` creates (the reference to check stores against)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(script)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: tuple(r[1] for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        db.close()


_TABLES = _table_columns(_SCHEMA)
_OPTIONAL_TABLES = _table_columns(_CLAIMS_SCHEMA)


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


@dataclass(frozen=True)
class RunClaim:
    """Who runs a run now: process id, host, process identity, claim time, last write (epoch s)."""

    run_id: str
    pid: int
    host: str
    identity: str
    claimed: float
    heartbeat: float


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


class _MetaJson:
    """``_dumps`` for many records' metas, each distinct flat meta serialised once (a probe
    writes the same few metas, e.g. ``{"parameter": "fc1.weight", "epoch": 3}``, thousands of
    times)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], str] = {}

    def __call__(self, meta: dict[str, Any]) -> str:
        try:
            # with the types: 1, 1.0 and True are equal keys but different JSON
            key = tuple((k, type(v), v) for k, v in meta.items())
            text = self._seen.get(key)
        except TypeError:  # a list or dict value: not hashable, serialised each time
            return _dumps(meta)
        if text is None:
            text = self._seen[key] = _dumps(meta)
        return text


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
        self._claims: set[str] = set()  # runs this store holds a claim on
        deadline = time.monotonic() + _BUSY_WAIT_S
        for attempt in itertools.count():
            # Another process making or converting the same store can hold it locked for a
            # moment (SQLite then answers "database is locked" without waiting): try again.
            try:
                new = _holds_nothing(self.db_path) or _check_read_only(self.db_path)
                self._db = self._open_for_writing(new)
                break
            except _Busy as busy:
                if time.monotonic() > deadline:
                    raise StoreError(f"{self.db_path} stayed locked by another process for "
                                     f"{_BUSY_WAIT_S:.0f} s ({busy}); try again") from None
                time.sleep(min(0.01 * 2 ** attempt, 0.5))

    def _open_for_writing(self, new: bool) -> sqlite3.Connection:
        """The read-write connection; makes the schema in a new store (one transaction)."""
        try:
            db = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.db_path}: {exc}") from None
        try:
            db.execute("PRAGMA busy_timeout=30000")
            if new:
                _create_schema(db)
                problem = _schema_problem(db)  # another process may have made it meanwhile
                if problem:
                    raise StoreError(_refusal(self.db_path, problem))
            db.execute("PRAGMA journal_mode=WAL")  # a learnscope store already is: no write
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            db.close()
            if _is_busy(exc):
                raise _Busy(str(exc)) from None
            raise StoreError(_refusal(self.db_path, str(exc))) from None
        except BaseException:
            db.close()
            raise
        return db

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the claims this store holds and close the database."""
        for run_id in list(self._claims):
            with contextlib.suppress(StoreError, sqlite3.Error):
                self.release_run(run_id)
        self._db.close()

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, study: str, config: dict[str, Any], *, config_hash: str | None = None,
                   run_id: str | None = None, claim: bool = False) -> RunInfo:
        """Store a new run (status ``running``) under a fresh id ``<time>-<hash>[-n]``.

        ``claim=True`` also claims it for this process in the same transaction (see
        :meth:`claim_run`), so no ``--resume`` elsewhere can take it before this process does.
        """
        from learnscope.config import stable_hash

        chash = config_hash or stable_hash({"study": study, "config": config})
        now = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        try:
            # The id is picked and inserted in one write transaction: two processes creating a
            # run in the same second get different suffixes, never the same id.
            with self._transaction():
                if run_id is None:
                    run_id = self._free_run_id(f"{stamp}-{chash[:6]}")
                run_dir = self.out_dir / study / run_id
                self._db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)",
                                 (run_id, study, chash, _dumps(config), "running", now, now,
                                  str(run_dir.relative_to(self.out_dir)), None))
                if claim:
                    self._insert_claim(run_id, now)
        except sqlite3.IntegrityError:
            raise StoreError(f"run {run_id} already exists in {self.db_path}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.db_path}: {exc}") from None
        if claim:
            self._claims.add(run_id)
        run = self.get_run(run_id)
        assert run is not None
        return run

    def _free_run_id(self, base: str) -> str:
        taken = {r[0] for r in self._db.execute(
            "SELECT run_id FROM runs WHERE run_id=? OR run_id LIKE ? ESCAPE '\\'",
            (base, _like_escape(base) + "-%"))}
        run_id, n = base, 1
        while run_id in taken:
            n += 1
            run_id = f"{base}-{n}"
        return run_id

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
                    "WHERE run_id=?", (status, verdict, time.time(), run_id), run_id)

    # -- one writer per run ----------------------------------------------------------------
    def claim_run(self, run_id: str, *,
                  stale_after_s: float = CLAIM_STALE_AFTER_S) -> RunClaim:
        """Claim ``run_id`` for this process, or raise StoreError (one line) naming its owner.

        A claim held by a live process on this host is refused. A claim whose process ended
        (or whose pid now belongs to another process, or from before a reboot) is taken over;
        so is one from another host whose owner has not written for ``stale_after_s`` seconds
        (``0`` takes it over at once). This process may claim again what it holds. The claim
        lasts until :meth:`release_run` or :meth:`close`; a killed owner leaves a stale claim.
        """
        now = time.time()
        try:
            with self._transaction():
                if self._db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() \
                        is None:
                    raise StoreError(f"no run {run_id} in {self.db_path}")
                self._db.execute(_CLAIMS_SCHEMA)
                owner = self._owner(run_id)
                if owner is not None and _claim_holds(owner, now, stale_after_s):
                    raise StoreError(_claimed_message(owner, now, stale_after_s))
                me = self._insert_claim(run_id, now)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.db_path}: {exc}") from None
        self._claims.add(run_id)
        return me

    def _insert_claim(self, run_id: str, now: float) -> RunClaim:
        """Inside a write transaction: record this process as the owner of ``run_id``."""
        me = RunClaim(run_id, os.getpid(), _HOST, process_identity(os.getpid()), now, now)
        self._db.execute(_CLAIMS_SCHEMA)
        self._db.execute("INSERT OR REPLACE INTO run_claims VALUES (?,?,?,?,?,?)",
                         (run_id, me.pid, me.host, me.identity, me.claimed, me.heartbeat))
        return me

    def release_run(self, run_id: str) -> bool:
        """Give up this process's claim on ``run_id``; False when it held none."""
        self._claims.discard(run_id)
        if not self._has_claims_table():
            return False
        try:
            with self._transaction():
                gone = self._db.execute(
                    "DELETE FROM run_claims WHERE run_id=? AND pid=? AND host=?",
                    (run_id, os.getpid(), _HOST)).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.db_path}: {exc}") from None
        return gone > 0

    def run_owner(self, run_id: str) -> RunClaim | None:
        """The claim on ``run_id`` as stored (live or stale), or None."""
        return self._owner(run_id) if self._has_claims_table() else None

    @contextlib.contextmanager
    def claimed(self, run_id: str, *,
                stale_after_s: float = CLAIM_STALE_AFTER_S) -> Iterator[RunClaim]:
        """``claim_run`` on entry, ``release_run`` on exit (also on an exception)."""
        claim = self.claim_run(run_id, stale_after_s=stale_after_s)
        try:
            yield claim
        finally:
            with contextlib.suppress(StoreError):
                self.release_run(run_id)

    @contextlib.contextmanager
    def running(self, run_id: str, *, claim: bool = True,
                stale_after_s: float = CLAIM_STALE_AFTER_S) -> Iterator[RunInfo]:
        """Run ``run_id`` under a claim with its status telling how it ended.

        On entry: claim the run (StoreError when another live process holds it; nothing is
        changed then) and set status ``running``. On exit: ``interrupted`` on KeyboardInterrupt
        or SystemExit, ``failed`` on any other exception (re-raised), ``finished`` when the body
        returned and left the status ``running`` (a status the body set is kept); then release.
        """
        if claim:
            self.claim_run(run_id, stale_after_s=stale_after_s)
        try:
            self.set_run_status(run_id, "running")
            run = self.get_run(run_id)
            assert run is not None
            yield run
        except (KeyboardInterrupt, SystemExit):
            self._try_status(run_id, "interrupted")
            raise
        except BaseException:
            self._try_status(run_id, "failed")
            raise
        else:
            now = self.get_run(run_id)
            if now is not None and now.status == "running":
                self.set_run_status(run_id, "finished")
        finally:
            if claim:
                with contextlib.suppress(StoreError, sqlite3.Error):
                    self.release_run(run_id)

    def _try_status(self, run_id: str, status: str) -> None:
        # Marking the end must not hide why the run ended (e.g. a full disk).
        with contextlib.suppress(StoreError, sqlite3.Error):
            self.set_run_status(run_id, status)

    def _owner(self, run_id: str) -> RunClaim | None:
        row = self._db.execute("SELECT run_id, pid, host, identity, claimed, heartbeat "
                               "FROM run_claims WHERE run_id=?", (run_id,)).fetchone()
        return RunClaim(*row) if row else None

    def _has_claims_table(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' "
                                "AND name='run_claims'").fetchone() is not None

    def _heartbeat(self, run_id: str) -> None:
        """Inside a write transaction: the owner of ``run_id`` is alive and writing."""
        if run_id in self._claims:
            self._db.execute("UPDATE run_claims SET heartbeat=? WHERE run_id=? AND pid=? "
                             "AND host=?", (time.time(), run_id, os.getpid(), _HOST))

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
            self._heartbeat(run_id)
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
        dumps = _MetaJson()
        rows = [(run_id, trial_key, r.step, r.probe, r.key, _sql_value(r.value), dumps(r.meta))
                for r in records]
        if rows:
            try:
                with self._transaction():
                    self._db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?)", rows)
                    self._heartbeat(run_id)
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
    def _write(self, sql: str, args: tuple[Any, ...], run_id: str | None = None) -> None:
        try:
            with self._transaction():
                self._db.execute(sql, args)
                if run_id is not None:
                    self._heartbeat(run_id)
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


# -- opening: check before writing ----------------------------------------------------------------
def _refusal(path: Path, problem: str) -> str:
    return f"{path} is not a usable learnscope database ({problem}); it was left untouched"


_BUSY_WAIT_S = 30.0
"""How long opening a store waits for another process that holds it locked."""


class _Busy(Exception):
    """SQLite said the database is locked or busy: another process holds it for a moment."""


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


def _holds_nothing(path: Path) -> bool:
    """True when ``path`` does not exist or is empty: a new store may be made there."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise StoreError(f"{path} is not a file")
    return st.st_size == 0


def _check_read_only(path: Path) -> bool:
    """Check the existing file ``path`` through a read-only connection; StoreError (one line)
    unless it is a sound learnscope store. True when it is an SQLite file without any table
    (nothing to lose: it becomes a new store)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head != _SQLITE_MAGIC:
        raise StoreError(_refusal(path, "not an SQLite file"))
    sidecars = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    had_sidecars = [p.exists() for p in sidecars]
    problem: str | None
    empty = False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise StoreError(_refusal(path, str(exc))) from None
    try:
        empty = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        problem = None if empty else (_schema_problem(db) or _damage(db))
    except sqlite3.Error as exc:
        if _is_busy(exc):  # another process holds it for a moment: not damage
            raise _Busy(str(exc)) from None
        problem = f"damaged: {exc}"
    finally:
        db.close()
    if problem is not None:
        # A read-only look at a WAL-mode file makes its -wal and -shm files: remove ours.
        for sidecar, had in zip(sidecars, had_sidecars, strict=True):
            if not had:
                with contextlib.suppress(OSError):
                    sidecar.unlink()
        raise StoreError(_refusal(path, problem))
    return empty


def _schema_problem(db: sqlite3.Connection) -> str | None:
    """What makes ``db`` not a learnscope store of this schema version, or None."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        held = ", ".join(sorted(tables)[:6]) or "no tables"
        return f"not a learnscope store: no meta table; it holds {held}"
    if _columns(db, "meta") != _TABLES["meta"]:
        return "not a learnscope store: its meta table has other columns"
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        return "not a learnscope store: no schema_version in its meta table"
    version = str(row[0])
    if not version.isdigit():
        return f"schema version {version!r} is not a learnscope schema version"
    if int(version) != SCHEMA_VERSION:
        return (f"schema version {int(version)}, this learnscope reads version "
                f"{SCHEMA_VERSION}")
    for name, expected in (_TABLES | _OPTIONAL_TABLES).items():
        if name not in tables:
            if name in _TABLES:
                return f"no table {name}"
            continue
        found = _columns(db, name)
        if found != expected:
            return (f"table {name} has columns ({', '.join(found)}), "
                    f"not ({', '.join(expected)})")
    return None


def _columns(db: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))


def _damage(db: sqlite3.Connection) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds (pages, cells, records), or None."""
    first = db.execute("PRAGMA quick_check(1)").fetchone()
    if first is None or first[0] == "ok":
        return None
    return f"damaged: {' '.join(str(first[0]).split())[:200]}"


def _create_schema(db: sqlite3.Connection) -> None:
    """Make the tables of a new store in one transaction, unless another process just did."""
    if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
        db.execute("PRAGMA journal_mode=WAL")  # before the transaction (SQLite requires it)
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            for sql in _statements(_SCHEMA):
                db.execute(sql)
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


# -- claims ----------------------------------------------------------------------------------------
_HOST = socket.gethostname()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int) -> str:
    """``boot-id:start-ticks`` of process ``pid`` (Linux), which a reused pid does not share;
    ``""`` where /proc is not there or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2:].split()
    boot = _boot_id()
    return f"{boot}:{fields[19]}" if boot and len(fields) > 19 else ""


def _process_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split()[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    except OSError:
        return False
    return _process_state(pid) not in ("Z", "X")  # an ended child not yet reaped is dead


def _claim_holds(owner: RunClaim, now: float, stale_after_s: float) -> bool:
    """Whether ``owner`` still holds its claim against a claim by this process."""
    if owner.host != _HOST:
        return now - owner.heartbeat < stale_after_s
    if owner.pid == os.getpid():
        return False  # this process: its earlier claim (e.g. a store not closed) is ours
    if owner.identity:
        boot = owner.identity.split(":", 1)[0]
        if boot != _boot_id():
            return False  # claimed before the last reboot
        if not _pid_alive(owner.pid):
            return False
        now_identity = process_identity(owner.pid)
        return not now_identity or now_identity == owner.identity
    return _pid_alive(owner.pid)


def _claimed_message(owner: RunClaim, now: float, stale_after_s: float) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.claimed))
    text = f"run {owner.run_id} is being run by pid {owner.pid} on {owner.host} since {since}; "
    if owner.host == _HOST:
        return text + "wait for it to end or stop that process, then resume"
    quiet = max(0.0, now - owner.heartbeat)
    return text + (f"its last write was {quiet:.0f} s ago and its claim is taken over after "
                   f"{stale_after_s:.0f} s without writes")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sql_value(value: float) -> float | None:
    # SQLite has no NaN (it would become NULL anyway); keep that explicit.
    return None if math.isnan(value) else value
