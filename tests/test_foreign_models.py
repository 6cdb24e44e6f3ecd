"""Probes on models nobody here wrote: every case trains a few steps with and without a Scope
(default probes plus the expensive ones), the script goes on after ``close()``, the weights
are bit-identical, and a probe that cannot read the model refuses in one sentence."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnscope import Scope
from learnscope.probes import (
    CurvatureProbe,
    GradientNoiseProbe,
    InformationPlaneProbe,
    LinearPathProbe,
    LossSliceProbe,
    NTKProbe,
    PerExampleProbe,
    SimplicityProbe,
    default_probes,
    every,
)
from learnscope.testing import assert_same_model

N, LENGTH, CLASSES, STEPS = 24, 12, 3, 4


def _data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(N, LENGTH, generator=g).to(dtype),
            torch.randint(0, CLASSES, (N,), generator=g))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4 * (LENGTH - 2), CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(F.relu(self.bn(self.conv(x[:, None])))).flatten(1))


class Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(1, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x[..., None])).mean(1))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(1, 6, batch_first=True)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x[..., None])[0][:, -1])


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(LENGTH, 16), nn.ReLU())
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"logits": self.head(h), "features": h}


class TupleNet(DictNet):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        h = self.body(x)
        return self.head(h), h


class TiedNet(nn.Module):
    """Two layers sharing one weight (as input and output embeddings do)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(LENGTH, 8)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight  # tied
        self.act = nn.Tanh()
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.b(self.act(self.a(self.act(self.enc(x)))))))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(LENGTH, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def _build(make: Callable[[], nn.Module], dtype: torch.dtype = torch.float32) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return make().to(dtype)


def _logits(out: object) -> torch.Tensor:
    if isinstance(out, dict):
        return out["logits"]
    return out[0] if isinstance(out, tuple) else out  # type: ignore[return-value]


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scope: Scope | None = None, *,
           autocast: bool = False, accumulate: int = 1, call: nn.Module | None = None) -> None:
    """A user's loop: SGD with momentum, a step LR schedule, optional bf16 autocast and
    gradient accumulation; dropout masks from the global RNG (seeded here)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    forward = call if call is not None else model
    torch.manual_seed(7)
    model.train()
    for t in range(STEPS):
        opt.zero_grad()
        for k in range(accumulate):
            idx = (torch.arange(8) + 8 * ((t * accumulate + k) % 3))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(_logits(forward(x[idx])), y[idx]) / accumulate
            loss.backward()
        opt.step()
        sched.step()
        if scope is not None:
            scope.step(loss, lr=sched.get_last_lr()[0])


def _expensive(x: torch.Tensor, y: torch.Tensor) -> list:
    return [GradientNoiseProbe(F.cross_entropy, n_examples=4, schedule=every(2)),
            NTKProbe(3, schedule=every(2)),
            CurvatureProbe(F.cross_entropy, n_examples=8, eigen_iters=4, trace_samples=2,
                           schedule=every(2)),
            LinearPathProbe(alphas=3), LossSliceProbe(alphas=[-0.5, 0.0, 0.5]),
            PerExampleProbe(x, y, schedule=every(2)), InformationPlaneProbe(schedule=every(2)),
            SimplicityProbe(linear_predictions=y[:12] % 2, schedule=every(2))]


def _scoped_run(make: Callable[[], nn.Module], tmp_path, *, dtype: torch.dtype = torch.float32,
                probes: list | None = None, output: object = None, **train_kw) -> Scope:
    """Train once without and once with a Scope; the weights must be bit-identical and the
    code after ``close()`` (saving the model) must run."""
    x, y = _data(dtype)
    plain = _build(make, dtype)
    _train(plain, x, y, **train_kw)
    model = _build(make, dtype)
    probes = default_probes() + _expensive(x, y) if probes is None else probes
    scope = Scope(model, probes, data=(x[:12], y[:12]), out=tmp_path, output=output)
    _train(model, x, y, scope, **train_kw)
    scope.close()
    torch.save(model.state_dict(), tmp_path / "model.pt")  # the user's script goes on
    assert (tmp_path / "model.pt").exists()
    assert_same_model(plain, model)
    losses = [r for r in scope.records if r.probe == "scalars" and r.key == "loss"]
    assert [r.step for r in losses] == list(range(1, STEPS + 1))
    return scope


def _measured(scope: Scope) -> set[str]:
    return {r.probe for r in scope.records if r.probe not in ("scalars", "probe_failed")}


ALL = {"gradient_stats", "weight_spectrum", "layer_similarity", "gradient_noise", "ntk",
       "curvature", "linear_path", "loss_slice", "per_example", "information_plane",
       "simplicity"}


@pytest.mark.parametrize("case", ["cnn_batchnorm_dropout", "transformer", "lstm", "tied",
                                  "float64", "bf16_autocast", "accumulation"])
def test_every_probe_measures_and_training_is_unchanged(case, tmp_path):
    make, kw = {
        "cnn_batchnorm_dropout": (ConvNet, {}),
        "transformer": (Transformer, {}),
        "lstm": (lambda: Recurrent(nn.LSTM), {}),
        "tied": (TiedNet, {}),
        "float64": (_mlp, {"dtype": torch.float64}),
        "bf16_autocast": (_mlp, {"autocast": True}),
        "accumulation": (ConvNet, {"accumulate": 3}),
    }[case]
    scope = _scoped_run(make, tmp_path, **kw)
    assert scope.session.failed == {}
    assert _measured(scope) == ALL


def test_transformer_default_layers_are_the_encoder_layers(tmp_path):
    # Before: the default layers were the Linear modules, among them self_attn.out_proj,
    # which MultiheadAttention never calls (and the fast path skips linear1/linear2).
    scope = _scoped_run(Transformer, tmp_path, probes=default_probes())
    layers = {r.meta["layer"] for r in scope.records if r.key == "similarity_to_final"}
    assert layers == {"embed", "encoder.layers.0", "encoder.layers.1"}


@pytest.mark.parametrize("cell", [nn.GRU, nn.RNN])
def test_gru_and_rnn_refuse_vmap_probes_by_layer(cell, tmp_path):
    x, y = _data()
    for probe in (GradientNoiseProbe(F.cross_entropy), NTKProbe()):
        with pytest.raises(ValueError, match=rf"layer 'rnn' \({cell.__name__}\)") as err:
            Scope(_build(lambda: Recurrent(cell)), [probe], data=(x, y), out=None)
        assert str(err.value).count(". ") == 0  # one sentence
    rest = [p for p in default_probes() + _expensive(x, y)
            if not isinstance(p, GradientNoiseProbe | NTKProbe)]
    scope = _scoped_run(lambda: Recurrent(cell), tmp_path, probes=rest)
    assert scope.session.failed == {}
    assert _measured(scope) == ALL - {"gradient_noise", "ntk"}


@pytest.mark.parametrize("make,kind,selector", [(DictNet, "dict", "logits"),
                                                (TupleNet, "tuple", 0)])
def test_dict_and_tuple_outputs_refuse_or_take_a_selector(make, kind, selector, tmp_path):
    x, y = _data()
    for probe in _expensive(x, y):
        if isinstance(probe, InformationPlaneProbe):  # reads layers only: no refusal
            continue
        with pytest.raises(ValueError, match=f"the model returns a {kind}") as err:
            Scope(_build(make), [probe], data=(x[:12], y[:12]), out=None)
        assert str(err.value).count(". ") == 0 and probe.name in str(err.value)
    scope = _scoped_run(make, tmp_path, output=selector)
    assert scope.session.failed == {}
    assert _measured(scope) == ALL


def test_a_probe_that_fails_in_close_is_recorded_and_close_finishes(tmp_path):
    def broken_eval(model):
        raise RuntimeError("eval exploded")

    x, y = _data()
    scope = _scoped_run(_mlp, tmp_path, probes=default_probes() + [LinearPathProbe(broken_eval)])
    assert "eval exploded" in scope.session.failed["linear_path"]
    assert {"gradient_stats", "weight_spectrum", "layer_similarity"} <= _measured(scope)


def test_loss_and_scalars_are_recorded_at_every_step(tmp_path):
    x, y = _data()
    model = _build(_mlp)
    scope = Scope(model, [], data=(x, y), out=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = []
    for t in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        scope.step(loss, acc=torch.tensor(0.5 + t / 10), lr=0.1)
        expected.append(float(loss))
    assert scope.records == []  # kept as tensors: no conversion (host sync) per step
    scope.close()
    by_key = {k: [(r.step, r.value) for r in scope.records if r.key == k]
              for k in ("loss", "acc", "lr")}
    assert by_key["loss"] == list(enumerate(expected, start=1))
    assert [s for s, _ in by_key["acc"]] == [1, 2, 3, 4, 5]
    assert [v for _, v in by_key["acc"]] == pytest.approx([0.5 + t / 10 for t in range(5)])
    assert by_key["lr"] == [(t + 1, 0.1) for t in range(5)]
    assert {r.probe for r in scope.records} == {"scalars"}
    with pytest.raises(ValueError, match=r"loss must be a scalar, got a tensor of shape \(3,\)"):
        Scope(model, [], out=None).step(torch.ones(3))


def test_torch_compile(tmp_path):
    import torch._dynamo

    x, y = _data()
    t0 = time.perf_counter()
    try:
        torch._dynamo.reset()
        trial = torch.compile(_build(_mlp), backend="aot_eager")
        F.cross_entropy(trial(x), y).backward()
    except Exception as e:  # no compiler here
        pytest.skip(f"torch.compile does not work here: {type(e).__name__}")
    if time.perf_counter() - t0 > 10:
        pytest.skip("torch.compile takes more than 10 s here")

    def compiled_run(scope_probes: list | None) -> nn.Module:
        model = _build(_mlp)
        compiled = torch.compile(model, backend="aot_eager")
        scope = None if scope_probes is None else Scope(
            compiled, scope_probes, data=(x[:12], y[:12]), out=tmp_path)
        _train(model, x, y, scope, call=compiled)
        if scope is not None:
            scope.close()
            assert scope.session.failed == {}
            assert _measured(scope) == ALL
        return model

    torch._dynamo.reset()
    plain = compiled_run(None)
    torch._dynamo.reset()
    probed = compiled_run(default_probes() + _expensive(x, y))
    later = compiled_run(None)  # compiled training after the Scope, in the same process
    assert_same_model(plain, probed)
    assert_same_model(plain, later)
    torch._dynamo.reset()
