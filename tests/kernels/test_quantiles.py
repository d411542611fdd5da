"""Tests of :class:`pipeline.kernels.quantiles.AreaSketch` against numpy's nearest-rank quantile.

The reference is ``np.quantile(a, q, method="inverted_cdf")``: the smallest value with at least
``q`` of the values at or below it, which is what the sketch documents. The sketch promises the
exact value for areas up to 1024 and a relative error of at most 0.5 % above.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.kernels.quantiles import AreaSketch

QS = (0.0, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)
RELATIVE_TOLERANCE = 0.005


def sketch_of(*batches: np.ndarray) -> AreaSketch:
    sketch = AreaSketch()
    for batch in batches:
        sketch.add(batch)
    return sketch


def reference(areas: np.ndarray, q: float) -> int:
    return int(np.quantile(areas, q, method="inverted_cdf"))


def log_uniform(rng: np.random.Generator, n: int, high: float = 1e8) -> np.ndarray:
    return np.floor(np.exp(rng.uniform(0.0, math.log(high), n))).astype(np.int64)


def test_empty_sketch() -> None:
    sketch = AreaSketch()
    assert sketch.total == 0
    assert sketch.minimum is None
    assert sketch.maximum is None
    assert all(sketch.quantile(q) is None for q in QS)
    sketch.add(np.array([], dtype=np.int64))
    assert sketch.total == 0
    assert sketch.quantile(0.5) is None


def test_small_hand_computed_quantiles() -> None:
    sketch = sketch_of(np.array([5, 1, 3, 2, 4]))
    # Nearest rank over 1 2 3 4 5: rank = ceil(q * 5), at least 1.
    assert [sketch.quantile(q) for q in (0.0, 0.2, 0.21, 0.5, 0.8, 0.81, 1.0)] == [
        1,
        1,
        2,
        3,
        4,
        5,
        5,
    ]


@pytest.mark.parametrize("seed", range(6))
def test_exact_for_areas_up_to_1024(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 7, 10, 100, 1000, 5000):
        areas = rng.integers(0, 1025, n)
        sketch = sketch_of(areas)
        qs = (*QS, *rng.random(5).tolist())
        assert [sketch.quantile(q) for q in qs] == [reference(areas, q) for q in qs], n


def test_exact_with_heavy_duplicates_and_the_1024_boundary() -> None:
    areas = np.array([0] * 7 + [1] * 3 + [1023] * 5 + [1024] * 9)
    sketch = sketch_of(areas)
    qs = [i / 48 for i in range(49)]
    assert [sketch.quantile(q) for q in qs] == [reference(areas, q) for q in qs]


@pytest.mark.parametrize("seed", range(4))
def test_within_half_percent_for_log_uniform_areas(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    areas = log_uniform(rng, 20_000)
    sketch = sketch_of(areas)
    for q in (*QS, *rng.random(40).tolist()):
        expected = reference(areas, q)
        got = sketch.quantile(q)
        assert got is not None
        if expected <= 1024:
            assert got == expected, q
        else:
            assert abs(got - expected) <= RELATIVE_TOLERANCE * expected, (q, expected, got)


def test_within_half_percent_for_every_area_from_1025_to_6000() -> None:
    # Each area as the median of (1, area, 10**9): neither the minimum nor the maximum, so the
    # answer comes from the area's bucket, not from the exact extremes.
    failures = []
    for area in range(1025, 6001):
        got = sketch_of(np.array([1, area, 10**9])).quantile(0.5)
        assert got is not None
        if abs(got - area) > RELATIVE_TOLERANCE * area:
            failures.append((area, got, round(abs(got - area) / area * 100, 4)))
    assert failures == [], f"{len(failures)} areas off by more than 0.5 %: {failures[:5]}"


def test_min_and_max_are_exact() -> None:
    rng = np.random.default_rng(3)
    areas = log_uniform(rng, 5_000)
    sketch = sketch_of(areas[:2500], areas[2500:])
    assert sketch.minimum == int(areas.min())
    assert sketch.maximum == int(areas.max())
    assert sketch.quantile(0.0) == int(areas.min())
    assert sketch.quantile(1.0) == int(areas.max())
    assert sketch.total == 5_000


def test_single_large_area_is_exact_through_clamping() -> None:
    sketch = sketch_of(np.array([123_456_789]))
    assert [sketch.quantile(q) for q in (0.0, 0.5, 1.0)] == [123_456_789] * 3


def test_merge_of_split_halves_equals_the_whole() -> None:
    rng = np.random.default_rng(9)
    areas = np.concatenate([rng.integers(0, 1025, 3000), log_uniform(rng, 3000)])
    rng.shuffle(areas)
    whole = sketch_of(areas)
    left, right = sketch_of(areas[:1234]), sketch_of(areas[1234:])
    for merged in (left.merge(right), right.merge(left)):
        assert merged == whole
        assert [merged.quantile(q) for q in QS] == [whole.quantile(q) for q in QS]
    # The inputs are not modified.
    assert left == sketch_of(areas[:1234])
    assert right == sketch_of(areas[1234:])


def test_merge_is_associative_and_accepts_empty() -> None:
    rng = np.random.default_rng(12)
    parts = [log_uniform(rng, n) for n in (10, 200, 1)]
    a, b, c = (sketch_of(p) for p in parts)
    assert a.merge(b).merge(c) == a.merge(b.merge(c)) == sketch_of(*parts)
    empty = AreaSketch()
    assert a.merge(empty) == a
    assert empty.merge(a) == a
    assert empty.merge(AreaSketch()) == AreaSketch()


def test_repeated_adds_equal_one_add() -> None:
    rng = np.random.default_rng(4)
    areas = log_uniform(rng, 1000)
    assert sketch_of(*np.array_split(areas, 7)) == sketch_of(areas)


def test_memory_grows_with_log_of_max_area_not_count() -> None:
    rng = np.random.default_rng(8)
    sketch = sketch_of(rng.integers(1025, 10**8, 200_000))
    # log(10**8 / 1025) / log(1.01) ~ 1155 buckets at most above the exact range.
    assert len(sketch.counts) <= 1160
    assert sketch.total == 200_000
