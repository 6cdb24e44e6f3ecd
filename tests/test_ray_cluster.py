"""The README's Ray cluster recipe on loopback: `ray start --head`, then `--address`.

The head runs with token authentication (Ray's default when a token is at hand) in a private
HOME, temp dir and process group, so the test neither reads the user's token nor touches
another Ray on the machine; it stops only the processes it started.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
pytestmark = pytest.mark.skipif(RAY is None, reason="the ray command is not installed")

TINY = ["run", "double-descent", "--quick", "--seeds", "1",
        "--set", "feature_ratios=0.5,1,2", "--set", "sample_ratios=0.5,1,1.5",
        "--set", "poly_ratios=0.5,1,2", "--set", "n_test=100", "--set", "mlp_widths=4,16",
        "--set", "mlp_epochs=5",
        "--set", "ew_seeds=1", "--set", "ew_max_step=200"]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(home, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    return env | {"HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"} | extra


@pytest.fixture(scope="module")
def cluster():
    """A one-node cluster with 2 CPUs whose token sits in its (private) ~/.ray/auth_token."""
    root = Path(tempfile.mkdtemp(prefix="lsray"))  # short: Ray's socket paths have a limit
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(16)
    (home / ".ray" / "auth_token").write_text(token)
    port, client_port, dash_port, agent_port = _free_ports(4)
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", f"--temp-dir={root / 'ray'}", "--num-cpus=2",
         "--include-dashboard=false", f"--ray-client-server-port={client_port}",
         f"--dashboard-port={dash_port}", f"--dashboard-agent-listen-port={agent_port}",
         "--disable-usage-stats"],
        env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its daemons stay in this process group: ours to stop
    try:
        out, _ = head.communicate(timeout=60)
        assert head.returncode == 0, out
        assert "Token authentication is enabled" in out  # the case the recipe must handle
        yield {"address": f"127.0.0.1:{port}", "home": home, "token": token, "root": root}
    finally:
        _stop_group(head.pid)
        shutil.rmtree(root, ignore_errors=True)


def _stop_group(pgid):
    """SIGTERM the head's process group, SIGKILL what is left after two seconds."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _learnscope(args, env, timeout=180):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "learnscope.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def test_recipe_runs_on_a_token_cluster(cluster, tmp_path):
    # The driver on the head node: the token is where `ray start` found it.
    proc, _ = _learnscope([*TINY, "--executor", "ray", "--address", cluster["address"],
                           "--out", str(tmp_path), "--json"], _env(cluster["home"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["executor"] == "ray" and result["trials"]["run_now"] == result["trials"]["total"]
    # none of Ray's lines (token warnings, connection retries) on the terminal
    assert [line for line in proc.stderr.splitlines() if not line.startswith("report: ")] == []


def test_token_from_the_environment_and_workers_checked(cluster, tmp_path):
    # Another machine: no token file, the token copied into RAY_AUTH_TOKEN; 3 workers > 2 CPUs.
    env = _env(tmp_path, RAY_AUTH_TOKEN=cluster["token"])
    proc, _ = _learnscope([*TINY, "--executor", "ray", "--address", cluster["address"],
                           "--workers", "3", "--out", str(tmp_path / "runs")], env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"learnscope: error: --workers 3 is more than the 2 CPUs of "
                                   f"the Ray cluster at {cluster['address']}")
    assert not (tmp_path / "runs").exists()


def test_missing_or_wrong_token_is_one_line(cluster, tmp_path):
    # No token at all (the recipe before the fix), and a token that is not the cluster's:
    # both drivers at once, to keep the test short.
    cases = {}
    for name, extra in (("missing", {}), ("wrong", {"RAY_AUTH_TOKEN": "not-the-token"})):
        home = tmp_path / name
        home.mkdir()
        args = [*TINY, "--executor", "ray", "--address", cluster["address"],
                "--out", str(home / "runs")]
        cases[name] = (home, time.perf_counter(), subprocess.Popen(
            [sys.executable, "-m", "learnscope.cli", *args], env=_env(home, **extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for name, (home, t0, proc) in cases.items():
        out, err = proc.communicate(timeout=120)
        seconds = time.perf_counter() - t0
        assert proc.returncode == 2 and out == "", (name, err[-2000:])
        err = err.strip()
        assert err.count("\n") == 0, (name, err[-2000:])
        assert err.startswith(f"learnscope: error: the Ray cluster at {cluster['address']} "
                              "refused the connection: its authentication token is missing or "
                              "wrong here"), err
        log = Path(err.rpartition("Ray's log: ")[2])
        assert "InvalidAuthToken" in log.read_text()  # Ray's own lines went to the log
        log.unlink()
        assert not (home / "runs").exists()  # nothing stored
        assert seconds < 40, (name, seconds)
