"""LinearRegionsProbe: distinct ReLU patterns over the scope's inputs during training."""

import numpy as np
import pytest
import torch
from torch import nn

from learnscope import Scope
from learnscope.measures.linear_regions import count_linear_regions
from learnscope.probes import every
from learnscope.probes.linear_regions import LinearRegionsProbe
from learnscope.testing import assert_same_model

torch.set_num_threads(1)


def _data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()
    return x, y


def _model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 8),
                             nn.ReLU(), nn.Linear(8, 2))


def _train(net, x, y, steps=12, scope=None, seed=0):
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    torch.manual_seed(seed)
    for t in range(steps):
        idx = torch.arange(16) + (t % 4) * 16
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if scope is not None:
            scope.step(loss)
    return net


def test_runs_in_a_training_loop_and_equals_the_measure():
    x, y = _data()
    grid = torch.cartesian_prod(torch.linspace(-2, 2, 15), torch.linspace(-2, 2, 15))
    net = _model()
    probe = LinearRegionsProbe()
    scope = Scope(net, [probe], data=(grid, None), out=None)
    _train(net, x, y, 12, scope)
    scope.close()
    steps = [0, 1, 3, 5, 10, 12]  # log_spaced(3) up to 11, then the final state at 12
    assert [r.step for r in scope.records if r.key == "linear_regions"] == steps
    assert [r.step for r in scope.records if r.key == "regions_per_example"] == steps
    (last,) = [r for r in scope.records if r.key == "linear_regions" and r.step == 12]
    want = count_linear_regions(net, grid)
    assert last.value == want > 1
    (per,) = [r for r in scope.records if r.key == "regions_per_example" and r.step == 12]
    assert per.value == pytest.approx(want / len(grid))
    assert last.meta["module_types"] == ["ReLU"] and last.meta["n"] == 225


def test_closed_form_on_a_one_dimensional_net():
    """Units relu(x) and relu(-x): x < 0, x = 0 and x > 0 give three patterns."""
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[0].bias.zero_()
    x = torch.tensor([[-2.0], [-1.0], [0.5], [3.0], [4.0], [0.0]])
    scope = Scope(net, [LinearRegionsProbe(schedule=every(1))], data=(x, None), out=None)
    scope.close()
    vals = {r.key: r.value for r in scope.records}
    assert vals["linear_regions"] == 3
    assert vals["regions_per_example"] == 0.5
    # Only the second unit as the pattern source: Tanh is not counted.
    net2 = nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 2), nn.ReLU())
    scope = Scope(net2, [LinearRegionsProbe(module_types=(nn.ReLU, nn.Tanh))], data=(x, None),
                  out=None)
    scope.close()
    (r,) = [r for r in scope.records if r.key == "linear_regions"]
    assert r.value == count_linear_regions(net2, x, module_types=(nn.ReLU, nn.Tanh))
    assert r.meta["module_types"] == ["ReLU", "Tanh"]


def test_does_not_change_training():
    x, y = _data()
    plain = _train(_model(), x, y, 10)
    probed = _model()
    rng = torch.get_rng_state()
    np_rng = np.random.get_state()[1].copy()
    scope = Scope(probed, [LinearRegionsProbe(schedule=every(1))], data=(x, y), out=None)
    assert torch.equal(torch.get_rng_state(), rng)
    _train(probed, x, y, 10, scope)
    assert all(m.training for m in probed.modules())
    scope.close()
    assert_same_model(plain, probed)
    assert np.array_equal(np.random.get_state()[1], np_rng)


def test_bad_args():
    with pytest.raises(ValueError, match="module_types"):
        LinearRegionsProbe(module_types=())
    with pytest.raises(ValueError, match="module_types"):
        LinearRegionsProbe(module_types=(int,))
    with pytest.raises(ValueError, match="module_types"):
        LinearRegionsProbe(module_types=nn.ReLU)
    with pytest.raises(ValueError, match="schedule"):
        LinearRegionsProbe(schedule=3)
    x, _ = _data()
    with pytest.raises(ValueError, match="no ReLU modules"):
        Scope(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), [LinearRegionsProbe()], data=(x, None),
              out=None)
    with pytest.raises(ValueError, match="LinearRegionsProbe needs probe data"):
        Scope(_model(), [LinearRegionsProbe()], out=None)
    assert LinearRegionsProbe().params()["module_types"] == ["ReLU"]
