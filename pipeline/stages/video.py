"""The video-metadata tasks.

* :func:`process_chunk_batch` (pass 1, parallel over chunk batches): parse chunks into
  ``detections/``, ``frames/`` and ``chunks/`` parts, check each chunk on its own.
* :func:`track_videos` (pass 2, parallel over videos): read a video's parts back in frame order
  (chunks were batched sorted by start frame), stream them through the gap tracker
  (:class:`~pipeline.kernels.tracking.GapFinder`), check the chunks against each other, and
  write ``gaps/`` and the video's summary rows.

Linking rule (see :class:`_VideoStream`): the first copy of a frame, in chunk start order,
counts; it is linked when its chunk's name starts at or before it.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import CelanturOptions
from pipeline.formats.celantur import type_name
from pipeline.formats.metadata import MetadataError
from pipeline.formats.video import (
    DETECTION_COLUMNS,
    MAX_CHUNK_FRAMES,
    ParsedChunk,
    parse_chunk,
    summarise_findings,
)
from pipeline.io.jsonio import JsonError
from pipeline.io.parquet import staged_part, table_from_bytes, write_part
from pipeline.io.storage import Prefetch
from pipeline.kernels.quantiles import ScoreHistogram
from pipeline.kernels.tracking import Gap, GapFinder
from pipeline.stages.common import ErrorLog, TaskContext, batch_io, guarded, read_input
from pipeline.stages.plan import Batch, TrackAssignment, VideoChunk
from pipeline.stages.summary import BatchSummary, label_groups
from pipeline.tables import SCHEMAS, to_arrow

# ---------------------------------------------------------------------------------------------
# Pass 1: chunks -> parts
# ---------------------------------------------------------------------------------------------


def process_chunk_batch(batch: Batch[VideoChunk], ctx: TaskContext) -> BatchSummary:
    """Parse a batch of chunk files and write its ``detections/``, ``frames/``, ``chunks/`` and
    ``errors/`` parts (``part-<batch key>.parquet``). Idempotent, like every batch task."""
    with batch_io(ctx) as (ctx, storage):
        planned = [(c.file.key, c.file.size) for c in batch.groups if c.numbered]
        reads = storage.prefetch(ctx.source, planned)
        return _process_chunks(batch, ctx, reads)


def _process_chunks(batch: Batch[VideoChunk], ctx: TaskContext, reads: Prefetch) -> BatchSummary:
    issues = ErrorLog()
    parsed_chunks: list[tuple[VideoChunk, ParsedChunk]] = []
    chunk_rows: list[dict[str, Any]] = []
    summary = BatchSummary()
    for chunk in batch.groups:
        with guarded(chunk.file.rel, issues):
            parsed = _parse(chunk, ctx, reads, issues)
            if parsed is None:
                continue
            found = ErrorLog()
            chunk_rows.append(_check_chunk(chunk, parsed, found))
            issues.extend(found)
            parsed_chunks.append((chunk, parsed))
            summary.landed["video_metadata"] += 1
            summary.frames += len(parsed.frame_ids)
            durations = [d for d in parsed.frame_durations if d is not None]
            summary.duration_sum += Fraction(math.fsum(durations))
            summary.durations += len(durations)
    summary.add_errors(issues)
    # The batch's tables and label statistics at once: what building a table costs whatever
    # its size is paid per batch, not per chunk (real videos are often far shorter than a
    # 500-frame chunk).
    detections = _detection_table(parsed_chunks) if parsed_chunks else None
    if detections is not None:
        counts = [parsed.detection_count for _, parsed in parsed_chunks]
        summary.add_detection_columns(
            *(
                detections[name].combine_chunks()
                for name in ("type_label", "score", "is_anonymised")
            ),
            files=np.repeat(np.arange(len(counts)), counts),
        )
    outputs = {
        "detections": detections,
        "frames": _frame_table(parsed_chunks) if parsed_chunks else None,
        "chunks": to_arrow("chunks", chunk_rows),
        "errors": to_arrow("errors", issues),
    }
    for table, data_table in outputs.items():
        if data_table is not None and data_table.num_rows:
            summary.rows[table] = data_table.num_rows
            summary.add_part(
                table, write_part(ctx.output, staged_part(table, batch.key), data_table)
            )
    return summary


def _parse(
    chunk: VideoChunk, ctx: TaskContext, reads: Prefetch, issues: ErrorLog
) -> ParsedChunk | None:
    if not chunk.numbered:
        message = f"frame numbers {chunk.start}-{chunk.end} in the name exceed 64 bits"
        issues.add(chunk.file.rel, "validate", "bad_chunk_name", message)
        return None
    data = read_input(chunk.file, ctx, reads, issues)
    if data is None:
        return None
    try:
        return parse_chunk(data, max_bytes=ctx.options.max_json_bytes)
    except JsonError as exc:
        issues.add(chunk.file.rel, "decode", f"json_{exc.code}", str(exc))
    except MetadataError as exc:
        issues.add(chunk.file.rel, "validate", exc.code, str(exc))
    return None


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


def _detection_table(parsed: Sequence[tuple[VideoChunk, ParsedChunk]]) -> pa.Table:
    """The ``detections/`` rows of parsed chunks (at least one), in order."""
    columns: dict[str, Any] = {
        name: pa.concat_arrays([chunk.detections[name] for _, chunk in parsed])
        for name in DETECTION_COLUMNS
    }
    # Per chunk, per frame and per distinct label, then spread by Arrow takes (no Python call
    # per detection).
    of_chunk = np.repeat(np.arange(len(parsed)), [chunk.detection_count for _, chunk in parsed])
    sizes = [size for _, chunk in parsed for size in chunk.frame_sizes]
    per_frame = [count for _, chunk in parsed for count in chunk.frame_detections]
    frame_of = np.repeat(np.arange(len(sizes)), per_frame)
    labels = columns["type_label"].dictionary_encode()
    names = pa.array(map(type_name, labels.dictionary.to_pylist()), pa.string())
    columns.update(
        source=pa.array([c.file.rel for c, _ in parsed], pa.string()).take(of_chunk),
        media=pa.array([c.media for c, _ in parsed], pa.string()).take(of_chunk),
        type_name=names.take(labels.indices),
        frame_width=pa.array([s.width if s else None for s in sizes], pa.int32()).take(frame_of),
        frame_height=pa.array([s.height if s else None for s in sizes], pa.int32()).take(frame_of),
    )
    schema = SCHEMAS["detections"]
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def _frame_table(parsed: Sequence[tuple[VideoChunk, ParsedChunk]]) -> pa.Table:
    """The ``frames/`` rows of parsed chunks, in order."""
    of_chunk = np.repeat(np.arange(len(parsed)), [len(chunk.frame_ids) for _, chunk in parsed])
    sizes = [size for _, chunk in parsed for size in chunk.frame_sizes]

    def spread(values: list[Any], kind: pa.DataType) -> pa.Array:
        return pa.array(values, kind).take(of_chunk)

    columns = {
        "source": spread([c.file.rel for c, _ in parsed], pa.string()),
        "media": spread([c.media for c, _ in parsed], pa.string()),
        "frame": [frame for _, chunk in parsed for frame in chunk.frame_ids],
        "detections": [count for _, chunk in parsed for count in chunk.frame_detections],
        "width": [s.width if s else None for s in sizes],
        "height": [s.height if s else None for s in sizes],
        "size_order": [s.order if s else None for s in sizes],
        "size_order_source": [s.source if s else None for s in sizes],
        "duration": [d for _, chunk in parsed for d in chunk.frame_durations],
        "chunk_start": spread([c.start for c, _ in parsed], pa.int64()),
        "chunk_end": spread([c.end for c, _ in parsed], pa.int64()),
    }
    return pa.Table.from_pydict(columns, schema=SCHEMAS["frames"])


# ---------------------------------------------------------------------------------------------
# Pass 2: per-video linking and cross-chunk checks
# ---------------------------------------------------------------------------------------------

_PART_COLUMNS = {
    "frames": ["source", "frame", "duration", "width", "height"],
    "detections": ["source", "frame", "type_label", "score", "x1", "y1", "x2", "y2"],
    "chunks": ["source", "duplicate_frames"],
}


@dataclass
class _ChunkFrames:
    """One chunk's frames and detections, sorted by frame (file order on ties)."""

    frames: np.ndarray  # (f,) frame ids
    durations: np.ndarray  # (f,) seconds, NaN when unknown
    sizes: np.ndarray  # (f, 2) width and height, NaN when unknown
    detection_frames: np.ndarray  # (n,)
    labels: list[str | None]
    scores: np.ndarray  # (n,) NaN when unknown
    boxes: np.ndarray  # (n, 4) NaN rows when unknown
    duplicates: int  # repeats of a frame id within the chunk file (dropped in pass 1)


@dataclass
class _VideoStats:
    """What one video's pass accumulates (one video at a time, so memory stays small)."""

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


class _VideoStream:
    """Feeds one video's frames to the gap finder in frame order.

    The rule, over the whole video: the first copy of a frame (chunks in start order, then file
    order) counts; it is linked when its chunk's name starts at or before it. Streaming follows
    from it: once a chunk starting at ``s`` arrives, no frame below ``s`` can still be linked,
    so those are fed; frames at or above ``s`` wait, since a later, overlapping chunk may hold
    the ones this chunk lacks. A first copy below its own chunk's start (named out of range)
    is counted in the statistics but not linked: frames after it were linked already.
    """

    def __init__(self, finder: GapFinder, stats: _VideoStats) -> None:
        self.finder = finder
        self.stats = stats
        self.pending: dict[int, tuple[_ChunkFrames, int, slice]] = {}
        self.horizon: int | None = None  # every frame below was fed
        self.linked: list[tuple[int, int]] = []  # runs of fed frame ids, for duplicate checks
        self.late: set[int] = set()  # first copies below their chunk's start (rare)
        self.gaps: list[Gap] = []

    def _was_linked(self, frame: int) -> bool:
        index = bisect.bisect_right(self.linked, (frame, 2**63)) - 1
        return index >= 0 and self.linked[index][0] <= frame <= self.linked[index][1]

    def add(self, chunk: _ChunkFrames, start: int) -> None:
        """Take a chunk (after feeding what it makes final)."""
        self.flush(below=start)
        self.stats.duplicate_frames += chunk.duplicates
        bounds = np.searchsorted(chunk.detection_frames, chunk.frames, side="left")
        ends = np.searchsorted(chunk.detection_frames, chunk.frames, side="right")
        for position, frame in enumerate(chunk.frames.tolist()):
            span = slice(bounds[position], ends[position])
            if frame in self.pending or frame in self.late or self._was_linked(frame):
                self.stats.duplicate_frames += 1
            elif self.horizon is not None and frame < self.horizon:
                self.late.add(frame)
                self._count(*self._gather([frame], [(chunk, position, span)]))
            else:
                self.pending[frame] = (chunk, position, span)

    def flush(self, below: int | None = None) -> None:
        """Feed the pending frames below ``below`` (all of them when ``None``) in frame order."""
        ready = sorted(f for f in self.pending if below is None or f < below)
        if ready:
            entries = [self.pending.pop(f) for f in ready]
            frames, det_frames, labels, scores, boxes, durations = self._gather(ready, entries)
            self._count(frames, det_frames, labels, scores, boxes, durations)
            sizes = np.array([c.sizes[p] for c, p, _ in entries], dtype=np.float64)
            linked = self.finder.feed(det_frames, labels, boxes, frames, scores, sizes)
            self.gaps.extend(linked.gaps)
            for frame in ready:
                if self.linked and self.linked[-1][1] == frame - 1:
                    self.linked[-1] = (self.linked[-1][0], frame)
                else:
                    self.linked.append((frame, frame))
        if below is not None:
            self.horizon = below if self.horizon is None else max(self.horizon, below)

    @staticmethod
    def _gather(
        frame_ids: list[int], entries: list[tuple[_ChunkFrames, int, slice]]
    ) -> tuple[np.ndarray, np.ndarray, list[str | None], np.ndarray, np.ndarray, np.ndarray]:
        """Columns of the given frames, in the order given."""
        det_frames = np.concatenate([c.detection_frames[s] for c, _, s in entries])
        labels = [label for c, _, s in entries for label in c.labels[s]]
        scores = np.concatenate([c.scores[s] for c, _, s in entries])
        boxes = np.concatenate([c.boxes[s] for c, _, s in entries]).reshape(-1, 4)
        durations = np.array([c.durations[p] for c, p, _ in entries], dtype=np.float64)
        frames = np.asarray(frame_ids, dtype=np.int64)
        return frames, det_frames, labels, scores, boxes, durations

    def _count(
        self,
        frames: np.ndarray,
        det_frames: np.ndarray,
        labels: list[str | None],
        scores: np.ndarray,
        boxes: np.ndarray,
        durations: np.ndarray,
    ) -> None:
        stats = self.stats
        stats.frames += len(frames)
        stats.frames_with_detections += len(np.unique(det_frames))
        stats.detections += len(det_frames)
        finite = durations[np.isfinite(durations)]
        stats.duration_sum += float(finite.sum())
        stats.durations += len(finite)
        stats.scores.add(scores)
        # Per distinct str(label), not per detection; each label's scores are added one after
        # the other in frame order (np.add.accumulate is sequential), as a plain loop would.
        scored = np.isfinite(scores)
        for key, selected in label_groups(labels):
            kept = scores[selected & scored]
            stats.labels[key] += int(selected.sum())
            if len(kept):
                running = np.concatenate(([stats.label_score_sum.get(key, 0.0)], kept))
                stats.label_score_sum[key] = float(np.add.accumulate(running)[-1])
                stats.label_scored[key] += len(kept)


def track_videos(assignment: TrackAssignment, ctx: TaskContext) -> BatchSummary:
    """Link each assigned video's detections across frames and chunks; write ``gaps/``.

    Reads only the ``frames/``, ``detections/`` and ``chunks/`` parts of the assignment's chunk
    batches, in frame order. Side effects: ``gaps/part-<key>.parquet`` and
    ``errors/part-<key>.parquet`` (chunk gaps and overlaps, as warnings). Idempotent.
    """
    with batch_io(ctx) as (ctx, storage):
        reads = storage.prefetch(
            ctx.output, [(rel, 0) for key in assignment.batch_keys for rel in _part_rels(key)]
        )
        parts = {key: _read_parts(ctx, key, reads) for key in assignment.batch_keys}
        return _track(assignment, ctx, parts)


def _track(
    assignment: TrackAssignment,
    ctx: TaskContext,
    parts: dict[str, dict[str, dict[str, pa.Table]]],
) -> BatchSummary:
    issues = ErrorLog()
    gap_rows: list[dict[str, Any]] = []
    summary = BatchSummary()
    options = ctx.options
    assert isinstance(options, CelanturOptions), "video tracks belong to Celantur runs"
    for media, chunks in assignment.videos:
        finder = GapFinder(
            min_iou=options.gap_iou,
            max_gap=options.gap_max_frames,
            min_hits=options.gap_min_hits,
            high_score=options.gap_high_score,
        )
        stats = _VideoStats()
        stream = _VideoStream(finder, stats)
        parsed_chunks: list[VideoChunk] = []
        for chunk in chunks:
            rows = _chunk_rows(parts, chunk)
            if rows is None:
                continue  # the chunk failed to parse: already in errors/
            parsed_chunks.append(chunk)
            stream.add(rows, chunk.start)
        stream.flush()
        stats.gaps = len(stream.gaps)
        gap_rows.extend(_gap_row(media, gap) for gap in stream.gaps)
        numbered = tuple(c for c in chunks if c.numbered)  # the others are misnamed
        chunk_gaps, chunk_overlaps = _compare_chunks(media, numbered, issues)
        span = (
            max(c.end for c in parsed_chunks) - min(c.start for c in parsed_chunks) + 1
            if parsed_chunks
            else 0
        )
        missing = max(span - stats.frames, 0)
        summary.video_rows.extend(_video_rows(media, stats, chunk_gaps, chunk_overlaps, missing))
    summary.add_errors(issues)
    for table, rows_out in (("gaps", gap_rows), ("errors", issues)):
        if rows_out:
            summary.rows[table] = len(rows_out)
            part = staged_part(table, assignment.key)
            summary.add_part(table, write_part(ctx.output, part, to_arrow(table, rows_out)))
    return summary


def _part_rels(key: str) -> list[str]:
    return [staged_part(table, key) for table in _PART_COLUMNS]


def _read_parts(ctx: TaskContext, key: str, reads: Prefetch) -> dict[str, dict[str, pa.Table]]:
    """The batch's parts: table name -> the rows of each chunk (by ``source``)."""
    tables: dict[str, dict[str, pa.Table]] = {}
    for (table, columns), rel in zip(_PART_COLUMNS.items(), _part_rels(key), strict=True):
        try:
            tables[table] = _by_source(table_from_bytes(reads.take(ctx.output, rel), columns))
        except FileNotFoundError:
            tables[table] = {}  # no rows written
    return tables


def _by_source(table: pa.Table) -> dict[str, pa.Table]:
    """``table``'s rows per ``source``, in table order: one grouping pass, not a filter per
    chunk over the whole batch. Pass 1 writes each chunk's rows together, so they are
    zero-copy slices unless the part was written otherwise."""
    sources = table["source"].combine_chunks().dictionary_encode()
    codes = sources.indices.to_numpy()
    grouped = bool(np.all(codes[1:] >= codes[:-1]))  # dictionary codes follow first appearance
    order = np.arange(len(codes)) if grouped else np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(sources.dictionary) + 1))
    return {
        source: table.slice(start, end - start) if grouped else table.take(order[start:end])
        for source, start, end in zip(
            sources.dictionary.to_pylist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True
        )
    }


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A column as float64, nulls as NaN."""
    return np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)


def _chunk_rows(
    parts: dict[str, dict[str, dict[str, pa.Table]]], chunk: VideoChunk
) -> _ChunkFrames | None:
    """The chunk's frames and detections, sorted by frame (``None`` when it has no ``chunks/``
    row: it failed to parse)."""
    rel = chunk.file.rel
    for tables in parts.values():
        if rel not in tables["chunks"]:
            continue
        frames = tables["frames"].get(rel, SCHEMAS["frames"].empty_table())
        det = tables["detections"].get(rel, SCHEMAS["detections"].empty_table())
        ids = frames["frame"].to_numpy()
        keep = np.argsort(ids, kind="stable")
        det_frames = det["frame"].to_numpy()
        det_keep = np.argsort(det_frames, kind="stable")
        boxes = np.column_stack([_floats(det[c]) for c in ("x1", "y1", "x2", "y2")])
        return _ChunkFrames(
            frames=ids[keep],
            durations=_floats(frames["duration"])[keep],
            sizes=np.column_stack([_floats(frames["width"]), _floats(frames["height"])])[keep],
            detection_frames=det_frames[det_keep],
            labels=det["type_label"].take(det_keep).to_pylist(),
            scores=_floats(det["score"])[det_keep],
            boxes=boxes.reshape(-1, 4)[det_keep],
            duplicates=int(tables["chunks"][rel]["duplicate_frames"][0].as_py() or 0),
        )
    return None


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


def _gap_row(media: str, gap: Gap) -> dict[str, Any]:
    row: dict[str, Any] = {
        "media": media, "track": gap.track, "type_label": gap.label,
        "type_name": type_name(gap.label),
        "first_missing_frame": gap.first_missing, "last_missing_frame": gap.last_missing,
        "missing_frames": gap.last_missing - gap.first_missing + 1,
        "frames_without_metadata": gap.unprocessed, "iou": gap.iou,
        "track_frames": gap.track_frames, "confidence": gap.confidence,
    }  # fmt: skip
    for side, box in (("before", gap.box_before), ("after", gap.box_after)):
        row.update(zip((f"{side}_{c}" for c in ("x1", "y1", "x2", "y2")), box, strict=True))
    for axis, values in zip(
        ("x1", "y1", "x2", "y2"), zip(*gap.predicted, strict=True), strict=True
    ):
        row[f"predicted_{axis}"] = list(values)
    return row


def _video_rows(
    media: str, stats: _VideoStats, chunk_gaps: int, chunk_overlaps: int, missing: int
) -> list[dict[str, Any]]:
    mean_duration = float(stats.duration_sum / stats.durations) if stats.durations else None
    scored = sum(stats.label_scored.values())
    mean_score = sum(stats.label_score_sum.values()) / scored if scored else None
    rows: list[dict[str, Any]] = [
        {
            "scope": "video",
            "name": media,
            "frames": stats.frames,
            "frames_with_detections": stats.frames_with_detections,
            "detections": stats.detections,
            "mean_score": mean_score,
            "score_p50": stats.scores.quantile(0.5),
            "score_p90": stats.scores.quantile(0.9),
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
