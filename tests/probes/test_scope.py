"""The Scope: schedules, shared capture pass, store, report, and no side effects on the model."""

import json
import math

import pytest
import torch
from torch import nn

from learnscope import Scope
from learnscope.probes import (
    Probe,
    WeightSpectrumProbe,
    at_end,
    every,
    log_spaced,
    per_epoch,
)
from learnscope.store import Record, RunStore
from learnscope.testing import assert_same_model


class Recorder(Probe):
    """A test probe that records what it saw."""

    name = "recorder"
    cost = "forward"
    needs_activations = True

    def __init__(self, schedule=None, layer_names=None):
        self.schedule = schedule or every(1)
        self.layer_names = layer_names
        self.seen = []

    def layers(self, model):
        return self.layer_names or ["1"]

    def measure(self, ctx):
        self.seen.append((ctx.step, ctx.epoch, {k: v.clone() for k, v in ctx.activations.items()},
                          None if ctx.outputs is None else ctx.outputs.clone(),
                          [m.training for m in ctx.model.modules()]))
        return [Record("mean_act", float(ctx.activations["1"].mean()))]


def _model(seed=0, dropout=0.0):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
    x = torch.randn(64, 5, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    return net, x, y


def _train(net, x, y, steps, scope=None, seed=0):
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(seed)  # dropout masks
    for t in range(steps):
        idx = torch.arange(16) + (t % 4) * 16
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if scope is not None:
            scope.step(loss)
            if (t + 1) % 4 == 0:
                scope.epoch()
    return net


def test_schedules_and_steps():
    net, x, y = _model()
    probes = [Recorder(every(5)), Recorder(log_spaced(4)), Recorder(per_epoch(2))]
    scope = Scope(net, probes, data=(x, y), out=None)
    _train(net, x, y, 20, scope)
    scope.close()
    steps = {label: sorted({r.step for r in scope.records if r.probe == label})
             for label in scope.labels}
    assert scope.labels == ["recorder", "recorder-2", "recorder-3"]
    assert steps["recorder"] == [0, 5, 10, 15, 20]
    assert steps["recorder-2"] == [0, 1, 2, 4, 6, 10, 18, 20]  # + final state at 20
    assert steps["recorder-3"] == [0, 8, 16, 20]  # epochs 0, 2, 4 (every 4 steps) + final


def test_capture_pass_matches_a_plain_forward_and_restores_modes():
    net, x, y = _model(dropout=0.5)
    net.train()
    rec = Recorder(every(3))
    scope = Scope(net, [rec], data=(x, y), out=None)
    _train(net, x, y, 6, scope)
    _, _, acts, outputs, flags = rec.seen[-1]
    assert all(m.training for m in net.modules())  # user's train mode untouched
    assert all(flags)  # probes see the model as the user left it
    with torch.no_grad():
        net.eval()
        assert torch.equal(outputs, net(x))  # the capture pass ran in eval mode (no dropout)
        assert torch.equal(acts["1"], torch.relu(net[0](x)))
        net.train()
    scope.close()


def test_probes_do_not_change_training():
    """Same seed, same weights, with and without every probe attached; RNG and hooks intact."""
    plain, x, y = _model(dropout=0.3)
    _train(plain, x, y, 12)
    probed, _, _ = _model(dropout=0.3)
    rng = torch.get_rng_state()
    scope = Scope(probed, [Recorder(every(1)), WeightSpectrumProbe(every(2))], data=(x, y),
                  out=None)
    assert torch.equal(torch.get_rng_state(), rng)
    _train(probed, x, y, 12, scope)
    scope.close()
    assert_same_model(plain, probed)


def test_hooks_removed_when_loop_raises(tmp_path):
    net, x, y = _model()
    with pytest.raises(RuntimeError, match="boom"), \
            Scope(net, [Recorder(every(1))], data=(x, y), out=tmp_path, name="crash") as scope:
        _train(net, x, y, 3, scope)
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in net.modules())
    with RunStore(tmp_path) as store:
        (run,) = store.list_runs()
        assert run.status == "failed"
        assert store.count_records(run.run_id) == 4 + 3  # steps 0..3 kept, and the 3 losses
    result = json.loads((tmp_path / "crash" / run.run_id / "result.json").read_text())
    assert result["status"] == "failed"


def test_records_reach_store_and_report(tmp_path, capsys):
    from learnscope.cli import main

    net, x, y = _model()
    scope = Scope(net, [WeightSpectrumProbe(every(4)), Recorder(at_end())], data=(x, y),
                  out=tmp_path, name="mlp", flush_every=3)
    _train(net, x, y, 8, scope)
    scope.close()
    with RunStore(tmp_path) as store:
        (run,) = store.list_runs()
        stored = store.load_records(run.run_id)
    assert len(stored) == len(scope.records) > 0
    assert {r.probe for r in stored} == {"weight_spectrum", "recorder", "scalars"}
    assert run.status == "finished" and run.config["kind"] == "probes"
    assert run.config["probes"][0]["params"]["xmin"] == "auto"
    html = (scope.run_dir / "report.html").read_text()
    assert "weight_spectrum: stable_rank" in html
    (scope.run_dir / "report.html").unlink()
    assert main(["report", str(scope.run_dir)]) == 0
    assert (scope.run_dir / "report.html").exists()


def test_weight_spectrum_values_equal_measures():
    from learnscope.measures.spectra import stable_rank

    net, x, y = _model()
    scope = Scope(net, [WeightSpectrumProbe(every(100))], data=(x, y), out=None)
    _train(net, x, y, 3, scope)
    scope.close()
    final = [r for r in scope.records if r.step == 3 and r.key == "stable_rank"]
    assert {r.meta["layer"] for r in final} == {"0", "3"}
    for r in final:
        w = net.get_submodule(r.meta["layer"]).weight.detach()
        assert r.value == pytest.approx(stable_rank(w))
    dist = [r for r in scope.records if r.key == "distance_from_init_abs" and r.step == 0]
    assert all(r.value == 0 for r in dist)
    moved = [r for r in scope.records if r.key == "distance_from_init_abs" and r.step == 3
             and r.meta["parameter"] == "0.weight"]
    assert moved[0].value > 0 and math.isfinite(moved[0].value)


def test_bad_inputs():
    net, x, y = _model()
    with pytest.raises(ValueError, match="different lengths"):
        Scope(net, [], data=(x, y[:3]), out=None)
    with pytest.raises(TypeError, match="Probe instances"):
        Scope(net, ["grad"], data=(x, y), out=None)
    with pytest.raises(ValueError, match="no module named"):
        Scope(net, [Recorder(every(1), ["nope"])], data=(x, y), out=None)
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError):
        every(0)
    scope = Scope(net, [], data=(x, y), out=None)
    scope.close()
    with pytest.raises(RuntimeError, match="closed"):
        scope.step()


def test_tensorboard_exporter(tmp_path):
    pytest.importorskip("tensorboard")
    from learnscope.probes import TensorBoardExporter

    net, x, y = _model()
    exporter = TensorBoardExporter(tmp_path / "tb")
    scope = Scope(net, [WeightSpectrumProbe(every(2))], data=(x, y), out=None,
                  exporters=[exporter])
    _train(net, x, y, 4, scope)
    scope.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("weight_spectrum/stable_rank/layer=0")
    assert [e.step for e in events] == [0, 2, 4]


class Failing(Probe):
    """Raises from the second measurement on."""

    name = "failing"

    def __init__(self):
        self.schedule = every(2)

    def measure(self, ctx):
        if ctx.step > 0:
            raise FloatingPointError("the spectrum diverged")
        return [Record("fine", 1.0)]


def test_failed_probe_is_in_result_and_report(tmp_path):
    net, x, y = _model()
    scope = Scope(net, [Failing(), WeightSpectrumProbe(every(2))], data=(x, y), out=tmp_path,
                  name="mlp")
    with pytest.warns(RuntimeWarning, match="'failing' failed"):
        _train(net, x, y, 6, scope)
    scope.close()
    result = json.loads((scope.run_dir / "result.json").read_text())
    assert result["status"] == "finished"
    assert result["failed_probes"] == {"failing": "FloatingPointError: the spectrum diverged"}
    html = (scope.run_dir / "report.html").read_text()
    assert "failing: failed and switched off" in html and "the spectrum diverged" in html
    with RunStore(tmp_path) as store:
        stored = store.load_records(scope.run_id)
    assert [(r.key, r.step) for r in stored if r.probe == "failing"] == [
        ("fine", 0), ("probe_failed", 2)]
    assert max(r.step for r in stored if r.probe == "weight_spectrum") == 6


def test_bad_configuration_creates_no_run(tmp_path):
    net, x, y = _model()
    with pytest.raises(ValueError, match="no module named"):
        Scope(net, [Recorder(every(1), ["nope"])], data=(x, y), out=tmp_path)
    with RunStore(tmp_path) as store:
        assert store.list_runs() == []
