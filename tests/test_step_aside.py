"""Tests of :func:`pipeline.graph.step_aside`: a task that only waits on storage lets its worker
thread's next task start, at most one task per worker thread stands aside, and nothing steps
aside where it is not allowed or in-process.

Ordering is asserted with events, never time: a first task that did not step aside would keep
the single worker thread, so the second task could not start and the first one's wait would
end unanswered. The end-to-end proofs (exact tables with stepping aside under storage faults and
a worker killed while a task stands aside) are in ``tests/test_faults.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import graph

pytestmark = pytest.mark.timeout(120)

#: Set by the second task once it tried to step aside itself.
_SECOND_TRIED = threading.Event()


def _first() -> tuple[bool, bool]:
    """Steps aside, then waits for the second task to run on the (single) worker thread."""
    with graph.may_step_aside(True):
        aside = graph.step_aside()
        return aside, _SECOND_TRIED.wait(60)


def _second() -> bool:
    """Tries to step aside while the first task still stands aside."""
    with graph.may_step_aside(True):
        aside = graph.step_aside()
        _SECOND_TRIED.set()
        return aside


def _not_allowed() -> bool:
    with graph.may_step_aside(False):
        return graph.step_aside()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One in-process worker with one thread (the tasks share this module's events)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as started,
    ):
        yield started


def test_a_task_stepping_aside_lets_the_next_one_run_one_per_thread(client: Any) -> None:
    _SECOND_TRIED.clear()
    first = client.submit(_first, pure=False)
    second = client.submit(_second, pure=False)
    # The second task ran while the first stood aside, and could not step aside itself: the
    # thread's one slot was taken (a worker holds at most twice its threads' tasks).
    assert first.result() == (True, True)
    assert second.result() is False
    # The first task gave its slot back when it ended.
    assert client.submit(_second, pure=False).result() is True


def test_nothing_steps_aside_where_not_allowed_or_in_process(client: Any) -> None:
    assert client.submit(_not_allowed, pure=False).result() is False
    assert graph.step_aside() is False  # no block allows it
    with graph.may_step_aside(True):
        assert graph.step_aside() is False  # no Dask worker: nothing would run meanwhile


# In-process runs on remote storage: two work items under way at once, on threads of their own.


def _under_way_in_pairs(peak: list[int], lock: threading.Lock, barrier: threading.Barrier) -> Any:
    """A work item that ends only once another one is under way too (a barrier of two), and
    records how many were under way at most."""

    def work(item: int) -> int:
        with lock:
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
        barrier.wait(timeout=60)
        with lock:
            peak[0] -= 1
        return item * 10

    return work


def test_an_in_process_run_on_remote_storage_has_two_items_under_way() -> None:
    from pipeline.config import ExecutionOptions

    peak, lock, barrier = [0, 0], threading.Lock(), threading.Barrier(2)
    work = _under_way_in_pairs(peak, lock, barrier)
    with graph.open_executor(ExecutionOptions(scheduler="sync"), remote_storage=True) as executor:
        # One after another, the first item would wait at the barrier until it broke.
        assert sorted(executor.map(work, [1, 2, 3, 4], label="t")) == [10, 20, 30, 40]
    assert peak == [0, graph.IN_PROCESS_OVERLAP] == [0, 2]


def test_an_in_process_run_on_local_storage_runs_items_one_after_another() -> None:
    from pipeline.config import ExecutionOptions

    def where(item: int) -> tuple[int, bool]:
        return item, threading.current_thread() is threading.main_thread()

    with graph.open_executor(ExecutionOptions(scheduler="sync")) as executor:
        assert list(executor.map(where, [1, 2, 3], label="t")) == [(1, True), (2, True), (3, True)]


def test_an_overlapped_item_s_error_stops_the_run_and_starts_nothing_more() -> None:
    started: list[int] = []
    second_may_end, second_ended = threading.Event(), threading.Event()

    def work(item: int) -> int:
        started.append(item)
        if item == 1:
            raise ValueError("input 1 is bad")
        second_may_end.wait(60)
        second_ended.set()
        return item

    executor = graph.Executor(None, overlap=2)
    with pytest.raises(ValueError, match="input 1 is bad"):
        list(executor.map(work, [1, 2, 3, 4], label="t"))
    # The item under way is left to end on its thread (the CLI then ends its process at once
    # instead of waiting for it), and no other one starts.
    assert graph.work_left_behind() is True
    second_may_end.set()
    assert second_ended.wait(60)
    assert sorted(started) == [1, 2]
    for _ in range(600):
        if not graph.work_left_behind():
            break
        time.sleep(0.1)
    assert graph.work_left_behind() is False
