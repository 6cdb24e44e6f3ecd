"""Modular-addition data: every pair once, the split sizes, determinism."""

import pytest
import torch

from learnscope.data.modular import modular_addition


def test_every_pair_once_with_its_sum():
    data = modular_addition(7, 0.5, seed=3)
    both = torch.cat([data.train_idx, data.test_idx])
    assert sorted(both.tolist()) == list(range(49))
    pairs = {(int(a), int(b)) for a, b in zip(data.a, data.b, strict=True)}
    assert len(pairs) == 49
    assert all(int(y) == (int(a) + int(b)) % 7
               for a, b, y in zip(data.a, data.b, data.labels, strict=True))
    # every class appears p times over all pairs
    assert torch.bincount(data.labels, minlength=7).tolist() == [7] * 7


def test_split_sizes_and_determinism():
    data = modular_addition(59, 0.5, seed=0)
    assert (len(data.train_idx), len(data.test_idx)) == (1740, 1741)
    again = modular_addition(59, 0.5, seed=0)
    assert torch.equal(data.train_idx, again.train_idx)
    other = modular_addition(59, 0.5, seed=1)
    assert not torch.equal(data.train_idx, other.train_idx)
    assert len(modular_addition(59, 0.3, seed=0).train_idx) == int(0.3 * 59 * 59)


def test_one_hot_inputs_and_classification_split():
    data = modular_addition(5, 0.6, seed=2)
    x = data.one_hot()
    assert x.shape == (25, 10) and torch.equal(x.sum(1), torch.full((25,), 2.0))
    assert torch.equal(x[:, :5].argmax(1), data.a) and torch.equal(x[:, 5:].argmax(1), data.b)
    cls = data.classification()
    assert cls.n_classes == 5 and len(cls.x_train) == 15 and len(cls.x_test) == 10
    assert torch.equal(cls.y_test, data.labels[data.test_idx])


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.01])
def test_empty_split_is_refused(fraction):
    with pytest.raises(ValueError):
        modular_addition(5, fraction)
