"""The tour: studies in parallel processes give the claims of a serial run, each study's time is
reported, a failing or dying study is its own failure line, and Ctrl-C stops every worker."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import learnscope.studies
import learnscope.tour
from learnscope.cli import main
from learnscope.exec.process import available_cores
from learnscope.store import RunStore
from learnscope.studies import get_study
from learnscope.tour import longest_first, previous_seconds, run_tour, write_tour

NAMES = ["random-labels", "superposition", "parity"]  # three of the fastest tiny runs
JOBS = min(2, available_cores())


def _tiny(names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: dict(get_study(n).tiny) for n in names}


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> learnscope.tour.TourOutcome:
    out = tmp_path_factory.mktemp("serial")
    return run_tour(NAMES, quick=True, out=out, overrides=_tiny(NAMES), jobs=1)


@pytest.fixture(scope="module")
def parallel_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """``learnscope tour --quick --jobs 2`` over the tiny subset (the catalog and sizes are
    narrowed here; everything else is the command as users run it)."""
    out = tmp_path_factory.mktemp("parallel")
    mp = pytest.MonkeyPatch()
    original = learnscope.tour.run_tour

    def tiny_tour(names: list[str], **kwargs: Any) -> Any:
        return original(names, **kwargs | {"overrides": _tiny(list(names))})

    mp.setattr(learnscope.studies, "study_names", lambda: list(NAMES))
    mp.setattr(learnscope.tour, "run_tour", tiny_tour)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(["tour", "--quick", "--out", str(out), "--jobs", str(JOBS), "-q"])
    finally:
        mp.undo()
    return out, code, stdout.getvalue()


def test_parallel_claims_equal_serial(serial: Any, parallel_cli: tuple[Path, int, str]) -> None:
    out, code, _ = parallel_cli
    assert code == 0
    (summary_path,) = (out / "tour").glob("*/tour.json")
    summary = json.loads(summary_path.read_text())
    assert [s["study"] for s in summary["studies"]] == NAMES  # catalog order
    assert summary["jobs"] == JOBS and summary["quick"] is True
    for ref, entry in zip(serial.runs, summary["studies"], strict=True):
        run_dir = Path(entry["run_dir"])
        assert run_dir.parent.parent == out and run_dir.parent.name == ref.name  # same layout
        result = json.loads((run_dir / "result.json").read_text())
        assert (run_dir / "report.html").is_file()
        assert result["config"] == ref.result["config"]
        assert result["claims"] == ref.result["claims"]  # measured values exactly
        assert result["verdict"] == ref.result["verdict"] == entry["verdict"]
        assert result["metrics"] == ref.result["metrics"]
    with RunStore(out) as store:
        assert sorted(r.study for r in store.list_runs()) == sorted(NAMES)
        assert {r.status for r in store.list_runs()} == {"finished"}


def test_a_line_per_study_and_the_report_lists_times(parallel_cli: tuple[Path, int, str]
                                                     ) -> None:
    out, _, stdout = parallel_cli
    lines = stdout.splitlines()
    finished = [ln for ln in lines if ln.split(":")[0] in NAMES]
    assert sorted(ln.split(":")[0] for ln in finished) == sorted(NAMES)
    for ln in finished:
        assert re.fullmatch(r"[a-z-]+: (reproduced|partial|not reproduced) \(\d+/\d+ claims "
                            r"hold\), \d+\.\d s", ln), ln
    (summary_path,) = (out / "tour").glob("*/tour.json")
    summary = json.loads(summary_path.read_text())
    assert all(s["wall_s"] > 0 and s["cpu_s"] > 0 for s in summary["studies"])
    assert summary["wall_s"] >= max(s["wall_s"] for s in summary["studies"])
    html = (summary_path.parent / "report.html").read_text()
    assert "<th>wall s</th><th>CPU s</th>" in html
    assert f"total wall time: {summary['wall_s']:.1f} s" in html
    for s in summary["studies"]:
        assert f"{round(s['wall_s'], 1):.4g}</td>" in html
    assert any(ln.startswith("combined report: ") for ln in lines)


def test_serial_report_has_a_time_per_study(serial: Any, tmp_path: Path) -> None:
    (tmp_path / "learnscope.db").write_bytes(b"")
    written = write_tour(tmp_path, serial, quick=True)
    assert written.report is not None
    html = written.report.read_text()
    assert "<th>wall s</th><th>CPU s</th>" in html
    for run in serial.runs:
        assert run.wall_s > 0 and run.cpu_s is not None and run.cpu_s > 0
    assert previous_seconds(tmp_path, quick=True) == pytest.approx(
        {r.name: r.wall_s for r in serial.runs}, abs=1e-3)
    assert previous_seconds(tmp_path, quick=False) == {}


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["--jobs", "-3"], "--jobs must be at least 1, got -3"),
    (["--jobs", str(available_cores() + 1)], "more than this machine's"),
    (["--jobs", "2", "--executor", "process"], "give --jobs 1"),
    (["--executor", "nope"], "unknown executor 'nope'"),
    (["--workers", "2"], "--workers applies to the process and ray executors"),
    (["--device", "tpu"], "device"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: Any,
                                                 args: list[str], message: str) -> None:
    if "--executor" in args and available_cores() < 2:
        pytest.skip("needs 2 cores")
    out = tmp_path / "runs"
    assert main(["tour", "--quick", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("learnscope: error: ") and message in err
    assert not out.exists()


def _when_run_appears(out: Path, study: str, then: Any, timeout_s: float = 120) -> None:
    """Call ``then()`` as soon as ``study`` has a run marked running in the store at ``out``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (out / "learnscope.db").is_file():
            with RunStore(out) as store:
                if any(r.status == "running" for r in store.list_runs(study)):
                    then()
                    return
        time.sleep(0.05)
    raise AssertionError(f"no run of {study} appeared")


@pytest.mark.skipif(JOBS < 2, reason="needs 2 cores")
def test_a_failing_or_dying_study_is_its_failure_line(tmp_path: Path) -> None:
    overrides = _tiny(NAMES) | {"random-labels": {"no_such_field": 1},  # raises in its worker
                                "superposition": {}}  # quick size: long enough to be killed
    watchers = []

    def on_start(name: str, pid: int) -> None:
        if name == "superposition":
            watcher = threading.Thread(target=_when_run_appears, args=(
                tmp_path, name, lambda: os.kill(pid, signal.SIGKILL)))
            watcher.start()
            watchers.append(watcher)

    outcome = run_tour(NAMES, quick=True, out=tmp_path, overrides=overrides, jobs=2,
                       on_start=on_start)
    for watcher in watchers:
        watcher.join()
    runs = {r.name: r for r in outcome.runs}
    assert outcome.failed == ["random-labels", "superposition"]
    assert "unknown config field 'no_such_field'" in (runs["random-labels"].error or "")
    assert "worker process died (killed by SIGKILL)" in (runs["superposition"].error or "")
    assert runs["parity"].verdict in ("reproduced", "partial", "not reproduced")
    with RunStore(tmp_path) as store:
        (killed,) = store.list_runs("superposition")
        assert killed.status == "failed" and store.run_owner(killed.run_id) is None
        assert f"run {killed.run_id} is marked failed" in (runs["superposition"].error or "")
    report = write_tour(tmp_path, outcome, quick=True).report
    assert report is not None and "badge failed" in report.read_text()


@pytest.mark.skipif(JOBS < 2, reason="needs 2 cores")
def test_interrupt_stops_every_worker_and_marks_the_run(tmp_path: Path) -> None:
    pids: list[int] = []

    def on_finish(run: Any) -> None:
        _when_run_appears(tmp_path, "superposition", lambda: None)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tour(["parity", "superposition"], quick=True, out=tmp_path,
                 overrides={"parity": get_study("parity").tiny}, jobs=2,
                 on_start=lambda name, pid: pids.append(pid), on_finish=on_finish)
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with RunStore(tmp_path) as store:
        (stopped,) = store.list_runs("superposition")
        assert stopped.status == "interrupted" and store.run_owner(stopped.run_id) is None


_DRIVER = """
import sys
from learnscope.tour import run_tour
if __name__ == "__main__":
    run_tour(["parity", "superposition"], quick=True, out=sys.argv[1], jobs=2,
             on_start=lambda name, pid: print(pid, flush=True))
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # ended, not reaped
    except FileNotFoundError:
        return True


@pytest.mark.skipif(JOBS < 2 or not sys.platform.startswith("linux"),
                    reason="needs 2 cores and /proc")
def test_workers_die_with_a_killed_driver(tmp_path: Path) -> None:
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        pids = [int(driver.stdout.readline()) for _ in range(2)]
        _when_run_appears(tmp_path, "superposition", lambda: None)  # a worker is training
    finally:
        driver.kill()  # SIGKILL: the driver runs no cleanup
        driver.wait()
    deadline = time.monotonic() + 2
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


def test_longest_first_and_unknown_before_known() -> None:
    seconds = {"a": 5.0, "b": 30.0, "c": 5.0, "d": 12.0}
    assert longest_first(["a", "b", "c", "d", "e"], seconds) == ["e", "b", "d", "a", "c"]
    assert longest_first(["x", "y"], {}) == ["x", "y"]


def test_previous_seconds_reads_the_newest_tour_of_the_same_size(tmp_path: Path) -> None:
    def tour(stamp: str, quick: bool, studies: list[dict[str, Any]]) -> None:
        folder = tmp_path / "tour" / stamp
        folder.mkdir(parents=True)
        (folder / "tour.json").write_text(json.dumps({"quick": quick, "studies": studies}))

    tour("20260101-000000", True, [{"study": "a", "verdict": "partial", "wall_s": 1.0}])
    tour("20260102-000000", True, [{"study": "a", "verdict": "partial", "wall_s": 2.0},
                                   {"study": "b", "verdict": "failed", "wall_s": 0.5}])
    tour("20260103-000000", False, [{"study": "a", "verdict": "partial", "wall_s": 9.0}])
    (tmp_path / "tour" / "20260104-000000").mkdir()
    (tmp_path / "tour" / "20260104-000000" / "tour.json").write_text("{broken")
    assert previous_seconds(tmp_path, quick=True) == {"a": 2.0}  # a failure is no estimate
    assert previous_seconds(tmp_path, quick=False) == {"a": 9.0}
    assert previous_seconds(tmp_path / "none", quick=True) == {}
