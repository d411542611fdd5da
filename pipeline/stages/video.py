"""The video-metadata tasks.

* :func:`process_chunk_batch` (pass 1, parallel over chunk batches): parse chunks into
  ``detections/``, ``frames/`` and ``chunks/`` parts, check each chunk on its own; and link the
  videos that lie in the batch alone, from the rows just parsed, as pass 2 would.
* :func:`track_videos` (pass 2, parallel over videos over several batches): read a video's
  parts back in frame order (chunks were batched sorted by start frame), stream them through
  the gap tracker (:class:`~pipeline.kernels.tracking.GapFinder`), check the chunks against
  each other, and write ``gaps/`` and the video's summary rows.

Linking rule (see :class:`_VideoStream`): the first copy of a frame, in chunk start order,
counts; it is linked when its chunk's name starts at or before it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from itertools import chain, pairwise
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import CelanturOptions, ClearmlOptions
from pipeline.formats.celantur import type_name
from pipeline.formats.metadata import MetadataError, ResolvedSize
from pipeline.formats.video import (
    MAX_CHUNK_FRAMES,
    ParsedChunk,
    parse_chunks,
    summarise_findings,
)
from pipeline.io.jsonio import JsonError
from pipeline.io.parquet import staged_bundle, staged_tables
from pipeline.io.storage import Prefetch
from pipeline.kernels.labelstats import segment_label_stats
from pipeline.kernels.quantiles import SCORE_BINS, ScoreHistogram
from pipeline.kernels.tracking import GapColumns, GapFinder, Labels
from pipeline.stages.common import (
    ErrorLog,
    TaskContext,
    batch_io,
    guarded,
    read_input,
    stage_rows,
)
from pipeline.stages.plan import Batch, TrackAssignment, VideoChunk
from pipeline.stages.summary import BatchSummary
from pipeline.tables import SCHEMAS, to_arrow

# ---------------------------------------------------------------------------------------------
# Pass 1: chunks -> parts
# ---------------------------------------------------------------------------------------------


def process_chunk_batch(
    batch: Batch[VideoChunk], ctx: TaskContext, tracks: TrackAssignment | None = None
) -> BatchSummary:
    """Parse a batch of chunk files and write its ``detections/``, ``frames/``, ``chunks/`` and
    ``errors/`` rows as one staged bundle (``_staged/part-<batch key>.arrow``). Idempotent, like
    every batch task.

    ``tracks``: the videos that lie in this batch alone (:func:`~pipeline.stages.plan.
    split_tracking`), linked here from the rows just parsed, as :func:`track_videos` would
    link them from the staged parts: their ``gaps/`` rows and chunk warnings go in the same
    bundle, their summary rows in the summary returned.
    """
    with batch_io(ctx) as (ctx, storage):
        planned = [(c.file.key, c.file.size) for c in batch.groups if c.numbered]
        reads = storage.prefetch(ctx.source, planned)
        return _process_chunks(batch, ctx, reads, tracks)


def _process_chunks(
    batch: Batch[VideoChunk], ctx: TaskContext, reads: Prefetch, tracks: TrackAssignment | None
) -> BatchSummary:
    issues = ErrorLog()
    # Every chunk read first (what went wrong kept with it), then all parsed at once: the
    # scanner's columns are built per batch, not per chunk (real videos are often far shorter
    # than a 500-frame chunk).
    read: list[tuple[VideoChunk, ErrorLog, bytes | None]] = []
    for chunk in batch.groups:
        found = ErrorLog()
        data = None
        with guarded(chunk.file.rel, found):
            data = _read(chunk, ctx, reads, found)
        read.append((chunk, found, data))
    datas = [data for _, _, data in read if data is not None]
    parsed = parse_chunks(datas, max_bytes=ctx.options.max_json_bytes)
    outcomes = iter(enumerate(parsed.outcomes))
    parsed_chunks: list[tuple[VideoChunk, ParsedChunk]] = []
    chosen: list[int] = []
    chunk_rows: list[dict[str, Any]] = []
    summary = BatchSummary()
    for chunk, found, data in read:
        issues.extend(found)
        if data is None:
            continue
        k, outcome = next(outcomes)
        with guarded(chunk.file.rel, issues):
            if isinstance(outcome, JsonError):
                issues.add(chunk.file.rel, "decode", f"json_{outcome.code}", str(outcome))
                continue
            if isinstance(outcome, MetadataError):
                issues.add(chunk.file.rel, "validate", outcome.code, str(outcome))
                continue
            if isinstance(outcome, Exception):
                raise outcome  # a fault on this chunk alone: its error row (guarded)
            checked = ErrorLog()
            chunk_rows.append(_check_chunk(chunk, outcome, checked))
            issues.extend(checked)
            parsed_chunks.append((chunk, outcome))
            chosen.append(k)
            summary.landed["video_metadata"] += 1
            summary.frames += len(outcome.frame_ids)
            durations = [d for d in outcome.frame_durations if d is not None]
            summary.duration_sum += Fraction(math.fsum(durations))
            summary.durations += len(durations)
    # The batch's tables and label statistics at once: what building a table costs whatever
    # its size is paid per batch, not per chunk (real videos are often far shorter than a
    # 500-frame chunk).
    detections = frames = None
    if parsed_chunks:
        columns = parsed.detections_of(chosen)
        detections, frames, labels = _tables(parsed_chunks, columns)
        counts = [parsed.detection_count for _, parsed in parsed_chunks]
        summary.add_detection_columns(
            labels, columns["score"], columns["is_anonymised"],
            files=np.repeat(np.arange(len(counts)), counts),
        )  # fmt: skip
    outputs = {"detections": detections, "frames": frames, "chunks": to_arrow("chunks", chunk_rows)}
    if tracks is not None:
        # The same rows pass 2 would read back from this bundle: linked here, they are not
        # written, read and decoded again, and the run has one task less.
        rows = _batch_rows({name: table for name, table in outputs.items() if table is not None})
        names = _share_labels([rows])
        outputs["gaps"] = _track(tracks, ctx.options, [rows], names, summary, issues)
    summary.add_errors(issues)
    outputs["errors"] = to_arrow("errors", issues)
    stage_rows(summary, ctx.output, batch.key, outputs)
    return summary


def _read(chunk: VideoChunk, ctx: TaskContext, reads: Prefetch, issues: ErrorLog) -> bytes | None:
    """The chunk's bytes, or ``None`` after recording why there are none to parse."""
    if not chunk.numbered:
        message = f"frame numbers {chunk.start}-{chunk.end} in the name exceed 64 bits"
        issues.add(chunk.file.rel, "validate", "bad_chunk_name", message)
        return None
    return read_input(chunk.file, ctx, reads, issues)


def _check_chunk(chunk: VideoChunk, parsed: ParsedChunk, issues: ErrorLog) -> dict[str, Any]:
    """The chunk's own checks: frame count, ids within the name's range, repeats."""
    rel = chunk.file.rel
    ids = np.asarray(parsed.frame_ids, dtype=np.int64)
    in_range = (ids >= chunk.start) & (ids <= chunk.end)
    out_of_range = int((~in_range).sum())
    missing = (chunk.end - chunk.start + 1) - int(in_range.sum())
    for finding in summarise_findings(parsed.findings):
        issues.add(rel, "validate", finding.error, finding.message, finding.severity)
    if parsed.frames_in_file > MAX_CHUNK_FRAMES:
        issues.add(rel, "validate", "too_many_frames",
                     f"{parsed.frames_in_file} frames, more than {MAX_CHUNK_FRAMES} per chunk",
                     "warning")  # fmt: skip
    if out_of_range:
        sample = ", ".join(str(i) for i in ids[~in_range][:5])
        issues.add(rel, "validate", "frame_out_of_range",
                     f"{out_of_range} frame ids outside {chunk.start}-{chunk.end} (e.g. {sample})",
                     "warning")  # fmt: skip
    return {
        "source": rel,
        "media": chunk.media,
        "chunk_start": chunk.start,
        "chunk_end": chunk.end,
        "frames": parsed.frames_in_file,
        "detections": parsed.detection_count,
        "missing_frames": max(missing, 0),
        "duplicate_frames": parsed.duplicate_frames,
        "out_of_range_frames": out_of_range,
    }


def _tables(
    parsed: Sequence[tuple[VideoChunk, ParsedChunk]], detections: dict[str, pa.Array]
) -> tuple[pa.Table, pa.Table, pa.DictionaryArray]:
    """The ``detections/`` and ``frames/`` rows of parsed chunks (at least one), in order, whose
    detection columns (:data:`~pipeline.formats.video.DETECTION_COLUMNS`) are ``detections``;
    and the ``type_label`` column dictionary-encoded (for the label statistics)."""
    # Per chunk, per frame and per distinct label, then spread by Arrow takes (no Python call
    # per detection, none per frame but C-level iteration).
    frame_counts = [len(chunk.frame_ids) for _, chunk in parsed]
    detection_counts = [chunk.detection_count for _, chunk in parsed]
    per_frame = pa.array(chain.from_iterable(chunk.frame_detections for _, chunk in parsed),
                         pa.int32())  # fmt: skip
    frame_of = np.repeat(np.arange(len(per_frame)), per_frame.to_numpy())
    sizes = _size_columns([chunk.frame_sizes for _, chunk in parsed])

    def per_chunk(values: list[Any], kind: pa.DataType, counts: list[int]) -> pa.Array:
        return pa.array(values, kind).take(np.repeat(np.arange(len(parsed)), counts))

    sources = [c.file.rel for c, _ in parsed]
    media = [c.media for c, _ in parsed]
    labels = detections["type_label"].dictionary_encode()
    names = pa.array(map(type_name, labels.dictionary.to_pylist()), pa.string())
    columns: dict[str, Any] = {
        **detections,
        "source": per_chunk(sources, pa.string(), detection_counts),
        "media": per_chunk(media, pa.string(), detection_counts),
        "type_name": names.take(labels.indices),
        "frame_width": sizes["width"].take(frame_of),
        "frame_height": sizes["height"].take(frame_of),
    }
    schema = SCHEMAS["detections"]
    detection_table = pa.Table.from_arrays([columns[n] for n in schema.names], schema=schema)
    columns = {
        "source": per_chunk(sources, pa.string(), frame_counts),
        "media": per_chunk(media, pa.string(), frame_counts),
        "frame": pa.array(chain.from_iterable(chunk.frame_ids for _, chunk in parsed), pa.int64()),
        "detections": per_frame,
        **sizes,
        "duration": pa.array(
            chain.from_iterable(chunk.frame_durations for _, chunk in parsed), pa.float64()
        ),
        "chunk_start": per_chunk([c.start for c, _ in parsed], pa.int64(), frame_counts),
        "chunk_end": per_chunk([c.end for c, _ in parsed], pa.int64(), frame_counts),
    }
    schema = SCHEMAS["frames"]
    frame_table = pa.Table.from_arrays([columns[n] for n in schema.names], schema=schema)
    return detection_table, frame_table, labels


def _size_columns(frame_sizes: list[list[ResolvedSize | None]]) -> dict[str, pa.Array]:
    """The ``width``, ``height``, ``size_order`` and ``size_order_source`` of every frame of
    chunks (their ``frame_sizes``), in order. A chunk's frames share the objects of its few
    distinct sizes: the columns are made per distinct object (by identity, a look-up in C per
    frame), then spread by an Arrow take."""
    sizes = list(chain.from_iterable(frame_sizes))
    identities = np.fromiter(map(id, sizes), np.int64, len(sizes))
    _, firsts, codes = np.unique(identities, return_index=True, return_inverse=True)
    distinct = [sizes[first] for first in firsts.tolist()]
    spread = pa.array(codes.ravel())
    return {
        name: pa.array([getattr(s, field) if s else None for s in distinct], kind).take(spread)
        for name, field, kind in (
            ("width", "width", pa.int32()), ("height", "height", pa.int32()),
            ("size_order", "order", pa.string()), ("size_order_source", "source", pa.string()),
        )
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Linking and cross-chunk checks per video (pass 2, or pass 1 for a video within one batch)
# ---------------------------------------------------------------------------------------------

_PART_COLUMNS = {
    "frames": ["source", "frame", "duration", "width", "height"],
    "detections": ["source", "frame", "type_label", "score", "x1", "y1", "x2", "y2"],
    "chunks": ["source", "duplicate_frames"],
}

#: Detections fed to the gap finder per call: the finder's scratch arrays grow with a call's
#: detections (about 190 bytes each), and where videos are cut into calls changes nothing.
_FEED_DETECTIONS = 1 << 16


@dataclass
class _Rows:
    """Frames and detections as arrays."""

    frames: np.ndarray  # (f,) frame ids
    durations: np.ndarray  # (f,) seconds, NaN when unknown
    sizes: np.ndarray  # (f, 2) width and height, NaN when unknown
    detection_frames: np.ndarray  # (n,)
    labels: np.ndarray  # (n,) int64: position in the task's label names (_share_labels)
    scores: np.ndarray  # (n,) NaN when unknown
    boxes: np.ndarray  # (n, 4) NaN rows when unknown

    def take(self, frames: slice | np.ndarray, detections: slice | np.ndarray) -> _Rows:
        """The rows at ``frames`` and ``detections``."""
        return _Rows(
            self.frames[frames], self.durations[frames], self.sizes[frames],
            self.detection_frames[detections], self.labels[detections],
            self.scores[detections], self.boxes[detections],
        )  # fmt: skip

    @staticmethod
    def concatenate(parts: Sequence[_Rows]) -> _Rows:
        """The rows of ``parts``, one after the other (a single part as it is: most videos
        of real tracks are one chunk)."""
        if len(parts) == 1:
            return parts[0]
        return _Rows(*(
            np.concatenate([getattr(part, name) for part in parts]) for name in _ROW_FIELDS
        ))  # fmt: skip


_ROW_FIELDS = tuple(column.name for column in fields(_Rows))


@dataclass
class _BatchRows:
    """A chunk batch's ``frames/`` and ``detections/`` parts as arrays (each chunk's rows
    together), and where each chunk's rows are: converted once per batch, not per chunk."""

    rows: _Rows
    frame_rows: dict[str, tuple[int, int]]  # source -> its rows of the frames arrays
    detection_rows: dict[str, tuple[int, int]]
    duplicates: dict[str, int]  # source (parsed: it has a chunks/ row) -> repeats dropped
    labels: list[str | None]  # the label of each code of rows.labels

    def chunk(self, rel: str) -> _Rows:
        """The chunk's frames and detections, each sorted by frame (file order on ties)."""
        return self.rows.take(
            _in_order(self.rows.frames, self.frame_rows.get(rel, (0, 0))),
            _in_order(self.rows.detection_frames, self.detection_rows.get(rel, (0, 0))),
        )


def _in_order(frames: np.ndarray, rows: tuple[int, int]) -> slice | np.ndarray:
    """The ``rows`` (first, end) of ``frames``, as an index that sorts them by frame (stable)."""
    first, end = rows
    if _ascending(frames[first:end]):
        return slice(first, end)
    return first + np.argsort(frames[first:end], kind="stable")


def _ascending(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


@dataclass
class _VideoStats:
    """What one video's pass accumulates."""

    frames: int = 0
    frames_with_detections: int = 0
    duplicate_frames: int = 0
    detections: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    # Plain float sums: one video's frames are always added in the same (frame) order.
    label_score_sum: dict[str, float] = field(default_factory=dict)
    label_scored: Counter[str] = field(default_factory=Counter)
    scores: ScoreHistogram = field(default_factory=ScoreHistogram)
    duration_sum: float = 0.0
    durations: int = 0
    gaps: int = 0


@dataclass
class _LabelKeys:
    """A task's label codes (:func:`_share_labels`) by ``str(label)``, the key statistics count
    them under (a missing label is ``"None"``): worked out once per task, not per video."""

    keys: list[str]
    key_of: np.ndarray  # each code's position in keys

    @classmethod
    def of(cls, labels: list[str | None]) -> _LabelKeys:
        """The keys of the task's ``labels``."""
        keys = list(dict.fromkeys(map(str, labels)))
        position = {key: index for index, key in enumerate(keys)}
        return cls(keys, np.array([position[str(label)] for label in labels], dtype=np.int64))


class _Video:
    """One video's chunks (in start order) as arrays, and the linking rule over them.

    The rule, over the whole video: the first copy of a frame (chunks in start order, then file
    order) counts; it is linked when its chunk's name starts at or before it. A first copy
    below its own chunk's start (named out of range) is counted in the statistics but not
    linked. The frames linked go to the gap finder in frame order.

    The statistics are added in the order a stream over the chunks adds them, so their float
    sums do not depend on how the video was read: frames wait until a later chunk's start
    passes them (an overlapping chunk may hold the ones an earlier lacks), so each chunk's
    arrival first counts the waiting frames below its start (in frame order, duration summed
    as a group), then its own first copies below its start (one by one); the rest at the end.
    """

    def __init__(
        self,
        chunks: list[tuple[VideoChunk, _Rows]],
        repeats: int,
    ) -> None:
        parts = [rows for _, rows in chunks]
        self.data = _Rows.concatenate(parts)
        self.repeats = repeats  # repeats of a frame id within a chunk file (dropped in pass 1)
        self.frame_counts = [len(r.frames) for r in parts]
        self.starts = np.array([c.start for c, _ in chunks], dtype=np.int64)
        # Each frame row's detections: searched within its own chunk's rows.
        lows, highs, offset = [], [], 0
        for r in parts:
            lows.append(offset + np.searchsorted(r.detection_frames, r.frames, side="left"))
            highs.append(offset + np.searchsorted(r.detection_frames, r.frames, side="right"))
            offset += len(r.detection_frames)
        self.low, self.high = (
            (lows[0], highs[0]) if len(parts) == 1 else map(np.concatenate, (lows, highs))
        )

    def rows(self, stats: _VideoStats) -> tuple[np.ndarray | slice, np.ndarray | slice]:
        """Count the video's frames into ``stats``; returns the frame rows to link, in frame
        order, and the detection rows counted, in the order counted (their labels and scores
        are counted for all of a task's videos at once: :func:`_add_detections`); a slice
        when that is all rows in order."""
        frames = self.data.frames
        # The common case, frames in order without repeats, skips the sorts below.
        in_order = bool(np.all(frames[1:] > frames[:-1]))
        if in_order and len(self.starts) == 1 and not (len(frames) and frames[0] < self.starts[0]):
            # One chunk, its frames in order and none below its start (most videos of real
            # tracks): every frame is linked, and counted at the end as one group.
            return slice(None), self._count(stats, slice(None), None)
        chunk_of = np.repeat(np.arange(len(self.starts)), self.frame_counts)
        if in_order:
            first = np.ones(len(frames), dtype=bool)
        else:
            first = np.zeros(len(frames), dtype=bool)
            first[np.unique(frames, return_index=True)[1]] = True  # each frame id's first row
        late = first & (frames < self.starts[chunk_of])
        # Linked frames are counted when the first later chunk starting above them arrives
        # (event 2 * that chunk; the end: 2 * chunks); late ones when their own chunk does.
        arrival = np.maximum(chunk_of + 1, np.searchsorted(self.starts, frames, side="right"))
        event = np.where(late, 2 * chunk_of + 1, 2 * arrival)
        counted = np.flatnonzero(first)
        if not (in_order and _ascending(event)):  # else already in (event, frame) order
            counted = counted[np.lexsort((frames[counted], event[counted]))]
        detections = self._count(stats, counted, event[counted])
        linked = np.flatnonzero(first & ~late)
        return (
            linked if in_order else linked[np.argsort(frames[linked], kind="stable")],
            detections,
        )

    def _count(
        self, stats: _VideoStats, counted: np.ndarray | slice, events: np.ndarray | None
    ) -> np.ndarray | slice:
        """Count the frame rows ``counted`` into ``stats``, in that order, each at its event
        (odd: a late frame, counted one at a time; even: a group's frames, summed at once;
        ``None``: all at the end, one group); returns their detection rows, in that order."""
        low, high = self.low[counted], self.high[counted]
        stats.duplicate_frames += self.repeats + len(self.data.frames) - len(low)
        stats.frames += len(low)
        stats.frames_with_detections += int(np.count_nonzero(high - low))
        durations = self.data.durations[counted]
        finite = np.isfinite(durations)
        stats.durations += int(finite.sum())
        if events is None:
            stats.duration_sum += float(durations[finite].sum())
            return _detection_rows(low, high, len(self.data.scores))
        # Each event's frames: from its first frame to the next event's.
        bounds = [0, *(np.flatnonzero(events[1:] != events[:-1]) + 1).tolist(), len(events)]
        for first_row, end_row in pairwise(bounds if len(events) else []):
            kept = durations[first_row:end_row][finite[first_row:end_row]]
            if events[first_row] % 2:  # late frames, one at a time
                running = np.concatenate(([stats.duration_sum], kept))
                stats.duration_sum = float(np.add.accumulate(running)[-1])
            else:
                stats.duration_sum += float(kept.sum())
        return _detection_rows(low, high, len(self.data.scores))

    def feed(self, rows: np.ndarray | slice) -> _Feed:
        """What the gap finder is fed for the frame ``rows`` (in frame order): their frames and
        their detections in that order (the video's own arrays when those are already it,
        as for most videos of real tracks)."""
        low, high = self.low[rows], self.high[rows]
        data = self.data
        detections = _detection_rows(low, high, len(data.scores))
        return _Feed(
            data.frames[rows], data.sizes[rows], high - low,
            data.labels[detections], data.boxes[detections], data.scores[detections],
        )  # fmt: skip


class _Feed(NamedTuple):
    """Frames to link, in order, and their detections, frame after frame."""

    frames: np.ndarray  # (f,) frame ids
    sizes: np.ndarray  # (f, 2)
    counts: np.ndarray  # (f,) detections of each frame
    labels: np.ndarray  # (n,) label codes
    boxes: np.ndarray  # (n, 4)
    scores: np.ndarray  # (n,)


def _link(
    finder: GapFinder, feeds: list[_Feed], labels: list[str | None]
) -> tuple[GapColumns, np.ndarray]:
    """Link the videos of ``feeds`` (one each, at least one frame in all), the finder starting
    afresh at each: their gaps (in video order) and how many each video has. One finder call
    for many videos, not one each: a call costs some 100 us of Python around the kernel, and
    real videos are often short."""
    firsts = np.cumsum([0, *(len(feed.frames) for feed in feeds)])
    frames, sizes, counts, codes, boxes, scores = (
        np.concatenate([getattr(feed, name) for feed in feeds]) for name in _Feed._fields
    )
    ends = np.cumsum(counts)
    gaps: list[GapColumns] = []
    returns: list[np.ndarray] = []
    start = 0
    while start < len(frames):
        # At least one frame per call, then whole frames up to _FEED_DETECTIONS.
        base = int(ends[start] - counts[start])
        end = max(start + 1, int(np.searchsorted(ends, base + _FEED_DETECTIONS, "right")))
        top = int(ends[end - 1])
        videos = firsts[(firsts >= start) & (firsts < end)] - start
        linked, returned = finder.link(
            frames[start:end], (ends[start:end] - counts[start:end] - base, ends[start:end] - base),
            Labels(codes[base:top], labels), boxes[base:top], scores[base:top],
            sizes[start:end], videos,
        )  # fmt: skip
        gaps.append(linked.found)
        returns.append(returned + start)
        start = end
    of_video = np.searchsorted(firsts, np.concatenate(returns), "right") - 1
    return GapColumns.concatenate(gaps), np.bincount(of_video, minlength=len(feeds))


def _detection_rows(low: np.ndarray, high: np.ndarray, total: int) -> np.ndarray | slice:
    """The rows ``low[i]:high[i]`` of each frame, in order: as a slice when they are all
    ``total`` rows in order (a one-chunk video of real tracks), no copies taken."""
    if len(low) and low[0] == 0 and high[-1] == total and bool(np.all(low[1:] == high[:-1])):
        return slice(None)
    return _spans(low, high - low)


def _add_detections(
    videos: list[tuple[_VideoStats, np.ndarray, np.ndarray]], keys: _LabelKeys
) -> None:
    """Count each video's detections (label codes, scores with NaN unknown, in the order the
    video counts them) into its statistics, once per video: all of a task's videos in one
    kernel call. Labels count under their keys in order of first appearance, as
    :func:`~pipeline.stages.summary.label_groups` gives them; each label's scores are added
    one after the other, as a plain loop would."""
    if not videos:
        return
    ends = np.cumsum([len(scores) for _, _, scores in videos], dtype=np.int64)
    codes = np.concatenate([codes for _, codes, _ in videos]).astype(np.int64, copy=False)
    scores = np.concatenate([scores for _, _, scores in videos]).astype(np.float64, copy=False)
    shape = (len(videos), len(keys.keys))
    counts, scored, first = (np.zeros(shape, np.int64) for _ in range(3))
    sums, histogram = np.zeros(shape), np.zeros((len(videos), SCORE_BINS), np.int64)
    segment_label_stats(ends, keys.key_of[codes], scores, counts, scored, sums, first, histogram)
    for (stats, _, detections), counted, with_score, total, firsts, bins in zip(
        videos, counts.tolist(), scored.tolist(), sums.tolist(), first.tolist(), histogram,
        strict=True,
    ):  # fmt: skip
        stats.detections += len(detections)
        stats.scores.counts += bins
        for key in sorted((k for k, n in enumerate(counted) if n), key=firsts.__getitem__):
            name = keys.keys[key]
            stats.labels[name] += counted[key]
            if with_score[key]:
                stats.label_score_sum[name] = total[key]
                stats.label_scored[name] += with_score[key]


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices ``starts[i] .. starts[i] + lengths[i] - 1`` of every span, in order."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)


def track_videos(assignment: TrackAssignment, ctx: TaskContext) -> BatchSummary:
    """Link each assigned video's detections across frames and chunks; write ``gaps/``.

    Reads the ``frames``, ``detections`` and ``chunks`` rows of the assignment's chunk batches
    (one read of each batch's staged bundle), in frame order. Side effect: the staged bundle
    ``_staged/part-<key>.arrow`` with the ``gaps`` rows and the chunk gaps and overlaps (as
    warnings, ``errors``). Idempotent. Videos that lie in one batch are linked by that batch's
    own task instead (:func:`process_chunk_batch`).
    """
    with batch_io(ctx) as (ctx, storage):
        reads = storage.prefetch(ctx.output, [(staged_bundle(k), 0) for k in assignment.batch_keys])
        parts = [_read_parts(ctx, key, reads) for key in assignment.batch_keys]
        summary, issues = BatchSummary(), ErrorLog()
        gaps = _track(assignment, ctx.options, parts, _share_labels(parts), summary, issues)
        summary.add_errors(issues)
        outputs = {"gaps": gaps, "errors": to_arrow("errors", issues) if issues else None}
        stage_rows(summary, ctx.output, assignment.key, outputs)
        return summary


def _share_labels(parts: list[_BatchRows]) -> list[str | None]:
    """Renumber each batch's label codes into one list of the task's labels (returned), so
    that a video's chunks from several batches share them: per distinct label, not per
    detection."""
    shared: dict[str | None, int] = {}
    for batch in parts:
        codes = [shared.setdefault(label, len(shared)) for label in batch.labels]
        batch.rows.labels = np.array(codes, dtype=np.int64)[batch.rows.labels]
    labels = list(shared)
    for batch in parts:
        batch.labels = labels
    return labels


def _track(
    assignment: TrackAssignment,
    options: CelanturOptions | ClearmlOptions,
    parts: list[_BatchRows],
    labels: list[str | None],
    summary: BatchSummary,
    issues: ErrorLog,
) -> pa.Table | None:
    """Link the assignment's videos over the rows of ``parts`` (its batches, in order): their
    summary rows into ``summary``, chunk gaps and overlaps into ``issues``; returns the
    ``gaps/`` rows, ``None`` when there are none."""
    assert isinstance(options, CelanturOptions), "video tracks belong to Celantur runs"
    keys = _LabelKeys.of(labels)
    videos: list[tuple[str, tuple[VideoChunk, ...], _VideoStats, int, bool]] = []
    feeds: list[_Feed] = []  # of the videos with parsed chunks, in order
    counted: list[tuple[_VideoStats, np.ndarray, np.ndarray]] = []  # their detections
    for media, chunks in assignment.videos:
        stats = _VideoStats()
        held = [
            (chunk, batch)
            for chunk in chunks
            for batch in parts
            if chunk.file.rel in batch.duplicates  # else it failed to parse: already in errors/
        ]
        parsed = [(chunk, batch.chunk(chunk.file.rel)) for chunk, batch in held]
        if parsed:
            video = _Video(parsed, sum(b.duplicates[c.file.rel] for c, b in held))
            linked, detections = video.rows(stats)
            feeds.append(video.feed(linked))
            counted.append((stats, video.data.labels[detections], video.data.scores[detections]))
        span = max(c.end for c, _ in parsed) - min(c.start for c, _ in parsed) + 1 if parsed else 0
        videos.append((media, chunks, stats, span, bool(parsed)))
    _add_detections(counted, keys)
    found, per_video = None, np.zeros(len(feeds), dtype=np.int64)
    if sum(len(feed.frames) for feed in feeds):
        finder = GapFinder(
            min_iou=options.gap_iou,
            max_gap=options.gap_max_frames,
            min_hits=options.gap_min_hits,
            high_score=options.gap_high_score,
        )
        found, per_video = _link(finder, feeds, labels)
    gap_counts = iter(per_video.tolist())
    gap_media: list[str] = []
    for media, chunks, stats, span, fed in videos:
        stats.gaps = next(gap_counts) if fed else 0
        gap_media.extend([media] * stats.gaps)
        numbered = tuple(c for c in chunks if c.numbered)  # the others are misnamed
        chunk_gaps, chunk_overlaps = _compare_chunks(media, numbered, issues)
        missing = max(span - stats.frames, 0)
        summary.video_rows.extend(_video_rows(media, stats, chunk_gaps, chunk_overlaps, missing))
    return _gap_table(gap_media, found) if found is not None and gap_media else None


def _read_parts(ctx: TaskContext, key: str, reads: Prefetch) -> _BatchRows:
    """The batch's parts as arrays (one read of its staged bundle)."""
    try:
        staged = staged_tables(reads.take(ctx.output, staged_bundle(key)), _PART_COLUMNS)
    except FileNotFoundError:  # no rows written
        staged = {}
    return _batch_rows(staged)


def _batch_rows(staged: Mapping[str, pa.Table]) -> _BatchRows:
    """A batch's ``frames``, ``detections`` and ``chunks`` rows (those it has of the three) as
    arrays, each chunk's rows found by ``source``."""
    tables: dict[str, tuple[pa.Table, dict[str, tuple[int, int]]]] = {}
    for table, columns in _PART_COLUMNS.items():
        data = (staged[table] if table in staged else SCHEMAS[table].empty_table()).select(columns)
        tables[table] = _by_source(data)
    (frames, frame_rows), (det, det_rows) = tables["frames"], tables["detections"]
    chunks, chunk_rows = tables["chunks"]
    repeats = chunks["duplicate_frames"].fill_null(0).to_numpy()
    # Labels as codes: a missing label is the code after the dictionary's.
    labels = det["type_label"].combine_chunks().dictionary_encode()
    names = [*labels.dictionary.to_pylist(), None]
    rows = _Rows(
        frames=np.asarray(frames["frame"].to_numpy(), dtype=np.int64),
        durations=_floats(frames["duration"]),
        sizes=np.column_stack([_floats(frames["width"]), _floats(frames["height"])]),
        detection_frames=np.asarray(det["frame"].to_numpy(), dtype=np.int64),
        labels=labels.indices.fill_null(len(names) - 1).to_numpy(zero_copy_only=False),
        scores=_floats(det["score"]),
        boxes=np.column_stack([_floats(det[c]) for c in ("x1", "y1", "x2", "y2")]),
    )
    return _BatchRows(
        rows=rows,
        frame_rows=frame_rows,
        detection_rows=det_rows,
        duplicates={rel: int(repeats[start]) for rel, (start, _) in chunk_rows.items()},
        labels=names,
    )


def _by_source(table: pa.Table) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
    """``table`` with each ``source``'s rows together (in table order within a source), and
    their row range per source: one grouping pass, not a filter per chunk over the whole
    batch. Pass 1 writes each chunk's rows together, so the table comes back as it is unless
    the part was written otherwise."""
    sources = table["source"].combine_chunks()
    # Where the source changes, row against row: cheaper than hashing every row, and each run
    # is a source's rows unless a source has several runs.
    changed = pc.not_equal(sources[1:], sources[:-1]).to_numpy(zero_copy_only=False)
    firsts = [0, *(np.flatnonzero(changed) + 1).tolist()] if len(sources) else []
    names = sources.take(pa.array(firsts, pa.int64())).to_pylist()
    if len(set(names)) < len(names):  # a source in several runs: its rows brought together
        encoded = sources.dictionary_encode()
        codes = encoded.indices.to_numpy()
        order = np.argsort(codes, kind="stable")  # dictionary codes follow first appearance
        table, names = table.take(order), encoded.dictionary.to_pylist()
        firsts = np.searchsorted(codes[order], np.arange(len(names))).tolist()
    bounds = [*firsts, table.num_rows]
    return table, {
        source: (start, end)
        for source, start, end in zip(names, bounds[:-1], bounds[1:], strict=True)
    }


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A column as float64, nulls as NaN."""
    return np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)


def _compare_chunks(
    media: str, chunks: tuple[VideoChunk, ...], issues: ErrorLog
) -> tuple[int, int]:
    """Count (and report as warnings) gaps and overlaps between consecutive chunks' name ranges."""
    gaps = overlaps = 0
    for previous, current in pairwise(chunks):
        if current.start > previous.end + 1:
            gaps += 1
            issues.add(
                current.file.rel, "validate", "chunk_gap",
                f"frames {previous.end + 1}-{current.start - 1} of video {media} are in no chunk "
                f"(after {previous.file.rel})", "warning",
            )  # fmt: skip
        elif current.start <= previous.end:
            overlaps += 1
            issues.add(
                current.file.rel, "validate", "chunk_overlap",
                f"frames {current.start}-{min(previous.end, current.end)} of video {media} are "
                f"also in {previous.file.rel}; the first copy is linked", "warning",
            )  # fmt: skip
    return gaps, overlaps


def _gap_table(media: list[str], gaps: GapColumns) -> pa.Table:
    """The ``gaps/`` rows of ``gaps`` (the video of each in ``media``), a column at a time."""
    names = {label: type_name(label) for label in dict.fromkeys(gaps.labels)}
    missing = gaps.last_missing - gaps.first_missing + 1
    offsets = pa.array(np.concatenate(([0], np.cumsum(missing))).astype(np.int32))
    columns: dict[str, Any] = {
        "media": media, "track": gaps.track, "type_label": gaps.labels,
        "type_name": list(map(names.__getitem__, gaps.labels)),
        "first_missing_frame": gaps.first_missing, "last_missing_frame": gaps.last_missing,
        "missing_frames": missing.astype(np.int32), "frames_without_metadata": gaps.unprocessed,
        "iou": gaps.iou, "track_frames": gaps.track_frames, "confidence": gaps.confidence,
    }  # fmt: skip
    for axis, corner in enumerate(("x1", "y1", "x2", "y2")):
        columns[f"before_{corner}"] = gaps.box_before[:, axis]
        columns[f"after_{corner}"] = gaps.box_after[:, axis]
        values = pa.array(np.ascontiguousarray(gaps.predicted[:, axis]), pa.float64())
        columns[f"predicted_{corner}"] = pa.ListArray.from_arrays(offsets, values)
    schema = SCHEMAS["gaps"]
    return pa.Table.from_arrays(
        [pa.array(columns[name], schema.field(name).type) for name in schema.names], schema=schema
    )


def _video_rows(
    media: str, stats: _VideoStats, chunk_gaps: int, chunk_overlaps: int, missing: int
) -> list[dict[str, Any]]:
    mean_duration = float(stats.duration_sum / stats.durations) if stats.durations else None
    scored = sum(stats.label_scored.values())
    mean_score = sum(stats.label_score_sum.values()) / scored if scored else None
    p50, p90 = stats.scores.quantiles(0.5, 0.9)
    rows: list[dict[str, Any]] = [
        {
            "scope": "video",
            "name": media,
            "frames": stats.frames,
            "frames_with_detections": stats.frames_with_detections,
            "detections": stats.detections,
            "mean_score": mean_score,
            "score_p50": p50,
            "score_p90": p90,
            "mean_duration": mean_duration,
            "implied_fps": 1 / mean_duration if mean_duration else None,
            "missing_frames": missing,
            "duplicate_frames": stats.duplicate_frames,
            "chunk_gaps": chunk_gaps,
            "chunk_overlaps": chunk_overlaps,
            "anonymisation_gaps": stats.gaps,
        }
    ]
    for label, count in sorted(stats.labels.items()):
        rows.append(
            {
                "scope": "video_label",
                "name": media,
                "value": label,
                "detections": count,
                "mean_score": stats.label_score_sum[label] / stats.label_scored[label]
                if stats.label_scored[label]
                else None,
            }
        )
    return rows
