"""Reading a model without changing it: eval mode that restores every flag, forward hooks that
are always removed, the model's device, and the check of an input batch.

One implementation shared by the measures and the probes (both promise never to change the
user's model, so the ways they touch it live in one place).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside the block; each module's own ``training`` flag is
    restored after, also when the block raises.

    The flags are set directly (no call of an overridden ``train()``), so nothing but the
    flags changes.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in flags:
            m.training = False
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def find_modules(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for each name; ValueError naming the first unknown one."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"model has no module named {missing[0]!r}; "
                         f"known: {', '.join(n for n in modules if n)}")
    return [(n, modules[n]) for n in names]


@contextlib.contextmanager
def forward_hooks(modules: Iterable[tuple[str, nn.Module]],
                  on_output: Callable[[str, Any], None]) -> Iterator[None]:
    """Inside the block, ``on_output(name, output)`` runs after every forward call of each
    module. The hooks are registered on entry and always removed on exit, also when the
    block (or a hook) raises."""
    handles = []

    def hook_for(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            on_output(name, output)
        return hook

    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(hook_for(name)))
        yield
    finally:
        for h in handles:
            h.remove()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (else first buffer; else the CPU)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def on_model_device(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` detached and moved to the model's device (no copy when it is there already)."""
    return x.detach().to(model_device(model))


def check_batch(x: Any, name: str) -> torch.Tensor:
    """``x`` detached; ValueError unless it is a tensor with a non-empty leading batch axis."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (n, ...), got shape {tuple(x.shape)}")
    return x.detach()


OutputSelector = str | int | Callable[[Any], Any] | None
"""Which part of a model's output the probes measure: ``None`` (the model returns a tensor),
a key of a dict output (or attribute of an output object), an index into a tuple output, or a
function of the output."""


def describe_output(out: Any) -> str:
    """A short description of a model output that is not a tensor (for error messages)."""
    if isinstance(out, dict):
        keys = ", ".join(repr(k) for k in list(out)[:6])
        return f"a dict (keys {keys})"
    if isinstance(out, tuple | list):
        kinds = ", ".join(type(v).__name__ for v in out[:6])
        return f"a {type(out).__name__} of {len(out)} ({kinds})"
    return f"a {type(out).__name__}"


def select_output(out: Any, selector: OutputSelector) -> torch.Tensor:
    """The tensor the probes measure from a model's output ``out``; ValueError (one sentence,
    naming the output type and how to choose) when it is not a tensor."""
    if selector is not None:
        try:
            if callable(selector):
                out = selector(out)
            elif isinstance(selector, str) and not isinstance(out, dict):
                out = getattr(out, selector)
            else:
                out = out[selector]
        except (KeyError, IndexError, AttributeError, TypeError) as e:
            raise ValueError(f"output={selector!r} does not select from the model's output, "
                             f"which is {describe_output(out)} ({type(e).__name__}: {e})") \
                from None
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returns {describe_output(out)}, not a tensor: pass "
                         "output= (a key, an index or a function) to the Scope to choose the "
                         "tensor the probes measure")
    return out


class SelectedOutput(nn.Module):
    """``model`` seen through an output selector, for measures that call a module
    functionally (``torch.func``): its forward returns ``select_output(model(...))``. It holds
    the user's model as its only child and changes nothing in it."""

    def __init__(self, model: nn.Module, selector: OutputSelector) -> None:
        super().__init__()
        self.model = model
        self.selector = selector

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return select_output(self.model(*args, **kwargs), self.selector)


def with_output(model: nn.Module, selector: OutputSelector) -> nn.Module:
    """``model`` itself when there is no selector, else a :class:`SelectedOutput` over it."""
    return model if selector is None else SelectedOutput(model, selector)


def uncompiled(model: nn.Module) -> nn.Module:
    """The eager module behind a ``torch.compile``-d one (same parameters and buffers), else
    ``model``. Probes read the eager module: calling the compiled one with hooks, in eval
    mode or through ``torch.func`` would make dynamo compile new graphs, which can change the
    numerics of the user's later compiled training."""
    while type(model).__name__ == "OptimizedModule" and \
            isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
    return model
