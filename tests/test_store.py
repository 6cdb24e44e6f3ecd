import math
import sqlite3

import pytest

from learnscope.errors import StoreError
from learnscope.store import Record, RunStore


def test_round_trip(tmp_path):
    with RunStore(tmp_path) as store:
        run = store.create_run("demo", {"seeds": 1, "w": [1, 2]})
        recs = [Record("loss", 0.5, step=1, probe="train", meta={"layer": "fc1"}),
                Record("loss", math.nan, step=2), Record("acc", math.inf, step=2)]
        assert store.save_trial(run.run_id, "k1", {"x": 1}, recs, wall_s=1.5, info={"a": 1})
    with RunStore(tmp_path) as store:
        (trial,) = store.load_trials(run.run_id)
        assert trial.spec == {"x": 1} and trial.wall_s == 1.5 and trial.info == {"a": 1}
        assert trial.records[0] == recs[0]
        assert math.isnan(trial.records[1].value) and trial.records[2].value == math.inf
        assert store.get_run(run.run_id).config == {"seeds": 1, "w": [1, 2]}


def test_save_trial_is_idempotent(tmp_path):
    with RunStore(tmp_path) as store:
        run = store.create_run("demo", {})
        assert store.save_trial(run.run_id, "k", {}, [Record("a", 1.0)])
        assert not store.save_trial(run.run_id, "k", {}, [Record("a", 2.0)])
        assert store.count_records(run.run_id) == 1
        assert store.load_trials(run.run_id)[0].records[0].value == 1.0


def test_latest_run_for_resume(tmp_path):
    with RunStore(tmp_path) as store:
        a = store.create_run("demo", {"x": 1})
        store.create_run("demo", {"x": 2})
        b = store.create_run("demo", {"x": 1})
        assert a.run_id != b.run_id
        assert store.latest_run("demo", a.config_hash).run_id == b.run_id
        assert store.latest_run("other", a.config_hash) is None


def test_wal_mode(tmp_path):
    RunStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "learnscope.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_file_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "learnscope.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="not a usable learnscope database"):
        RunStore(tmp_path)
    assert path.read_bytes() == b"not a database" * 100


def test_unwritable_directory(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StoreError, match="cannot create results directory"):
        RunStore(target / "sub")


def test_interrupt_in_the_middle_of_a_trial_write_leaves_nothing(tmp_path):
    class Interrupting:
        """Forwards to the real connection but raises Ctrl-C on the records insert."""

        def __init__(self, db):
            self.db = db

        def executemany(self, *args):
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(self.db, name)

    with RunStore(tmp_path) as store:
        run = store.create_run("demo", {})
        real = store._db
        store._db = Interrupting(real)
        with pytest.raises(KeyboardInterrupt):
            store.save_trial(run.run_id, "k", {}, [Record("a", 1.0)])
        store._db = real
        assert not real.in_transaction
        assert store.finished_keys(run.run_id) == set()
        store.set_run_status(run.run_id, "interrupted")  # the store is still usable
        assert store.save_trial(run.run_id, "k", {}, [Record("a", 1.0)])
        assert store.count_records(run.run_id) == 1


def test_record_metas_round_trip_exactly_when_many_share_a_shape(tmp_path):
    """Equal-looking metas of different types (1, 1.0, True) and unhashable values keep their
    own JSON when many records are appended at once."""
    metas = [{"x": 1}, {"x": 1.0}, {"x": True}, {"x": [1, 2]}, {"x": 1}, {"x": float("nan")},
             {"x": {"a": 1}}, {"y": "s", "x": 1}]
    with RunStore(tmp_path) as store:
        run = store.create_run("s", {})
        store.append_records(run.run_id, "main", [Record("k", 1.0, i, "p", m)
                                                  for i, m in enumerate(metas)])
        back = [r.meta for r in store.load_records(run.run_id)]
    assert [type(m["x"]) for m in back] == [int, float, bool, list, int, float, dict, int]
    assert back[3] == {"x": [1, 2]} and back[6] == {"x": {"a": 1}} and back[7]["y"] == "s"
