"""A run stops when its storage answers nothing for ``storage_timeout`` seconds.

The storage clients retry on their own (botocore: up to 8 attempts per request, with backoff up
to 20 s, on every request of every task, and Dask retries failed tasks), so an endpoint that went
away turns into many minutes of retries. The watchdog bounds that from outside: a thread of the
run's client process asks each remote storage of the run a small question (``info`` of the
folder) every few seconds, on a filesystem instance of its own that does not retry; any answer
counts, a missing or forbidden object included. When no answer came for ``storage_timeout``
seconds, the watchdog records a :class:`~pipeline.io.storage.StorageError` naming the storage
and its last error, and interrupts the run's thread (the main thread); the run turns that
interruption into the error (see :func:`watch_storage`). Nothing was committed: the commit is
the run's last step.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fsspec.core import url_to_fs

from pipeline.io.storage import Location, StorageError, url_protocol

LOG = logging.getLogger(__name__)

#: Filesystems that cannot go away under a run: nothing to watch.
LOCAL_PROTOCOLS = frozenset({"file", "local", "memory"})
#: Longest pause between two questions to a storage, in seconds.
MAX_PROBE_INTERVAL = 5.0
#: Answers that prove the storage is there although the question failed.
_ANSWERS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


@dataclass
class _Watched:
    """One storage the run uses: what the messages call it, and its last error."""

    option: str
    location: Location
    fs: Any = None
    last_answer: float = 0.0
    last_error: str = "no answer yet"

    def describe(self) -> str:
        endpoint = _endpoint(self.location)
        where = f" at {endpoint}" if endpoint else ""
        return f"option {self.option!r} ({self.location.url}{where})"


def _endpoint(location: Location) -> str | None:
    """The endpoint URL an ``s3://`` location is configured with, for messages."""
    options = location.storage_options
    client_kwargs = options.get("client_kwargs")
    nested = client_kwargs.get("endpoint_url") if isinstance(client_kwargs, Mapping) else None
    endpoint = options.get("endpoint_url") or nested
    return str(endpoint) if endpoint else None


def _probe_filesystem(location: Location, timeout: float) -> Any:
    """A filesystem for ``location`` of the watchdog's own (no shared listing cache) that
    answers or fails within about ``timeout`` seconds (S3: one attempt, short timeouts)."""
    options = dict(location.storage_options)
    s3 = location.url.startswith(("s3://", "s3a://"))
    if s3:
        config = dict(options.get("config_kwargs") or {})
        config.update(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
        options["config_kwargs"] = config
    fs, _ = url_to_fs(location.url, skip_instance_cache=True, **options)
    if s3:
        # s3fs asks again itself after a timeout (5 times): against a storage that takes
        # requests but never answers, one probe took 30 s and a 10 s timeout tripped at 33 s.
        fs.retries = 1
    return fs


class StorageWatchdog:
    """Watches the remote storages of a run from a daemon thread (see the module docstring).

    Parameters
    ----------
    locations : the run's storages by option name (``source``, ``output``...); local ones are
        not watched.
    timeout : seconds without any answer after which the run is stopped.
    interrupt : interrupt the main thread when tripping (the run runs there).
    """

    def __init__(self, locations: Mapping[str, Location], timeout: float, interrupt: bool) -> None:
        now = time.monotonic()
        self.timeout = timeout
        self.interval = min(MAX_PROBE_INTERVAL, timeout / 4)
        self.error: StorageError | None = None
        self._interrupt = interrupt
        self._watched = [
            _Watched(option, location, last_answer=now)
            for option, location in locations.items()
            if url_protocol(location.url) not in LOCAL_PROTOCOLS
        ]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="storage-watchdog", daemon=True)

    @property
    def active(self) -> bool:
        """Whether any storage of the run is remote (and so watched)."""
        return bool(self._watched)

    def start(self) -> None:
        """Start watching (nothing to do when every storage is local)."""
        if self.active:
            self._thread.start()

    def stop(self) -> None:
        """Stop watching; after this returns the watchdog interrupts nothing."""
        with self._lock:
            self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            for watched in self._watched:
                self._probe(watched)
            now = time.monotonic()
            # In option order, so the message is the same whichever probe was slower.
            for watched in self._watched:
                if now - watched.last_answer > self.timeout:
                    self._trip(watched)
                    return

    def _probe(self, watched: _Watched) -> None:
        try:
            if watched.fs is None:
                watched.fs = _probe_filesystem(watched.location, self.interval)
            watched.fs.info(watched.location.url)
        except _ANSWERS:
            pass
        except Exception as exc:  # every failure to answer counts: the storage's own types vary
            watched.last_error = f"{type(exc).__name__}: {exc}"
            return
        watched.last_answer = time.monotonic()

    def _trip(self, watched: _Watched) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self.error = StorageError(
                f"storage of {watched.describe()} answered no request for "
                f"{self.timeout:g} s (option 'storage_timeout'); last error: {watched.last_error}"
            )
            LOG.debug("storage watchdog tripped: %s", self.error)
            if self._interrupt:
                _interrupt_main()


def _interrupt_main() -> None:
    """Interrupt the main thread as Ctrl-C does: a real SIGINT sent to that thread, so a wait
    inside C (a lock, a future's result) wakes up as well; ``_thread.interrupt_main`` only
    flags the signal for the next bytecode. Sent only while a Python handler takes SIGINT
    (Python's default one raises ``KeyboardInterrupt``): with ``SIG_DFL`` it would kill."""
    if callable(signal.getsignal(signal.SIGINT)):
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


@contextlib.contextmanager
def watch_storage(locations: Mapping[str, Location], timeout: float) -> Iterator[StorageWatchdog]:
    """Run the body under a :class:`StorageWatchdog`; when it trips, whatever interruption
    reaches the body becomes its :class:`~pipeline.io.storage.StorageError`.

    From a thread other than the main one, the watchdog cannot interrupt the run: there the
    bound is the storage client's own retries.
    """
    watchdog = StorageWatchdog(
        locations, timeout, interrupt=threading.current_thread() is threading.main_thread()
    )
    watchdog.start()
    try:
        yield watchdog
    except BaseException:
        watchdog.stop()
        if watchdog.error is not None:
            raise watchdog.error from None
        raise
    watchdog.stop()
