"""Oracle tests for learnscope.measures.landscape."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.measures.landscape import (
    PathResult,
    filter_normalized_direction,
    interpolate_state,
    linear_path,
    loss_slice_1d,
    loss_slice_2d,
    recompute_batchnorm_statistics,
)
from learnscope.testing import assert_model_unchanged, snapshot_model

torch.set_num_threads(1)
DT = torch.float64


# ---------------------------------------------------------------- model-untouched helpers


snapshot = snapshot_model
assert_unchanged = assert_model_unchanged


def bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2)
    ).double()
    with torch.no_grad():  # distinct running statistics and counters in each model
        net(torch.randn(32, 3, dtype=DT) * (seed + 1))
    return net


def with_grads(model: nn.Module) -> nn.Module:
    model(torch.randn(8, 3, dtype=DT)).square().sum().backward()
    return model


X = torch.linspace(-2, 2, 30, dtype=DT).reshape(10, 3)


# ---------------------------------------------------------------- interpolate_state


def test_interpolate_state_values_and_integer_buffers():
    a, b = bn_net(0).state_dict(), bn_net(1).state_dict()
    a_copy = {k: v.clone() for k, v in a.items()}
    for k, v in interpolate_state(a, b, 0.0).items():
        assert torch.equal(v, a[k]) and v.dtype == a[k].dtype
        assert v.data_ptr() != a[k].data_ptr()  # a clone, not an alias
    for k, v in interpolate_state(a, b, 1.0).items():
        assert torch.equal(v, b[k])
    mid = interpolate_state(a, b, 0.3)
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(mid[k], 0.7 * a[k] + 0.3 * b[k], rtol=1e-14, atol=1e-15)
    a["1.num_batches_tracked"].fill_(5)
    b["1.num_batches_tracked"].fill_(9)
    assert int(interpolate_state(a, b, 0.49)["1.num_batches_tracked"]) == 5
    assert int(interpolate_state(a, b, 0.5)["1.num_batches_tracked"]) == 9
    same = interpolate_state(a, a, 0.5)
    for k in a:
        assert torch.equal(same[k], a[k])
    for k in a:  # inputs not modified (except the counter we set by hand)
        if k != "1.num_batches_tracked":
            assert torch.equal(a[k], a_copy[k])


def test_interpolate_state_errors():
    a = nn.Linear(3, 2).state_dict()
    with pytest.raises(ValueError, match="names"):
        interpolate_state(a, nn.Sequential(nn.Linear(3, 2)).state_dict(), 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate_state(a, nn.Linear(4, 2).state_dict(), 0.5)
    with pytest.raises(ValueError, match="dtype"):
        interpolate_state(a, nn.Linear(3, 2).double().state_dict(), 0.5)
    with pytest.raises(ValueError, match="finite"):
        interpolate_state(a, a, float("nan"))


# ---------------------------------------------------------------- linear_path


def test_linear_path_endpoints_reproduce_both_models_exactly():
    model_a, model_b = with_grads(bn_net(0)), bn_net(1)
    model_a.train()  # the training flag must survive
    model_b.eval()
    snap_a, snap_b = snapshot(model_a), snapshot(model_b)
    with torch.no_grad():
        ref_a = copy.deepcopy(model_a).eval()(X)
        ref_b = copy.deepcopy(model_b).eval()(X)
    outputs = []

    def eval_fn(m):
        assert not m.training and m is not model_a and m is not model_b
        with torch.no_grad():
            out = m(X)
        outputs.append(out)
        return float(out.square().mean()), float((out[:, 0] > 0).double().mean())

    rng_before = torch.get_rng_state()
    res = linear_path(model_a, model_b, eval_fn)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert isinstance(res, PathResult)
    np.testing.assert_array_equal(res.alphas, np.linspace(0, 1, 11))
    assert len(outputs) == 11 and res.losses.shape == res.errors.shape == (11,)
    assert torch.equal(outputs[0], ref_a)  # bit for bit
    assert torch.equal(outputs[-1], ref_b)
    assert not torch.equal(outputs[5], ref_a)
    assert res.losses[0] == float(ref_a.square().mean())
    assert_unchanged(model_a, snap_a)
    assert_unchanged(model_b, snap_b)


def test_linear_path_between_identical_models_is_constant():
    model = bn_net(2).eval()
    twin = copy.deepcopy(model)
    ref = model(X)
    outs = []

    def eval_fn(m):
        out = m(X).detach()
        outs.append(out)
        return float(out.sum()), 0.0

    res = linear_path(model, twin, eval_fn, alphas=[0.0, 0.5, 1.0])
    for out in outs:
        assert torch.equal(out, ref)  # the midpoint of two identical models is the model
    assert res.barrier_loss == 0.0 and res.barrier_error == 0.0


def test_linear_path_barrier_from_hand_made_values():
    model_a, model_b = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model_a.weight.fill_(0.0)
        model_b.weight.fill_(1.0)
    table = {0.0: (1.0, 0.1), 0.25: (2.5, 0.4), 0.5: (4.0, 0.3), 0.75: (1.5, 0.6), 1.0: (3.0, 0.2)}

    def eval_fn(m):  # the weight *is* alpha, so the copy's state identifies the path point
        return table[round(float(m.weight.detach()), 6)]

    res = linear_path(model_a, model_b, eval_fn, alphas=[0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(res.losses, [1.0, 2.5, 4.0, 1.5, 3.0])
    np.testing.assert_array_equal(res.errors, [0.1, 0.4, 0.3, 0.6, 0.2])
    assert res.barrier_loss == pytest.approx(4.0 - (1.0 + 3.0) / 2)
    assert res.barrier_error == pytest.approx(0.6 - (0.1 + 0.2) / 2)
    # order of alphas is kept; endpoints found wherever they are
    res2 = linear_path(model_a, model_b, eval_fn, alphas=[1.0, 0.5, 0.0])
    np.testing.assert_array_equal(res2.losses, [3.0, 4.0, 1.0])
    assert res2.barrier_loss == pytest.approx(2.0)


def test_linear_path_batchnorm_recompute_matches_hand_computation():
    model_a, model_b = bn_net(0), bn_net(1)
    model_a.eval()
    snap_a, snap_b = snapshot(model_a), snapshot(model_b)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(12, 3, generator=g, dtype=DT) for _ in range(3)]
    seen = {}

    def eval_fn(m):
        bn = m[1]
        seen[len(seen)] = (
            bn.running_mean.clone(),
            bn.running_var.clone(),
            int(bn.num_batches_tracked),
            m(X).detach(),
            m[1].momentum,
            bn.training,
        )
        return 0.0, 0.0

    rng_before = torch.get_rng_state()
    alphas = [0.0, 0.4, 1.0]
    linear_path(model_a, model_b, eval_fn, alphas=alphas, bn_recompute_loader=batches)
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout stayed off
    sa, sb = model_a.state_dict(), model_b.state_dict()
    for i, alpha in enumerate(alphas):
        w = (1 - alpha) * sa["0.weight"] + alpha * sb["0.weight"]
        b = (1 - alpha) * sa["0.bias"] + alpha * sb["0.bias"]
        hs = [xb @ w.T + b for xb in batches]
        mean = torch.stack([h.mean(0) for h in hs]).mean(0)  # average of batch means
        var = torch.stack([h.var(0, unbiased=True) for h in hs]).mean(0)
        rm, rv, count, out, momentum, training = seen[i]
        torch.testing.assert_close(rm, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rv, var, rtol=1e-12, atol=1e-12)
        assert count == 3 and momentum == 0.1 and not training
        # evaluation in eval mode with the recomputed statistics
        gamma = (1 - alpha) * sa["1.weight"] + alpha * sb["1.weight"]
        beta = (1 - alpha) * sa["1.bias"] + alpha * sb["1.bias"]
        h = torch.relu((X @ w.T + b - mean) / torch.sqrt(var + 1e-5) * gamma + beta)
        w2 = (1 - alpha) * sa["4.weight"] + alpha * sb["4.weight"]
        b2 = (1 - alpha) * sa["4.bias"] + alpha * sb["4.bias"]
        torch.testing.assert_close(out, h @ w2.T + b2, rtol=1e-10, atol=1e-12)
    # a single batch gives exactly the data statistics; (x, y) tuples are accepted
    seen.clear()
    one = [(batches[0], None)]
    linear_path(model_a, model_b, eval_fn, alphas=[0.0, 1.0], bn_recompute_loader=one)
    h0 = batches[0] @ sa["0.weight"].T + sa["0.bias"]
    torch.testing.assert_close(seen[0][0], h0.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seen[0][1], h0.var(0, unbiased=True), rtol=1e-12, atol=1e-12)
    assert_unchanged(model_a, snap_a)
    assert_unchanged(model_b, snap_b)


def test_recompute_batchnorm_statistics_returns_a_copy():
    model = bn_net(3)
    snap = snapshot(model)
    g = torch.Generator().manual_seed(1)
    batch = torch.randn(16, 3, generator=g, dtype=DT)
    rng_before = torch.get_rng_state()
    fresh = recompute_batchnorm_statistics(model, [batch])
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert fresh is not model and not fresh.training and fresh[1].momentum == 0.1
    h = model[0](batch).detach()
    torch.testing.assert_close(fresh[1].running_mean, h.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fresh[1].running_var, h.var(0), rtol=1e-12, atol=1e-12)
    assert int(fresh[1].num_batches_tracked) == 1
    assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="no batches"):
        recompute_batchnorm_statistics(model, iter(()))


def test_linear_path_errors():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)

    def ev(m):
        return 0.0, 0.0

    with pytest.raises(ValueError, match="names"):
        linear_path(a, nn.Sequential(nn.Linear(3, 2)), ev)
    with pytest.raises(ValueError, match="shape"):
        linear_path(a, nn.Linear(4, 2), ev)
    with pytest.raises(ValueError, match="empty"):
        linear_path(a, b, ev, alphas=[])
    with pytest.raises(ValueError, match="contain 0 and 1"):
        linear_path(a, b, ev, alphas=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        linear_path(a, b, ev, alphas=[0.0, 1.0, 1.5])
    with pytest.raises(ValueError, match="no batches"):
        linear_path(a, b, ev, alphas=[0.0, 1.0], bn_recompute_loader=[])
    with pytest.raises(ValueError, match="pair"):
        linear_path(a, b, lambda m: 1.0, alphas=[0.0, 1.0])


# ---------------------------------------------------------------- filter normalization


def test_filter_normalized_direction_rows_have_weight_row_norms():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 5)
    ).double()
    with_grads_conv = model(torch.randn(2, 2, 4, 4, dtype=DT)).sum()
    with_grads_conv.backward()
    snap = snapshot(model)
    rng_before = torch.get_rng_state()
    d = filter_normalized_direction(model, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), rng_before)
    params = dict(model.named_parameters())
    assert d.keys() == params.keys()
    for name, p in params.items():
        assert d[name].shape == p.shape and d[name].dtype == p.dtype
        if p.dim() >= 2:
            dn = d[name].reshape(p.shape[0], -1).norm(dim=1)
            wn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-8, atol=0)
            assert not torch.allclose(d[name], p.detach())  # random, not the weight itself
        else:
            assert torch.count_nonzero(d[name]) == 0  # biases and BN parameters ignored
    d_same = filter_normalized_direction(model, generator=1)
    for k in d:
        assert torch.equal(d[k], d_same[k])  # int seed == generator with that seed
    d_keep = filter_normalized_direction(model, generator=1, ignore_bias_and_bn=False)
    for name, p in params.items():
        if p.dim() <= 1:
            assert torch.equal(d_keep[name], p.detach())  # reference-implementation rule
        else:
            assert torch.equal(d_keep[name], d[name])
    assert_unchanged(model, snap)


# ---------------------------------------------------------------- slices


def quad_problem():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20, 3, generator=g, dtype=DT)
    y = torch.randn(20, 1, generator=g, dtype=DT)
    torch.manual_seed(4)
    model = nn.Linear(3, 1, bias=False).double()

    def eval_fn(m):
        with torch.no_grad():
            loss = ((m(x) - y) ** 2).mean()
        return float(loss), float(m.weight.detach().sum())

    def closed(w):
        return float(((x @ w.T - y) ** 2).mean())

    return model, eval_fn, closed


def test_loss_slice_1d_matches_closed_form():
    model, eval_fn, closed = quad_problem()
    model.train()
    snap = snapshot(model)
    d = {"weight": torch.tensor([[1.0, -2.0, 0.5]], dtype=DT)}
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    out = loss_slice_1d(model, eval_fn, d, alphas)
    assert out.shape == (5, 2) and out.dtype == np.float64
    w = model.weight.detach()
    for i, a in enumerate(alphas):
        assert out[i, 0] == pytest.approx(closed(w + a * d["weight"]), rel=1e-12)
    assert out[2, 0] == eval_fn(model)[0]  # alpha = 0 is exactly the model
    scalar = loss_slice_1d(model, lambda m: eval_fn(m)[0], d, np.array(alphas))
    assert scalar.shape == (5,)
    np.testing.assert_array_equal(scalar, out[:, 0])
    assert_unchanged(model, snap)


def test_loss_slice_2d_matches_closed_form():
    model, eval_fn, closed = quad_problem()
    snap = snapshot(model)
    d1 = filter_normalized_direction(model, generator=3)
    d2 = {"weight": torch.tensor([[0.0, 1.0, 1.0]], dtype=DT)}
    alphas, betas = [-0.5, 0.0, 0.5], [0.0, 1.0]
    out = loss_slice_2d(model, eval_fn, d1, d2, alphas, betas)
    assert out.shape == (3, 2, 2)
    w = model.weight.detach()
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            expected = closed(w + a * d1["weight"] + b * d2["weight"])
            assert out[i, j, 0] == pytest.approx(expected, rel=1e-12)
    assert out[1, 0, 0] == eval_fn(model)[0]
    assert_unchanged(model, snap)


def test_slice_errors():
    model, eval_fn, _ = quad_problem()
    ok = {"weight": torch.ones(1, 3, dtype=DT)}
    with pytest.raises(ValueError, match="non-finite"):
        loss_slice_1d(model, eval_fn, {"weight": torch.full((1, 3), float("inf"))}, [0.0])
    with pytest.raises(ValueError, match="empty"):
        loss_slice_1d(model, eval_fn, ok, [])
    with pytest.raises(ValueError, match="not parameters"):
        loss_slice_1d(model, eval_fn, {"bias": torch.ones(1)}, [0.0])
    with pytest.raises(ValueError, match="shape"):
        loss_slice_2d(model, eval_fn, ok, {"weight": torch.ones(3)}, [0.0], [0.0])
    with pytest.raises(ValueError, match="betas"):
        loss_slice_2d(model, eval_fn, ok, ok, [0.0], [])
