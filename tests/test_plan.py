"""Planning: the order a pass hands its work items to the executor."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import runner
from pipeline.graph import Executor
from pipeline.io.storage import InputFile
from pipeline.stages.plan import ImageGroup, TrackAssignment, VideoChunk, batch_groups
from pipeline.stages.summary import BatchSummary
from pipeline.stages.work import Work


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
