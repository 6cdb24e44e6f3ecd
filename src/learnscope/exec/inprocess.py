"""The in-process executor: runs groups of trials one after another in this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from learnscope.studies.base import Study, TrialOutput


class InProcessExecutor:
    """Runs each group of trials in the calling process (batched where the study groups them).

    Yields ``(group index, outputs, wall seconds)`` as each group finishes.
    """

    name = "local"

    def map(self, study: Study, cfg: Any, groups: list[list[dict[str, Any]]]
            ) -> Iterator[tuple[int, list[TrialOutput], float]]:
        for i, specs in enumerate(groups):
            t0 = time.perf_counter()
            outputs = study.run_group(cfg, specs)
            yield i, outputs, time.perf_counter() - t0

    def close(self) -> None:
        pass
