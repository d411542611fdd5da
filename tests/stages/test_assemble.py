"""Tests of staged bundles (:func:`pipeline.io.parquet.write_bundle`) and their assembly into
data files (:mod:`pipeline.stages.assemble`), on a local folder and on ``s3://`` (moto's server
behind ``tests/faulty_proxy.py``, which counts every request).

Asserted: every table's rows come back exactly, in the order of the bundles' names, whichever
way the tables are dealt into tasks; each bundle is one object; the assembly reads each bundle
once when a task assembles all its tables, and never makes more requests than there are parts.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from faulty_proxy import FaultPlan, FaultyProxy

from pipeline.io.parquet import (
    STAGED,
    staged_bundle,
    staged_from_bytes,
    staged_span,
    staged_tables,
    table_from_bytes,
    write_bundle,
)
from pipeline.io.storage import Location
from pipeline.stages.assemble import READ_GAP, FileGroup, assemble_files, plan_files
from pipeline.tables import SCHEMAS

pytestmark = pytest.mark.timeout(120)

KEYS = ["b", "a", "c-1", "c"]  # written out of order: the assembly orders by name


def _tables(seed: int) -> dict[str, pa.Table]:
    """A work item's rows: a small ``chunks`` part, an ``errors`` part larger than
    :data:`READ_GAP` (hex text, compressed by LZ4 to about half), a small ``summary`` part,
    in that order in the bundle."""
    rng = random.Random(seed)
    ints = SCHEMAS["chunks"].names[2:]
    chunks = [
        {
            "source": f"v{seed}/c{i}.json",
            "media": f"v{seed}",
            **{c: rng.randrange(99) for c in ints},
        }
        for i in range(3 + seed)
    ]
    errors = [
        {"path": f"in/{seed}/{i}.png", "stage": "decode", "error": f"e{i % 7}",
         "message": rng.randbytes(3 * READ_GAP // 400).hex(), "severity": "error"}
        for i in range(200)
    ]  # fmt: skip
    summary = [{"scope": "run", "name": f"s{seed}", "masks": seed}]
    return {
        table: pa.Table.from_pylist(rows, schema=SCHEMAS[table])
        for table, rows in (("chunks", chunks), ("errors", errors), ("summary", summary))
    }


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultyProxy]:
    with FaultyProxy(s3_endpoint, FaultPlan(rate=0.0)) as started:
        yield started


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "local":
        return Location(str(tmp_path / "out"))
    bucket, _ = request.getfixturevalue("s3_bucket")
    return Location(f"{bucket}/out", {"endpoint_url": request.getfixturevalue("proxy").url})


def _gets(request: pytest.FixtureRequest) -> int | None:
    """GET requests the proxy saw since the last call (``None`` on local disk)."""
    if request.node.callspec.params["output"] != "s3":
        return None
    counters = request.getfixturevalue("proxy").counters
    gets = Counter(method for method, _ in counters.seen)["GET"]
    request.getfixturevalue("proxy").reset_counters()
    return gets


def test_a_bundle_is_one_object_holding_every_tables_rows(output: Location) -> None:
    tables = _tables(1)
    bundle = write_bundle(output, "k", tables)
    assert bundle.rel == staged_bundle("k") == f"{STAGED}/part-k.arrow"
    assert [f.rel for f in output.list_files(STAGED)] == [bundle.rel]
    data = output.read_bytes(bundle.rel)
    assert bundle.size == len(data)
    assert staged_tables(data) == tables
    for table, ref in bundle.parts.items():
        span = staged_span(ref)
        assert span.rel == bundle.rel and span.end is not None
        assert staged_from_bytes(data[span.start : span.end]) == tables[table]


@pytest.mark.parametrize("layout", ["one task", "a task per table", "big table apart"])
def test_assembly_reads_each_tables_rows_exactly_with_no_more_reads_than_parts(
    output: Location, layout: str, request: pytest.FixtureRequest
) -> None:
    written = {key: _tables(seed) for seed, key in enumerate(KEYS)}
    refs: dict[str, list[str]] = {}
    for key, tables in written.items():
        for table, ref in write_bundle(output, key, tables).parts.items():
            refs.setdefault(table, []).append(ref)
    groups = {table: plan_files(table, parts, {}) for table, parts in refs.items()}
    assert all(len(planned) == 1 for planned in groups.values())
    group = {table: planned[0] for table, planned in groups.items()}
    tasks: list[tuple[FileGroup, ...]] = {
        "one task": [tuple(group.values())],
        "a task per table": [(g,) for g in group.values()],
        "big table apart": [(group["chunks"], group["summary"]), (group["errors"],)],
    }[layout]
    _gets(request)

    assembled = {table: add for task in tasks for table, add in assemble_files(task, output)}

    assert sorted(assembled) == ["chunks", "errors", "summary"]
    for table, add in assembled.items():
        rows = table_from_bytes(output.read_bytes(f"{table}/{add.path}"))
        in_order = sorted(KEYS, key=staged_bundle)  # by name: "c-1" before "c"
        assert rows == pa.concat_tables(written[key][table] for key in in_order)
    gets = _gets(request)
    if gets is not None:
        # the data files' reads above: one per table
        expected_gets = {"one task": 1, "a task per table": 3, "big table apart": 3}[layout]
        assert gets - len(assembled) == expected_gets * len(KEYS)
