import numpy as np
import pytest
import torch

from learnscope.data import digits
from learnscope.models import min_norm_fit, mlp, ridge_fit
from learnscope.train import train_classifier


@pytest.mark.parametrize("shape", [(20, 50), (50, 20), (30, 30)])
def test_min_norm_fit_equals_pinv(shape):
    rng = np.random.default_rng(0)
    f = rng.standard_normal(shape)
    y = rng.standard_normal(shape[0])
    assert np.allclose(min_norm_fit(f, y), np.linalg.pinv(f) @ y, atol=1e-10)


def test_min_norm_fit_interpolates_with_minimum_norm():
    rng = np.random.default_rng(1)
    f, y = rng.standard_normal((10, 40)), rng.standard_normal(10)
    a = min_norm_fit(f, y)
    assert np.allclose(f @ a, y)
    # Any other interpolant a + null-space vector has a larger norm.
    null = np.linalg.svd(f)[2][-1]
    assert np.linalg.norm(a + 0.1 * null) > np.linalg.norm(a)


@pytest.mark.parametrize("shape", [(30, 10), (10, 30)])
def test_ridge_primal_and_dual_equal_closed_form(shape):
    rng = np.random.default_rng(2)
    f, y = rng.standard_normal(shape), rng.standard_normal(shape[0])
    lam, n = 0.3, shape[0]
    expected = np.linalg.solve(f.T @ f + lam * n * np.eye(shape[1]), f.T @ y)
    assert np.allclose(ridge_fit(f, y, lam), expected)


def test_mlp_seeded_and_leaves_global_rng():
    state = torch.get_rng_state().clone()
    a, b, c = mlp([8, 16, 3], seed=1), mlp([8, 16, 3], seed=1), mlp([8, 16, 3], seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[0].weight, c[0].weight)


def _train(seed, **kw):
    d = digits(300, seed=0)
    net = mlp([64, 32, 10], seed=seed, dropout=kw.pop("dropout", 0.0))
    r = train_classifier(net, d, max_epochs=3, seed=seed, batch_size=50, **kw)
    return net, r


def test_training_is_deterministic():
    state = torch.get_rng_state().clone()
    n1, r1 = _train(5, dropout=0.2)
    n2, r2 = _train(5, dropout=0.2)
    assert torch.equal(torch.get_rng_state(), state)
    assert [h.train_loss for h in r1.history] == [h.train_loss for h in r2.history]
    assert all(torch.equal(p, q) for p, q in zip(n1.parameters(), n2.parameters(), strict=True))
    n3, r3 = _train(6)
    assert r3.history[-1].train_loss != r1.history[-1].train_loss


def test_training_learns_and_logs():
    _, r = _train(0, lr=1e-2)
    assert len(r.history) == 3 and r.history[-1].train_acc > 0.6 and not r.diverged
    assert r.history[-1].train_loss < r.history[0].train_loss
    keys = {rec.key for rec in r.records()}
    assert {"train_loss", "train_acc", "test_acc", "test_loss"} <= keys


def test_divergence_is_detected_and_stops():
    d = digits(300, seed=0)
    x = d.x_train.clone()
    x[123, 5] = float("inf")  # one bad example poisons the loss when its batch comes up
    net = mlp([64, 32, 10], seed=0)
    r = train_classifier(net, d.with_train(x_train=x), max_epochs=3, seed=0, batch_size=50)
    assert r.diverged and r.history == []  # stopped inside the first epoch
    # The weights were never updated with a non-finite gradient.
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_stop_at_train_accuracy():
    _, r = _train(0, lr=1e-2, stop_at_train_acc=0.5)
    assert r.fit_epoch == len(r.history) and r.history[-1].train_acc >= 0.5


def test_ridge_path_equals_ridge_fit():
    import numpy as np

    from learnscope.models.regression import ridge_fit, ridge_path

    rng = np.random.default_rng(0)
    for n, p in ((30, 10), (10, 30)):
        f, y = rng.standard_normal((n, p)), rng.standard_normal(n)
        lams = np.array([1e-3, 0.1, 10.0])
        path = ridge_path(f, y, lams)
        for lam, coef in zip(lams, path, strict=True):
            np.testing.assert_allclose(coef, ridge_fit(f, y, lam), rtol=1e-9, atol=1e-12)
