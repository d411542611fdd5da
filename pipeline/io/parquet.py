"""Parquet parts out and in: zstd, deterministic bytes, one object per part, no ``_metadata``."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.storage import Location


def table_bytes(table: pa.Table) -> bytes:
    """Serialise a table as one Parquet file (zstd). The same table gives the same bytes."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def write_part(location: Location, rel: str, table: pa.Table) -> str:
    """Write ``table`` to ``rel`` below ``location`` in one request; returns ``rel``."""
    location.write_bytes(rel, table_bytes(table))
    return rel


def write_content_part(location: Location, folder: str, table: pa.Table) -> str:
    """Write ``table`` under ``folder`` named by a hash of its bytes; returns the part's path.

    For the parts the client writes at commit time (summary, run-level errors, empty parts):
    a run that dies before its ``_run.json`` can never overwrite a part the previous committed
    run lists, and a rerun with the same content finds the part already there and writes
    nothing.
    """
    data = table_bytes(table)
    rel = f"{folder}/part-{hashlib.sha256(data).hexdigest()[:20]}.parquet"
    if not location.exists(rel):
        location.write_bytes(rel, data)
    return rel


def read_parts(location: Location, rels: list[str], schema: pa.Schema) -> pa.Table:
    """Concatenate the named parts (an empty table of ``schema`` when there are none)."""
    tables = [pq.read_table(io.BytesIO(location.read_bytes(rel))) for rel in rels]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables])
