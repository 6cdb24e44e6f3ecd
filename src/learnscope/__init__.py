"""learnscope: a laboratory for how deep neural networks learn.

Run a study (a phenomenon of learning dynamics, reproduced and checked)::

    from learnscope import run_study
    outcome = run_study("double-descent", quick=True, out="runs")
    print(outcome.result["verdict"])
"""

from learnscope.errors import ConfigError, LearnscopeError, StoreError
from learnscope.runner import RunOutcome, rebuild_report, run_study
from learnscope.store import Record, RunStore
from learnscope.studies import get_study, study_names

__version__ = "0.1.0"

__all__ = ["ConfigError", "LearnscopeError", "Record", "RunOutcome", "RunStore", "StoreError",
           "__version__", "get_study", "rebuild_report", "run_study", "study_names"]
