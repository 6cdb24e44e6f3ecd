"""Argument checks of probe constructors: one message per kind of mistake, naming the argument.

A probe checks its configuration when it is built, so that a typo fails at once instead of
hours into training.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, TypeVar

from learnscope.probes.schedule import Schedule

T = TypeVar("T")


def check_schedule(schedule: object, default: Schedule) -> Schedule:
    """``schedule``, or ``default`` when it is None."""
    if schedule is None:
        return default
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a Schedule (every(n), log_spaced(k), per_epoch(), "
                         f"at_steps(...), at_end()), got {schedule!r}")
    return schedule


def check_int(value: object, name: str, minimum: int) -> int:
    """An integer (Python or NumPy, not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_optional_int(value: object, name: str, minimum: int) -> int | None:
    """None, or an integer >= ``minimum``."""
    return None if value is None else check_int(value, name, minimum)


def check_number(value: object, name: str, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False) -> float:
    """A finite real number (not bool) in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(float(value))
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (low is None or v > low or (v == low and not low_open)) and \
            (high is None or v <= high)
    if not ok:
        lo = "" if low is None else (f" > {low}" if low_open else f" >= {low}")
        hi = "" if high is None else f" <= {high}"
        bounds = " and".join(b for b in (lo, hi) if b)
        raise ValueError(f"{name} must be a finite number{bounds}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(value: T, name: str, choices: Sequence[T]) -> T:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from {tuple(choices)}")
    return value


def check_callable(value: Any, name: str, signature: str) -> Any:
    """A callable; the message shows the expected ``signature``."""
    if not callable(value):
        raise ValueError(f"{name} must be a callable {signature}, got {value!r}")
    return value


def check_loss_fn(loss_fn: Any) -> Any:
    return check_callable(loss_fn, "loss_fn", "loss_fn(outputs, targets) -> scalar tensor")
