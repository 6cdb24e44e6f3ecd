"""increasing-complexity: the binary MNIST-1D task and the per-seed summary behind the claims."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from learnscope.analysis import Results
from learnscope.errors import ConfigError
from learnscope.runner import resolve_config
from learnscope.store.records import Record, TrialResult
from learnscope.studies import get_study
from learnscope.studies.increasing_complexity import N_TEST, _summary, binary_mnist1d

torch.set_num_threads(1)


def test_binary_mnist1d_is_deterministic_balanced_and_nested():
    a, b = binary_mnist1d(1000), binary_mnist1d(1000)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.n_classes == 2 and len(a.y_train) == 1000 and len(a.y_test) == N_TEST
    assert set(a.y_train.unique().tolist()) == {0, 1}
    assert 0.4 < a.y_test.float().mean().item() < 0.6  # 5 digits against 5
    big = binary_mnist1d(3000)  # a larger training set extends the smaller one, same test set
    assert torch.equal(big.x_train[:1000], a.x_train) and torch.equal(big.x_test, a.x_test)
    small = binary_mnist1d(400, n_test=400)  # the tiny size: a smaller generated set
    assert len(small.y_train) == 400 and len(small.y_test) == 400


def test_linear_classifier_is_clearly_above_chance_and_far_from_perfect():
    """The stated setup: logistic regression reaches about 0.64 test accuracy."""
    data = binary_mnist1d(5000)
    clf = LogisticRegression(max_iter=1000).fit(data.x_train.double().numpy(),
                                                data.y_train.numpy())
    acc = float(np.mean(clf.predict(data.x_test.double().numpy()) == data.y_test.numpy()))
    assert 0.6 < acc < 0.7


def _trial(seed, rows):
    """rows: step -> (i_fy, i_fy_given_l, agreement, accuracy), I(L;Y) = 0.05 throughout."""
    recs = []
    for step, (i_fy, cond, agree, acc) in rows.items():
        recs += [Record("i_fy", i_fy, step), Record("i_fy_given_l", cond, step),
                 Record("linear_part", i_fy - cond, step), Record("i_ly", 0.05, step),
                 Record("agreement", agree, step), Record("accuracy", acc, step)]
    return TrialResult(f"t{seed}", {"part": "train", "seed": seed}, "finished", recs)


def test_summary_oracle():
    cfg = resolve_config(get_study("increasing-complexity"), quick=True)
    rows = {0: (0.0, 0.0, 0.5, 0.5),
            10: (0.02, 0.01, 0.7, 0.6),    # I(F;Y) < 0.025: before the phase
            50: (0.05, 0.005, 0.9, 0.64),  # phase: fraction 0.9
            100: (0.07, 0.021, 0.8, 0.66),  # phase: fraction 0.7
            500: (0.2, 0.16, 0.7, 0.75)}   # beyond 1.5 * 0.05: after the phase
    results = Results([_trial(0, rows)])
    s = _summary(cfg, {"seed": 0}, results)
    assert s["phase_checkpoints"] == 2 and s["phase_end"] == 100
    assert s["phase_fraction"] == pytest.approx((0.9 + 0.7) / 2)
    assert s["phase_agreement"] == pytest.approx(0.85)
    assert s["peak_agreement"] == 0.9 and s["peak_step"] == 50
    assert s["final_agreement"] == 0.7 and s["final_acc"] == 0.75
    assert s["final_beyond"] == pytest.approx(0.8)
    assert s["retained"] == pytest.approx(0.04 / 0.05)


def test_summary_without_a_phase_is_nan_and_the_claim_fails():
    study = get_study("increasing-complexity")
    cfg = resolve_config(study, quick=True)
    rows = {0: (0.0, 0.0, 0.5, 0.5), 100: (0.3, 0.29, 0.55, 0.8)}  # jumps past the phase
    results = Results([_trial(0, rows), _trial(1, rows)])
    assert math.isnan(_summary(cfg, {"seed": 0}, results)["phase_fraction"])
    claims = {c.id: c for c in study.claims(cfg, results)}
    assert not claims["early-performance-is-linear"].holds
    assert not claims["closest-to-linear-early"].holds  # peak 0.55 is not above final 0.55
    assert not claims["linear-part-retained"].holds  # 0.01 of 0.05 bits


def test_checkpoints_must_lie_below_steps():
    with pytest.raises(ConfigError, match="checkpoints"):
        resolve_config(get_study("increasing-complexity"), quick=True,
                       overrides={"steps": 20, "checkpoints": [0, 10, 30, 40]})
