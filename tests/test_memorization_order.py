"""memorization-order: flipped labels, the detection scores and the per-example bookkeeping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from learnscope.data import digits
from learnscope.data.corruptions import flip_labels
from learnscope.measures.per_example import detection_auroc
from learnscope.studies.base import Trial
from learnscope.studies.memorization_order import (
    MemorizationConfig,
    confident_learning,
    out_of_fold_probabilities,
    precision_at_k,
    self_confidence_scores,
    suspicion_scores,
    train_networks,
)


@pytest.mark.parametrize("fraction", [0.1, 0.4, 1.0])
def test_flipped_labels_always_change_class(fraction):
    y = digits(500, seed=0).y_train
    new, mask = flip_labels(y, fraction, 10, seed=3)
    assert int(mask.sum()) == round(fraction * len(y))
    assert bool((new[mask] != y[mask]).all())
    assert torch.equal(new[~mask], y[~mask])
    again, mask_again = flip_labels(y, fraction, 10, seed=3)
    assert torch.equal(new, again) and torch.equal(mask, mask_again)
    if fraction == 1.0:  # the new class is uniform over the 9 others
        offsets = ((new - y) % 10).numpy()
        counts = np.bincount(offsets, minlength=10)
        assert counts[0] == 0 and np.all(np.abs(counts[1:] - 500 / 9) < 5 * np.sqrt(500 / 9))


def _brute_force_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
    pairs = list(itertools.product(scores[positive], scores[~positive]))
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def test_auroc_equals_the_brute_force_pair_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        scores = rng.integers(0, 6, n).astype(float)  # many ties
        positive = rng.random(n) < 0.4
        if positive.all() or not positive.any():
            continue
        assert detection_auroc(scores, positive) == pytest.approx(
            _brute_force_auroc(scores, positive), abs=1e-12)


def test_precision_at_k_by_hand():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.7])
    positive = np.array([False, True, False, False, True, True])
    # top 3 (ties by index): 1 (0.9, +), 3 (0.9, -), 5 (0.7, +) -> 2 of 3
    assert precision_at_k(scores, positive) == pytest.approx(2 / 3)
    assert precision_at_k(scores, positive, k=1) == 1.0
    assert precision_at_k(scores, positive, k=2) == 0.5
    assert precision_at_k(scores, positive, k=6) == 0.5
    with pytest.raises(ValueError):
        precision_at_k(scores, np.zeros(6, dtype=bool))


def test_suspicion_scores_rank_late_low_margin_examples_first():
    """Example 2 is fitted only at the end with negative margins before: every score ranks it
    first; example 1 is forgotten once, so only the forgetting count ranks it above 0."""
    correct = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=bool)
    margins = np.where(correct, 1.0, -1.0)
    prob = np.where(correct, 0.8, 0.1)
    scores = suspicion_scores(correct, prob, margins)
    assert set(scores) == {"fit-weighted AUM", "AUM", "data-map confidence", "learned epoch",
                           "forgetting events"}
    for name, s in scores.items():
        if name != "forgetting events":
            assert int(np.argmax(s)) == 2, name
    assert scores["learned epoch"].tolist() == [0.0, 2.0, 3.0]
    assert scores["forgetting events"].tolist() == [0.0, 1.0, 0.0]


def test_self_confidence_matches_cleanlab():
    cleanlab = pytest.importorskip("cleanlab")
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    data = digits(600, seed=0)
    y, mask = flip_labels(data.y_train, 0.3, 10, seed=1)
    probs = out_of_fold_probabilities(data.x_train.numpy(), y.numpy(), folds=3, seed=0)
    assert np.allclose(probs.sum(1), 1.0)
    ours = self_confidence_scores(probs, y.numpy())
    theirs = get_label_quality_scores(y.numpy(), probs, method="self_confidence")
    assert np.allclose(ours, -theirs)
    # cleanlab's flagged issues, ranked by self-confidence, come in our order
    issues = find_label_issues(y.numpy(), probs, return_indices_ranked_by="self_confidence")
    assert len(issues) > 0 and cleanlab.__version__
    assert np.all(np.diff(ours[issues]) <= 1e-12)
    assert detection_auroc(ours, mask.numpy()) > 0.8


def test_tiny_training_records_are_consistent():
    cfg = MemorizationConfig(seeds=1, hidden=16, epochs=6, n_train=200, folds=2)
    trials = [Trial({"part": "train", "dropout": d, "seed": 0}) for d in (0.0, 0.5)]
    outputs = train_networks(cfg, trials)
    for out in outputs:
        by_key: dict[tuple, list] = {}
        for r in out.records:
            by_key.setdefault((r.key, r.meta.get("subset"), r.meta.get("method")), []).append(r)
        assert len(by_key[("noisy_fit", None, None)]) == 6
        assert by_key[("noise_fraction", None, None)][0].value == pytest.approx(0.4)
        for subset in ("clean", "flipped"):
            learned = [r.value for r in by_key[("fraction_learned", subset, None)]]
            assert len(learned) == 6 and all(0 <= v <= 1 for v in learned)
            assert all(b >= a for a, b in zip(learned, learned[1:], strict=False))
        for method in ("fit-weighted AUM", "AUM"):
            auroc = by_key[("detection_auroc", None, method)][0].value
            assert 0.0 <= auroc <= 1.0
    cl = confident_learning(cfg, Trial({"part": "confident-learning", "seed": 0}))
    assert {r.key for r in cl.records} == {"detection_auroc", "detection_precision_at_k"}
    # same seed, same records: the run is deterministic
    again = train_networks(cfg, trials)
    assert [r.value for r in again[0].records] == [r.value for r in outputs[0].records]
