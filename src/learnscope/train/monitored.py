"""Measure each model of a stack while it trains.

A stacked trainer keeps K models in shared tensors; a probe session (e.g.
:class:`learnscope.probes.session.ProbeSession`) measures one ordinary ``nn.Module``. Here each
model k gets a *twin* module and a session over it; model k's weights are copied into its twin
only at the steps where one of its probes is due, so measuring costs nothing in between. The
records are the ones a session (or a ``Scope``) would write for model k trained alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from torch import nn

from learnscope.store.records import Record

__all__ = ["Monitor", "train_monitored"]


class Monitor(Protocol):
    """What a probe session offers a training loop."""

    model: nn.Module

    def due_at_step(self, step: int) -> bool: ...
    def due_at_epoch(self, epoch: int) -> bool: ...
    def step(self, loss: Any = None, **scalars: float) -> None: ...
    def epoch(self) -> None: ...
    def close(self) -> list[Record]: ...


def train_monitored(trainer: Any, monitors: Sequence[Monitor | None], n_steps: int, *,
                    steps_per_epoch: int, load: Callable[[int, nn.Module], None]
                    ) -> list[list[Record]]:
    """Take ``n_steps`` optimizer steps with ``trainer`` (anything with ``steps(n)``), keeping
    ``monitors[k]`` (or None) informed of every step and epoch of model k; ``load(k, module)``
    copies model k's current weights into ``module`` (its monitor's ``model``). Returns each
    monitor's records after closing it (its final measurements are of the final weights)."""
    step = 0
    live = [(k, m) for k, m in enumerate(monitors) if m is not None]
    while step < n_steps:
        trainer.steps(1)
        step += 1
        epoch_end = step % steps_per_epoch == 0
        for k, m in live:
            if m.due_at_step(step) or (epoch_end and m.due_at_epoch(step // steps_per_epoch)):
                load(k, m.model)
            m.step()
            if epoch_end:
                m.epoch()
    for k, m in live:
        load(k, m.model)
    return [m.close() if m is not None else [] for m in monitors]
