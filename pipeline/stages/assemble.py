"""Assemble a run's staged parts into each table's Delta data files, a few large files per table.

Batch tasks stage one small part per batch and table (``_staged/``); before the commit, each
group of them becomes a single new data file of about :data:`FILE_BYTES` (a small run gets one
file per table). The groups are dealt into a few tasks, at least one per worker thread, each
holding about :data:`FILE_BYTES` of staged parts: a task reads all its parts at once and writes
its files behind, so a small run's ten tables take one read and one write round trip, not ten
of each. The client then commits the files' add actions (:func:`pipeline.io.delta.commit_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipeline.io.delta import AddAction, write_data_file
from pipeline.io.parquet import staged_from_bytes
from pipeline.io.storage import DEFAULT_IO_CONCURRENCY, BatchIO, InputFile, Location
from pipeline.tables import SCHEMAS, empty

#: Staged (compressed) bytes per data file: large enough that readers open few files, small
#: enough that one assembling task holds it in memory comfortably.
FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FileGroup:
    """The staged parts (in order, with their sizes) that become one data file of ``table``."""

    table: str
    parts: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def staged_bytes(self) -> int:
        """The parts' bytes on storage."""
        return sum(self.sizes)


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
    return [
        FileGroup(table, tuple(group), tuple(sizes.get(part, 0) for part in group))
        for group in groups
    ]


def staged_sizes(output: Location, folder: str) -> dict[str, int]:
    """Sizes of the staged parts below ``folder``, from one listing."""
    files: list[InputFile] = output.list_files(folder)
    return {f.rel: f.size for f in files}


def bundle_files(groups: list[FileGroup], tasks: int) -> list[tuple[FileGroup, ...]]:
    """Deal ``groups`` into tasks: ``tasks`` of them (the worker threads), or more when the
    staged bytes exceed :data:`FILE_BYTES` per task; the largest groups first, each to the
    task holding the fewest bytes so far, so the tasks finish together."""
    total = sum(group.staged_bytes for group in groups)
    count = min(len(groups), max(tasks, -(-total // FILE_BYTES)))
    bundles: list[list[FileGroup]] = [[] for _ in range(count)]
    loads = [0] * count
    for group in sorted(groups, key=lambda g: g.staged_bytes, reverse=True):
        lightest = loads.index(min(loads))
        bundles[lightest].append(group)
        loads[lightest] += group.staged_bytes
    return [tuple(bundle) for bundle in bundles]


def assemble_files(groups: tuple[FileGroup, ...], output: Location) -> list[tuple[str, AddAction]]:
    """Write one data file of each group's table holding the group's staged parts' rows (a
    task): the parts are requested at once (up to ``DEFAULT_IO_CONCURRENCY`` in flight and
    :data:`FILE_BYTES` read ahead), and each file is written behind while the next one is put
    together."""
    parts = [item for group in groups for item in zip(group.parts, group.sizes, strict=True)]
    with BatchIO(DEFAULT_IO_CONCURRENCY, max_bytes=FILE_BYTES) as io:
        reads = io.prefetch(output, parts)
        behind = io.behind(output)
        return [
            (group.table, _assemble(group, [reads.take(output, p) for p in group.parts], behind))
            for group in groups
        ]


def _assemble(group: FileGroup, parts: list[bytes], output: Location) -> AddAction:
    schema = SCHEMAS[group.table]
    tables = [staged_from_bytes(data).cast(schema) for data in parts]
    data = pa.concat_tables(tables) if tables else empty(group.table)
    return write_data_file(output, group.table, data)
