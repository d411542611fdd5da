"""Parquet files and staged parts: deterministic bytes, one object per file, no ``_metadata``;
zstd Parquet for the tables' data files, Arrow IPC streams for the staged parts they are
assembled from.

Batch tasks stage their rows as parts under ``_staged/<table>/`` (named by batch key, so an
incremental run finds them again); a run's commit assembles them into the tables' Delta data
files (:mod:`pipeline.io.delta`). Readers never read staged parts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
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
    """A staged part's bytes: an Arrow IPC stream, read once by the assembly. Not Parquet: a
    part is written and read once, and Parquet's encoding costs ~0.3 ms per small part each
    way where IPC costs ~0.01 ms (an instance-mask batch writes two parts and the assembly reads
    them back: ~1 ms of a batch's fixed cost, measured in ``make bench``'s spread)."""
    # The buffers' total size: ``nbytes`` (which discounts shared buffers) costs ~40 us.
    compression = "lz4" if table.get_total_buffer_size() > STAGED_COMPRESS_BYTES else None
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression=compression)
    with ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _arrow_owned(data: bytes) -> pa.Buffer:
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


def staged_from_bytes(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """The table of a staged part (:func:`write_part`, :func:`write_content_part`) held in
    memory (``columns``: only those)."""
    table = ipc.open_stream(_arrow_owned(data)).read_all()
    return table.select(columns) if columns is not None else table


#: Where batch tasks stage their rows, below the output root.
STAGED = "_staged"


def staged_part(table: str, key: str) -> str:
    """The staged part of ``table`` written by the batch (or task) ``key``."""
    return f"{STAGED}/{table}/part-{key}.arrow"


def part_fingerprint(data: bytes) -> tuple[int, str]:
    """The size and SHA-256 of a staged part's bytes: what its ledger entry records when the
    part is written, and checks when an incremental run would reuse it."""
    return len(data), hashlib.sha256(data).hexdigest()


class StagedPart(NamedTuple):
    """A staged part as written: its path below the output root, and the size and SHA-256 of
    its bytes (what the ledger records, without reading the part back)."""

    rel: str
    size: int
    sha256: str


def write_part(location: Location, rel: str, table: pa.Table) -> StagedPart:
    """Write the staged part ``table`` to ``rel`` below ``location`` in one request; returns
    the part with the fingerprint of exactly the bytes written (a write that succeeds stores
    them whole)."""
    data = _staged_bytes(table)
    location.write_bytes(rel, data)
    return StagedPart(rel, *part_fingerprint(data))


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
