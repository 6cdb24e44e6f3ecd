"""The mode-connectivity study's pieces: pair records against a brute-force path, the distance
between networks, the parent's snapshots, determinism."""

import dataclasses

import numpy as np
import pytest
import torch

from learnscope.errors import ConfigError
from learnscope.seeding import derive_seed
from learnscope.studies.base import Trial
from learnscope.studies.mode_connectivity import (
    ModeConnectivityConfig,
    _data,
    _evaluator,
    _network,
    _relative_distance,
    _stack,
    pair_records,
    train_different_inits,
    train_spawned,
)

TINY = ModeConnectivityConfig(seeds=1, spawn_steps=(0, 3, 7), steps=15, n_train=300, channels=4,
                              path_points=5)


def _values(records, key):
    return [r.value for r in records if r.key == key]


def test_relative_distance_closed_form():
    a, b = _network(TINY, 0), _network(TINY, 1)
    with torch.no_grad():
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            p.fill_(1.0)
            q.fill_(3.0)
    # n parameters: ||a - b|| = 2 sqrt(n); mean norm = (sqrt(n) + 3 sqrt(n)) / 2 = 2 sqrt(n)
    assert _relative_distance(a, b) == pytest.approx(1.0, rel=1e-12)
    assert _relative_distance(a, a) == 0.0


def test_pair_records_match_a_brute_force_path():
    data = _data(TINY)
    a, b = _network(TINY, 0), _network(TINY, 1)
    records = pair_records(TINY, data, a, b, [0, 3])
    alphas = np.linspace(0, 1, TINY.path_points)
    evaluate = _evaluator(data.x_test.float(), data.y_test)
    errors = []
    for alpha in alphas:
        net = _network(TINY, 0)
        with torch.no_grad():
            for p, pa, pb in zip(net.parameters(), a.parameters(), b.parameters(), strict=True):
                p.copy_((1 - alpha) * pa + alpha * pb)
        errors.append(evaluate(net)[1])
    expected = max(errors) - 0.5 * (errors[0] + errors[-1])
    assert _values(records, "barrier_test_error") == pytest.approx([expected, expected],
                                                                  abs=1e-12)
    assert _values(records, "path_test_error") == pytest.approx(errors, abs=1e-6)
    assert _values(records, "endpoint_test_error") == pytest.approx(
        [0.5 * (errors[0] + errors[-1])], abs=1e-12)
    ks = [r.meta["k_plus_1"] for r in records if r.key == "barrier_test_error"]
    assert ks == [1, 4]


def test_identical_networks_have_no_barrier():
    data = _data(TINY)
    a = _network(TINY, 0)
    records = pair_records(TINY, data, a, a, [0])
    assert _values(records, "barrier_test_error") == [0.0]
    assert _values(records, "barrier_train_error") == [0.0]
    assert _values(records, "relative_distance") == [0.0]
    assert len(set(_values(records, "path_test_error"))) == 1


def test_parent_snapshots_are_the_parent_after_k_steps_and_runs_repeat():
    cfg = TINY
    trials = [Trial({"part": "spawn", "k": k, "seed": 0}) for k in cfg.spawn_steps]
    outputs = train_spawned(cfg, trials)
    data = _data(cfg)
    evaluate = _evaluator(data.x_test.float(), data.y_test)
    for k, out in zip(cfg.spawn_steps, outputs, strict=True):
        parent = _stack(cfg, data, [_network(cfg, 0)], [derive_seed(0, "parent-order")])
        if k:
            parent.train(steps=k)
        assert _values(out.records, "parent_test_error") == [evaluate(parent.export(0))[1]]
        # two children with different batch orders end apart
        assert _values(out.records, "relative_distance")[0] > 0
    again = train_spawned(cfg, trials)
    for one, two in zip(outputs, again, strict=True):
        assert [(r.key, r.value, r.meta) for r in one.records] == [
            (r.key, r.value, r.meta) for r in two.records]


def test_different_inits_start_apart_and_mark_every_k():
    out = train_different_inits(TINY, Trial({"part": "different-init", "seed": 0}))
    assert len(_values(out.records, "barrier_test_error")) == len(TINY.spawn_steps)
    assert len(set(_values(out.records, "barrier_test_error"))) == 1
    assert _values(out.records, "relative_distance")[0] > 0.5


def test_repeated_spawn_steps_are_refused():
    with pytest.raises(ConfigError, match="spawn_steps"):
        dataclasses.replace(TINY, spawn_steps=(0, 3, 3)).check()
