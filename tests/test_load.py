"""learnscope.load: stored runs as DataFrames (runs, trials, records with meta expanded)."""

import pytest

import learnscope
from learnscope.errors import StoreError
from learnscope.store import Record, RunStore
from learnscope.store.sqlite import TrialWrite


def test_load_returns_tidy_frames(tmp_path):
    with RunStore(tmp_path) as store:
        run = store.create_run("demo", {"seeds": 2})
        store.save_trials(run.run_id, [
            TrialWrite(f"t{s}", {"part": "rf", "seed": s, "p": 10},
                       [Record("mse", 1.0 + s, step=3, probe="fit", meta={"fit": "ridge"}),
                        Record("acc", 0.5, step=1, meta={"layer": "fc1", "bins": [0, 1]})])
            for s in range(2)])
        store.set_run_status(run.run_id, "finished", "reproduced")
        other = store.create_run("other", {})
        store.save_trial(other.run_id, "x", {"seed": 0}, [Record("loss", 2.0)])
    data = learnscope.load(tmp_path)
    assert set(data.runs["study"]) == {"demo", "other"}
    assert data.runs.set_index("study").loc["demo", "verdict"] == "reproduced"
    assert len(data.trials) == 3 and {"run_id", "study", "seed", "p", "status"} <= set(
        data.trials.columns)
    mse = data.records.query("key == 'mse'")
    assert sorted(mse["value"]) == [1.0, 2.0] and set(mse["fit"]) == {"ridge"}
    assert set(mse["seed"]) == {0, 1} and set(mse["study"]) == {"demo"}
    acc = data.records.query("key == 'acc'")
    assert set(acc["layer"]) == {"fc1"} and acc["bins"].iloc[0] == (0, 1)
    only = learnscope.load(tmp_path, study="other")
    assert list(only.records["key"]) == ["loss"]


def test_load_of_a_folder_without_store_writes_nothing(tmp_path):
    with pytest.raises(StoreError, match="no learnscope store"):
        learnscope.load(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
