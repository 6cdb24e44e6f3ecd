"""Run a study end to end: resolve the config, run missing trials, analyse, write the outputs.

This is the API behind ``learnscope run``::

    from learnscope import run_study
    outcome = run_study("double-descent", quick=True, out="runs")
    outcome.result["verdict"]
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from learnscope.analysis import Analysis, jsonable, verdict
from learnscope.config import StudyConfig, build_config, config_to_dict, load_toml, stable_hash
from learnscope.exec import make_executor
from learnscope.store import RunInfo, RunStore
from learnscope.store.sqlite import TrialWrite, opened_run
from learnscope.studies import get_study
from learnscope.studies.base import Study


class Progress(Protocol):
    """What the runner reports while it works (the CLI draws a progress bar from it)."""

    def start(self, total: int, completed: int, description: str) -> None: ...
    def advance(self, status: str) -> None: ...
    def stop(self) -> None: ...


class _Silent:
    def start(self, total: int, completed: int, description: str) -> None:
        pass

    def advance(self, status: str) -> None:
        pass

    def stop(self) -> None:
        pass


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
    threads that fight over the cores.
    """
    if n is None:
        yield
        return
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


def versions() -> dict[str, str]:
    """Versions of learnscope, Python and the numerical packages (read from their metadata,
    without importing them: importing scikit-learn alone takes a second or more)."""
    from importlib.metadata import PackageNotFoundError, version

    from learnscope import __version__

    out = {"learnscope": __version__, "python": sys.version.split()[0],
           "torch": torch.__version__}
    for name in ("numpy", "scipy", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover
            out[name] = "not installed"
    return out | {"platform": platform.platform()}


def run_study(name: str, *, quick: bool = False, overrides: Mapping[str, Any] | None = None,
              config_file: str | Path | None = None, seeds: int | None = None,
              out: str | Path = "runs", resume: bool = False, progress: Progress | None = None,
              threads: int | None = 1, write_report: bool = True, executor: str = "local",
              workers: int | None = None, address: str | None = None) -> RunOutcome:
    """Run study ``name`` and write ``result.json`` (and ``report.html``) into its run folder.

    With ``resume=True`` the newest run of the same study and resolved config continues: its
    finished trials are kept and only the missing ones run. Raises LearnscopeError on bad input.
    """
    t_start = time.perf_counter()
    study = get_study(name)
    cfg = resolve_config(study, quick=quick, overrides=overrides, config_file=config_file,
                         seeds=seeds)
    config = config_to_dict(cfg)
    chash = stable_hash({"study": study.name, "config": config})
    specs = study.trials(cfg)
    keys = [stable_hash({"study": study.name, "trial": s}) for s in specs]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"study {name} produced duplicate trial specs")
    progress = progress or _Silent()
    runner = make_executor(executor, workers=workers, address=address)

    with RunStore(out) as store:
        run = store.latest_run(study.name, chash) if resume else None
        if run is None:
            run = store.create_run(study.name, config, config_hash=chash)
        else:
            store.set_run_status(run.run_id, "running")
        done = store.finished_keys(run.run_id)
        pending = [i for i, k in enumerate(keys) if k not in done]
        t_trials = time.perf_counter()
        progress.start(len(specs), len(specs) - len(pending), f"{study.name} trials")
        todo = [specs[i] for i in pending]
        groups = [[pending[j] for j in g] for g in study.group_trials(cfg, todo)]
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
                    for output in outputs:
                        progress.advance(output.status)
        except KeyboardInterrupt:
            store.set_run_status(run.run_id, "interrupted")
            raise
        finally:
            progress.stop()
            runner.close()
        trials_s = time.perf_counter() - t_trials

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
        run_dir.mkdir(parents=True, exist_ok=True)
        if write_report:
            from learnscope.report.html import StudySection
            from learnscope.report.html import write_report as _write

            t_rep = time.perf_counter()
            _write(run_dir / "report.html",
                   [StudySection.from_result(result, analysis, study.about())],
                   title=f"learnscope: {study.title}")
            result["timings"]["report_s"] = round(time.perf_counter() - t_rep, 3)
        result["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
        _atomic_write_json(run_dir / "result.json", result)
        store.set_run_status(run.run_id, "finished", v)
    return RunOutcome(run, run_dir, result, analysis)


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


def rebuild_report(run_dir: str | Path) -> Path:
    """Re-analyse a stored run from the store alone and rewrite its ``report.html``."""
    from learnscope.report.html import StudySection
    from learnscope.report.html import write_report as _write

    run_dir = Path(run_dir)
    with opened_run(run_dir) as (store, run):
        if run.config.get("kind") == "probes":
            return _rebuild_probe_report(store, run)
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
    _write(path, [StudySection.from_result(result, analysis, study.about())],
           title=f"learnscope: {study.title}")
    return path


def _rebuild_probe_report(store: RunStore, run: RunInfo) -> Path:
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
    return write_probe_report(run.run_dir / "report.html", result, records)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def _jsonable(obj: Any) -> Any:
    return jsonable(obj)
