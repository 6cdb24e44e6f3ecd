import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnscope import Scope
from learnscope.measures.ntk import empirical_ntk, input_sensitivity, ntk_summary
from learnscope.probes.ntk import NTKProbe
from learnscope.probes.schedule import at_end, every, log_spaced
from learnscope.testing import assert_same_model

STEPS = 10

def probed(scope):
    """The probes' records (without the loss and scalars the loop passed to step())."""
    return [r for r in scope.records if r.probe != "scalars"]



def _data():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 4, generator=g)
    y = torch.sin(x[:, :2])
    xp = torch.randn(12, 4, generator=g)
    return x, y, xp, torch.sin(xp[:, :2])


def _model(bn=False):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mid = [nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.1)] if bn else [nn.Tanh()]
        return nn.Sequential(nn.Linear(4, 16), *mid, nn.Linear(16, 2))


def _train(model, steps=STEPS, scope=None, on_step=None, lr=0.3):
    x, y, _, _ = _data()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for t in range(1, steps + 1):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(t, model)
        if scope is not None:
            scope.step(loss)
    return model


def _expected(k, k0, thr=0.5):
    s = ntk_summary(k, k0, width_threshold=thr)
    return {"ntk_trace": s.trace, "ntk_trace_ratio": s.trace_ratio_to_init,
            "ntk_kernel_width": s.kernel_width, "ntk_effective_rank": s.effective_rank}


def test_in_training_loop_matches_measure():
    _, _, xp, yp = _data()
    model = _model()
    probe = NTKProbe(8, schedule=log_spaced(3), width_threshold=0.4)
    kernels = {0: empirical_ntk(model, xp[:8], reduce="trace")}
    scope = Scope(model, [probe], data=(xp, yp), out=None)
    _train(model, scope=scope, on_step=lambda t, m: kernels.__setitem__(
        t, empirical_ntk(m, xp[:8], reduce="trace")))
    scope.close()
    due = [0] + [s for s in range(1, STEPS + 1) if probe.schedule.due_step(s)]
    assert due == [0, 1, 3, 5, 10]
    keys = ["ntk_trace", "ntk_trace_ratio", "ntk_kernel_width", "ntk_effective_rank"]
    assert sorted((r.step, r.key) for r in probed(scope)) == sorted(
        (s, k) for s in due for k in keys)  # the final step is not measured twice
    for r in probed(scope):
        ref = _expected(kernels[r.step], kernels[0], thr=0.4)[r.key]
        assert r.value == pytest.approx(ref, rel=1e-10, abs=1e-12), r
        assert r.meta["n_inputs"] == 8 and r.meta["reduce"] == "trace"
        assert r.probe == "ntk"
    width = [r for r in probed(scope) if r.key == "ntk_kernel_width"]
    assert all(r.meta["width_threshold"] == 0.4 for r in width)
    ratio = {r.step: r.value for r in probed(scope) if r.key == "ntk_trace_ratio"}
    assert ratio[0] == 1.0 and ratio[10] != 1.0


def test_initial_kernel_from_init_state_when_first_measured_late():
    # at_end: K_0 comes from the parameters and buffers the scope saw at open (BatchNorm in
    # eval mode uses the running statistics, which training changes).
    _, _, xp, yp = _data()
    model = _model(bn=True)
    init = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        scope = Scope(model, [NTKProbe(6, schedule=at_end(), reduce="none")], data=(xp, yp),
                      out=None)
        _train(model, scope=scope)
        scope.close()
    k0 = empirical_ntk(init, xp[:6])
    k = empirical_ntk(model, xp[:6])
    assert k.shape == (12, 12)
    got = {r.key: r.value for r in probed(scope)}
    assert got == pytest.approx(_expected(k, k0), rel=1e-10)
    assert {r.step for r in probed(scope)} == {STEPS}


def test_linear_model_closed_form():
    # f(x) = w.x: K = X X^T does not depend on w, so training leaves the ratio at exactly 1.
    with torch.random.fork_rng(devices=[]):
        lin = nn.Linear(4, 1, bias=False)
    x = torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 2.0, 0]])
    scope = Scope(lin, [NTKProbe(schedule=every(2))], data=(x, None), out=None)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        lin(x).pow(2).sum().backward()
        opt.step()
        scope.step()
    scope.close()
    recs = probed(scope)
    assert {r.step for r in recs} == {0, 2, 3}
    assert all(r.value == pytest.approx(7.0) for r in recs if r.key == "ntk_trace")
    assert all(r.value == pytest.approx(1.0) for r in recs if r.key == "ntk_trace_ratio")
    # normalised kernel: pair (0, 1) has cos 1/sqrt(2) > 0.5, pairs with x_2 have 0: 2 of 6
    assert all(r.value == pytest.approx(2 / 6) for r in recs if r.key == "ntk_kernel_width")


def test_does_not_change_training():
    def run(with_scope):
        _, _, xp, yp = _data()
        model = _model(bn=True)
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            scope = None
            if with_scope:
                scope = Scope(model, [NTKProbe(8, schedule=every(1))], data=(xp, yp),
                              out=None)
            _train(model, scope=scope)
            if scope is not None:
                scope.close()
            return model, torch.get_rng_state()

    outer = torch.get_rng_state()
    ref, ref_rng = run(False)
    model, rng = run(True)
    assert torch.equal(torch.get_rng_state(), outer)
    assert torch.equal(rng, ref_rng)  # the probe draws no random numbers (dropout is off)
    assert_same_model(ref, model)  # weights, BatchNorm buffers, gradients, flags, hooks
    assert all(m.training for m in model.modules())


def test_non_finite_parameters_give_nan_with_note():
    _, _, xp, yp = _data()
    model = _model()
    scope = Scope(model, [NTKProbe(4, schedule=at_end())], data=(xp, yp), out=None)
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
    scope.close()
    assert len(probed(scope)) == 4
    assert all(math.isnan(r.value) and "non-finite" in r.meta["note"] for r in probed(scope))


def test_params_and_bad_args():
    p = NTKProbe(16, reduce="none", width_threshold=0.3)
    assert p.params() | {"schedule": None} == {
        "n_inputs": 16, "schedule": None, "reduce": "none", "width_threshold": 0.3,
        "input_sensitivity": False}
    assert p.cost == "expensive" and not p.needs_activations
    for args, kwargs in [((1,), {}), ((2.5,), {}), ((True,), {}), ((), {"reduce": "mean"}),
                         ((), {"width_threshold": math.nan}), ((), {"input_sensitivity": 1})]:
        with pytest.raises(ValueError):
            NTKProbe(*args, **kwargs)
    _, _, xp, yp = _data()
    with pytest.raises(ValueError, match="NTKProbe needs probe data"):
        Scope(_model(), [NTKProbe()], data=None, out=None)
    with pytest.raises(ValueError, match="at least 2"):
        Scope(_model(), [NTKProbe()], data=(xp[:1], yp[:1]), out=None)


def test_input_sensitivity_records_the_measure_and_nan_when_diverged():
    _, _, xp, yp = _data()
    model = _train(_model())
    scope = Scope(model, [NTKProbe(6, schedule=at_end(), input_sensitivity=True)],
                  data=(xp, yp), out=None)
    scope.close()
    by_key = {r.key: r for r in probed(scope)}
    assert set(by_key) == {"ntk_trace", "ntk_trace_ratio", "ntk_kernel_width",
                           "ntk_effective_rank", "input_sensitivity"}
    assert by_key["input_sensitivity"].value == pytest.approx(input_sensitivity(model, xp[:6]))
    assert by_key["input_sensitivity"].meta["n_inputs"] == 6
    broken = _model()
    scope = Scope(broken, [NTKProbe(4, schedule=at_end(), input_sensitivity=True)],
                  data=(xp, yp), out=None)
    with torch.no_grad():
        broken[0].weight[0, 0] = math.nan
    scope.close()
    assert len(probed(scope)) == 5
    assert all(math.isnan(r.value) for r in probed(scope))
