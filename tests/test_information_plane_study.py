import math

import pytest
import torch

from learnscope.data.bits12 import all_patterns, bits12, threshold_labels
from learnscope.store.records import Record
from learnscope.studies.information_plane import (
    _trial_records,
    measurement_epochs,
    relative_compression,
)


def test_all_patterns_are_every_binary_code_once():
    x = all_patterns()
    assert x.shape == (4096, 12) and x.dtype == torch.float32
    assert set(x.unique().tolist()) == {0.0, 1.0}
    codes = (x.long() * (2 ** torch.arange(11, -1, -1))).sum(dim=1)
    assert torch.equal(codes, torch.arange(4096))  # row i is the binary code of i
    with pytest.raises(ValueError):
        all_patterns(0)


def test_threshold_labels_balanced_seeded_and_a_threshold_of_the_score():
    x = all_patterns()
    y = threshold_labels(x, seed=3)
    assert y.dtype == torch.int64 and int(y.sum()) == 2048
    assert torch.equal(y, threshold_labels(x, seed=3))
    assert not torch.equal(y, threshold_labels(x, seed=4))
    # brute force on 3 bits: the labels are the top half of the score of the same streams
    small = all_patterns(3)
    lab = threshold_labels(small, seed=0, pair_weight=0.0)
    assert int(lab.sum()) == 4
    from learnscope.seeding import torch_generator
    w = torch.randn(3, generator=torch_generator(0, "bits12-labels"), dtype=torch.float64)
    score = small.double() @ w
    assert torch.equal(lab.bool(), score > score.median())
    with pytest.raises(ValueError):
        threshold_labels(x, seed=0, pair_weight=-1.0)


def test_pair_terms_make_the_task_not_linearly_separable():
    """A least-squares linear separator of the pure threshold function is perfect; with pair
    terms it is not (the hidden layers must do some work)."""
    x = all_patterns()
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)

    def linear_accuracy(y: torch.Tensor) -> float:
        # a perceptron run to convergence or 200 epochs, from the least-squares start
        w = torch.linalg.lstsq(design, (2 * y - 1).double().unsqueeze(1)).solution.squeeze(1)
        s = 2 * y.double() - 1
        for _ in range(200):
            wrong = (design @ w) * s <= 0
            if not wrong.any():
                break
            w = w + (design[wrong] * s[wrong, None]).sum(0) / len(x)
        return float(((design @ w) * s > 0).double().mean())

    assert linear_accuracy(threshold_labels(x, seed=1, pair_weight=0.0)) == 1.0
    assert linear_accuracy(threshold_labels(x, seed=1)) < 0.97


def test_bits12_split():
    d = bits12(seed=5)
    assert len(d.x_train) + len(d.x_test) == 4096 and len(d.x_test) == round(0.15 * 4096)
    both = torch.cat([d.x_train, d.x_test])
    assert len(both.unique(dim=0)) == 4096  # a partition of all patterns
    x = all_patterns()
    y = threshold_labels(x, seed=5)
    index = (d.x_test.long() * (2 ** torch.arange(11, -1, -1))).sum(dim=1)
    assert torch.equal(d.y_test, y[index]) and d.n_classes == 2
    again = bits12(seed=5)
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_train, d.y_train)
    assert not torch.equal(bits12(seed=6).x_test, d.x_test)
    with pytest.raises(ValueError):
        bits12(test_fraction=1.0)


def test_relative_compression_and_measurement_epochs():
    assert relative_compression([1.0, 4.0, 3.0]) == pytest.approx(0.25)
    assert relative_compression([1.0, 2.0, 4.0]) == 0.0
    assert math.isnan(relative_compression([0.0, 0.0]))
    eps = measurement_epochs(1000)
    assert eps[0] == 0 and eps[-1] == 1000 and eps == sorted(set(eps))
    assert measurement_epochs(1) == [0, 1]


def test_trial_records_pair_coordinates_and_compress_per_layer():
    recs = []
    for step, (a, b) in zip([0, 10, 20], [(1.0, 2.0), (4.0, 3.0), (2.0, 3.0)], strict=True):
        for layer, v in [("1", a), ("3", b), ("5", 0.0)]:
            meta = {"layer": layer, "estimator": "binning"}
            recs += [Record("i_xt", v, step, "information_plane", dict(meta)),
                     Record("i_ty", v / 10, step, "information_plane", dict(meta))]
    out = _trial_records(recs, {"1": 1, "3": 2, "5": 3}, steps_per_epoch=5)
    ty = [r for r in out if r.key == "i_ty" and r.meta["depth"] == 1]
    assert [r.meta["i_xt_bits"] for r in ty] == [1.0, 4.0, 2.0]
    assert [r.meta["epoch"] for r in ty] == [0, 2, 4]
    comp = {(r.meta["estimator"], r.meta["depth"]): r.value for r in out
            if r.key == "relative_compression"}
    assert comp[("binning", 1)] == pytest.approx(0.5) and comp[("binning", 2)] == 0.0
    assert ("kde", 1) not in comp  # no KDE records, no KDE compression
    assert ("binning", 3) not in comp  # a constant layer: nothing to compress
