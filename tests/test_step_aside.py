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
