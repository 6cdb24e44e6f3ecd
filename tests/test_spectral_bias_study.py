"""The spectral-bias study's pieces: the target, censored ordering, first passages read back from
records, and claims that fail when the order is wrong."""

import math

import pytest
import torch

from learnscope.analysis import Results
from learnscope.errors import ConfigError
from learnscope.measures.frequency import frequency_errors
from learnscope.runner import resolve_config
from learnscope.store.records import Record, TrialResult
from learnscope.studies import get_study
from learnscope.studies.spectral_bias import (
    SpectralBiasConfig,
    amplitudes_of,
    ordered,
    passage_times,
    phases_of,
    target_of,
)

KS = [1, 3, 7, 15]


def test_target_is_one_fft_bin_per_component():
    cfg = SpectralBiasConfig()
    for variant in ("equal", "increasing"):
        f = target_of(cfg, variant, seed=4)
        spectrum = torch.fft.rfft(f).abs() / (cfg.n_points / 2)
        amps = amplitudes_of(variant, 4)
        assert spectrum[KS].tolist() == pytest.approx(amps, abs=1e-12)
        others = [i for i in range(len(spectrum)) if i not in KS]
        assert float(spectrum[others].max()) < 1e-12
        # the untrained "net" (zero output) leaves every component untouched
        assert frequency_errors(-f, f, KS).tolist() == pytest.approx([1.0] * 4)
    assert amplitudes_of("increasing", 4) == [0.25, 0.5, 0.75, 1.0]


def test_phases_are_per_seed_and_shared_by_variants():
    assert phases_of(3, 4) == phases_of(3, 4)
    assert phases_of(3, 4) != phases_of(4, 4)
    assert all(0 <= p < 2 * math.pi for p in phases_of(3, 4))
    cfg = SpectralBiasConfig()
    assert torch.equal(target_of(cfg, "equal", 2), target_of(cfg, "tanh", 2))


@pytest.mark.parametrize("times, expected", [
    ([10, 10, 50, 300], True),  # the two lowest may tie
    ([10, 50, 300, math.inf], True),  # censored top: later than the budget
    ([10, 50, math.inf, math.inf], True),  # two censored: unordered among themselves
    ([10, 5, 50, 300], False),
    ([10, 50, 50, 300], False),  # strict beyond the lowest two
    ([10, math.inf, 50, 300], False),  # a censored middle one before a reached one
    ([10, math.inf, math.inf, math.inf], False),  # one reached time orders nothing
    ([math.inf] * 4, False),
])
def test_censored_order(times, expected):
    assert ordered(times) is expected


def _run(variant, seed, curves, steps):
    records = [Record("freq_error", v, s, "frequency", {"frequency": k})
               for k, values in curves.items() for s, v in zip(steps, values, strict=True)]
    return TrialResult(f"{variant}-{seed}", {"part": "fit", "variant": variant, "seed": seed},
                       "finished", records)


def _linear_fall(t_half, steps):
    """An error falling linearly from 1 to 0 at step 2 * t_half (below 0.5 after t_half)."""
    return [max(0.0, 1 - s / (2 * t_half)) for s in steps]


def _results(halves_by_run, steps):
    return Results([_run(v, seed, {k: _linear_fall(h, steps) for k, h in halves.items()}, steps)
                    for (v, seed), halves in halves_by_run.items()])


def test_passage_times_and_claims_from_records():
    cfg = resolve_config(get_study("spectral-bias"), quick=True,
                         overrides={"steps": 1000, "variants": ["equal", "tanh"]})
    steps = list(range(0, 1001, 10))
    good = {1: 20, 3: 50, 7: 200, 15: 800}
    results = _results({("equal", 0): good, ("tanh", 0): good}, steps)
    runs = passage_times(cfg, results)
    assert len(runs) == 2
    # first step with e < 0.5: strictly after t_half on the grid
    assert runs[0]["times"][0.5] == {1: 30.0, 3: 60.0, 7: 210.0, 15: 810.0}
    assert runs[0]["times"][0.2][15] == math.inf  # 1 - s / 1600 < 0.2 needs s > 1280
    # e_15 at step 60: 1 - 60 / 1600
    assert runs[0]["top_error_when_second_learned"] == pytest.approx(1 - 60 / 1600)
    claims = {c.id: c for c in get_study("spectral-bias").claims(cfg, results)}
    assert all(c.holds for c in claims.values()), [c.id for c in claims.values() if not c.holds]
    assert claims["delay-ratio-7-over-3-relu"].gating
    assert not claims["delay-ratio-7-over-3-tanh"].gating


def test_claims_fail_when_high_frequencies_come_first():
    cfg = resolve_config(get_study("spectral-bias"), quick=True,
                         overrides={"steps": 1000, "variants": ["equal"]})
    steps = list(range(0, 1001, 10))
    reversed_ = {1: 800, 3: 200, 7: 50, 15: 20}
    claims = {c.id: c for c in get_study("spectral-bias").claims(
        cfg, _results({("equal", 0): reversed_}, steps))}
    assert not claims["low-first-equal-below-0.5"].holds
    assert not claims["delay-ratio-7-over-3-relu"].holds
    assert not claims["top-untouched-when-second-learned"].holds


def test_too_short_delays_fail_the_ratio():
    cfg = resolve_config(get_study("spectral-bias"), quick=True,
                         overrides={"steps": 1000, "variants": ["equal"]})
    steps = list(range(0, 1001, 10))
    close = {1: 20, 3: 100, 7: 150, 15: 600}
    claims = {c.id: c for c in get_study("spectral-bias").claims(
        cfg, _results({("equal", 0): close}, steps))}
    assert claims["low-first-equal-below-0.5"].holds
    assert not claims["delay-ratio-7-over-3-relu"].holds
    assert claims["delay-ratio-7-over-3-relu"].measured["smallest_ratio"] == pytest.approx(
        160 / 110)


@pytest.mark.parametrize("overrides, message", [
    ({"frequencies": (3, 1, 7)}, "increasing"),
    ({"frequencies": (1, 3, 64)}, "n_points"),
    ({"thresholds": (0.2, 0.5)}, "decreasing"),
    ({"steps": 105}, "multiple"),
])
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(get_study("spectral-bias"), quick=True, overrides=overrides)
