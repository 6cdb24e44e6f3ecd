"""A local process pool: one trial group per worker at a time, workers pinned to one thread."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from learnscope.config import config_to_dict
from learnscope.errors import LearnscopeError
from learnscope.exec.worker import init_pool_worker, run_group
from learnscope.processes import stop_pool
from learnscope.studies.base import Study, TrialOutput


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ProcessExecutor:
    """Runs trial groups in ``workers`` spawned processes (default: one per core).

    Results come back to the driver, which alone writes the store. Spawned (not forked)
    workers: forking a process that has started torch's thread pools can deadlock. A spawned
    worker's parent is the driver, so workers end with it even when it is SIGKILLed.
    """

    name = "process"

    def __init__(self, workers: int | None = None) -> None:
        cores = available_cores()
        self.workers = cores if workers is None else int(workers)
        if self.workers < 1:
            raise LearnscopeError(f"--workers must be at least 1, got {self.workers}")
        if self.workers > cores:
            raise LearnscopeError(f"--workers {self.workers} is more than this machine's "
                                  f"{cores} cores")
        self._pool: ProcessPoolExecutor | None = None

    def map(self, study: Study, cfg: Any, groups: list[list[dict[str, Any]]]
            ) -> Iterator[tuple[int, list[TrialOutput], float]]:
        if not groups:
            return
        config = config_to_dict(cfg)
        self._pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(groups)),
            mp_context=multiprocessing.get_context("spawn"), initializer=init_pool_worker,
            initargs=(os.getpid(),))
        try:
            futures: dict[Future[Any], int] = {
                self._pool.submit(run_group, study.name, config, specs): i
                for i, specs in enumerate(groups)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    outputs, wall = fut.result()
                    yield futures[fut], outputs, wall
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers now (also those still running a trial, e.g. after Ctrl-C)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        stop_pool(pool)
