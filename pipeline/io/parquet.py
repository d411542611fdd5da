"""Parquet parts out and in: zstd, deterministic bytes, one object per part, no ``_metadata``."""

from __future__ import annotations

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


def write_part_if_changed(location: Location, rel: str, table: pa.Table) -> str:
    """Like :func:`write_part`, but leave an object holding the same bytes alone, so a rerun
    over unchanged inputs rewrites nothing (for the small parts the client itself writes)."""
    data = table_bytes(table)
    try:
        if location.read_bytes(rel) == data:
            return rel
    except FileNotFoundError:
        pass
    location.write_bytes(rel, data)
    return rel


def read_parts(location: Location, rels: list[str], schema: pa.Schema) -> pa.Table:
    """Concatenate the named parts (an empty table of ``schema`` when there are none)."""
    tables = [pq.read_table(io.BytesIO(location.read_bytes(rel))) for rel in rels]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables])
