"""Dask wiring only: where tasks run, mapping a task over batches, streaming back small results.

No statistic is computed here. Tasks write their own outputs on the workers and return small
summaries, which are consumed as they complete so the client holds one at a time.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pipeline import logs
from pipeline.config import SCHEDULER_ENV, ExecutionOptions
from pipeline.io.storage import in_background
from pipeline.stopping import stop_if_asked

#: glibc malloc settings for the worker processes we start. Dask sets MALLOC_TRIM_THRESHOLD_
#: for its workers, which also freezes glibc's mmap threshold at 128 KiB: every inflate strip
#: and rescaled mask buffer would then be a fresh mmap, page-faulted in and unmapped again
#: (a 1080p mask measured 46% slower). Up to 8 MiB, buffers are reused from the heap instead,
#: which Dask's trim threshold still returns to the system when freed at its top.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(8 << 20)}
#: Dask configuration of the local cluster a run starts (its scheduler and nannies live in the
#: client's process), measured on two cores where every CPU second they take is a task's:
#: * no statistical profiler in the workers: it samples the task thread's stack every 10 ms on
#:   the worker's event loop, holding the GIL the task needs — 25-40% of a worker's event-loop
#:   CPU during a run of 1080p masks (5% of a 2-worker run's CPU on 40 images); it feeds only
#:   the dashboard's profile page;
#: * event-loop health ticks every 200 ms (Dask: 20 ms; a loop blocked for 3 s is still
#:   reported) and the system monitor's samples every 2 s (Dask: 0.5 s; the dashboard's system
#:   charts, not the memory limits): an idle cluster of 2 workers took 43-49 ms of CPU per
#:   second across its processes, 24 with both — about 1% of the machine during a run.
#: A cluster started by the user (option ``scheduler``) keeps its own configuration.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
}

LOG = logging.getLogger(__name__)


class SchedulerError(RuntimeError):
    """The Dask scheduler named by the options or the environment cannot be reached, or the
    local cluster cannot be started."""


#: A run with no scheduler given (option or environment) and no worker count runs in-process
#: when its inputs are fewer than SMALL_RUN_FILES files and SMALL_RUN_BYTES bytes: starting a
#: LocalCluster (worker processes, their imports and numba cache loads) takes 2-8 s on two
#: cores, more than two workers could save on about a thousand files or 32 MiB of masks.
SMALL_RUN_FILES = 1000
SMALL_RUN_BYTES = 32 << 20


@dataclass(frozen=True)
class InputSize:
    """What a run is about to read, as listed: files, and their bytes when the listing says."""

    files: int
    bytes: int | None = None

    def small(self) -> bool:
        """Below both small-run limits (an unknown size counts by its files only)."""
        return self.files < SMALL_RUN_FILES and (self.bytes or 0) < SMALL_RUN_BYTES

    def describe(self) -> str:
        size = "" if self.bytes is None else f", {self.bytes / (1 << 20):.1f} MiB"
        return f"{self.files} input files{size}"


#: Task retries on another worker after a worker dies or a task raises (e.g. storage hiccups).
TASK_RETRIES = 2
#: Work items an in-process run has under way at once when its storage is remote: while one
#: waits on its last round trips (writes, ledger entry), the next reads and measures, as a
#: worker's tasks step aside on a cluster (:func:`step_aside`). Two, like a worker thread's
#: bound there: memory stays at two batches.
IN_PROCESS_OVERLAP = 2


@dataclass
class Executor:
    """Runs one function over many items: in-process (``sync``) or on a Dask cluster."""

    client: Any | None  # distributed.Client, or None for in-process
    description: dict[str, Any] = field(default_factory=dict)
    #: In-process only: items under way at once, each on a thread of its own (1: one after
    #: another in the calling thread).
    overlap: int = 1

    @property
    def total_threads(self) -> int:
        """Threads across all workers (1 in-process)."""
        return int(self.description.get("threads") or 1)

    def map(
        self,
        function: Callable[..., Any],
        items: Sequence[Any],
        *args: Any,
        label: str,
        progress: bool = False,
    ) -> Iterator[Any]:
        """Yield ``function(item, *args)`` for every item, in completion order.

        On a cluster each item is one task (retried up to :data:`TASK_RETRIES` times); results
        are released as soon as they are yielded. A stop asked for by a signal is looked for
        as each item ends (:func:`~pipeline.stopping.stop_if_asked`): a run whose ``Stopped``
        was lost (dropped in a C callback, such as llvmlite's while numba loads a kernel)
        stops there instead of running on to its commit. ``progress`` draws a bar; without one,
        progress lines are logged (see :func:`pipeline.logs.progress`).
        """
        bar = logs.progress(len(items), label, bar=progress)
        try:
            if self.client is None:
                calls = [functools.partial(function, item, *args) for item in items]
                results = (
                    _overlapped(calls, self.overlap) if self.overlap > 1 else (c() for c in calls)
                )
                for result in results:
                    stop_if_asked()
                    yield result
                    bar.update(1)
                return
            from distributed import as_completed

            futures = self.client.map(
                function, items, *[[a] * len(items) for a in args],
                key=[f"{label}-{i}" for i in range(len(items))],
                pure=False, retries=TASK_RETRIES,
            )  # fmt: skip
            for future in as_completed(futures):
                stop_if_asked()
                yield future.result()
                future.release()
                bar.update(1)
        finally:
            bar.close()


#: Work items of in-process runs that stopped early while they were under way (see
#: :func:`_overlapped`), until they end.
_left_behind: list[Future[Any]] = []


def _overlapped(calls: Sequence[Callable[[], Any]], overlap: int) -> Iterator[Any]:
    """The results of ``calls`` in completion order, ``overlap`` of them under way at once,
    each on a thread of its own; the next starts as soon as one ends.

    A call's error is raised at once. When the caller stops early (an error, a stop signal,
    the storage watchdog: the wait here is interruptible), no other call starts, and those
    under way are left to end on their threads (:func:`work_left_behind`): what they write is
    staged work no commit uses.
    """
    pending = iter(calls)
    finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    under_way: set[Future[Any]] = set()

    def start(call: Callable[[], Any]) -> None:
        future = in_background(call, name="pipeline-work")
        under_way.add(future)
        future.add_done_callback(finished.put)

    for call in itertools.islice(pending, overlap):
        start(call)
    try:
        while under_way:
            future = finished.get()
            under_way.discard(future)
            result = future.result()
            for call in itertools.islice(pending, 1):
                start(call)
            yield result
    finally:
        _left_behind.extend(future for future in under_way if not future.done())


def work_left_behind() -> bool:
    """Whether work items of an in-process run that stopped early are still under way in this
    process: e.g. waiting out a storage client's retries against a storage that went away
    (botocore's schedule takes minutes), which the interpreter's exit would wait for."""
    _left_behind[:] = [future for future in _left_behind if not future.done()]
    return bool(_left_behind)


# ---------------------------------------------------------------------------------------------
# A task waiting on storage steps aside: the worker thread's next task starts meanwhile
# ---------------------------------------------------------------------------------------------

#: The calling thread's task: whether it may step aside, and the slot it holds once it has.
_aside = threading.local()
_aside_lock = threading.Lock()
#: Per Dask worker, one slot per worker thread: tasks stepped aside and still waiting.
_aside_slots: weakref.WeakKeyDictionary[Any, threading.BoundedSemaphore] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def may_step_aside(enabled: bool) -> Iterator[None]:
    """The body of a task that may :func:`step_aside` once it only waits on storage (with
    ``enabled``: its outputs go to remote storage, where finishing its writes and recording
    it take round trips). On leaving the block the task gives its slot back."""
    _aside.enabled, _aside.slot = enabled, None
    try:
        yield
    finally:
        slot = _aside.slot
        _aside.enabled, _aside.slot = False, None
        if slot is not None:
            slot.release()


def step_aside() -> bool:
    """Let the worker thread running this task start its next task while this one finishes
    its round trips to storage (its writes behind, its ledger entry): Dask's ``secede``, so a
    worker's batches overlap on remote storage — the next batch's reads and measuring run
    while this one's last writes are in flight. The results are the same either way; only
    the waits overlap.

    Bounded: at most one task per worker thread waits aside (a slot per thread of each
    worker), so a worker holds at most twice its threads' batches in memory; when the slots
    are taken, the task waits in its thread as before. Nothing happens outside a
    :func:`may_step_aside` block that allows it, or in-process (no Dask worker: nothing else
    would run meanwhile). Returns whether the task is aside now.
    """
    if not getattr(_aside, "enabled", False) or _aside.slot is not None:
        return bool(getattr(_aside, "slot", None))
    try:
        from distributed import get_worker, secede

        worker = get_worker()
    except (ImportError, ValueError):  # not in a Dask worker's task
        return False
    with _aside_lock:
        slots = _aside_slots.get(worker)
        if slots is None:
            slots = _aside_slots[worker] = threading.BoundedSemaphore(max(1, worker.state.nthreads))
    if not slots.acquire(blocking=False):
        return False
    _aside.slot = slots
    secede()
    return True


def _describe(client: Any, kind: str) -> dict[str, Any]:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    description = {
        "kind": kind,
        "address": client.scheduler.address,
        "dashboard": client.dashboard_link if "dashboard" in info.get("services", {}) else None,
        "workers": len(workers),
        "threads": sum(w.get("nthreads", 1) for w in workers.values()),
    }
    if description["dashboard"]:
        LOG.info("Dask dashboard: %s", description["dashboard"])
    return description


def local_cluster_settings() -> contextlib.AbstractContextManager[Any]:
    """Dask configuration under which a ``LocalCluster`` spawns its workers with
    :data:`WORKER_MALLOC_ENV` (environment values the user configured take precedence), and
    its scheduler, nannies and workers with :data:`LOCAL_CLUSTER_CONFIG` (the nannies hand
    their configuration to the workers)."""
    import dask

    key = "distributed.nanny.pre-spawn-environ"
    environ = {**WORKER_MALLOC_ENV, **dask.config.get(key, default={})}
    return dask.config.set({key: environ, **LOCAL_CLUSTER_CONFIG})


@contextlib.contextmanager
def open_executor(
    execution: ExecutionOptions,
    client: Any | None = None,
    inputs: InputSize | None = None,
    *,
    remote_storage: bool = False,
) -> Iterator[Executor]:
    """The executor a run uses.

    Parameters
    ----------
    execution : the ``scheduler`` option decides: ``"sync"`` runs in-process; an address
        (or ``DASK_SCHEDULER_ADDRESS``) connects to an existing cluster; otherwise a
        ``LocalCluster`` with one single-threaded worker process per core is started and
        stopped again — unless ``workers`` is not given either and ``inputs`` are small
        (:meth:`InputSize.small`): then the run stays in-process, which the log says and the
        description records (``kind`` ``sync``, with its ``reason``).
    client : an existing ``distributed.Client`` (e.g. a notebook's), used as is and left open.
    inputs : what the run is about to read, for the small-run choice.
    remote_storage : the run reads or writes remote storage: an in-process run then has
        :data:`IN_PROCESS_OVERLAP` work items under way at once.
    """
    if client is not None:
        yield Executor(client, _describe(client, "client"))
        return
    scheduler = execution.resolved_scheduler()
    if scheduler and execution.workers is not None:
        LOG.warning("option 'workers' (%d) is ignored: scheduler %r starts no local cluster",
                    execution.workers, scheduler)  # fmt: skip
    overlap = IN_PROCESS_OVERLAP if remote_storage else 1
    if scheduler == "sync":
        yield Executor(None, {"kind": "sync", "address": None, "workers": 1, "threads": 1}, overlap)
        return
    if not scheduler and execution.workers is None and inputs is not None and inputs.small():
        reason = (
            f"small run: {inputs.describe()}, below {SMALL_RUN_FILES} files and "
            f"{SMALL_RUN_BYTES >> 20} MiB"
        )
        LOG.info("%s: running in-process, no local cluster started", reason)
        yield Executor(
            None,
            {"kind": "sync", "address": None, "workers": 1, "threads": 1, "reason": reason},
            overlap,
        )
        return
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            remote = Client(scheduler)
        except (OSError, TimeoutError, ValueError) as exc:
            source = "option 'scheduler'" if execution.scheduler else SCHEDULER_ENV
            raise SchedulerError(
                f"cannot reach the Dask scheduler at {scheduler} (from {source}): {exc}"
            ) from exc
        with remote:
            yield Executor(remote, _describe(remote, "external"))
        return
    workers = execution.workers or os.cpu_count() or 1
    # One thread per worker: decoding and the kernels hold the GIL part of the time, and
    # processes keep one bad input from stalling the others.
    with contextlib.ExitStack() as stack:
        stack.callback(logging.disable, logging.root.manager.disable)  # after the cluster closed
        try:
            with local_cluster_settings():
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address="127.0.0.1:0",
                        host="127.0.0.1",
                    )
                )
            local = stack.enter_context(Client(cluster))
        except Exception as exc:  # a worker that died while starting, no free port, ...
            raise SchedulerError(
                f"cannot start a local Dask cluster of {workers} worker processes "
                f"(option 'workers'): {type(exc).__name__}: {exc}"
            ) from exc
        stack.enter_context(_quiet_teardown(local))
        yield Executor(local, _describe(local, "local"))


@contextlib.contextmanager
def _quiet_teardown(client: Any) -> Iterator[None]:
    """Once a run on our own local cluster has ended (committed, failed, or stopped by a
    signal), silence logging up to ERROR in this process and in the workers while the cluster
    closes: Dask's warnings about the tasks it cancels and the workers it kills, and its errors
    from a worker whose heartbeat meets the closing scheduler, say nothing about the run's
    outcome, and would bury the line that does (printed, not logged). At log level debug they
    stay. The caller restores this process's logging once the cluster is closed."""
    try:
        yield
    finally:
        if not LOG.isEnabledFor(logging.DEBUG):
            logging.disable(logging.ERROR)
            with contextlib.suppress(Exception):
                client.run(logging.disable, logging.ERROR, on_error="ignore")
