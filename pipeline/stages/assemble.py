"""Assemble a run's staged parts into each table's Delta data files, a few large files per table.

Batch tasks stage one small part per batch and table (``_staged/``); before the commit, one task
per data file reads a group of them and writes a single new data file of about
:data:`FILE_BYTES` (a small run gets one file per table). The client then commits the files'
add actions (:func:`pipeline.io.delta.commit_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipeline.io.delta import AddAction, write_data_file
from pipeline.io.parquet import table_from_bytes
from pipeline.io.storage import InputFile, Location
from pipeline.tables import SCHEMAS, empty

#: Staged (compressed) bytes per data file: large enough that readers open few files, small
#: enough that one assembling task holds it in memory comfortably.
FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FileGroup:
    """The staged parts (in order) that become one data file of ``table``."""

    table: str
    parts: tuple[str, ...]


def plan_files(table: str, parts: list[str], sizes: dict[str, int]) -> list[FileGroup]:
    """Cut ``table``'s staged parts (sorted, so the files are deterministic) into groups of
    about :data:`FILE_BYTES`; a table without parts gets one empty file (every version of a
    table holds a file, so concurrent replacements of it always conflict)."""
    groups: list[list[str]] = [[]]
    filled = 0
    for part in sorted(parts):
        if groups[-1] and filled + sizes.get(part, 0) > FILE_BYTES:
            groups.append([])
            filled = 0
        groups[-1].append(part)
        filled += sizes.get(part, 0)
    return [FileGroup(table, tuple(group)) for group in groups]


def staged_sizes(output: Location, folder: str) -> dict[str, int]:
    """Sizes of the staged parts below ``folder``, from one listing."""
    files: list[InputFile] = output.list_files(folder)
    return {f.rel: f.size for f in files}


def assemble_file(group: FileGroup, output: Location) -> tuple[str, AddAction]:
    """Write one data file of ``group.table`` holding its staged parts' rows (a task)."""
    schema = SCHEMAS[group.table]
    tables = [table_from_bytes(data) for data in output.read_many(group.parts)]
    data = pa.concat_tables([t.cast(schema) for t in tables]) if tables else empty(group.table)
    return group.table, write_data_file(output, group.table, data)
