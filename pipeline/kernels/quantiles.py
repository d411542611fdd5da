"""A mergeable sketch of integer areas: exact up to 1024, within 0.5 % above.

Buckets above 1024 grow by 0.8 %: answering with a bucket's midpoint is off by at most
0.8 / 2.008 = 0.40 %, and rounding it to an integer adds at most 0.5 / 1025 = 0.05 %.

Summaries are reduced from per-batch partials, so the client never holds per-segment areas;
the sketch's memory grows with log(max area), not with the number of segments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

_EXACT_LIMIT = 1024
_GAMMA = 1.008
_LOG_GAMMA = math.log(_GAMMA)
_FIRST_BUCKET = math.floor(math.log(_EXACT_LIMIT + 1) / _LOG_GAMMA)


def _bucket_of(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    logs = np.floor(np.log(np.maximum(values, 1)) / _LOG_GAMMA).astype(np.int64)
    # Buckets above the exact range are offset so their keys never collide with exact values.
    return np.where(values <= _EXACT_LIMIT, values, _EXACT_LIMIT + 1 + logs - _FIRST_BUCKET)


def _representative(bucket: int) -> int:
    if bucket <= _EXACT_LIMIT:
        return bucket
    k = bucket - _EXACT_LIMIT - 1 + _FIRST_BUCKET
    low, high = _GAMMA**k, _GAMMA ** (k + 1)
    return round((low + high) / 2)


@dataclass
class AreaSketch:
    """Counts of areas by bucket, plus the exact minimum and maximum."""

    counts: dict[int, int] = field(default_factory=dict)
    minimum: int | None = None
    maximum: int | None = None

    @property
    def total(self) -> int:
        """Number of areas added."""
        return sum(self.counts.values())

    def add(self, areas: np.ndarray) -> None:
        """Add a batch of non-negative integer areas."""
        areas = np.asarray(areas, dtype=np.int64)
        if areas.size == 0:
            return
        # Counted by bincount, not np.unique: one call instead of a sort and several passes
        # (a batch's segments are added per type; make bench's spread).
        counts = np.bincount(_bucket_of(areas))
        keys = np.flatnonzero(counts)
        for key, count in zip(keys.tolist(), counts[keys].tolist(), strict=True):
            self.counts[key] = self.counts.get(key, 0) + count
        low, high = int(areas.min()), int(areas.max())
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)

    def merge(self, other: AreaSketch) -> AreaSketch:
        """The sketch of both inputs (associative and commutative)."""
        merged = AreaSketch(dict(self.counts), self.minimum, self.maximum)
        for key, count in other.counts.items():
            merged.counts[key] = merged.counts.get(key, 0) + count
        if other.minimum is not None:
            merged.minimum = (
                other.minimum if merged.minimum is None else min(merged.minimum, other.minimum)
            )
        if other.maximum is not None:
            merged.maximum = (
                other.maximum if merged.maximum is None else max(merged.maximum, other.maximum)
            )
        return merged

    def quantile(self, q: float) -> int | None:
        """Nearest-rank quantile (the smallest area with at least ``q`` of areas at or below it),
        exact for areas up to 1024 and within 0.5 % above; ``None`` when empty."""
        total = self.total
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        if rank == total:
            return self.maximum
        if rank == 1:
            return self.minimum
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                value = _representative(key)
                return min(max(value, self.minimum or value), self.maximum or value)
        return self.maximum


#: Bins of a :class:`ScoreHistogram`: 0.001 wide over 0..1.
SCORE_BINS = 1001


@dataclass
class ScoreHistogram:
    """Scores in 0..1 counted in 1001 bins of 0.001 (a score ``s`` in bin ``floor(s * 1000)``;
    pass 2 counts them with :func:`~pipeline.kernels.labelstats.segment_label_stats`):
    quantiles exact to the bin, mergeable."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, dtype=np.int64))

    def quantiles(self, *qs: float) -> list[float | None]:
        """Nearest-rank quantiles, rounded down to 0.001; ``None`` when empty."""
        cumulative = np.cumsum(self.counts)
        total = int(cumulative[-1])
        if total == 0:
            return [None] * len(qs)
        ranks = [max(1, math.ceil(q * total)) for q in qs]
        return [float(index) / 1000 for index in np.searchsorted(cumulative, ranks).tolist()]
