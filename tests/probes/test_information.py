import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learnscope import Scope
from learnscope.measures.information import information_plane_binning, information_plane_kde
from learnscope.models.mlp import mlp
from learnscope.probes.base import capture, eval_mode
from learnscope.probes.information import InformationPlaneProbe
from learnscope.probes.schedule import at_end, every, log_spaced
from learnscope.testing import assert_same_model

STEPS = 10
SIZES = [8, 12, 4, 3]

def probed(scope):
    """The probes' records (without the loss and scalars the loop passed to step())."""
    return [r for r in scope.records if r.probe != "scalars"]



def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    xp = torch.randn(50, 8, generator=g)
    yp = (xp[:, 0] > 0).long() + (xp[:, 1] > 0).long()
    return x, y, xp, yp


def _train(model, steps=STEPS, scope=None, on_step=None):
    x, y, _, _ = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for t in range(1, steps + 1):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(t, model)
        if scope is not None:
            scope.step(loss)
    return model


def _acts(model, layers, xp):
    with torch.no_grad(), eval_mode(model), capture(model, layers) as store:
        model(xp)
    return {k: v.clone().double().numpy() for k, v in store.items()}


def _run(probe, steps=STEPS, activation="tanh"):
    _, _, xp, yp = _data()
    model = mlp(SIZES, activation=activation, seed=0)
    layers = probe.layers(model)
    oracle = {0: _acts(model, layers, xp)}
    scope = Scope(model, [probe], data=(xp, yp), out=None)
    _train(model, steps, scope, lambda t, m: oracle.__setitem__(t, _acts(m, layers, xp)))
    scope.close()
    return scope, oracle, layers, yp.numpy()


def test_binning_in_training_loop_matches_measure():
    probe = InformationPlaneProbe(schedule=log_spaced(4), value_range=(-1, 1))
    scope, oracle, layers, y = _run(probe)
    assert layers == ["1", "3"]
    due = [0] + [s for s in range(1, STEPS + 1) if probe.schedule.due_step(s)]
    assert due == [0, 1, 2, 4, 6, 10]
    counts = Counter((r.key, r.step) for r in probed(scope))
    assert counts == {(k, s): 2 for k in ("i_xt", "i_ty") for s in due}  # no duplicate at end
    ids = np.arange(len(y))
    for r in probed(scope):
        layer = r.meta["layer"]
        ref = information_plane_binning(oracle[r.step][layer], ids, y, bins=30,
                                        value_range=(-1, 1))
        assert r.value == pytest.approx(ref.i_xt if r.key == "i_xt" else ref.i_ty, abs=1e-12)
        assert r.meta | {"epoch": 0} == {
            "layer": layer, "estimator": "binning", "units": "bits", "n": 50, "bins": 30,
            "bin_size": None, "range": [-1.0, 1.0], "range_source": "given", "epoch": 0}
        assert 0.0 <= r.value <= math.log2(50) + 1e-12


def test_data_range_bin_size_and_kde_match_measure():
    probe = InformationPlaneProbe(["3"], schedule=every(5), bins=10)
    scope, oracle, _, y = _run(probe, activation="relu")
    ids = np.arange(len(y))
    for r in probed(scope):
        t = oracle[r.step]["3"]
        ref = information_plane_binning(t, ids, y, bins=10)
        assert r.value == pytest.approx(ref.i_xt if r.key == "i_xt" else ref.i_ty, abs=1e-12)
        assert r.meta["range"] == pytest.approx([t.min(), t.max()])
        assert r.meta["range_source"] == "data"

    probe = InformationPlaneProbe(["3"], schedule=every(5), bin_size=0.25)
    scope, oracle, _, y = _run(probe)
    for r in probed(scope):
        ref = information_plane_binning(oracle[r.step]["3"], ids, y, bins=None, bin_size=0.25)
        assert r.value == pytest.approx(ref.i_xt if r.key == "i_xt" else ref.i_ty, abs=1e-12)
        assert r.meta["bins"] is None and r.meta["bin_size"] == 0.25 and r.meta["range"] is None

    probe = InformationPlaneProbe(["1"], schedule=every(5), estimator="kde", noise_variance=0.05)
    scope, oracle, _, y = _run(probe)
    assert sorted({r.step for r in probed(scope)}) == [0, 5, 10]
    for r in probed(scope):
        ref = information_plane_kde(oracle[r.step]["1"], y, noise_variance=0.05)
        assert r.value == pytest.approx(ref.i_xt if r.key == "i_xt" else ref.i_ty, abs=1e-12)
        assert r.meta["estimator"] == "kde" and r.meta["noise_variance"] == 0.05
        assert r.meta["units"] == "bits" and "bins" not in r.meta


def test_kde_on_a_fixed_subset_of_rows():
    """kde_samples=m: the bound of information_plane_kde on the same m rows at every step;
    m >= n: all rows (the same numbers as without the option)."""
    probe = InformationPlaneProbe(["1"], schedule=every(5), estimator="kde", kde_samples=20)
    scope, oracle, _, y = _run(probe)
    rows = probe._kde_rows(len(y))
    assert len(rows) == 20 == len(set(rows.tolist())) and list(rows) == sorted(rows)
    assert rows.min() >= 0 and rows.max() < len(y)
    assert np.array_equal(rows, InformationPlaneProbe(estimator="kde",
                                                      kde_samples=20)._kde_rows(len(y)))
    for r in probed(scope):
        ref = information_plane_kde(oracle[r.step]["1"][rows], y[rows], noise_variance=0.1)
        assert r.value == pytest.approx(ref.i_xt if r.key == "i_xt" else ref.i_ty, abs=1e-12)
        assert r.meta["kde_samples"] == 20
        assert r.value <= math.log2(20) + 1e-9
    everything = InformationPlaneProbe(["1"], schedule=every(5), estimator="kde",
                                       kde_samples=1000)
    scope, oracle, _, y = _run(everything)
    for r in probed(scope):
        ref = information_plane_kde(oracle[r.step]["1"], y, noise_variance=0.1)
        assert r.value == pytest.approx(ref.i_xt if r.key == "i_xt" else ref.i_ty, abs=1e-12)
        assert r.meta["kde_samples"] == len(y)


def test_closed_forms():
    _, _, xp, yp = _data()
    # A constant layer carries no information: both coordinates are exactly 0.
    model = mlp(SIZES, activation="tanh", seed=0)
    with torch.no_grad():
        model[0].weight.zero_()
    scope = Scope(model, [InformationPlaneProbe(["1"], schedule=at_end())], data=(xp, yp),
                  out=None)
    scope.close()
    assert [(r.key, r.value) for r in probed(scope)] == [("i_xt", 0.0), ("i_ty", 0.0)]
    # A layer that copies the label (one unit = y in {0, 1, 2}, 3 bins on [0, 2]): I(X;T) =
    # I(T;Y) = H(Y).
    with torch.random.fork_rng(devices=[]):
        lab = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(1, 3))
    x = yp.float()[:, None]
    scope = Scope(lab, [InformationPlaneProbe(["0"], schedule=at_end(), bins=3,
                                              value_range=(0, 2))], data=(x, yp), out=None)
    scope.close()
    p = np.bincount(yp.numpy()) / len(yp)
    h_y = float(-(p * np.log2(p)).sum())
    assert [r.value for r in probed(scope)] == pytest.approx([h_y, h_y], abs=1e-12)


def test_does_not_change_training():
    ref = _train(mlp(SIZES, activation="tanh", seed=0))
    _, _, xp, yp = _data()
    model = mlp(SIZES, activation="tanh", seed=0)
    rng = torch.get_rng_state()
    probes = [InformationPlaneProbe(schedule=every(1)),
              InformationPlaneProbe(schedule=every(3), estimator="kde")]
    scope = Scope(model, probes, data=(xp, yp), out=None)
    _train(model, scope=scope)
    scope.close()
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_model(ref, model)


def test_params_and_bad_args():
    p = InformationPlaneProbe(["1"], value_range=(-1, 1))
    assert p.params() | {"schedule": None} == {
        "layers": ["1"], "schedule": None, "estimator": "binning", "bins": 30, "bin_size": None,
        "value_range": [-1.0, 1.0], "noise_variance": 0.1, "kde_samples": None}
    for kwargs in [{"estimator": "knn"}, {"bins": 0}, {"bins": 2.5}, {"bins": None},
                   {"bin_size": -1.0}, {"bin_size": math.inf}, {"value_range": (1, -1)},
                   {"value_range": (0, math.nan)}, {"value_range": 3},
                   {"noise_variance": 0.0}, {"kde_samples": 1}, {"kde_samples": 2.5},
                   {"layers": "1"}, {"layers": []}]:
        with pytest.raises(ValueError):
            InformationPlaneProbe(**kwargs)
    _, _, xp, yp = _data()
    model = mlp(SIZES, activation="tanh", seed=0)
    with pytest.raises(ValueError, match="no module named 'x'"):
        Scope(model, [InformationPlaneProbe(["x"])], data=(xp, yp), out=None)
    with pytest.raises(ValueError, match="targets"):
        Scope(model, [InformationPlaneProbe()], data=(xp, None), out=None)
    with pytest.raises(ValueError, match="integer class labels"):
        Scope(model, [InformationPlaneProbe()], data=(xp, yp.float()), out=None)
