"""Tests for learnscope.probes.landscape (LinearPathProbe, LossSliceProbe,
interpolation_between)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnscope import Scope
from learnscope.measures.landscape import (
    filter_normalized_direction,
    linear_path,
    loss_slice_1d,
    loss_slice_2d,
)
from learnscope.probes.base import eval_mode
from learnscope.probes.landscape import (
    LinearPathProbe,
    LossSliceProbe,
    classification_eval,
    interpolation_between,
)
from learnscope.testing import assert_model_unchanged, assert_same_model, snapshot_model

torch.set_num_threads(1)

_g = torch.Generator().manual_seed(11)
X = torch.randn(40, 5, generator=_g)
Y = torch.randint(0, 3, (40,), generator=_g)

def probed(scope):
    """The probes' records (without the loss and scalars the loop passed to step())."""
    return [r for r in scope.records if r.probe != "scalars"]



def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(8, 3))


snapshot = snapshot_model


def assert_unchanged(model: nn.Module, snap: dict) -> None:
    assert_model_unchanged(model, snap)
    assert all(h[:3] == (0, 0, 0) for h in snapshot(model)["hooks"].values())


def run(probes=None, steps: int = 8, seed: int = 0):
    """Train; return the model, the scope (not yet closed), the model at init."""
    model = make_model(seed)
    init = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scope = Scope(model, probes, data=(X, Y), out=None) if probes is not None else None
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(X), Y)
        loss.backward()
        opt.step()
        if scope is not None:
            scope.step(loss)
    return model, scope, init


def eval_loss_error(model: nn.Module) -> tuple[float, float]:
    with eval_mode(model):
        return classification_eval(X, Y)(model)


def by_alpha(records, key):
    return {r.meta["alpha"]: r.value for r in records if r.key == key}


# ------------------------------------------------------------------ LinearPathProbe


def test_linear_path_in_scope_endpoints_exact_and_model_unchanged():
    model, scope, init = run([LinearPathProbe()])
    assert probed(scope) == []  # only at the end
    snap = snapshot(model)
    rng = torch.get_rng_state()
    scope.close()
    assert_unchanged(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)
    recs = probed(scope)
    assert {r.step for r in recs} == {8}
    assert {r.key for r in recs} == {"path_loss", "path_error", "barrier_loss", "barrier_error"}
    loss, err = by_alpha(recs, "path_loss"), by_alpha(recs, "path_error")
    assert sorted(loss) == pytest.approx(list(np.linspace(0, 1, 11)))
    assert all(r.meta["buffers"] == "interpolated" and r.meta["reference"] == "init"
               for r in recs)
    # Endpoints: exactly the initial model's and the final model's loss and error.
    assert (loss[0.0], err[0.0]) == eval_loss_error(init)
    assert (loss[1.0], err[1.0]) == eval_loss_error(model)
    # Everything equals the measure on the same pair of models.
    res = linear_path(init, model, classification_eval(X, Y))
    assert [loss[a] for a in res.alphas] == list(res.losses)
    assert [err[a] for a in res.alphas] == list(res.errors)
    barrier = {r.key: r.value for r in recs if r.key.startswith("barrier")}
    assert barrier == {"barrier_loss": res.barrier_loss, "barrier_error": res.barrier_error}


def test_linear_path_reference_module_and_state_dict():
    other = make_model(seed=3)
    other_snap = snapshot(other)
    model, scope, _ = run([LinearPathProbe(reference=other, alphas=[0.0, 0.5, 1.0]),
                           LinearPathProbe(reference=other.state_dict(), alphas=3)])
    scope.close()
    assert_unchanged(other, other_snap)
    first = [r for r in probed(scope) if r.probe == "linear_path"]
    second = [r for r in probed(scope) if r.probe == "linear_path-2"]
    assert by_alpha(first, "path_loss") == by_alpha(second, "path_loss")
    assert by_alpha(first, "path_loss")[0.0] == eval_loss_error(other)[0]
    assert by_alpha(first, "path_loss")[1.0] == eval_loss_error(model)[0]
    assert first[0].meta["reference"] == "module:Sequential"
    assert second[0].meta["reference"] == "state_dict"


def test_linear_path_recomputed_batchnorm():
    loader = [X[:20], X[20:]]
    model, scope, init = run([LinearPathProbe(alphas=5, bn_recompute_loader=loader)])
    snap = snapshot(model)
    scope.close()
    assert_unchanged(model, snap)
    recs = probed(scope)
    assert all(r.meta["buffers"] == "recomputed" for r in recs)
    res = linear_path(init, model, classification_eval(X, Y), alphas=np.linspace(0, 1, 5),
                      bn_recompute_loader=loader)
    assert list(by_alpha(recs, "path_loss").values()) == list(res.losses)
    assert scope.config()["probes"][0]["params"]["bn_recompute_loader"] == "list"


def test_linear_path_bad_args():
    with pytest.raises(ValueError, match="reference"):
        LinearPathProbe(reference="final")
    with pytest.raises(ValueError, match="reference"):
        LinearPathProbe(reference=3)
    with pytest.raises(ValueError, match="alphas"):
        LinearPathProbe(alphas=1)
    with pytest.raises(ValueError, match="alphas"):
        LinearPathProbe(alphas=[0.0, 0.5])  # no 1
    with pytest.raises(ValueError, match="alphas"):
        LinearPathProbe(alphas=[0.0, 1.5, 1.0])
    with pytest.raises(ValueError, match="eval_fn"):
        LinearPathProbe(eval_fn="loss")
    with pytest.raises(ValueError, match="bn_recompute_loader"):
        LinearPathProbe(bn_recompute_loader=iter([X]))
    with pytest.raises(ValueError, match="reference does not match"):
        Scope(make_model(), [LinearPathProbe(reference=nn.Linear(5, 3))], data=(X, Y),
              out=None)
    # Errors at the end of training are recorded (the training is not lost), not raised.
    for targets, message in [(None, "targets"), (torch.randn(40), "integer class targets")]:
        scope = Scope(make_model(), [LinearPathProbe()], data=(X, targets), out=None)
        with pytest.warns(RuntimeWarning, match=message):
            (failed,) = scope.close()
        assert failed.key == "probe_failed" and message in failed.meta["error"]
        assert failed.meta["phase"] == "finish"


def test_interpolation_between_two_runs():
    a, _, _ = run(None, seed=0)
    b, _, _ = run(None, seed=1)
    snaps = snapshot(a), snapshot(b)
    res = interpolation_between(a, b, X, Y, alphas=5)
    assert_unchanged(a, snaps[0])
    assert_unchanged(b, snaps[1])
    assert list(res.alphas) == list(np.linspace(0, 1, 5))
    assert (res.losses[0], res.errors[0]) == eval_loss_error(a)
    assert (res.losses[-1], res.errors[-1]) == eval_loss_error(b)
    assert res.barrier_loss == float(res.losses.max() - (res.losses[0] + res.losses[-1]) / 2)
    with pytest.raises(ValueError, match="alphas"):
        interpolation_between(a, b, X, Y, alphas=[0.2, 1.0])


# ------------------------------------------------------------------ LossSliceProbe


def test_loss_slice_1d_in_scope_equals_measure():
    probe = LossSliceProbe(seed=4)
    model, scope, _ = run([probe])
    snap = snapshot(model)
    rng = torch.get_rng_state()
    scope.close()
    assert_unchanged(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)
    recs = probed(scope)
    assert {r.key for r in recs} == {"slice_loss", "slice_error"}
    assert len(recs) == 2 * 21 and {r.step for r in recs} == {8}
    assert all(r.meta["direction"] == "filter-normalized gaussian" and r.meta["seed"] == 4
               for r in recs)
    loss = by_alpha(recs, "slice_loss")
    assert loss[0.0] == eval_loss_error(model)[0]
    d = filter_normalized_direction(model, generator=4)
    expected = loss_slice_1d(model, classification_eval(X, Y), d, np.linspace(-1, 1, 21))
    assert [loss[a] for a in np.linspace(-1, 1, 21)] == list(expected[:, 0])
    assert [by_alpha(recs, "slice_error")[a] for a in np.linspace(-1, 1, 21)] == \
        list(expected[:, 1])


def test_loss_slice_2d_and_scalar_eval_fn():
    def mse_like(m: nn.Module) -> float:
        with torch.no_grad():
            return float(m(X).square().mean())

    grid = [-0.5, 0.0, 0.5]
    model, scope, _ = run([LossSliceProbe(mse_like, alphas=grid, dims=2, seed=1)])
    scope.close()
    recs = probed(scope)
    assert {r.key for r in recs} == {"slice_loss"} and len(recs) == 9
    gen = torch.Generator().manual_seed(1)
    d1 = filter_normalized_direction(model, generator=gen)
    d2 = filter_normalized_direction(model, generator=gen)
    expected = loss_slice_2d(model, mse_like, d1, d2, grid, grid)
    got = {(r.meta["alpha"], r.meta["beta"]): r.value for r in recs}
    for i, a in enumerate(grid):
        for j, b in enumerate(grid):
            assert got[(a, b)] == expected[i, j]


def test_landscape_probes_do_not_change_training():
    ref, _, _ = run(None)
    ref_rng = torch.get_rng_state()
    model, scope, _ = run([LinearPathProbe(alphas=3), LossSliceProbe(alphas=[0.0, 1.0])])
    scope.close()
    assert torch.equal(torch.get_rng_state(), ref_rng)
    assert_same_model(ref, model)


def test_loss_slice_bad_args():
    with pytest.raises(ValueError, match="dims"):
        LossSliceProbe(dims=3)
    with pytest.raises(ValueError, match="alphas"):
        LossSliceProbe(alphas=[])
    with pytest.raises(ValueError, match="alphas"):
        LossSliceProbe(alphas=[0.0, float("inf")])
    with pytest.raises(ValueError, match="seed"):
        LossSliceProbe(seed=-2)
    with pytest.raises(ValueError, match="eval_fn"):
        LossSliceProbe(eval_fn=1)
    assert LossSliceProbe().params()["alphas"] == list(np.linspace(-1, 1, 21))
