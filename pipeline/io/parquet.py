"""Parquet files and staged parts: deterministic bytes, one object per file, no ``_metadata``;
zstd Parquet for the tables' data files, Arrow IPC streams for the staged parts they are
assembled from.

Each work item stages its rows as one object, ``_staged/part-<key>.arrow`` (named by its key,
so an incremental run finds it again): one PUT per work item, not one per table. The object
holds one Arrow IPC stream per table with rows, back to back in the order written, then an
index: the JSON object ``{table: [start, end]}`` (byte offsets of each stream) and its length
as 4 little-endian bytes, last. The work item's summary names each table's stream by a part
reference ``<object>#<start>-<end>`` (:func:`staged_span`), so the commit's assembly reads
each table's rows with a ranged read and no look at the index; readers of a whole object
(video pass 2) use the index (:func:`staged_tables`). The rows the client stages at commit
time are single streams under ``_staged/<table>/`` (:func:`write_content_part`), referenced
by their path. A run's commit assembles the parts into the tables' Delta data files
(:mod:`pipeline.io.delta`). Readers never read staged parts.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from pipeline.io.storage import Location


def table_bytes(table: pa.Table) -> bytes:
    """Serialise a table as one Parquet file (zstd, with column statistics). The same table
    gives the same bytes."""
    sink = pa.BufferOutputStream()  # Arrow's own memory: no Python file object in between
    pq.write_table(
        table, sink, compression="zstd", use_dictionary=_dictionary_columns(table.schema)
    )
    return sink.getvalue().to_pybytes()


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet paths of ``schema``'s leaf columns that are not floating point: dictionary
    pages for those only. Measured values (boxes, scores, centroids) seldom repeat; a
    dictionary tried first, then dropped, cost a quarter of a detections part's write and made
    the file larger."""
    paths = []
    for field in schema:
        kind, path = field.type, field.name
        while pa.types.is_list(kind):
            kind, path = kind.value_type, f"{path}.list.element"
        if not pa.types.is_floating(kind):
            paths.append(path)
    return paths


#: Staged parts whose buffers are larger than this are LZ4-compressed: below it LZ4's
#: set-up per column buffer costs more than the bytes it saves (a 1-row ``masks/`` part: ~0.2 ms
#: compressed against ~0.01 ms not); above it LZ4 is as fast as no compression and makes an
#: instance batch's part of 26,000 rows 7x smaller.
STAGED_COMPRESS_BYTES = 1 << 20


def _staged_bytes(table: pa.Table) -> bytes:
    """A staged part's bytes: an Arrow IPC stream (:func:`_write_stream`)."""
    sink = pa.BufferOutputStream()
    _write_stream(sink, table)
    return sink.getvalue().to_pybytes()


def _write_stream(sink: pa.BufferOutputStream, table: pa.Table) -> None:
    """Append ``table`` to ``sink`` as an Arrow IPC stream, read once by the assembly. Not
    Parquet: a part is written and read once, and Parquet's encoding costs ~0.3 ms per small
    part each way where IPC costs ~0.01 ms (an instance-mask batch writes two parts and the
    assembly reads them back: ~1 ms of a batch's fixed cost, measured in ``make bench``'s
    spread)."""
    # The buffers' total size: ``nbytes`` (which discounts shared buffers) costs ~40 us.
    compression = "lz4" if table.get_total_buffer_size() > STAGED_COMPRESS_BYTES else None
    # Compressed on this thread: Arrow's default hands each column's buffers to its CPU pool,
    # which in a worker holds one thread (the nanny sets OMP_NUM_THREADS=1), so the task
    # waits anyway and pays the hand-offs. Pass 1 over the real tracks took 6-10% less
    # process CPU and wall time without them (bench 5e's chunks, a pool of 1 or 2 threads);
    # a 1.7 MB part wrote in 2.4 ms, against 3.2 (pool of 1) and 2.6 (pool of 2). Only a
    # part of tens of MB in an in-process run on 2 cores writes faster through the pool
    # (20 MB: 22 ms against 30).
    options = ipc.IpcWriteOptions(compression=compression, use_threads=False)
    with ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)


def _arrow_owned(data: bytes | memoryview) -> pa.Buffer:
    """``data`` copied into Arrow's own memory.

    Arrow's readers hand work to its IO thread pool and may drop their last reference to the
    source buffer there, later; a buffer wrapping Python ``bytes`` (``io.BytesIO``,
    ``pa.BufferReader(bytes)``) then takes the GIL to free it, and a pool thread doing so
    during interpreter teardown aborts the process ("terminate called without an active
    exception", exit code 134: apache/arrow issues 34314 and 50482). Arrow-owned memory is
    freed without the interpreter.
    """
    copy = pa.BufferOutputStream()
    copy.write(data)
    return copy.getvalue()


def table_from_bytes(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """The table of one Parquet file held in memory (``columns``: only those), read from an
    Arrow-owned copy of the bytes (:func:`_arrow_owned`).

    Read as one file (``ParquetFile``), not through the dataset layer ``pq.read_table`` sets up
    for every call: about half the time for small files.
    """
    return pq.ParquetFile(pa.BufferReader(_arrow_owned(data))).read(columns=columns)


def staged_from_bytes(data: bytes | memoryview) -> pa.Table:
    """The table of one staged part (a table's stream in a bundle, :func:`write_bundle`, or a
    content part, :func:`write_content_part`) held in memory."""
    return ipc.open_stream(_arrow_owned(data), options=_read_options()).read_all()


def staged_tables(
    data: bytes, columns: Mapping[str, Sequence[str]] | None = None
) -> dict[str, pa.Table]:
    """The tables of a whole staged object (:func:`write_bundle`), by its index; of a table
    named in ``columns``, only those columns (the others' buffers are not decompressed)."""
    buffer = _arrow_owned(data)
    index_end = len(data) - _INDEX_LENGTH.size
    (length,) = _INDEX_LENGTH.unpack_from(data, index_end)
    spans = json.loads(data[index_end - length : index_end])
    tables = {}
    for table, (start, end) in spans.items():
        stream = buffer.slice(start, end - start)
        fields = None
        if columns is not None and table in columns:
            schema = ipc.open_stream(stream).schema  # reads the schema message alone
            fields = sorted(schema.get_field_index(name) for name in columns[table])
        tables[table] = ipc.open_stream(stream, options=_read_options(fields)).read_all()
    return tables


def _read_options(fields: list[int] | None = None) -> ipc.IpcReadOptions:
    """How a staged part is read (``fields``: only those columns): decompressed on this
    thread, as it was written (see :func:`_write_stream`). A part of the real tracks' pass 1
    (0.6 MB) read in 0.39 ms, against 0.66 ms through a pool of one thread; only a part of
    tens of MB read faster through a pool of two (5.0 against 4.5 ms)."""
    return ipc.IpcReadOptions(use_threads=False, included_fields=fields)  # None: every field


#: Where work items stage their rows, below the output root.
STAGED = "_staged"

#: The length of a staged object's index, its last bytes.
_INDEX_LENGTH = struct.Struct("<I")


def staged_bundle(key: str) -> str:
    """The staged bundle written by the work item (or task) ``key``."""
    return f"{STAGED}/part-{key}.arrow"


class StagedSpan(NamedTuple):
    """What a part reference names: bytes ``start`` to ``end`` of the staged object ``rel``
    (``end`` ``None``: the whole object)."""

    rel: str
    start: int
    end: int | None


def staged_span(ref: str) -> StagedSpan:
    """The object and byte range a part reference (``<object>#<start>-<end>``, or a content
    part's path) names."""
    rel, _, span = ref.partition("#")
    if not span:
        return StagedSpan(rel, 0, None)
    start, _, end = span.partition("-")
    return StagedSpan(rel, int(start), int(end))


def part_fingerprint(data: bytes) -> tuple[int, str]:
    """The size and SHA-256 of a staged object's bytes: what its ledger entry records when the
    object is written, and checks when an incremental run would reuse it."""
    return len(data), hashlib.sha256(data).hexdigest()


class StagedBundle(NamedTuple):
    """A staged object as written: its path below the output root, the size and SHA-256 of its
    bytes (what the ledger records, without reading it back), and the part reference of each
    table's rows in it."""

    rel: str
    size: int
    sha256: str
    parts: dict[str, str]


def write_bundle(location: Location, key: str, tables: Mapping[str, pa.Table]) -> StagedBundle:
    """Write the work item ``key``'s staged ``tables`` (each with rows) as one object, in one
    request; returns it with the fingerprint of exactly the bytes written (a write that
    succeeds stores them whole)."""
    rel = staged_bundle(key)
    sink = pa.BufferOutputStream()
    spans: dict[str, tuple[int, int]] = {}
    for table, rows in tables.items():
        start = sink.tell()
        _write_stream(sink, rows)
        spans[table] = (start, sink.tell())
    index = json.dumps(spans).encode()
    sink.write(index)
    sink.write(_INDEX_LENGTH.pack(len(index)))
    data = sink.getvalue().to_pybytes()
    location.write_bytes(rel, data)
    parts = {table: f"{rel}#{start}-{end}" for table, (start, end) in spans.items()}
    return StagedBundle(rel, *part_fingerprint(data), parts)


def write_content_part(
    location: Location, folder: str, table: pa.Table, listed: Collection[str]
) -> tuple[str, int]:
    """Write ``table`` under ``folder`` named by a hash of its bytes, unless a part of that
    name is among the ``listed`` ones (paths below ``location``); returns the part's path and
    size.

    For the rows the client stages at commit time (summary, run-level errors): a rerun with
    the same content writes nothing, and a part is written whole (see
    :meth:`~pipeline.io.storage.Location.replace_bytes`), so a run reading it meanwhile never
    reads a part of it.
    """
    data = _staged_bytes(table)
    rel = f"{folder}/part-{hashlib.sha256(data).hexdigest()[:20]}.arrow"
    if rel not in listed:
        location.replace_bytes(rel, data)
    return rel, len(data)
