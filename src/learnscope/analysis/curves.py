"""A curve: a statistic over seeds (median and quartiles) at each value of one axis."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Curve", "median_ci", "median_iqr"]


def median_iqr(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, 25th, 75th percentile); NaN when empty or when any value is NaN (a trial that
    did not produce the number must not be silently dropped from a claim).

    >>> median_iqr([1.0, 2.0, 3.0, 4.0])
    (2.5, 1.75, 3.25)
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.isnan(v).any():
        return math.nan, math.nan, math.nan
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return float(med), float(q25), float(q75)


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median: ``(lo, hi, coverage)``.

    The order statistics ``(x_(k), x_(n+1-k))`` cover the median with probability
    ``1 - 2 P(Binomial(n, 1/2) < k)`` whatever the distribution; ``k`` is the largest with a
    coverage of at least ``level``. With too few values for ``level`` the interval is
    ``(min, max)`` and the coverage it has is returned (3 values: 0.75): the claim that uses it
    reports what it could decide. NaN when empty or when any value is NaN.

    >>> median_ci([5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 7.0, 8.0, 6.0, 10.0])  # x_(2), x_(9)
    (2.0, 9.0, 0.978515625)
    >>> median_ci([1.0, 2.0, 3.0])
    (1.0, 3.0, 0.75)
    """
    v = np.sort(np.asarray(values, dtype=float))
    n = v.size
    if n == 0 or np.isnan(v).any():
        return math.nan, math.nan, math.nan
    cdf = np.cumsum([math.comb(n, i) for i in range(n + 1)]) / 2.0**n  # P(B <= i)

    def coverage(k: int) -> float:
        return 1.0 - 2.0 * (cdf[k - 1] if k >= 1 else 0.0)

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return float(v[k - 1]), float(v[n - k]), float(coverage(k))


@dataclass(frozen=True)
class Curve:
    """Median (``y``) and quartiles (``lo``, ``hi``) over trials at each ``x``, sorted by x;
    ``values[i]`` holds the individual trials' numbers at ``x[i]`` (e.g. one per seed)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]
    x_name: str = "x"
    y_name: str = "y"

    @classmethod
    def from_groups(cls, groups: dict[float, list[float]], x_name: str = "x",
                    y_name: str = "y") -> Curve:
        xs = sorted(groups)
        stats = [median_iqr(groups[x]) for x in xs]
        return cls(tuple(xs), tuple(s[0] for s in stats), tuple(s[1] for s in stats),
                   tuple(s[2] for s in stats), tuple(tuple(groups[x]) for x in xs),
                   x_name, y_name)

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[tuple[float, float]]:
        return iter(zip(self.x, self.y, strict=True))

    def __getitem__(self, x: float) -> float:
        """The median at exactly ``x`` (KeyError otherwise)."""
        try:
            return self.y[self.x.index(x)]
        except ValueError:
            raise KeyError(f"{self.x_name}={x} is not on the curve ({list(self.x)})") from None

    def at(self, x: float) -> float:
        """The median at the grid point nearest to ``x`` (NaN for an empty curve)."""
        if not self.x:
            return math.nan
        i = min(range(len(self.x)), key=lambda j: abs(self.x[j] - x))
        return self.y[i]

    @property
    def first(self) -> float:
        return self.y[0] if self.y else math.nan

    @property
    def last(self) -> float:
        return self.y[-1] if self.y else math.nan

    def argmax(self) -> float:
        """The x of the largest finite median (NaN when there is none)."""
        return self._arg(max)

    def argmin(self) -> float:
        return self._arg(min)

    def _arg(self, pick: type[max] | type[min]) -> float:
        finite = [(y, x) for x, y in self if not math.isnan(y)]
        return pick(finite)[1] if finite else math.nan  # type: ignore[operator]

    def values_at(self, x: float) -> tuple[float, ...]:
        """The individual trials' numbers at the grid point nearest to ``x``."""
        if not self.x:
            return ()
        i = min(range(len(self.x)), key=lambda j: abs(math.log(self.x[j] / x))
                if self.x[j] > 0 and x > 0 else abs(self.x[j] - x))
        return self.values[i]

    def nearest(self, x: float) -> float:
        """The grid point nearest to ``x`` (on a log scale for positive values)."""
        i = min(range(len(self.x)), key=lambda j: abs(math.log(self.x[j] / x))
                if self.x[j] > 0 and x > 0 else abs(self.x[j] - x))
        return self.x[i]

    def between(self, lo: float = -math.inf, hi: float = math.inf) -> Curve:
        """The part of the curve with ``lo <= x <= hi``."""
        keep = [i for i, x in enumerate(self.x) if lo <= x <= hi]
        return Curve(*(tuple(seq[i] for i in keep) for seq in
                       (self.x, self.y, self.lo, self.hi, self.values)),
                     x_name=self.x_name, y_name=self.y_name)

    def scaled(self, factor: float) -> Curve:
        """The curve with every y value multiplied by ``factor`` (e.g. 100 for percent)."""
        return Curve(self.x, *(tuple(v * factor for v in seq) for seq in (self.y, self.lo, self.hi)),
                     tuple(tuple(v * factor for v in vs) for vs in self.values),
                     x_name=self.x_name, y_name=self.y_name)

    def as_dict(self) -> dict[float, float]:
        return dict(zip(self.x, self.y, strict=True))
