"""A mergeable sketch of integer areas: exact up to 1024, within 0.5 % above.

Buckets above 1024 grow by 0.8 %: answering with a bucket's midpoint is off by at most
0.8 / 2.008 = 0.40 %, and rounding it to an integer adds at most 0.5 / 1025 = 0.05 %.

Summaries are reduced from per-batch partials, so the client never holds per-segment areas;
the sketch's memory grows with log(max area), not with the number of segments.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

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


def _add_counts(held: dict[int, int], buckets: list[int], counts: Iterable[int]) -> None:
    """Add ``counts`` to ``held`` bucket by bucket, without a Python loop (maps over
    ``dict.get``): a dense mask's segments fall in ~100 buckets each, and a loop costs ~0.3 us
    a bucket, whenever a batch's segments are added and whenever summaries merge."""
    sums = map(operator.add, map(held.get, buckets, repeat(0)), counts)
    held.update(zip(buckets, sums, strict=True))


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
        add_grouped([self], np.zeros(len(areas), dtype=np.int64), areas)

    def merge(self, other: AreaSketch) -> AreaSketch:
        """The sketch of both inputs (associative and commutative)."""
        merged = AreaSketch(dict(self.counts), self.minimum, self.maximum)
        _add_counts(merged.counts, list(other.counts), other.counts.values())
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


def add_grouped(sketches: Sequence[AreaSketch], groups: np.ndarray, areas: np.ndarray) -> None:
    """Add each of ``areas`` (non-negative integers) to ``sketches[group]``, its group in
    ``groups`` (non-decreasing, every sketch's group present), all at once: each sketch ends as
    if its areas had been added alone, for a few numpy calls in all instead of a dozen per
    sketch (a batch's segments are added per type, a batch's fixed cost in ``make bench``'s
    spread)."""
    areas = np.asarray(areas, dtype=np.int64)
    if areas.size == 0:
        return
    groups = np.asarray(groups, dtype=np.int64)
    buckets = _bucket_of(areas)
    width = int(buckets.max()) + 1
    # Each group's distinct buckets, in order, and their counts: a sort of the few keys (a
    # bincount over groups x buckets, ~10^4 counters, costs more to scan).
    keys = np.sort(groups * width + buckets)
    last = np.flatnonzero(np.append(keys[1:] != keys[:-1], True))  # each key's last index
    counts = np.diff(last, prepend=-1)
    key_groups, key_buckets = np.divmod(keys[last], width)
    ends = np.searchsorted(key_groups, np.arange(len(sketches)), side="right").tolist()
    edges = np.searchsorted(groups, np.arange(len(sketches)))
    lows, highs = np.minimum.reduceat(areas, edges), np.maximum.reduceat(areas, edges)
    added_buckets, added_counts = key_buckets.tolist(), counts.tolist()
    begin = 0
    for sketch, end, low, high in zip(sketches, ends, lows.tolist(), highs.tolist(), strict=True):
        _add_counts(sketch.counts, added_buckets[begin:end], added_counts[begin:end])
        begin = end
        sketch.minimum = low if sketch.minimum is None else min(sketch.minimum, low)
        sketch.maximum = high if sketch.maximum is None else max(sketch.maximum, high)


@dataclass
class ScoreHistogram:
    """Scores in 0..1 counted in 1001 bins of 0.001: quantiles exact to the bin, mergeable."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(1001, dtype=np.int64))

    def add(self, scores: np.ndarray) -> None:
        """Add scores (NaN and out-of-range values are ignored)."""
        scores = np.asarray(scores, dtype=np.float64)
        scores = scores[(scores >= 0) & (scores <= 1)]
        self.counts += np.bincount(np.floor(scores * 1000).astype(np.int64), minlength=1001)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile, rounded down to 0.001; ``None`` when empty."""
        total = int(self.counts.sum())
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        return float(np.searchsorted(np.cumsum(self.counts), rank)) / 1000
