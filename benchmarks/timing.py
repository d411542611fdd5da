"""Timing and reporting helpers shared by the sections: medians of repeats, tables, ratios."""

from __future__ import annotations

import gc
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


class BenchmarkError(RuntimeError):
    """The contenders disagree, or a run did not do what it should: figures would be meaningless."""


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated calls, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        """Summarise individual call times (ms)."""
        return cls(statistics.median(samples_ms), min(samples_ms), max(samples_ms), len(samples_ms))

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-able data."""
        return asdict(self)


def _timed_ms(
    function: Callable[[], object], clock: Callable[[], float] = time.perf_counter
) -> float:
    # The collector is paused so a collection of an earlier call's garbage is not billed here.
    gc.collect()
    gc.disable()
    try:
        start = clock()
        function()
        return (clock() - start) * 1000.0
    finally:
        gc.enable()


def sample_ms(function: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``function()``, no warm-up."""
    return [_timed_ms(function) for _ in range(repeats)]


def time_call(function: Callable[[], object], *, repeats: int, warmup: int = 1) -> Timing:
    """Time ``function()`` ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    return Timing.from_samples(sample_ms(function, repeats))


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time several contenders round-robin (A B C A B C ...), so that a burst of load from
    elsewhere on the machine hits every contender alike rather than whichever ran then.
    ``clock`` is wall-clock time unless given (``time.process_time``: the CPU time of this
    process, which load elsewhere inflates far less on a shared machine)."""
    for _ in range(warmup):
        for function in calls.values():
            function()
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(repeats):
        for label, function in calls.items():
            samples[label].append(_timed_ms(function, clock))
    return {label: Timing.from_samples(values) for label, values in samples.items()}


def seconds(function: Callable[[], object]) -> tuple[float, Any]:
    """Wall-clock seconds of one call, and its result."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def ratio(value: float, reference: float) -> float:
    """``value / reference`` (infinity when the reference is 0)."""
    return value / reference if reference else float("inf")


def format_ratio(value: float) -> str:
    """A ratio for a table: ``120x``, ``2.4x``, ``0.85x``."""
    if value >= 100:
        return f"{value:.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def format_ms(value: float) -> str:
    """Milliseconds with sensible precision."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print an aligned plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    print()
    print(title)
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def stream_figures(stream: list[dict[str, Any]], wall_s: float, workers: int) -> dict[str, Any]:
    """Per-worker task time of one run of ``wall_s`` seconds on ``workers`` workers, from the
    records of ``distributed.get_task_stream``: tasks, their total time, the busiest worker's and
    the mean worker's task time, the longest task, and the run's time outside the busiest
    worker's tasks (listing, planning, scheduling, commit)."""
    busy: dict[str, float] = defaultdict(float)
    longest = 0.0
    for task in stream:
        for step in task.get("startstops", ()):
            if step.get("action") == "compute":
                span = step["stop"] - step["start"]
                busy[str(task.get("worker"))] += span
                longest = max(longest, span)
    total = sum(busy.values())
    busiest = max(busy.values(), default=0.0)
    return {
        "tasks": len(stream),
        "task_s": total,
        "busiest_worker_s": busiest,
        "mean_worker_s": total / workers,
        "longest_task_s": longest,
        "outside_tasks_s": wall_s - busiest,
        "workers_used": len(busy),
    }


def speedup_split(one: Mapping[str, Any], two: Mapping[str, Any]) -> dict[str, float]:
    """Why a 2-worker run misses half the 1-worker run's time: ``wall2 - wall1 / 2``, from the
    two runs' :func:`stream_figures`, split into the time outside tasks that does not shrink
    (``outside2 - outside1 / 2``), the imbalance between the workers (busiest minus mean) and the
    inflation of the task time itself (``(tasks2 - tasks1) / 2``: cores shared by the workers,
    the client and the scheduler). The three add up to ``wall2 - wall1 / 2``."""
    s1, s2 = one, two
    return {
        "time outside tasks (list, plan, schedule, commit)":
            s2["outside_tasks_s"] - s1["outside_tasks_s"] / 2,
        "imbalance between the workers": s2["busiest_worker_s"] - s2["mean_worker_s"],
        "task time inflation (cores shared with client and scheduler)":
            (s2["task_s"] - s1["task_s"]) / 2,
    }  # fmt: skip
