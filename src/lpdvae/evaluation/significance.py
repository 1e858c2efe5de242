"""A seeded paired bootstrap: is a difference between two models bigger than resampling noise?

Champion and challenger are measured on the same phrases (and the same generation seeds), so one
resample draws one set of indices and recomputes the difference on both sides with it: the pair
shares whatever makes one phrase harder than another, and the interval narrows to the models'
own difference. The interval is the percentile interval of the resampled differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """`estimate` (on the full sample) and its two-sided `confidence` interval [low, high]."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int

    def above_zero(self) -> bool:
        """The whole interval is above 0: significantly positive."""
        return self.low > 0.0

    def below_zero(self) -> bool:
        return self.high < 0.0

    def __str__(self) -> str:
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(statistic: Callable[..., float], sizes: Sequence[int], *, resamples: int,
                     confidence: float, seed: int) -> Interval:
    """Interval of `statistic(*indices)`, one index array per entry of `sizes` (drawn with
    replacement from range(size)); the estimate is the statistic on every index once.

    `statistic` computes challenger minus champion on the given indices, so both sides see the
    same resample. Resamples where it is not finite (a statistic undefined on that draw) are
    left out; an interval of none is NaN."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if any(n < 1 for n in sizes):
        raise ValueError(f"every sample needs at least one item, got sizes {list(sizes)}")
    estimate = float(statistic(*(np.arange(n) for n in sizes)))
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(*(rng.integers(0, n, n) for n in sizes)) for _ in range(resamples)],
                     dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return Interval(estimate, float("nan"), float("nan"), confidence, 0)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), confidence, int(draws.size))
