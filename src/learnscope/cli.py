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

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="learnscope: a laboratory for how deep neural networks learn.")
try:  # typer >= 0.20 ships its own copy of click
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as _click_exc  # type: ignore[no-redef]

err = Console(stderr=True)
out = Console()


class _Bar:
    """A rich progress bar over trials, with an ETA (drawn on stderr)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int, completed: int, description: str) -> None:
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err,
            transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=completed)

    def advance(self, status: str) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


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
def show(study: Annotated[str, typer.Argument(help="study name (see `learnscope list`)")]
         ) -> None:
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
             seeds: int | None, out_dir: Path, resume: bool, progress: bool,
             executor: str, workers: int | None, address: str | None,
             device: str | None) -> dict[str, Any]:
    from learnscope.config import parse_assignments
    from learnscope.runner import run_study

    overrides = ({"device": device} if device else {}) | parse_assignments(sets)
    outcome = run_study(study, quick=quick, overrides=overrides, config_file=config,
                        seeds=seeds, out=out_dir, resume=resume, progress=_Bar(progress),
                        executor=executor, workers=workers, address=address)
    return outcome.result | {"run_dir": str(outcome.run_dir)}


OutOpt = Annotated[Path, typer.Option("--out", help="results directory (database + run folders)")]
ExecOpt = Annotated[str, typer.Option(
    "--executor", help="where trials run: local (this process), process (a local pool), ray")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="processes for --executor process/ray (default: one per core)")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster to join (HOST:PORT or ray://HOST:PORT)")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="exit 1 when a claim does not hold")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="where models train: cpu (default) or cuda (where a GPU is present)")]


@app.command()
def run(
    study: Annotated[str, typer.Argument(help="study name (see `learnscope list`)")],
    quick: Annotated[bool, typer.Option("--quick", help="the small size (under a minute)")] = False,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="override a config field: --set field=value (repeatable)")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML file of config fields")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="number of seeds")] = None,
    out_dir: OutOpt = Path("runs"),
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue the newest run with the same config; skip finished trials")
    ] = False,
    strict: StrictOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print result.json to stdout")] = False,
    executor: ExecOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    device: DeviceOpt = None,
) -> int:
    """Run a study: train, measure, check its claims, write result.json and report.html."""
    from learnscope.report.terminal import print_claims

    _sigterm_as_interrupt()
    result = _run_one(study, quick=quick, sets=sets or [], config=config, seeds=seeds,
                      out_dir=out_dir, resume=resume, progress=not as_json,
                      executor=executor, workers=workers, address=address, device=device)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        print_claims(result, out)
        t = result["trials"]
        out.print(f"{t['run_now']} trials run, {t['reused']} reused, {t['diverged']} diverged; "
                  f"{result['timings']['total_s']:.1f} s")
        out.print(f"report: {Path(result['run_dir']) / 'report.html'}")
    return 1 if strict and result["verdict"] != "reproduced" else 0


@app.command()
def tour(
    quick: Annotated[bool, typer.Option("--quick", help="the small size of every study")] = False,
    out_dir: OutOpt = Path("runs"),
    resume: Annotated[bool, typer.Option("--resume", help="reuse finished trials")] = False,
    strict: StrictOpt = False,
    executor: ExecOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    device: DeviceOpt = None,
) -> int:
    """Run every registered study and write one combined report."""
    from learnscope.report.html import StudySection, write_report
    from learnscope.report.terminal import print_claims
    from learnscope.runner import run_study
    from learnscope.studies import get_study, study_names

    _sigterm_as_interrupt()
    sections, verdicts = [], []
    for name in study_names():
        outcome = run_study(name, quick=quick, out=out_dir, resume=resume, progress=_Bar(True),
                            executor=executor, workers=workers, address=address,
                            overrides={"device": device} if device else None)
        print_claims(outcome.result, out)
        sections.append(StudySection.from_result(outcome.result, outcome.analysis,
                                                 get_study(name).about()))
        verdicts.append(outcome.result["verdict"])
    tour_dir = out_dir / "tour" / time.strftime("%Y%m%d-%H%M%S")
    tour_dir.mkdir(parents=True, exist_ok=True)
    path = write_report(tour_dir / "report.html", sections, title="learnscope tour")
    summary = Table(title="tour")
    summary.add_column("study", style="cyan")
    summary.add_column("verdict")
    for s, v in zip(sections, verdicts, strict=True):
        summary.add_row(s.study, v)
    out.print(summary)
    out.print(f"combined report: {path}")
    return 1 if strict and any(v != "reproduced" for v in verdicts) else 0


@app.command()
def robustness(
    study: Annotated[str, typer.Argument(help="study name (see `learnscope list`)")],
    out_dir: OutOpt = Path("runs"),
    strict: StrictOpt = False,
    executor: ExecOpt = "local",
    workers: WorkersOpt = None,
) -> int:
    """Run a study at its neighbouring configurations (other seeds, sizes +-50%, another noise
    level; on top of its --quick size): every gating claim should hold at each."""
    from learnscope.runner import check_robustness

    _sigterm_as_interrupt()
    outcomes = check_robustness(study, out=out_dir, progress=_Bar(True), executor=executor,
                                workers=workers)
    table = Table(title=f"{study}: robustness")
    for col in ("configuration", "overrides", "verdict", "failing gating claims", "s"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        table.add_row(o.name, ", ".join(f"{k}={v}" for k, v in o.overrides.items()), o.verdict,
                      ", ".join(o.failing) or "-", f"{o.seconds:.0f}")
    out.print(table)
    return 1 if strict and any(o.verdict != "reproduced" for o in outcomes) else 0


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder: OUT/<study>/<run-id>")]
           ) -> None:
    """Rebuild a run's report.html from the store."""
    from learnscope.runner import rebuild_report

    out.print(f"report: {rebuild_report(run_dir)}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run folder: OUT/<study>/<run-id>")],
    tensorboard: Annotated[Path | None, typer.Option(
        "--tensorboard", help="write TensorBoard event files here (a study run: one folder "
        "per trial)")] = None,
    csv: Annotated[Path | None, typer.Option(
        "--csv", help="write the records as a tidy CSV table")] = None,
    parquet: Annotated[Path | None, typer.Option(
        "--parquet", help="write the records as a tidy parquet table (needs pyarrow)")] = None,
    figures: Annotated[Path | None, typer.Option(
        "--figures", help="write the report's figures as images here (needs kaleido)")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="image format for --figures: png, svg or pdf")] = "png",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input is one line on stderr and exit code 2, never a traceback."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="learnscope", standalone_mode=False)
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
    sys.exit(main())


if __name__ == "__main__":
    _entry()
