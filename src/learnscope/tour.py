"""Run many studies in one go (``learnscope tour``): one after another, or in parallel processes.

Parallel studies run in ``jobs`` spawned worker processes, one study per worker at a time.
Each worker runs :func:`learnscope.runner.run_study` exactly as a serial tour does (one torch
and BLAS thread), writing the same shared store, so every claim comes out identical. Workers die
with the driver (``PR_SET_PDEATHSIG`` or a polling thread) and are stopped on Ctrl-C; a worker
that dies in a study (a crash, a kill) makes that study's failure line, its run is marked
``failed``, and a fresh worker takes the remaining studies. The longest studies start first,
estimated from the previous tour's times in the same results folder, so that the workers finish
together.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from learnscope.errors import LearnscopeError

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TOUR_FILE = "tour.json"


@dataclass
class StudyRun:
    """How one study of a tour ended: its result (None when it failed) and its seconds."""

    name: str
    wall_s: float
    cpu_s: float | None
    result: dict[str, Any] | None = None
    section: Any = None
    """Its report section (:class:`learnscope.report.html.StudySection`); None when it failed."""
    run_dir: Path | None = None
    error: str | None = None
    """One line: why the study failed."""
    detail: str = ""
    """The traceback (or exit status) behind ``error``, for the report."""

    @property
    def verdict(self) -> str:
        return "failed" if self.result is None else str(self.result["verdict"])


@dataclass(frozen=True)
class _Task:
    index: int
    name: str
    quick: bool
    overrides: dict[str, Any]
    out: str
    resume: bool
    executor: str
    workers: int | None
    address: str | None


@dataclass
class TourOutcome:
    """Every study's run in the order they were given, and the tour's wall time."""

    runs: list[StudyRun]
    wall_s: float
    jobs: int
    report: Path | None = None
    summary: Path | None = None
    failed: list[str] = field(default_factory=list)


def default_jobs(n_studies: int) -> int:
    """One process per usable core, but no more than there are studies."""
    from learnscope.exec.process import available_cores

    return max(1, min(available_cores(), n_studies))


def run_tour(names: Sequence[str], *, quick: bool = True, out: str | Path = "runs",
             overrides: Mapping[str, Mapping[str, Any]] | None = None, resume: bool = False,
             jobs: int = 1, executor: str = "local", workers: int | None = None,
             address: str | None = None,
             progress_for: Callable[[str], Any] | None = None,
             on_start: Callable[[str, int], None] | None = None,
             on_finish: Callable[[StudyRun], None] | None = None) -> TourOutcome:
    """Run studies ``names`` (``overrides[name]`` on top of each one's config) and return how
    each ended; nothing else is written (see :func:`write_tour`).

    ``jobs=1`` runs them here, one after another (``progress_for(name)`` gives each its progress
    display); ``jobs > 1`` in that many worker processes, longest first. ``on_start(name, pid)``
    is called as a study starts (pid: the process that runs it), ``on_finish`` as it ends, in
    order of completion. A study that raises or whose worker dies is a failed :class:`StudyRun`;
    KeyboardInterrupt stops the tour (workers included) and propagates.
    """
    if jobs < 1:
        raise LearnscopeError(f"--jobs must be at least 1, got {jobs}")
    if len(set(names)) != len(names):
        raise LearnscopeError("a study is named twice in the tour")
    tasks = [_Task(i, name, quick, dict((overrides or {}).get(name, {})), str(out), resume,
                   executor, workers, address) for i, name in enumerate(names)]
    t0 = time.perf_counter()
    runs: list[StudyRun | None] = [None] * len(tasks)
    jobs = min(jobs, max(1, len(tasks)))
    if jobs == 1:
        for task in tasks:
            if on_start is not None:
                on_start(task.name, os.getpid())
            progress = progress_for(task.name) if progress_for is not None else None
            runs[task.index] = run = _run_task(task, progress)
            if on_finish is not None:
                on_finish(run)
    else:
        order = longest_first(names, previous_seconds(Path(out), quick))
        queue = [tasks[names.index(n)] for n in order]
        with contextlib.closing(_run_parallel(queue, jobs, on_start)) as finished:
            for run in finished:
                runs[names.index(run.name)] = run
                if on_finish is not None:
                    on_finish(run)
    done = [r for r in runs if r is not None]
    return TourOutcome(done, time.perf_counter() - t0, jobs,
                       failed=[r.name for r in done if r.result is None])


def _run_task(task: _Task, progress: Any = None) -> StudyRun:
    """Run one study in this process; an exception (not an interrupt) is its failure."""
    from learnscope.report.html import StudySection
    from learnscope.runner import run_study
    from learnscope.studies import get_study

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        outcome = run_study(task.name, quick=task.quick, overrides=task.overrides or None,
                            out=task.out, resume=task.resume, progress=progress,
                            executor=task.executor, workers=task.workers, address=task.address)
        section = StudySection.from_result(outcome.result, outcome.analysis,
                                           get_study(task.name).about())
    except Exception as exc:  # the tour goes on: this study's line says why it failed
        message = str(exc) if isinstance(exc, LearnscopeError) else _one_line(exc)
        return StudyRun(task.name, time.perf_counter() - t0, time.process_time() - c0,
                        error=message, detail=traceback.format_exc())
    return StudyRun(task.name, time.perf_counter() - t0, time.process_time() - c0,
                    outcome.result, section, outcome.run_dir)


def _one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 200 else text[:197] + "..."


# -- parallel -------------------------------------------------------------------------------
@dataclass
class _Worker:
    process: Any
    conn: Connection
    task: _Task | None = None
    started: float = 0.0


def _run_parallel(queue: list[_Task], jobs: int,
                  on_start: Callable[[str, int], None] | None) -> Any:
    """Yield each task's StudyRun as it finishes; the workers are gone when this returns."""
    context = multiprocessing.get_context("spawn")
    pending = list(queue)
    idle: list[_Worker] = []
    busy: list[_Worker] = []
    everyone: list[_Worker] = []

    def start_worker() -> _Worker:
        ours, theirs = context.Pipe()
        process = context.Process(target=worker_main, args=(theirs, os.getpid()),
                                  name="learnscope-tour-worker")
        process.start()
        theirs.close()
        w = _Worker(process, ours)
        everyone.append(w)
        return w

    def assign(w: _Worker) -> None:
        w.task, w.started = pending.pop(0), time.perf_counter()
        w.conn.send(w.task)
        busy.append(w)
        if on_start is not None:
            on_start(w.task.name, w.process.pid)

    try:
        for _ in range(min(jobs, len(pending))):
            assign(start_worker())
        while busy:
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in list(busy):
                if w.conn not in ready and w.process.sentinel not in ready:
                    continue
                task = w.task
                assert task is not None
                run = _receive(w) if w.conn in ready else None
                if run is None:  # the worker died in the study
                    run = _died(w, task)
                busy.remove(w)
                w.task = None
                if w.process.is_alive():
                    idle.append(w)
                else:
                    w.conn.close()
                yield run
            while pending and (idle or len(busy) < jobs):
                assign(idle.pop() if idle else start_worker())
    finally:
        _stop(everyone)


def _receive(w: _Worker) -> StudyRun | None:
    """The worker's answer, or None when its pipe broke (it died before it could answer)."""
    try:
        return pickle.loads(w.conn.recv_bytes())
    except (EOFError, OSError):
        return None


def _died(w: _Worker, task: _Task) -> StudyRun:
    w.process.join(timeout=5)
    code = w.process.exitcode
    how = f"exit code {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            how = f"killed by {signal.Signals(-code).name}"
    marked = _mark_failed(task, w.process.pid)
    detail = f"the worker process (pid {w.process.pid}) ended in this study: {how}"
    return StudyRun(task.name, time.perf_counter() - w.started, None,
                    error=f"its worker process died ({how})" + marked, detail=detail)


def _mark_failed(task: _Task, pid: int) -> str:
    """Mark ``failed`` the run the dead worker ``pid`` held in the store (else it would read
    ``running`` until a --resume takes it over); a note for the failure line."""
    from learnscope.errors import StoreError
    from learnscope.store import RunStore

    try:
        with RunStore(task.out) as store:
            for run in store.list_runs(task.name):
                owner = store.run_owner(run.run_id)
                if run.status == "running" and owner is not None and owner.pid == pid:
                    with store.claimed(run.run_id):
                        store.set_run_status(run.run_id, "failed")
                    return f"; run {run.run_id} is marked failed"
    except StoreError:
        pass
    return ""


def _stop(workers: list[_Worker]) -> None:
    """Ask every worker to leave; stop those still in a study (SIGTERM: the run is marked
    interrupted), then kill what is left."""
    for w in workers:
        if w.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                if w.task is None:
                    w.conn.send(None)
                else:
                    w.process.terminate()
    deadline = time.monotonic() + 10
    for w in workers:
        w.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            w.process.kill()
            w.process.join(timeout=5)
        with contextlib.suppress(OSError):
            w.conn.close()


def _die_with_driver_now(driver_pid: int) -> None:
    """On Linux, have the kernel kill this process when the driver dies, before anything slow
    is imported (``die_with_parent`` below needs torch loaded first)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != driver_pid:  # the driver died before the line above took effect
        os.kill(os.getpid(), signal.SIGKILL)


def worker_main(conn: Connection, driver_pid: int) -> None:
    """A tour worker: one thread for torch and BLAS, dies with the driver, runs the studies it
    is sent until it is sent None. Ctrl-C is the driver's; SIGTERM interrupts the study."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_driver_now(driver_pid)  # importing torch below takes seconds
    for var in _THREAD_VARS:  # before torch or any BLAS loads
        os.environ[var] = "1"
    from learnscope.processes import die_with_parent, init_worker

    die_with_parent(driver_pid)
    init_worker()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            run = _run_task(task)
            try:
                data = pickle.dumps(run)
            except Exception as exc:  # e.g. a figure object that does not pickle
                note = f"its figures could not be sent to the tour ({_one_line(exc)})"
                data = pickle.dumps(replace(run, section=replace(
                    run.section, figures=[], notes=[*run.section.notes, note])))
            conn.send_bytes(data)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return


# -- order and outputs ----------------------------------------------------------------------
def longest_first(names: Sequence[str], seconds: Mapping[str, float]) -> list[str]:
    """Studies by decreasing expected time; those without one first, in the given order (a new
    study may be long). Sorting is stable, so equal times keep the given order."""
    unknown = [n for n in names if n not in seconds]
    known = sorted((n for n in names if n in seconds), key=lambda n: -seconds[n])
    return unknown + known


def previous_seconds(out: Path, quick: bool) -> dict[str, float]:
    """Each study's wall time in the newest earlier tour of the same size in ``out`` (empty
    when there is none, or it cannot be read)."""
    tours = sorted((out / "tour").glob(f"*/{TOUR_FILE}"), reverse=True)
    for path in tours:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("quick") != quick:
                continue
            return {str(s["study"]): float(s["wall_s"]) for s in data["studies"]
                    if s.get("verdict") != "failed"}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {}


def write_tour(out: Path, outcome: TourOutcome, *, quick: bool) -> TourOutcome:
    """Write the combined report and ``tour.json`` (each study's verdict and seconds) into
    ``out/tour/<time>/``; the outcome with their paths."""
    from learnscope.report.html import StudySection, write_report
    from learnscope.runner import write_file_safely

    tour_dir = out / "tour" / time.strftime("%Y%m%d-%H%M%S")
    try:
        tour_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LearnscopeError(f"cannot create {tour_dir}: {exc.strerror or exc}") from None
    sections = []
    for run in outcome.runs:
        if run.section is not None:
            sections.append(replace(run.section, wall_s=run.wall_s, cpu_s=run.cpu_s))
        else:
            sections.append(StudySection(
                run.name, run.name, "", "", "failed", {}, [], wall_s=run.wall_s,
                cpu_s=run.cpu_s, notes=[f"failed: {run.error}", run.detail]))
    report = write_file_safely(tour_dir / "report.html", lambda p: write_report(
        p, sections, title="learnscope tour", total_wall_s=outcome.wall_s))
    summary = {"quick": quick, "jobs": outcome.jobs, "wall_s": round(outcome.wall_s, 3),
               "studies": [{"study": r.name, "verdict": r.verdict, "wall_s": round(r.wall_s, 3),
                            "cpu_s": None if r.cpu_s is None else round(r.cpu_s, 3),
                            "run_dir": None if r.run_dir is None else str(r.run_dir),
                            "error": r.error} for r in outcome.runs]}
    summary_path = write_file_safely(tour_dir / TOUR_FILE, lambda p: _write_json(p, summary))
    return replace(outcome, report=report, summary=summary_path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
