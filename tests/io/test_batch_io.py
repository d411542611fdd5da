"""Tests of :class:`pipeline.io.storage.BatchIO`: reads ahead and writes behind, on a local
folder, ``memory://`` and ``s3://`` (moto's server behind ``tests/faulty_proxy.py``, which counts
every request and how many it was handling at once).

What is asserted is behaviour, never time: every file read once with one GET (no HEAD), errors
belonging to their file, at most ``concurrency`` requests in flight (and more than one), the byte
budget, every write finished when the block ends, a refused write naming its object.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from faulty_proxy import FaultPlan, FaultyProxy

from pipeline.io.storage import BatchIO, Location, StorageError

pytestmark = pytest.mark.timeout(120)

FILES = {f"in/{i:02d}/file-{i}.bin": bytes([i]) * (100 + i) for i in range(20)}


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultyProxy]:
    """A proxy without faults in front of moto's server, holding each request 30 ms, so
    requests meant to overlap do."""
    with FaultyProxy(s3_endpoint, FaultPlan(rate=0.0), delay=0.03) as started:
        yield started


@pytest.fixture(params=["local", "memory", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Location]:
    """A folder holding :data:`FILES` (written directly, not through the code under test)."""
    if request.param == "local":
        root = Location(str(tmp_path / "root"))
    elif request.param == "memory":
        root = Location(f"memory://batch-io-{uuid.uuid4().hex}/root")
    else:
        bucket, _ = request.getfixturevalue("s3_bucket")
        proxy = request.getfixturevalue("proxy")
        root = Location(f"{bucket}/root", {"endpoint_url": proxy.url})
    for rel, data in FILES.items():
        root.write_bytes(rel, data)
    if request.param == "s3":
        request.getfixturevalue("proxy").reset_counters()
    yield root
    if request.param == "memory":
        fsspec.filesystem("memory").rm(root.root, recursive=True)


def _requests(request: pytest.FixtureRequest) -> Any | None:
    """The proxy's counters when the test runs on s3 (``None`` otherwise)."""
    if request.node.callspec.params["location"] != "s3":
        return None
    return request.getfixturevalue("proxy").counters


def test_prefetch_reads_each_file_once_in_one_get(
    location: Location, request: pytest.FixtureRequest
) -> None:
    sizes = [(rel, len(data)) for rel, data in FILES.items()]
    with BatchIO(concurrency=4, max_bytes=1 << 20) as io:
        reads = io.prefetch(location, sizes)
        got = {rel: reads.take(location, rel) for rel, _ in sizes}
    assert got == FILES
    counters = _requests(request)
    if counters is not None:
        assert counters.methods == Counter(GET=len(FILES))  # no HEAD for the size
        assert sorted(path for _, path in counters.seen) == sorted(
            f"/{location.root}/{rel}" for rel in FILES
        )
        assert 1 < counters.max_in_flight <= 4


def test_prefetch_ranges_reads_each_range_in_one_get(
    location: Location, request: pytest.FixtureRequest
) -> None:
    """Byte ranges of files are read with one ranged GET each (no HEAD for the size), and a
    range not planned is read when taken."""
    rels = list(FILES)
    ranges = [(rel, i, 50 + 2 * i) for i, rel in enumerate(rels[:8])]
    with BatchIO(concurrency=4, max_bytes=1 << 20) as io:
        reads = io.prefetch_ranges(location, ranges)
        got = [reads.take(location, rel, (start, end)) for rel, start, end in reversed(ranges)]
        unplanned = reads.take(location, rels[9], (3, 7))
    assert got == [FILES[rel][start:end] for rel, start, end in reversed(ranges)]
    assert unplanned == FILES[rels[9]][3:7]
    counters = _requests(request)
    if counters is not None:
        assert counters.methods == Counter(GET=len(ranges) + 1)


def test_prefetch_out_of_order_twice_and_unplanned(location: Location) -> None:
    """A file taken before its turn is started at once; a file planned twice is read twice;
    a file not planned is read when taken; files never taken are dropped at the end."""
    rels = list(FILES)
    plan = [(rel, 0) for rel in (*rels[:10], rels[3])]
    with BatchIO(concurrency=2, max_bytes=1 << 20) as io:
        reads = io.prefetch(location, plan)
        assert reads.take(location, rels[9]) == FILES[rels[9]]
        assert reads.take(location, rels[0]) == FILES[rels[0]]
        assert reads.take(location, rels[3]) == FILES[rels[3]]
        assert reads.take(location, rels[3]) == FILES[rels[3]]
        assert reads.take(location, rels[15]) == FILES[rels[15]]


def test_prefetch_errors_belong_to_their_file(location: Location) -> None:
    rels = list(FILES)[:4]
    plan = [(rels[0], 1), ("in/missing.bin", 1), (rels[1], 1)]
    with BatchIO(concurrency=3, max_bytes=1 << 20) as io:
        reads = io.prefetch(location, plan)
        assert reads.take(location, rels[0]) == FILES[rels[0]]
        with pytest.raises(FileNotFoundError):
            reads.take(location, "in/missing.bin")
        assert reads.take(location, rels[1]) == FILES[rels[1]]
        # A location that cannot even be opened fails its own item, not the others.
        nowhere = Location("no-such-protocol://x/y.png")
        mixed = io.prefetch_from([(nowhere, "", 1), (location, rels[2], 1)])
        with pytest.raises(ValueError, match="no-such-protocol"):
            mixed.take(nowhere, "")
        assert mixed.take(location, rels[2]) == FILES[rels[2]]


def test_prefetch_byte_budget_bounds_the_read_ahead(
    location: Location, request: pytest.FixtureRequest
) -> None:
    """With a budget below two files, one file is read ahead: the next one starts when a file
    is taken, so at most two requests (not ``concurrency``) are in flight; a file larger than
    the whole budget is still read."""
    sizes = [(rel, len(data)) for rel, data in FILES.items()]
    with BatchIO(concurrency=8, max_bytes=150) as io:  # files are 100..119 bytes
        reads = io.prefetch(location, sizes)
        assert [reads.take(location, rel) for rel, _ in sizes] == list(FILES.values())
    counters = _requests(request)
    if counters is not None:
        assert counters.max_in_flight <= 2
        assert counters.methods == Counter(GET=len(FILES))


def test_write_behind_finishes_every_write_when_the_block_ends(
    location: Location, request: pytest.FixtureRequest
) -> None:
    written = {f"out/{i % 3}/w-{i}.bin": bytes([i]) * (10 + i) for i in range(30)}
    with BatchIO(concurrency=4, max_bytes=1 << 20) as io:
        behind = io.behind(location)
        for rel, data in written.items():
            behind.write_bytes(rel, data)
    assert {rel: location.read_bytes(rel) for rel in written} == written
    counters = _requests(request)
    if counters is not None:
        assert Counter(m for m, _ in counters.seen[: len(written)]) == Counter(PUT=len(written))
        assert 1 < counters.max_in_flight <= 4


def test_reads_and_writes_share_the_bound(
    location: Location, request: pytest.FixtureRequest
) -> None:
    with BatchIO(concurrency=3, max_bytes=1 << 20) as io:
        reads = io.prefetch(location, [(rel, len(data)) for rel, data in FILES.items()])
        behind = io.behind(location)
        for rel in FILES:
            behind.write_bytes(f"copy/{rel}", reads.take(location, rel))
    assert {rel: location.read_bytes(f"copy/{rel}") for rel in FILES} == FILES
    counters = _requests(request)
    if counters is not None:
        assert counters.max_in_flight <= 3
        assert counters.methods["HEAD"] == 0


def test_a_refused_write_names_its_object_after_the_others_finish(tmp_path: Path) -> None:
    root = Location(str(tmp_path / "root"))
    root.write_bytes("blocker", b"a file where a folder is needed")
    with (
        pytest.raises(StorageError, match=r"cannot write .*root/blocker/x\.bin"),
        BatchIO(concurrency=2, max_bytes=1 << 20) as io,
    ):
        behind = io.behind(root)
        behind.write_bytes("ok-1.bin", b"1")
        behind.write_bytes("blocker/x.bin", b"refused")
        behind.write_bytes("ok-2.bin", b"2")
    assert root.read_bytes("ok-1.bin") == b"1"
    assert root.read_bytes("ok-2.bin") == b"2"


def test_a_denied_s3_write_names_its_object(
    s3_bucket: tuple[str, dict[str, Any]], s3_endpoint: str
) -> None:
    bucket, _ = s3_bucket
    refused = "/" + bucket.removeprefix("s3://") + "/root/denied/"
    plan = FaultPlan(rate=1.0, kinds=("denied",), prefixes=(refused,))
    with FaultyProxy(s3_endpoint, plan) as proxy:
        root = Location(f"{bucket}/root", {"endpoint_url": proxy.url})
        with (
            pytest.raises(StorageError, match=r"cannot write s3://.*/root/denied/x\.bin"),
            BatchIO(concurrency=4, max_bytes=1 << 20) as io,
        ):
            behind = io.behind(root)
            behind.write_bytes("fine.bin", b"1")
            behind.write_bytes("denied/x.bin", b"2")
        assert proxy.counters.injected["denied"] >= 1
    assert Location(f"{bucket}/root", s3_bucket[1]).read_bytes("fine.bin") == b"1"


def test_an_error_in_the_block_still_waits_for_the_writes(tmp_path: Path) -> None:
    root = Location(str(tmp_path / "root"))
    with pytest.raises(KeyError), BatchIO(concurrency=2, max_bytes=1 << 20) as io:
        io.behind(root).write_bytes("a/b.bin", b"written")
        raise KeyError("the task failed")
    assert root.read_bytes("a/b.bin") == b"written"


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BatchIO(concurrency=0, max_bytes=1)


def test_written_behind_is_the_same_storage(tmp_path: Path) -> None:
    """A location written behind keeps the run's storage timeout and the filesystem its
    location resolved, and writes where that location does."""
    location = Location(str(tmp_path), {}, storage_timeout=7.0)
    with BatchIO(2, 1 << 20) as io:
        behind = io.behind(location)
        behind.write_bytes("a/b.bin", b"x")
    assert behind.storage_timeout == 7.0
    assert behind.fs is location.fs and behind.root == location.root
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"x"
