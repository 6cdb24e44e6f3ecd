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
