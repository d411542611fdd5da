"""Where bytes live: an fsspec URL plus storage options, rebuilt on whichever worker needs it.

A :class:`Location` is small and picklable, so Dask tasks receive locations, never clients or
open filesystems; fsspec's instance cache makes rebuilding one on a worker cheap.

Storage options come from the caller (CLI ``--storage-option``, job file, API) over the
environment variable ``MASK_PIPELINE_STORAGE_OPTIONS`` (a JSON object); s3fs/botocore also read
their own ``AWS_*`` variables (credentials, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``...). Nothing about
endpoints or credentials is set in code. For ``s3://`` one default is added unless the caller sets
``config_kwargs``: botocore's *adaptive* retry mode with at most :data:`S3_MAX_ATTEMPTS` attempts,
which backs off on throttling (``SlowDown``, 503) and connection errors, then fails the request,
and a connection pool of :data:`S3_MAX_POOL_CONNECTIONS`.

A batch task keeps many requests in flight through :class:`BatchIO`: its inputs prefetched in
the order it measures them (:meth:`BatchIO.prefetch`), its outputs written behind
(:meth:`BatchIO.behind`), at most ``io_concurrency`` requests at once, on the filesystem's own
event loop for async filesystems (s3fs, gcsfs, adlfs, http) and on a few threads otherwise.
No request asks what the listing already said: objects are read whole in one GET (s3fs would
first ask for the size with a HEAD), or a byte range of one in one ranged GET
(:meth:`BatchIO.prefetch_ranges`), and written with one PUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import posixpath
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem


class StorageError(RuntimeError):
    """Storage that cannot be used at all (missing root, no access): the run cannot proceed."""


#: Environment variable holding default storage options as a JSON object.
STORAGE_OPTIONS_ENV = "MASK_PIPELINE_STORAGE_OPTIONS"
#: Attempts per S3 request (first try included) before botocore gives up.
S3_MAX_ATTEMPTS = 8
#: Connections per S3 client (botocore's default is 10): one worker process's threads share
#: its client, each with up to ``io_concurrency`` requests in flight.
S3_MAX_POOL_CONNECTIONS = 64
#: Requests in flight per worker thread by default (``io_concurrency``): at 40 ms per request
#: and a few ms of work per input, 16 keep the compute busy while staying far below what an
#: object store throttles (thousands of requests per second per prefix).
DEFAULT_IO_CONCURRENCY = 16


def storage_options_with_environment(explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's storage options over those of ``MASK_PIPELINE_STORAGE_OPTIONS``.

    Raises
    ------
    StorageError
        When the variable is not a JSON object.
    """
    return {**_environment_storage_options(), **explicit}


def _environment_storage_options() -> dict[str, Any]:
    """Storage options from ``MASK_PIPELINE_STORAGE_OPTIONS`` (empty when unset).

    Raises
    ------
    StorageError
        When the variable is not a JSON object.
    """
    text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StorageError(f"{STORAGE_OPTIONS_ENV} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StorageError(f"{STORAGE_OPTIONS_ENV} must be a JSON object")
    return value


def _with_defaults(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(options)
    if url.startswith(("s3://", "s3a://")) and "config_kwargs" not in merged:
        merged["config_kwargs"] = {
            "retries": {"max_attempts": S3_MAX_ATTEMPTS, "mode": "adaptive"},
            "max_pool_connections": S3_MAX_POOL_CONNECTIONS,
        }
    return merged


def storable_name(name: str) -> str:
    """A file name as valid Unicode text, for tables, messages, hashes and output paths.

    Local file systems allow names of any bytes; Python lists a byte that is not UTF-8 as a
    lone surrogate (PEP 383), which no Arrow ``utf8`` column, JSON encoder or hash input
    accepts. Such a byte is written as the four characters ``\\xNN`` (``b"\\xffa.png"`` is
    listed as ``\\xffa.png``); other lone surrogates as ``\\udNNN``. Valid names are unchanged.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _read_options(fs: AbstractFileSystem) -> dict[str, Any]:
    """``cat_file`` keywords that read a whole object in one request: s3fs otherwise asks for
    its size first (a HEAD per object) to split large objects into ranged reads."""
    return {"max_concurrency": 1} if _protocols(fs) & {"s3", "s3a"} else {}


@dataclass(frozen=True)
class InputFile:
    """A discovered input: path relative to its root (POSIX), size and a change token.

    ``rel`` is always valid Unicode (:func:`storable_name`); ``stored`` is the storage's own
    name when ``rel`` had to escape it, and :attr:`key` is what reads the file.
    """

    rel: str
    size: int
    version: str  # ETag or modification time: part of the deterministic output names
    stored: str | None = None

    @classmethod
    def listed(cls, stored: str, size: int, version: str) -> InputFile:
        """The input a listing found under the name ``stored``."""
        rel = storable_name(stored)
        return cls(rel, size, version, None if rel == stored else stored)

    @property
    def key(self) -> str:
        """The path below the root that the storage knows the file by."""
        return self.rel if self.stored is None else self.stored

    @property
    def name(self) -> str:
        """Base name of the file."""
        return posixpath.basename(self.rel)

    @property
    def folder(self) -> str:
        """Folder relative to the root ('' for the root itself)."""
        return posixpath.dirname(self.rel)


@dataclass(frozen=True)
class Location:
    """A folder in any fsspec filesystem (local path, ``file://``, ``s3://``, ``memory://``...)."""

    url: str
    # Never in repr: task arguments are printed in worker logs, and options hold credentials.
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Seconds the storage may answer nothing before the run gives up on it (the run's
    #: ``storage_timeout``, enforced by :mod:`pipeline.io.watchdog`); clients with retries of
    #: their own (delta-rs) stop retrying after it. ``None``: their own defaults.
    storage_timeout: float | None = None

    @property
    def fs(self) -> AbstractFileSystem:
        """The filesystem (cached by fsspec per protocol and options)."""
        return self._resolved[0]

    @property
    def root(self) -> str:
        """The folder's path inside its filesystem, without a trailing slash."""
        return self._resolved[1]

    @functools.cached_property
    def _resolved(self) -> tuple[AbstractFileSystem, str]:
        # Parsing the URL costs more than a small read; do it once per Location instance.
        fs, path = url_to_fs(self.url, **_with_defaults(self.url, self.storage_options))
        return fs, path.rstrip("/") or "/"

    def __getstate__(self) -> dict[str, Any]:
        # Ship the URL and options only: each worker resolves its own filesystem.
        return {
            "url": self.url,
            "storage_options": self.storage_options,
            "storage_timeout": self.storage_timeout,
        }

    def path(self, rel: str) -> str:
        """Filesystem path of ``rel`` below this location."""
        return posixpath.join(self.root, rel) if rel else self.root

    def url_of(self, rel: str) -> str:
        """A URL naming ``rel`` below this location, for messages and records."""
        return posixpath.join(self.url.rstrip("/"), rel) if rel else self.url

    def read_bytes(self, rel: str) -> bytes:
        """The whole content of one file, in one request."""
        fs = self.fs
        if _plain_local(fs):
            with open(self.path(rel), "rb") as file:
                return file.read()
        return bytes(fs.cat_file(self.path(rel), **_read_options(fs)))

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of one file, in one request."""
        return bytes(self.fs.cat_file(self.path(rel), start=start, end=end))

    def read_many(
        self, rels: Sequence[str], concurrency: int = DEFAULT_IO_CONCURRENCY
    ) -> list[bytes]:
        """The contents of ``rels`` (in order), with up to ``concurrency`` requests in flight,
        one GET each; the first file that cannot be read raises (``FileNotFoundError``...)."""
        # Sizes unknown and every content returned at once: no read-ahead budget to keep.
        with BatchIO(concurrency, max_bytes=sys.maxsize) as io:
            reads = io.prefetch(self, [(rel, 0) for rel in rels])
            return [reads.take(self, rel) for rel in rels]

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one file (one PUT on object stores), creating parent folders where needed.

        Raises
        ------
        StorageError
            When the storage refuses the write (no access, no bucket, ...) after the client's
            own retries: the output is unusable, so the run stops, naming the object.
        """
        try:
            self._put(rel, data)
        except OSError as exc:
            raise self._write_error(rel, exc) from exc

    def replace_bytes(self, rel: str, data: bytes) -> None:
        """Write one file whole, replacing any earlier one, so that a reader sees either the
        old or the new bytes, never a part: one PUT on object stores (atomic there), a
        temporary file moved into place elsewhere (``<rel>.<random>.partial``).

        Raises
        ------
        StorageError
            As :meth:`write_bytes`.
        """
        if _is_object_store(self.fs):
            self.write_bytes(rel, data)
            return
        staging = f"{rel}.{uuid.uuid4().hex}.partial"
        self.write_bytes(staging, data)
        try:
            self.fs.mv(self.path(staging), self.path(rel))
        except OSError as exc:
            raise self._write_error(rel, exc) from exc

    def _put(self, rel: str, data: bytes) -> None:
        fs, target = self.fs, self.path(rel)
        if _is_object_store(fs):
            fs.pipe_file(target, data)
            return
        put = _put_local if _plain_local(fs) else fs.pipe_file
        # Folders are made when a write finds its own missing, not asked for before every
        # write (a mkdir per file): right whoever removed a folder since, in any process.
        try:
            put(target, data)
        except FileNotFoundError:
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            put(target, data)

    def _write_error(self, rel: str, exc: OSError) -> StorageError:
        return StorageError(f"cannot write {self.url_of(rel)}: {exc}")

    def exists(self, rel: str = "") -> bool:
        """Whether ``rel`` (or the location itself) exists."""
        return bool(self.fs.exists(self.path(rel)))

    def remove(self, rels: Iterable[str]) -> None:
        """Delete files (missing ones are ignored)."""
        paths = [self.path(rel) for rel in rels]
        if not paths:
            return
        try:
            self.fs.rm(paths)  # one bulk request on object stores
        except FileNotFoundError:
            # Something vanished between listing and deleting: finish one by one.
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)

    def remove_folder(self, rel: str) -> None:
        """Delete the folder ``rel`` with everything below it, where the filesystem has folders
        (the parents :meth:`write_bytes` made on local disk); object stores have none, and a
        run has deleted its files there already, so they are asked nothing."""
        if _is_object_store(self.fs):
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(rel), recursive=True)

    def remove_emptied_folders(self, rels: Iterable[str]) -> None:
        """After the files ``rels`` were deleted, delete their folders that are left empty,
        and so upwards; never the location itself, and never a folder with anything left in
        it (the filesystem's own ``rmdir`` refuses those). Object stores have no folders: they
        are asked nothing."""
        if _is_object_store(self.fs):
            return
        folders = set()
        for rel in rels:
            folder = posixpath.dirname(rel.strip("/"))
            while folder and folder not in folders:
                folders.add(folder)
                folder = posixpath.dirname(folder)
        # Deepest first: a folder's emptied subfolders are gone before its turn comes.
        for folder in sorted(folders, key=lambda f: (-f.count("/"), f)):
            with contextlib.suppress(OSError):  # not empty (or already gone): kept
                self.fs.rmdir(self.path(folder))

    def list_files(self, under: str = "") -> list[InputFile]:
        """Every file below ``under``, from ONE recursive listing pass, sorted by path.

        No per-object HEAD requests: size and version come from the listing itself.
        """
        base = self.path(under)
        # Object-store filesystems cache listings per instance; a second run in the same
        # process (a notebook) must see what the first one wrote and deleted.
        self.fs.invalidate_cache(base)
        try:
            entries = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return []
        prefix = self.root.rstrip("/") + "/"
        files = []
        for path, info in entries.items():
            if info.get("type") == "directory":
                continue
            rel = path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)
            files.append(InputFile.listed(rel, int(info.get("size") or 0), _version_of(info)))
        return sorted(files, key=lambda f: f.rel)


def _version_of(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def _protocols(fs: AbstractFileSystem) -> set[str]:
    return set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def in_process(location: Location) -> bool:
    """Whether ``location`` is local disk or memory (``False`` when it cannot be opened: its
    reads fail, each as its file's error)."""
    try:
        return bool(_protocols(location.fs) & {"file", "local", "memory"})
    except Exception:
        return False


def _plain_local(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is plain local disk, whose whole files are read and written with Python's
    own file objects: fsspec's file layer (path normalising, its file wrapper) costs ~15-20 us
    more per file, and a run writes a file per rescaled mask and two per work item and reads
    one per input (~50 us a mask in a sync run, ``make bench``'s spread)."""
    return type(fs) is LocalFileSystem


def _put_local(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def _is_object_store(fs: AbstractFileSystem) -> bool:
    return bool(_protocols(fs) & {"s3", "s3a", "gs", "gcs", "az", "abfs", "memory"})


# ---------------------------------------------------------------------------------------------
# Many requests in flight: a batch task's reads ahead and writes behind
# ---------------------------------------------------------------------------------------------


#: A byte range ``(start, end)`` of a file, ``None`` for all of it.
_Span = tuple[int, int] | None
#: A planned read: ``(location, rel, size, span)``.
_Planned = tuple["Location", str, int, _Span]


class BatchIO:
    """A task's storage requests in flight: at most ``concurrency`` at once, reads prefetched
    (:meth:`prefetch`), writes done behind (:meth:`behind`). Use as a context manager: when the
    block ends every write has finished, and the first that failed raises
    :class:`StorageError` naming its object (a task reports only what is on storage).

    Async filesystems (s3fs, gcsfs, adlfs, http) run the requests as coroutines on their own
    event loop, fsspec's I/O thread, as ``fs.cat``/``fs.pipe`` on many paths do; others
    (local, memory) on a small pool of threads. Memory stays bounded: the bytes read ahead
    and not yet taken stay below ``max_bytes``, and so do the bytes of unfinished writes (one
    object larger than that is still read or written, alone).
    """

    def __init__(self, concurrency: int, max_bytes: int) -> None:
        if concurrency < 1 or max_bytes < 1:
            raise ValueError("concurrency and max_bytes must be positive")
        self.concurrency, self.max_bytes = concurrency, max_bytes
        self._changed = threading.Condition()
        self._in_flight = 0
        self._writing_bytes = 0
        self._writes: list[tuple[Location, str, Future[Any]]] = []
        self._prefetches: list[Prefetch] = []
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> BatchIO:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        # Interrupted (Ctrl-C, a stop signal, the storage watchdog): the run is stopping and
        # commits nothing, so writes are abandoned, not waited for (against a storage that
        # went away, waiting is botocore's whole retry schedule).
        interrupted = kind is not None and not issubclass(kind, Exception)
        self.close(raising=kind is None, wait=not interrupted)

    def prefetch(self, location: Location, files: Sequence[tuple[str, int]]) -> Prefetch:
        """Start reading ``files`` (``(rel, size)`` below ``location``, in the order they will
        be taken); see :class:`Prefetch`."""
        return self.prefetch_from([(location, rel, size) for rel, size in files])

    def prefetch_from(self, items: Sequence[tuple[Location, str, int]]) -> Prefetch:
        """As :meth:`prefetch`, for files in several locations (``(location, rel, size)``)."""
        return self._prefetch([(location, rel, size, None) for location, rel, size in items])

    def prefetch_ranges(
        self, location: Location, ranges: Sequence[tuple[str, int, int]]
    ) -> Prefetch:
        """As :meth:`prefetch`, for byte ranges of files (``(rel, start, end)``, ``end``
        exclusive), each read with one ranged request and taken with its ``(start, end)``."""
        return self._prefetch(
            [(location, rel, end - start, (start, end)) for rel, start, end in ranges]
        )

    def _prefetch(self, items: Sequence[_Planned]) -> Prefetch:
        prefetch = Prefetch(self, items)
        self._prefetches.append(prefetch)
        return prefetch

    def behind(self, location: Location) -> Location:
        """``location`` whose :meth:`~Location.write_bytes` starts the write and returns: it
        blocks only while ``concurrency`` requests or ``max_bytes`` of writes are in flight.
        Its other methods are ``location``'s own."""
        behind = _WrittenBehind(
            location.url, location.storage_options, location.storage_timeout, io=self
        )
        # The filesystem ``location`` resolved already (a cached property), not resolved again
        # from the URL (~8 us for a local path, ~15 for s3://, per task).
        behind.__dict__["_resolved"] = location._resolved
        return behind

    def write(self, location: Location, rel: str, data: bytes) -> None:
        """Start writing ``data`` to ``rel`` below ``location`` (see :meth:`behind`).

        Local disk and memory are written at once, as :class:`Prefetch` reads them: writing
        behind would only add a thread hand-over (and a pool's threads started per task, ~1 ms
        of CPU per instance-mask batch, ``make bench``'s spread) to a write into the page
        cache. A failure is still reported when the block ends, after the other writes."""
        if in_process(location):
            done: Future[Any] = Future()
            try:
                location._put(rel, data)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)
            self._writes.append((location, rel, done))
            return
        fs = location.fs
        future = self._start(
            fs, lambda: location._put(rel, data), lambda: fs._pipe_file(location.path(rel), data),
            len(data), block=True,
        )  # fmt: skip
        assert future is not None  # a blocking start always starts
        self._writes.append((location, rel, future))

    def close(self, *, raising: bool = True, wait: bool = True) -> None:
        """Cancel reads nobody took, wait for every write; with ``raising``, raise the first
        failed write as :class:`StorageError` (other errors as they are). Without ``wait``,
        cancel the writes still in flight instead and return at once."""
        for prefetch in self._prefetches:
            prefetch.cancel()
        if not wait:
            for _, _, future in self._writes:
                future.cancel()
            self._writes.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            return
        failed: tuple[Location, str, BaseException] | None = None
        for location, rel, future in self._writes:
            error = future.exception()
            if error is not None and failed is None:
                failed = (location, rel, error)
        self._writes.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if failed is not None and raising:
            location, rel, error = failed
            if isinstance(error, OSError):
                raise location._write_error(rel, error) from error
            raise error

    # --- requests ---------------------------------------------------------------------------

    def _read(
        self, location: Location, rel: str, span: _Span, *, block: bool
    ) -> Future[Any] | None:
        fs, path = location.fs, location.path(rel)
        # A range is one request as it is; a whole object needs s3fs told so.
        options = _read_options(fs) if span is None else {"start": span[0], "end": span[1]}
        return self._start(
            fs, lambda: fs.cat_file(path, **options), lambda: fs._cat_file(path, **options),
            0, block=block,
        )  # fmt: skip

    def _start(
        self,
        fs: AbstractFileSystem,
        call: Callable[[], Any],
        coroutine: Callable[[], Coroutine[Any, Any, Any]],
        write_bytes: int,
        *,
        block: bool,
    ) -> Future[Any] | None:
        """Start one request when there is room (else wait, or return ``None``): ``coroutine``
        on an async filesystem's loop, else ``call`` on the pool."""
        with self._changed:
            while not self._room(write_bytes):
                if not block:
                    return None
                self._changed.wait()
            self._in_flight += 1
            self._writing_bytes += write_bytes
        try:
            if fs.async_impl:
                future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine(), fs.loop)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, "pipeline-io")
                future = self._pool.submit(call)
        except BaseException:
            self._finished(write_bytes)
            raise
        future.add_done_callback(lambda _: self._finished(write_bytes))
        return future

    def _room(self, write_bytes: int) -> bool:
        if self._in_flight >= self.concurrency:
            return False
        return (
            not write_bytes
            or not self._writing_bytes
            or (self._writing_bytes + write_bytes <= self.max_bytes)
        )

    def _finished(self, write_bytes: int) -> None:
        with self._changed:
            self._in_flight -= 1
            self._writing_bytes -= write_bytes
            self._changed.notify_all()


class Prefetch:
    """Files read ahead in the order they will be taken (made by :meth:`BatchIO.prefetch`).

    Requests start as soon as there is room — at most the :class:`BatchIO`'s ``concurrency``
    in flight and ``max_bytes`` read but not yet taken (by the listing's sizes) — so while
    one file is measured the next ones are on their way. :meth:`take` returns a file's bytes or
    raises what reading it raised (``FileNotFoundError``, ``PermissionError``, ...): errors
    belong to their file. Files on local disk or in memory are read when taken: reading ahead
    would only add a thread hand-over to a read from the page cache.
    """

    def __init__(self, io: BatchIO, items: Sequence[_Planned]) -> None:
        self._io = io
        self._waiting: deque[_Planned] = deque(item for item in items if not in_process(item[0]))
        self._started: deque[tuple[tuple[str, _Span], int, Future[Any]]] = deque()
        self._held = 0
        self._fill()

    def take(self, location: Location, rel: str, span: tuple[int, int] | None = None) -> bytes:
        """The bytes of ``rel`` below ``location``, or of its byte range ``span`` (each planned
        file or range can be taken once; one taken out of order is started at once, one not
        planned is read now)."""
        wanted = (location.url_of(rel), span)
        future = self._pop_started(wanted)
        if future is None:
            future = self._start_waiting(wanted)
        if future is None:
            return location.read_bytes(rel) if span is None else location.read_range(rel, *span)
        self._fill()  # the next requests start before this one is waited for
        return bytes(future.result())

    def cancel(self) -> None:
        """Drop every file not taken yet."""
        self._waiting.clear()
        while self._started:
            self._started.popleft()[2].cancel()
        self._held = 0

    def _pop_started(self, wanted: tuple[str, _Span]) -> Future[Any] | None:
        for index, (url, size, future) in enumerate(self._started):
            if url == wanted:
                del self._started[index]
                self._held -= size
                return future
        return None

    def _start_waiting(self, wanted: tuple[str, _Span]) -> Future[Any] | None:
        for index, (location, rel, _, span) in enumerate(self._waiting):
            if (location.url_of(rel), span) == wanted:
                del self._waiting[index]
                return self._start(location, rel, span, block=True)
        return None

    def _fill(self) -> None:
        while self._waiting:
            location, rel, size, span = self._waiting[0]
            if self._started and self._held + size > self._io.max_bytes:
                return
            future = self._start(location, rel, span, block=False)
            if future is None:
                return
            self._waiting.popleft()
            self._started.append(((location.url_of(rel), span), size, future))
            self._held += size

    def _start(
        self, location: Location, rel: str, span: _Span, *, block: bool
    ) -> Future[Any] | None:
        try:
            return self._io._read(location, rel, span, block=block)
        except Exception as exc:  # e.g. an unknown protocol: this file's error, not the batch's
            future: Future[Any] = Future()
            future.set_exception(exc)
            return future


@dataclass(frozen=True)
class _WrittenBehind(Location):
    """A :class:`Location` whose writes go through a :class:`BatchIO` (see
    :meth:`BatchIO.behind`); lives on one worker for one task, never pickled."""

    io: BatchIO | None = field(default=None, repr=False, compare=False)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Start the write; :class:`BatchIO` reports its failure when its block ends."""
        assert self.io is not None
        self.io.write(self, rel, data)


T = TypeVar("T")


def in_background(call: Callable[[], T], name: str = "pipeline-request") -> Future[T]:
    """Start ``call`` on a thread of its own; its future holds the result or error.

    For a few requests in series each (a Delta table's open, a look at one object) that should
    overlap other work. Unlike waiting at the end of a ``ThreadPoolExecutor`` block, a run
    interrupted while waiting for them (a stop signal, the storage watchdog) stops at once;
    the interpreter's exit then waits for the thread (not a daemon: native code such as
    delta-rs must not be running when the interpreter finalises).
    """
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(call())
        except BaseException as exc:  # the waiting thread raises it
            future.set_exception(exc)

    threading.Thread(target=run, name=name).start()
    return future


def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """The results of ``calls``, each run on a thread of its own (:func:`in_background`) and
    all at once; the first that failed (in order) raises."""
    futures = [in_background(call) for call in calls]
    return [future.result() for future in futures]


def url_protocol(url: str) -> str:
    """The fsspec protocol of a URL (``file`` for plain paths)."""
    protocol, _ = split_protocol(url)
    return protocol or "file"


def is_inside(inner: Location, outer: Location) -> str | None:
    """``inner``'s path relative to ``outer`` when it lies below it on the same filesystem."""
    if type(inner.fs) is not type(outer.fs):
        return None
    outer_root = outer.root.rstrip("/") + "/"
    inner_root = inner.root.rstrip("/") + "/"
    if inner_root.startswith(outer_root):
        return inner_root[len(outer_root) :].rstrip("/")
    return None


__all__ = [
    "DEFAULT_IO_CONCURRENCY", "BatchIO", "InputFile", "Location", "Prefetch", "StorageError",
    "all_at_once", "fsspec", "in_background", "in_process", "is_inside", "storable_name",
    "url_protocol",
]  # fmt: skip
