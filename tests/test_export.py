"""learnscope.export and `learnscope export`: the store's records as CSV, parquet, TensorBoard
event files and figure images, read back and compared with the store."""

import json
import math
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from learnscope import export
from learnscope.cli import main
from learnscope.probes import GradientStatsProbe, TensorBoardExporter, WeightSpectrumProbe, every
from learnscope.scope import Scope
from learnscope.seeding import torch_generator
from learnscope.store import Record, RunStore
from learnscope.store.sqlite import TrialWrite

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)


def _synthetic_run(out) -> str:
    """A run whose records exercise every awkward case: list and mixed-type metadata, a NaN,
    a metadata name taken by a spec field, two series at one step told apart only by a field
    outside the usual series fields, and a field that changes with the step (not a series)."""
    with RunStore(out) as store:
        run = store.create_run("synthetic", {"seeds": 2})
        trials = []
        for seed in range(2):
            recs = []
            for step in (0, 10, 20):
                for fit in ("ridge", "min_norm"):
                    recs.append(Record("test_mse", 1.0 / (step + 1) + seed + (fit == "ridge"),
                                       step, "fit", {"fit": fit, "checkpoint_step": step}))
                recs.append(Record("acc", 0.25 * step / 20 + seed / 7, step, "probe",
                                   {"layer": "fc1", "bins": [0, 1, 2], "seed": 99,
                                    "mixed": "a" if step else 3}))
            recs.append(Record("acc", math.nan, 30, "probe", {"layer": "fc1"}))
            trials.append(TrialWrite(f"trial{seed}", {"part": "rf", "seed": seed,
                                                      "widths": [10, 20]}, recs))
        store.save_trials(run.run_id, trials)
        store.set_run_status(run.run_id, "finished")
        run.run_dir.mkdir(parents=True)
        return str(run.run_dir)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("probe_run")
    gen = torch_generator(0)
    x, y = torch.randn(64, 6, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Scope(model, [GradientStatsProbe(schedule=every(2)), WeightSpectrumProbe()],
               data=(x, y), out=out, name="tiny") as scope:
        for i in range(8):
            xb, yb = x[8 * i:8 * i + 8], y[8 * i:8 * i + 8]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            scope.step(loss)
    return str(scope.run_dir)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory) -> str:
    from learnscope import run_study

    out = tmp_path_factory.mktemp("study_run")
    return str(run_study("layer-convergence", quick=True, seeds=2, out=out).run_dir)


def _store_trials(run_dir):
    out = os.path.dirname(os.path.dirname(run_dir))
    with RunStore(out) as store:
        run = store.run_for_dir(run_dir)
        trials = store.load_trials(run.run_id)
        if not trials:  # a probe run: one live trial without a trial row
            return run, [("main", {}, store.load_records(run.run_id))]
        return run, [(t.key, t.spec, store.load_records(run.run_id, t.key)) for t in trials]


def _same_cell(cell, expected, typed: bool = True) -> bool:
    """A cell equals a stored value; a column of mixed types holds JSON text. CSV carries no
    types (``typed=False``): text that reads as a number comes back as that number."""
    if not typed and isinstance(expected, str) and isinstance(cell, int | float) and \
            not isinstance(cell, bool):
        return float(expected) == cell
    if isinstance(cell, str) and (not isinstance(expected, str) or cell != expected):
        cell = json.loads(cell)
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return pd.isna(cell)
    if isinstance(expected, list):
        return list(cell) == expected
    if isinstance(expected, bool):
        return bool(cell) is expected
    if isinstance(expected, int | float):
        return float(cell) == float(expected)
    return str(cell) == expected


def _check_table(table: pd.DataFrame, run_dir: str, typed: bool = True) -> None:
    """Row i is the i-th stored record: its columns, its metadata, its trial's spec."""
    run, trials = _store_trials(run_dir)
    expected = [(key, spec, r) for key, spec, recs in trials for r in recs]
    assert len(table) == len(expected)
    spec_names = {k for _, spec, _ in expected for k in spec}
    for (key, spec, r), (_, row) in zip(expected, table.iterrows(), strict=True):
        assert (row["trial"], row["step"], row["probe"], row["key"]) == (key, r.step, r.probe,
                                                                          r.key)
        assert _same_cell(row["value"], r.value)
        assert row["run_id"] == run.run_id and row["study"] == run.study
        for k, v in r.meta.items():
            column = f"meta.{k}" if k in spec_names or k in ("trial", "value") else k
            assert _same_cell(row[column], v, typed), (column, row[column], v)
        for k, v in spec.items():
            assert _same_cell(row[k], v, typed), (k, row[k], v)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_round_trip_equals_the_store(tmp_path, probe_run, fmt):
    pytest.importorskip("pyarrow")
    for run_dir in (_synthetic_run(tmp_path / "runs"), probe_run):
        path = tmp_path / f"records.{fmt}"
        if fmt == "csv":
            export.to_csv(run_dir, path)
            table = pd.read_csv(path)
        else:
            export.to_parquet(run_dir, path)
            table = pd.read_parquet(path)
        _check_table(table, run_dir, typed=fmt == "parquet")


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_of_a_study_run_one_folder_per_trial(tmp_path):
    run_dir = _synthetic_run(tmp_path / "runs")
    export.to_tensorboard(run_dir, tmp_path / "tb")
    assert sorted(os.listdir(tmp_path / "tb")) == ["seed=0", "seed=1"]
    for seed in range(2):
        got = _scalars(tmp_path / "tb" / f"seed={seed}")
        # Two series at one step are told apart by `fit`; checkpoint_step changes with the
        # step and is no series; the NaN at step 30 is left out.
        steps = (0, 10, 20)
        f32 = np.float32
        assert got == {
            "fit/test_mse/fit=ridge": [(s, f32(1 / (s + 1) + seed + 1)) for s in steps],
            "fit/test_mse/fit=min_norm": [(s, f32(1 / (s + 1) + seed)) for s in steps],
            "probe/acc/layer=fc1": [(s, f32(0.25 * s / 20 + seed / 7)) for s in steps],
        }


def test_tensorboard_of_a_probe_run_matches_the_live_exporter(tmp_path, probe_run):
    export.to_tensorboard(probe_run, tmp_path / "tb")
    got = _scalars(tmp_path / "tb")
    _, [(_, _, records)] = _store_trials(probe_run)
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if math.isfinite(r.value):
            expected.setdefault(TensorBoardExporter.tag(r), []).append((r.step,
                                                                        np.float32(r.value)))
    assert got == {tag: sorted(v) for tag, v in expected.items()} and len(got) > 5


def test_study_run_exports(tmp_path, study_run):
    table = export.records_table(study_run)
    _check_table(table, study_run)
    assert {"part", "seed", "layer"} <= set(table.columns)
    export.to_tensorboard(study_run, tmp_path / "tb")
    assert sorted(os.listdir(tmp_path / "tb")) == ["seed=0", "seed=1"]
    tags = _scalars(tmp_path / "tb" / "seed=0")
    assert "layer_similarity/similarity_to_final/layer=1" in tags


def _chrome_present() -> bool:
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return False
    return bool(os.environ.get("BROWSER_PATH") or Chromium.find_browser(skip_local=False))


@pytest.mark.skipif(not _chrome_present(), reason="kaleido and a Chrome are needed")
def test_figures_as_png_and_svg(tmp_path, study_run, probe_run):
    from learnscope.export import _figures_of

    pngs = export.figures(study_run, tmp_path / "png", fmt="png")
    assert len(pngs) == len(_figures_of(study_run)) == 3
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    svgs = export.figures(probe_run, tmp_path / "svg", fmt="svg")
    assert len(svgs) == len(_figures_of(probe_run)) > 3
    assert all(b"<svg" in p.read_bytes()[:400] for p in svgs)
    assert "Training loss" in svgs[0].read_text()  # the probe report draws the loss first
    assert any("weight_spectrum" in p.read_text() for p in svgs)


def test_cli_export_writes_every_format(tmp_path, probe_run, capsys):
    pytest.importorskip("pyarrow")
    argv = ["export", probe_run, "--csv", str(tmp_path / "r.csv"), "--parquet",
            str(tmp_path / "r.parquet"), "--tensorboard", str(tmp_path / "tb")]
    assert main(argv) == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(pd.read_parquet(tmp_path / "r.parquet"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("learnscope: error:"), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_cli_export_bad_input_is_one_line_and_exit_2(tmp_path, probe_run, capsys,
                                                     monkeypatch):
    csv = str(tmp_path / "r.csv")
    assert main(["export", str(tmp_path / "missing"), "--csv", csv]) == 2
    assert "run directory not found" in _one_error_line(capsys)
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert main(["export", str(tmp_path / "a" / "b"), "--csv", csv]) == 2
    assert "is not a run directory" in _one_error_line(capsys)
    assert main(["export", probe_run]) == 2
    assert "nothing to export" in _one_error_line(capsys)
    assert main(["export", probe_run, "--figures", str(tmp_path / "f"), "--format", "gif"]) == 2
    assert "unknown figure format" in _one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    assert main(["export", probe_run, "--parquet", str(tmp_path / "r.parquet")]) == 2
    assert "needs pyarrow" in _one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "kaleido", None)
    assert main(["export", probe_run, "--figures", str(tmp_path / "f")]) == 2
    assert "needs kaleido" in _one_error_line(capsys)
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "r.parquet").exists()
