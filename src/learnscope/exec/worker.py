"""What a worker process (local pool or Ray) runs: one group of trials of a study."""

from __future__ import annotations

import time
from typing import Any

from learnscope.studies.base import TrialOutput


def init_worker() -> None:
    """One BLAS/torch thread per worker: parallelism comes from processes, not threads."""
    import signal

    import torch
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    torch.set_num_threads(1)
    threadpool_limits(1)


def run_group(study_name: str, config: dict[str, Any], specs: list[dict[str, Any]]
              ) -> tuple[list[TrialOutput], float]:
    """Run a group of trials (one, or several the study trains together) and time it."""
    from learnscope.config import build_config
    from learnscope.studies import get_study

    study = get_study(study_name)
    cfg = build_config(study.Config, config)
    t0 = time.perf_counter()
    outputs = study.run_group(cfg, specs)
    return outputs, time.perf_counter() - t0
