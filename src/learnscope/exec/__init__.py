"""Executors run a study's trial groups and hand back their outputs; only the driver (the
runner) writes the store, so every executor gives the same records."""

from __future__ import annotations

from learnscope.errors import LearnscopeError
from learnscope.exec.inprocess import InProcessExecutor
from learnscope.exec.process import ProcessExecutor, available_cores

EXECUTORS = ("local", "process", "ray")


def make_executor(name: str = "local", *, workers: int | None = None,
                  address: str | None = None) -> InProcessExecutor | ProcessExecutor | object:
    """``local`` (in this process), ``process`` (a local pool) or ``ray`` (a cluster)."""
    if name not in EXECUTORS:
        raise LearnscopeError(f"unknown executor '{name}'; choose from {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise LearnscopeError(f"--address applies to the ray executor only, not '{name}'")
    if name == "local":
        if workers not in (None, 1):
            raise LearnscopeError("--workers applies to the process and ray executors")
        return InProcessExecutor()
    if name == "process":
        return ProcessExecutor(workers)
    from learnscope.exec.ray_executor import RayExecutor

    return RayExecutor(address, workers)


__all__ = ["EXECUTORS", "InProcessExecutor", "ProcessExecutor", "available_cores",
           "make_executor"]
