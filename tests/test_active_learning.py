"""Acquisition scores against hand computations, the batch selection and the acquisition loop
by brute force, the learning-curve interpolation, and the active-learning study's pieces."""

import math

import numpy as np
import pytest

from learnscope.config import build_config
from learnscope.errors import ConfigError
from learnscope.measures.acquisition import (
    acquisition_scores,
    least_confidence,
    predictive_entropy,
    select_top_k,
    top_two_margin,
)
from learnscope.seeding import numpy_rng
from learnscope.studies.active_learning import (
    STRATEGIES,
    ActiveLearningConfig,
    acquisition_rounds,
    labels_to_reach,
    logistic_fit,
    run_seed,
)
from learnscope.studies.base import Trial

P = np.array([[0.7, 0.2, 0.1],
              [0.4, 0.4, 0.2],
              [1.0, 0.0, 0.0],
              [1 / 3, 1 / 3, 1 / 3],
              [0.1, 0.3, 0.6]])


# -- scores ------------------------------------------------------------------------------------

def test_least_confidence_is_one_minus_top_probability():
    np.testing.assert_allclose(least_confidence(P), [0.3, 0.6, 0.0, 2 / 3, 0.4])


def test_margin_is_top_minus_runner_up_and_zero_on_a_tie():
    np.testing.assert_allclose(top_two_margin(P), [0.5, 0.0, 1.0, 0.0, 0.3], atol=1e-15)
    assert top_two_margin([[1.0]]).tolist() == [1.0]  # one class: nothing to be unsure about


def test_entropy_in_nats_and_bits_by_hand():
    by_hand = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    h = predictive_entropy(P)
    assert h[0] == pytest.approx(by_hand, rel=1e-12)
    assert h[2] == 0.0  # 0 log 0 = 0, no NaN
    assert h[3] == pytest.approx(math.log(3), rel=1e-12)  # uniform: log C
    bits = predictive_entropy(P, unit="bits")
    np.testing.assert_allclose(bits, h / math.log(2))
    assert predictive_entropy([[0.5, 0.5]], unit="bits")[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="nats"):
        predictive_entropy(P, unit="dits")


def test_acquisition_scores_rank_the_doubtful_first():
    assert acquisition_scores(P, "least-confidence").tolist() == least_confidence(P).tolist()
    np.testing.assert_allclose(acquisition_scores(P, "margin"), 1 - top_two_margin(P))
    np.testing.assert_allclose(acquisition_scores(P, "entropy"), predictive_entropy(P))
    for strategy in ("least-confidence", "margin", "entropy"):
        s = acquisition_scores(P, strategy)
        assert s[2] == min(s)  # the certain prediction is asked for last
        assert s[3] == max(s)  # the uniform one first (ties allowed: margin 0 twice)
    # the strategies disagree where they should: [0.5, 0.49, 0.01] has a tiny margin but
    # lower entropy than [0.4, 0.3, 0.3]
    q = np.array([[0.5, 0.49, 0.01], [0.4, 0.3, 0.3]])
    assert np.argmax(acquisition_scores(q, "margin")) == 0
    assert np.argmax(acquisition_scores(q, "entropy")) == 1
    with pytest.raises(ValueError, match="unknown acquisition strategy"):
        acquisition_scores(P, "bald")


@pytest.mark.parametrize("bad, match", [
    ([0.2, 0.8], "2-D"),
    ([[2.0, -1.0]], "non-negative"),
    ([[0.5, 0.6]], "sum to 1"),
    ([[math.nan, 1.0]], "finite"),
])
def test_scores_refuse_what_is_not_a_probability_table(bad, match):
    with pytest.raises(ValueError, match=match):
        least_confidence(bad)


# -- batch selection ---------------------------------------------------------------------------

def test_select_top_k_ties_go_to_the_lower_index_and_labelled_are_skipped():
    scores = [0.5, 0.9, 0.9, 0.1, 0.9, 0.5]
    assert select_top_k(scores, 3).tolist() == [1, 2, 4]
    labelled = [False, False, True, False, False, False]
    assert select_top_k(scores, 3, labelled).tolist() == [1, 4, 0]
    assert select_top_k(scores, 0, labelled).tolist() == []
    assert select_top_k(scores, 5, labelled).tolist() == [1, 4, 0, 5, 3]
    with pytest.raises(ValueError, match="cannot select 6 of 5"):
        select_top_k(scores, 6, labelled)
    with pytest.raises(ValueError, match="shape"):
        select_top_k(scores, 1, [True])


def test_select_top_k_matches_brute_force_on_tied_scores():
    rng = numpy_rng(0, "test-select")
    for _ in range(50):
        n = int(rng.integers(1, 30))
        scores = rng.integers(0, 4, n).astype(float)  # many ties
        labelled = rng.random(n) < 0.3
        k = int(rng.integers(0, (~labelled).sum() + 1))
        brute = sorted((i for i in range(n) if not labelled[i]), key=lambda i: (-scores[i], i))
        assert select_top_k(scores, k, labelled).tolist() == brute[:k]


# -- the loop ----------------------------------------------------------------------------------

def _fake_fit(n_pool, n_classes=3):
    """Probabilities that change with the labelled set (so every round scores anew), with
    deliberate ties, and an accuracy that is the labelled count: checkable by hand."""
    def fit(indices):
        idx = np.arange(n_pool)
        logits = np.stack([np.cos(idx * (c + 1) + len(indices)) for c in range(n_classes)], 1)
        logits = np.round(logits, 1)  # ties between examples
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True), float(len(indices))
    return fit


@pytest.mark.parametrize("strategy", ["least-confidence", "margin", "entropy"])
def test_rounds_pick_what_brute_force_picks(strategy):
    n_pool, batch, rounds = 17, 3, 4
    y_pool = np.arange(n_pool) % 3
    fit = _fake_fit(n_pool)
    initial = np.array([5, 0])
    out = acquisition_rounds(fit, y_pool, initial, strategy, batch, rounds,
                             numpy_rng(0, "unused"))
    labelled = {5, 0}
    assert [r.labels for r in out] == [2, 5, 8, 11, 14]
    for r in out[:-1]:
        probs, acc = fit(np.array(sorted(labelled)))
        assert r.test_acc == acc == len(labelled)

        def score(i, probs=probs):
            p = probs[i]
            top = sorted(p, reverse=True)
            return {"least-confidence": 1 - top[0], "margin": 1 - (top[0] - top[1]),
                    "entropy": -sum(v * math.log(v) for v in p if v > 0)}[strategy]
        brute = sorted((i for i in range(n_pool) if i not in labelled),
                       key=lambda i: (-score(i), i))[:batch]
        assert r.acquired.tolist() == brute
        wrong = [int(np.argmax(probs[i]) != y_pool[i]) for i in brute]
        assert r.acquired_error == pytest.approx(sum(wrong) / batch)
        labelled |= set(brute)
    assert out[-1].acquired.size == 0 and math.isnan(out[-1].acquired_error)


def test_random_rounds_draw_fresh_unlabelled_examples_reproducibly():
    n_pool, batch, rounds = 40, 5, 6
    y_pool = np.zeros(n_pool, dtype=int)
    fit = _fake_fit(n_pool)
    run = lambda: acquisition_rounds(fit, y_pool, np.array([1, 2, 3]), "random", batch, rounds,  # noqa: E731
                                     numpy_rng(7, "random"))
    a, b = run(), run()
    picked = np.concatenate([r.acquired for r in a])
    assert len(set(picked.tolist())) == batch * rounds
    assert not {1, 2, 3} & set(picked.tolist())
    assert all((x.acquired == y.acquired).all() for x, y in zip(a, b, strict=True))
    other = acquisition_rounds(fit, y_pool, np.array([1, 2, 3]), "random", batch, rounds,
                               numpy_rng(8, "random"))
    assert not all((x.acquired == y.acquired).all() for x, y in zip(a, other, strict=True))
    with pytest.raises(ValueError, match="unknown strategy"):
        acquisition_rounds(fit, y_pool, np.array([1]), "query-by-committee", 1, 1,
                           numpy_rng(0, "x"))


# -- learning curves ---------------------------------------------------------------------------

def test_labels_to_reach_interpolates_the_first_crossing():
    xs = [20, 30, 40, 50]
    assert labels_to_reach(xs, [0.5, 0.7, 0.9, 0.95], 0.8) == pytest.approx(35.0)
    assert labels_to_reach(xs, [0.5, 0.7, 0.9, 0.95], 0.7) == 30.0
    assert labels_to_reach(xs, [0.5, 0.7, 0.9, 0.95], 0.4) == 20.0  # already there
    # not monotone: the first crossing counts, not the last
    assert labels_to_reach(xs, [0.5, 0.9, 0.6, 0.95], 0.7) == pytest.approx(25.0)
    assert math.isnan(labels_to_reach(xs, [0.5, 0.7, 0.9, 0.95], 0.96))
    assert math.isnan(labels_to_reach([], [], 0.5))


# -- the study's pieces ------------------------------------------------------------------------

def test_logistic_fit_pads_unseen_classes_and_handles_one_class():
    rng = numpy_rng(0, "test-logistic")
    x = rng.normal(size=(30, 4))
    y = np.arange(30) % 3
    fit = logistic_fit(x, y, x, y, 5, 1.0)
    probs, acc = fit(np.arange(12))
    assert probs.shape == (30, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs[:, 3:] == 0).all() and 0 <= acc <= 1
    probs, acc = fit(np.array([0, 3, 6]))  # only class 0 labelled
    assert (probs[:, 0] == 1).all() and acc == pytest.approx(1 / 3)


def test_config_needs_the_random_baseline_and_a_pool_large_enough():
    with pytest.raises(ConfigError, match="random"):
        build_config(ActiveLearningConfig, {"strategies": ["margin", "entropy"]})
    with pytest.raises(ConfigError, match="exceeds n_pool"):
        build_config(ActiveLearningConfig, {"n_pool": 100, "seed_labels": 50, "rounds": 10})
    assert build_config(ActiveLearningConfig, {}).final_labels == 120


def test_run_seed_is_deterministic_and_shares_the_seed_labels():
    cfg = build_config(ActiveLearningConfig, {"n_pool": 300, "seed_labels": 10, "batch": 5,
                                              "rounds": 3})
    trials = [Trial({"part": "acquire", "strategy": s, "seed": 4}) for s in STRATEGIES]
    first, again = run_seed(cfg, trials), run_seed(cfg, trials)
    values = lambda outs: [[(r.key, r.step, r.value) for r in o.records] for o in outs]  # noqa: E731
    assert values(first) == values(again)
    acc = {t.strategy: {r.step: r.value for r in o.records if r.key == "test_acc"}
           for t, o in zip(trials, first, strict=True)}
    assert all(sorted(a) == [10, 15, 20, 25] for a in acc.values())
    assert len({a[10] for a in acc.values()}) == 1  # same seed labels, same first model
    for t, o in zip(trials[1:], first[1:], strict=True):
        gains = {r.step: r.value for r in o.records if r.key == "gain_over_random"}
        assert gains == pytest.approx({n: acc[t.strategy][n] - acc["random"][n]
                                       for n in acc["random"]})
    # without random among the trials, the gains are still over random sampling
    alone = run_seed(cfg, [trials[2]])
    assert values(alone) == values(first[2:3])


def test_a_run_without_margin_says_why_nothing_gates():
    from learnscope.analysis import Results
    from learnscope.studies.active_learning import ActiveLearning

    study = ActiveLearning()
    without = build_config(ActiveLearningConfig, {"strategies": ["random", "entropy"]})
    assert "not checked" in study.notes(without, Results([]))[0]
    assert study.notes(build_config(ActiveLearningConfig, {}), Results([])) == []
