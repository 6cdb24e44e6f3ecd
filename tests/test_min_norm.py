"""The min-norm study's run functions: determinism and the stated statistics of their records."""

from __future__ import annotations

import pytest

from learnscope.errors import ConfigError
from learnscope.studies.base import Trial
from learnscope.studies.min_norm import MinNormConfig, run_condition, run_gd, run_spectrum


def _values(records, key):
    return [r.value for r in records if r.key == key]


def test_spectrum_histogram_carries_the_law_mass_and_is_deterministic():
    cfg = MinNormConfig(bins=20)
    for q, mass in ((0.5, 1.0), (2.0, 0.5)):
        recs = run_spectrum(cfg, Trial({"part": "spectrum", "q": q, "rows": 200, "seed": 3}))
        lams = [r.meta["lam"] for r in recs if r.key == "hist_density"]
        width = lams[1] - lams[0]
        # every non-zero eigenvalue lies in [a, b] up to finite-size spill-over
        assert sum(_values(recs, "hist_density")) * width == pytest.approx(mass, abs=0.03)
        assert sum(_values(recs, "law_density")) * width == pytest.approx(mass, abs=0.03)
        again = run_spectrum(cfg, Trial({"part": "spectrum", "q": q, "rows": 200, "seed": 3}))
        assert [r.value for r in recs] == [r.value for r in again]


def test_gd_records_end_at_the_formula():
    cfg = MinNormConfig(n_train=10, gd_steps=3000)
    recs = run_gd(cfg, Trial({"part": "gd", "init": "random", "seed": 0}))
    final = [r for r in recs if r.key == "rel_dist_to_formula"][-1]
    assert final.step == 3000 and final.value < 1e-8
    assert _values(recs, "rel_dist_to_pinv")[0] > 0.05  # the null-space part of w0 stays
    assert _values(recs, "train_mse")[0] < 1e-16


def test_condition_at_d_equals_n_has_no_law_value():
    cfg = MinNormConfig(n_train=10)
    recs = run_condition(cfg, Trial({"part": "condition", "d": 10, "seed": 0}))
    assert _values(recs, "law_condition") == []
    recs = run_condition(cfg, Trial({"part": "condition", "d": 40, "seed": 0}))
    assert _values(recs, "law_condition") == [pytest.approx(9.0)]  # ((1+2)/(2-1))^2


def test_config_refuses_grids_without_the_threshold():
    with pytest.raises(ConfigError):
        MinNormConfig(condition_ratios=(0.5, 2.0, 3.0)).check()
    with pytest.raises(ConfigError):
        MinNormConfig(spectrum_ratios=(1.0,)).check()
