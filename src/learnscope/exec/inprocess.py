"""The in-process executor: runs trials one after another in this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from learnscope.studies.base import Study, TrialOutput


class InProcessExecutor:
    """Runs each trial in the calling process, in order. Yields ``(index, output, wall_s)``."""

    name = "local"

    def map(self, study: Study, cfg: Any, specs: list[dict[str, Any]]
            ) -> Iterator[tuple[int, TrialOutput, float]]:
        for i, spec in enumerate(specs):
            t0 = time.perf_counter()
            out = study.run_trial(cfg, spec)
            yield i, out, time.perf_counter() - t0
