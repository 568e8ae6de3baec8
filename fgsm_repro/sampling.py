"""Sampling error: how far a rate or a mean measured on n examples could move on another draw of
them, and whether a measured number and the paper's differ by more than both numbers' sampling
error explains.

A measured percentage is a :class:`Rate` (k of n examples) or a :class:`Mean` (of n values, with
their standard deviation): floats that remember their sample, so an experiment builds its measured
values as before and the runner records ``samples`` beside them (:func:`samples_of`). Arithmetic
on them gives plain floats: a derived number has no sample of its own.

- :func:`interval`: the 95% interval of one run's number — Clopper–Pearson (exact binomial) for
  a rate, Student's t for a mean.
- :func:`consistent`: whether the paper's value and ours are consistent at 95% once the sampling
  error of both is counted — for rates Newcombe's hybrid score interval of the difference of two
  proportions (method 10 of Newcombe 1998; it keeps its level near 0% and 100%, where most of
  these rates lie); for means a two-sample z test whose standard deviation, which the paper does
  not give, is ours for both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LEVEL = 0.95
_Z = 1.959963984540054  # the two-sided 95% normal quantile


class Rate(float):
    """A percentage of `n` examples: ``Rate(100 * k / n, n)``."""

    n: int

    def __new__(cls, percent: float, n: int):
        obj = super().__new__(cls, percent)
        obj.n = int(n)
        return obj

    def __reduce__(self):
        return Rate, (float(self), self.n)

    @classmethod
    def of(cls, hits: np.ndarray) -> Rate | None:
        """The percentage of True in `hits` (None when it is empty)."""
        hits = np.asarray(hits, bool).ravel()
        return cls(100.0 * float(hits.mean()), hits.size) if hits.size else None

    @property
    def k(self) -> int:
        return round(float(self) * self.n / 100.0)

    def sample(self) -> dict:
        return {"n": self.n}


class Mean(float):
    """A mean, in percent, of `n` values whose standard deviation (percent) is `sd`."""

    n: int
    sd: float

    def __new__(cls, percent: float, n: int, sd: float):
        obj = super().__new__(cls, percent)
        obj.n, obj.sd = int(n), float(sd)
        return obj

    def __reduce__(self):
        return Mean, (float(self), self.n, self.sd)

    @classmethod
    def of(cls, fractions: np.ndarray) -> Mean | None:
        """The mean of `fractions` (values in [0, 1]) in percent (None when there are none)."""
        values = 100.0 * np.asarray(fractions, np.float64).ravel()
        if not values.size:
            return None
        return cls(float(values.mean()), values.size, float(values.std(ddof=1)) if values.size > 1 else math.nan)

    def sample(self) -> dict:
        return {"n": self.n, "sd": self.sd}


def samples_of(measured: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """claim -> metric -> the sample (``{"n"}`` of a rate, ``{"n", "sd"}`` of a mean) of every
    measured value that is a :class:`Rate` or a :class:`Mean`."""
    out = {claim: {metric: value.sample() for metric, value in metrics.items() if isinstance(value, Rate | Mean)}
           for claim, metrics in measured.items()}
    return {claim: metrics for claim, metrics in out.items() if metrics}


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper–Pearson) `level` interval of a binomial proportion k/n, in percent."""
    from scipy.stats import beta

    alpha = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return 100.0 * lo, 100.0 * hi


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval of k/n, as fractions."""
    p = k / n
    centre = (p + _Z ** 2 / (2 * n)) / (1 + _Z ** 2 / n)
    half = _Z / (1 + _Z ** 2 / n) * math.sqrt(p * (1 - p) / n + _Z ** 2 / (4 * n ** 2))
    return max(centre - half, 0.0), min(centre + half, 1.0)


def difference_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score 95% interval of k1/n1 − k2/n2, in percentage points."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    return (100.0 * (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            100.0 * (d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def interval(value: float, sample: dict | None) -> tuple[float, float] | None:
    """The 95% interval of one run's `value` from its `sample` (:func:`samples_of`); None without one."""
    if not sample or not _finite(value) or not sample.get("n"):
        return None
    n = int(sample["n"])
    if "sd" not in sample:
        return clopper_pearson(round(value * n / 100.0), n)
    if n < 2 or not _finite(sample["sd"]):
        return None
    from scipy.stats import t

    half = float(t.ppf(1 - (1 - LEVEL) / 2, n - 1)) * sample["sd"] / math.sqrt(n)
    return value - half, value + half


def consistent(value: float, sample: dict | None, paper: float, paper_n: int | None = None) -> bool | None:
    """Whether `value` (with its `sample`) and the paper's `paper`, measured on `paper_n` examples
    (default: as many as ours), are consistent at 95%; None without a sample."""
    if not sample or not _finite(value) or not sample.get("n"):
        return None
    n = int(sample["n"])
    paper_n = int(paper_n or n)
    if "sd" not in sample:
        lo, hi = difference_interval(round(value * n / 100.0), n, round(paper * paper_n / 100.0), paper_n)
        return lo <= 0.0 <= hi
    if n < 2 or not _finite(sample["sd"]):
        return None
    se = sample["sd"] * math.sqrt(1 / n + 1 / paper_n)
    return abs(value - paper) <= _Z * se if se > 0 else value == paper
