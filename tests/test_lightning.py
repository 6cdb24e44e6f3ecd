"""LearnscopeCallback in a real lightning.Trainer: the run is stored, training is bit-identical
to training without it, it steps once per optimizer step, and it never ends the training."""

import json
import warnings

import pytest
import torch
from torch import nn

from learnscope.probes import GradientStatsProbe, LayerSimilarityProbe, Probe, every
from learnscope.probes.base import ProbeContext
from learnscope.seeding import torch_generator
from learnscope.store import Record, RunStore
from learnscope.testing import assert_same_model

L = pytest.importorskip("lightning")

from learnscope.integrations import LearnscopeCallback  # noqa: E402

N_TRAIN, BATCH = 96, 16  # 6 batches per epoch


class TinyModule(L.LightningModule):
    """An MLP with dropout (so any use of the global RNG by the callback would show)."""

    def __init__(self, fail_at_batch: int | None = None) -> None:
        super().__init__()
        gen = torch_generator(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.fail_at_batch = fail_at_batch
        self.batch_losses: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.fail_at_batch is not None and len(self.batch_losses) == self.fail_at_batch:
            raise RuntimeError("boom")
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.batch_losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class LossSeen(Probe):
    """Records the loss the scope received at every step."""

    name = "loss_seen"

    def __init__(self) -> None:
        self.schedule = every(1)

    def measure(self, ctx: ProbeContext) -> list[Record]:
        return [] if ctx.loss is None else [Record("loss", ctx.loss)]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch_generator(1)
    return torch.randn(N_TRAIN, 8, generator=gen), torch.randint(0, 3, (N_TRAIN,), generator=gen)


def _fit(callbacks, *, accumulate: int = 1, epochs: int = 2, fail_at_batch=None):
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    torch.manual_seed(0)  # dropout masks: the same stream with and without the callback
    module = TinyModule(fail_at_batch)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=callbacks, accumulate_grad_batches=accumulate)
    trainer.fit(module, loader)
    return module, trainer


def test_callback_stores_the_run_and_leaves_training_bit_identical(tmp_path):
    x, y = _data()
    plain, _ = _fit([])
    callback = LearnscopeCallback(data=(x[:32], y[:32]), out=tmp_path, name="tiny")
    probed, trainer = _fit([callback])
    assert_same_model(plain, probed)
    assert callback.scope is not None
    assert callback.scope.step_count == trainer.global_step == 2 * N_TRAIN // BATCH
    assert callback.scope.epoch_count == 2
    run_dir = callback.run_dir
    assert run_dir is not None and (run_dir / "report.html").stat().st_size > 10_000
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "finished" and result["steps"] == 12 and result["epochs"] == 2
    with RunStore(tmp_path) as store:
        run = store.run_for_dir(run_dir)
        assert run is not None and run.status == "finished" and run.study == "tiny"
        records = store.load_records(run.run_id)
    assert len(records) == len(callback.scope.records) > 0
    assert {r.probe for r in records} >= {"gradient_stats", "weight_spectrum"}


@pytest.mark.parametrize("accumulate", [1, 4])
def test_steps_once_per_optimizer_step_with_the_mean_loss_of_its_batches(accumulate):
    callback = LearnscopeCallback([LossSeen()], out=None)
    module, trainer = _fit([callback], accumulate=accumulate)
    seen = [r.value for r in callback.scope.records if r.probe == "loss_seen"]
    # Lightning steps after every `accumulate` batches and at the end of each epoch.
    per_epoch = len(module.batch_losses) // 2
    windows = []
    for epoch in range(2):
        losses = module.batch_losses[epoch * per_epoch:(epoch + 1) * per_epoch]
        windows += [losses[i:i + accumulate] for i in range(0, per_epoch, accumulate)]
    assert callback.scope.step_count == trainer.global_step == len(windows)
    # every(1) measures after each step; the final measurement repeats the last step's loss
    assert seen[:len(windows)] == pytest.approx([sum(w) / len(w) for w in windows], rel=1e-6)


def test_an_exception_in_training_marks_the_run_failed_and_keeps_records(tmp_path):
    x, y = _data()
    callback = LearnscopeCallback([GradientStatsProbe(schedule=every(1))], data=(x, y),
                                  out=tmp_path, name="fails")
    with pytest.raises(RuntimeError, match="boom"):
        _fit([callback], fail_at_batch=4)
    with RunStore(tmp_path) as store:
        run = store.run_for_dir(callback.run_dir)
        assert run is not None and run.status == "failed"
        steps = {r.step for r in store.load_records(run.run_id)}
    assert steps >= {1, 2, 3, 4}
    assert json.loads((callback.run_dir / "result.json").read_text())["status"] == "failed"


class _BrokenExporter:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, records) -> None:
        self.calls += 1
        if self.calls == 3:
            raise OSError("disk full")

    def close(self) -> None:
        pass


def test_learnscope_failing_never_ends_the_training(tmp_path):
    x, y = _data()
    plain, plain_trainer = _fit([])
    # A configuration mistake when the scope opens: a warning, then plain training.
    bad_layer = LearnscopeCallback([LayerSimilarityProbe(["no_such_layer"])],
                                   data=(x, y), out=tmp_path)
    with pytest.warns(RuntimeWarning, match="could not start"):
        module, trainer = _fit([bad_layer])
    assert bad_layer.scope is None and trainer.global_step == plain_trainer.global_step
    assert_same_model(plain, module)
    # A failure during training: a warning, the run marked failed, training goes on.
    broken = LearnscopeCallback([GradientStatsProbe(schedule=every(1))], data=(x, y),
                                out=tmp_path, name="broken", exporters=[_BrokenExporter()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module, trainer = _fit([broken])
    assert any("learnscope failed at step" in str(w.message) for w in caught)
    assert trainer.global_step == plain_trainer.global_step
    assert_same_model(plain, module)
    with RunStore(tmp_path) as store:
        assert store.run_for_dir(broken.run_dir).status == "failed"
