"""What a worker process (local pool or Ray) runs: one group of trials of a study."""

from __future__ import annotations

import time
from typing import Any

from learnscope.processes import die_with_parent, init_pool_worker, init_worker
from learnscope.studies.base import TrialOutput

__all__ = ["die_with_parent", "init_pool_worker", "init_worker", "run_group"]


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
