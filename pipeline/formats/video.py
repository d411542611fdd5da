"""Celantur video metadata chunks (``<video>-<start>-<end>.json``) as frame and detection columns.

A chunk is a JSON array of at most 500 frames ``{id, detections, size, duration}``. Chunks are
the bulk of a fleet's metadata, so the common case is decoded against a strict typed schema
(msgspec: no dict per detection, no silent bool-as-number coercion) straight into columns.
Anything the schema refuses — ``NaN`` literals, wrong types, missing ids — is decoded again by the
validating path, which reuses the image-metadata parser and reports each problem as a finding.
Both paths give identical columns for valid input (a test holds them to it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Annotated, Any, cast

import msgspec
import numpy as np

from pipeline.formats.metadata import (
    INT64_LIMIT,
    SIDE_LIMIT,
    Finding,
    MetadataError,
    ResolvedSize,
    Severity,
    check_detection_count,
    finite_number,
    parse_detections,
    parse_size,
    resolve_size_order,
)
from pipeline.io.jsonio import check_json_bounds, parse_json

#: Celantur writes at most this many frames per chunk file.
MAX_CHUNK_FRAMES = 500

DETECTION_COLUMNS = (
    "frame", "detection_index", "detection_id", "type", "type_label", "score", "is_anonymised",
    "x1", "y1", "x2", "y2", "offset_x", "offset_y", "color",
)  # fmt: skip


#: An integer a 64-bit column holds: anything beyond sends the chunk to the validating path.
_Int64 = Annotated[int, msgspec.Meta(ge=-INT64_LIMIT, le=INT64_LIMIT - 1)]


# gc=False: these objects hold no reference cycles, so the cyclic collector need not track the
# hundreds of thousands a batch decodes (decoding is faster, and so is every collection).
class _Detection(msgspec.Struct, gc=False):
    id: _Int64 | None = None
    type: _Int64 | None = None
    type_label: str | None = None
    score: float | None = None
    is_anonymised: bool | None = None
    is_anonymized: bool | None = None
    bbox: list[float] | None = None
    offset: list[float] | None = None
    color: list[int] | None = None


class _Frame(msgspec.Struct, gc=False):
    id: _Int64
    detections: list[_Detection]
    size: list[int] | None = None
    duration: float | None = None


_DECODER = msgspec.json.Decoder(list[_Frame])


@dataclass
class ParsedChunk:
    """A chunk's frames and detections as columns, with its validation findings.

    ``frame_*`` lists are aligned (one entry per frame kept: duplicates of an earlier frame id
    are dropped with a finding); ``detections`` maps :data:`DETECTION_COLUMNS` to aligned lists.
    """

    frame_ids: list[int] = field(default_factory=list)
    frame_detections: list[int] = field(default_factory=list)
    frame_sizes: list[ResolvedSize | None] = field(default_factory=list)
    frame_durations: list[float | None] = field(default_factory=list)
    detections: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in DETECTION_COLUMNS}
    )
    frames_in_file: int = 0
    duplicate_frames: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def detection_count(self) -> int:
        """Detections kept."""
        return len(self.detections["frame"])


def parse_chunk(data: bytes, *, max_bytes: int) -> ParsedChunk:
    """Decode a video metadata chunk.

    Raises
    ------
    JsonError
        When the file is not JSON, or over the size and structure caps
        (:func:`~pipeline.io.jsonio.check_json_bounds`).
    MetadataError
        When the JSON is not an array of frames, or holds more than
        :data:`~pipeline.formats.metadata.MAX_DETECTIONS` detections.
    """
    check_json_bounds(data, max_bytes=max_bytes)
    try:
        frames = _DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        # Not the common case: the validating path says exactly what is wrong.
        return _parse_validating(parse_json(data, max_bytes=max_bytes))
    check_detection_count(sum(len(frame.detections) for frame in frames))
    return _parse_typed(frames)


class _Columns:
    """Accumulates a chunk's frames and detections, resolving each frame's size order."""

    def __init__(self) -> None:
        self.chunk = ParsedChunk()
        self._seen: set[int] = set()
        self._pending_sizes: list[tuple[int, int] | None] = []

    def add_frame(
        self, frame_id: int, size: tuple[int, int] | None, duration: float | None
    ) -> bool:
        """Start a frame; ``False`` (with a finding) when its id repeats an earlier frame."""
        self.chunk.frames_in_file += 1
        if frame_id in self._seen:
            self.chunk.duplicate_frames += 1
            self.chunk.findings.append(
                Finding("warning", "duplicate_frame",
                        f"frame id {frame_id} appears again; the later copy is not tabled")
            )  # fmt: skip
            return False
        self._seen.add(frame_id)
        self.chunk.frame_ids.append(frame_id)
        self.chunk.frame_detections.append(0)
        self._pending_sizes.append(size)
        self.chunk.frame_durations.append(duration)
        return True

    def finish(self) -> ParsedChunk:
        """Resolve frame sizes (per distinct ``size`` value, from the chunk's boxes)."""
        columns = self.chunk.detections
        boxes = [
            (x1, y1, x2, y2)
            for x1, y1, x2, y2 in zip(columns["x1"], columns["y1"], columns["x2"], columns["y2"],
                                      strict=True)
            if x1 is not None
        ]  # fmt: skip
        resolved: dict[tuple[int, int], ResolvedSize] = {}
        for size in self._pending_sizes:
            if size is not None and size not in resolved:
                resolved[size] = resolve_size_order(size, boxes)
        self.chunk.frame_sizes = [
            resolved[s] if s is not None else None for s in self._pending_sizes
        ]
        return self.chunk


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def _parse_typed(frames: list[_Frame]) -> ParsedChunk:
    columns = _Columns()
    kept: list[_Frame] = []
    bad_sizes = 0
    for frame in frames:
        size = _valid_size(frame.size)
        bad_sizes += frame.size is not None and size is None
        if columns.add_frame(frame.id, size, _finite_or_none(frame.duration)):
            columns.chunk.frame_detections[-1] = len(frame.detections)
            kept.append(frame)
    # Column by column over one flat list, each built by C-level iteration (map over an
    # attribute getter, zip to transpose boxes): no Python code runs per detection unless a
    # value needs checking one by one.
    dets = [d for frame in kept for d in frame.detections]
    out = columns.chunk.detections
    out["frame"] = [frame.id for frame in kept for _ in frame.detections]
    out["detection_index"] = [i for frame in kept for i in range(len(frame.detections))]
    out["detection_id"] = list(map(attrgetter("id"), dets))
    out["type"] = list(map(attrgetter("type"), dets))
    out["type_label"] = list(map(attrgetter("type_label"), dets))
    given_scores = list(map(attrgetter("score"), dets))
    scores = (
        given_scores
        if None not in given_scores and min(given_scores, default=0.0) >= 0.0
        and max(given_scores, default=0.0) <= 1.0
        else [s if s is not None and 0.0 <= s <= 1.0 else None for s in given_scores]
    )  # fmt: skip
    out["score"] = scores
    anonymised = list(map(attrgetter("is_anonymised"), dets))
    if None in anonymised:
        spelled = map(attrgetter("is_anonymized"), dets)
        anonymised = [a if a is not None else b for a, b in zip(anonymised, spelled, strict=True)]
    out["is_anonymised"] = anonymised
    (x1, y1, x2, y2), bad_boxes = _transposed(list(map(attrgetter("bbox"), dets)), 4)
    out.update(x1=x1, y1=y1, x2=x2, y2=y2)
    (out["offset_x"], out["offset_y"]), _ = _transposed(list(map(attrgetter("offset"), dets)), 2)
    given_colours = list(map(attrgetter("color"), dets))
    colours = (
        given_colours
        if given_colours.count(None) == len(given_colours)
        else [_colour(c) for c in given_colours]
    )
    out["color"] = colours
    bad = {
        "bad_bbox": bad_boxes,
        "bad_color": 0 if colours is given_colours else _refused(given_colours, colours),
        "bad_score": 0 if scores is given_scores else _refused(given_scores, scores),
        "bad_size": bad_sizes,
    }
    for code, count in bad.items():
        if count:
            columns.chunk.findings.append(Finding("warning", code, f"{count} values unusable"))
    return columns.finish()


def _transposed(values: list[list[float] | None], length: int) -> tuple[list[list[Any]], int]:
    """``length`` columns of the coordinate lists (None in every column where a list is
    missing, of another length or not finite) and how many given lists were refused. Whole
    columns at once when every list is fine (a column's sum is finite exactly when all its
    values are; an overflow only sends it the slow way). ``map(itemgetter)`` per axis, not
    ``zip(*values)``: zip over thousands of lists is ~4x slower."""
    if values and None not in values:
        lists = cast(list[list[float]], values)
        if set(map(len, lists)) == {length}:
            columns = [list(map(itemgetter(axis), lists)) for axis in range(length)]
            try:
                if all(math.isfinite(math.fsum(c)) for c in columns):
                    return columns, 0
            except OverflowError:  # fsum's intermediate overflow: huge, maybe finite values
                pass
    kept = [_coords(v, length) for v in values]
    return [[k[axis] if k else None for k in kept] for axis in range(length)], _refused(
        values, kept
    )


def _refused(given: list[Any], kept: list[Any]) -> int:
    """How many values were given but refused by validation."""
    return sum(g is not None and k is None for g, k in zip(given, kept, strict=True))


def _coords(values: list[float] | None, length: int) -> list[float] | None:
    if values is None or len(values) != length or not all(map(math.isfinite, values)):
        return None
    return values


def _colour(values: list[int] | None) -> list[int] | None:
    if values is None or len(values) != 3 or not all(0 <= c <= 255 for c in values):
        return None
    return values


def _valid_size(size: list[int] | None) -> tuple[int, int] | None:
    if size is None or len(size) != 2 or not all(0 < side < SIDE_LIMIT for side in size):
        return None
    return (size[0], size[1])


def _parse_validating(document: Any) -> ParsedChunk:
    if not isinstance(document, list):
        raise MetadataError(
            "bad_video_metadata",
            f"video metadata must be a JSON array of frames, got {type(document).__name__}",
        )
    columns = _Columns()
    out = columns.chunk.detections
    findings = columns.chunk.findings
    for position, raw in enumerate(document):
        frame_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(frame_id, int) or isinstance(frame_id, bool):
            message = f"frame at position {position} has no integer id; skipped"
            findings.append(Finding("warning", "bad_frame", message))
            continue
        if not -INT64_LIMIT <= frame_id < INT64_LIMIT:
            message = f"frame at position {position}: id {frame_id} exceeds 64 bits; skipped"
            findings.append(Finding("warning", "bad_frame", message))
            continue
        frame_findings: list[Finding] = []
        size = parse_size(raw.get("size"), frame_findings)
        duration = finite_number(raw.get("duration"))
        if not columns.add_frame(frame_id, size, duration):
            continue
        try:
            detections = parse_detections(
                raw.get("detections"), frame_findings, before=len(out["frame"])
            )
        except MetadataError as exc:
            if exc.code == "too_many_detections":
                raise
            frame_findings.append(Finding("warning", exc.code, str(exc)))
            detections = ()
        findings.extend(
            Finding(f.severity, f.error, f"frame {frame_id}: {f.message}") for f in frame_findings
        )
        columns.chunk.frame_detections[-1] = len(detections)
        for d in detections:
            bbox = d.bbox or (None, None, None, None)
            offset = d.offset or (None, None)
            values = (
                frame_id, d.index, d.detection_id, d.type, d.type_label, d.score, d.is_anonymised,
                *bbox, *offset, list(d.colour) if d.colour else None,
            )  # fmt: skip
            for name, value in zip(DETECTION_COLUMNS, values, strict=True):
                out[name].append(value)
    return columns.finish()


def summarise_findings(findings: list[Finding], limit: int = 3) -> list[Finding]:
    """One finding per (severity, code): the count and the first few messages.

    A chunk of 500 frames with a NaN score in each would otherwise give 500 error rows.
    """
    grouped: dict[tuple[str, str], list[str]] = {}
    for finding in findings:
        grouped.setdefault((finding.severity, finding.error), []).append(finding.message)
    result = []
    for (severity, code), messages in grouped.items():
        shown = "; ".join(messages[:limit])
        more = f" (+{len(messages) - limit} more)" if len(messages) > limit else ""
        prefix = f"{len(messages)}x " if len(messages) > 1 else ""
        level: Severity = "error" if severity == "error" else "warning"
        result.append(Finding(level, code, f"{prefix}{shown}{more}"))
    return result
