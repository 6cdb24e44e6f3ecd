"""Run store: runs, trials and tidy records in SQLite."""

from learnscope.store.records import Record, TrialResult
from learnscope.store.sqlite import RunClaim, RunInfo, RunStore

__all__ = ["Record", "RunClaim", "RunInfo", "RunStore", "TrialResult"]
