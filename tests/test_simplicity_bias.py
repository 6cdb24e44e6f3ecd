"""The LMS (linear + slab) generator and the simplicity-bias study's own pieces."""

import pytest
import torch

from learnscope.data.slabs import (
    lms_data,
    shuffle_columns,
    slab_coordinate,
    slab_index,
    slab_label,
)
from learnscope.seeding import torch_generator


def _all(data):
    return torch.cat([data.x_train, data.x_test]), torch.cat([data.y_train, data.y_test])


@pytest.mark.parametrize("n_slabs", [3, 5, 7])
def test_every_coordinate_alone_predicts_the_label_with_its_margin(n_slabs):
    margin, gap = 0.1, 0.1
    x, y = _all(lms_data(3000, 1000, dim=6, n_slabs=n_slabs, linear_margin=margin,
                         slab_gap=gap, seed=3))
    # linear coordinate: its sign is the label, never closer than the margin to 0
    assert torch.equal((x[:, 0] > 0).long(), y)
    assert x[:, 0].abs().min() >= margin - 1e-6 and x[:, 0].abs().max() <= 1.0
    # slab coordinates: the slab a value lies in is the label, half the gap from every edge
    width = 2.0 / n_slabs
    for j in range(1, 6):
        v = x[:, j]
        assert torch.equal(slab_label(slab_index(v, n_slabs)), y)
        position = (v.double() + 1.0) / width
        edge_distance = (position - position.round()).abs() * width
        assert edge_distance.min() >= gap / 2 - 1e-6


def test_slab_labels_alternate_and_every_slab_is_used():
    assert slab_label(torch.arange(5)).tolist() == [1, 0, 1, 0, 1]
    assert slab_index(torch.tensor([-1.0, -0.61, -0.59, 0.0, 0.99, 1.0]), 5).tolist() == \
        [0, 0, 1, 2, 4, 4]
    y = torch.tensor([1] * 3000 + [0] * 3000)
    v = slab_coordinate(y, 5, 0.1, torch_generator(0, "t"))
    idx = slab_index(v, 5)
    counts = torch.bincount(idx, minlength=5).float()
    # class 1 spreads over slabs 0, 2, 4 (1000 each), class 0 over slabs 1, 3 (1500 each)
    expected = torch.tensor([1000.0, 1500.0, 1000.0, 1500.0, 1000.0])
    assert ((counts - expected).abs() <= 4 * expected.sqrt()).all()
    # no threshold on a 5-slab coordinate predicts the label well (best threshold, brute force)
    best = max(max(((v > t).long() == y).float().mean().item(),
                   ((v <= t).long() == y).float().mean().item())
               for t in torch.linspace(-1, 1, 201).tolist())
    assert best < 0.7


def test_labels_balanced_and_generator_deterministic():
    a = lms_data(2000, 500, dim=5, seed=7)
    b = lms_data(2000, 500, dim=5, seed=7)
    c = lms_data(2000, 500, dim=5, seed=8)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert abs(a.y_train.float().mean().item() - 0.5) < 4 * (0.25 / 2000) ** 0.5
    assert a.x_train.shape == (2000, 5) and a.n_classes == 2


def test_shuffle_columns_keeps_marginals_and_breaks_the_label():
    data = lms_data(4000, 10, dim=4, seed=1)
    x, y = data.x_train, data.y_train
    lin = shuffle_columns(x, [0], seed=2)
    assert torch.equal(lin[:, 1:], x[:, 1:])
    assert torch.equal(lin[:, 0].sort().values, x[:, 0].sort().values)
    acc = ((lin[:, 0] > 0).long() == y).float().mean().item()
    assert abs(acc - 0.5) < 4 * (0.25 / 4000) ** 0.5
    slabs = shuffle_columns(x, [1, 2, 3], seed=2)
    assert torch.equal(slabs[:, 0], x[:, 0])
    # one permutation for the block: rows of the slab block stay together
    rows = {tuple(r) for r in x[:, 1:].tolist()}
    assert all(tuple(r) in rows for r in slabs[:, 1:].tolist())
    assert torch.equal(shuffle_columns(x, [0], seed=2), lin)
    assert torch.equal(shuffle_columns(x, [], seed=2), x)


@pytest.mark.parametrize("kwargs", [{"dim": 1}, {"n_slabs": 1}, {"slab_gap": 0.5},
                                    {"linear_margin": 1.0}, {"n_train": 0}])
def test_lms_refuses_impossible_settings(kwargs):
    args = {"n_train": 10, "n_test": 10} | kwargs
    with pytest.raises(ValueError):
        lms_data(args.pop("n_train"), args.pop("n_test"), **args)


def test_study_refuses_a_gap_wider_than_a_slab():
    from learnscope.errors import ConfigError
    from learnscope.studies import get_study

    study = get_study("simplicity-bias")
    with pytest.raises(ConfigError, match="slab_gap"):
        study.Config(n_slabs=9, slab_gap=0.3).check()


def test_test_sets_monitor_tags_each_version():
    """The study's monitor runs one probe session per test version on one model and tags
    every record with its version: accuracy on the linear-shuffled set of a model that reads
    only x0 is its agreement with the (shuffled) linear rule's label, not with y."""
    from learnscope.probes import SimplicityProbe, at_steps
    from learnscope.probes.session import ProbeSession
    from learnscope.studies.simplicity_bias import _test_versions, _TestSets

    data = lms_data(10, 2000, dim=3, seed=4)
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-5.0, 0, 0], [5.0, 0, 0]]))
        model.bias.zero_()
    sessions = {name: ProbeSession(model, [SimplicityProbe((x[:, 0] > 0).long(),
                                                           schedule=at_steps(0))],
                                   data=(x, data.y_test))
                for name, x in _test_versions(data, seed=4).items()}
    records = _TestSets(model, sessions).close()
    acc = {r.meta["test_set"]: r.value for r in records if r.key == "accuracy" and r.step == 0}
    agree = {r.meta["test_set"]: r.value for r in records if r.key == "agreement"}
    assert acc["original"] == 1.0 and acc["slabs shuffled"] == 1.0
    assert abs(acc["linear shuffled"] - 0.5) < 4 * (0.25 / 2000) ** 0.5
    assert set(agree.values()) == {1.0}


def test_linear_share_is_the_first_column_share_of_the_squared_norm():
    from learnscope.studies.simplicity_bias import _linear_share

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        model[2].weight.fill_(100.0)  # later layers do not count
    assert _linear_share(model) == pytest.approx(9 / 25)
