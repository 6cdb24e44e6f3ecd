"""The redundancy study's own helpers: log-log slopes, checkpoint steps, similarity ratios, and
one width's batch measured against the measures applied to the same models by hand."""

from __future__ import annotations

import math

import pytest
import torch

from learnscope.analysis import Results
from learnscope.runner import resolve_config
from learnscope.store.records import Record, TrialResult
from learnscope.studies import get_study
from learnscope.studies.base import Trial
from learnscope.studies.redundancy import (
    _log_slope,
    _similarity_ratios,
    _slopes,
    checkpoint_steps,
    train_width,
)

torch.set_num_threads(1)


def test_log_slope_recovers_a_power_law():
    xs = [10.0, 100.0, 1000.0, 1e4]
    assert _log_slope(xs, [3 * x ** 0.25 for x in xs]) == pytest.approx(0.25, rel=1e-12)
    assert _log_slope(xs, [7.0] * 4) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(_log_slope(xs, [1.0, 0.0, 2.0, 3.0]))


def test_checkpoint_steps_are_distinct_sorted_and_cover_both_ends():
    steps = checkpoint_steps(1500, 8)
    assert steps[0] == 0 and steps[1] == 10 and steps[-1] == 1500
    assert steps == sorted(set(steps)) and len(steps) == 9
    assert checkpoint_steps(5, 3) == [0, 5]


def _trial(key, spec, records):
    return TrialResult(key=key, spec=spec, status="finished", records=records)


def test_slopes_are_per_seed_and_similarity_ratios_per_trial():
    trials = []
    for seed, power in ((0, 0.1), (1, 0.3)):
        for width, params in ((16, 1e3), (64, 1e4), (256, 1e5)):
            sim = [Record("unit_similarity", v, s) for s, v in ((0, 0.1), (10, 0.4), (99, 0.2))]
            trials.append(_trial(f"w{width}s{seed}", {"part": "widths", "width": width,
                                                      "seed": seed},
                                 [Record("params", params, 99),
                                  Record("pr_layer1", params ** power, 99)] + sim))
    results = Results(trials)
    assert _slopes(results, "pr_layer1") == pytest.approx([0.1, 0.3])
    rise, fall = _similarity_ratios(results)
    assert rise == pytest.approx([4.0] * 6) and fall == pytest.approx([0.5] * 6)


def test_one_width_batch_records_what_the_measures_give():
    study = get_study("redundancy")
    cfg = resolve_config(study, quick=True, overrides=study.tiny)
    trials = [Trial({"part": "widths", "width": 8, "seed": s}) for s in (0, 1)]
    outputs = train_width(cfg, trials)
    assert len(outputs) == 2
    for out in outputs:
        keys = {r.key for r in out.records}
        assert {"params", "hessian_dim", "pr_layer1", "pr_layer2", "near_duplicates",
                "near_duplicates_init", "test_acc", "unit_similarity"} <= keys
        params = [r.value for r in out.records if r.key == "params"]
        assert params == [40 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10]
        sims = [r for r in out.records if r.key == "unit_similarity"]
        assert [r.step for r in sims] == checkpoint_steps(cfg.steps, cfg.checkpoints)
        for r in out.records:
            if r.key.startswith("pr_layer"):
                assert 1.0 <= r.value <= 8.0  # a participation ratio lies in [1, width]
    # the two seeds are different models
    first = {r.key: r.value for r in outputs[0].records if r.step > 0}
    second = {r.key: r.value for r in outputs[1].records if r.step > 0}
    assert first["pr_layer1"] != second["pr_layer1"]
