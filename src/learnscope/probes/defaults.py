"""The default probe set: cheap enough for every training run (overhead measured in
``benchmarks/probe_overhead.py``)."""

from __future__ import annotations

from learnscope.probes.base import Probe


def default_probes() -> list[Probe]:
    """Gradient and update norms every 10 steps; weight spectra (2 per decade) and each
    layer's CKA to its own final state (3 per decade) at log-spaced steps."""
    from learnscope.probes.gradients import GradientStatsProbe
    from learnscope.probes.schedule import every, log_spaced
    from learnscope.probes.similarity import LayerSimilarityProbe
    from learnscope.probes.spectra import WeightSpectrumProbe

    return [GradientStatsProbe(schedule=every(10)), WeightSpectrumProbe(schedule=log_spaced(2)),
            LayerSimilarityProbe(schedule=log_spaced(3), pairs=False)]
