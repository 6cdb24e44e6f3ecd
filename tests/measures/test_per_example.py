"""Oracle tests for learnscope.measures.per_example on hand-made histories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learnscope.measures.per_example import (
    DEFAULT_SUSPICION_METHOD,
    SUSPICION_METHODS,
    PerExampleTracker,
    area_under_margin,
    data_map,
    detection_auroc,
    forgetting_events,
    learned_epoch,
    margin,
    rank_suspicious,
    unfitted_fraction,
)

torch.set_num_threads(1)

T, F = True, False

# rows = epochs, columns = examples
HISTORY = np.array(
    [
        # ex0 ex1 ex2 ex3 ex4
        [F, T, F, T, F],
        [T, T, F, F, F],
        [T, F, F, T, F],
        [T, T, T, F, F],
        [T, T, T, T, F],
    ]
)


def test_learned_epoch_by_hand():
    assert learned_epoch(HISTORY).tolist() == [1, 3, 3, 4, -1]
    # always correct -> 0; correct only at the last epoch -> last index
    assert learned_epoch(np.array([[T, F], [T, T]])).tolist() == [0, 1]
    # 0/1 integers and tensors are accepted
    assert learned_epoch(torch.tensor(HISTORY.astype(int))).tolist() == [1, 3, 3, 4, -1]


def test_never_learned_gets_minus_one():
    c = np.array([[T], [T], [F]])  # learned then forgotten at the end
    assert learned_epoch(c).tolist() == [-1]
    assert learned_epoch(np.zeros((4, 2), dtype=bool)).tolist() == [-1, -1]


def test_forgetting_events_by_hand():
    assert forgetting_events(HISTORY).tolist() == [0, 1, 0, 2, 0]
    assert forgetting_events(np.array([[T], [F], [T], [F], [T], [F]])).tolist() == [3]
    assert forgetting_events(np.array([[T, F]])).tolist() == [0, 0]  # one epoch


def test_data_map_by_hand():
    p = np.array([[0.1, 0.9, 0.5], [0.3, 0.7, 0.5], [0.8, 0.8, 0.5]])
    c = np.array([[F, T, F], [F, T, T], [T, T, F]])
    m = data_map(p, c)
    assert np.allclose(m.confidence, [0.4, 0.8, 0.5])
    std0 = math.sqrt(((0.1 - 0.4) ** 2 + (0.3 - 0.4) ** 2 + (0.8 - 0.4) ** 2) / 3)
    std1 = math.sqrt((0.1**2 + 0.1**2 + 0.0) / 3)
    assert np.allclose(m.variability, [std0, std1, 0.0])
    assert np.allclose(m.correctness, [1 / 3, 1.0, 1 / 3])
    assert m.correctness_method == "correct" and m.variability_ddof == 0 and m.n_epochs == 3
    # without `correct`: prob > 0.5 proxy (0.5 itself does not count)
    m2 = data_map(p)
    assert m2.correctness_method == "prob_gt_half"
    assert np.allclose(m2.correctness, [1 / 3, 1.0, 0.0])
    m3 = data_map(p, ddof=1)
    assert m3.variability[0] == pytest.approx(std0 * math.sqrt(3 / 2))


def test_data_map_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data_map(np.array([[1.5]]))
    with pytest.raises(ValueError, match="NaN"):
        data_map(np.array([[np.nan, 0.5]]))
    with pytest.raises(ValueError, match="shape"):
        data_map(np.full((2, 3), 0.5), np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        data_map(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="boolean"):
        learned_epoch(np.array([[2, 0]]))


def test_margin_by_hand():
    logits = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, -1.0], [1.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2, 1])
    out = margin(logits, labels)
    assert isinstance(out, torch.Tensor)
    assert out.tolist() == [1.0, -4.0, 0.0]
    out_np = margin(logits.numpy(), labels.numpy())
    assert isinstance(out_np, np.ndarray) and out_np.tolist() == [1.0, -4.0, 0.0]
    with pytest.raises(ValueError, match="2 classes"):
        margin(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie"):
        margin(logits, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match="NaN"):
        margin(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


def test_ranking_puts_planted_mislabeled_first():
    n_epochs, n = 10, 6
    rng = np.random.default_rng(0)
    correct = np.ones((n_epochs, n), dtype=bool)
    prob = np.clip(0.9 + 0.05 * rng.standard_normal((n_epochs, n)), 0.0, 1.0)
    # a hard-but-clean example: learned at epoch 3, confident after
    correct[:3, 1] = False
    prob[:3, 1] = 0.3
    # planted mislabeled example 4: wrong most of the time, learned only at the end,
    # flips (memorised then forgotten) several times, low probability of its label
    correct[:, 4] = [F, F, T, F, F, T, F, F, T, T]
    prob[:, 4] = [0.05, 0.1, 0.55, 0.1, 0.1, 0.6, 0.2, 0.2, 0.6, 0.7]
    r = rank_suspicious(correct, prob, method="combined")
    assert r.indices[0] == 4
    assert r.indices[1] == 1
    assert r.method == "combined"
    assert r.confidence_source == "prob_true" and r.weights == (1.0, 1.0, 1.0)
    assert r.aum is None and r.fit_weighted_aum is None  # no margins given
    # components by hand for the planted example
    assert r.lateness[4] == pytest.approx(8 / 10)
    assert r.forgetting[4] == pytest.approx(2 / 5)
    assert r.low_confidence[4] == pytest.approx(1 - prob[:, 4].mean())
    assert r.scores[4] == pytest.approx((r.low_confidence[4] + 0.8 + 0.4) / 3)
    # every method (margins, correct-only variants) agrees on the top example
    marg = np.where(correct, 2.0, -2.0)
    for method in SUSPICION_METHODS:
        assert rank_suspicious(correct, margins=marg, method=method).indices[0] == 4
    assert rank_suspicious(correct, method="combined").indices[0] == 4
    assert rank_suspicious(correct, method="confidence").indices[0] == 4
    # with both, the confidence term comes from prob_true
    both = rank_suspicious(correct, prob, margins=marg, method="confidence")
    assert both.confidence_source == "prob_true"
    np.testing.assert_allclose(both.scores, 1 - prob.mean(axis=0))
    with pytest.raises(ValueError, match="weights"):
        rank_suspicious(correct, method="combined", weights=(1.0, -1.0, 1.0))


def test_unfitted_fraction_and_area_under_margin_by_hand():
    c = np.array([[F, F, F, T], [T, F, T, T], [T, T, T, T]])
    assert unfitted_fraction(c).tolist() == [0.75, 0.25, 0.0]
    m = np.array([[-1.0, -2.0, -0.5, 1.0], [1.0, -1.0, 2.0, 2.0], [3.0, 10.0, 3.0, 5.0]])
    np.testing.assert_allclose(area_under_margin(m), [1.0, 7 / 3, 1.5, 8 / 3])
    np.testing.assert_allclose(area_under_margin(m, [0.75, 0.25, 0.0]), [-0.5, -1.75, 0.125, 1.25])
    np.testing.assert_allclose(area_under_margin(m, [2.0, 0.0, 0.0]), m[0])  # scale-free
    with pytest.raises(ValueError, match="shape"):
        area_under_margin(m, [1.0, 1.0])
    with pytest.raises(ValueError, match="positive sum"):
        area_under_margin(m, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        area_under_margin(m, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        area_under_margin(np.array([[np.nan, 1.0]]))


def test_fit_weighted_aum_ranking_by_hand():
    """Example 1 is wrong while the network learns and memorised at the end (margin 10):
    plain AUM ranks it third, the fit-weighted AUM (weights 3/4, 1/4, 0) first."""
    c = np.array([[F, F, F, T], [T, F, T, T], [T, T, T, T]])
    m = np.array([[-1.0, -2.0, -0.5, 1.0], [1.0, -1.0, 2.0, 2.0], [3.0, 10.0, 3.0, 5.0]])
    r = rank_suspicious(c, margins=m)
    assert r.method == "fit_weighted_aum"
    np.testing.assert_allclose(r.epoch_weights, [0.75, 0.25, 0.0])
    np.testing.assert_allclose(r.fit_weighted_aum, [-0.5, -1.75, 0.125, 1.25])
    np.testing.assert_allclose(r.scores, [0.5, 1.75, -0.125, -1.25])
    assert r.indices.tolist() == [1, 0, 2, 3]
    np.testing.assert_allclose(r.aum, [1.0, 7 / 3, 1.5, 8 / 3])
    plain = rank_suspicious(c, margins=m, method="aum")
    np.testing.assert_allclose(plain.scores, [-1.0, -7 / 3, -1.5, -8 / 3])
    assert plain.indices.tolist() == [0, 2, 1, 3]
    # low_confidence from the margins' sigmoid when no prob_true is given
    assert plain.confidence_source == "margin_sigmoid"
    np.testing.assert_allclose(plain.low_confidence, 1 - (1 / (1 + np.exp(-m))).mean(axis=0))


def test_fit_weighted_aum_falls_back_to_plain_when_always_fitted():
    c = np.ones((3, 2), dtype=bool)
    m = np.array([[1.0, 4.0], [2.0, 1.0], [6.0, 1.0]])
    r = rank_suspicious(c, margins=m)
    np.testing.assert_allclose(r.epoch_weights, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(r.fit_weighted_aum, [3.0, 2.0])
    np.testing.assert_allclose(r.fit_weighted_aum, r.aum)
    assert r.indices.tolist() == [1, 0]


def test_ranking_method_errors():
    c = np.array([[T, F], [T, T]])
    for method in ("fit_weighted_aum", "aum"):
        with pytest.raises(ValueError, match="needs margins"):
            rank_suspicious(c, np.full((2, 2), 0.5), method=method)
    with pytest.raises(ValueError, match="method must be one of"):
        rank_suspicious(c, margins=np.ones((2, 2)), method="forgetting")
    with pytest.raises(ValueError, match="margins has shape"):
        rank_suspicious(c, margins=np.ones((3, 2)))


def test_detection_auroc_by_hand_and_by_pairs():
    scores = np.array([3.0, 1.0, 2.0, 2.0, 0.0])
    positive = np.array([True, False, True, False, False])
    # pairs (pos, neg): 3 beats all 3; 2 beats 1 and 0 and ties 2 -> (3 + 2.5) / 6
    assert detection_auroc(scores, positive) == pytest.approx(5.5 / 6)
    assert detection_auroc(-scores, positive) == pytest.approx(0.5 / 6)
    assert detection_auroc(torch.tensor(scores), torch.tensor(positive).int()) == pytest.approx(
        5.5 / 6)
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, 200).astype(float)  # many ties
    pos = rng.random(200) < 0.3
    diff = s[pos][:, None] - s[~pos][None, :]
    assert detection_auroc(s, pos) == pytest.approx((diff > 0).mean() + 0.5 * (diff == 0).mean())
    with pytest.raises(ValueError, match="one positive and one negative"):
        detection_auroc(scores, np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="one length"):
        detection_auroc(scores, positive[:3])
    with pytest.raises(ValueError, match="boolean"):
        detection_auroc(scores, np.full(5, 2))
    with pytest.raises(ValueError, match="NaN"):
        detection_auroc([np.nan, 1.0], [True, False])


def test_ranking_ties_by_index_and_never_learned():
    c = np.array([[T, F, T], [T, F, T]])
    r = rank_suspicious(c, method="combined")
    assert r.indices.tolist() == [1, 0, 2]
    assert r.lateness.tolist() == [0.0, 1.0, 0.0]


def _logits_for(correct_row: np.ndarray, labels: np.ndarray, k: int = 3) -> torch.Tensor:
    z = torch.zeros(len(labels), k, dtype=torch.float64)
    for i, (ok, y) in enumerate(zip(correct_row, labels, strict=True)):
        z[i, y if ok else (y + 1) % k] = 2.0
    return z


def test_tracker_eval_full_epochs():
    labels = np.array([0, 1, 2, 0, 1])
    tr = PerExampleTracker(5)
    for row in HISTORY:
        tr.update(_logits_for(row, labels), torch.tensor(labels))
    h = tr.compute()
    assert h.source == "eval" and h.n_epochs == 5 and h.n_examples == 5
    assert np.array_equal(h.correct, HISTORY)
    assert h.learned_epoch.tolist() == [1, 3, 3, 4, -1]
    assert h.forgetting_events.tolist() == [0, 1, 0, 2, 0]
    p_hi = math.exp(2) / (math.exp(2) + 2)
    p_lo = 1 / (math.exp(2) + 2)
    assert np.allclose(h.prob_true, np.where(HISTORY, p_hi, p_lo))
    assert np.allclose(h.margins, np.where(HISTORY, 2.0, -2.0))
    assert np.allclose(h.data_map.confidence, h.prob_true.mean(axis=0))
    assert h.data_map.correctness_method == "correct"
    want = rank_suspicious(HISTORY, h.prob_true, margins=h.margins)
    assert h.ranking.method == DEFAULT_SUSPICION_METHOD == "fit_weighted_aum"
    assert h.ranking.indices.tolist() == want.indices.tolist()
    # margins are +-2: the fit-weighted AUM is 2 * (weighted fraction correct) - 1, with epoch
    # weights 3/5, 3/5, 3/5, 2/5, 1/5 (fraction misclassified): never learned (4), then wrong
    # for the three heavy epochs (2), then the flip-flopping one (3)
    np.testing.assert_allclose(h.ranking.fit_weighted_aum, [1.0, 1.0, -1.0, 1 / 3, -2.0])
    assert h.ranking.indices.tolist()[:3] == [4, 2, 3]
    combined = tr.compute(method="combined").ranking
    assert combined.method == "combined"
    assert set(combined.indices[:2].tolist()) == {3, 4}  # flip-flopping and never learned
    with pytest.raises(ValueError, match="method must be one of"):
        tr.compute(method="forgetting")


def test_tracker_online_batches():
    labels = np.array([0, 1, 2, 0, 1])
    tr = PerExampleTracker(5)
    rng = np.random.default_rng(1)
    for e, row in enumerate(HISTORY):
        perm = rng.permutation(5)
        for batch in (perm[:2], perm[2:]):
            z = _logits_for(row[batch], labels[batch]).float()
            tr.update(z, torch.tensor(labels[batch]), torch.tensor(batch), source="online", epoch=e)
    h = tr.compute()
    assert h.source == "online"
    assert np.array_equal(h.correct, HISTORY)
    assert h.learned_epoch.tolist() == [1, 3, 3, 4, -1]


def test_tracker_errors():
    tr = PerExampleTracker(3)
    with pytest.raises(ValueError, match="nothing recorded"):
        tr.compute()
    with pytest.raises(ValueError, match="all 3 examples"):
        tr.update(torch.zeros(2, 2), torch.tensor([0, 1]))
    tr.update(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1]), epoch=0)
    with pytest.raises(ValueError, match="epoch 0 is missing 1"):
        tr.compute()
    with pytest.raises(ValueError, match="already recorded"):
        tr.update(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([1]), epoch=0)
    with pytest.raises(ValueError, match="in order"):
        tr.update(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([2]), epoch=5)
    with pytest.raises(ValueError, match="source"):
        tr.update(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([2]), source="online", epoch=0)
    with pytest.raises(ValueError, match="source must be"):
        tr.update(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([2]), source="train")
    with pytest.raises(ValueError, match="duplicates"):
        tr.update(torch.zeros(2, 2), torch.tensor([0, 0]), torch.tensor([2, 2]), epoch=0)
    with pytest.raises(ValueError, match="NaN"):
        tr.update(torch.full((1, 2), float("nan")), torch.tensor([0]), torch.tensor([2]), epoch=0)
    # failed updates left no trace; completing epoch 0 works
    tr.update(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([2]), epoch=0)
    assert tr.compute().n_epochs == 1
    tr.reset()
    assert tr.n_epochs == 0 and tr.source is None
    with pytest.raises(ValueError, match="n_examples"):
        PerExampleTracker(0)


def test_tracker_does_not_keep_graph():
    w = torch.ones(2, requires_grad=True)
    logits = torch.stack([w, -w]) * 3.0
    tr = PerExampleTracker(2)
    tr.update(logits, torch.tensor([0, 1]))
    h = tr.compute()
    assert h.correct.tolist() == [[True, False]]  # ties -> argmax picks class 0
    assert w.grad is None


def test_tracker_accepts_low_precision_and_integer_logits():
    tr = PerExampleTracker(2)
    tr.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.bfloat16), torch.tensor([0, 0]))
    tr.update(np.array([[0, 3], [1, 0]]), np.array([0, 0]))
    h = tr.compute()
    assert h.correct.tolist() == [[True, False], [False, True]]
    assert h.margins.tolist() == [[2.0, -1.0], [-3.0, 1.0]]
    assert margin(torch.tensor([[1, 4]]), torch.tensor([1])).tolist() == [3.0]
