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

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, pairwise
from operator import attrgetter
from typing import Annotated, Any, cast

import msgspec
import numpy as np
import pyarrow as pa

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
from pipeline.io.jsonio import JsonError, check_json_bounds, parse_json
from pipeline.kernels.chunkscan import NULL_BOOL, ScannedChunks, scan_chunks
from pipeline.tables import SCHEMAS

_log = logging.getLogger(__name__)

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
    arrays of the ``detections/`` table's types (``detection_count`` rows; possibly empty for a
    chunk of :class:`ParsedChunks`, whose columns hold them).
    """

    frame_ids: list[int] = field(default_factory=list)
    frame_detections: list[int] = field(default_factory=list)
    frame_sizes: list[ResolvedSize | None] = field(default_factory=list)
    frame_durations: list[float | None] = field(default_factory=list)
    detections: dict[str, pa.Array] = field(default_factory=dict)
    detection_count: int = 0
    frames_in_file: int = 0
    duplicate_frames: int = 0
    findings: list[Finding] = field(default_factory=list)


#: What parsing a chunk gives: its columns, or why it was refused (:class:`JsonError`,
#: :class:`MetadataError`; any other exception is a fault of the parser on that chunk).
ChunkOutcome = ParsedChunk | Exception


@dataclass
class ParsedChunks:
    """Chunks parsed together (:func:`parse_chunks`): each one's outcome, in order, and the
    detections of those parsed (:class:`ParsedChunk`) as one set of columns, in the same order
    (``detection_bounds``: where each outcome's rows start and end; none for an error)."""

    outcomes: list[ChunkOutcome]
    detections: dict[str, pa.Array]
    detection_bounds: list[int]

    def detections_of(self, chosen: Sequence[int]) -> dict[str, pa.Array]:
        """The detection columns of the outcomes ``chosen`` (in order), all the columns when
        every outcome is chosen."""
        if len(chosen) == len(self.outcomes):
            return self.detections
        bounds = self.detection_bounds
        rows = np.concatenate(
            [np.arange(bounds[k], bounds[k + 1]) for k in chosen] or [np.zeros(0, np.int64)]
        )
        return {name: values.take(rows) for name, values in self.detections.items()}


def parse_chunks(datas: Sequence[bytes], *, max_bytes: int) -> ParsedChunks:
    """Decode video metadata chunks: those in the shape the product writes scanned together (one
    kernel call, their columns built once), the others one by one as :func:`parse_chunk` says.
    Each chunk's outcome is what :func:`parse_chunk` gives or raises for it alone. A fault
    (an unexpected exception) fails one chunk alone: in the scanner, every chunk is decoded by
    msgspec's path instead, which gives the same; in that path, it is the chunk's outcome."""
    outcomes: list[ChunkOutcome | None] = [None] * len(datas)
    bounded = []
    for k, data in enumerate(datas):
        try:
            check_json_bounds(data, max_bytes=max_bytes)
            bounded.append(k)
        except JsonError as exc:
            outcomes[k] = exc
    try:
        scanned, columns = _parse_scanned([datas[k] for k in bounded])
    except Exception:  # see the docstring; tests fence the scanner's own path
        _log.exception("the chunk scanner failed: its %d chunks take msgspec's path", len(bounded))
        scanned, columns = [None] * len(bounded), {}
    unscanned = set()
    for k, scanned_outcome in zip(bounded, scanned, strict=True):
        if scanned_outcome is None:
            unscanned.add(k)
        outcomes[k] = (
            _parse_unscanned(datas[k], max_bytes=max_bytes)
            if scanned_outcome is None
            else scanned_outcome
        )
    done = cast(list[ChunkOutcome], outcomes)
    counts = [o.detection_count if isinstance(o, ParsedChunk) else 0 for o in done]
    bounds = np.cumsum([0, *counts]).tolist()
    if any(isinstance(done[k], ParsedChunk) for k in unscanned):
        # Rare: the scanned columns with those of chunks decoded alone spliced in, in order.
        pieces, at = [], 0
        for k, parsed in enumerate(done):
            if not isinstance(parsed, ParsedChunk):
                continue
            if k in unscanned:
                pieces.append(parsed.detections)
            else:
                count = parsed.detection_count
                pieces.append({name: values.slice(at, count) for name, values in columns.items()})
                at += count
        columns = {
            name: pa.concat_arrays([piece[name] for piece in pieces]) for name in DETECTION_COLUMNS
        }
    return ParsedChunks(done, columns, bounds)


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
    parsed = parse_chunks([data], max_bytes=max_bytes)
    outcome = parsed.outcomes[0]
    if not isinstance(outcome, ParsedChunk):
        raise outcome
    outcome.detections = parsed.detections
    return outcome


def _parse_unscanned(data: bytes, *, max_bytes: int) -> ChunkOutcome:
    """A chunk the scanner refused, by msgspec's typed decode, else the validating path."""
    try:
        try:
            frames, fixed = _decode_typed(data)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            # Not the common case: the validating path says exactly what is wrong.
            return _parse_validating(parse_json(data, max_bytes=max_bytes))
        check_detection_count(sum(len(frame.detections) for frame in frames))
        return _parse_typed(frames, fixed=fixed)
    except Exception as exc:  # the chunk's outcome (see parse_chunks)
        return exc


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

    def finish(
        self, detections: dict[str, pa.Array], count: int, extent: tuple[float, float] | None
    ) -> ParsedChunk:
        """Take the detection columns (``count`` detections); resolve frame sizes (per distinct
        ``size`` value, from the largest x2 and y2 of the chunk's usable boxes, ``extent``:
        :func:`_extents`)."""
        self.chunk.detections = detections
        self.chunk.detection_count = count
        resolved: dict[tuple[int, int] | None, ResolvedSize] = {
            size: _resolved_by_extent(size, extent)
            for size in dict.fromkeys(self._pending_sizes)
            if size is not None
        }
        # A look-up per frame in C; a frame without a size (None) is no key: None.
        self.chunk.frame_sizes = list(map(resolved.get, self._pending_sizes))
        return self.chunk


def _resolved_by_extent(size: tuple[int, int], extent: tuple[float, float] | None) -> ResolvedSize:
    """``size`` resolved as a chunk's usable boxes say, given their largest x2 and y2
    (``extent``: :func:`_extents`; ``None``: no usable box): :func:`resolve_size_order` reads
    only those two, so one box holding both stands for them all."""
    return resolve_size_order(size, [] if extent is None else [(0.0, 0.0, *extent)])


def _extents(x2: pa.Array, y2: pa.Array, bounds: list[int]) -> list[tuple[float, float] | None]:
    """Per chunk (its detections between ``bounds[k]`` and ``[k + 1]``) the largest x2 and y2
    of its usable boxes (a box is usable whole or not at all; null coordinates); ``None`` when
    it has none."""
    x, y = (values.to_numpy(zero_copy_only=False) for values in (x2, y2))  # null: NaN
    y = np.where(np.isnan(x), np.nan, y)
    starts = np.asarray(bounds[:-1], dtype=np.int64)
    filled = np.flatnonzero(starts < np.asarray(bounds[1:], dtype=np.int64))
    extents: list[tuple[float, float] | None] = [None] * len(starts)
    if len(filled):  # each filled chunk's rows run up to the next filled one's
        largest = zip(np.fmax.reduceat(x, starts[filled]).tolist(),
                      np.fmax.reduceat(y, starts[filled]).tolist(), strict=True)  # fmt: skip
        for k, (most_x, most_y) in zip(filled.tolist(), largest, strict=True):
            if not math.isnan(most_x):
                extents[k] = (most_x, most_y)
    return extents


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
    columns.chunk.frame_detections = counts
    out = _frame_columns(
        np.asarray(columns.chunk.frame_ids, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    )
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


def _parse_scanned(
    datas: Sequence[bytes],
) -> tuple[list[ParsedChunk | MetadataError | None], dict[str, pa.Array]]:
    """Chunks in the shape the product writes, scanned together without a Python object per
    detection (:func:`~pipeline.kernels.chunkscan.scan_chunks`): each one's outcome (``None``
    when the scanner refuses it), and the detection columns of those parsed, in order. A
    chunk's outcome is what :func:`_parse_typed` gives for it alone (tests hold it to it); its
    ``detections`` are left to the columns.
    """
    scan = scan_chunks(datas)
    numbers = scan.numbers  # NaN in the 4 slots after the last: for a null (below)
    chunk_of = np.searchsorted(scan.slot_bounds, scan.pending[:, 0], side="right") - 1
    for (slot, start, end), k in zip(scan.pending.tolist(), chunk_of.tolist(), strict=True):
        numbers[slot] = float(datas[k][start:end])  # correctly rounded, as msgspec reads them
    refused: dict[int, MetadataError | None] = {}
    for k, (first, end) in enumerate(pairwise(scan.detection_bounds.tolist())):
        try:
            check_detection_count(end - first)
        except MetadataError as exc:
            refused[k] = exc
    missing = len(numbers) - 4
    beyond = np.flatnonzero(~np.isfinite(numbers[:missing]))  # beyond a double: msgspec's own
    for k in np.unique(np.searchsorted(scan.slot_bounds, beyond, side="right") - 1).tolist():
        refused.setdefault(k, None)
    if refused:  # scanned again without them, so the others' rows hold no trace of them
        again, detections = _parse_scanned(
            [b"" if k in refused else data for k, data in enumerate(datas)]
        )
        for k, error in refused.items():
            again[k] = error
        return again, detections
    # A null reads NaN: slot -1 (a score, a duration), or the 4 slots after the last number (a
    # box or an offset).
    # Whole columns to lists, then the few nulls patched: no Python code per frame.
    first, second = scan.frame_sizes.T.tolist()
    given_sizes: list[tuple[int, int] | None] = list(zip(first, second, strict=True))
    for frame in np.flatnonzero(scan.frame_size_null).tolist():
        given_sizes[frame] = None
    given_durations = numbers[scan.frame_durations]  # a null: NaN (every number is finite)
    durations: list[float | None] = given_durations.tolist()
    for frame in np.flatnonzero(np.isnan(given_durations)).tolist():
        durations[frame] = None
    frame_ids = scan.frame_ids.tolist()
    frame_bounds = scan.frame_bounds.tolist()
    accepted = np.flatnonzero(scan.ok).tolist()
    # A chunk whose frame ids repeat takes _add_frames (a finding per repeat, the first copy
    # kept); the others are taken whole, frame columns by the slice (most chunks: ids rising).
    falls = np.flatnonzero(scan.frame_ids[1:] <= scan.frame_ids[:-1]) + 1
    unordered = np.searchsorted(scan.frame_bounds, falls, side="right") - 1
    repeating = {
        k for k in set(unordered[falls != scan.frame_bounds[unordered]].tolist())
        if len(set(frame_ids[frame_bounds[k] : frame_bounds[k + 1]])) < frame_bounds[k + 1] -
        frame_bounds[k]
    }  # fmt: skip
    chunks: dict[int, _Columns] = {}
    bad_sizes: dict[int, int] = {}
    keep = None  # frames kept (None: all, no id repeats in any chunk)
    for k in repeating:
        rows = slice(frame_bounds[k], frame_bounds[k + 1])
        chunks[k] = _Columns()
        kept, bad_sizes[k] = _add_frames(
            chunks[k], frame_ids[rows], given_sizes[rows], durations[rows]
        )
        if kept is not None:
            keep = np.ones(len(frame_ids), np.bool_) if keep is None else keep
            keep[rows] = kept
    null_labels = scan.label_null.any()
    labels = pa.StringArray.from_buffers(
        len(scan.label_null), pa.py_buffer(scan.label_offsets), pa.py_buffer(scan.labels),
        pa.py_buffer(np.packbits(~scan.label_null, bitorder="little")) if null_labels else None,
    )  # fmt: skip
    ids, counts = scan.frame_ids, scan.frame_detections
    integers, integer_null, anonymised, slots = (
        scan.integers, scan.integer_null, scan.anonymised, scan.slots
    )  # fmt: skip
    frame_bounds_kept, bounds = scan.frame_bounds, scan.detection_bounds
    if keep is not None:  # the detections of frames kept
        frame_bounds_kept = np.concatenate(([0], np.cumsum(keep)))[scan.frame_bounds]
        chosen = np.repeat(keep, counts)
        bounds = np.concatenate(([0], np.cumsum(chosen)))[scan.detection_bounds]
        ids, counts = ids[keep], counts[keep]
        integers, integer_null = integers[chosen], integer_null[chosen]
        anonymised, slots = anonymised[chosen], slots[chosen]
        labels = labels.filter(pa.array(chosen))
    out = _frame_columns(ids, counts)
    for column, name in enumerate(("detection_id", "type")):
        null = integer_null[:, column]
        out[name] = _column(integers[:, column], pa.int64(), null if null.any() else None)
    out["type_label"] = labels
    scores = slots[:, 2]
    out["score"], usable_scores = _score_column(numbers[scores])
    refused_scores = np.concatenate(([0], np.cumsum((scores >= 0) & ~usable_scores)))[bounds]
    either = np.where(anonymised[:, 0] == NULL_BOOL, anonymised[:, 1], anonymised[:, 0])
    null = either == NULL_BOOL
    out["is_anonymised"] = _column(either == 1, pa.bool_(), null if null.any() else None)
    for starts, names in ((slots[:, 0], ("x1", "y1", "x2", "y2")), (slots[:, 1],
                          ("offset_x", "offset_y"))):  # fmt: skip
        given = starts >= 0
        first_slots = np.where(given, starts, missing)
        table = numbers.take(first_slots[np.newaxis, :] + np.arange(len(names))[:, np.newaxis])
        coordinates, _ = _coordinate_columns(table, len(starts) - int(given.sum()))
        out.update(zip(names, coordinates, strict=True))
    out["color"] = pa.nulls(len(slots), _TYPES["color"])
    detections_per_chunk = np.diff(bounds).tolist()
    bad_scores = np.diff(refused_scores).tolist()
    extents = _extents(out["x2"], out["y2"], bounds.tolist())
    kept_counts = counts.tolist()
    frame_bounds_kept = frame_bounds_kept.tolist()
    sizes, refused_sizes = _resolved_sizes(scan, given_sizes, extents)
    outcomes: list[ParsedChunk | MetadataError | None] = [None] * len(datas)
    for k in accepted:
        frames = slice(frame_bounds_kept[k], frame_bounds_kept[k + 1])
        if k in chunks:
            columns = chunks[k]
            columns.chunk.frame_detections = kept_counts[frames]
            _add_findings(columns.chunk.findings, 0, 0, bad_scores[k], bad_sizes[k])
            outcomes[k] = columns.finish({}, detections_per_chunk[k], extents[k])
            continue
        rows = slice(frame_bounds[k], frame_bounds[k + 1])
        chunk = ParsedChunk(
            frame_ids=frame_ids[rows], frame_detections=kept_counts[frames],
            frame_sizes=sizes[rows], frame_durations=durations[rows],
            detection_count=detections_per_chunk[k], frames_in_file=rows.stop - rows.start,
        )  # fmt: skip
        _add_findings(chunk.findings, 0, 0, bad_scores[k], refused_sizes[k])
        outcomes[k] = chunk
    return outcomes, out


def _resolved_sizes(
    scan: ScannedChunks,
    given_sizes: list[tuple[int, int] | None],
    extents: list[tuple[float, float] | None],
) -> tuple[list[ResolvedSize | None], list[int]]:
    """Each scanned frame's size resolved as its chunk's boxes say (``extents``: see
    :class:`_Columns`'s ``finish``), ``None`` where none is given or it is unusable (a side not
    in 1..:data:`SIDE_LIMIT` - 1, as :func:`_valid_size` says); and how many given sizes each
    chunk has unusable. Resolved once per run of frames of one chunk and size (most chunks:
    one run)."""
    width, height = scan.frame_sizes.T
    usable = ~scan.frame_size_null & (width > 0) & (width < SIDE_LIMIT) & (height > 0)
    usable &= height < SIDE_LIMIT
    refused = np.concatenate(([0], np.cumsum(~scan.frame_size_null & ~usable)))
    chunk_of = np.repeat(np.arange(len(scan.ok)), np.diff(scan.frame_bounds))
    change = np.ones(len(usable), np.bool_)
    change[1:] = (
        (width[1:] != width[:-1]) | (height[1:] != height[:-1]) | (usable[1:] != usable[:-1])
        | (chunk_of[1:] != chunk_of[:-1])
    )  # fmt: skip
    runs = np.flatnonzero(change)
    resolved: dict[tuple[int, tuple[int, int]], ResolvedSize] = {}
    objects: list[ResolvedSize | None] = []
    for frame, k, is_usable in zip(runs.tolist(), chunk_of[runs].tolist(),
                                   usable[runs].tolist(), strict=True):  # fmt: skip
        size = cast(tuple[int, int], given_sizes[frame])
        if not is_usable:
            objects.append(None)
        elif (k, size) not in resolved:
            objects.append(resolved.setdefault((k, size), _resolved_by_extent(size, extents[k])))
        else:
            objects.append(resolved[(k, size)])
    run_of = np.repeat(np.arange(len(runs)), np.diff(np.append(runs, len(usable))))
    return list(map(objects.__getitem__, run_of.tolist())), np.diff(
        refused[scan.frame_bounds]
    ).tolist()


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


def _frame_columns(frame_ids: np.ndarray, counts: np.ndarray) -> dict[str, pa.Array]:
    """The ``frame`` and ``detection_index`` columns of frames' detections (``counts`` per
    frame)."""
    total = int(counts.sum())
    firsts = np.repeat(np.cumsum(counts) - counts, counts)
    return {
        "frame": pa.array(np.repeat(frame_ids, counts), pa.int64()),
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
    _add_findings(columns.chunk.findings, bad_boxes, bad_colours, bad_scores, bad_sizes)
    count = len(out["frame"])
    return columns.finish(out, count, _extents(out["x2"], out["y2"], [0, count])[0])


def _add_findings(
    findings: list[Finding], bad_boxes: int, bad_colours: int, bad_scores: int, bad_sizes: int
) -> None:
    """A finding per kind of unusable value."""
    bad = {"bad_bbox": bad_boxes, "bad_color": bad_colours, "bad_score": bad_scores,
           "bad_size": bad_sizes}  # fmt: skip
    for code, count in bad.items():
        if count:
            findings.append(Finding("warning", code, f"{count} values unusable"))


def _scores(given: list[float | None]) -> tuple[pa.Array, int]:
    """The score column of the given scores (see :func:`_score_column`), and how many given
    scores were refused."""
    if None in given:
        values = pa.array(given, pa.float64()).to_numpy(zero_copy_only=False)  # None: NaN
    else:
        values = np.fromiter(given, np.float64, len(given))
    column, usable = _score_column(values)
    return column, len(given) - given.count(None) - int(usable.sum())


def _score_column(values: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The score column, scores outside 0..1 (infinities included) made null, ``values`` NaN
    where none was given; which scores are usable."""
    usable = (values >= 0.0) & (values <= 1.0)  # NaN is not
    mask = None if usable.all() else ~usable
    return _column(values, pa.float64(), mask), usable


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
    return _finish(
        columns, {name: pa.array(out[name], _TYPES[name]) for name in DETECTION_COLUMNS}, 0, 0, 0, 0
    )


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
