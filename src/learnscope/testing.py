"""Test helpers: check that code left a PyTorch model exactly as it found it.

Useful when writing a probe or a measure (learnscope's own tests use it)::

    snap = snapshot_model(model)
    my_measure(model, x)
    assert_model_unchanged(model, snap)

and that probes did not change training: ``assert_same_model(plain_run, probed_run)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def snapshot_model(model: nn.Module) -> dict[str, Any]:
    """Everything code could change on a model without saying so: parameter and buffer values
    (and their storage), train/eval flags, ``requires_grad``, ``.grad``, registered hooks and
    BatchNorm momenta."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ptrs": {k: v.data_ptr() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {n: None if p.grad is None else p.grad.detach().clone()
                 for n, p in model.named_parameters()},
        "hooks": {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                      len(m._backward_pre_hooks), len(m._state_dict_hooks),
                      len(m._load_state_dict_pre_hooks))
                  for n, m in model.named_modules()},
        "param_hooks": {n: getattr(p, "_backward_hooks", None)
                        for n, p in model.named_parameters()},
        "momentum": {n: getattr(m, "momentum", None) for n, m in model.named_modules()},
    }


def assert_model_unchanged(model: nn.Module, snap: dict[str, Any]) -> None:
    """AssertionError naming the first thing that differs from ``snap``."""
    _assert_same_snapshot(snap, snapshot_model(model), storage=True)


def assert_same_model(expected: nn.Module, actual: nn.Module) -> None:
    """AssertionError naming the first thing in which two models differ: the check that a run
    with probes attached trained exactly like the same run without (values bit for bit,
    gradients, flags, hooks left behind; not where the tensors are stored)."""
    _assert_same_snapshot(snapshot_model(expected), snapshot_model(actual), storage=False)


def _assert_same_snapshot(snap: dict[str, Any], now: dict[str, Any], storage: bool) -> None:
    assert now["state"].keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert now["state"][k].dtype == v.dtype and now["state"][k].device == v.device, k
        assert torch.equal(now["state"][k], v), k
    flags = ("ptrs", "training", "requires_grad") if storage else ("training", "requires_grad")
    for key in flags:
        assert now[key] == snap[key], key
    for k, g in snap["grad"].items():
        if g is None:
            assert now["grad"][k] is None, k
        else:
            assert now["grad"][k] is not None and torch.equal(now["grad"][k], g), k
    for key in ("hooks", "param_hooks", "momentum"):
        assert now[key] == snap[key], key
