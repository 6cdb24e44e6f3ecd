"""Probes: learnscope's measurements attached to anyone's PyTorch training.

Each probe is a scheduled shell around a pure function of ``learnscope.measures``. A
:class:`~learnscope.probes.session.ProbeSession` runs them during training, in memory;
:class:`learnscope.Scope` adds the run store and the report.

Every public name of the modules of this package (their ``__all__``: each probe class,
``default_probes``, the schedules, ``TensorBoardExporter``, ...) is importable from here::

    from learnscope.probes import CurvatureProbe, every

and is imported on first use.
"""

from learnscope._exports import lazy_namespace

__getattr__, __dir__ = lazy_namespace(__name__, __path__, globals())
