"""Planning: the order a pass hands its work items to the executor."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import runner
from pipeline.graph import Executor
from pipeline.io.storage import InputFile
from pipeline.stages.plan import (
    Batch,
    ImageGroup,
    TrackAssignment,
    VideoChunk,
    assign_tracking,
    batch_groups,
    split_tracking,
)
from pipeline.stages.summary import BatchSummary
from pipeline.stages.work import Work, ledger_name


def _groups(sizes: list[int]) -> list[ImageGroup]:
    return [
        ImageGroup("cam", f"frame-{i:04d}", InputFile.listed(f"cam/frame-{i:04d}.png", size, "1"))
        for i, size in enumerate(sizes)
    ]


def test_a_pass_maps_its_work_largest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches (image, chunk) and tracking assignments go to the executor by input bytes,
    largest first, each exactly once; equal sizes keep the plan's order."""
    sizes = [(i * 7919) % 1000 + 1 for i in range(300)]
    batches = batch_groups(_groups(sizes), batch_bytes=1 << 30, min_batches=8, fingerprint="f")
    assert len({b.bytes for b in batches}) > 3  # content-defined cuts: uneven batches
    chunk = VideoChunk(InputFile.listed("cam/v-0-9.json", 123_456, "1"), "v", 0, 9)
    tracks = TrackAssignment("t", (("cam/v", (chunk,)),), ("k",))
    work = [Work("images", b, "v26") for b in batches] + [Work("tracks", tracks)]
    work += [Work("images", batches[0], "v26")]  # the same size as the first, after it
    mapped: list[Any] = []

    def record(item: Work, ctx: Any) -> BatchSummary:
        mapped.append(item)
        return BatchSummary()

    monkeypatch.setattr(runner, "run_work", record)
    ctx = SimpleNamespace(options=SimpleNamespace(execution=SimpleNamespace(progress=False)))
    runner._run_pass(Executor(None), work, ctx, "pass 1")  # type: ignore[arg-type]
    assert sorted(map(id, mapped)) == sorted(map(id, work))
    assert [w.item.bytes for w in mapped] == sorted((w.item.bytes for w in work), reverse=True)
    assert mapped[0].item.bytes == 123_456
    position = {id(w): i for i, w in enumerate(mapped)}
    assert position[id(work[0])] < position[id(work[-1])]


def _chunk(media: str, start: int) -> VideoChunk:
    name = f"cam/{media}-{start}-{start + 99}.json"
    return VideoChunk(InputFile.listed(name, 1000, "1"), media, start, start + 99)


def test_videos_within_one_batch_are_linked_by_that_batch_and_the_others_in_pass_2() -> None:
    """Batch a holds video x whole and video y's start; batch b the rest of y and video z whole;
    batch c nothing but two chunks of video w. Each one-batch set of videos goes to its batch's
    pass-1 task; y, over two batches, gets a pass-2 task reading both in order."""
    a = Batch("a", (_chunk("x", 0), _chunk("x", 100), _chunk("y", 0)))
    b = Batch("b", (_chunk("y", 100), _chunk("z", 0)))
    c = Batch("c", (_chunk("w", 0), _chunk("w", 100)))
    within, across = split_tracking(assign_tracking([a, b, c], "f"))
    assert {key: [media for media, _ in t.videos] for key, t in within.items()} == {
        "a": ["cam/x"], "b": ["cam/z"], "c": ["cam/w"],
    }  # fmt: skip
    assert [chunk.start for _, chunks in within["c"].videos for chunk in chunks] == [0, 100]
    assert [(t.batch_keys, [media for media, _ in t.videos]) for t in across] == [
        (("a", "b"), ["cam/y"])
    ]
    # The ledger tells a batch that links its videos from one that does not (an entry of an
    # earlier version, without gaps, is not reused for it).
    assert ledger_name(Work("chunks", a, tracks=within["a"])) != ledger_name(Work("chunks", a))
