"""Linear-regions probe: distinct ReLU activation patterns met by the scope's inputs."""

from __future__ import annotations

from torch import nn

from learnscope.measures.linear_regions import count_linear_regions
from learnscope.probes.base import Probe, ProbeContext
from learnscope.probes.checks import check_schedule
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.store.records import Record

__all__ = ["LinearRegionsProbe"]


class LinearRegionsProbe(Probe):
    """Number of distinct on/off patterns of all ReLU units over the scope's inputs: each
    pattern is one linear region of the piecewise-linear network, so this counts the regions
    the data lands in (a lower bound on the regions in its span). ``regions_per_example`` =
    count / n is 1 when every input sits in its own region.

    Keys: ``linear_regions``, ``regions_per_example``.

    Cost: forward (its own hooked pass over the scope's inputs, in eval mode under no grad;
    the measure removes its hooks and restores the train flags).
    Sources: Montufar et al. 2014; Raghu et al. 2017; Hanin & Rolnick 2019.

    Args:
        schedule: when to measure.
        module_types: the activation modules whose outputs define the pattern (output > 0).
    """

    name = "linear_regions"
    cost = "forward"
    source = "Montufar et al. 2014; Hanin & Rolnick 2019"
    needs_activations = False
    needs_outputs = False

    def __init__(self, *, schedule: Schedule | None = None,
                 module_types: tuple[type[nn.Module], ...] = (nn.ReLU,)) -> None:
        self.schedule = check_schedule(schedule, log_spaced(3))
        types = tuple(module_types) if isinstance(module_types, tuple | list) else ()
        if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise ValueError(f"module_types must be a non-empty tuple of nn.Module classes, got "
                             f"{module_types!r}")
        self.module_types = types

    def params(self) -> dict[str, object]:
        out = super().params()
        out["module_types"] = [t.__name__ for t in self.module_types]
        return out

    def setup(self, model: nn.Module) -> None:
        if not any(isinstance(m, self.module_types) for m in model.modules()):
            names = ", ".join(t.__name__ for t in self.module_types)
            raise ValueError(f"LinearRegionsProbe: the model has no {names} modules")

    def measure(self, ctx: ProbeContext) -> list[Record]:
        inputs = ctx.input_batch("LinearRegionsProbe")
        count = count_linear_regions(ctx.model, inputs, module_types=self.module_types)
        n = int(inputs.shape[0])
        meta = {"module_types": [t.__name__ for t in self.module_types], "n": n}
        return [Record("linear_regions", float(count), meta=meta),
                Record("regions_per_example", count / n, meta=meta)]
