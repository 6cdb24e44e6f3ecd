"""Optional export of probe records to TensorBoard (``pip install tensorboard``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from learnscope.errors import LearnscopeError
from learnscope.store.records import Record

__all__ = ["TensorBoardExporter"]


class TensorBoardExporter:
    """Writes every scalar record as ``<probe>/<key>[/<layer>]`` at its own step (explicit
    ``global_step``, so TensorBoard's x-axis is the optimizer step, not the write order).

    Raises LearnscopeError when the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LearnscopeError("TensorBoardExporter needs the tensorboard package: "
                                  "pip install tensorboard") from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    @staticmethod
    def tag(r: Record) -> str:
        parts = [r.probe or "learnscope", r.key]
        for k in ("layer", "parameter", "subset", "layer_a", "layer_b", "alpha", "feature"):
            if k in r.meta:
                parts.append(f"{k}={r.meta[k]}")
        return "/".join(str(p) for p in parts)

    def write(self, records: Sequence[Record]) -> None:
        for r in records:
            if math.isfinite(r.value):
                self._writer.add_scalar(self.tag(r), r.value, global_step=r.step)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
