"""Pass 2's shortcut for a one-chunk video (frames in order, none below the chunk's start)
against the general path: the same video followed by a chunk with no frames takes the general
path and must count exactly the same statistics, bit for bit, and link the same frames."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.io.storage import InputFile
from pipeline.stages.plan import VideoChunk
from pipeline.stages.video import (
    _add_detections,
    _by_source,
    _LabelKeys,
    _Rows,
    _Video,
    _VideoStats,
)

_LABELS: list[str | None] = ["face", None, "person", "None", "licence plate"]


def _chunk(start: int, end: int) -> VideoChunk:
    name = f"cam-{start}-{end}.json"
    return VideoChunk(InputFile(name, 1, "v"), "cam", start, end)


def _one_chunk(rng: np.random.Generator, start: int, frames: int) -> _Rows:
    """Frames ``start..`` in order (some skipped), each with 0-4 detections."""
    ids = start + np.flatnonzero(rng.random(frames) < 0.8)
    per_frame = rng.integers(0, 5, len(ids))
    count = int(per_frame.sum())
    durations = rng.uniform(0.01, 0.05, len(ids))
    durations[rng.random(len(ids)) < 0.1] = math.nan
    scores = rng.random(count)
    scores[rng.random(count) < 0.1] = math.nan
    boxes = np.sort(rng.uniform(0, 300, (count, 4)), axis=1)
    return _Rows(
        frames=ids.astype(np.int64), durations=durations,
        sizes=np.tile([320.0, 240.0], (len(ids), 1)),
        detection_frames=np.repeat(ids, per_frame).astype(np.int64),
        labels=rng.integers(0, len(_LABELS), count), scores=scores, boxes=boxes,
    )  # fmt: skip


def _no_frames() -> _Rows:
    empty = np.zeros(0)
    return _Rows(
        frames=np.zeros(0, np.int64), durations=empty, sizes=np.zeros((0, 2)),
        detection_frames=np.zeros(0, np.int64), labels=np.zeros(0, np.int64), scores=empty,
        boxes=np.zeros((0, 4)),
    )  # fmt: skip


def _counted(chunks: list[tuple[VideoChunk, _Rows]]) -> tuple[dict[str, object], list[int]]:
    stats = _VideoStats()
    video = _Video(chunks, 2)
    linked, detections = video.rows(stats)
    counted = (stats, video.data.labels[detections], video.data.scores[detections])
    _add_detections([counted], _LabelKeys.of(_LABELS))
    return {
        "frames": stats.frames, "frames_with_detections": stats.frames_with_detections,
        "duplicate_frames": stats.duplicate_frames, "detections": stats.detections,
        "labels": dict(stats.labels), "label_scored": dict(stats.label_scored),
        "label_score_sum": [(k, v.hex()) for k, v in stats.label_score_sum.items()],
        "scores": stats.scores.counts.tolist(), "duration_sum": stats.duration_sum.hex(),
        "durations": stats.durations,
    }, np.arange(len(video.data.frames))[linked].tolist()  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_a_one_chunk_video_counts_as_the_general_path_does(seed: int) -> None:
    rng = np.random.default_rng(seed)
    start, frames = int(rng.integers(0, 1000)), int(rng.integers(0, 400))
    rows = _one_chunk(rng, start, frames)
    alone = _counted([(_chunk(start, start + frames), rows)])
    after = start + frames + 1
    general = _counted(
        [(_chunk(start, start + frames), rows), (_chunk(after, after), _no_frames())]
    )
    assert alone == general
    assert alone[1] == list(range(len(rows.frames)))


@pytest.mark.parametrize(
    ("sources", "order"),
    [
        (["b", "b", "a", "c", "c", "c"], [0, 1, 2, 3, 4, 5]),  # as pass 1 writes: as it is
        (["b", "a", "b", "c", "a", "b"], [0, 2, 5, 1, 4, 3]),  # a source in several runs
        ([], []),
    ],
)
def test_rows_by_source(sources: list[str], order: list[int]) -> None:
    """A part's rows grouped by source (first appearance order, table order within one), with
    each source's row range."""
    table = pa.table({"source": pa.array(sources, pa.string()), "row": range(len(sources))})
    grouped, ranges = _by_source(table)
    assert grouped["row"].to_pylist() == order
    assert list(ranges) == list(dict.fromkeys(sources))
    for source, (start, end) in ranges.items():
        assert grouped["source"].to_pylist()[start:end] == [source] * sources.count(source)
