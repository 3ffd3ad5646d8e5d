"""Welch's t-test for an arm against scratch: the difference of means, its 95 % confidence
interval and the two-sided p-value (Student t with Welch-Satterthwaite degrees of freedom)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its confidence interval and two-sided p-value."""

    diff: float
    low: float
    high: float
    p: float
    df: float

    @property
    def differs(self) -> bool:
        """Whether the interval excludes zero (otherwise: no difference shown)."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        """JSON-ready figures."""
        return {"diff": self.diff, "low": self.low, "high": self.high, "p": self.p, "df": self.df}


def welch(a: list[float], b: list[float], level: float = 0.95) -> Difference | None:
    """Welch's t-test of mean(a) - mean(b); None when a side has fewer than two values or
    neither side varies (no spread to test against)."""
    from scipy.stats import t as student_t

    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if se == 0:
        return None
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * student_t.sf(abs(diff) / se, df))
    return Difference(diff, diff - half, diff + half, p, df)


def claim(arm: str, d: Difference | None, base: str = "scratch") -> str:
    """One sentence on an arm against `base`, worded "no difference" when the interval holds
    zero."""
    if d is None:
        return f"{arm}: too few runs to compare with {base} (two or more on each side needed)."
    figures = f"{d.diff:+.2f} points, 95 % CI {d.low:+.2f} to {d.high:+.2f}, p {d.p:.3f}"
    if not d.differs:
        return f"{arm}: no difference from {base} ({figures})."
    side = "above" if d.diff > 0 else "below"
    return f"{arm}: {side} {base} ({figures})."
