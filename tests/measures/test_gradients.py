"""Oracle tests for learnscope.measures.gradients."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.measures.gradients import (
    GradientNoise,
    gradient_noise,
    layer_gradient_norms,
    parameter_snapshot,
    parameter_update_norms,
    per_example_gradients,
    relative_update_norms,
)
from learnscope.testing import assert_model_unchanged, snapshot_model

torch.set_num_threads(1)
DT = torch.float64


# ---------------------------------------------------------------- model-untouched helpers


snapshot = snapshot_model
assert_unchanged = assert_model_unchanged


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()


class Scaled(nn.Module):
    """A model whose forward depends on a (non-trivial) registered buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()
        self.register_buffer("scale", torch.tensor([0.5, -2.0], dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x)) * self.scale


def loop_gradients(model: nn.Module, loss_fn, x, y) -> dict[str, torch.Tensor]:
    """Oracle: one backward pass per example, on a deep copy."""
    m = copy.deepcopy(model)
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    params = [p for n, p in m.named_parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        loss = loss_fn(m(x[i : i + 1]), y[i : i + 1])
        rows.append(torch.autograd.grad(loss, params))
    return {n: torch.stack([r[k] for r in rows]) for k, n in enumerate(names)}


# ---------------------------------------------------------------- norms


def test_layer_gradient_norms_reads_existing_grads():
    model = tiny_mlp()
    x = torch.randn(6, 3, dtype=DT)
    model(x).square().sum().backward()
    model[2].bias.grad = None  # a parameter without a gradient is omitted
    snap = snapshot(model)
    norms = layer_gradient_norms(model)
    assert set(norms) == {"0.weight", "0.bias", "2.weight"}
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert norms[name] == pytest.approx(float(np.linalg.norm(p.grad.numpy())), rel=1e-14)
    assert_unchanged(model, snap)
    assert layer_gradient_norms(tiny_mlp()) == {}


def test_update_norms_equal_numpy():
    rng = np.random.default_rng(0)
    before = {
        "a": torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32),
        "b": torch.tensor(rng.normal(size=5)),
        "z": torch.zeros(2),
        "zz": torch.zeros(2),
        "count": torch.tensor(3),
    }
    after = {k: v.clone() for k, v in before.items()}
    after["a"] += torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32)
    after["b"] += 1e-3
    after["z"] = torch.tensor([3.0, 4.0])
    after["count"] = torch.tensor(4)
    abs_n = parameter_update_norms(before, after)
    rel_n = relative_update_norms(before, after)
    assert set(abs_n) == set(rel_n) == {"a", "b", "z", "zz"}  # integer buffer skipped
    for k in ("a", "b"):
        diff = after[k].double().numpy() - before[k].double().numpy()
        assert abs_n[k] == pytest.approx(np.linalg.norm(diff), rel=1e-12)
        assert rel_n[k] == pytest.approx(
            np.linalg.norm(diff) / np.linalg.norm(before[k].double().numpy()), rel=1e-12
        )
    assert abs_n["z"] == pytest.approx(5.0)
    assert rel_n["z"] == math.inf and rel_n["zz"] == 0.0 and abs_n["zz"] == 0.0


def test_update_norms_with_parameter_snapshot_and_errors():
    model = tiny_mlp()
    before = parameter_snapshot(model)
    model(torch.randn(4, 3, dtype=DT)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # an SGD step
        for p in model.parameters():
            p -= 0.1 * p.grad
    after = parameter_snapshot(model)
    norms = parameter_update_norms(before, after)
    for n, g in grads.items():
        assert norms[n] == pytest.approx(0.1 * float(g.norm()), rel=1e-10)
    with pytest.raises(ValueError, match="keys"):
        parameter_update_norms(before, {k: v for k, v in after.items() if k != "0.bias"})
    with pytest.raises(ValueError, match="shape"):
        relative_update_norms({"w": torch.zeros(2)}, {"w": torch.zeros(3)})


# ---------------------------------------------------------------- per-example gradients


def test_per_example_gradients_tiny_mlp_equal_loop():
    model = tiny_mlp()
    x = torch.randn(7, 3, dtype=DT)
    y = torch.randint(0, 4, (7,))
    model(x).sum().backward()
    snap = snapshot(model)
    loss_fn = nn.CrossEntropyLoss()
    got = per_example_gradients(model, loss_fn, x, y)
    want = loop_gradients(model, loss_fn, x, y)
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == (7, *dict(model.named_parameters())[n].shape)
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-12)
    # the mean of per-example gradients is the batch gradient of the mean loss
    batch = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
    for (n, _), g in zip(model.named_parameters(), batch, strict=True):
        torch.testing.assert_close(got[n].mean(0), g, rtol=1e-12, atol=1e-12)
    assert_unchanged(model, snap)


def test_per_example_gradients_with_batchnorm_eval_and_buffer():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.copy_(torch.tensor([0.3, -0.1, 0.5, 0.0]))
        model[1].running_var.copy_(torch.tensor([2.0, 0.5, 1.5, 3.0]))
    model.eval()
    model[0].bias.requires_grad_(False)  # frozen parameters are excluded
    x, y = torch.randn(6, 3, dtype=DT), torch.randn(6, 2, dtype=DT)
    snap = snapshot(model)
    got = per_example_gradients(model, nn.MSELoss(), x, y)
    want = loop_gradients(model, nn.MSELoss(), x, y)
    assert "0.bias" not in got and got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-12)
    assert_unchanged(model, snap)

    scaled = Scaled()
    snap = snapshot(scaled)
    got = per_example_gradients(scaled, nn.MSELoss(reduction="sum"), x, y, chunk_size=4)
    want = loop_gradients(scaled, nn.MSELoss(reduction="sum"), x, y)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-12)
    assert_unchanged(scaled, snap)


def test_per_example_gradients_refusals():
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()  # train mode
    x, y = torch.randn(5, 3, dtype=DT), torch.randn(5, 4, dtype=DT)
    with pytest.raises(ValueError, match="BatchNorm"):
        per_example_gradients(bn, nn.MSELoss(), x, y)
    drop = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2)).double()
    with pytest.raises(ValueError, match="Dropout"):
        per_example_gradients(drop, nn.MSELoss(), x, y)
    with pytest.raises(ValueError, match="batch sizes"):
        per_example_gradients(tiny_mlp(), nn.MSELoss(), x, y[:3])
    assert bn.training and drop.training


# ---------------------------------------------------------------- gradient noise


def numpy_noise(g: np.ndarray) -> dict[str, float]:
    n = g.shape[0]
    mean = g.mean(axis=0)
    msq = float(mean @ mean)
    tr = float(np.trace(np.atleast_2d(np.cov(g, rowvar=False, ddof=1))))
    return {"msq": msq, "tr": tr, "snr": msq / tr, "b": tr / msq, "msq_u": msq - tr / n}


def test_gradient_noise_equals_numpy_formulas():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(9, 5)) + np.array([1.0, 0.0, -2.0, 0.5, 0.0])
    ref = numpy_noise(g)
    res = gradient_noise(torch.tensor(g))
    assert isinstance(res, GradientNoise) and res.batch_size == 9
    assert res.mean_grad_norm_sq == pytest.approx(ref["msq"], rel=1e-12)
    assert res.trace_covariance == pytest.approx(ref["tr"], rel=1e-12)
    assert res.snr == pytest.approx(ref["snr"], rel=1e-12)
    assert res.noise_scale == pytest.approx(ref["b"], rel=1e-12)
    assert res.mean_grad_norm_sq_unbiased == pytest.approx(ref["msq_u"], rel=1e-12)
    assert res.noise_scale_unbiased == pytest.approx(ref["tr"] / ref["msq_u"], rel=1e-12)
    # a dict of (n, ...) tensors is flattened and concatenated per example
    split = {"w": torch.tensor(g[:, :4]).reshape(9, 2, 2), "b": torch.tensor(g[:, 4])}
    assert gradient_noise(split) == res


def test_gradient_noise_hand_made_values():
    # g1 = (1, 0), g2 = (3, 0): mean (2, 0) -> |mean|^2 = 4; unbiased tr Cov = (1 + 1) / 1 = 2
    res = gradient_noise(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert (res.mean_grad_norm_sq, res.trace_covariance) == (4.0, 2.0)
    assert (res.snr, res.noise_scale) == (2.0, 0.5)
    assert res.mean_grad_norm_sq_unbiased == 3.0
    # identical gradients: no noise
    same = gradient_noise(torch.ones(4, 3))
    assert same.trace_covariance == 0.0 and same.snr == math.inf and same.noise_scale == 0.0
    # zero mean: no signal
    zero = gradient_noise(torch.tensor([[1.0], [-1.0]]))
    assert zero.snr == 0.0 and zero.noise_scale == math.inf


def test_gradient_noise_from_model_and_errors():
    model = tiny_mlp()
    x, y = torch.randn(8, 3, dtype=DT), torch.randint(0, 4, (8,))
    pe = per_example_gradients(model, nn.CrossEntropyLoss(), x, y)
    flat = torch.cat([t.reshape(8, -1) for t in pe.values()], dim=1).numpy()
    assert gradient_noise(pe).trace_covariance == pytest.approx(numpy_noise(flat)["tr"])
    with pytest.raises(ValueError, match="at least 2"):
        gradient_noise(torch.ones(1, 3))
    with pytest.raises(ValueError, match="non-finite"):
        gradient_noise(torch.tensor([[1.0], [float("inf")]]))
    with pytest.raises(ValueError, match="leading"):
        gradient_noise({"a": torch.ones(3, 2), "b": torch.ones(4)})


def test_norms_of_complex_tensors_keep_the_imaginary_part():
    from learnscope.measures.gradients import parameter_update_norms

    before = {"w": torch.zeros(1, dtype=torch.complex64)}
    after = {"w": torch.tensor([3 + 4j], dtype=torch.complex64)}
    assert parameter_update_norms(before, after)["w"] == pytest.approx(5.0)
