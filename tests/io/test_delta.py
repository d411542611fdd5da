"""Tests of :mod:`pipeline.io.delta` commits on a local folder: a commit on the snapshot a run
read gives the next version without reading anything back, a stale snapshot is a conflict that
names the table and leaves the winner's rows, and the look for newer commits sees them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pipeline.io.delta import (
    CommitConflict,
    commit_table,
    committed_since,
    open_table,
    open_tables,
    write_data_file,
)
from pipeline.io.storage import Location

SCHEMA = pa.schema([("value", pa.int64())])


def _commit(output: Location, snapshot: DeltaTable | None, values: list[int], run: str) -> int:
    add = write_data_file(output, "t", pa.table({"value": values}, schema=SCHEMA))
    return commit_table(output, "t", snapshot, [add], SCHEMA, {"run_id": run})


def _values(output: Location) -> list[int]:
    opened = open_table(output, "t")
    assert opened is not None
    return sorted(opened.to_pyarrow_table()["value"].to_pylist())


def test_commits_on_the_read_snapshot_and_a_stale_one_conflicts(tmp_path: Path) -> None:
    output = Location(str(tmp_path / "out"))
    assert open_tables(output, ["t", "u"]) == {"t": None, "u": None}
    assert committed_since(output, {"t": None}) == []
    assert _commit(output, None, [1, 2], "a") == 0
    assert committed_since(output, {"t": None}) == ["t"]
    assert committed_since(output, {"t": 0}) == []

    first, second = open_table(output, "t"), open_table(output, "t")
    assert _commit(output, first, [3], "b") == 1
    assert _values(output) == [3]
    assert committed_since(output, {"t": 0}) == ["t"]
    with pytest.raises(CommitConflict, match=r"another run committed .*/t while this run was"):
        _commit(output, second, [4], "c")
    assert _values(output) == [3]
    assert DeltaTable(str(tmp_path / "out" / "t")).version() == 1

    # A table someone else created meanwhile: the run that found none conflicts too.
    with pytest.raises(CommitConflict, match="this run read version None"):
        _commit(output, None, [5], "d")
    assert _values(output) == [3]
