"""ProbeSession: in memory, one shared capture pass per step, due checks, scalars, and a
probe that raises during training does not end it."""

import math

import pytest
import torch
from torch import nn

from learnscope.probes import (
    GradientStatsProbe,
    Probe,
    ProbeSession,
    WeightSpectrumProbe,
    at_end,
    at_steps,
    every,
    log_spaced,
    per_epoch,
)
from learnscope.store import Record
from learnscope.testing import assert_model_unchanged, assert_same_model, snapshot_model


class CountingNet(nn.Sequential):
    """A small MLP that counts its eval-mode forward passes (the capture passes)."""

    def __init__(self) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            super().__init__(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
        self.eval_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.eval_forwards += 1
        return super().forward(x)


class Seen(Probe):
    """Records the mean of layer "1" and what the context held."""

    name = "seen"
    cost = "forward"
    needs_activations = True

    def __init__(self, schedule=None):
        self.schedule = schedule or every(1)
        self.contexts = []

    def layers(self, model):
        return ["1"]

    def measure(self, ctx):
        self.contexts.append((ctx.step, ctx.loss, dict(ctx.scalars)))
        return [Record("mean_act", float(ctx.activations["1"].mean()))]


class Exploding(Probe):
    """Raises at the step given (and in finish when ``in_finish``)."""

    name = "exploding"

    def __init__(self, at_step=None, in_finish=False):
        self.schedule = every(1)
        self.at_step, self.in_finish = at_step, in_finish
        self.calls = 0

    def measure(self, ctx):
        self.calls += 1
        if ctx.step == self.at_step:
            raise RuntimeError(f"boom at {ctx.step}")
        return [Record("ok", 1.0)]

    def finish(self, ctx):
        if self.in_finish:
            raise ValueError("boom in finish")
        return self.measure(ctx)


X = torch.randn(32, 5, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(2))


def train(net, session=None, steps=8, scalars=False):
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(0)  # dropout masks
    for t in range(steps):
        idx = torch.arange(8) + (t % 4) * 8
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(X[idx]), Y[idx])
        loss.backward()
        opt.step()
        if session is not None:
            session.step(loss, **({"lr": 0.1, "t": float(t)} if scalars else {}))
            if (t + 1) % 4 == 0:
                session.epoch()
    return net


def test_one_shared_capture_pass_per_step():
    net = CountingNet()
    probes = [Seen(every(2)), Seen(every(2)), GradientStatsProbe(schedule=every(2))]
    session = ProbeSession(net, probes, data=(X, Y))
    assert net.eval_forwards == 1  # step 0: both forward probes, one pass
    train(net, session, steps=6)
    assert net.eval_forwards == 1 + 3  # steps 2, 4, 6
    records = session.close()
    assert net.eval_forwards == 4  # step 6 was measured already: no final pass
    assert records is session.records
    assert session.labels == ["seen", "seen-2", "gradient_stats"]
    by_label = {label: sorted({r.step for r in records if r.probe == label})
                for label in session.labels}
    assert by_label == {"seen": [0, 2, 4, 6], "seen-2": [0, 2, 4, 6],
                        "gradient_stats": [2, 4, 6]}
    assert set(session.timings) == {"seen", "seen-2", "gradient_stats", "capture"}


def test_loss_and_scalars_reach_probes_and_records():
    net = CountingNet()
    seen = Seen(every(3))
    session = ProbeSession(net, [seen], data=(X, Y))
    train(net, session, steps=6, scalars=True)
    session.close()
    step, loss, scalars = seen.contexts[-1]
    assert step == 6 and isinstance(loss, float) and scalars == {"lr": 0.1, "t": 5.0}
    lr = [r for r in session.records if r.key == "lr"]
    assert [r.step for r in lr] == list(range(1, 7)) and {r.probe for r in lr} == {"scalars"}
    assert [r.meta["epoch"] for r in lr] == [0, 0, 0, 0, 1, 1]


def test_due_at_step_and_epoch_follow_the_schedules():
    net = CountingNet()
    session = ProbeSession(net, [Seen(every(5)), WeightSpectrumProbe(log_spaced(1))],
                           data=(X, Y))
    due = [t for t in range(1, 31) if session.due_at_step(t)]
    assert due == [1, 5, 10, 15, 20, 25, 30]  # every 5, and 1, 10 (one per decade)
    assert not any(session.due_at_epoch(e) for e in range(1, 5))
    per = ProbeSession(net, [Seen(per_epoch(2)), Seen(at_end())], data=(X, Y))
    assert [e for e in range(1, 7) if per.due_at_epoch(e)] == [2, 4, 6]
    assert not any(per.due_at_step(t) for t in range(1, 50))


def test_a_probe_that_raises_is_recorded_and_switched_off():
    plain = train(CountingNet(), steps=8)
    plain_rng = torch.get_rng_state()
    net = CountingNet()
    exploding, seen = Exploding(at_step=3), Seen(every(1))
    session = ProbeSession(net, [exploding, seen, GradientStatsProbe(schedule=every(2))],
                           data=(X, Y))
    with pytest.warns(RuntimeWarning, match="'exploding' failed in measure at step 3"):
        train(net, session, steps=8)
    records = session.close()
    assert torch.equal(torch.get_rng_state(), plain_rng)
    (failed,) = [r for r in records if r.key == "probe_failed"]
    assert failed.probe == "exploding" and failed.step == 3 and math.isnan(failed.value)
    assert failed.meta["error"] == "RuntimeError: boom at 3" and failed.meta["phase"] == "measure"
    assert session.failed == {"exploding": "RuntimeError: boom at 3"}
    assert exploding.calls == 4  # steps 0..3, then switched off (no final call either)
    assert sorted({r.step for r in records if r.probe == "seen"}) == list(range(9))
    assert {r.step for r in records if r.probe == "gradient_stats"} == {2, 4, 6, 8}
    # The training is the same as without probes, bit for bit, and the global RNG too.
    assert_same_model(plain, net)


def test_a_probe_that_raises_in_finish_leaves_the_others():
    net = CountingNet()
    session = ProbeSession(net, [Exploding(in_finish=True), Seen(every(100))], data=(X, Y))
    train(net, session, steps=3)
    with pytest.warns(RuntimeWarning, match="failed in finish"):
        records = session.close()
    assert [r.step for r in records if r.probe == "seen"] == [0, 3]
    (failed,) = [r for r in records if r.key == "probe_failed"]
    assert failed.meta == {"error": "ValueError: boom in finish", "phase": "finish", "epoch": 0}


def test_a_failing_capture_pass_fails_only_the_forward_probes():
    net = CountingNet()
    session = ProbeSession(net, [Seen(every(1)), GradientStatsProbe(schedule=every(1))],
                           data=(X, Y))
    train(net, session, steps=2)
    session.inputs = torch.randn(32, 7)  # the model cannot take these: its forward raises
    with pytest.warns(RuntimeWarning, match="'seen' failed in capture pass"):
        train(net, session, steps=1)
    session.close()
    assert "seen" in session.failed and "gradient_stats" not in session.failed
    assert max(r.step for r in session.records if r.probe == "gradient_stats") == 3
    assert all(not m._forward_hooks for m in net.modules())


def test_errors_when_the_session_starts_raise():
    net = CountingNet()
    # Anything but a configuration ValueError comes as one sentence naming the probe.
    with pytest.raises(ValueError, match=r"probe 'exploding' cannot run on this model "
                       r"\(RuntimeError: boom at 0\)"):
        ProbeSession(net, [Exploding(at_step=0)], data=(X, Y))
    with pytest.raises(ValueError, match="no module named 'nope'"):
        ProbeSession(net, [GradientStatsProbe(), type("L", (Seen,), {
            "layers": lambda self, model: ["nope"]})()], data=(X, Y))
    probe = Seen()
    with pytest.raises(ValueError, match="twice"):
        ProbeSession(net, [probe, probe], data=(X, Y))
    with pytest.raises(TypeError, match="Probe instances"):
        ProbeSession(net, ["grad"], data=(X, Y))
    assert all(not m._forward_hooks for m in net.modules())


def test_close_without_final_measurements_and_no_side_effects():
    net = CountingNet()
    net.train()
    snap = snapshot_model(net)
    session = ProbeSession(net, [Seen(every(100))], data=(X, Y))
    assert_model_unchanged(net, snap)
    assert session.close(final=False) == session.records  # only step 0
    assert [r.step for r in session.records] == [0]
    assert session.closed and session.close() == session.records
    with pytest.raises(RuntimeError, match="closed"):
        session.step()
    with pytest.raises(RuntimeError, match="closed"):
        session.epoch()


def test_step_fast_path_records_the_same_losses_as_the_general_path():
    # step(0-d tensor) skips _scalar; the values equal those of a 1-element tensor's path
    w = torch.tensor([0.3, -1.7], requires_grad=True)
    losses = [(w * k).sum() for k in (1.0, 2.5, -3.0)]
    fast, general = ProbeSession(nn.Linear(2, 1), []), ProbeSession(nn.Linear(2, 1), [])
    for v in losses:
        fast.step(v)
        general.step(v.reshape(1))
    assert fast._pending[0][3].requires_grad is False  # detached: no graph kept
    assert [r.value for r in fast.close()] == [r.value for r in general.close()]
    with pytest.raises(RuntimeError, match="closed"):
        fast.step(losses[0])


def test_pending_scalars_of_mixed_dtypes_become_floats_in_order():
    from learnscope.probes.session import _to_floats

    values = [torch.tensor(1.5), 2.0, torch.tensor(0.25, dtype=torch.bfloat16),
              torch.tensor(1e-300, dtype=torch.float64), torch.tensor(3.0).reshape(())]
    assert _to_floats(values) == [1.5, 2.0, 0.25, 1e-300, 3.0]
    # CPU tensors are read one by one: the same floats as the stacked float64 conversion
    g = torch.Generator().manual_seed(0)
    mixed = [torch.randn((), generator=g, dtype=dt) for dt in
             (torch.float32, torch.float64, torch.bfloat16, torch.float16) for _ in range(5)]
    mixed += [torch.tensor(2**53 + 1), torch.tensor(True), 0.5]
    expected = [float(torch.stack([v]).to(torch.float64).tolist()[0])
                if isinstance(v, torch.Tensor) else v for v in mixed]
    assert _to_floats(mixed) == expected


@pytest.mark.parametrize("schedule", [every(1), every(7), log_spaced(1), log_spaced(2),
                                      log_spaced(4), log_spaced(10), at_steps(0, 3, 100, 5000),
                                      at_end(), per_epoch(2)])
def test_next_due_step_is_the_first_due_step_after(schedule):
    """Brute force: the session asks the schedules only at their next due step."""
    last = 20_000
    due = [s for s in range(last + 1) if schedule.due_step(s)]
    for step in list(range(0, 1200)) + list(range(1200, last - 100, 331)):
        expected = next((d for d in due if d > step), None)
        got = schedule.next_due_step(step)
        assert (got if got is None or got <= last else None) == expected, step


def test_probes_run_at_exactly_their_due_steps_with_the_skip_ahead():
    """A session that skips the steps where nothing is due still measures at every due step
    of each probe (mixed schedules)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    probes = [GradientStatsProbe(schedule=every(7)), GradientStatsProbe(schedule=log_spaced(3)),
              GradientStatsProbe(schedule=at_steps(5, 50))]
    session = ProbeSession(model, probes)
    for _ in range(120):
        model(torch.randn(2, 4)).sum().backward()
        session.step()
    recs = session.close(final=False)
    for label, p in zip(session.labels, probes, strict=True):
        got = sorted({r.step for r in recs if r.probe == label and r.key == "grad_norm"})
        assert got == [s for s in range(1, 121) if p.schedule.due_step(s)], label
