"""Probes: learnscope's measurements attached to anyone's PyTorch training.

Each probe is a scheduled shell around a pure function of ``learnscope.measures``; a
:class:`Scope` runs them during training and stores their records.
"""

from learnscope.probes.base import Probe, ProbeContext, default_layers
from learnscope.probes.defaults import default_probes
from learnscope.probes.schedule import Schedule, at_end, at_steps, every, log_spaced, per_epoch
from learnscope.probes.scope import Scope
from learnscope.probes.spectra import WeightSpectrumProbe
from learnscope.probes.tensorboard import TensorBoardExporter

__all__ = ["Probe", "ProbeContext", "Schedule", "Scope", "TensorBoardExporter",
           "WeightSpectrumProbe", "at_end", "at_steps", "default_layers", "default_probes", "every",
           "log_spaced", "per_epoch"]
