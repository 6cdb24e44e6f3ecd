"""Unit and oracle tests of the training-response study's data, schedule and pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learnscope.measures.ntk import empirical_ntk
from learnscope.models import mlp
from learnscope.studies.training_response import (
    _final_over_peak,
    _paired,
    checkpoints,
    sphere_regression,
)

torch.set_num_threads(1)


def test_sphere_regression_is_deterministic_on_the_sphere_and_bounded():
    x, y = sphere_regression(200, 10, 1.0, 0.0, seed=3)
    x2, y2 = sphere_regression(200, 10, 1.0, 0.0, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, sphere_regression(200, 10, 1.0, 0.0, seed=4)[0])
    assert x.shape == (200, 10) and y.shape == (200, 1)
    assert torch.allclose(x.norm(dim=1), torch.ones(200), atol=1e-6)
    assert float(y.abs().max()) <= 0.8 + 1e-6


def test_sphere_regression_projection_has_unit_variance_and_noise_has_its_sd():
    """sqrt(d) u.x of a uniform point on the sphere has variance exactly 1: recover it from
    the noiseless targets through arcsin (frequency small enough to stay on one branch)."""
    n, d = 20000, 16
    _, y = sphere_regression(n, d, 0.2, 0.0, seed=0)
    projection = np.arcsin(np.clip(y.numpy().ravel() / 0.8, -1, 1)) / 0.2
    assert np.var(projection) == pytest.approx(1.0, abs=0.05)
    _, noisy = sphere_regression(n, d, 0.2, 0.3, seed=0)
    assert float((noisy - y).std()) == pytest.approx(0.3, rel=0.03)


def test_checkpoints_are_log_spaced_with_start_and_middle():
    marks = checkpoints(4000)
    assert marks[0] == 0 and 2000 in marks and max(marks) < 4000
    assert marks == sorted(set(marks))
    assert [m for m in marks if 0 < m < 2000] == [1, 2, 5, 10, 22, 46, 100, 215, 464, 1000]
    assert checkpoints(20) == [0, 1, 2, 5, 10]


class _FakeResults:
    """The two members of Results the pairing helpers use."""

    def __init__(self, seeds, final, peak=None):
        import pandas as pd
        self.trials = pd.DataFrame({"seed": seeds})
        self._final, self._peak = final, peak

    def per_trial(self, key, stat="final"):
        import pandas as pd
        return pd.Series(self._final if stat == "final" else self._peak)


def test_pairing_matches_seeds_not_positions():
    sgd = _FakeResults([2, 0, 1], [0.5, 1.0, 2.0])
    gd = _FakeResults([0, 1, 2], [2.0, 4.0, 1.0])
    np.testing.assert_allclose(_paired(sgd, gd, "k", np.divide), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(_paired(sgd, gd, "k", np.subtract), [-1.0, -2.0, -0.5])
    np.testing.assert_allclose(_final_over_peak(_FakeResults([0, 1], [1.0, 3.0], [2.0, 3.0])),
                               [0.5, 1.0])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_one_sgd_step_moves_outputs_by_the_ntk_response(activation):
    """The study's reading of the NTK: a small SGD step on one input x' changes every output by
    -lr dL/df(x') K(x, x') to first order; checked on the study's own network and data."""
    x, y = sphere_regression(12, 10, 1.0, 0.0, seed=0)
    x, y = x.double(), y.double()
    model = mlp([10, 20, 1], activation=activation, seed=1).double()
    lr, j = 1e-4, 5
    kernel = empirical_ntk(model, x)
    out = model(x).detach()
    dloss_df = 2 * (out[j] - y[j])  # squared error on x' = x[j]
    predicted = -lr * float(dloss_df) * kernel[:, j]
    loss = ((model(x[j:j + 1]) - y[j:j + 1]) ** 2).mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads, strict=True):
            p -= lr * g
        actual = (model(x) - out).squeeze(1)
    assert float((actual - predicted).abs().max()) < 1e-3 * float(predicted.abs().max())
    assert math.isfinite(float(actual.sum()))
