"""Spreads and verdicts: when a measured gap counts as evidence for or against one of the paper's claims.

* A claim reads "A > B" (or "A ≥ B − m" with a margin m); its gap is top-1(A) − top-1(B) (or the quantity the
  claim names, such as seconds per 1,000 images), and the claim is judged on gap + m.
* Its noise is the seed spread of the compared cells: the largest standard deviation and the largest range
  (max − min) of top-1 over reconstruction seeds among them. Cells run with one seed contribute nothing.
* threshold = max(3 × std, range). gap + m > threshold: "resolved (paper's direction)"; gap + m < −threshold:
  "resolved (against)"; otherwise "within noise".
* No cell with two or more seeds: "no spread (1 seed)"; the gap is shown but not judged. A gap whose cells were
  not measured: "not measured".
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

STD_MULTIPLE = 3.0
RESOLVED = "resolved (paper's direction)"
AGAINST = "resolved (against)"
WITHIN = "within noise"
NO_SPREAD = "no spread (1 seed)"
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Spread:
    """Top-1 over reconstruction seeds of one setting: mean, sample std, range and how many seeds."""

    mean: float
    std: float
    range: float
    n_seeds: int

    def threshold(self) -> float:
        """The smallest |gap| that is evidence: three standard deviations or the whole range, the larger."""
        return max(STD_MULTIPLE * self.std, self.range)


def spread_of(values: Iterable[float]) -> Spread | None:
    """The spread of top-1 values from different seeds; None with fewer than two seeds."""
    values = list(values)
    if len(values) < 2:
        return None
    return Spread(statistics.mean(values), statistics.stdev(values), max(values) - min(values), len(values))


def widest(*spreads: Spread | None) -> Spread | None:
    """The noise of a comparison: the spread with the largest threshold among its cells (None if none has one)."""
    found = [s for s in spreads if s is not None]
    return max(found, key=Spread.threshold, default=None)


def verdict(gap: float | None, spread: Spread | None, margin: float = 0.0) -> str:
    """The verdict cell of a claim with measured ``gap`` (A − B), judged on ``gap + margin`` against ``spread``."""
    if gap is None:
        return NOT_MEASURED
    if spread is None:
        return NO_SPREAD
    judged = gap + margin
    if judged > spread.threshold():
        return RESOLVED
    if judged < -spread.threshold():
        return AGAINST
    return WITHIN


def spread_cell(spread: Spread | None) -> str:
    """``± std (range r, n seeds)``, or a dash when the setting ran with one seed."""
    if spread is None:
        return "–"
    return f"± {spread.std:.2f} (range {spread.range:.2f}, {spread.n_seeds} seeds)"
