"""learnscope's probes inside a PyTorch Lightning ``Trainer`` (``pip install
'learnscope[lightning]'``)::

    from learnscope.integrations import LearnscopeCallback

    trainer = lightning.Trainer(max_epochs=5, callbacks=[
        LearnscopeCallback(data=(x_probe, y_probe), out="runs", name="my-model")])
    trainer.fit(module, loader)

The callback is a :class:`learnscope.Scope` driven by the trainer's hooks: it opens the scope
over the ``LightningModule`` when training starts, steps it once per optimizer step (so with
gradient accumulation once per accumulated step, not per batch), per epoch at epoch end, and
closes it when training ends (final probes, store, ``result.json``, ``report.html``). When
training raises or is interrupted, the run is marked ``failed`` (or ``interrupted``) with every
record measured so far kept.

learnscope never ends the user's training: if the scope cannot be opened (for instance a probe
configured for a layer the module does not have) or fails later, the callback warns, marks the
run failed where one exists, and switches itself off; the training carries on untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from learnscope.errors import LearnscopeError
from learnscope.probes.base import Probe
from learnscope.scope import Exporter, Scope

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:  # pragma: no cover - depends on the environment
    raise LearnscopeError("LearnscopeCallback needs PyTorch Lightning: "
                          "pip install 'learnscope[lightning]'") from None

__all__ = ["LearnscopeCallback"]


class LearnscopeCallback(Callback):
    """Runs learnscope probes on the ``LightningModule`` during ``Trainer.fit``.

    Args:
        probes: learnscope probes (``None``: the default set, ``default_probes()``).
        data: the ``(inputs, targets)`` batch every probe measures on (the scope moves it to
            the module's device when it runs the module).
        out: results directory (the same store as studies); ``None`` keeps the records in
            memory (``callback.scope.records``).
        name: the run's name in the store (default: the module's class name).
        exporters, report, flush_every: as for :class:`learnscope.Scope`.

    The loss handed to the probes at a step is the mean training loss of the batches that
    made up that optimizer step (Lightning divides each by ``accumulate_grad_batches`` under
    automatic optimization; the callback undoes that). With several optimizers stepping in
    one batch, the scope steps once for that batch. In distributed training only global
    rank 0 measures. After ``fit``, ``callback.scope`` is the closed scope and
    ``callback.run_dir`` its run folder.
    """

    def __init__(self, probes: Sequence[Probe] | None = None,
                 data: tuple[torch.Tensor, torch.Tensor | None] | None = None, *,
                 out: str | Path | None = "runs", name: str | None = None,
                 exporters: Sequence[Exporter] = (), report: bool = True,
                 flush_every: int = 5000) -> None:
        super().__init__()
        self.probes = None if probes is None else list(probes)
        self.data = data
        self.out = out
        self.name = name
        self.exporters = list(exporters)
        self.report = report
        self.flush_every = flush_every
        self.scope: Scope | None = None
        self._active = False
        self._last_global_step = 0
        self._losses: list[torch.Tensor] = []

    @property
    def run_dir(self) -> Path | None:
        """The run folder in the store (``None`` before training or with ``out=None``)."""
        return None if self.scope is None else self.scope.run_dir

    # -- Lightning hooks -----------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scope, self._active, self._losses = None, False, []
        self._last_global_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        name = self.name or type(pl_module).__name__
        try:
            self.scope = Scope(pl_module, self.probes, self.data, out=self.out, name=name,
                               exporters=self.exporters, report=self.report,
                               flush_every=self.flush_every)
        except Exception as exc:  # never end the user's training
            _warn(f"learnscope could not start ({type(exc).__name__}: {exc}); training "
                  "continues without it")
            return
        self._active = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self._active:
            return
        loss = _loss_of(outputs)
        if loss is not None:
            if pl_module.automatic_optimization:  # Lightning divided it for accumulation
                loss = loss * trainer.accumulate_grad_batches
            self._losses.append(loss)
        if trainer.global_step == self._last_global_step:
            return  # accumulating gradients: no optimizer step in this batch
        self._last_global_step = trainer.global_step
        step_loss = torch.stack(self._losses).mean() if self._losses else None
        self._losses = []
        self._guard("step", lambda scope: scope.step(step_loss))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._guard("epoch", lambda scope: scope.epoch())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._guard("close", lambda scope: scope.close())
        self._active = False

    def on_exception(self, trainer: Trainer, pl_module: LightningModule,
                     exception: BaseException) -> None:
        if not self._active or self.scope is None:
            return
        self._active = False
        try:  # marks the run failed (interrupted on Ctrl-C) and keeps every record
            self.scope.__exit__(type(exception), exception, exception.__traceback__)
        except Exception as exc:
            _warn(f"learnscope could not store the failed run ({type(exc).__name__}: {exc})")

    # -- internals -----------------------------------------------------------------------
    def _guard(self, phase: str, call: Any) -> None:
        """Run a scope call; on an error, warn, mark the run failed and switch off."""
        if not self._active or self.scope is None:
            return
        try:
            call(self.scope)
        except Exception as exc:
            self._active = False
            _warn(f"learnscope failed at {phase} ({type(exc).__name__}: {exc}); it is "
                  "switched off and training continues")
            try:
                self.scope.__exit__(type(exc), exc, exc.__traceback__)
            except Exception:  # the warning above already says what went wrong
                pass


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The loss from a ``training_step`` output (a tensor, or a mapping with ``loss``)."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
        return outputs.detach().float().reshape(())
    if isinstance(outputs, float | int):
        return torch.tensor(float(outputs))
    return None


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
