"""When a probe runs: every N steps, log-spaced steps, per epoch, or only at the end."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Schedule", "at_end", "at_steps", "every", "log_spaced", "per_epoch"]


@dataclass(frozen=True)
class Schedule:
    """A probe's schedule. Build one with :func:`every`, :func:`log_spaced`, :func:`per_epoch`
    or :func:`at_end`.

    Steps count optimizer steps: step 0 is the state before training (measured when the
    scope opens), step t the state after t calls of ``scope.step()``.
    """

    kind: str
    n: int = 1
    steps: tuple[int, ...] = ()

    def due_step(self, step: int) -> bool:
        if self.kind == "every":
            return step % self.n == 0
        if self.kind == "log":
            if step <= 1:
                return True
            # The first step in each of the n-per-decade logarithmic bins.
            return math.floor(self.n * math.log10(step)) != math.floor(
                self.n * math.log10(step - 1))
        if self.kind == "steps":
            return step in self.steps
        return False

    def next_due_step(self, step: int) -> int | None:
        """The first step after ``step`` at which :meth:`due_step` is true (None: never), so
        that a session need not ask every step.

        >>> every(25).next_due_step(30), log_spaced(2).next_due_step(3), at_end().next_due_step(0)
        (50, 10, None)
        """
        if self.kind == "every":
            return (step // self.n + 1) * self.n
        if self.kind == "steps":
            i = bisect.bisect_right(self.steps, step)
            return self.steps[i] if i < len(self.steps) else None
        if self.kind != "log":
            return None
        if step < 1:
            return step + 1
        # the first step of the next logarithmic bin, then corrected for rounding
        guess = max(step + 1, math.ceil(10 ** ((math.floor(self.n * math.log10(step)) + 1)
                                               / self.n)))
        while guess - 1 > step and self.due_step(guess - 1):
            guess -= 1
        while not self.due_step(guess):
            guess += 1
        return guess

    def due_epoch(self, epoch: int) -> bool:
        return self.kind == "epoch" and epoch % self.n == 0

    def at_start(self) -> bool:
        return self.kind in ("every", "log", "epoch") or (self.kind == "steps" and 0 in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "steps": list(self.steps)}

    def __str__(self) -> str:
        return {"every": f"every {self.n} steps", "log": f"log-spaced, {self.n} per decade",
                "epoch": f"every {self.n} epochs" if self.n > 1 else "every epoch",
                "end": "at the end",
                "steps": f"at steps {', '.join(map(str, self.steps))}"}[self.kind]


def every(n: int) -> Schedule:
    """Steps 0, n, 2n, ...

    >>> [s for s in range(10) if every(4).due_step(s)]
    [0, 4, 8]
    """
    if n < 1:
        raise ValueError(f"every(n) needs n >= 1, got {n}")
    return Schedule("every", int(n))


def log_spaced(per_decade: int = 4) -> Schedule:
    """About ``per_decade`` steps per factor of ten: dense early, sparse late.

    >>> [s for s in range(101) if log_spaced(4).due_step(s)]
    [0, 1, 2, 4, 6, 10, 18, 32, 57, 100]
    """
    if per_decade < 1:
        raise ValueError(f"log_spaced needs per_decade >= 1, got {per_decade}")
    return Schedule("log", int(per_decade))


def per_epoch(every_n: int = 1) -> Schedule:
    """At the start (epoch 0) and after every ``every_n``-th call of ``scope.epoch()``."""
    if every_n < 1:
        raise ValueError(f"per_epoch needs every_n >= 1, got {every_n}")
    return Schedule("epoch", int(every_n))


def at_steps(*steps: int) -> Schedule:
    """Exactly these steps, e.g. ``at_steps(0, 100, 200, 400, 800, 1600)``.

    >>> [s for s in range(500) if at_steps(0, 100, 400).due_step(s)]
    [0, 100, 400]
    """
    if not steps or any(int(s) < 0 for s in steps):
        raise ValueError(f"at_steps needs non-negative steps, got {steps}")
    return Schedule("steps", 1, tuple(sorted({int(s) for s in steps})))


def at_end() -> Schedule:
    """Only when the scope closes (e.g. comparisons with the final state)."""
    return Schedule("end")
