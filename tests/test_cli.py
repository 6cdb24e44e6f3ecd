"""Bad input: one line naming the problem, exit code 2, no traceback, nothing stored lost."""

import json
import os
import subprocess
import sys

import pytest

from learnscope.cli import main
from learnscope.store import RunStore


@pytest.mark.parametrize("argv,needle", [
    (["run", "no-such-study"], "unknown study 'no-such-study'"),
    (["show", "no-such-study"], "unknown study"),
    (["run", "double-descent", "--set", "bogus=1"], "unknown config field 'bogus'"),
    (["run", "double-descent", "--set", "n_train=-5"], "field 'n_train' must be >= 2"),
    (["run", "double-descent", "--set", "n_train=ten"], "field 'n_train' expects int"),
    (["run", "random-labels", "--set", "noise_levels=0,0.5,1.5"], "noise_levels' must be <= 1"),
    (["run", "double-descent", "--set", "novalue"], "--set expects field=value"),
    (["run", "double-descent", "--config", "missing.toml"], "config file not found"),
    (["run", "double-descent", "--seeds", "0"], "field 'seeds' must be >= 1"),
    (["run", "double-descent", "--seeds", "x"], "--seeds"),
    (["run", "double-descent", "--frobnicate"], "No such option"),
    (["frobnicate"], "No such command"),
    (["report", "does/not/exist"], "run directory not found"),
])
def test_bad_input_one_line_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("learnscope: error:") and needle in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_malformed_toml(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [1,\n")
    assert main(["run", "double-descent", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_unwritable_and_corrupt_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "double-descent", "--quick", "--out", str(blocker / "x")]) == 2
    assert "cannot create results directory" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "learnscope.db").write_bytes(b"garbage" * 500)
    assert main(["run", "double-descent", "--quick", "--out", str(corrupt)]) == 2
    assert "not a usable learnscope database" in capsys.readouterr().err
    assert (corrupt / "learnscope.db").read_bytes() == b"garbage" * 500


def test_bad_input_keeps_existing_store(tmp_path, capsys):
    with RunStore(tmp_path) as store:
        run = store.create_run("double-descent", {"x": 1})
    before = (tmp_path / "learnscope.db").stat().st_size
    assert main(["run", "double-descent", "--set", "bogus=1", "--out", str(tmp_path)]) == 2
    with RunStore(tmp_path) as store:
        assert [r.run_id for r in store.list_runs()] == [run.run_id]
    assert (tmp_path / "learnscope.db").stat().st_size >= before


def test_list_and_show(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "double-descent" in text and "random-labels" in text
    assert main(["show", "double-descent"]) == 0
    assert "ridge_lambdas" in capsys.readouterr().out


def test_console_script_bad_input_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "learnscope.cli", "run", "nope"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=os.environ | {"COLUMNS": "200"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_json_output_and_strict(tmp_path, capsys):
    args = ["run", "double-descent", "--quick", "--seeds", "3", "--out", str(tmp_path),
            "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["study"] == "double-descent" and result["config"]["seeds"] == 3
    # An impossible claim setting (ridge penalties so small they cannot remove the peak)
    # fails, which is a result (exit 0) unless --strict asks for exit 1.
    weak = ["--set", "ridge_lambdas=1e-9"]
    assert main(args + weak) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] != "reproduced"
    assert main(args + weak + ["--strict"]) == 1
