"""Activation patterns and linear-region counts of ReLU networks.

A ReLU network is piecewise linear; inputs that share one on/off pattern of all
ReLU units lie in one linear region (a convex polytope). Counting the distinct
patterns met by a set of inputs (e.g. a dense grid or a line through data)
lower-bounds the regions that set touches. Sources: Montufar et al. 2014 ("On the
number of linear regions of deep neural networks"); Raghu et al. 2017; Hanin &
Rolnick 2019 ("Complexity of linear regions in deep networks").

Patterns are read with forward hooks on ``nn.ReLU`` modules (functional
``F.relu`` calls are not seen). The hooks live only inside a context manager and
are removed even when the forward pass raises. The forward pass runs under
``torch.no_grad`` in eval mode; every module's ``training`` flag is restored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from learnscope.measures._readonly import check_batch, eval_mode, forward_hooks

__all__ = ["activation_patterns", "count_linear_regions"]


def _pattern_recorder(records: list[torch.Tensor]) -> Callable[[str, Any], None]:
    """A forward-hook callback appending each activation's on/off pattern to ``records``."""
    def on_output(_name: str, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"activation module returned {type(out).__name__}, not a tensor")
        records.append((out.detach() > 0).reshape(out.shape[0], -1))
    return on_output


def activation_patterns(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    module_types: tuple[type[nn.Module], ...] = (nn.ReLU,),
) -> torch.Tensor:
    """On/off pattern (output > 0) of every ReLU unit for each input: bool ``(n, units)``.

    Units are concatenated in call order (a module called twice contributes
    twice). ValueError if the model has no ``module_types`` module or none fired.
    Sources: Montufar et al. 2014; Hanin & Rolnick 2019.

    >>> net = nn.Sequential(nn.Linear(1, 2), nn.ReLU())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1.0], [-1.0]])), net[0].bias.zero_()
    >>> activation_patterns(net, torch.tensor([[-1.0], [2.0]])).tolist()
    [[False, True], [True, False]]
    """
    inputs = check_batch(inputs, "inputs")
    if not any(isinstance(m, module_types) for m in model.modules()):
        names = ", ".join(t.__name__ for t in module_types)
        raise ValueError(f"the model has no {names} modules to read activation patterns from")
    records: list[torch.Tensor] = []
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, module_types)]
    with eval_mode(model), torch.no_grad(), forward_hooks(modules, _pattern_recorder(records)):
        model(inputs)
    if not records:
        raise ValueError("no activation module was called during the forward pass")
    n = inputs.shape[0]
    for r in records:
        if r.shape[0] != n:
            raise ValueError(
                f"an activation has batch size {r.shape[0]}, expected {n} (one row per input)"
            )
    return torch.cat(records, dim=1).cpu()


def count_linear_regions(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    module_types: tuple[type[nn.Module], ...] = (nn.ReLU,),
) -> int:
    """Number of distinct activation patterns (= linear regions) met by ``inputs``.

    Each full pattern fixes a convex region, so this counts the regions the inputs
    land in (a lower bound on the regions in their span). Sources: Montufar et al.
    2014; Hanin & Rolnick 2019.

    >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
    >>> count_linear_regions(net, torch.linspace(-10, 10, 101)[:, None]) <= 2
    True
    """
    patterns = activation_patterns(model, inputs, module_types=module_types)
    return int(torch.unique(patterns, dim=0).shape[0])
