"""Executors run a list of trials and hand back their outputs; only the driver writes the store."""

from learnscope.exec.inprocess import InProcessExecutor

__all__ = ["InProcessExecutor"]
