"""Run a study end to end: resolve the config, run missing trials, analyse, write the outputs.

This is the API behind ``learnscope run``::

    from learnscope import run_study
    outcome = run_study("double-descent", quick=True, out="runs")
    outcome.result["verdict"]
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from learnscope.analysis import Analysis, jsonable, verdict
from learnscope.config import StudyConfig, build_config, config_to_dict, load_toml, stable_hash
from learnscope.errors import ConfigError, LearnscopeError, StoreError
from learnscope.exec import make_executor
from learnscope.store import RunInfo, RunStore
from learnscope.store.sqlite import TrialWrite, opened_run
from learnscope.studies import get_study
from learnscope.studies.base import Study
from learnscope.versions import versions


@dataclass
class ProgressState:
    """Where a run stands: trials and work (relative cost units) done, the stage, and an ETA
    in seconds where the measurements support one (None: unknown, show none)."""

    trials_done: int
    trials_total: int
    work_done: float
    work_total: float
    stage: str
    eta_s: float | None = None


@dataclass(frozen=True)
class TrialLine:
    """One finished trial, for per-trial output: its spec, status and share of its batch's
    seconds."""

    spec: dict[str, Any]
    status: str
    seconds: float


class Progress(Protocol):
    """What the runner reports while it works (the CLI draws a progress bar from it)."""

    def start(self, state: ProgressState) -> None: ...
    def update(self, state: ProgressState, finished: Sequence[TrialLine]) -> None: ...
    def stop(self) -> None: ...


class _Silent:
    def start(self, state: ProgressState) -> None:
        pass

    def update(self, state: ProgressState, finished: Sequence[TrialLine]) -> None:
        pass

    def stop(self) -> None:
        pass


class WorkMeter:
    """Progress by work and an ETA that is shown only when the measurements can stand behind it.

    Each part's seconds per unit of work are measured from its finished batches (trials of one
    part cost alike per unit of :meth:`Study.trial_work`; parts differ by orders of magnitude).
    The ETA is the remaining work of each part times its median rate, divided by the observed
    parallelism (batch seconds per elapsed second). It stays unknown (None) until two batches
    have finished, while a part with work left has no finished batch, and while the estimate
    from the parts' upper-quartile rates exceeds the one from their lower-quartile rates by more
    than ``max_spread`` (a part measured once counts as +-50%).
    """

    def __init__(self, work_left: Mapping[str, float], *, max_spread: float = 2.0,
                 clock: Any = time.perf_counter) -> None:
        self.left = dict(work_left)
        self.rates: dict[str, list[float]] = {p: [] for p in self.left}
        self.batches = 0
        self.busy_s = 0.0
        self.max_spread = max_spread
        self.clock = clock
        self.t0 = clock()

    def batch_done(self, part: str, work: float, seconds: float) -> None:
        self.left[part] = max(0.0, self.left.get(part, 0.0) - work)
        self.rates.setdefault(part, []).append(seconds / max(work, 1e-12))
        self.batches += 1
        self.busy_s += seconds

    def eta_s(self) -> float | None:
        if self.batches < 2:
            return None
        lo = mid = hi = 0.0
        for p, left in self.left.items():
            if left <= 0:
                continue
            r = sorted(self.rates.get(p, []))
            if not r:
                return None
            if len(r) == 1:
                lo_r, mid_r, hi_r = 0.5 * r[0], r[0], 1.5 * r[0]
            else:
                lo_r, mid_r, hi_r = _quantile(r, 0.25), _quantile(r, 0.5), _quantile(r, 0.75)
            lo, mid, hi = lo + left * lo_r, mid + left * mid_r, hi + left * hi_r
        elapsed = self.clock() - self.t0
        parallel = max(1.0, self.busy_s / elapsed) if elapsed > 0 else 1.0
        if hi > self.max_spread * lo and (hi - lo) / parallel > 5.0:
            return None
        return mid / parallel


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    pos = q * (len(sorted_values) - 1)
    i = int(pos)
    j = min(i + 1, len(sorted_values) - 1)
    return sorted_values[i] + (pos - i) * (sorted_values[j] - sorted_values[i])


@dataclass
class RunOutcome:
    run: RunInfo
    run_dir: Path
    result: dict[str, Any]
    analysis: Analysis


@contextlib.contextmanager
def limited_threads(n: int | None) -> Iterator[None]:
    """Limit torch's and the BLAS libraries' threads for the block; restore them afterwards.

    Small models and small matrices on few cores run 5-10x faster with one thread than with
    threads that fight over the cores. threadpoolctl limits only the libraries already loaded:
    scipy's BLAS (used by scikit-learn fits) is loaded first; the command line also sets the
    usual thread variables for libraries loaded later (e.g. scikit-learn's OpenMP).
    """
    if n is None:
        yield
        return
    import scipy.linalg  # noqa: F401  (loads scipy's own BLAS, so the limits below cover it)
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def resolve_config(study: Study, *, quick: bool = False,
                   overrides: Mapping[str, Any] | None = None,
                   config_file: str | Path | None = None,
                   seeds: int | None = None) -> StudyConfig:
    """Defaults < ``--quick`` < TOML file < ``--set`` overrides < ``--seeds``."""
    file_values = load_toml(config_file) if config_file else None
    return build_config(study.Config, study.quick if quick else None, file_values, overrides,
                        {"seeds": seeds} if seeds is not None else None,
                        source_names=("--quick", str(config_file or ""), "--set", "--seeds"))


def available_memory_bytes() -> int | None:
    """Memory this machine can still give a process: MemAvailable of /proc/meminfo (Linux), else
    free physical pages (os.sysconf), else None (unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    """``1.5e9`` -> ``"1.5 GB"`` (decimal units)."""
    units = ("B", "KB", "MB", "GB", "TB", "PB", "EB")
    for unit in units[:-1]:
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} {units[-1]}"


_OOM_TEXT = ("can't allocate memory", "not enough memory", "out of memory",
             "unable to allocate", "array is too big", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed: MemoryError (numpy's _ArrayMemoryError included), torch's
    OutOfMemoryError, or torch/numpy errors whose message says the allocator refused."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, RuntimeError | ValueError):
        text = str(exc).lower()
        return any(t in text for t in _OOM_TEXT)
    return False


def config_text(cfg: StudyConfig, given: Sequence[str], quick: bool) -> str:
    """The config in the user's terms: the fields they set (``--set``, the TOML file,
    ``--seeds``) with their values, and whether it is the ``--quick`` size."""
    values = config_to_dict(cfg)
    names = [n.replace("-", "_") for n in dict.fromkeys(given)]
    parts = [f"{n}={_short(values[n])}" for n in names if n in values]
    size = "--quick" if quick else "the default size"
    return f"{', '.join(parts)} ({size})" if parts else size


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_memory(study: Study, cfg: StudyConfig, described: str) -> None:
    need = study.memory_bytes(cfg)
    if need is None:
        return
    have = available_memory_bytes()
    if have is not None and need > have:
        raise ConfigError(f"{study.name} with {described} needs about "
                          f"{format_bytes(need)} of memory; this machine has "
                          f"{format_bytes(have)} available")


def check_out_dir(out: str | Path) -> Path:
    """The results directory; an empty one is refused (it would write into the current
    directory)."""
    if not str(out).strip():
        raise ConfigError("--out is empty; give a results directory (default: runs)")
    return Path(out)


def run_study(name: str, *, quick: bool = False, overrides: Mapping[str, Any] | None = None,
              config_file: str | Path | None = None, seeds: int | None = None,
              out: str | Path = "runs", resume: bool = False, progress: Progress | None = None,
              threads: int | None = 1, write_report: bool = True, executor: str = "local",
              workers: int | None = None, address: str | None = None) -> RunOutcome:
    """Run study ``name`` and write ``result.json`` (and ``report.html``) into its run folder.

    With ``resume=True`` the newest run of the same study and resolved config continues: its
    finished trials are kept and only the missing ones run (none there: a new run, and a note
    on stderr). Raises LearnscopeError on bad input, including a config whose memory estimate
    exceeds what this machine has available (checked before a run is created). Whatever ends
    a run early marks it: ``interrupted`` (KeyboardInterrupt) or ``failed`` (anything else; an
    allocation that fails becomes a LearnscopeError naming the config).
    """
    t_start = time.perf_counter()
    out = check_out_dir(out)
    study = get_study(name)
    cfg = resolve_config(study, quick=quick, overrides=overrides, config_file=config_file,
                         seeds=seeds)
    config = config_to_dict(cfg)
    chash = stable_hash({"study": study.name, "config": config})
    specs = study.trials(cfg)
    keys = [stable_hash({"study": study.name, "trial": s}) for s in specs]
    if len(set(keys)) != len(keys):
        first: dict[str, dict[str, Any]] = {}
        for k, s in zip(keys, specs, strict=True):
            if k in first:
                raise ConfigError(f"{study.name}: two values of the config give the same trial "
                                  f"{s}; give each value once")
            first[k] = s
    given = [*(overrides or {}), *(load_toml(config_file) if config_file else {}),
             *(["seeds"] if seeds is not None else [])]
    described = config_text(cfg, given, quick)
    _check_memory(study, cfg, described)
    work = [study.trial_work(cfg, s) for s in specs]
    progress = progress or _Silent()
    runner = make_executor(executor, workers=workers, address=address)

    try:
        with RunStore(out) as store:
            run = store.latest_run(study.name, chash) if resume else None
            if resume and run is None:
                print(f"learnscope: note: no earlier run of {study.name} with this config in "
                      f"{out}; starting a new run", file=sys.stderr)
            if run is None:
                run = store.create_run(study.name, config, config_hash=chash, claim=True)
            # One writer per run: a second --resume of a run in progress is refused in one
            # line (nothing changed); whatever ends the body marks the run failed, or
            # interrupted on Ctrl-C.
            with store.running(run.run_id):
                try:
                    outcome = _run_trials_and_analyse(
                        study, cfg, run, store, runner, specs, keys, work, progress,
                        threads=threads, quick=quick, config=config, chash=chash,
                        executor=executor, write_report=write_report, t_start=t_start)
                except BaseException as exc:
                    if is_out_of_memory(exc):
                        raise LearnscopeError(
                            f"{study.name} ran out of memory with {described} "
                            f"({_one_line(exc)}); run "
                            f"{run.run_id} is marked failed") from exc
                    raise
    finally:
        progress.stop()
        runner.close()
    return outcome


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _run_trials_and_analyse(study: Study, cfg: StudyConfig, run: RunInfo, store: RunStore,
                            runner: Any, specs: list[dict[str, Any]], keys: list[str],
                            work: list[float], progress: Progress, *, threads: int | None,
                            quick: bool, config: dict[str, Any], chash: str, executor: str,
                            write_report: bool, t_start: float) -> RunOutcome:
    done = store.finished_keys(run.run_id)
    pending = [i for i, k in enumerate(keys) if k not in done]
    t_trials = time.perf_counter()
    todo = [specs[i] for i in pending]
    groups = [[pending[j] for j in g] for g in study.group_trials(cfg, todo)]
    work_left: dict[str, float] = {}
    for i in pending:
        work_left[specs[i]["part"]] = work_left.get(specs[i]["part"], 0.0) + work[i]
    meter = WorkMeter(work_left)
    state = ProgressState(len(specs) - len(pending), len(specs),
                          sum(work) - sum(work_left.values()), sum(work), "training")
    progress.start(state)
    try:
        with limited_threads(threads):
            for g, outputs, wall in runner.map(study, cfg, [[specs[i] for i in grp]
                                                              for grp in groups]):
                size = len(groups[g])
                # One transaction per batch: a kill leaves a batch stored whole or not at
                # all, so a resumed run trains exactly the batches an uninterrupted one did.
                store.save_trials(run.run_id, [
                    TrialWrite(keys[i], specs[i], output.records, output.status,
                               wall / size, output.info | {"group_size": size})
                    for i, output in zip(groups[g], outputs, strict=True)])
                batch_work = sum(work[i] for i in groups[g])
                meter.batch_done(specs[groups[g][0]]["part"], batch_work, wall)
                state.trials_done += size
                state.work_done += batch_work
                state.eta_s = meter.eta_s()
                progress.update(state, [TrialLine(specs[i], o.status, wall / size)
                                        for i, o in zip(groups[g], outputs, strict=True)])
        runner.close()  # free the workers before the analysis
        trials_s = time.perf_counter() - t_trials

        state.stage, state.eta_s = "analysis", None
        progress.update(state, [])
        results = store.load_trials(run.run_id)
        t_an = time.perf_counter()
        analysis = study.analyze(cfg, results)
        analysis_s = time.perf_counter() - t_an
        v = verdict(analysis.claims)
        statuses = [t.status for t in results]
        result = {
            "study": study.name,
            "title": study.title,
            "source": study.source,
            "run_id": run.run_id,
            "quick": quick,
            "config": config,
            "config_hash": chash,
            "claims": [c.to_dict() for c in analysis.claims],
            "verdict": v,
            "metrics": _jsonable(analysis.metrics),
            "notes": analysis.notes,
            "executor": executor,
            "trials": {"total": len(specs), "run_now": len(pending),
                       "reused": len(specs) - len(pending),
                       "diverged": statuses.count("diverged")},
            "timings": {"trials_s": round(trials_s, 3),
                        "trial_compute_s": round(sum(t.wall_s for t in results), 3),
                        "analysis_s": round(analysis_s, 3)},
            "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        run_dir = run.run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") \
                from None
        if write_report:
            from learnscope.report.html import StudySection
            from learnscope.report.html import write_report as _write

            state.stage = "report"
            progress.update(state, [])
            t_rep = time.perf_counter()
            section = StudySection.from_result(result, analysis, study.about())
            write_file_safely(run_dir / "report.html", lambda p: _write(
                p, [section], title=f"learnscope: {study.title}"))
            result["timings"]["report_s"] = round(time.perf_counter() - t_rep, 3)
        result["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
        write_file_safely(run_dir / "result.json", lambda p: _atomic_write_json(p, result))
        store.set_run_status(run.run_id, "finished", v)
    finally:
        progress.stop()
    return RunOutcome(run, run_dir, result, analysis)


def write_file_safely(path: Path, write: Any) -> Path:
    """Call ``write(path)`` (which writes ``path`` through a ``.tmp`` sibling); on an OSError
    (full disk, no permission) remove that partial ``.tmp`` and raise a one-line StoreError."""
    try:
        write(path)
    except OSError as exc:
        for tmp in (path.with_suffix(path.suffix + ".tmp"),):
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


@dataclass
class NeighbourOutcome:
    """One configuration of a robustness sweep: its overrides, verdict and failing claims."""

    name: str
    overrides: dict[str, Any]
    verdict: str
    failing: list[str]
    run_dir: Path
    seconds: float


def check_robustness(name: str, *, out: str | Path = "runs", quick: bool = True,
                     progress: Progress | None = None, executor: str = "local",
                     workers: int | None = None) -> list[NeighbourOutcome]:
    """Run study ``name`` at each of its neighbouring configurations (on top of its ``--quick``
    size by default) and report each verdict and the gating claims that failed."""
    study = get_study(name)
    base = resolve_config(study, quick=quick)
    outcomes = []
    for label, overrides in study.neighbours(base).items():
        t0 = time.perf_counter()
        outcome = run_study(name, quick=quick, overrides=overrides, out=out, progress=progress,
                            executor=executor, workers=workers)
        failing = [c["id"] for c in outcome.result["claims"] if c["gating"] and not c["holds"]]
        outcomes.append(NeighbourOutcome(label, dict(overrides), outcome.result["verdict"],
                                         failing, outcome.run_dir, time.perf_counter() - t0))
    return outcomes


def rebuild_report(run_dir: str | Path, *, standalone: bool = False) -> Path:
    """Re-analyse a stored run from the store alone and rewrite its ``report.html``
    (``standalone``: with plotly.js embedded, to open it away from its results folder)."""
    from learnscope.report.html import StudySection
    from learnscope.report.html import write_report as _write

    run_dir = Path(run_dir)
    with opened_run(run_dir) as (store, run):
        if run.config.get("kind") == "probes":
            return _rebuild_probe_report(store, run, standalone=standalone)
        study = get_study(run.study)
        cfg = build_config(study.Config, run.config)
        results = store.load_trials(run.run_id)
    analysis = study.analyze(cfg, results)
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {
        "study": study.name, "title": study.title, "source": study.source,
        "run_id": run.run_id, "config": run.config}
    result["claims"] = [c.to_dict() for c in analysis.claims]
    result["verdict"] = verdict(analysis.claims)
    path = run_dir / "report.html"
    section = StudySection.from_result(result, analysis, study.about())
    return write_file_safely(path, lambda p: _write(p, [section],
                                                    title=f"learnscope: {study.title}",
                                                    standalone=standalone))


def _rebuild_probe_report(store: RunStore, run: RunInfo, *, standalone: bool = False) -> Path:
    from learnscope.report.probe_report import write_probe_report

    result_path = run.run_dir / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
    else:  # killed before it closed: rebuild from the store alone
        result = {"kind": "probes", "study": run.study, "run_id": run.run_id,
                  "status": run.status, "config": run.config}
    records = store.load_records(run.run_id)
    from learnscope.analysis.findings import compute_findings

    # Recomputed from the store (plus what result.json kept besides the records).
    result["findings"] = [c.to_dict() for c in compute_findings(
        records, result.get("findings_context"))]
    result.pop("findings_error", None)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    return write_probe_report(run.run_dir / "report.html", result, records,
                              standalone=standalone)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    return jsonable(obj)
