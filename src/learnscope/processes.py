"""Spawned worker processes: one torch/BLAS thread each, ending with the process that started them.

Used by every part of learnscope that spreads work over cores (trial groups, whole studies of a
tour, buckets of :func:`~learnscope.train.batched.train_models`). Processes, not threads: two
Python threads that each run a stream of small torch operations take turns on the GIL between
operations and ran ~1.5x slower each than two processes (measured on batched MLP training).
Spawned, not forked: forking a process that has started torch's thread pools can deadlock.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def init_worker() -> None:
    """One BLAS/torch thread per worker: parallelism comes from processes, not threads."""
    import scipy.linalg  # noqa: F401  (loaded first, so the limit covers its BLAS)
    import torch
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    torch.set_num_threads(1)
    threadpool_limits(1)


def init_pool_worker(driver_pid: int) -> None:
    """Initializer of a local pool's worker: it dies with its driver, then the usual setup."""
    die_with_parent(driver_pid)
    init_worker()


def die_with_parent(parent_pid: int, poll_s: float = 0.5, use_prctl: bool = True) -> str:
    """Make this process end when ``parent_pid`` (its parent) ends, even by SIGKILL.

    A SIGKILLed driver runs no cleanup, and an idle pool worker blocks forever on its task
    queue (it holds both ends of the pipe itself), so without this workers outlive the driver.
    On Linux the kernel sends SIGKILL on the parent's death (``PR_SET_PDEATHSIG``); elsewhere a
    daemon thread polls ``os.getppid()``. Returns the mechanism used (``"prctl"``/``"poll"``).
    """
    mechanism = "poll"
    if use_prctl and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                mechanism = "prctl"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os.kill(os.getpid(), signal.SIGKILL)
    if mechanism == "poll":
        threading.Thread(target=_watch_parent, args=(parent_pid, poll_s), daemon=True,
                         name="learnscope-parent-watch").start()
    return mechanism


def _watch_parent(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now, also those in the middle of a task (e.g. after Ctrl-C)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=5)
