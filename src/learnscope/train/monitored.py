"""Measure each model of a stack while it trains.

A stack (:func:`learnscope.train.stacked.make_stack`) keeps K models in shared tensors; a probe
session (e.g. :class:`learnscope.probes.session.ProbeSession`) measures one ordinary
``nn.Module``. Here each model k gets a *twin* module and a session over it; model k's weights are
copied into its twin only at the steps where one of its probes is due, so measuring costs
nothing in between. The records are the ones a session (or a ``Scope``) would write for model k
trained alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from torch import nn

from learnscope.store.records import Record
from learnscope.train.stacked import ModelStack

__all__ = ["Monitor", "train_monitored"]


class Monitor(Protocol):
    """What a probe session offers a training loop."""

    model: nn.Module

    def due_at_step(self, step: int) -> bool: ...
    def due_at_epoch(self, epoch: int) -> bool: ...
    def step(self, loss: Any = None, **scalars: float) -> None: ...
    def epoch(self) -> None: ...
    def close(self) -> list[Record]: ...


def train_monitored(stack: ModelStack, monitors: Sequence[Monitor | None], *,
                    steps: int | None = None, epochs: int | None = None,
                    eval_every: int | None = None) -> list[list[Record]]:
    """Train ``stack`` (as :meth:`ModelStack.train` does) while ``monitors[k]`` (or None)
    follows every step and epoch of model k. Returns each monitor's records after closing it
    (its final measurements are of the final weights)."""
    if len(monitors) != stack.K:
        raise ValueError(f"{len(monitors)} monitors for a stack of {stack.K} models")
    live = [(k, m) for k, m in enumerate(monitors) if m is not None]
    spe = stack.steps_per_epoch

    def on_step(step: int, st: ModelStack) -> None:
        epoch_end = spe is not None and step % spe == 0
        for k, m in live:
            if m.due_at_step(step) or (epoch_end and m.due_at_epoch(step // spe)):
                st.load_into(k, m.model)
            m.step()

    def on_epoch(epoch: int, st: ModelStack) -> None:
        for _, m in live:
            m.epoch()

    stack.train(steps=steps, epochs=epochs, eval_every=eval_every, on_step=on_step,
                on_epoch=on_epoch)
    for k, m in live:
        stack.load_into(k, m.model)
    return [m.close() if m is not None else [] for m in monitors]
