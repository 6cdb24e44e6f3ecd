"""Tests for learnscope.probes.gradients (GradientStatsProbe, GradientNoiseProbe)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnscope import Scope
from learnscope.measures.gradients import (
    gradient_noise,
    layer_gradient_norms,
    parameter_snapshot,
    parameter_update_norms,
    per_example_gradients,
    relative_update_norms,
)
from learnscope.probes.base import ProbeContext
from learnscope.probes.gradients import GradientNoiseProbe, GradientStatsProbe
from learnscope.probes.schedule import every
from learnscope.testing import assert_same_model

torch.set_num_threads(1)

_g = torch.Generator().manual_seed(123)
X = torch.randn(40, 5, generator=_g)
Y = torch.randint(0, 3, (40,), generator=_g)

def probed(scope):
    """The probes' records (without the loss and scalars the loop passed to step())."""
    return [r for r in scope.records if r.probe != "scalars"]



def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))


def train(probes=None, steps: int = 12):
    """Full-batch SGD with momentum; dropout draws from the global RNG."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scope = Scope(model, probes, data=(X, Y), out=None) if probes is not None else None
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(X), Y)
        loss.backward()
        opt.step()
        if scope is not None:
            scope.step(loss)
    if scope is not None:
        scope.close()
    return model, scope, torch.get_rng_state()


def select(records, key, **meta):
    return [r for r in records if r.key == key and all(r.meta.get(k) == v
                                                       for k, v in meta.items())]


def ctx_for(model, step, inputs=None, targets=None, init=None):
    return ProbeContext(model, step, 0, inputs, targets, init_state=init or {})


# ------------------------------------------------------------------ GradientStatsProbe


def test_stats_in_scope_keys_and_steps():
    probe = GradientStatsProbe(schedule=every(5))
    model, scope, _ = train([probe], steps=12)
    recs = probed(scope)
    names = [n for n, _ in model.named_parameters()]
    # Step 0 has no gradient and no previous state: nothing. Then 5, 10 and the final 12.
    assert sorted({r.step for r in recs}) == [5, 10, 12]
    for step, k in [(5, 5), (10, 5), (12, 2)]:
        at = [r for r in recs if r.step == step]
        assert {r.meta["parameter"] for r in select(at, "grad_norm")} == {"all", *names}
        upd = select(at, "update_norm")
        assert {r.meta["parameter"] for r in upd} == {"all", *names}
        assert all(r.meta["over_steps"] == k for r in upd)
        assert len(select(at, "relative_update_norm")) == len(names) + 1
        assert all(r.probe == "gradient_stats" and r.meta["epoch"] == 0 for r in at)
    # The final gradients are still in .grad: the last values equal the measure's.
    final = [r for r in recs if r.step == 12]
    expected = layer_gradient_norms(model)
    for name, value in expected.items():
        assert select(final, "grad_norm", parameter=name)[0].value == \
            pytest.approx(value, rel=1e-6)


def test_stats_finish_does_not_repeat_a_measured_step():
    probe = GradientStatsProbe(schedule=every(5))
    _, scope, _ = train([probe], steps=10)
    assert len(select(probed(scope), "grad_norm", parameter="all")) == 2  # steps 5 and 10


def test_stats_values_equal_the_measures():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    probe = GradientStatsProbe(schedule=every(3))
    init = parameter_snapshot(model)
    probe.setup(model)
    assert probe.measure(ctx_for(model, 0, init=init)) == []
    before = parameter_snapshot(model)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(X), Y).backward()
        opt.step()
    recs = probe.measure(ctx_for(model, 3, init=init))
    after = parameter_snapshot(model)
    grads = layer_gradient_norms(model)
    upd = parameter_update_norms(before, after)
    rel = relative_update_norms(before, after)
    for name in grads:
        # Norms are accumulated in float32 (the measures: float64): equal to ~1e-7.
        assert select(recs, "grad_norm", parameter=name)[0].value == \
            pytest.approx(grads[name], rel=1e-6)
        assert select(recs, "update_norm", parameter=name)[0].value == \
            pytest.approx(upd[name] / 3, rel=1e-6)
        assert select(recs, "relative_update_norm", parameter=name)[0].value == \
            pytest.approx(rel[name] / 3, rel=1e-6)
    all_g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    assert select(recs, "grad_norm", parameter="all")[0].value == \
        pytest.approx(float(all_g.norm()), rel=1e-6)
    delta = torch.cat([(after[n].double() - before[n].double()).reshape(-1) for n in after])
    theta = torch.cat([before[n].reshape(-1).double() for n in before])
    assert select(recs, "update_norm", parameter="all")[0].value == \
        pytest.approx(float(delta.norm()) / 3, rel=1e-6)
    assert select(recs, "relative_update_norm", parameter="all")[0].value == \
        pytest.approx(float(delta.norm() / theta.norm()) / 3, rel=1e-6)
    # One step later: over one step it is exactly the last update.
    opt.zero_grad()
    F.cross_entropy(model(X), Y).backward()
    opt.step()
    recs = probe.measure(ctx_for(model, 4, init=init))
    upd = parameter_update_norms(after, parameter_snapshot(model))
    for name in upd:
        r = select(recs, "update_norm", parameter=name)[0]
        assert r.value == pytest.approx(upd[name], rel=1e-6) and r.meta["over_steps"] == 1


def test_stats_float64_model_is_exact_and_overflow_is_redone_in_float64():
    model = nn.Linear(4, 3).double()
    before = parameter_snapshot(model)
    F.mse_loss(model(X[:, :4].double()), torch.ones(40, 3, dtype=torch.float64)).backward()
    with torch.no_grad():
        model.weight.mul_(1.5)
    probe = GradientStatsProbe(schedule=every(1))
    recs = probe.measure(ctx_for(model, 1, init=before))
    grads = layer_gradient_norms(model)
    upd = parameter_update_norms(before, parameter_snapshot(model))
    for name in grads:
        assert select(recs, "grad_norm", parameter=name)[0].value == grads[name]
        assert select(recs, "update_norm", parameter=name)[0].value == upd[name]
    big = nn.Linear(4, 1)
    with torch.no_grad():
        big.weight.fill_(1e30)  # float32 sum of squares overflows; the norm does not
        big.bias.fill_(float("inf"))
    recs = GradientStatsProbe().measure(ctx_for(big, 3, init=parameter_snapshot(big)))
    (w,) = [r for r in recs if r.key == "update_norm" and r.meta["parameter"] == "weight"]
    assert w.value == 0.0
    probe = GradientStatsProbe()
    probe.measure(ctx_for(big, 0))
    with torch.no_grad():
        big.weight.mul_(2.0)
    recs = probe.measure(ctx_for(big, 1))
    assert select(recs, "update_norm", parameter="weight")[0].value == pytest.approx(2e30)
    assert select(recs, "relative_update_norm", parameter="weight")[0].value == \
        pytest.approx(1.0)


def test_stats_first_measurement_uses_the_initial_state_and_zero_norm_is_nan():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.bias.zero_()
    init = parameter_snapshot(model)
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.add_(0.5)
    probe = GradientStatsProbe(schedule=every(4))
    probe.setup(model)
    recs = probe.measure(ctx_for(model, 4, init=init))  # e.g. the end, never measured before
    assert select(recs, "grad_norm") == []  # no .grad anywhere: nothing, and no error
    w = select(recs, "update_norm", parameter="weight")[0]
    assert w.value == pytest.approx(math.sqrt(6) / 4) and w.meta["over_steps"] == 4
    rb = select(recs, "relative_update_norm", parameter="bias")[0]
    assert math.isnan(rb.value) and "note" in rb.meta
    assert select(recs, "update_norm", parameter="bias")[0].value == pytest.approx(
        math.sqrt(2) * 0.5 / 4)


def test_stats_per_layer_false_gives_totals_only():
    probe = GradientStatsProbe(schedule=every(4), per_layer=False)
    _, scope, _ = train([probe], steps=8)
    assert {r.meta["parameter"] for r in probed(scope)} == {"all"}
    assert {r.key for r in probed(scope)} == {"grad_norm", "update_norm",
                                              "relative_update_norm"}


def test_stats_does_not_change_training():
    ref_model, _, ref_rng = train(None)
    model, _, rng = train([GradientStatsProbe(schedule=every(1))])
    assert_same_model(ref_model, model)
    assert torch.equal(rng, ref_rng)


def test_stats_bad_args():
    with pytest.raises(ValueError, match="schedule"):
        GradientStatsProbe(schedule=10)
    with pytest.raises(ValueError, match="per_layer"):
        GradientStatsProbe(per_layer="yes")
    with pytest.raises(TypeError):
        GradientStatsProbe(every(5))  # keyword-only


def test_stats_params():
    p = GradientStatsProbe(schedule=every(7), per_layer=False)
    assert p.params() == {"schedule": "every 7 steps", "per_layer": False}
    assert GradientStatsProbe().schedule == every(10)


# ------------------------------------------------------------------ GradientNoiseProbe


def test_noise_in_scope_keys_steps_and_values():
    probe = GradientNoiseProbe(F.cross_entropy, schedule=every(4), n_examples=16)
    model, scope, _ = train([probe], steps=10)
    recs = probed(scope)
    keys = {"grad_snr", "grad_noise_scale", "grad_noise_scale_unbiased", "mean_grad_norm_sq",
            "trace_covariance", "mean_grad_norm_sq_unbiased"}
    assert sorted({r.step for r in recs}) == [0, 4, 8, 10]  # 10: the final state
    for step in (0, 4, 8, 10):
        at = [r for r in recs if r.step == step]
        assert {r.key for r in at} == keys
        assert all(r.meta["n_examples"] == 16 and "estimator" in r.meta for r in at)
    # The model is in train mode (dropout) after training; the probe measured in eval mode.
    assert all(m.training for m in model.modules())
    oracle = copy.deepcopy(model).eval()
    res = gradient_noise(per_example_gradients(oracle, F.cross_entropy, X[:16], Y[:16]))
    final = {r.key: r.value for r in recs if r.step == 10}
    assert final["grad_snr"] == res.snr
    assert final["grad_noise_scale"] == res.noise_scale
    assert final["mean_grad_norm_sq"] == res.mean_grad_norm_sq
    assert final["trace_covariance"] == res.trace_covariance
    if res.mean_grad_norm_sq_unbiased > 0:
        assert final["grad_noise_scale_unbiased"] == res.noise_scale_unbiased


def test_noise_closed_form_zero_mean_gradient():
    # loss (w x - y)^2 at w = 0 with x = +-1, y = 1: per-example gradients -2 and +2.
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    x = torch.tensor([[1.0], [-1.0]])
    y = torch.tensor([[1.0], [1.0]])
    probe = GradientNoiseProbe(F.mse_loss, n_examples=2)
    recs = {r.key: r for r in probe.measure(ctx_for(model, 0, x, y))}
    assert recs["mean_grad_norm_sq"].value == 0.0
    assert recs["trace_covariance"].value == pytest.approx(8.0)
    assert recs["grad_snr"].value == 0.0
    assert recs["mean_grad_norm_sq_unbiased"].value == pytest.approx(-4.0)
    for key in ("grad_noise_scale", "grad_noise_scale_unbiased"):
        assert math.isnan(recs[key].value) and "note" in recs[key].meta


def test_noise_nonfinite_gradients_give_nan_with_note():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(float("inf"))
    probe = GradientNoiseProbe(F.mse_loss, n_examples=4)
    recs = probe.measure(ctx_for(model, 0, torch.ones(4, 2), torch.ones(4, 1)))
    assert recs and all(math.isnan(r.value) and "note" in r.meta for r in recs)


def test_noise_does_not_change_training():
    ref_model, _, ref_rng = train(None, steps=6)
    model, _, rng = train([GradientNoiseProbe(F.cross_entropy, schedule=every(2),
                                              n_examples=8)], steps=6)
    assert_same_model(ref_model, model)
    assert torch.equal(rng, ref_rng)
    assert all(p.grad is not None for p in model.parameters())


def test_noise_bad_args_and_missing_targets():
    with pytest.raises(ValueError, match="loss_fn"):
        GradientNoiseProbe("cross_entropy")
    with pytest.raises(ValueError, match="n_examples"):
        GradientNoiseProbe(F.cross_entropy, n_examples=1)
    with pytest.raises(ValueError, match="chunk_size"):
        GradientNoiseProbe(F.cross_entropy, chunk_size=0)
    with pytest.raises(ValueError, match="schedule"):
        GradientNoiseProbe(F.cross_entropy, schedule="log")
    probe = GradientNoiseProbe(F.cross_entropy)
    with pytest.raises(ValueError, match="targets"):
        probe.measure(ctx_for(make_model(), 0, X, None))
    with pytest.raises(ValueError, match="targets"):
        Scope(make_model(), [probe], data=(X, None), out=None)


def test_stats_updates_of_mixed_dtypes_over_several_measurements():
    """The probe reuses its snapshot buffers (differences in place for float32/float64,
    through parameter_update_norms for bfloat16): every interval equals the measure."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 8), nn.Linear(8, 4).double(), nn.Linear(4, 3))
    model[2].to(torch.bfloat16)
    probe = GradientStatsProbe(schedule=every(2))
    probe.setup(model)
    probe.measure(ctx_for(model, 0))
    for step in (2, 4, 6):
        before = parameter_snapshot(model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, dtype=torch.float32).to(p.dtype) * 0.01)
        recs = probe.measure(ctx_for(model, step))
        upd = parameter_update_norms(before, parameter_snapshot(model))
        for name, value in upd.items():
            assert select(recs, "update_norm", parameter=name)[0].value == \
                pytest.approx(value / 2, rel=1e-5), (step, name)
