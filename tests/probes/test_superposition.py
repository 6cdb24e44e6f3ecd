"""SuperpositionProbe: toy-model superposition measures of a weight matrix during training."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope import Scope
from learnscope.measures.superposition import superposition_summary
from learnscope.probes import every
from learnscope.probes.superposition import SuperpositionProbe
from learnscope.testing import assert_same_model

torch.set_num_threads(1)

M, NF = 2, 5


class Toy(nn.Module):
    """Elhage et al.'s ReLU output model: x -> relu(W^T W x + b), W is m x n."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(M, NF, generator=g) * 0.5)
        self.b = nn.Parameter(torch.zeros(NF))

    def forward(self, x):
        return torch.relu(x @ self.W.T @ self.W + self.b)


def _batch(t, n=64):
    g = torch.Generator().manual_seed(1000 + t)
    x = torch.rand(n, NF, generator=g)
    return x * (torch.rand(n, NF, generator=g) < 0.1)  # sparse features


def _train(net, steps=12, scope=None):
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for t in range(steps):
        x = _batch(t)
        opt.zero_grad()
        loss = ((net(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
        if scope is not None:
            scope.step(loss)
    return net


def _by(recs, key, step):
    return [r for r in recs if r.key == key and r.step == step]


def test_runs_in_a_training_loop_and_equals_the_measure():
    net = Toy()
    scope = Scope(net, [SuperpositionProbe("W", threshold=0.3)], out=None)
    _train(net, 12, scope)
    scope.close()
    steps = [0, 1, 3, 5, 10, 12]  # log_spaced(3), then the final state
    for key in ("n_represented", "dims_per_feature", "mean_dimensionality",
                "max_interference"):
        assert [r.step for r in scope.records if r.key == key] == steps
    assert len([r for r in scope.records if r.key == "feature_norm"]) == NF * len(steps)
    s = superposition_summary(net.W.detach(), 0.3)
    (n_rep,) = _by(scope.records, "n_represented", 12)
    assert n_rep.value == s.n_represented
    assert n_rep.meta == {"parameter": "W", "threshold": 0.3, "features_axis": 1, "epoch": 0}
    assert _by(scope.records, "dims_per_feature", 12)[0].value == pytest.approx(
        s.dims_per_feature)
    rep = s.norms > 0.3
    assert _by(scope.records, "mean_dimensionality", 12)[0].value == pytest.approx(
        s.dimensionality[rep].mean())
    assert _by(scope.records, "max_interference", 12)[0].value == pytest.approx(
        s.interference.max())
    norms = sorted(_by(scope.records, "feature_norm", 12), key=lambda r: r.meta["feature"])
    dims = sorted(_by(scope.records, "feature_dimensionality", 12),
                  key=lambda r: r.meta["feature"])
    np.testing.assert_allclose([r.value for r in norms], s.norms, rtol=1e-12)
    np.testing.assert_allclose([r.value for r in dims], s.dimensionality, rtol=1e-12)


def test_closed_form_pentagon_and_rows():
    """Five unit features on a pentagon in 2-D: D_i = 2/5, dims per feature = 2/5."""
    net = Toy()
    angles = torch.arange(NF) * 2 * math.pi / NF
    with torch.no_grad():
        net.W.copy_(torch.stack([angles.cos(), angles.sin()]))
    scope = Scope(net, [SuperpositionProbe("W", schedule=every(1))], out=None)
    scope.close()
    vals = {r.key: r.value for r in scope.records if "feature" not in r.meta}
    assert vals["n_represented"] == 5
    assert vals["dims_per_feature"] == pytest.approx(0.4)
    assert vals["mean_dimensionality"] == pytest.approx(0.4)
    # sum_{j != i} cos^2: 2 cos^2(72) + 2 cos^2(144) = 1.5
    assert vals["max_interference"] == pytest.approx(1.5)
    for r in scope.records:
        if r.key == "feature_dimensionality":
            assert r.value == pytest.approx(0.4)

    # Features along rows (a decoder's weight): nn.Linear(2, 3).weight is 3 x 2; with
    # features_axis=0 its 3 rows are the features.
    dec = nn.Sequential(nn.Linear(2, 3, bias=False))
    with torch.no_grad():
        dec[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    scope = Scope(dec, [SuperpositionProbe("0.weight", features_axis=0)], out=None)
    scope.close()
    vals = {r.key: r.value for r in scope.records if "feature" not in r.meta}
    assert vals["n_represented"] == 2 and vals["dims_per_feature"] == pytest.approx(2 / 5)
    assert vals["mean_dimensionality"] == 1.0 and vals["max_interference"] == 0.0
    norms = [r.value for r in scope.records if r.key == "feature_norm"]
    assert norms == [1.0, 2.0, 0.0]


def test_all_zero_weight_gives_nan_with_note():
    net = Toy()
    with torch.no_grad():
        net.W.zero_()
    scope = Scope(net, [SuperpositionProbe("W")], out=None)
    scope.close()
    by = {r.key: r for r in scope.records if "feature" not in r.meta}
    assert by["n_represented"].value == 0
    assert math.isnan(by["dims_per_feature"].value) and "note" in by["dims_per_feature"].meta
    assert math.isnan(by["mean_dimensionality"].value) and "note" in by[
        "mean_dimensionality"].meta
    assert by["max_interference"].value == 0


def test_does_not_change_training():
    plain = _train(Toy(), 10)
    probed = Toy()
    rng = torch.get_rng_state()
    np_rng = np.random.get_state()[1].copy()
    scope = Scope(probed, [SuperpositionProbe("W", schedule=every(1))], out=None)
    assert torch.equal(torch.get_rng_state(), rng)
    _train(probed, 10, scope)
    scope.close()
    assert_same_model(plain, probed)
    assert torch.equal(torch.get_rng_state(), rng)
    assert np.array_equal(np.random.get_state()[1], np_rng)


def test_bad_args():
    with pytest.raises(ValueError, match="'nope'"):
        Scope(Toy(), [SuperpositionProbe("nope")], out=None)
    with pytest.raises(ValueError, match="2-D"):
        Scope(Toy(), [SuperpositionProbe("b")], out=None)
    with pytest.raises(ValueError, match="features_axis"):
        SuperpositionProbe("W", features_axis=2)
    with pytest.raises(ValueError, match="threshold"):
        SuperpositionProbe("W", threshold=-1)
    with pytest.raises(ValueError, match="threshold"):
        SuperpositionProbe("W", threshold=float("nan"))
    with pytest.raises(ValueError, match="parameter"):
        SuperpositionProbe("")
    assert SuperpositionProbe("W").params() == {"parameter": "W", "schedule":
                                               "log-spaced, 3 per decade", "threshold": 0.5,
                                               "features_axis": 1}
