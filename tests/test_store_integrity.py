"""The store refuses files it must not touch, picks run ids atomically, and lets one writer
claim a run (tests with real processes where the property is about processes)."""

import contextlib
import hashlib
import multiprocessing as mp
import os
import socket
import sqlite3
import time
from multiprocessing.connection import wait as wait_for

import pytest

from learnscope.errors import StoreError
from learnscope.store import Record, RunStore
from learnscope.store.sqlite import CLAIM_STALE_AFTER_S, process_identity

SPAWN = mp.get_context("spawn")
HAS_PROC = process_identity(os.getpid()) != ""


def _state(pid):
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2:].split()[0]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_sqlite(path, *statements):
    db = sqlite3.connect(path)
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()


def _store_with_records(out, n_records=20_000):
    with RunStore(out) as store:
        run = store.create_run("demo", {"x": 1})
        store.save_trial(run.run_id, "t", {}, [Record("loss", i / 7, step=i, meta={"i": i})
                                               for i in range(n_records)])
    return out / "learnscope.db"


def _garble_middle_page(path):
    page_size = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    n_pages = path.stat().st_size // page_size
    assert n_pages > 10
    garbage = bytes((i * 37 + 11) % 256 for i in range(page_size))
    with path.open("r+b") as f:
        f.seek((n_pages // 2) * page_size)
        f.write(garbage)


def _learnscope_store_with_version(path, version):
    _store_with_records(path.parent, 10)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
    db.commit()
    db.close()


def _drop_column_of_trials(path):
    _store_with_records(path.parent, 10)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE trials DROP COLUMN info")
    db.commit()
    db.close()


REFUSED = {
    "foreign": (lambda p: _make_sqlite(p, "CREATE TABLE customers (id INTEGER, name TEXT)",
                                       "INSERT INTO customers VALUES (1, 'ada')"),
                "not a learnscope store"),
    "foreign-wal": (lambda p: _make_sqlite(p, "PRAGMA journal_mode=WAL",
                                           "CREATE TABLE customers (id INTEGER)"),
                    "not a learnscope store"),
    "foreign-runs": (lambda p: _make_sqlite(p, "CREATE TABLE runs (id INTEGER, distance REAL)",
                                            "INSERT INTO runs VALUES (1, 5.0)"),
                     "not a learnscope store"),
    "corrupted-page": (lambda p: (_store_with_records(p.parent), _garble_middle_page(p)),
                       "damaged"),
    "schema-2.1": (lambda p: _learnscope_store_with_version(p, "2.1"), "schema version '2.1'"),
    "schema-abc": (lambda p: _learnscope_store_with_version(p, "abc"), "schema version 'abc'"),
    "schema-2": (lambda p: _learnscope_store_with_version(p, "2"), "schema version 2"),
    "no-schema-version": (lambda p: _make_sqlite(p, "CREATE TABLE meta (key TEXT, value TEXT)"),
                          "no schema_version"),
    "missing-column": (_drop_column_of_trials, "table trials"),
    "missing-table": (lambda p: (_store_with_records(p.parent, 10),
                                 _make_sqlite(p, "DROP TABLE records")), "no table records"),
    "not-sqlite": (lambda p: p.write_bytes(b"not a database" * 100), "not an SQLite"),
    "sqlite-header-only": (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50),
                           "not a usable learnscope database"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_file_that_is_not_a_sound_learnscope_store_is_refused_and_left_unchanged(tmp_path,
                                                                                   case):
    make, reason = REFUSED[case]
    path = tmp_path / "learnscope.db"
    make(path)
    before = _sha(path)
    files_before = sorted(os.listdir(tmp_path))
    with pytest.raises(StoreError) as info:
        RunStore(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "not a usable learnscope database" in message and reason in message
    assert _sha(path) == before
    assert sorted(os.listdir(tmp_path)) == files_before  # no sidecar files left behind


def test_an_empty_file_or_an_sqlite_file_without_tables_becomes_a_new_store(tmp_path):
    for sub, make in [("empty", lambda p: p.write_bytes(b"")),
                      ("no-tables", lambda p: _make_sqlite(p, "PRAGMA user_version=0"))]:
        out = tmp_path / sub
        out.mkdir()
        make(out / "learnscope.db")
        with RunStore(out) as store:
            run = store.create_run("demo", {})
            assert store.save_trial(run.run_id, "k", {}, [Record("a", 1.0)])
        with RunStore(out) as store:
            assert [r.run_id for r in store.list_runs()] == [run.run_id]


def test_opening_a_sound_store_writes_nothing(tmp_path):
    path = _store_with_records(tmp_path, 100)
    before = _sha(path)
    with RunStore(tmp_path) as store:
        assert len(store.list_runs()) == 1
    assert _sha(path) == before


def test_a_store_killed_with_its_write_ahead_log_opens(tmp_path):
    """A store whose last writer died holds committed data only in learnscope.db-wal."""
    store = RunStore(tmp_path)
    run = store.create_run("demo", {})
    store.save_trial(run.run_id, "k", {}, [Record("a", 1.0)])
    assert (tmp_path / "learnscope.db-wal").stat().st_size > 0
    try:
        with RunStore(tmp_path) as second:  # the first one is still open: the log is live
            assert second.finished_keys(run.run_id) == {"k"}
    finally:
        store.close()


def _end(procs):
    """Join the child processes; kill any still running (a failed test must not hang)."""
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()
            p.join()


# -- run ids: two processes creating runs in the same second -----------------------------------
def _create_runs(out, n, barrier, ids):
    try:
        barrier.wait(60)
        with RunStore(out) as store:  # both make the store (it is new) at once
            barrier.wait(60)  # and then runs, in the same second
            ids.put([store.create_run("demo", {"x": 1}, config_hash="feedface" * 8).run_id
                     for _ in range(n)])
    except Exception as err:
        ids.put(f"{type(err).__name__}: {err}")


def test_runs_created_at_once_by_two_processes_get_distinct_ids(tmp_path):
    barrier, ids = SPAWN.Barrier(2), SPAWN.Queue()
    procs = [SPAWN.Process(target=_create_runs, args=(tmp_path, 100, barrier, ids))
             for _ in range(2)]
    for p in procs:
        p.start()
    try:
        made = [ids.get(timeout=120) for _ in procs]
    finally:
        _end(procs)
    assert all(isinstance(m, list) for m in made), made
    every = made[0] + made[1]
    assert len(every) == 200 and len(set(every)) == 200
    assert any(run_id.endswith("-2") for run_id in every)  # the ids did meet
    with RunStore(tmp_path) as store:
        assert len(store.list_runs("demo")) == 200


def test_an_explicit_run_id_that_exists_is_a_one_line_error(tmp_path):
    with RunStore(tmp_path) as store:
        store.create_run("demo", {}, run_id="r1")
        with pytest.raises(StoreError, match="run r1 already exists"):
            store.create_run("demo", {}, run_id="r1")


# -- claims: one writer per run --------------------------------------------------------------
def _hold_claim(out, run_id, claimed, release):
    with RunStore(out) as store, store.claimed(run_id):
        claimed.set()
        release.wait(60)


def _claim_and_die(out, run_id):
    store = RunStore(out)
    store.claim_run(run_id)
    os._exit(0)  # no release, no close: like a kill


def _claim_at_once(out, run_id, barrier, outcomes):
    with RunStore(out) as store:
        barrier.wait(60)
        try:
            with store.running(run_id):
                outcomes.put("claimed")
                time.sleep(1.0)
        except StoreError as err:
            outcomes.put(f"refused: {err}")


def _new_run(out):
    with RunStore(out) as store:
        return store.create_run("demo", {}).run_id


@contextlib.contextmanager
def _claimed_by_another_process(out, run_id):
    """A live process holds the claim of ``run_id`` for the block, then releases it."""
    claimed, release = SPAWN.Event(), SPAWN.Event()
    owner = SPAWN.Process(target=_hold_claim, args=(out, run_id, claimed, release))
    owner.start()
    try:
        assert claimed.wait(60)
        yield owner
    finally:
        release.set()
        _end([owner])


def test_a_claim_is_refused_while_its_owner_lives_and_free_after_release(tmp_path):
    run_id = _new_run(tmp_path)
    with _claimed_by_another_process(tmp_path, run_id) as owner, RunStore(tmp_path) as store:
        with pytest.raises(StoreError) as info:
            store.claim_run(run_id)
        message = str(info.value)
        assert f"run {run_id} is being run by pid {owner.pid}" in message
        assert "\n" not in message and socket.gethostname() in message
        assert store.run_owner(run_id).pid == owner.pid
    assert owner.exitcode == 0
    with RunStore(tmp_path) as store:
        assert store.run_owner(run_id) is None
        assert store.claim_run(run_id).pid == os.getpid()
        assert store.release_run(run_id)


def test_the_claim_of_a_process_that_died_is_taken_over(tmp_path):
    run_id = _new_run(tmp_path)
    owner = SPAWN.Process(target=_claim_and_die, args=(tmp_path, run_id))
    owner.start()
    wait_for([owner.sentinel], 60)
    if HAS_PROC:  # ended but not reaped yet: a zombie still has its pid
        deadline = time.time() + 10
        while _state(owner.pid) != "Z" and time.time() < deadline:
            time.sleep(0.01)
        with RunStore(tmp_path) as store:
            assert store.run_owner(run_id).pid == owner.pid
            assert store.claim_run(run_id).pid == os.getpid()
    _end([owner])
    with RunStore(tmp_path) as store:
        assert store.claim_run(run_id).pid == os.getpid()  # the same process may claim again


def test_two_processes_claiming_one_run_at_once_one_wins(tmp_path):
    run_id = _new_run(tmp_path)
    barrier, outcomes = SPAWN.Barrier(2), SPAWN.Queue()
    procs = [SPAWN.Process(target=_claim_at_once, args=(tmp_path, run_id, barrier, outcomes))
             for _ in range(2)]
    for p in procs:
        p.start()
    try:
        got = sorted(outcomes.get(timeout=120) for _ in procs)
    finally:
        _end(procs)
    assert got[0] == "claimed" and got[1].startswith(f"refused: run {run_id} is being run by")
    with RunStore(tmp_path) as store:
        assert store.run_owner(run_id) is None
        assert store.get_run(run_id).status == "finished"


def _plant_claim(out, run_id, pid, host, identity, heartbeat):
    with RunStore(out) as store:
        store.claim_run(run_id)  # makes the claims table (close releases the claim)
    db = sqlite3.connect(out / "learnscope.db")
    db.execute("INSERT INTO run_claims VALUES (?,?,?,?,?,?)",
               (run_id, pid, host, identity, heartbeat, heartbeat))
    db.commit()
    db.close()


def test_a_claim_from_another_host_holds_until_it_stops_writing(tmp_path):
    run_id = _new_run(tmp_path)
    _plant_claim(tmp_path, run_id, 4242, "elsewhere.example", "", time.time())
    with RunStore(tmp_path) as store:
        with pytest.raises(StoreError, match="pid 4242 on elsewhere.example"):
            store.claim_run(run_id)
        assert store.claim_run(run_id, stale_after_s=0).host == socket.gethostname()
    _plant_claim(tmp_path, run_id, 4242, "elsewhere.example", "",
                 time.time() - CLAIM_STALE_AFTER_S - 1)
    with RunStore(tmp_path) as store:
        assert store.claim_run(run_id).pid == os.getpid()


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_a_live_pid_of_another_process_than_the_owner_does_not_hold_the_claim(tmp_path):
    run_id = _new_run(tmp_path)
    live_pid = os.getppid()
    boot = process_identity(live_pid).split(":")[0]
    for identity in [f"{boot}:1", "another-boot:123"]:  # the pid was reused / rebooted since
        _plant_claim(tmp_path, run_id, live_pid, socket.gethostname(), identity, time.time())
        with RunStore(tmp_path) as store:
            assert store.claim_run(run_id).pid == os.getpid()
    _plant_claim(tmp_path, run_id, live_pid, socket.gethostname(),
                 process_identity(live_pid), time.time())
    with RunStore(tmp_path) as store, pytest.raises(StoreError, match=f"pid {live_pid}"):
        store.claim_run(run_id)


def test_writes_of_the_owner_refresh_its_heartbeat(tmp_path):
    run_id = _new_run(tmp_path)
    with RunStore(tmp_path) as store:
        first = store.claim_run(run_id)
        time.sleep(0.05)
        store.save_trial(run_id, "k", {}, [Record("a", 1.0)])
        assert store.run_owner(run_id).heartbeat > first.heartbeat
        assert store.run_owner(run_id).claimed == first.claimed


def test_a_run_created_with_claim_is_claimed_in_the_same_transaction(tmp_path):
    with RunStore(tmp_path) as store:
        run = store.create_run("demo", {}, claim=True)
        assert store.run_owner(run.run_id).pid == os.getpid()
        with store.running(run.run_id):  # this process may enter what it holds
            pass
        assert store.run_owner(run.run_id) is None
        other = store.create_run("demo", {}, claim=True)
    with RunStore(tmp_path) as store:
        assert store.run_owner(other.run_id) is None  # close released it


def test_claiming_an_unknown_run_is_an_error(tmp_path):
    with RunStore(tmp_path) as store, pytest.raises(StoreError, match="no run nope"):
        store.claim_run("nope")


# -- running(): the status whatever ends the run -----------------------------------------------
@pytest.mark.parametrize(("raised", "status"), [(None, "finished"), (RuntimeError, "failed"),
                                                (KeyboardInterrupt, "interrupted")])
def test_running_marks_how_the_run_ended_and_releases_the_claim(tmp_path, raised, status):
    with RunStore(tmp_path) as store:
        run = store.create_run("demo", {})
        store.set_run_status(run.run_id, "interrupted")
        if raised is None:
            with store.running(run.run_id) as info:
                assert info.status == "running"
                assert store.run_owner(run.run_id).pid == os.getpid()
        else:
            with pytest.raises(raised), store.running(run.run_id):
                raise raised("boom")
        assert store.get_run(run.run_id).status == status
        assert store.run_owner(run.run_id) is None


def test_running_keeps_a_status_the_body_set(tmp_path):
    with RunStore(tmp_path) as store:
        run = store.create_run("demo", {})
        with store.running(run.run_id):
            store.set_run_status(run.run_id, "finished", "reproduced")
        got = store.get_run(run.run_id)
        assert (got.status, got.verdict) == ("finished", "reproduced")


def test_running_refuses_a_run_claimed_by_a_live_process(tmp_path):
    run_id = _new_run(tmp_path)
    with _claimed_by_another_process(tmp_path, run_id), RunStore(tmp_path) as store:
        store.set_run_status(run_id, "running")
        with pytest.raises(StoreError, match="is being run by"), store.running(run_id):
            pass
        assert store.get_run(run_id).status == "running"  # the owner's status is kept


def test_the_command_line_refuses_a_foreign_store_in_one_line(tmp_path, capsys):
    from learnscope.cli import main

    path = tmp_path / "learnscope.db"
    REFUSED["foreign"][0](path)
    before = _sha(path)
    assert main(["run", "double-descent", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("learnscope: error: ") and "\n" not in err
    assert "not a learnscope store" in err and _sha(path) == before


def _open_and_create(out, barrier, results):
    try:
        barrier.wait(60)
        with RunStore(out) as store:
            results.put(store.create_run("demo", {}).run_id)
    except Exception as err:
        results.put(f"{type(err).__name__}: {err}")


def test_three_processes_making_one_new_store_at_once_all_succeed(tmp_path):
    """While one process makes a new store, another one's read-only look can meet "database
    is locked" (SQLite does not wait there): that is a moment's wait, not a damaged file.
    Before the retry, 7 of 25 rounds of three processes failed."""
    for round_ in range(6):
        out = tmp_path / str(round_)
        barrier, results = SPAWN.Barrier(3), SPAWN.Queue()
        procs = [SPAWN.Process(target=_open_and_create, args=(out, barrier, results))
                 for _ in range(3)]
        for p in procs:
            p.start()
        try:
            made = [results.get(timeout=120) for _ in procs]
        finally:
            _end(procs)
        assert all(m.startswith("2") for m in made) and len(set(made)) == 3, made
