"""The repeated-subset sampler and the repeated-data study's claim helpers."""

from collections import Counter

import pytest
import torch

from learnscope.analysis.curves import Curve
from learnscope.data.repetition import (
    balanced_multiset,
    pool_order,
    repeated_subset,
    subset_size,
)
from learnscope.errors import ConfigError
from learnscope.runner import resolve_config
from learnscope.studies import get_study
from learnscope.studies.repeated_data import _dip_claim, _worst


@pytest.mark.parametrize(("budget", "fraction", "repeats"),
                         [(1000, 0.5, 1), (1000, 0.5, 10), (1000, 0.1, 100), (997, 0.3, 7),
                          (1000, 0.5, 500), (64, 0.9, 3)])
def test_multiset_has_the_stated_composition(budget, fraction, repeats):
    s = repeated_subset(2000, budget, fraction, repeats, seed=3)
    size = round(fraction * budget / repeats)
    assert len(s.samples) == budget  # exact budget
    assert len(s.repeated) == size == subset_size(budget, fraction, repeats)
    assert len(s.unique) == budget - size * repeats
    counts = Counter(s.samples.tolist())
    # each subset example exactly r times, each unique example once, nothing else
    assert all(counts[i] == repeats for i in s.repeated.tolist())
    assert all(counts[i] == 1 for i in s.unique.tolist())
    assert set(counts) == set(s.repeated.tolist()) | set(s.unique.tolist())
    # the unique part has no duplicates and does not overlap the subset
    assert len(set(s.unique.tolist())) == len(s.unique)
    assert not set(s.unique.tolist()) & set(s.repeated.tolist())
    # the fraction of samples from the subset is f, up to rounding the subset size
    assert s.repeated_fraction == size * repeats / budget
    assert abs(s.repeated_fraction - fraction) <= repeats / (2 * budget) + 1e-12
    assert int(s.samples.min()) >= 0 and int(s.samples.max()) < 2000


def test_sampler_is_deterministic_and_depends_on_the_seed():
    a = repeated_subset(500, 300, 0.5, 5, seed=1)
    b = repeated_subset(500, 300, 0.5, 5, seed=1)
    c = repeated_subset(500, 300, 0.5, 5, seed=2)
    assert torch.equal(a.samples, b.samples)
    assert torch.equal(a.repeated, b.repeated) and torch.equal(a.unique, b.unique)
    assert not torch.equal(a.repeated, c.repeated)


def test_sampler_uses_no_global_rng():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    repeated_subset(500, 300, 0.5, 5, seed=1)
    assert torch.equal(torch.rand(1), before)


def test_repeated_subsets_of_a_seed_are_nested():
    """A larger r repeats a prefix of a smaller one's subset (same pool permutation)."""
    order = pool_order(1000, seed=4)
    subsets = [repeated_subset(1000, 800, 0.5, r, seed=4).repeated for r in (1, 4, 16, 64)]
    for small, large in zip(subsets[1:], subsets[:-1], strict=True):
        assert torch.equal(small, large[:len(small)])
    assert torch.equal(subsets[0], order[:len(subsets[0])])
    uniques = [repeated_subset(1000, 800, 0.5, r, seed=4).unique for r in (3, 7)]
    small, large = sorted(uniques, key=len)
    assert set(small.tolist()) <= set(large.tolist())


def test_r1_is_the_all_unique_budget():
    s = repeated_subset(1000, 600, 0.4, 1, seed=0)
    assert len(set(s.samples.tolist())) == 600 and s.repeated_fraction == pytest.approx(0.4)


def test_sampler_refuses_impossible_requests():
    with pytest.raises(ValueError, match="pool holds"):
        repeated_subset(500, 600, 0.5, 1, seed=0)  # 600 distinct examples needed
    with pytest.raises(ValueError, match="exceed the budget"):
        repeated_subset(500, 10, 0.5, 30, seed=0)  # one example repeated 30 times > 10
    for bad in ({"fraction": 0.0}, {"fraction": 1.0}, {"repeats": 0}, {"budget": 0}):
        kwargs = {"budget": 100, "fraction": 0.5, "repeats": 2} | bad
        with pytest.raises(ValueError):
            repeated_subset(500, seed=0, **kwargs)


@pytest.mark.parametrize(("n", "budget"), [(10, 10), (10, 25), (7, 100), (1, 5)])
def test_balanced_multiset_spreads_evenly(n, budget):
    distinct = torch.arange(100, 100 + n)
    m = balanced_multiset(distinct, budget, seed=0)
    counts = Counter(m.tolist())
    assert len(m) == budget and set(counts) == set(distinct.tolist())
    assert max(counts.values()) - min(counts.values()) <= (0 if budget % n == 0 else 1)
    assert sorted(counts.values()) == sorted([budget // n] * (n - budget % n)
                                             + [budget // n + 1] * (budget % n))
    assert torch.equal(m, balanced_multiset(distinct, budget, seed=0))
    with pytest.raises(ValueError):
        balanced_multiset(distinct, n - 1, seed=0)


def test_dedup_of_r1_is_the_same_multiset():
    s = repeated_subset(1000, 400, 0.5, 1, seed=2)
    assert torch.equal(balanced_multiset(s.distinct, 400, seed=2), s.samples)


def _curve(points):
    return Curve.from_groups({r: list(v) for r, v in points.items()}, "repeats", "test_acc")


def test_dip_claim_by_hand():
    dip = _curve({1: (0.50, 0.52, 0.51), 8: (0.40, 0.41, 0.42), 64: (0.47, 0.48, 0.46),
                  1024: (0.45, 0.46, 0.47)})
    c = _dip_claim(dip)
    assert c.holds and c.measured["dip_r"] == 8
    assert c.measured["ci_gap"] == pytest.approx(0.45 - 0.42)
    assert not c.gating
    falling = _curve({1: (0.50, 0.52, 0.51), 8: (0.44, 0.45, 0.46), 1024: (0.40, 0.41, 0.39)})
    assert not _dip_claim(falling).holds
    assert _worst(falling) == 1024 and _worst(dip) == 8


def test_config_refuses_repeats_without_baseline_or_beyond_budget():
    with pytest.raises(ConfigError, match="must contain 1"):
        resolve_config(get_study("repeated-data"), overrides={"repeats": [2, 4, 8]})
    with pytest.raises(ConfigError, match="exceeds"):
        resolve_config(get_study("repeated-data"), overrides={"budget": 1000, "repeats": [1, 2, 600]})


def test_train_seed_trains_each_condition_on_its_multiset():
    """One seed's stack at a tiny size: r = 1 and its deduplicated control are the same
    multiset from the same initial weights and batch order, so they train identically; the
    stored subset sizes and repeated fractions are those of the sampler."""
    from learnscope.studies.base import Trial
    from learnscope.studies.repeated_data import train_seed

    cfg = resolve_config(get_study("repeated-data"), overrides={
        "budget": 400, "repeats": [1, 5, 100], "hidden": 8, "n_test": 100, "evals": 2,
        "n_eval": 50, "batch_size": 20})
    trials = [Trial({"part": "train", "kind": kind, "repeats": r, "seed": 7})
              for kind in ("repeated", "deduplicated") for r in (1, 5, 100)]
    outputs = train_seed(cfg, trials)

    def final(out, key):
        (v,) = [r.value for r in out.records if r.key == key and r.step == cfg.budget]
        return v

    by = {(t.kind, t.repeats): o for t, o in zip(trials, outputs, strict=True)}
    for key in ("test_acc", "test_loss", "repeated_loss", "unique_loss"):
        assert final(by["repeated", 1], key) == final(by["deduplicated", 1], key)
    assert final(by["repeated", 5], "test_loss") != final(by["deduplicated", 5], "test_loss")
    for r in (1, 5, 100):
        size = round(0.5 * 400 / r)
        assert final(by["repeated", r], "subset_size") == size
        assert final(by["repeated", r], "repeated_fraction") == size * r / 400
        # spread evenly: each subset example is seen budget // distinct times or once more
        whole = 400 // (400 - size * r + size)
        share = final(by["deduplicated", r], "repeated_fraction") * 400
        assert size * whole <= share <= size * (whole + 1)
    steps = {r.step for r in outputs[0].records if r.key == "test_acc"}
    assert steps == {200, 400}  # one evaluation halfway through the pass, one at its end
