"""Assemble a run's staged parts into each table's Delta data files, a few large files per table.

Work items stage one small bundle each (``_staged/``), holding one part per table with rows
(:mod:`pipeline.io.parquet`); before the commit, each table's parts are cut into groups that
become a single new data file of about :data:`FILE_BYTES` each (a small run gets one file per
table). The groups are dealt into a few tasks, at least one per worker thread, each holding
about :data:`FILE_BYTES` of staged parts: a task reads all its parts at once and writes its
files behind, so a small run's ten tables take one read and one write round trip, not ten of
each. A part is a byte range of its bundle, and the parts a task needs from one bundle are read
in one ranged request when little lies between them (:data:`READ_GAP`): no more requests than
one per part, and one per bundle when a task assembles all of its tables. The client then
commits the files' add actions (:func:`pipeline.io.delta.commit_table`).
"""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
from fsspec.utils import merge_offset_ranges

from pipeline.io.delta import AddAction, write_data_file
from pipeline.io.parquet import StagedSpan, staged_from_bytes, staged_span
from pipeline.io.storage import DEFAULT_IO_CONCURRENCY, BatchIO, InputFile, Location
from pipeline.tables import SCHEMAS, empty

#: Staged (compressed) bytes per data file: large enough that readers open few files, small
#: enough that one assembling task holds it in memory comfortably.
FILE_BYTES = 64 * 2**20

#: Parts of one bundle that an assembling task needs are read in one request when at most this
#: many bytes (parts other tasks assemble) lie between them: at cloud latency (~40 ms a
#: request) a request costs more than reading a megabyte more.
READ_GAP = 2**20


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
    """Cut ``table``'s staged parts (part references; sorted, so the files are deterministic)
    into groups of about :data:`FILE_BYTES`; a table without parts gets one empty file (every
    version of a table holds a file, so concurrent replacements of it always conflict).
    ``sizes``: those of whole staged files (the client's content parts), by path."""
    groups: list[list[tuple[str, int]]] = [[]]
    filled = 0
    # By file name: the rows keep the order they had when each table had a folder of parts.
    for part in sorted(parts, key=lambda ref: posixpath.basename(ref)):
        span = staged_span(part)
        size = sizes.get(span.rel, 0) if span.end is None else span.end - span.start
        if groups[-1] and filled + size > FILE_BYTES:
            groups.append([])
            filled = 0
        groups[-1].append((part, size))
        filled += size
    return [
        FileGroup(table, tuple(p for p, _ in group), tuple(s for _, s in group)) for group in groups
    ]


def staged_sizes(output: Location, folder: str) -> dict[str, int]:
    """Sizes of the staged files (bundles, content parts) below ``folder``, from one listing."""
    files: list[InputFile] = output.list_files(folder)
    return {f.rel: f.size for f in files}


def deal_groups(groups: list[FileGroup], tasks: int) -> list[tuple[FileGroup, ...]]:
    """Deal ``groups`` into tasks: ``tasks`` of them (the worker threads), or more when the
    staged bytes exceed :data:`FILE_BYTES` per task; the largest groups first, each to the
    task holding the fewest bytes so far, so the tasks finish together."""
    total = sum(group.staged_bytes for group in groups)
    count = min(len(groups), max(tasks, -(-total // FILE_BYTES)))
    dealt: list[list[FileGroup]] = [[] for _ in range(count)]
    loads = [0] * count
    for group in sorted(groups, key=lambda g: g.staged_bytes, reverse=True):
        lightest = loads.index(min(loads))
        dealt[lightest].append(group)
        loads[lightest] += group.staged_bytes
    return [tuple(task) for task in dealt]


def assemble_files(groups: tuple[FileGroup, ...], output: Location) -> list[tuple[str, AddAction]]:
    """Write one data file of each group's table holding the group's staged parts' rows (a
    task): the parts are requested at once, a bundle's neighbouring parts in one request (up to
    ``DEFAULT_IO_CONCURRENCY`` in flight and :data:`FILE_BYTES` read ahead), and each file is
    written behind while the next one is put together."""
    spans = [staged_span(part) for group in groups for part in group.parts]
    read_of, sizes = _plan_reads(spans, [size for group in groups for size in group.sizes])
    uses = Counter(read_of.values())
    held: dict[StagedSpan, memoryview] = {}
    with BatchIO(DEFAULT_IO_CONCURRENCY, max_bytes=FILE_BYTES) as io:
        whole = io.prefetch(output, [(r.rel, size) for r, size in sizes.items() if r.end is None])
        ranged = io.prefetch_ranges(
            output, [(r.rel, r.start, r.end) for r in sizes if r.end is not None]
        )
        behind = io.behind(output)

        def take(span: StagedSpan) -> memoryview:
            read = read_of[span]
            if read not in held:
                held[read] = memoryview(
                    whole.take(output, read.rel)
                    if read.end is None
                    else ranged.take(output, read.rel, (read.start, read.end))
                )
            data = held[read]
            uses[read] -= 1
            if not uses[read]:  # its last part: not held longer than needed
                del held[read]
            if span.end is None:
                return data
            return data[span.start - read.start : span.end - read.start]

        return [
            (group.table, _assemble(group, [take(staged_span(p)) for p in group.parts], behind))
            for group in groups
        ]


def _plan_reads(
    spans: list[StagedSpan], sizes: list[int]
) -> tuple[dict[StagedSpan, StagedSpan], dict[StagedSpan, int]]:
    """The read covering each of ``spans`` (of ``sizes`` bytes), and the reads with their
    sizes in the order they are first needed: one per whole file, one per run of a bundle's
    ranges with at most :data:`READ_GAP` bytes between them."""
    ranged = [span for span in spans if span.end is not None]
    paths, starts, ends = merge_offset_ranges(
        [s.rel for s in ranged], [s.start for s in ranged], [s.end for s in ranged],
        max_gap=READ_GAP,
    )  # fmt: skip
    merged: dict[str, list[StagedSpan]] = {}
    for read in zip(paths, starts, ends, strict=True):
        merged.setdefault(read[0], []).append(StagedSpan(*read))
    read_of: dict[StagedSpan, StagedSpan] = {}
    reads: dict[StagedSpan, int] = {}
    for span, size in zip(spans, sizes, strict=True):
        read = span
        if span.end is not None:
            # (a merged read of ranges always has an end)
            read = next(
                r for r in merged[span.rel] if r.start <= span.start <= span.end <= (r.end or 0)
            )
        read_of[span] = read
        reads.setdefault(read, size if read.end is None else read.end - read.start)
    return read_of, reads


def _assemble(group: FileGroup, parts: list[memoryview], output: Location) -> AddAction:
    schema = SCHEMAS[group.table]
    tables = [_in_schema(staged_from_bytes(data), schema) for data in parts]
    data = pa.concat_tables(tables) if tables else empty(group.table)
    return write_data_file(output, group.table, data)


def _in_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` cast to ``schema`` where it differs. Parts are staged in their table's schema,
    and casting one that already is costs ~0.1 ms (a cast per column), a batch's fixed cost in
    ``make bench``'s spread; comparing the schemas costs ~0.1 us."""
    return table if table.schema.equals(schema) else table.cast(schema)
