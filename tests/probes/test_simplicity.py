"""SimplicityProbe: Nakkiran et al. 2019 measures on the scope's data during training."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from learnscope import Scope
from learnscope.measures.simplicity import simplicity_measures
from learnscope.probes import every
from learnscope.probes.simplicity import SimplicityProbe
from learnscope.testing import assert_same_model

torch.set_num_threads(1)

KEYS = ["agreement", "i_fy", "i_fy_given_l", "i_ly", "linear_part", "accuracy"]


def _data(seed=0, n=160):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    # linear part (x0 > 0) plus a non-linear part (|x1| > 1)
    y = ((x[:, 0] > 0).long() + (x[:, 1].abs() > 1).long()) % 2
    return x, y


def _model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))


def _train(net, x, y, steps=12, scope=None, seed=0):
    opt = torch.optim.SGD(net.parameters(), lr=0.3, momentum=0.9)
    torch.manual_seed(seed)
    for t in range(steps):
        idx = torch.arange(40) + (t % 4) * 40
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if scope is not None:
            scope.step(loss)
    return net


def test_runs_in_a_training_loop_and_equals_the_measure():
    x, y = _data()
    xv, yv = _data(seed=1, n=100)
    net = _model()
    probe = SimplicityProbe(fit_on=(x, y))
    scope = Scope(net, [probe], data=(xv, yv), out=None)
    _train(net, x, y, 12, scope)
    scope.close()
    for key in KEYS:
        # log_spaced(4) in 12 steps, then the final state at 12
        assert [r.step for r in scope.records if r.key == key] == [0, 1, 2, 4, 6, 10, 12]
    r = next(r for r in scope.records if r.key == "i_fy")
    assert r.meta["estimator"] == "plugin" and r.meta["units"] == "bits"
    assert r.meta["linear"] == "LogisticRegression(max_iter=1000)"

    # Oracle: the measure on the final state, with an independently fitted classifier.
    clf = LogisticRegression(max_iter=1000).fit(x.numpy().astype(np.float64), y.numpy())
    ell = clf.predict(xv.numpy().astype(np.float64))
    net.eval()
    with torch.no_grad():
        f = net(xv).argmax(1).numpy()
    want = simplicity_measures(f, ell, yv.numpy())
    final = {r.key: r.value for r in scope.records if r.step == 12}
    assert final["i_fy"] == pytest.approx(want.i_fy)
    assert final["i_fy_given_l"] == pytest.approx(want.i_fy_given_l)
    assert final["i_ly"] == pytest.approx(want.i_ly)
    assert final["linear_part"] == pytest.approx(want.linear_part)
    assert final["agreement"] == pytest.approx(want.agreement)
    assert final["accuracy"] == pytest.approx(float(np.mean(f == yv.numpy())))
    assert final["i_ly"] > 0  # the linear classifier carries information


def test_closed_form_with_given_predictions():
    """L = Y: I(F;Y|L) = 0 and linear_part = I(F;Y); a constant F: I(F;Y) = 0."""
    x, y = _data(n=64)
    net = _model()
    scope = Scope(net, [SimplicityProbe(y, schedule=every(5))], data=(x, y), out=None)
    scope.close()
    vals = {r.key: r.value for r in scope.records}
    assert [r.step for r in scope.records if r.key == "i_fy"] == [0]  # final == step 0
    assert vals["i_fy_given_l"] == pytest.approx(0.0, abs=1e-12)
    assert vals["linear_part"] == pytest.approx(vals["i_fy"])
    assert vals["agreement"] == pytest.approx(vals["accuracy"])
    p0 = np.mean(y.numpy() == 0)
    assert vals["i_ly"] == pytest.approx(-(p0 * np.log2(p0) + (1 - p0) * np.log2(1 - p0)))

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.tensor([1.0, 0.0]))

        def forward(self, x):
            return self.b.expand(x.shape[0], 2)

    scope = Scope(Constant(), [SimplicityProbe(torch.zeros(64, dtype=torch.long))],
                  data=(x, y), out=None)
    scope.close()
    vals = {r.key: r.value for r in scope.records}
    assert vals["i_fy"] == 0 and vals["agreement"] == 1.0 and vals["i_ly"] == 0
    assert vals["accuracy"] == pytest.approx(p0)


def test_does_not_change_training():
    x, y = _data()
    plain = _train(_model(), x, y, 10)
    probed = _model()
    rng = torch.get_rng_state()
    np_rng = np.random.get_state()[1].copy()
    scope = Scope(probed, [SimplicityProbe(fit_on=(x, y), schedule=every(2))],
                  data=(x[:50], y[:50]), out=None)
    assert torch.equal(torch.get_rng_state(), rng)
    _train(probed, x, y, 10, scope)
    assert all(m.training for m in probed.modules())
    scope.close()
    assert_same_model(plain, probed)
    assert np.array_equal(np.random.get_state()[1], np_rng)


def test_bad_args():
    x, y = _data(n=20)
    with pytest.raises(ValueError, match="exactly one"):
        SimplicityProbe()
    with pytest.raises(ValueError, match="exactly one"):
        SimplicityProbe(y, fit_on=(x, y))
    with pytest.raises(ValueError, match="integer labels"):
        SimplicityProbe(y.float())
    with pytest.raises(ValueError, match="1-D"):
        SimplicityProbe(y[:, None])
    with pytest.raises(ValueError, match="pair"):
        SimplicityProbe(fit_on=x)
    with pytest.raises(ValueError, match="rows"):
        SimplicityProbe(fit_on=(x, y[:5]))
    with pytest.raises(ValueError, match="two classes"):
        SimplicityProbe(fit_on=(x, torch.zeros(20, dtype=torch.long)))
    with pytest.raises(ValueError, match="20 examples"):
        Scope(_model(), [SimplicityProbe(y[:7])], data=(x, y), out=None)
    with pytest.raises(ValueError, match="needs probe data with targets"):
        Scope(_model(), [SimplicityProbe(y)], data=(x, None), out=None)
    with pytest.raises(ValueError, match="SimplicityProbe needs probe data"):
        Scope(_model(), [SimplicityProbe(y)], out=None)
    assert SimplicityProbe(fit_on=(x, y)).params()["fit_on"] == ["tensor(20, 4)", "tensor(20,)"]
