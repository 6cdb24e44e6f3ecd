"""The command line audit: one-line errors for impossible sizes, runs marked however they end,
honest progress, and the usual command-line conventions."""

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from learnscope.cli import main
from learnscope.config import build_config, load_toml
from learnscope.errors import ConfigError
from learnscope.report.terminal import print_claims
from learnscope.runner import WorkMeter, available_memory_bytes, format_bytes, is_out_of_memory
from learnscope.studies import get_study
from learnscope.studies.base import Study
from learnscope.studies.double_descent import DoubleDescentConfig
from learnscope.studies.random_labels import RandomLabelsConfig

# The double-descent study at a size that runs in a few seconds (its claims mean nothing here).
TINY = ["run", "double-descent", "--quick"] + [
    a for k, v in get_study("double-descent").tiny.items()
    for a in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")]


def _one_error_line(capsys, needle):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("learnscope: error:") and needle in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _runs(out):
    db = out / "learnscope.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT run_id, status FROM runs ORDER BY created").fetchall()
    finally:
        con.close()


# -- 1. a run that ends early is marked, whatever ends it -------------------------------------
@pytest.mark.parametrize("exc,status", [(ValueError("boom"), "failed"),
                                        (KeyboardInterrupt(), "interrupted")])
def test_crash_after_run_created_marks_the_run(tmp_path, monkeypatch, exc, status):
    def explode(self, cfg, specs):
        raise exc

    monkeypatch.setattr(Study, "run_group", explode)
    from learnscope.runner import run_study

    with pytest.raises(type(exc)):
        run_study("double-descent", quick=True, seeds=2, out=tmp_path)
    assert [s for _, s in _runs(tmp_path)] == [status]


# -- 2. sizes that cannot be allocated: one line, before or instead of a crash ----------------
@pytest.mark.parametrize("field,value,needle", [
    ("hidden", "1e30", "field 'hidden' expects an int within +-2**63-1 (64 bits), got '1e30'"),
    ("batch_size", "1e19", "field 'batch_size' expects an int within"),
    ("hidden", "1e999999999", "field 'hidden' expects int"),
    ("lr", "1e999", "field 'lr' must be finite"),
    ("noise_levels", "0,0.5,0.5,1", "field 'noise_levels' lists 0.5 twice"),
])
def test_impossible_values_one_line(tmp_path, capsys, field, value, needle):
    assert main(["run", "random-labels", "--set", f"{field}={value}",
                 "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, needle)
    assert _runs(tmp_path) == []


def test_ints_are_exact_and_64_bit():
    assert build_config(RandomLabelsConfig, {"hidden": "1e3"}).hidden == 1000
    assert build_config(RandomLabelsConfig, {"seed": str(2**63 - 1)}).seed == 2**63 - 1
    with pytest.raises(ConfigError, match="64 bits"):
        build_config(RandomLabelsConfig, {"seed": str(2**63)})
    with pytest.raises(ConfigError, match="64 bits"):
        build_config(RandomLabelsConfig, {"hidden": 10**30})  # a TOML integer
    with pytest.raises(ConfigError, match="too large for a float"):
        build_config(RandomLabelsConfig, {"lr": 10**400})
    with pytest.raises(ConfigError, match="lists 4 twice"):
        build_config(DoubleDescentConfig, {"mlp_widths": "4,4"})


def test_every_declared_config_is_accepted():
    # quick, tiny and neighbouring configurations hold no duplicate and no out-of-range value
    from learnscope.runner import resolve_config
    from learnscope.studies import study_names

    for name in study_names():
        study = get_study(name)
        base = resolve_config(study, quick=True)
        resolve_config(study, quick=True, overrides=study.tiny)
        for overrides in study.neighbours(base).values():
            resolve_config(study, quick=True, overrides=overrides)


def test_seeds_bounded(tmp_path, capsys):
    assert main(["run", "double-descent", "--seeds", "99999999999999999999",
                 "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "field 'seeds' expects an int within")
    assert main(["run", "double-descent", "--seeds", "1000000000000",
                 "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "field 'seeds' must be <= 10000")


def test_toml_huge_int_and_not_utf8(tmp_path, capsys):
    huge = tmp_path / "huge.toml"
    huge.write_text(f"hidden = {10**30}\n")
    assert main(["run", "random-labels", "--config", str(huge), "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "field 'hidden' expects an int within")
    latin = tmp_path / "latin.toml"
    latin.write_bytes("seeds = 2\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_toml(latin)
    assert main(["run", "random-labels", "--config", str(latin), "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "is not UTF-8 text")


def test_memory_estimate_refused_before_the_run_exists(tmp_path, capsys, monkeypatch):
    have = available_memory_bytes()
    assert have is not None and have > 0
    monkeypatch.setattr(Study, "memory_bytes", lambda self, cfg: 1000.0 * have)
    assert main(["run", "random-labels", "--set", "hidden=100000", "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys, "random-labels with hidden=100000 (the default size) needs")
    assert "available" in line
    assert _runs(tmp_path) == []


@pytest.mark.parametrize("exc", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 40000000000 bytes. Error code 12"),
    ValueError("array is too big; `arr.size * arr.itemsize` is larger than the maximum "
               "possible size."),
])
def test_allocation_failure_one_line_and_run_failed(tmp_path, capsys, monkeypatch, exc):
    def allocate(self, cfg, specs):
        raise exc

    monkeypatch.setattr(Study, "run_group", allocate)
    assert main(["run", "random-labels", "--quick", "--set", "hidden=300",
                 "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys, "random-labels ran out of memory with hidden=300 (--quick)")
    assert "marked failed" in line
    assert [s for _, s in _runs(tmp_path)] == ["failed"]


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(KeyError("x"))
    assert format_bytes(1.5e9) == "1.5 GB" and format_bytes(12) == "12 B"


def test_report_on_full_disk_one_line_no_tmp(tmp_path, capsys, monkeypatch):
    real_write_text = Path.write_text

    def full_disk(self, data, *args, **kwargs):
        if self.name.endswith(".html.tmp"):
            real_write_text(self, data[: len(data) // 2], *args, **kwargs)  # partly written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main([*TINY, "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys, "cannot write")
    assert "report.html" in line and "No space left on device" in line
    assert not list(tmp_path.rglob("*.tmp"))
    assert [s for _, s in _runs(tmp_path)] == ["failed"]


# -- 3. --out, --resume ------------------------------------------------------------------------
def test_empty_out_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "double-descent", "--out", ""]) == 2
    _one_error_line(capsys, "--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path), "--resume", "-q"]) == 0
    err = capsys.readouterr().err
    assert ("learnscope: note: no earlier run of double-descent with this config in "
            f"{tmp_path}; starting a new run") in err
    assert main([*TINY, "--out", str(tmp_path), "--resume", "-q"]) == 0
    assert "note" not in capsys.readouterr().err


# -- 4. progress -------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_eta_only_from_measurements():
    clock = _Clock()
    meter = WorkMeter({"a": 10.0, "b": 100.0}, clock=clock)
    assert meter.eta_s() is None  # nothing measured
    clock.t = 1.0
    meter.batch_done("a", 1.0, 1.0)
    assert meter.eta_s() is None  # one batch
    clock.t = 2.0
    meter.batch_done("a", 1.0, 1.0)
    assert meter.eta_s() is None  # part b has work left and no measurement
    clock.t = 4.0
    meter.batch_done("b", 1.0, 2.0)
    clock.t = 6.0
    meter.batch_done("b", 1.0, 2.0)
    # left: a 8 units at 1 s/unit, b 98 units at 2 s/unit; one batch at a time
    assert meter.eta_s() == pytest.approx(8 * 1 + 98 * 2)


def test_eta_hidden_when_rates_spread_and_divided_by_parallelism():
    clock = _Clock()
    meter = WorkMeter({"a": 100.0}, clock=clock)
    for seconds in (1.0, 10.0, 1.0, 10.0):
        meter.batch_done("a", 1.0, seconds)
    clock.t = 22.0
    assert meter.eta_s() is None  # quartile rates ~1 and ~10 s: no estimate to stand behind
    steady = WorkMeter({"a": 100.0}, clock=clock)
    clock.t = 0.0
    steady.t0 = 0.0
    for _ in range(4):
        steady.batch_done("a", 1.0, 2.0)
    clock.t = 4.0  # 8 batch-seconds in 4 s: two workers
    assert steady.eta_s() == pytest.approx(96 * 2.0 / 2)


def test_trial_work_hook_default_and_declared():
    study = get_study("double-descent")
    cfg = build_config(study.Config, study.quick)
    spec = study.trials(cfg)[0]
    assert study.trial_work(cfg, spec) == 1.0
    from learnscope.studies.base import part

    p = part("x", lambda cfg, t: {}, work=lambda cfg, t: t.width ** 2, width=[2, 3])
    assert p.work is not None and p.work(cfg, type("T", (), {"width": 3})()) == 9


def test_preparing_shown_at_once_on_a_terminal_and_cleared(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["run", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preparing no-such-study...\r\x1b[K")
    assert err.endswith("learnscope: error: unknown study 'no-such-study'; known studies: "
                        + err.split("known studies: ")[1])


def test_verbose_lines_and_quiet_result_line(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path), "-v"]) == 0
    err = capsys.readouterr().err
    assert "  rf noise_sd=" in err and ": finished " in err and "seed=1" in err
    assert main([*TINY, "--out", str(tmp_path), "-q"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("double-descent: ")
    assert "claims hold); report: " in lines[0] and lines[0].endswith("report.html")
    assert captured.err == ""
    assert main([*TINY, "-q", "-v"]) == 2
    _one_error_line(capsys, "exclude each other")


# -- 5. conventions ----------------------------------------------------------------------------
def test_version_and_short_help(capsys):
    from learnscope import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"learnscope {__version__}"
    assert main(["run", "-h"]) == 0
    text = capsys.readouterr().out
    assert "--quick" in text and "FIELD=VALUE" in text and "-q" in text and "-v" in text
    assert "<bool>" not in text and "<list[str]>" not in text


def test_python_m_learnscope_and_completion(tmp_path):
    env = os.environ | {"COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "learnscope", "--version"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("learnscope ")
    proc = subprocess.run([sys.executable, "-m", "learnscope", "--help"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "--install-completion" in proc.stdout and "--show-completion" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "learnscope", "--show-completion", "bash"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "_LEARNSCOPE_COMPLETE" in proc.stdout.upper()


def _claims_result():
    return {"study": "random-labels", "verdict": "reproduced", "claims": [
        {"id": "random-labels-test-at-chance", "measured": {"test_acc": 0.08595},
         "threshold": "test_acc <= 0.142506", "holds": True, "gating": True},
        {"id": "fit-time-small-factor",
         "measured": {"epochs_ratio": 3.733, "epochs_random": 453.5, "epochs_clean": 121.5},
         "threshold": "epochs_ratio > 1 and epochs_ratio < 10", "holds": True, "gating": True},
        {"id": "fit-time-grows-with-noise",
         "measured": {"noise": [0, 1], "epochs_to_fit": [121.5, 453.5]},
         "threshold": "epochs_to_fit non-decreasing in noise", "holds": False,
         "gating": False}]}


@pytest.mark.parametrize("width", [80, 50, 140])
def test_claims_table_header_and_whole_words(width):
    console = Console(width=width, record=True, force_terminal=False)
    result = _claims_result()
    print_claims(result, console)
    text = console.export_text()
    words = set(text.split())
    for claim in result["claims"]:
        assert claim["id"] in words
        for word in claim["threshold"].split():
            assert word in words, (word, text)
    for word in ("test_acc=0.08595", "epochs_random=453.5", "epochs_clean=121.5"):
        assert any(word in w for w in words), (word, text)
    if width >= 80:
        assert "status" in text.splitlines()[1] and "claim" in text.splitlines()[1]
    assert "not gating" in text


def test_run_prints_the_report_path(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert f"report: {Path(result['run_dir']) / 'report.html'}" in captured.err


def test_second_resume_of_a_run_in_progress_refused(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path), "-q"]) == 0
    capsys.readouterr()
    [(run_id, _)] = _runs(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom learnscope.store import RunStore\n"
         f"s = RunStore({str(tmp_path)!r}); s.claim_run({run_id!r})\n"
         "print('claimed', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        assert main([*TINY, "--out", str(tmp_path), "--resume", "-q"]) == 2
        _one_error_line(capsys, run_id)
        assert _runs(tmp_path) == [(run_id, "finished")]  # nothing changed
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("study,setting", [
    ("random-labels", "hidden=100000"), ("double-descent", "input_dim=1000000000000"),
    ("double-descent", "n_test=10000000000000"), ("random-labels", "batch_size=1000000000000")])
def test_built_in_studies_estimate_their_memory(tmp_path, capsys, study, setting):
    """The studies' own estimates refuse impossible sizes before a run (or the store) exists;
    their --quick and default sizes fit."""
    assert main(["run", study, "--quick", "--set", setting, "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys, f"{study} with {setting} (--quick) needs about")
    assert "available" in line and not (tmp_path / "o").exists()
    s = get_study(study)
    have = available_memory_bytes()
    for quick in (s.quick, {}):
        assert s.memory_bytes(build_config(s.Config, quick)) < have / 4
