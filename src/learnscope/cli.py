"""The ``learnscope`` command line.

Exit codes: 0 success (whatever the verdict: a claim that fails is a result, not a crash),
1 with ``--strict`` when a gating claim fails, 2 on bad input (one line, no traceback),
130 when interrupted (finished trials stay stored; ``--resume`` completes the run).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from learnscope.errors import LearnscopeError

# Only light modules at import time: `learnscope --help` and `learnscope list` import neither
# torch nor any study; each command imports what it needs.

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="learnscope: a laboratory for how deep neural networks learn.")
try:  # typer >= 0.20 ships its own copy of click
    from typer._click import core as _click_core
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import core as _click_core  # type: ignore[no-redef]
    from click import exceptions as _click_exc  # type: ignore[no-redef]

err = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        from learnscope import __version__

        print(f"learnscope {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", help="print the version and exit", is_eager=True, callback=_version)
        ] = False) -> None:
    """learnscope: a laboratory for how deep neural networks learn."""


def _eta_column() -> Any:
    """A column that counts down from the runner's last ETA; blank while the runner has none it
    can stand behind."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            at = task.fields.get("eta_at")
            if at is None:
                return Text("")
            left = max(0, round(at - time.monotonic()))
            return Text(f"eta ~{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}",
                        style="progress.remaining")

    return EtaColumn()


class _Bar:
    """A progress bar (on stderr) that fills by work, names the stage (training, analysis,
    report) and shows an ETA only when the runner has one; ``verbose`` adds a line per trial."""

    def __init__(self, enabled: bool, *, verbose: bool = False, study: str = "") -> None:
        self.enabled = enabled
        self.verbose = verbose
        self.study = study
        self._progress: Any = None
        self._task: Any = None

    def start(self, state: Any) -> None:
        _clear_transient()
        if not self.enabled:
            return
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.fields[trials]}"), TimeElapsedColumn(), _eta_column(),
            console=err, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(
            self._description(state), total=max(state.work_total, 1e-9),
            completed=state.work_done, trials=self._trials(state), eta_at=None)

    def update(self, state: Any, finished: Any) -> None:
        if self.verbose:
            for line in finished:
                axes = " ".join(f"{k}={v}" for k, v in line.spec.items() if k != "part")
                text = (f"  {line.spec.get('part', '')} {axes}: {line.status} "
                        f"{line.seconds:.2f} s")
                (self._progress.console if self._progress is not None else err).print(
                    text, markup=False, highlight=False)
        if self._progress is None:
            return
        eta_at = None if state.eta_s is None else time.monotonic() + state.eta_s
        self._progress.update(self._task, completed=state.work_done,
                              description=self._description(state),
                              trials=self._trials(state), eta_at=eta_at)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _description(self, state: Any) -> str:
        return f"{self.study}: {state.stage}" if self.study else state.stage

    @staticmethod
    def _trials(state: Any) -> str:
        return f"trials {state.trials_done}/{state.trials_total}"


_shown: list[bool] = [False]


def _transient(text: str) -> None:
    """A status line on a terminal's stderr that the progress bar or an error replaces (not
    written where stderr is a file or pipe: there bad input stays one line)."""
    if sys.stderr.isatty():
        sys.stderr.write(text)
        sys.stderr.flush()
        _shown[0] = True


def _clear_transient() -> None:
    if _shown[0]:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
        _shown[0] = False


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command("list")
def list_cmd() -> None:
    """List every study: name, what it shows, where it comes from."""
    import warnings

    from learnscope.studies import study_infos

    with warnings.catch_warnings(record=True) as problems:
        warnings.simplefilter("always")
        infos = study_infos()  # reads the study modules' source; imports none of them
    table = Table(show_lines=False)
    table.add_column("study", style="cyan", no_wrap=True)
    table.add_column("what it shows")
    table.add_column("source")
    for info in infos:
        table.add_row(info.name, info.summary, info.source)
    out.print(table)
    for w in problems:
        print(f"learnscope: warning: {w.message}", file=sys.stderr)


@app.command()
def show(study: StudyArg) -> None:
    """Show a study's config fields: type, default, --quick value and meaning."""
    from learnscope.config import describe
    from learnscope.studies import get_study

    s = get_study(study)
    out.print(f"[bold]{s.name}[/]: {s.title}\n[dim]source: {s.source}[/]\n")
    out.print(s.about() + "\n", markup=False, highlight=False)
    table = Table()
    table.add_column("field", style="cyan", no_wrap=True)
    table.add_column("type", no_wrap=True)
    for col in ("default", "--quick", "accepts", "meaning"):
        table.add_column(col, overflow="fold")
    for f in describe(s.Config):
        quick = s.quick.get(f.name, "")
        table.add_row(f.name, f.type_name, json.dumps(f.default),
                      json.dumps(quick) if quick != "" else "", f.constraint, f.help)
    out.print(table)
    out.print("[dim]set a field with --set field=value (lists: --set widths=10,20,40) or a TOML "
              "file with the fields at top level (--config FILE.toml)[/]")


def _run_one(study: str, *, quick: bool, sets: list[str], config: Path | None,
             seeds: int | None, out_dir: str, resume: bool, bar: _Bar,
             executor: str, workers: int | None, address: str | None,
             device: str | None) -> dict[str, Any]:
    if bar.enabled:  # importing torch and the study takes seconds on a busy machine
        _transient(f"preparing {study}...")
    from learnscope.config import parse_assignments
    from learnscope.runner import run_study

    overrides = ({"device": device} if device else {}) | parse_assignments(sets)
    outcome = run_study(study, quick=quick, overrides=overrides, config_file=config,
                        seeds=seeds, out=out_dir, resume=resume, progress=bar,
                        executor=executor, workers=workers, address=address)
    return outcome.result | {"run_dir": str(outcome.run_dir)}


def _result_line(result: dict[str, Any], report: Path | None) -> str:
    claims = result["claims"]
    gating = [c for c in claims if c.get("gating", True)]
    held = sum(1 for c in gating if c["holds"])
    where = f"; report: {report}" if report is not None else ""
    return f"{result['study']}: {result['verdict']} ({held}/{len(gating)} claims hold){where}"


OutOpt = Annotated[str, typer.Option(
    "--out", metavar="DIR", help="results directory (database + run folders)")]
ExecOpt = Annotated[str, typer.Option(
    "--executor", metavar="NAME",
    help="where trials run: local (this process), process (a local pool), ray")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", metavar="N", help="processes for --executor process/ray (default: one per core)")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", metavar="HOST:PORT", help="Ray cluster to join (HOST:PORT or ray://HOST:PORT)")]
StrictOpt = Annotated[bool, typer.Option("--strict", metavar="",
                                         help="exit 1 when a claim does not hold")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", metavar="cpu|cuda",
    help="where models train: cpu (default) or cuda (where a GPU is present)")]
StudyArg = Annotated[str, typer.Argument(metavar="STUDY",
                                         help="study name (see `learnscope list`)")]
QuietOpt = Annotated[bool, typer.Option(
    "-q", "--quiet", metavar="", help="no progress bar; print only the result line")]
VerboseOpt = Annotated[bool, typer.Option(
    "-v", "--verbose", metavar="", help="also print a line per finished trial")]


def _bar(quiet: bool, verbose: bool, study: str = "") -> _Bar:
    if quiet and verbose:
        raise LearnscopeError("-q/--quiet and -v/--verbose exclude each other")
    return _Bar(not quiet, verbose=verbose, study=study)


@app.command()
def run(
    study: StudyArg,
    quick: Annotated[bool, typer.Option(
        "--quick", metavar="", help="the small size (under a minute)")] = False,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", metavar="FIELD=VALUE",
        help="override a config field (repeatable; lists as a,b,c)")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="FILE.toml", help="TOML file of config fields")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", metavar="N",
                                              help="number of seeds")] = None,
    out_dir: OutOpt = "runs",
    resume: Annotated[bool, typer.Option(
        "--resume", metavar="",
        help="continue the newest run with the same config; skip finished trials")] = False,
    strict: StrictOpt = False,
    as_json: Annotated[bool, typer.Option(
        "--json", metavar="", help="print result.json to stdout")] = False,
    executor: ExecOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> int:
    """Run a study: train, measure, check its claims, write result.json and report.html."""
    from learnscope.report.terminal import print_claims

    _sigterm_as_interrupt()
    bar = _bar(quiet or as_json, verbose, study)
    result = _run_one(study, quick=quick, sets=sets or [], config=config, seeds=seeds,
                      out_dir=out_dir, resume=resume, bar=bar,
                      executor=executor, workers=workers, address=address, device=device)
    report = Path(result["run_dir"]) / "report.html"
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        print(f"report: {report}", file=sys.stderr)
    elif quiet:
        print(_result_line(result, report))
    else:
        print_claims(result, out)
        t = result["trials"]
        out.print(f"{t['run_now']} trials run, {t['reused']} reused, {t['diverged']} diverged; "
                  f"{result['timings']['total_s']:.1f} s")
        print(f"report: {report}")  # one line whatever the width: easy to copy
    return 1 if strict and result["verdict"] != "reproduced" else 0


JobsOpt = Annotated[int | None, typer.Option(
    "--jobs", metavar="N",
    help="studies run at once, each in its own process (default: one per core, at most one "
         "per study; 1: one after another in this process)")]


@app.command()
def tour(
    quick: Annotated[bool, typer.Option(
        "--quick", metavar="", help="the small size of every study")] = False,
    out_dir: OutOpt = "runs",
    resume: Annotated[bool, typer.Option("--resume", metavar="",
                                         help="reuse finished trials")] = False,
    strict: StrictOpt = False,
    jobs: JobsOpt = None,
    executor: ExecOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> int:
    """Run every registered study and write one combined report (with each study's time).

    Studies run in parallel processes (--jobs), longest first; a study that fails is reported
    as such and the tour goes on (exit 1)."""
    _bar(quiet, verbose)  # refuse -q with -v before anything runs
    if not quiet:
        _transient("preparing the tour...")
    from learnscope.report.terminal import print_claims
    from learnscope.runner import check_out_dir
    from learnscope.studies import study_names
    from learnscope.tour import StudyRun, run_tour, write_tour

    _sigterm_as_interrupt()
    root = check_out_dir(out_dir)
    names = study_names()
    jobs = _tour_jobs(jobs, executor, len(names))
    _check_tour_inputs(root, executor=executor, workers=workers, address=address,
                       device=device)
    if not quiet and jobs > 1:
        _clear_transient()
        err.print(f"tour: {len(names)} studies in {jobs} processes", highlight=False)

    def finished(run: StudyRun) -> None:
        if run.result is not None and not quiet and (jobs == 1 or verbose):
            print_claims(run.result, out)
        print(_tour_line(run), flush=True)

    outcome = run_tour(names, quick=quick, out=root, resume=resume, jobs=jobs,
                       executor=executor, workers=workers, address=address,
                       overrides={n: {"device": device} for n in names} if device else None,
                       progress_for=lambda name: _bar(quiet, verbose, name),
                       on_finish=finished)
    outcome = write_tour(root, outcome, quick=quick)
    if not quiet:
        summary = Table(title="tour", caption=f"total wall time {outcome.wall_s:.1f} s "
                        f"({outcome.jobs} process{'es' if outcome.jobs > 1 else ''})")
        for col in ("study", "verdict", "claims hold", "wall s", "CPU s"):
            summary.add_column(col, style="cyan" if col == "study" else None,
                               justify="right" if col.endswith(" s") else "left")
        for r in outcome.runs:
            summary.add_row(r.name, r.verdict, _held(r.result) if r.result else "-",
                            f"{r.wall_s:.1f}", "-" if r.cpu_s is None else f"{r.cpu_s:.1f}")
        out.print(summary)
    else:
        print(f"tour: {len(outcome.runs)} studies, {outcome.wall_s:.1f} s wall")
    if outcome.failed:
        print(f"learnscope: {len(outcome.failed)} of {len(outcome.runs)} studies failed: "
              f"{', '.join(outcome.failed)}", file=sys.stderr)
    print(f"combined report: {outcome.report}")
    if outcome.failed:
        return 1
    return 1 if strict and any(r.verdict != "reproduced" for r in outcome.runs) else 0


def _held(result: dict[str, Any]) -> str:
    gating = [c for c in result["claims"] if c.get("gating", True)]
    return f"{sum(1 for c in gating if c['holds'])}/{len(gating)}"


def _tour_line(run: Any) -> str:
    """One finished study of a tour: verdict and seconds, or why it failed."""
    if run.result is None:
        return f"{run.name}: failed after {run.wall_s:.1f} s: {run.error}"
    return (f"{run.name}: {run.verdict} ({_held(run.result)} claims hold), "
            f"{run.wall_s:.1f} s")


def _tour_jobs(jobs: int | None, executor: str, n_studies: int) -> int:
    """--jobs checked: at least 1, at most the cores; default one per core and study. Trials
    spread by --executor process/ray run studies one at a time (not both at once)."""
    from learnscope.exec.process import available_cores
    from learnscope.tour import default_jobs

    if jobs is None:
        return default_jobs(n_studies) if executor == "local" else 1
    if jobs < 1:
        raise LearnscopeError(f"--jobs must be at least 1, got {jobs}")
    cores = available_cores()
    if jobs > cores:
        raise LearnscopeError(f"--jobs {jobs} is more than this machine's {cores} cores")
    if jobs > 1 and executor != "local":
        raise LearnscopeError(f"--jobs {jobs} runs studies in parallel processes; with "
                              f"--executor {executor} give --jobs 1 (the trials are spread "
                              "instead)")
    return jobs


def _check_tour_inputs(root: Path, *, executor: str, workers: int | None,
                       address: str | None, device: str | None) -> None:
    """What would fail every study fails the tour before it starts, in one line: the
    results folder and its store, the executor's options, the device."""
    from learnscope.config import StudyConfig, build_config
    from learnscope.exec import make_executor
    from learnscope.store import RunStore

    if device:
        build_config(StudyConfig, {"device": device})
    if executor != "ray":  # a Ray executor connects as it is made: its studies tell
        make_executor(executor, workers=workers, address=address).close()
    RunStore(root).close()


@app.command()
def robustness(
    study: StudyArg,
    out_dir: OutOpt = Path("runs"),
    strict: StrictOpt = False,
    executor: ExecOpt = "local",
    workers: WorkersOpt = None,
) -> int:
    """Run a study at its neighbouring configurations: every gating claim should hold at each.

    Neighbours are other seeds, sizes changed by about 50% and another noise level, on top of
    the study's --quick size."""
    from learnscope.runner import check_robustness

    _sigterm_as_interrupt()
    outcomes = check_robustness(study, out=out_dir, progress=_Bar(True, study=study),
                                executor=executor, workers=workers)
    table = Table(title=f"{study}: robustness")
    for col in ("configuration", "overrides", "verdict", "failing gating claims", "s"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        table.add_row(o.name, ", ".join(f"{k}={v}" for k, v in o.overrides.items()), o.verdict,
                      ", ".join(o.failing) or "-", f"{o.seconds:.0f}")
    out.print(table)
    return 1 if strict and any(o.verdict != "reproduced" for o in outcomes) else 0


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR", help="a run folder: OUT/<study>/<run-id>")],
           standalone: Annotated[bool, typer.Option(
               "--standalone", help="embed plotly.js (4.8 MB) so the report opens on its own, "
               "e.g. after copying the run folder elsewhere")] = False) -> None:
    """Rebuild a run's report.html from the store."""
    from learnscope.runner import rebuild_report

    print(f"report: {rebuild_report(run_dir, standalone=standalone)}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR",
                                            help="a run folder: OUT/<study>/<run-id>")],
    tensorboard: Annotated[Path | None, typer.Option(
        "--tensorboard", metavar="DIR", help="write TensorBoard event files here (a study run: one folder "
        "per trial)")] = None,
    csv: Annotated[Path | None, typer.Option(
        "--csv", metavar="FILE", help="write the records as a tidy CSV table")] = None,
    parquet: Annotated[Path | None, typer.Option(
        "--parquet", metavar="FILE", help="write the records as a tidy parquet table (needs pyarrow)")] = None,
    figures: Annotated[Path | None, typer.Option(
        "--figures", metavar="DIR", help="write the report's figures as images here (needs kaleido)")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", metavar="png|svg|pdf", help="image format for --figures: png, svg or pdf")] = "png",
) -> None:
    """Export a stored run (study or probes): tidy table, TensorBoard, figure images."""
    from learnscope import export

    if tensorboard is None and csv is None and parquet is None and figures is None:
        raise LearnscopeError("nothing to export: give --csv FILE, --parquet FILE, "
                              "--tensorboard DIR or --figures DIR")
    if csv is not None:
        out.print(f"csv: {export.to_csv(run_dir, csv)}")
    if parquet is not None:
        out.print(f"parquet: {export.to_parquet(run_dir, parquet)}")
    if tensorboard is not None:
        out.print(f"tensorboard: {export.to_tensorboard(run_dir, tensorboard)}")
    if figures is not None:
        paths = export.figures(run_dir, figures, fmt=fmt)
        out.print(f"figures: {len(paths)} in {figures}")


def _command() -> Any:
    """The click command of ``app``; flags (and -h/--help, --install-completion) show no type
    label in --help (typer labels every option, flags as ``<bool>``)."""
    command = typer.main.get_command(app)
    for cmd in [command, *getattr(command, "commands", {}).values()]:
        ctx = _click_core.Context(cmd, help_option_names=["-h", "--help"])
        for param in [*cmd.params, cmd.get_help_option(ctx)]:
            if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
    return command


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input is one line on stderr and exit code 2, never a traceback."""
    command = _command()
    try:
        try:
            code = command.main(args=argv, prog_name="learnscope", standalone_mode=False)
        finally:
            _clear_transient()
    except typer.Exit as exc:
        code = exc.exit_code
    except _click_exc.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # help was printed: not an error
            return 0
        msg = exc.format_message().replace("\n", " ")
        print(f"learnscope: error: {msg}", file=sys.stderr)
        code = 2
    except LearnscopeError as exc:
        print(f"learnscope: error: {exc}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:  # typer turns KeyboardInterrupt (Ctrl-C, or SIGTERM here) into exit 130
        print("learnscope: interrupted; finished trials are stored, run the same command with "
              "--resume to complete it", file=sys.stderr)
    return int(code or 0)


def _entry() -> None:
    import os

    # Trials run on one thread each (parallelism comes from processes): libraries that read
    # these when they load (OpenMP, OpenBLAS, MKL) start with one thread too, unless set.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    sys.exit(main())


if __name__ == "__main__":
    _entry()
