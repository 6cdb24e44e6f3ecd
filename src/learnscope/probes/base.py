"""The probe contract: a scheduled, configured shell around a pure measure.

A probe is configured by its constructor (the arguments *are* the configuration and are
recorded with every value), declares a :class:`~learnscope.probes.schedule.Schedule` and a cost
class, and turns the state of training into :class:`~learnscope.store.Record` objects. It never
changes the model: activations come from a capture pass that the
:class:`~learnscope.probes.session.ProbeSession` runs in eval mode under ``torch.no_grad`` with
hooks that are always removed, and the module-by-module train flags are restored afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from learnscope.measures._readonly import (
    OutputSelector,
    eval_mode,
    find_modules,
    forward_hooks,
    on_model_device,
    select_output,
    with_output,
)
from learnscope.probes.schedule import Schedule
from learnscope.store.records import Record

__all__ = ["LayerProbe", "Probe", "ProbeContext", "capture", "default_layers", "eval_mode"]

COST_CLASSES = ("cheap", "forward", "expensive")
"""cheap: O(parameters), no forward pass; forward: one forward pass over the probe data
(shared with every other due probe); expensive: extra backward passes, HVPs or Jacobians."""

_ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU,
                     nn.Softplus)
_BLOCK_TYPES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.RNNBase,
                nn.MultiheadAttention)
"""Modules whose children may never be called as modules (a transformer layer's fast path,
MultiheadAttention's ``out_proj``, a recurrent layer's gates): their own output is the
representation a layer probe reads."""


@dataclass
class ProbeContext:
    """What a probe sees when it runs."""

    model: nn.Module
    step: int
    epoch: int
    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    """Activations of the requested layers on ``inputs`` (eval mode, no grad), flattened to
    (n, features)."""
    outputs: torch.Tensor | None = None
    """The model's outputs on ``inputs`` from the same capture pass."""
    loss: float | None = None
    """The training loss the user passed to ``scope.step(loss)``, if any."""
    init_state: dict[str, torch.Tensor] = field(default_factory=dict)
    """Parameters when the scope opened (detached copies)."""
    final: bool = False
    """True in the last call, when the scope closes."""
    scalars: dict[str, float] = field(default_factory=dict)
    """The latest values of the scalars passed to ``step(loss, **scalars)`` (e.g. ``lr``)."""
    output_selector: OutputSelector = None
    """The Scope's ``output=``: which part of a dict/tuple model output probes measure."""

    def select(self, raw: Any) -> torch.Tensor:
        """The tensor probes measure from a model output (see ``output_selector``)."""
        return select_output(raw, self.output_selector)

    @property
    def output_model(self) -> nn.Module:
        """The model, returning the selected output (for ``torch.func`` measures)."""
        return with_output(self.model, self.output_selector)

    def check_data(self, who: str, *, targets: bool = False) -> None:
        """ValueError naming ``who`` when there are no probe data (or no targets)."""
        if self.inputs is None or (targets and self.targets is None):
            what = "probe data with targets" if targets else "probe data"
            raise ValueError(f"{who} needs {what}: pass data=(inputs, targets) to the Scope "
                             "(or ProbeSession)")

    def input_batch(self, who: str, n: int | None = None) -> torch.Tensor:
        """The first ``n`` (default all) probe inputs, on the model's device."""
        self.check_data(who)
        assert self.inputs is not None
        return on_model_device(self.model, self.inputs[:n])

    def labelled_batch(self, who: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` (default all) probe inputs and targets, on the model's device."""
        self.check_data(who, targets=True)
        assert self.targets is not None
        return self.input_batch(who, n), on_model_device(self.model, self.targets[:n])


class Probe:
    """Base class. Subclasses set ``name``, ``cost``, ``source`` and implement ``measure``."""

    name: ClassVar[str] = "probe"
    cost: ClassVar[str] = "cheap"
    source: ClassVar[str] = ""
    needs_activations: ClassVar[bool] = False
    needs_outputs: ClassVar[bool] = False
    schedule: Schedule

    def layers(self, model: nn.Module) -> list[str]:
        """Names of the modules whose outputs this probe needs (when needs_activations)."""
        return []

    def setup(self, model: nn.Module) -> None:
        """Called once when the scope opens, before the first measurement."""

    def uses_output(self) -> bool:
        """Whether this probe measures the model's output (the scope then checks, when it
        opens, that the output is a tensor or that ``output=`` selects one)."""
        return self.needs_outputs

    def own_inputs(self) -> torch.Tensor | None:
        """Inputs the probe feeds the model itself, other than the scope's data."""
        return None

    def measure(self, ctx: ProbeContext) -> list[Record]:
        """Measure now; return records (their step is filled in by the scope)."""
        raise NotImplementedError

    def finish(self, ctx: ProbeContext) -> list[Record]:
        """Called once when the scope closes, with the final state.

        Not overridden: the scope calls ``measure`` on the final state (unless the probe
        already measured at that step). Override it for work done only at the end, such as
        comparing every checkpoint with the final state.
        """
        return self.measure(ctx)

    def params(self) -> dict[str, Any]:
        """The constructor arguments (scikit-learn style), recorded as metadata."""
        out: dict[str, Any] = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name == "self" or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if inspect.ismethod(value):  # a method that shares the argument's name
                continue
            out[name] = _summarize(value)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class LayerProbe(Probe):
    """A probe on the outputs of chosen modules (default: the model's activation modules).

    The constructor argument ``layers`` is kept as ``layer_names`` (``layers`` is the method
    the scope calls).
    """

    needs_activations = True
    layer_names: list[str] | None = None
    _resolved: list[str]
    _kept: list[str] | None = None

    @staticmethod
    def check_layer_names(layers: Sequence[str] | None) -> list[str] | None:
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list of module names, got the string {layers!r}")
        if layers is None:
            return None
        layers = list(layers)
        if not layers or not all(isinstance(n, str) for n in layers):
            raise ValueError(f"layers must be a non-empty list of module names, got {layers}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers has duplicate names: {layers}")
        return layers

    def layers(self, model: nn.Module) -> list[str]:
        if self.layer_names is not None:
            return list(self.layer_names)
        return list(self._kept) if self._kept is not None else default_layers(model)

    def keep_layers(self, names: list[str]) -> None:
        """Measure only ``names`` of the default layers: the scope drops those that produce
        no tensor output on the probe data."""
        import warnings

        before = getattr(self, "_resolved", [])
        if not names and before:
            warnings.warn(f"{type(self).__name__}: none of the default layers "
                          f"({', '.join(before)}) produces a tensor output with the "
                          "batch first; pass layers=[...]. It will record nothing.",
                          stacklevel=4)
        self._kept = list(names)
        self._resolved = list(names)

    def resolve_layers(self, model: nn.Module) -> list[str]:
        """The layer names for ``model``; ValueError for a name the model does not have."""
        import warnings

        self._kept = None
        names = self.layers(model)
        try:
            find_modules(model, names)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None
        if not names:
            warnings.warn(f"{type(self).__name__}: the model has no hidden layers (no activation "
                          "modules); pass layers=[...]. It will record nothing.", stacklevel=3)
        return names

    def params(self) -> dict[str, Any]:
        out = super().params()
        out["layers"] = None if self.layer_names is None else list(self.layer_names)
        return out


def _summarize(value: Any) -> Any:
    """A JSON-friendly description of a constructor argument (arrays by their shape)."""
    if isinstance(value, Schedule):
        return str(value)
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"array{tuple(value.shape)}" if value.size > 32 else value.tolist()
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, list | tuple):
        return [_summarize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _summarize(v) for k, v in value.items()}
    if isinstance(value, nn.Module | torch.Generator) or callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if isinstance(value, np.generic):
        return value.item()
    return value


def default_layers(model: nn.Module) -> list[str]:
    """The outputs of the model's activation modules (ReLU, tanh, ...), in definition order;
    the Linear/Conv layers but the last when it has none. Transformer layers and recurrent
    layers count as one layer each (their inner modules are not read: some are never called
    as modules)."""
    blocks: list[str] = []

    def inside_block(name: str) -> bool:
        return any(name.startswith(b + ".") for b in blocks)

    for n, m in model.named_modules():  # pre-order: an outer block comes before its children
        if isinstance(m, _BLOCK_TYPES) and not inside_block(n):
            blocks.append(n)

    def outside(kinds: Any) -> list[str]:
        return [n for n, m in model.named_modules()
                if (isinstance(m, kinds) and not inside_block(n)) or n in blocks]

    names = outside(_ACTIVATION_TYPES)
    if len(names) == len(blocks):  # no activation module outside the blocks
        layers = outside(nn.Linear | nn.Conv1d | nn.Conv2d)
        last = [n for n in layers if n not in blocks][-1:]
        names = [n for n in layers if n not in last]
    return names


@contextlib.contextmanager
def capture(model: nn.Module, layer_names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules, flattened to ``(n, features)``, during forward
    passes inside the block (hooks always removed on exit, also when the block raises)."""
    store: dict[str, torch.Tensor] = {}

    def on_output(name: str, output: Any) -> None:
        out = output[0] if isinstance(output, tuple | list) and output else output
        if not isinstance(out, torch.Tensor) or out.ndim == 0:
            return  # not a representation: the layer counts as producing no output
        # A copy: a later in-place op (ReLU(inplace=True)) would otherwise change it.
        store[name] = out.detach().reshape(out.shape[0], -1).clone()

    with forward_hooks(find_modules(model, layer_names), on_output):
        yield store
