"""Run store: runs, trials and tidy records in SQLite."""

from learnscope.store.records import Record, TrialResult
from learnscope.store.sqlite import RunInfo, RunStore

__all__ = ["Record", "RunInfo", "RunStore", "TrialResult"]
