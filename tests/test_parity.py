"""The parity study's run functions: config checks, determinism and what the records mean."""

from __future__ import annotations

import math

import pytest

from learnscope.errors import ConfigError
from learnscope.runner import resolve_config
from learnscope.studies import get_study
from learnscope.studies.base import Trial
from learnscope.studies.parity import run_gf2, run_gradient, train_sgd

SMALL = {"sgd_ns": [6, 8], "width": 32, "max_steps": 300, "n_test": 200, "gf2_trials": 5}


def _cfg(**extra):
    return resolve_config(get_study("parity"), overrides={**SMALL, **extra})


def test_config_requires_k3():
    with pytest.raises(ConfigError):
        _cfg(sgd_ks=[2])


def test_gradient_records_satisfy_parseval():
    recs = {r.key: r.value for r in run_gradient(_cfg(), Trial({"part": "gradient", "n": 5,
                                                                "seed": 0}))}
    assert recs["parseval_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert recs["variance"] <= recs["bound"] * (1 + 1e-12)
    assert recs["bound"] == pytest.approx(recs["mean_sq_grad"] / 32)


def test_gf2_records_are_deterministic_and_at_least_n():
    trial = Trial({"part": "gf2", "n": 12, "seed": 3})
    a = {r.key: r.value for r in run_gf2(_cfg(), trial)}
    b = {r.key: r.value for r in run_gf2(_cfg(), trial)}
    assert a == b
    assert a["recovered_fraction"] == 1.0 and a["median_excess"] >= 0
    assert a["median_samples"] == a["median_excess"] + 12


def test_sgd_stack_is_deterministic_and_solves_a_small_parity():
    cfg = _cfg()
    trials = [Trial({"part": "sgd", "n": 6, "k": k, "seed": 0}) for k in (2, 3)]
    first, again = train_sgd(cfg, trials), train_sgd(cfg, trials)
    for x, y in zip(first, again, strict=True):
        assert [(r.key, r.step, r.value) for r in x.records] == \
               [(r.key, r.step, r.value) for r in y.records]
    for out, k in zip(first, (2, 3), strict=True):
        assert len(out.info["subset"]) == k == len(set(out.info["subset"]))
        solve = next(r.value for r in out.records if r.key == "steps_to_solve")
        acc = {r.step: r.value for r in out.records if r.key == "test_acc"}
        assert math.isfinite(solve) and acc[int(solve)] >= 0.99
        assert all(a < 0.99 for s, a in acc.items() if s < solve)
