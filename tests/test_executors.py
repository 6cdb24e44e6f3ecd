"""Executors: same records whichever runs a sweep; a SIGKILLed sweep resumes exactly."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnscope.cli import main

SMALL = ["run", "double-descent", "--quick", "--seeds", "2",
         "--set", "feature_ratios=0.1,0.5,1,2", "--set", "sample_ratios=0.5,1,1.5",
         "--set", "poly_ratios=0.5,1,2",
         "--set", "n_test=200", "--set", "mlp_widths=4,16", "--set", "mlp_epochs=20",
         "--set", "ew_seeds=1", "--set", "ew_max_step=1000"]


def _records(db_path):
    db = sqlite3.connect(db_path)
    try:
        return sorted(db.execute("SELECT trial_key, step, probe, key, value, meta FROM records"))
    finally:
        db.close()


@pytest.mark.parametrize("argv,needle", [
    (["--executor", "nope"], "unknown executor 'nope'"),
    (["--executor", "process", "--workers", "999"], "more than this machine's"),
    (["--executor", "process", "--workers", "0"], "at least 1"),
    (["--executor", "local", "--workers", "2"], "--workers applies"),
    (["--executor", "process", "--address", "127.0.0.1:1"], "--address applies"),
    (["--executor", "local", "--address", "127.0.0.1:1"], "--address applies"),
    (["--address", "127.0.0.1:1"], "--address applies to the ray executor only, not 'local'"),
    (["--executor", "ray", "--address", "localhost:99999"], "port 99999 is outside 1-65535"),
    (["--executor", "ray", "--address", "localhost:0"], "port 0 is outside 1-65535"),
    (["--executor", "ray", "--address", "[::1]:70000"], "port 70000 is outside 1-65535"),
    (["--executor", "ray", "--address", "[::1:6379"], "is not HOST:PORT or ray://HOST:PORT"),
    (["--executor", "ray", "--address", "::1:6379"], "is not HOST:PORT or ray://HOST:PORT"),
    (["--executor", "ray", "--address", "http://h:6379"], "unknown scheme 'http://'"),
    (["--executor", "ray", "--address", "h:6379/x"], "is not HOST:PORT or ray://HOST:PORT"),
    (["--executor", "ray", "--address", "h"], "is not HOST:PORT or ray://HOST:PORT"),
    (["--executor", "ray", "--workers", "0"], "at least 1"),
])
def test_bad_executor_options(argv, needle, tmp_path, capsys):
    assert main([*SMALL, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err


@pytest.mark.parametrize("address,host,port,client", [
    ("127.0.0.1:6379", "127.0.0.1", 6379, False),
    ("[::1]:6379", "::1", 6379, False),
    (" head.example:65535 ", "head.example", 65535, False),
    ("ray://head:10001", "head", 10001, True),
])
def test_parse_ray_address(address, host, port, client):
    from learnscope.exec.ray_executor import parse_address

    parsed = parse_address(address)
    assert (parsed.host, parsed.port, parsed.client) == (host, port, client)


def test_more_ray_workers_than_cores(tmp_path, capsys):
    pytest.importorskip("ray")
    from learnscope.exec import available_cores

    assert main([*SMALL, "--out", str(tmp_path), "--executor", "ray", "--workers", "999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"learnscope: error: --workers 999 is more than this machine's "
                   f"{available_cores()} cores")
    assert not list(tmp_path.iterdir())  # refused before anything was stored


def test_ray_output_goes_to_the_log(tmp_path):
    """What Ray prints while connecting (C++ on fd 2, Python on sys.stderr and through logging's
    last-resort handler) lands in the log file, not on the terminal."""
    log = tmp_path / "ray.log"
    script = (
        "import logging, os, sys\n"
        "from pathlib import Path\n"
        "from learnscope.exec.ray_executor import _ray_output_into\n"
        f"with _ray_output_into(Path({str(log)!r})):\n"
        "    os.write(2, b'native line\\n')\n"
        "    print('python line', file=sys.stderr)\n"
        "    print('stdout line')\n"
        "    logging.getLogger('ray').warning('logged line')\n"
        "print('after', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "after\n")
    text = log.read_text()
    assert all(line in text for line in ("native line", "python line", "stdout line",
                                          "logged line"))


def test_unreachable_ray_address(tmp_path, capsys):
    pytest.importorskip("ray")
    assert main([*SMALL, "--out", str(tmp_path), "--executor", "ray",
                 "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach a Ray cluster at 127.0.0.1:1" in err


def test_same_records_with_every_executor(tmp_path, capsys):
    executors = ["local", "process"]
    try:
        import ray  # noqa: F401

        executors.append("ray")
    except ImportError:
        pass
    results = {}
    for name in executors:
        out = tmp_path / name
        # ray with one worker: one task in flight at a time, the next sent as one finishes
        workers = ["--workers", "1"] if name == "ray" else []
        assert main([*SMALL, "--out", str(out), "--executor", name, *workers, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["executor"] == name and result["trials"]["run_now"] == 34
        results[name] = (_records(out / "learnscope.db"), result["claims"])
    reference = results["local"]
    # 16 random-feature trials x 5 records (min-norm and tuned ridge MSEs, the chosen lambda),
    # 12 sample-wise/polynomial x 2, 4 MLPs x 4, 2
    # epoch-wise curves x (train and test MSE at every step + 4 time scales)
    from learnscope.studies.double_descent_epochwise import log_steps

    assert len(reference[0]) == 16 * 5 + 12 * 2 + 4 * 4 + 2 * (2 * len(log_steps(1000)) + 4)
    for name in executors[1:]:
        assert results[name] == reference, name


def test_sigkilled_process_sweep_resumes(tmp_path, capsys):
    args = ["run", "double-descent", "--quick", "--seeds", "8", "--executor", "process",
            "--workers", "2", "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "learnscope.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    from learnscope.runner import resolve_config
    from learnscope.studies import get_study

    study = get_study("double-descent")
    total = len(study.trials(resolve_config(study, quick=True, seeds=8)))
    db_path = tmp_path / "learnscope.db"
    deadline = time.time() + 180
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                db = sqlite3.connect(db_path, timeout=5)
                stored = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
                db.close()
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 72:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
    proc.wait(timeout=30)
    db = sqlite3.connect(db_path, timeout=30)
    at_kill = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    db.close()
    assert 72 <= at_kill < total

    assert main([*args, "--resume", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trials"]["reused"] == at_kill and result["trials"]["total"] == total
    db = sqlite3.connect(db_path)
    trials = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    dups = db.execute("SELECT COUNT(*) FROM (SELECT run_id, trial_key, step, probe, key, meta, "
                      "COUNT(*) c FROM records GROUP BY 1,2,3,4,5,6 HAVING c > 1)").fetchone()[0]
    runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    db.close()
    assert (trials, dups, runs) == (total, 0, 1)
    assert result["verdict"] == "reproduced"


def _children(pid):
    """Pids of a process's children (Linux /proc; psutil is not a dependency)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _alive(pid):
    """True while ``pid`` runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_process_workers_die_with_a_sigkilled_driver(tmp_path):
    args = ["run", "double-descent", "--quick", "--seeds", "8", "--executor", "process",
            "--workers", "2", "--out", str(tmp_path)]
    driver = subprocess.Popen([sys.executable, "-m", "learnscope.cli", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            workers = [c for c in _children(driver.pid) if "spawn_main" in _cmdline(c)]
            if len(workers) >= 2:
                break
            time.sleep(0.05)
        assert len(workers) == 2 and driver.poll() is None, "no two workers to orphan"
        helpers = _children(driver.pid)  # the workers and multiprocessing's resource tracker
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, not its process group
        driver.wait(timeout=30)
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in helpers):
            time.sleep(0.05)
        left = [(p, _cmdline(p)[:80]) for p in helpers if _alive(p)]
        assert not left, f"still running {time.time() - deadline + 5:.1f} s after the kill"
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # whatever a failing run left behind
        except ProcessLookupError:
            pass


_ORPHAN = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import os, sys, time
from learnscope.exec.worker import die_with_parent
print(die_with_parent(os.getppid(), poll_s=0.1, use_prctl=sys.argv[1] == "1"), flush=True)
time.sleep(120)
''', sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("use_prctl,mechanism", [(True, "prctl"), (False, "poll")])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_die_with_parent(use_prctl, mechanism):
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN, str(int(use_prctl))],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child_pid, used = parent.stdout.readline().split()
        assert used == mechanism and _alive(int(child_pid))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 3
        while time.time() < deadline and _alive(int(child_pid)):
            time.sleep(0.02)
        assert not _alive(int(child_pid))
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
