"""The default probe set: cheap enough for every training run (overhead measured in
``benchmarks/probe_overhead.py``)."""

from __future__ import annotations

from learnscope.probes.base import Probe

__all__ = ["default_probes"]


def default_probes() -> list[Probe]:
    """Gradient and update norms every 50 steps; weight spectra and each layer's CKA to its own
    final state at log-spaced steps (2 per decade): about 1.1x the wall time of plain training
    on a short run (1.09-1.17x measured on the MNIST-1D MLP of ``benchmarks/probe_overhead.py``,
    4000 steps, 4.3-4.6 s: 80 gradient measurements, 10 spectra, 10 CKA checkpoints; 1.12-1.15x
    with a fresh process and the report written at the end) and 1.04x on a run ten times longer
    (40000 steps: the spectra and CKA checkpoints grow with the logarithm of the length)."""
    from learnscope.probes.gradients import GradientStatsProbe
    from learnscope.probes.schedule import every, log_spaced
    from learnscope.probes.similarity import LayerSimilarityProbe
    from learnscope.probes.spectra import WeightSpectrumProbe

    return [GradientStatsProbe(schedule=every(50)), WeightSpectrumProbe(schedule=log_spaced(2)),
            LayerSimilarityProbe(schedule=log_spaced(2), pairs=False)]
