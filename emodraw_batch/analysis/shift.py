"""Did the emotions shift? The newest run against the one before it and against a trailing window.

An emotion is flagged only when its share moved by a statistically significant amount AND by a
practically large one:

- significant: a two-proportion z-test (the emotion's count out of the classified rows, newest run
  against the reference), two-sided, at `alpha` divided by the number of emotions tested
  (Bonferroni: six tests at once must not flag by chance six times as often);
- large: at least `min_change` percentage points (default 2). On millions of rows a change of a
  tenth of a point is significant and means nothing; on a few hundred rows a large swing may be
  noise, which the test leaves unflagged.

The reference is the previous complete run, and the pooled counts of the `window` complete runs
before the newest (default 7: a week of nightly runs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from emodraw_batch.analysis.trend import Run, labels_of

MIN_CHANGE_PP = 2.0
ALPHA = 0.01
WINDOW = 7


@dataclass(frozen=True)
class Shift:
    """One emotion's change in share, newest run against a reference."""

    against: str  # "previous" or "window"
    emotion: str
    share: float  # newest run
    reference: float
    change_pp: float
    p_value: float
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def two_proportion_p(c1: int, n1: int, c2: int, n2: int) -> float:
    """Two-sided p-value of the difference between c1/n1 and c2/n2 (pooled z-test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (c1 + c2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:
        return 1.0 if c1 / n1 == c2 / n2 else 0.0
    z = (c1 / n1 - c2 / n2) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def compare(newest: Run, reference: dict[str, int], against: str, labels: list[str], alpha: float,
            min_change: float) -> list[Shift]:
    """Every emotion's shift of `newest` against the counts `reference`."""
    n1, n2 = sum(newest.counts.values()), sum(reference.values())
    out = []
    for emotion in labels:
        c1, c2 = newest.counts.get(emotion, 0), reference.get(emotion, 0)
        share, ref = (c1 / n1 if n1 else 0.0), (c2 / n2 if n2 else 0.0)
        p = two_proportion_p(c1, n1, c2, n2)
        change = (share - ref) * 100
        out.append(Shift(against, emotion, share, ref, change, p, p < alpha / len(labels) and abs(change) >= min_change))
    return out


def shifts(runs: list[Run], window: int = WINDOW, alpha: float = ALPHA, min_change: float = MIN_CHANGE_PP) -> list[Shift]:
    """The newest complete run against the previous one and against the trailing window (empty with fewer than two)."""
    done = [r for r in runs if r.status == "complete"]
    if len(done) < 2:
        return []
    newest, before = done[-1], done[:-1]
    labels = labels_of(done)
    found = compare(newest, before[-1].counts, "previous", labels, alpha, min_change)
    pooled: dict[str, int] = {}
    for run in before[-window:]:
        for emotion, count in run.counts.items():
            pooled[emotion] = pooled.get(emotion, 0) + count
    return found + compare(newest, pooled, "window", labels, alpha, min_change)


def describe(runs: list[Run], found: list[Shift], window: int = WINDOW) -> str:
    """One paragraph: what shifted in the newest run (or that nothing did)."""
    done = [r for r in runs if r.status == "complete"]
    if len(done) < 2:
        return "No shift check: fewer than two finished runs."
    flagged = [s for s in found if s.flagged]
    newest = done[-1].date or done[-1].output
    if not flagged:
        return f"No emotion shifted in the run of {newest} (against the previous run and the {min(window, len(done) - 1)} before it)."
    parts = [f"{s.emotion} {s.reference:.1%} -> {s.share:.1%} ({s.change_pp:+.1f} pp, p={s.p_value:.1e}, vs {s.against})"
             for s in flagged]
    return f"Shift in the run of {newest}: " + "; ".join(parts) + "."
