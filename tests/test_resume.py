"""A run killed mid-way keeps its finished trials and completes with --resume, no duplicates."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from learnscope.cli import main

# Many small trials (about 10 ms each), so a kill lands mid-run.
ARGS = ["run", "double-descent", "--quick", "--seeds", "8"]


def _counts(db_path):
    db = sqlite3.connect(db_path, timeout=30)
    try:
        trials = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        dup_records = db.execute(
            "SELECT COUNT(*) FROM (SELECT run_id, trial_key, step, probe, key, meta, COUNT(*) c "
            "FROM records GROUP BY 1,2,3,4,5,6 HAVING c > 1)").fetchone()[0]
        records = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:
        return 0, 0, 0, 0
    finally:
        db.close()
    return trials, records, dup_records, runs


def _start(out_dir):
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "learnscope.cli", *ARGS, "--out", str(out_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _wait_for_trials(proc, db_path, at_least, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db_path.exists() and _counts(db_path)[0] >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail("run finished before it could be interrupted")
        time.sleep(0.05)
    pytest.fail("no trials were stored in time")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert main([*ARGS, "--out", str(out), "--json"]) == 0
    return _counts(out / "learnscope.db")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_without_duplicates(tmp_path, reference, sig, capsys):
    db_path = tmp_path / "learnscope.db"
    proc = _start(tmp_path)
    _wait_for_trials(proc, db_path, 20)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
        assert "--resume" in proc.stderr.read().decode()
    else:
        assert proc.returncode == -signal.SIGKILL
    trials_at_kill, records_at_kill, dups, _ = _counts(db_path)
    assert 20 <= trials_at_kill < reference[0] and dups == 0

    assert main([*ARGS, "--out", str(tmp_path), "--resume", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trials"]["reused"] == trials_at_kill
    assert result["trials"]["run_now"] == reference[0] - trials_at_kill
    trials, records, dups, runs = _counts(db_path)
    assert (trials, records, dups, runs) == (reference[0], reference[1], 0, 1)
    assert result["verdict"] == "reproduced"


def test_resume_of_finished_run_reruns_nothing(tmp_path, capsys):
    args = ["run", "double-descent", "--quick", "--seeds", "3", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args + ["--resume"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["run_id"] == first["run_id"] and second["trials"]["run_now"] == 0
    assert second["claims"] == first["claims"]
    # Without --resume the same command starts a fresh run (and keeps the old one).
    assert main(args) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["run_id"] != first["run_id"]
    assert _counts(tmp_path / "learnscope.db")[3] == 2
