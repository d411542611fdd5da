"""Celantur video metadata chunks (``<video>-<start>-<end>.json``) as frame and detection columns.

A chunk is a JSON array of at most 500 frames ``{id, detections, size, duration}``. Chunks are
the bulk of a fleet's metadata. A chunk in the shape the product writes is scanned straight into
arrays by a compiled scanner (:mod:`pipeline.kernels.chunkscan`: no Python object per detection),
which refuses anything outside a strict subset of JSON and of the schema. What it refuses is
decoded as before: against a strict typed schema
(msgspec: no dict per detection, no silent bool-as-number coercion; boxes, offsets and sizes as
fixed-length tuples, which the cyclic collector does not track) and each column is then built
whole, by C-level iteration and checks on NumPy/Arrow arrays: no Python code per detection.
A box, offset or size of another length is refused value by value after a decode with lists.
Anything else the schema refuses — ``NaN`` literals, wrong types, missing ids — is decoded again by
the validating path, which reuses the image-metadata parser and reports each problem as a
finding. All paths give identical columns for valid input (tests hold them to it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import attrgetter
from typing import Annotated, Any, cast

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
from pipeline.kernels.chunkscan import NULL_BOOL, scan_chunk
from pipeline.tables import SCHEMAS

#: Celantur writes at most this many frames per chunk file.
MAX_CHUNK_FRAMES = 500

DETECTION_COLUMNS = (
    "frame", "detection_index", "detection_id", "type", "type_label", "score", "is_anonymised",
    "x1", "y1", "x2", "y2", "offset_x", "offset_y", "color",
)  # fmt: skip


#: An integer a 64-bit column holds: anything beyond sends the chunk to the validating path.
_Int64 = Annotated[int, msgspec.Meta(ge=-INT64_LIMIT, le=INT64_LIMIT - 1)]


def _chunk_decoder(box: Any, point: Any, size: Any) -> msgspec.json.Decoder[Any]:
    """A typed decoder of chunks whose ``bbox``, ``offset`` and ``size`` decode as ``box``,
    ``point`` and ``size``.

    ``gc=False``: these objects hold no reference cycles, so the cyclic collector need not
    track the hundreds of thousands a batch decodes (decoding is faster, and so is every
    collection). Fields in the order the product writes them: msgspec finds each key fastest
    when it is the next field.
    """
    detection = msgspec.defstruct(
        "Detection",
        [("id", _Int64 | None, None), ("offset", point | None, None),
         ("bbox", box | None, None), ("type", _Int64 | None, None),
         ("score", float | None, None), ("is_anonymised", bool | None, None),
         ("type_label", str | None, None), ("color", list[int] | None, None),
         ("is_anonymized", bool | None, None)],
        gc=False,
    )  # fmt: skip
    frame = msgspec.defstruct(
        "Frame",
        [("id", _Int64), ("detections", list[detection]),  # type: ignore[valid-type]
         ("size", size | None, None), ("duration", float | None, None)],
        gc=False,
    )  # fmt: skip
    return msgspec.json.Decoder(list[frame])  # type: ignore[valid-type]


#: The common case: boxes, offsets and sizes as fixed-length tuples. msgspec does not make the
#: collector track tuples of numbers (lists it must): with the collector running, as in a run,
#: this decodes twice as fast, and every box is known to hold 4 numbers.
_DECODER = _chunk_decoder(tuple[float, float, float, float], tuple[float, float], tuple[int, int])
#: Boxes, offsets and sizes of any length (refused value by value, as the validating path does).
_LENIENT_DECODER = _chunk_decoder(list[float], list[float], list[int])


@dataclass
class ParsedChunk:
    """A chunk's frames and detections as columns, with its validation findings.

    ``frame_*`` lists are aligned (one entry per frame kept: duplicates of an earlier frame id
    are dropped with a finding); ``detections`` maps :data:`DETECTION_COLUMNS` to aligned Arrow
    arrays of the ``detections/`` table's types.
    """

    frame_ids: list[int] = field(default_factory=list)
    frame_detections: list[int] = field(default_factory=list)
    frame_sizes: list[ResolvedSize | None] = field(default_factory=list)
    frame_durations: list[float | None] = field(default_factory=list)
    detections: dict[str, pa.Array] = field(default_factory=dict)
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
    scanned = _parse_scanned(data)
    if scanned is not None:
        return scanned
    try:
        frames, fixed = _decode_typed(data)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        # Not the common case: the validating path says exactly what is wrong.
        return _parse_validating(parse_json(data, max_bytes=max_bytes))
    check_detection_count(sum(len(frame.detections) for frame in frames))
    return _parse_typed(frames, fixed=fixed)


def _decode_typed(data: bytes) -> tuple[list[Any], bool]:
    """The chunk's frames, by the strict typed decoder (``True``: boxes, offsets and sizes
    have their fixed lengths) or else the lenient one."""
    try:
        return cast(list[Any], _DECODER.decode(data)), True
    except msgspec.ValidationError:  # a box, offset or size of another length, most likely
        return cast(list[Any], _LENIENT_DECODER.decode(data)), False


class _Columns:
    """Accumulates a chunk's frames, resolving each frame's size order."""

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

    def add_frames(
        self, ids: list[int], sizes: list[tuple[int, int] | None], durations: list[float | None]
    ) -> None:
        """Add a chunk's frames at once, when no id repeats."""
        self.chunk.frames_in_file += len(ids)
        self._seen.update(ids)
        self.chunk.frame_ids.extend(ids)
        self.chunk.frame_detections.extend([0] * len(ids))
        self._pending_sizes.extend(sizes)
        self.chunk.frame_durations.extend(durations)

    def finish(self, detections: dict[str, pa.Array]) -> ParsedChunk:
        """Take the detection columns; resolve frame sizes (per distinct ``size`` value, from
        the chunk's usable boxes)."""
        self.chunk.detections = detections
        # resolve_size_order reads only the largest x2 and y2 of the usable boxes (a box is
        # usable whole or not at all): one box holds both.
        x2, y2 = (detections[axis].to_numpy(zero_copy_only=False) for axis in ("x2", "y2"))
        usable = ~np.isnan(x2)  # null: NaN
        boxes = (
            [(0.0, 0.0, float(x2[usable].max()), float(y2[usable].max()))] if usable.any() else []
        )
        resolved: dict[tuple[int, int] | None, ResolvedSize] = {
            size: resolve_size_order(size, boxes)
            for size in dict.fromkeys(self._pending_sizes)
            if size is not None
        }
        # A look-up per frame in C; a frame without a size (None) is no key: None.
        self.chunk.frame_sizes = list(map(resolved.get, self._pending_sizes))
        return self.chunk


_TYPES: dict[str, pa.DataType] = {
    name: SCHEMAS["detections"].field(name).type for name in DETECTION_COLUMNS
}


def _finite_or_none(values: list[float | None]) -> list[float | None]:
    """``values`` with each missing or non-finite one as ``None``: checked whole when all are
    given (the common case), else one by one."""
    if None not in values and np.isfinite(np.fromiter(values, np.float64, len(values))).all():
        return values
    return [v if v is not None and math.isfinite(v) else None for v in values]


def _parse_typed(frames: list[Any], *, fixed: bool) -> ParsedChunk:
    """Columns of decoded frames (``fixed``: boxes and offsets decoded as tuples of their
    length). Each column is made by C-level iteration over the flat list of frames or
    detections (an attribute getter mapped over it, Arrow or NumPy converting the values) and
    checked whole, without Python code per detection unless a value needs it."""
    columns = _Columns()
    given_sizes = [
        None if size is None else tuple(size) for size in map(attrgetter("size"), frames)
    ]
    keep, bad_sizes = _add_frames(
        columns,
        list(map(attrgetter("id"), frames)),
        given_sizes,
        list(map(attrgetter("duration"), frames)),
    )
    kept = frames if keep is None else list(compress(frames, keep))
    counts = list(map(len, map(attrgetter("detections"), kept)))
    dets = list(chain.from_iterable(map(attrgetter("detections"), kept)))
    out = _frame_columns(columns, counts)
    for name, attribute in (("detection_id", "id"), ("type", "type"),
                            ("type_label", "type_label")):  # fmt: skip
        out[name] = pa.array(list(map(attrgetter(attribute), dets)), _TYPES[name])
    out["score"], bad_scores = _scores(list(map(attrgetter("score"), dets)))
    anonymised = list(map(attrgetter("is_anonymised"), dets))
    if None in anonymised:
        spelled = map(attrgetter("is_anonymized"), dets)
        anonymised = [a if a is not None else b for a, b in zip(anonymised, spelled, strict=True)]
    out["is_anonymised"] = pa.array(anonymised, pa.bool_())
    (out["x1"], out["y1"], out["x2"], out["y2"]), bad_boxes = _coordinates(
        list(map(attrgetter("bbox"), dets)), 4, fixed=fixed
    )
    (out["offset_x"], out["offset_y"]), _ = _coordinates(
        list(map(attrgetter("offset"), dets)), 2, fixed=fixed
    )
    given_colours = list(map(attrgetter("color"), dets))
    if given_colours.count(None) == len(given_colours):
        out["color"] = pa.nulls(len(dets), _TYPES["color"])
        bad_colours = 0
    else:
        colours = [_colour(c) for c in given_colours]
        out["color"] = pa.array(colours, _TYPES["color"])
        bad_colours = colours.count(None) - given_colours.count(None)
    return _finish(columns, out, bad_boxes, bad_colours, bad_scores, bad_sizes)


def _parse_scanned(data: bytes) -> ParsedChunk | None:
    """Columns of a chunk in the shape the product writes, scanned without a Python object per
    detection (:func:`~pipeline.kernels.chunkscan.scan_chunk`); ``None`` when the scanner
    refuses it. Gives what :func:`_parse_typed` gives for the same chunk (tests hold it to it).

    Raises
    ------
    MetadataError
        When the chunk holds more than :data:`~pipeline.formats.metadata.MAX_DETECTIONS`.
    """
    scan = scan_chunk(data)
    if not scan.ok:
        return None
    check_detection_count(len(scan.slots))
    text = pa.StringArray.from_buffers(
        len(scan.number_offsets) - 1, pa.py_buffer(scan.number_offsets), pa.py_buffer(scan.numbers)
    )
    try:  # correctly rounded, as msgspec reads numbers
        numbers = pc.cast(text, pa.float64()).to_numpy()
    except pa.ArrowInvalid:  # pragma: no cover - the scanner passes JSON numbers only
        return None
    if not np.isfinite(numbers).all():
        return None  # beyond a double (msgspec's way with those is its own)
    # After them NaN, for a null: slot -1 (a score, a duration), or the 4 slots after the last
    # number (a box or an offset).
    missing = len(numbers)
    numbers = np.append(numbers, np.full(4, np.nan))
    columns = _Columns()
    # Whole columns to lists, then the few nulls patched: no Python code per frame.
    first, second = scan.frame_sizes.T.tolist()
    given_sizes: list[tuple[int, int] | None] = list(zip(first, second, strict=True))
    for frame in np.flatnonzero(scan.frame_size_null).tolist():
        given_sizes[frame] = None
    durations: list[float | None] = numbers[scan.frame_durations].tolist()  # a null: NaN
    keep, bad_sizes = _add_frames(columns, scan.frame_ids.tolist(), given_sizes, durations)
    null_labels = scan.label_null.any()
    labels = pa.StringArray.from_buffers(
        len(scan.label_null), pa.py_buffer(scan.label_offsets), pa.py_buffer(scan.labels),
        pa.py_buffer(np.packbits(~scan.label_null, bitorder="little")) if null_labels else None,
    )  # fmt: skip
    counts, integers, integer_null = scan.frame_detections, scan.integers, scan.integer_null
    anonymised, slots = scan.anonymised, scan.slots
    if keep is not None:  # the detections of frames kept
        counts = counts[keep]
        chosen = np.repeat(keep, scan.frame_detections)
        integers, integer_null = integers[chosen], integer_null[chosen]
        anonymised, slots = anonymised[chosen], slots[chosen]
        labels = labels.filter(pa.array(chosen))
    out = _frame_columns(columns, counts.tolist())
    for column, name in enumerate(("detection_id", "type")):
        null = integer_null[:, column]
        out[name] = _column(integers[:, column], pa.int64(), null if null.any() else None)
    out["type_label"] = labels
    scores = slots[:, 2]
    out["score"], bad_scores = _score_column(numbers[scores], int(np.count_nonzero(scores >= 0)))
    either = np.where(anonymised[:, 0] == NULL_BOOL, anonymised[:, 1], anonymised[:, 0])
    null = either == NULL_BOOL
    out["is_anonymised"] = _column(either == 1, pa.bool_(), null if null.any() else None)
    for starts, names in ((slots[:, 0], ("x1", "y1", "x2", "y2")), (slots[:, 1],
                          ("offset_x", "offset_y"))):  # fmt: skip
        given = starts >= 0
        first = np.where(given, starts, missing)
        table = numbers.take(first[np.newaxis, :] + np.arange(len(names))[:, np.newaxis])
        coordinates, _ = _coordinate_columns(table, len(starts) - int(given.sum()))
        out.update(zip(names, coordinates, strict=True))
    out["color"] = pa.nulls(len(slots), _TYPES["color"])
    return _finish(columns, out, 0, 0, bad_scores, bad_sizes)


def _add_frames(
    columns: _Columns,
    ids: list[int],
    given_sizes: Sequence[tuple[int, ...] | None],
    durations: list[float | None],
) -> tuple[list[bool] | None, int]:
    """Add a chunk's frames to ``columns``: which are kept (``None``: all, no id repeats), and
    how many given sizes are unusable."""
    usable_sizes: dict[tuple[int, ...] | None, tuple[int, int] | None] = {
        size: _valid_size(size) for size in set(given_sizes) if size is not None
    }
    bad_sizes = sum(given_sizes.count(s) for s, usable in usable_sizes.items() if usable is None)
    sizes = list(map(usable_sizes.get, given_sizes))  # a missing size (None) is no key: None
    durations = _finite_or_none(durations)
    if len(set(ids)) == len(ids):
        columns.add_frames(ids, sizes, durations)
        return None, bad_sizes
    return [columns.add_frame(*values) for values in zip(ids, sizes, durations, strict=True)], (
        bad_sizes
    )


def _frame_columns(columns: _Columns, counts: list[int]) -> dict[str, pa.Array]:
    """The ``frame`` and ``detection_index`` columns of the kept frames' detections
    (``counts`` per frame, recorded in ``columns``)."""
    columns.chunk.frame_detections = counts
    per_frame = np.asarray(counts, dtype=np.int64)
    total = int(per_frame.sum())
    firsts = np.repeat(np.cumsum(per_frame) - per_frame, per_frame)
    return {
        "frame": pa.array(
            np.repeat(np.asarray(columns.chunk.frame_ids, np.int64), per_frame), pa.int64()
        ),
        "detection_index": pa.array((np.arange(total) - firsts).astype(np.int32), pa.int32()),
    }


def _finish(
    columns: _Columns,
    out: dict[str, pa.Array],
    bad_boxes: int,
    bad_colours: int,
    bad_scores: int,
    bad_sizes: int,
) -> ParsedChunk:
    """The chunk with its detection columns ``out`` and a finding per kind of unusable value."""
    bad = {"bad_bbox": bad_boxes, "bad_color": bad_colours, "bad_score": bad_scores,
           "bad_size": bad_sizes}  # fmt: skip
    for code, count in bad.items():
        if count:
            columns.chunk.findings.append(Finding("warning", code, f"{count} values unusable"))
    return columns.finish(out)


def _scores(given: list[float | None]) -> tuple[pa.Array, int]:
    """The score column of the given scores (see :func:`_score_column`)."""
    if None in given:
        values = pa.array(given, pa.float64()).to_numpy(zero_copy_only=False)  # None: NaN
        return _score_column(values, len(given) - given.count(None))
    return _score_column(np.fromiter(given, np.float64, len(given)), len(given))


def _score_column(values: np.ndarray, present: int) -> tuple[pa.Array, int]:
    """The score column, scores outside 0..1 (infinities included) made null, ``values`` NaN
    where none was given (``present`` were); how many given scores were refused."""
    usable = (values >= 0.0) & (values <= 1.0)  # NaN is not
    mask = None if usable.all() else ~usable
    return _column(values, pa.float64(), mask), present - int(usable.sum())


def _coordinates(given: list[Any], length: int, *, fixed: bool) -> tuple[list[pa.Array], int]:
    """``length`` float64 columns of coordinate sequences (``fixed``: each is a tuple of
    ``length`` floats or ``None``): null in every column where a sequence is missing, of
    another length or not finite; and how many given sequences were refused."""
    missing = given.count(None)
    if fixed and not missing:  # the common case: one pass in C over every number
        values = np.fromiter(chain.from_iterable(given), np.float64, length * len(given))
        table = np.ascontiguousarray(values.reshape(-1, length).T)
    else:
        lists = pa.array(given, pa.list_(pa.float64()))  # Arrow reads the sequences in C++
        values, offsets = lists.values.to_numpy(), lists.offsets.to_numpy()
        shaped = np.diff(offsets) == length  # a missing list has none
        if shaped.all():
            table = np.ascontiguousarray(values.reshape(-1, length).T)
        else:  # rows of another length (or missing) read as NaN, so they are refused below
            table = np.full((length, len(given)), np.nan)
            table[:, shaped] = values[offsets[:-1][shaped, None] + np.arange(length)].T
    return _coordinate_columns(table, missing)


def _coordinate_columns(table: np.ndarray, missing: int) -> tuple[list[pa.Array], int]:
    """The columns of a (length, n) ``table`` of coordinates, NaN where a sequence was missing
    (``missing`` were) or refused: null in every column where one value is not finite; and how
    many given sequences were refused."""
    usable = np.isfinite(table).all(axis=0)
    kept = int(usable.sum())
    mask = None if kept == table.shape[1] else ~usable
    columns = [_column(axis, pa.float64(), mask) for axis in table]
    return columns, table.shape[1] - missing - kept


def _column(values: np.ndarray, kind: pa.DataType, null: np.ndarray | None) -> pa.Array:
    """The Arrow column of ``kind`` holding ``values`` (booleans, or numbers of ``kind``'s
    width), null where ``null`` is set (``None``: nowhere), made from its buffers: ``pa.array``
    with a mask costs about four times as much a call, and a chunk makes ten such columns."""
    data = (
        np.packbits(values, bitorder="little")
        if values.dtype == np.bool_
        else np.ascontiguousarray(values)
    )
    if null is None:
        return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(data)], null_count=0)
    valid = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(
        kind, len(values), [valid, pa.py_buffer(data)], null_count=int(np.count_nonzero(null))
    )


def _colour(values: list[int] | None) -> list[int] | None:
    if values is None or len(values) != 3 or not all(0 <= c <= 255 for c in values):
        return None
    return values


def _valid_size(size: Sequence[int] | None) -> tuple[int, int] | None:
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
    out: dict[str, list[Any]] = {name: [] for name in DETECTION_COLUMNS}
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
    return columns.finish({name: pa.array(out[name], _TYPES[name]) for name in DETECTION_COLUMNS})


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
