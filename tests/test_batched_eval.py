"""Evaluation options and helpers of the batched trainer (learnscope.train.batched)."""

from __future__ import annotations

import pytest
import torch

from learnscope.data.classification import ClassificationData
from learnscope.train.batched import BatchedTrainer, ModelSpec, _class_argmax, train_models


def test_class_argmax_equals_argmax_with_ties_and_nans():
    g = torch.Generator().manual_seed(0)
    # few distinct values: many ties across the class axis; all-equal columns; NaNs
    z = torch.randint(0, 3, (3, 10, 257), generator=g).float()
    z[:, :, :5] = 0.0
    z[1, 4, 7] = float("nan")
    z[2, 0, 9] = z[2, 9, 9] = float("nan")
    assert torch.equal(_class_argmax(z), z.argmax(1))
    z64 = torch.randn(2, 7, 33, generator=g, dtype=torch.float64)
    assert torch.equal(_class_argmax(z64), z64.argmax(1))


def _toy_data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, generator=g)
    x = torch.randn(300, 8, generator=g)
    y = (x @ w + 0.5 * torch.randn(300, 4, generator=g)).argmax(1)
    return ClassificationData("toy", x[:200], y[:200], x[200:], y[200:], 4)


def _specs():
    return [ModelSpec([8, 6, 4], seed=1), ModelSpec([8, 12, 4], seed=2)]


def test_eval_every_logs_are_the_every_epoch_logs_at_those_epochs():
    data = _toy_data()
    kw = dict(optimizer="sgd", lr=0.05, batch_size=32, dtype=torch.float64)
    every = BatchedTrainer(_specs(), data, **kw).train(max_epochs=7)
    sparse = BatchedTrainer(_specs(), data, **kw).train(max_epochs=7, eval_every=3)
    for full, part in zip(every, sparse, strict=True):
        assert [log.epoch for log in part.history] == [3, 6, 7]
        assert part.history == [full.history[e - 1] for e in (3, 6, 7)]


def test_eval_every_checks_the_stopping_rule_at_evaluated_epochs_only():
    data = _toy_data()
    kw = dict(optimizer="sgd", lr=0.05, batch_size=32, dtype=torch.float64,
              stop_at_train_acc=0.0)  # met at the first evaluation
    res = BatchedTrainer(_specs(), data, **kw).train(max_epochs=10, eval_every=4)
    assert [r.fit_epoch for r in res] == [4, 4]
    assert [len(r.history) for r in res] == [1, 1]


def test_train_models_passes_eval_every_and_rejects_zero():
    data = _toy_data()
    res = train_models(_specs(), data, max_epochs=5, eval_every=2, optimizer="sgd", lr=0.05,
                       batch_size=32)
    assert [[log.epoch for log in r.history] for r in res] == [[2, 4, 5], [2, 4, 5]]
    with pytest.raises(ValueError, match="eval_every"):
        BatchedTrainer(_specs(), data).train(max_epochs=2, eval_every=0)


def _mixed_specs():
    return [ModelSpec([8, w, 4], seed=s) for s, w in enumerate([3, 5, 40, 64, 9, 80])]


def test_workers_give_the_numbers_of_one_worker_and_restore_threads():
    data = _toy_data()
    kw = dict(max_epochs=3, max_buckets=3, optimizer="sgd", lr=0.05, batch_size=32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = train_models(_mixed_specs(), data, **kw)
    finally:
        torch.set_num_threads(before)
    seen: list[tuple[int, int]] = []
    parallel = train_models(_mixed_specs(), data, workers=2,
                            on_epoch=lambda k, log: seen.append((k, log.epoch)), **kw)
    assert torch.get_num_threads() == before
    assert sorted(seen) == [(k, e) for k in range(6) for e in (1, 2, 3)]
    for a, b in zip(serial, parallel, strict=True):
        # NaN fields (noisy_fit without noise) compare unequal once pickled: compare as text
        assert repr(a.history) == repr(b.history)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.equal(p, q)


def test_workers_reraise_a_bucket_error_and_reject_zero():
    data = _toy_data()
    # a second job (another depth) whose training subsets differ in size: its trainer raises
    bad = [ModelSpec([8, 7, 7, 4], seed=0, subset=torch.arange(5)),
           ModelSpec([8, 7, 7, 4], seed=1, subset=torch.arange(6))]
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="equal size"):
        train_models(_mixed_specs() + bad, data, max_epochs=1, workers=2, max_buckets=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="workers"):
        train_models(_mixed_specs(), data, max_epochs=1, workers=0)


def test_worker_processes_report_epochs_in_the_caller_and_restore_nothing():
    # on_epoch runs in the calling process (not in a worker), per bucket in epoch order
    import os

    pids: set[int] = set()
    order: dict[int, list[int]] = {}
    data = _toy_data()
    before = torch.get_num_threads()

    def cb(k: int, log) -> None:
        pids.add(os.getpid())
        order.setdefault(k, []).append(log.epoch)

    train_models(_mixed_specs(), data, max_epochs=2, max_buckets=3, workers=2, on_epoch=cb)
    assert pids == {os.getpid()}
    assert order == {k: [1, 2] for k in range(6)}
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("widths", [[16, 16, 16, 16], [3, 9, 5, 7]])
def test_one_bucket_is_split_over_the_workers_with_the_same_numbers(monkeypatch, widths):
    """Four models in one bucket (one width, or mixed widths held in one bucket) with two
    workers train as two buckets in two processes, to exactly the numbers of the one bucket
    trained serially."""
    import learnscope.train.batched as batched

    data = _toy_data()
    specs = [ModelSpec([8, w, 4], seed=s) for s, w in enumerate(widths)]
    kw = dict(max_epochs=2, optimizer="sgd", lr=0.05, batch_size=32, max_buckets=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = train_models(specs, data, **kw)
    finally:
        torch.set_num_threads(before)
    jobs_seen: list[list[list[int]]] = []
    real = batched._train_in_processes

    def spy(jobs, *args, **kwargs):
        jobs_seen.append([list(j) for j in jobs])
        return real(jobs, *args, **kwargs)

    monkeypatch.setattr(batched, "_train_in_processes", spy)
    parallel = train_models(specs, data, workers=2, **kw)
    assert len(jobs_seen[0]) == 2 and sorted(i for j in jobs_seen[0] for i in j) == [0, 1, 2, 3]
    assert all(len(j) == 2 for j in jobs_seen[0])
    for a, b in zip(serial, parallel, strict=True):
        assert repr(a.history) == repr(b.history)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.equal(p, q)
    # buckets whose subsets differ in size are left whole (their trainer refuses them)
    odd = [ModelSpec([8, 7, 4], seed=0, subset=torch.arange(5)),
           ModelSpec([8, 7, 4], seed=1, subset=torch.arange(6))]
    assert batched._spread([[0, 1]], odd, 2) == [[0, 1]]
