"""Claims: a paper's result as a checkable assertion, and the library that builds them.

A claim's threshold is written once: a :class:`Test` (``at_least(10)``, ``between(1.5, 4)``...)
both decides ``holds`` and writes the threshold text shown in the report, so the two cannot
disagree. NaN never holds.

>>> c = claim("peak-height", "the peak is over 10x the ends", "peak_over_ends", 12.5,
...           at_least(10))
>>> c.holds, c.threshold
(True, 'peak_over_ends >= 10')
>>> claim("x", "x is small", "x", float("nan"), at_most(1)).holds
False
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from learnscope.analysis.curves import Curve, median_ci

__all__ = ["Claim", "Test", "above", "all_of", "stands_out", "at_least", "at_most", "below", "between", "claim",
           "jsonable", "monotone", "peak_at", "ratio", "verdict"]


@dataclass(frozen=True)
class Claim:
    """A checked assertion with what this run measured.

    ``gating`` claims decide the verdict; non-gating ones are reported (e.g. effects the
    literature itself calls weak) but never turn a run into ``partial``.
    """

    id: str
    statement: str
    measured: dict[str, Any]
    threshold: str
    holds: bool
    gating: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "statement": self.statement, "measured": jsonable(self.measured),
                "threshold": self.threshold, "holds": bool(self.holds), "gating": self.gating}


def verdict(claims: Sequence[Claim]) -> str:
    """``reproduced`` when every gating claim holds, ``not reproduced`` when none does."""
    gating = [c for c in claims if c.gating]
    if not gating:
        return "not reproduced"
    n = sum(c.holds for c in gating)
    if n == len(gating):
        return "reproduced"
    return "partial" if n else "not reproduced"


# -- tests: the threshold, written once -------------------------------------------------------

@dataclass(frozen=True)
class Test:
    """A condition on one number: decides ``holds`` and writes the threshold text."""

    __test__ = False  # not a pytest class

    check: Callable[[float], bool]
    template: str
    """The threshold text with ``{name}`` where the measured quantity's name goes."""

    def holds(self, value: float) -> bool:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        return (not math.isnan(v)) and bool(self.check(v))

    def text(self, name: str) -> str:
        return self.template.format(name=name)

    def __and__(self, other: Test) -> Test:
        return Test(lambda v: self.check(v) and other.check(v),
                    f"{self.template} and {other.template}")


def at_least(bound: float) -> Test:
    return Test(lambda v: v >= bound, f"{{name}} >= {bound:g}")


def at_most(bound: float) -> Test:
    return Test(lambda v: v <= bound, f"{{name}} <= {bound:g}")


def above(bound: float) -> Test:
    return Test(lambda v: v > bound, f"{{name}} > {bound:g}")


def below(bound: float) -> Test:
    return Test(lambda v: v < bound, f"{{name}} < {bound:g}")


def between(lo: float, hi: float) -> Test:
    """``lo <= value <= hi``."""
    return Test(lambda v: lo <= v <= hi, f"{lo:g} <= {{name}} <= {hi:g}")


# -- claim builders ---------------------------------------------------------------------------

def claim(id: str, statement: str, name: str, value: float, test: Test, *,
          extra: dict[str, Any] | None = None, gating: bool = True) -> Claim:
    """The claim ``test(value)``, recording ``value`` under ``name`` plus ``extra`` numbers."""
    return Claim(id, statement, {name: _num(value), **(extra or {})}, test.text(name),
                 test.holds(value), gating)


def all_of(id: str, statement: str, checks: dict[str, tuple[float, Test]], *,
           extra: dict[str, Any] | None = None, gating: bool = True) -> Claim:
    """Several conditions that must all hold: ``{name: (value, test), ...}``.

    >>> all_of("c", "both", {"a": (3, at_least(2)), "b": (0.1, between(0, 1))}).threshold
    'a >= 2 and 0 <= b <= 1'
    """
    measured = {name: _num(v) for name, (v, _) in checks.items()}
    text = " and ".join(t.text(name) for name, (_, t) in checks.items())
    holds = bool(checks) and all(t.holds(v) for v, t in checks.values())
    return Claim(id, statement, {**measured, **(extra or {})}, text, holds, gating)


def ratio(id: str, statement: str, name: str, numerator: float, denominator: float,
          test: Test, *, names: tuple[str, str] = ("numerator", "denominator"),
          extra: dict[str, Any] | None = None, gating: bool = True) -> Claim:
    """A claim on ``numerator / denominator`` (both recorded; a zero denominator is NaN)."""
    value = _num(numerator) / _num(denominator) if _num(denominator) != 0 else math.nan
    return claim(id, statement, name, value, test, gating=gating,
                 extra={names[0]: _num(numerator), names[1]: _num(denominator), **(extra or {})})


def monotone(id: str, statement: str, curve: Curve, *, increasing: bool = False,
             strict: bool = True, gating: bool = True) -> Claim:
    """Every step along ``curve`` goes down (or up); ``strict`` forbids flat steps.

    A curve with fewer than two points, or a NaN anywhere, does not hold.
    """
    ys = list(curve.y)
    steps = [b - a for a, b in zip(ys, ys[1:], strict=False)]
    sign = 1 if increasing else -1
    ok = bool(steps) and not any(math.isnan(y) for y in ys) and all(
        sign * d > 0 if strict else sign * d >= 0 for d in steps)
    word = ("strictly " if strict else "") + ("increasing" if increasing else "decreasing")
    if not strict:
        word = "non-decreasing" if increasing else "non-increasing"
    return Claim(id, statement, {curve.x_name: list(curve.x), curve.y_name: ys},
                 f"{curve.y_name} {word} in {curve.x_name}", ok, gating)


def peak_at(id: str, statement: str, curve: Curve, at: float, *, within: float = 0.1,
            gating: bool = True) -> Claim:
    """The curve's maximum lies at ``at`` within a relative distance ``within``:
    ``|x_peak - at| / at <= within``. NaN values are ignored for the argmax but a curve with
    no finite value does not hold."""
    x_peak = curve.argmax()
    dist = abs(x_peak - at) / abs(at) if not math.isnan(x_peak) else math.nan
    return claim(id, statement, "relative_distance_of_peak", dist, at_most(within), gating=gating,
                 extra={f"peak_{curve.x_name}": x_peak, f"expected_{curve.x_name}": at})


def stands_out(id: str, statement: str, curve: Curve, at: float,
               neighbours: Sequence[float], *, level: float = 0.95, above_them: bool = True,
               gating: bool = True) -> Claim:
    """The curve at ``at`` stands above (``above_them=False``: does NOT stand above) its values
    at the ``neighbours``, beyond the spread over trials: the lower end of the median's
    distribution-free confidence interval at ``at`` exceeds the upper end at every neighbour
    (grid points nearest to the given x). The measured numbers include the interval coverage
    the trials allow (e.g. 0.75 with 3 seeds): the claim says what the seeds could decide.
    """
    lo, _, cov = median_ci(curve.values_at(at), level)
    highs = {curve.nearest(x): median_ci(curve.values_at(x), level)[1] for x in neighbours}
    gap = lo / max(highs.values()) if highs and max(highs.values()) > 0 else math.nan
    test = above(1.0) if above_them else at_most(1.0)
    name = f"ci_low_at_{curve.x_name}_{curve.nearest(at):g}_over_neighbours_ci_high"
    return claim(id, statement, name, gap, test, gating=gating,
                 extra={f"median_at_{curve.nearest(at):g}": curve.at(at),
                        **{f"ci_high_at_{x:g}": h for x, h in highs.items()},
                        "ci_coverage": cov, "trials": len(curve.values_at(at))})


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def jsonable(obj: Any) -> Any:
    """Plain JSON data: NaN -> None, infinities as strings, numpy/torch scalars as numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        try:
            return jsonable(obj.item())
        except (ValueError, TypeError):
            return jsonable(obj.tolist())
    return obj
