"""The Celantur batch task: read -> measure (:mod:`pipeline.stages.measure`) -> rows -> parts.

A batch is processed in two steps so that ``encoding = auto`` can decide per dataset:

* :func:`measure_batch` measures every mask once, every colour (encoding-agnostic; fused with
  the inflate where the PNG allows it, else decode + kernels),
  parses metadata and writes the rescaled masks; it returns a :class:`Measured` with the rows and
  the encoding evidence.
* :func:`finish_batch` types the colours under the decided encoding, matches detections and
  writes the batch's parts.

With an explicit encoding both run in one task. With ``auto`` they do too for a batch whose own
evidence decides its encoding (:meth:`EncodingEvidence.decisive`, the common case); only a batch
whose evidence is ambiguous parks its measured rows under ``_work/`` until a second pass finishes
them under the encoding decided from the whole dataset's evidence, so no mask is decoded twice
(unless the dataset's evidence conflicts: then batches typed under the losing encoding are
measured again).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from pipeline.formats.celantur import (
    TYPE_FLAG,
    TYPE_NAMES,
    Encoding,
    EncodingEvidence,
    classify_colours,
    flag_names,
    normalise_type_label,
    type_name,
)
from pipeline.formats.metadata import (
    Detection,
    MetadataError,
    ResolvedSize,
    parse_image_metadata,
    resolve_size_order,
)
from pipeline.io.jsonio import JsonError, parse_json
from pipeline.io.parquet import table_bytes, table_from_bytes
from pipeline.io.png import PngError, PngHeader
from pipeline.io.storage import BatchIO, InputFile, Prefetch
from pipeline.kernels.masks import typed_totals_of_masks
from pipeline.kernels.matching import MATCH_NAMES, match_detections
from pipeline.kernels.segments import ColourStats, ForegroundRuns
from pipeline.stages.common import (
    ErrorLog,
    TaskContext,
    batch_io,
    guarded,
    read_input,
    stage_rows,
    write_scaled,
)
from pipeline.stages.measure import measure_binary, measure_instance
from pipeline.stages.plan import Batch, ImageGroup
from pipeline.stages.summary import BatchSummary
from pipeline.tables import SCHEMAS, to_arrow

Result = TypeVar("Result")

_SEGMENT_COLUMNS = (
    "mask_index", "r", "g", "b", "pixels", "x_min", "y_min", "x_max", "y_max",
    "centroid_x", "centroid_y",
)  # fmt: skip
_BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
_FLAG_NAMES = [flag_names(f) for f in range(-1, 1 << len(TYPE_NAMES))]
#: The ``types`` and ``overlap`` values of each compact flag ``f`` (-1 for invalid colours) at
#: ``f + 1``: a batch's columns are taken from them (building them per segment, from Python
#: lists and a bit matrix, cost ~50 us a batch in a run, ``make bench``'s spread).
_TYPES_OF_FLAG = pa.array(_FLAG_NAMES, SCHEMAS["instances"].field("types").type)
_OVERLAP_OF_FLAG = np.array([len(names) > 1 for names in _FLAG_NAMES])
_MATCH_COLUMNS = (
    "detection_index", "detection_id", "score", "type_label", "type_name", "match", "bbox_iou",
)  # fmt: skip
_CANDIDATE_COLUMNS = (
    "mask_index", "detection_index", "detection_id", "type_label", "score",
    "color_r", "color_g", "color_b", "box_x1", "box_y1", "box_x2", "box_y2",
)  # fmt: skip


@dataclass
class Measured:
    """Everything one batch's decode produced, before the encoding is applied."""

    batch_key: str
    masks: list[dict[str, Any]] = field(default_factory=list)
    segments: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {c: [] for c in _SEGMENT_COLUMNS}
    )
    candidates: list[dict[str, Any]] = field(default_factory=list)
    detections: list[dict[str, Any]] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    errors: ErrorLog = field(default_factory=ErrorLog)
    #: the votes of the metadata detections; :meth:`evidence` adds the masks' colours
    detection_evidence: EncodingEvidence = field(default_factory=EncodingEvidence.empty)

    def evidence(self) -> EncodingEvidence:
        """The batch's encoding evidence: its detections' votes and its instance masks'
        colours. The colours are counted here, all of the batch's in one call (their votes
        add up colour by colour), and only when asked: only ``auto`` needs them (~50 us a
        mask, ``make bench``'s spread)."""
        evidence = self.detection_evidence.merge(EncodingEvidence.empty())
        segments = self.segment_columns()
        evidence.add_colours(np.stack([segments[c] for c in "rgb"], axis=1))
        return evidence

    def segment_columns(self) -> dict[str, np.ndarray]:
        """The measured colours of all instance masks, column by column."""
        return {
            name: np.concatenate(parts) if parts else np.array([], dtype=np.int64)
            for name, parts in self.segments.items()
        }

    def segment_table(self) -> pa.Table:
        """The measured colours of all instance masks as one table."""
        return pa.table(self.segment_columns())


# ---------------------------------------------------------------------------------------------
# Step 1: measure
# ---------------------------------------------------------------------------------------------


def measure_batch(batch: Batch, ctx: TaskContext, storage: BatchIO) -> Measured:
    """Decode and measure every mask of a batch, parse its metadata, write rescaled masks.

    The batch's files are read ahead through ``storage`` in the order they are measured (each
    group's instance mask, binary mask, metadata), so storage latency hides behind the work.
    """
    measured = Measured(batch.key)
    reads = storage.prefetch(ctx.source, [(f.key, f.size) for g in batch.groups for f in g.files])
    for group in batch.groups:
        _measure_group(group, ctx, reads, measured)
    return measured


def _measured_png(
    file: InputFile,
    ctx: TaskContext,
    reads: Prefetch,
    measured: Measured,
    measure: Callable[[bytes], Result],
) -> tuple[bytes, Result] | None:
    """The file's bytes and ``measure``'s result, or ``None`` after recording why not."""
    data = read_input(file, ctx, reads, measured.errors)
    if data is None:
        return None
    try:
        return data, measure(data)
    except PngError as exc:
        measured.errors.add(file.rel, "decode", exc.code, str(exc))
    return None


def _mask_row(
    group: ImageGroup, file: InputFile, kind: str, header: PngHeader, data: bytes
) -> dict[str, Any]:
    return {
        "path": file.rel,
        "stem": group.stem,
        "folder": group.folder,
        "metadata_path": group.metadata.rel if group.metadata else None,
        "kind": kind,
        "width": header.width,
        "height": header.height,
        "bytes": len(data),
        "png_mode": header.mode,
    }


def _write_scaled(file: InputFile, scaled: bytes | None, ctx: TaskContext) -> str | None:
    return None if scaled is None else write_scaled(ctx, file.rel, scaled)


@dataclass
class _Instance:
    """A measured instance mask, for its binary mask and metadata in the same group."""

    index: int  # position in Measured.masks
    row: dict[str, Any]
    foreground: ForegroundRuns


def _measure_group(
    group: ImageGroup, ctx: TaskContext, reads: Prefetch, measured: Measured
) -> None:
    instance: _Instance | None = None
    mask_size: tuple[int, int] | None = None
    if group.instance is not None:
        with guarded(group.instance.rel, measured.errors):
            instance = _measure_instance(group, group.instance, ctx, reads, measured)
            mask_size = (instance.row["width"], instance.row["height"]) if instance else None
    if group.binary is not None:
        with guarded(group.binary.rel, measured.errors):
            binary_size = _measure_binary(group, group.binary, ctx, reads, measured, instance)
            mask_size = mask_size or binary_size
    if group.metadata is not None:
        with guarded(group.metadata.rel, measured.errors):
            _measure_metadata(group.stem, group.metadata, ctx, reads, measured, mask_size, instance)


def _measure_instance(
    group: ImageGroup, file: InputFile, ctx: TaskContext, reads: Prefetch, measured: Measured
) -> _Instance | None:
    options = ctx.options
    loaded = _measured_png(
        file, ctx, reads, measured,
        lambda data: measure_instance(
            data, max_pixels=options.max_pixels, scale=options.mask_scale
        ),
    )  # fmt: skip
    if loaded is None:
        return None
    data, result = loaded
    stats = result.stats
    row = _mask_row(group, file, "instance", result.header, data)
    row["foreground_pixels"] = stats.foreground_pixels
    row["scaled_path"] = _write_scaled(file, result.scaled, ctx)
    instance = _Instance(len(measured.masks), row, result.foreground)
    _add_segments(measured, instance.index, stats)
    measured.masks.append(row)
    return instance


def _measure_binary(
    group: ImageGroup,
    file: InputFile,
    ctx: TaskContext,
    reads: Prefetch,
    measured: Measured,
    instance: _Instance | None,
) -> tuple[int, int] | None:
    options = ctx.options
    loaded = _measured_png(
        file, ctx, reads, measured,
        lambda data: measure_binary(
            data, max_pixels=options.max_pixels, scale=options.mask_scale,
            foreground=instance.foreground if instance else None,
        ),
    )  # fmt: skip
    if loaded is None:
        return None
    data, result = loaded
    row = _mask_row(group, file, "binary", result.header, data)
    row["foreground_pixels"] = result.anonymised
    row["scaled_path"] = _write_scaled(file, result.scaled, ctx)
    if instance is not None:
        if result.mismatch is not None:
            row["bin_mismatch_pixels"] = instance.row["bin_mismatch_pixels"] = result.mismatch
        else:
            measured.errors.add(
                file.rel, "validate", "size_mismatch",
                f"binary mask {row['width']}x{row['height']} differs from instance "
                f"mask {instance.row['width']}x{instance.row['height']}: mismatch not counted",
                "warning",
            )  # fmt: skip
    measured.masks.append(row)
    return row["width"], row["height"]


def _add_segments(measured: Measured, mask_index: int, stats: ColourStats) -> None:
    columns = measured.segments
    columns["mask_index"].append(np.full(len(stats), mask_index, dtype=np.int32))
    for channel, name in enumerate("rgb"):
        columns[name].append(stats.colours[:, channel])
    for name in ("pixels", "x_min", "y_min", "x_max", "y_max", "centroid_x", "centroid_y"):
        columns[name].append(getattr(stats, name))


def _measure_metadata(
    stem: str,
    file: InputFile,
    ctx: TaskContext,
    reads: Prefetch,
    measured: Measured,
    mask_size: tuple[int, int] | None,
    instance: _Instance | None,
) -> None:
    data = read_input(file, ctx, reads, measured.errors)
    if data is None:
        return
    try:
        metadata = parse_image_metadata(
            parse_json(data, max_bytes=ctx.options.max_json_bytes, bounded=True)
        )
    except JsonError as exc:
        measured.errors.add(file.rel, "decode", f"json_{exc.code}", str(exc))
        return
    except MetadataError as exc:
        measured.errors.add(file.rel, "validate", exc.code, str(exc))
        return
    boxes = [d.bbox for d in metadata.detections if d.bbox is not None]
    resolved = (
        resolve_size_order(metadata.size, boxes, mask_size) if metadata.size is not None else None
    )
    # Folder-qualified, as video names are: image names repeat across folders.
    media = posixpath.join(file.folder, metadata.filename or metadata.image_id or stem)
    frame = {
        "source": file.rel,
        "media": media,
        "detections": len(metadata.detections),
        "width": resolved.width if resolved else None,
        "height": resolved.height if resolved else None,
        "size_order": resolved.order if resolved else None,
        "size_order_source": resolved.source if resolved else None,
        "duration": metadata.duration,
    }
    rows = [_detection_row(file.rel, media, None, d, resolved) for d in metadata.detections]
    # Converted once here, inside the input's guard: a value no column can hold becomes this
    # file's error row instead of failing the batch's tables later.
    to_arrow("frames", [frame])
    to_arrow("detections", rows)
    for finding in metadata.findings:
        measured.errors.add(file.rel, "validate", finding.error, finding.message, finding.severity)
    measured.frames.append(frame)
    measured.detections.extend(rows)
    for detection in metadata.detections:
        measured.detection_evidence.add_detection(detection.colour, detection.type_label)
    if instance is not None:
        _add_candidates(measured, instance.index, metadata.detections, resolved, instance.row)


def _detection_row(
    source: str, media: str, frame: int | None, detection: Detection, size: ResolvedSize | None
) -> dict[str, Any]:
    bbox = detection.bbox or (None, None, None, None)
    offset = detection.offset or (None, None)
    return {
        "source": source,
        "media": media,
        "frame": frame,
        "detection_index": detection.index,
        "detection_id": detection.detection_id,
        "type": detection.type,
        "type_label": detection.type_label,
        "type_name": type_name(detection.type_label),
        "score": detection.score,
        "is_anonymised": detection.is_anonymised,
        "x1": bbox[0], "y1": bbox[1], "x2": bbox[2], "y2": bbox[3],
        "offset_x": offset[0], "offset_y": offset[1],
        "color": list(detection.colour) if detection.colour else None,
        "frame_width": size.width if size else None,
        "frame_height": size.height if size else None,
    }  # fmt: skip


def _add_candidates(
    measured: Measured,
    mask_index: int,
    detections: tuple[Detection, ...],
    size: ResolvedSize | None,
    instance_row: dict[str, Any],
) -> None:
    """Detections in the instance mask's pixel frame, for matching once types are known."""
    scale_x = instance_row["width"] / size.width if size else None
    scale_y = instance_row["height"] / size.height if size else None
    for d in detections:
        colour = d.colour or (None, None, None)
        box = (
            (d.bbox[0] * scale_x, d.bbox[1] * scale_y, d.bbox[2] * scale_x, d.bbox[3] * scale_y)
            if d.bbox is not None and scale_x is not None and scale_y is not None
            else (None, None, None, None)
        )
        measured.candidates.append(
            dict(zip(_CANDIDATE_COLUMNS, (
                mask_index, d.index, d.detection_id, d.type_label, d.score, *colour, *box,
            ), strict=True))
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Parking measured rows between the two passes of ``auto``
# ---------------------------------------------------------------------------------------------

_PARKED = ("masks", "segments", "candidates", "detections", "frames", "errors")


def park_measured(measured: Measured, ctx: TaskContext) -> None:
    """Write a batch's measured rows under ``_work/`` (Parquet, never pickle: the output root is
    shared storage and must not become a way to run code on the workers)."""
    tables = {
        "masks": to_arrow("masks", measured.masks),
        "segments": measured.segment_table(),
        "candidates": _candidate_table(measured.candidates),
        **{
            name: to_arrow(name, getattr(measured, name))
            for name in ("detections", "frames", "errors")
        },
    }
    for name, table in tables.items():
        ctx.output.write_bytes(
            f"{ctx.work_prefix}/{name}/{measured.batch_key}.parquet", table_bytes(table)
        )


def load_measured(batch_key: str, ctx: TaskContext, storage: BatchIO) -> Measured:
    """Read back what :func:`park_measured` wrote for a batch (all its files at once)."""
    parked = storage.prefetch(
        ctx.output, [(f"{ctx.work_prefix}/{name}/{batch_key}.parquet", 0) for name in _PARKED]
    )

    def read(name: str) -> pa.Table:
        data = parked.take(ctx.output, f"{ctx.work_prefix}/{name}/{batch_key}.parquet")
        return table_from_bytes(data)

    segments = read("segments")
    measured = Measured(
        batch_key,
        **{
            name: read(name).to_pylist() for name in ("masks", "candidates", "detections", "frames")
        },
    )
    measured.errors.extend(read("errors").to_pylist())
    measured.segments = {name: [segments[name].to_numpy()] for name in _SEGMENT_COLUMNS}
    return measured


def remove_parked(batch_key: str, ctx: TaskContext) -> None:
    """Delete a batch's parked rows once its parts are written."""
    ctx.output.remove(f"{ctx.work_prefix}/{name}/{batch_key}.parquet" for name in _PARKED)


def _candidate_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [("mask_index", pa.int32()), ("detection_index", pa.int32()), ("detection_id", pa.int64()),
         ("type_label", pa.string()), ("score", pa.float64()), ("color_r", pa.int16()),
         ("color_g", pa.int16()), ("color_b", pa.int16()), ("box_x1", pa.float64()),
         ("box_y1", pa.float64()), ("box_x2", pa.float64()), ("box_y2", pa.float64())]
    )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)


# ---------------------------------------------------------------------------------------------
# Step 2: finish
# ---------------------------------------------------------------------------------------------


def finish_batch(measured: Measured, encoding: Encoding, ctx: TaskContext) -> BatchSummary:
    """Type the measured colours under ``encoding``, match detections, write the batch's parts.

    Side effects: writes the ``masks``, ``instances``, ``detections``, ``frames`` and
    ``errors`` rows as one staged bundle ``_staged/part-<batch key>-<encoding>.arrow`` (a table
    with no rows gets no part in it; named by the encoding too, so a batch typed under two encodings
    by ``auto``, see :func:`measure_and_finish`, keeps both results and their ledger entries).
    Idempotent: the same batch and options always write the same bytes to the same names.
    """
    segments = measured.segment_columns()
    colours = np.stack([segments[c] for c in "rgb"], axis=1).astype(np.uint8).reshape(-1, 3)
    type_bits, flags = classify_colours(colours, encoding)
    mask_index = segments["mask_index"].astype(np.int64)
    pixels = segments["pixels"].astype(np.int64)
    boxes = np.stack([segments[c] for c in _BOX_COLUMNS], axis=1).reshape(-1, 4)
    matches, matched = _match_all(measured, mask_index, colours, flags, boxes)
    summary = BatchSummary(typed={measured.batch_key: encoding})

    rows_masks = [dict(row) for row in measured.masks]
    # No segments (a batch of binary masks): no rows, so no table to build (~0.1 ms).
    instances: pa.Table | list[dict[str, Any]] = (
        _instance_table(measured, segments, colours, type_bits, flags, mask_index, matches)
        if len(mask_index)
        else []
    )

    totals_of = typed_totals_of_masks(pixels, flags, mask_index, len(rows_masks))
    segments_of = np.bincount(mask_index, minlength=len(rows_masks))
    matched_of = np.bincount(mask_index[matched], minlength=len(rows_masks))
    for index, row in enumerate(rows_masks):
        if row["kind"] != "instance":
            summary.add_mask(row["kind"])
            continue
        totals = totals_of[index]
        row.update(
            vars(totals),  # its fields are named as the masks/ columns
            encoding=encoding,
            segments=int(segments_of[index]),
            matched_detections=int(matched_of[index]),
        )
        summary.add_mask("instance")
        if totals.invalid_pixels:
            selected = mask_index == index
            bad = colours[selected][flags[selected] < 0]
            sample = ", ".join(str(tuple(int(v) for v in c)) for c in bad[:5])
            measured.errors.add(
                row["path"], "validate", "invalid_pixels",
                f"{totals.invalid_pixels} pixels in {totals.invalid_segments} colours invalid "
                f"under encoding {encoding} (e.g. {sample}); counted, not typed", "warning",
            )  # fmt: skip
    summary.add_segments(flags, pixels)
    summary.add_detections(measured.detections)
    summary.add_frames(measured.frames)
    summary.add_errors(measured.errors)

    outputs: dict[str, pa.Table | list[dict[str, Any]]] = {
        "masks": rows_masks,
        "instances": instances,
        "detections": measured.detections,
        "frames": measured.frames,
        "errors": measured.errors,
    }
    # No table built for no rows: ~0.05 ms each, a batch's fixed cost.
    tables = {
        table: (rows if isinstance(rows, pa.Table) else to_arrow(table, rows))
        if len(rows)
        else None
        for table, rows in outputs.items()
    }
    stage_rows(summary, ctx.output, f"{measured.batch_key}-{encoding}", tables)
    return summary


def _instance_table(
    measured: Measured,
    segments: dict[str, np.ndarray],
    colours: np.ndarray,
    type_bits: np.ndarray,
    flags: np.ndarray,
    mask_index: np.ndarray,
    matches: dict[str, Any],
) -> pa.Table:
    """The ``instances`` rows of a batch's typed segments."""
    # Columns in their schema's types already: pyarrow casting a column costs ~5 us, a
    # batch's fixed cost (make bench's spread); the values fit (colours, pixel coordinates).
    r, g, b = colours.T.astype(np.int16)
    instance_columns: dict[str, Any] = {"r": r, "g": g, "b": b, "instance": g}
    for name in ("pixels", "centroid_x", "centroid_y"):
        instance_columns[name] = segments[name]
    for name in _BOX_COLUMNS:
        instance_columns[name] = segments[name].astype(np.int32)
    of_flag = flags.astype(np.int64) + 1
    instance_columns.update(
        type_bits=type_bits,
        types=_TYPES_OF_FLAG.take(of_flag),
        valid=flags >= 0,
        overlap=_OVERLAP_OF_FLAG[of_flag],
        **matches,
    )
    masks = measured.masks
    paths = np.array([row["path"] for row in masks], dtype=object)
    stems = np.array([row["stem"] for row in masks], dtype=object)
    folders = np.array([row["folder"] for row in masks], dtype=object)
    metadata = np.array([row["metadata_path"] for row in masks], dtype=object)
    instance_columns.update(
        path=paths[mask_index],
        stem=stems[mask_index],
        folder=folders[mask_index],
        metadata_path=metadata[mask_index],
    )
    return pa.Table.from_pydict(
        {name: instance_columns.get(name) for name in SCHEMAS["instances"].names},
        schema=SCHEMAS["instances"],
    )


def _match_all(
    measured: Measured,
    mask_index: np.ndarray,
    colours: np.ndarray,
    flags: np.ndarray,
    boxes: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray]:
    """Match each instance mask's detections to its segments: the ``instances`` columns of the
    matches, aligned with segments, and whether each segment matched a detection."""
    n = len(mask_index)
    matched = np.zeros(n, dtype=bool)
    if not measured.candidates:
        # Nothing to match (masks without metadata): null columns made as such; converting
        # object arrays of None costs ~0.04 ms a batch (make bench's spread).
        schema = SCHEMAS["instances"]
        return {name: pa.nulls(n, schema.field(name).type) for name in _MATCH_COLUMNS}, matched
    columns: dict[str, Any] = {name: np.full(n, None, dtype=object) for name in _MATCH_COLUMNS}
    detection_index = columns["detection_index"]
    by_mask: dict[int, list[dict[str, Any]]] = {}
    for candidate in measured.candidates:
        by_mask.setdefault(int(candidate["mask_index"]), []).append(candidate)
    for index, candidates in by_mask.items():
        selected = np.flatnonzero(mask_index == index)
        if selected.size == 0:
            continue
        det_colours = [
            (int(c["color_r"]), int(c["color_g"]), int(c["color_b"]))
            if c["color_r"] is not None else None
            for c in candidates
        ]  # fmt: skip
        det_flags = np.array(
            [TYPE_FLAG.get(normalise_type_label(c["type_label"]) or "", 0) for c in candidates],
            dtype=np.int64,
        )
        box_keys = ("box_x1", "box_y1", "box_x2", "box_y2")
        det_boxes = np.array(
            [[np.nan if c[k] is None else c[k] for k in box_keys] for c in candidates],
            dtype=np.float64,
        ).reshape(-1, 4)
        result = match_detections(
            colours[selected], flags[selected].astype(np.int64), boxes[selected],
            det_colours, det_flags, det_boxes,
        )  # fmt: skip
        for local, segment in enumerate(selected):
            d = int(result.detection[local])
            if d < 0:
                continue
            matched[segment] = True
            candidate = candidates[d]
            detection_index[segment] = candidate["detection_index"]
            columns["detection_id"][segment] = candidate["detection_id"]
            columns["score"][segment] = candidate["score"]
            columns["type_label"][segment] = candidate["type_label"]
            columns["type_name"][segment] = type_name(candidate["type_label"])
            columns["match"][segment] = MATCH_NAMES[int(result.kind[local])]
            iou = float(result.iou[local])
            columns["bbox_iou"][segment] = None if np.isnan(iou) else iou
    return columns, matched


# ---------------------------------------------------------------------------------------------
# Task entry points (what the graph maps over batches)
# ---------------------------------------------------------------------------------------------


def process_batch(batch: Batch, ctx: TaskContext, encoding: Encoding) -> BatchSummary:
    """Measure and finish a batch in one task (the encoding is known up front)."""
    with batch_io(ctx) as (ctx, storage):
        return finish_batch(measure_batch(batch, ctx, storage), encoding, ctx)


def measure_and_finish(batch: Batch, ctx: TaskContext) -> BatchSummary:
    """First pass of ``auto``: measure; finish at once under the encoding the batch's own
    evidence decides, or park the rows for :func:`finish_parked` when it decides none.

    The summary carries the batch's evidence either way, and when finished the encoding that
    typed it (``typed``): the client keeps it only if the dataset's evidence decides the same.
    """
    with batch_io(ctx) as (ctx, storage):
        measured = measure_batch(batch, ctx, storage)
        evidence = measured.evidence()
        own = evidence.decisive()
        if own is None:
            park_measured(measured, ctx)
            summary = BatchSummary(parked={batch.key})
        else:
            summary = finish_batch(measured, own, ctx)
    summary.evidence = evidence
    return summary


def finish_parked(batch: Batch, ctx: TaskContext, encoding: Encoding) -> BatchSummary:
    """Second pass of ``auto``: finish the parked rows under the decided encoding.

    The client asks this only of batches whose rows this run parked (a batch whose pass 1 came
    from the ledger is measured again as ``images`` instead: nothing was parked for it). Rows
    that are gone all the same (the task is a retry of one that removed them) are measured
    again here.
    """
    with batch_io(ctx) as (ctx, storage):
        try:
            measured = load_measured(batch.key, ctx, storage)
        except FileNotFoundError:
            return finish_batch(measure_batch(batch, ctx, storage), encoding, ctx)
        summary = finish_batch(measured, encoding, ctx)
        # Removed while the parts are still being written: a task that then fails measures
        # the batch again, as it would if nothing had been parked.
        remove_parked(batch.key, ctx)
    return summary
