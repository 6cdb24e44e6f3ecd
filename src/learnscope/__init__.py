"""learnscope: a laboratory for how deep neural networks learn.

Run a study (a phenomenon of learning dynamics, reproduced and checked)::

    from learnscope import run_study
    outcome = run_study("double-descent", quick=True, out="runs")
    print(outcome.result["verdict"])

Instrument your own training loop with probes::

    from learnscope import Scope

Names are imported on first use (``import learnscope`` does not import torch), so that the
command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from learnscope.errors import ConfigError, LearnscopeError, StoreError

if TYPE_CHECKING:
    from learnscope.runner import RunOutcome, rebuild_report, run_study
    from learnscope.scope import Scope
    from learnscope.store import Record, RunStore
    from learnscope.store.frames import load
    from learnscope.studies import get_study, study_names

__version__ = "0.1.0"

_LAZY = {
    "Record": "learnscope.store.records",
    "RunOutcome": "learnscope.runner",
    "RunStore": "learnscope.store",
    "Scope": "learnscope.scope",
    "get_study": "learnscope.studies",
    "load": "learnscope.store.frames",
    "rebuild_report": "learnscope.runner",
    "run_study": "learnscope.runner",
    "study_names": "learnscope.studies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'learnscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["ConfigError", "LearnscopeError", "Record", "RunOutcome", "RunStore", "Scope",
           "StoreError", "__version__", "get_study", "load", "rebuild_report", "run_study",
           "study_names"]
