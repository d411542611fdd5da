"""The ClearML batch task: the masks of a batch of frames -> ``masks/``, ``labels/``, ``alpha/``.

A batch holds whole frames (all masks of a frame), so per-label frame counts summed over
batches are exact. Each mask is read from its own URI; a missing or unreadable mask is one
error row naming its frame, source and mask id, never a failed run.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import ClearmlOptions
from pipeline.formats.clearml import (
    MaskLabels,
    MaskRef,
    parse_uri_map,
    protocol_of,
    redact_uri,
    safe_relative_path,
)
from pipeline.io.png import PngError, checked_header
from pipeline.io.storage import InputFile, Location, Prefetch
from pipeline.kernels.masks import AlphaStats, alpha_stats, label_values
from pipeline.kernels.segments import ColourStats, colour_stats
from pipeline.stages.common import (
    ErrorLog,
    TaskContext,
    batch_io,
    guarded,
    stage_rows,
    write_scaled,
)
from pipeline.stages.plan import Batch
from pipeline.stages.streamed import streamed_alpha, streamed_labels
from pipeline.stages.summary import BatchSummary, MaskLabelStats
from pipeline.tables import to_arrow

#: Planning cannot know mask sizes without a request per mask, so batches count masks at this
#: nominal size (a typical compressed 1080p label PNG) against ``batch_bytes``.
NOMINAL_MASK_BYTES = 64 * 1024


@dataclass(frozen=True)
class FrameMasks:
    """The masks of one frame (the unit of batching), with their resolved URIs."""

    document: InputFile  # the frames document the frame came from
    position: int
    masks: tuple[MaskRef, ...]
    resolved: tuple[str, ...]  # where each mask is read from

    @property
    def identity(self) -> str:
        """Document and position of the frame."""
        return f"{self.document.rel}#{self.position}"

    @property
    def bytes(self) -> int:
        """Nominal input bytes (see :data:`NOMINAL_MASK_BYTES`)."""
        return NOMINAL_MASK_BYTES * max(1, len(self.masks))

    @property
    def files(self) -> tuple[InputFile, ...]:
        """The frames document (its version makes part of the batch key)."""
        return (self.document,)


@dataclass
class _Rows:
    masks: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    alpha: list[dict[str, Any]]
    errors: ErrorLog


def process_frames_batch(batch: Batch[FrameMasks], ctx: TaskContext) -> BatchSummary:
    """Measure every mask of a batch of frames and write the batch's parts.

    Side effects: the ``masks/``, ``labels/`` (pixel mode) or ``alpha/`` (alpha mode) and
    ``errors/`` rows as one staged bundle ``_staged/part-<batch key>.arrow``; rescaled PNG
    masks under ``scaled/`` (:func:`~pipeline.stages.common.scaled_rel`). Idempotent.
    """
    with batch_io(ctx) as (ctx, storage):
        reads = storage.prefetch_from(
            [(_mask_location(uri, ctx), "", NOMINAL_MASK_BYTES)
             for frame in batch.groups for uri in frame.resolved]
        )  # fmt: skip
        return _process_frames(batch, ctx, reads)


def _process_frames(batch: Batch[FrameMasks], ctx: TaskContext, reads: Prefetch) -> BatchSummary:
    rows = _Rows([], [], [], ErrorLog())
    summary = BatchSummary()
    for frame in batch.groups:
        in_frame: dict[str, MaskLabelStats] = {}
        for ref, uri in zip(frame.masks, frame.resolved, strict=True):
            label_pixels: dict[str, int] = {}
            with guarded(ref.shown_uri, rows.errors):
                label_pixels = _measure_mask(ref, uri, ctx, reads, rows)
            for label, pixels in label_pixels.items():
                stats = in_frame.setdefault(label, MaskLabelStats(frames=1))
                stats.masks += 1
                stats.pixels += pixels
        for label, stats in in_frame.items():
            summary.mask_labels[label] = summary.mask_labels.get(label, MaskLabelStats()).merge(
                stats
            )
    for row in rows.masks:
        summary.masks[row["kind"]] += 1
        summary.landed["mask"] += 1
    summary.add_errors(rows.errors, kind="mask")
    listed = {table: getattr(rows, table) for table in ("masks", "labels", "alpha", "errors")}
    tables = {table: to_arrow(table, found) if found else None for table, found in listed.items()}
    stage_rows(summary, ctx.output, batch.key, tables)
    return summary


def _measure_mask(
    ref: MaskRef, uri: str, ctx: TaskContext, reads: Prefetch, rows: _Rows
) -> dict[str, int]:
    """Measure one mask into ``rows`` (or one error row); returns its pixels per label."""
    where, shown, path = ref.describe(), redact_uri(uri), redact_uri(uri).split("?")[0]
    try:
        data = reads.take(_mask_location(uri, ctx), "")
    except FileNotFoundError:
        rows.errors.add(ref.shown_uri, "read", "missing", f"{where}: mask not found at {shown}")
        return {}
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).replace(uri, shown)
        message = f"{where}: cannot read {shown}: {reason}"
        rows.errors.add(ref.shown_uri, "read", "unreachable", message)
        return {}
    mapping = _mapping_for(ref, ctx.mask_labels)
    ident = {"frame_id": ref.frame_id, "source_id": ref.source_id, "mask_id": ref.mask_id,
             "uri": ref.shown_uri}  # fmt: skip
    pixel_mode = ctx.mask_mode == "pixel"
    try:
        if ref.is_video:
            measured = _measure_video(ref, data, ctx, mapping, ident)
        else:
            measured = _measure_png(data, ctx, mapping, {**ident, "frame_index": None})
    except (PngError, ValueError) as exc:
        code = exc.code if isinstance(exc, PngError) else "video"
        rows.errors.add(ref.shown_uri, "decode", code, f"{where}: {exc}")
        return {}
    found = measured.rows
    unmapped = [r for r in found if pixel_mode and not r["labels"]]
    rows.masks.append(
        {
            "path": shown,
            "stem": posixpath.splitext(posixpath.basename(path))[0],
            "folder": posixpath.dirname(path),
            "kind": ctx.mask_mode,
            "width": measured.width,
            "height": measured.height,
            "bytes": len(data),
            "png_mode": measured.png_mode,
            "segments": len(found) if pixel_mode else None,
            "unmapped_values": len(unmapped) if pixel_mode else None,
            "unmapped_pixels": sum(r["pixels"] for r in unmapped) if pixel_mode else None,
            "frame_id": ref.frame_id,
            "source_id": ref.source_id,
            "mask_id": ref.mask_id,
            "video_frames": measured.frames if ref.is_video else None,
            "scaled_path": _write_scaled(uri, measured.scaled, ctx),
        }
    )
    (rows.alpha if ctx.mask_mode == "alpha" else rows.labels).extend(found)
    label_pixels: dict[str, int] = {}
    for row in found if pixel_mode else []:
        for label in row["labels"]:
            label_pixels[label] = label_pixels.get(label, 0) + row["pixels"]
    return label_pixels


def _mask_location(uri: str, ctx: TaskContext) -> Location:
    """Where a mask is read from: its URI, with the run's storage options where they apply."""
    return Location(uri, _storage_options_for(uri, ctx))


def _storage_options_for(uri: str, ctx: TaskContext) -> Mapping[str, Any]:
    """The run's storage options are for the protocols it was given for — the frames', the
    output's and the ``--uri-map`` targets' — not for, say, public https masks (an HTTP
    filesystem refuses s3fs's options)."""
    options = ctx.options
    targets = parse_uri_map(list(options.uri_map)) if isinstance(options, ClearmlOptions) else ()
    meant_for = {protocol_of(ctx.source.url), protocol_of(ctx.output.url)}
    meant_for |= {protocol_of(target) for _, target in targets}
    return ctx.source.storage_options if protocol_of(uri) in meant_for else {}


@dataclass
class _Measured:
    """A decoded mask's rows (one per value, or its alpha row; per video frame) and facts."""

    rows: list[dict[str, Any]]
    width: int | None = None
    height: int | None = None
    png_mode: str | None = None
    frames: int = 0
    scaled: bytes | None = None  # the rescaled PNG (never for a video)


def _measure_png(
    data: bytes, ctx: TaskContext, mapping: MaskLabels, ident: dict[str, Any]
) -> _Measured:
    """A PNG mask measured a strip at a time (:mod:`pipeline.stages.streamed`): the decoded
    image never exists, so memory stays bounded up to the pixel limit."""
    header = checked_header(data, max_pixels=ctx.options.max_pixels)
    scale = ctx.options.mask_scale
    if ctx.mask_mode == "alpha":
        alpha, scaled = streamed_alpha(data, header, scale)
        found = [{**ident, **_alpha_row(alpha)}]
    else:
        stats, grey, scaled = streamed_labels(data, header, scale)
        found = _label_rows(stats, grey, mapping, ident)
    return _Measured(found, header.width, header.height, header.mode, 1, scaled)


def _measure_video(
    ref: MaskRef, data: bytes, ctx: TaskContext, mapping: MaskLabels, ident: dict[str, Any]
) -> _Measured:
    """A video mask measured frame by frame."""
    measured = _Measured([])
    for index, pixels in _video_frames(ref, data, ctx.options.max_pixels):
        if not measured.frames:
            measured.height, measured.width = int(pixels.shape[0]), int(pixels.shape[1])
        measured.frames += 1
        frame = {**ident, "frame_index": index}
        if ctx.mask_mode == "alpha":
            measured.rows.append({**frame, **_alpha_row(alpha_stats(pixels))})
        else:
            rgb, grey = label_values(pixels)
            stats = colour_stats(rgb, skip_black=False)
            measured.rows.extend(_label_rows(stats, grey, mapping, frame))
    return measured


def _video_frames(ref: MaskRef, data: bytes, max_pixels: int) -> Iterator[tuple[int, np.ndarray]]:
    import imageio.v3 as iio

    subtype = (ref.content_type or "video/mp4").split("/")[-1]
    extension = posixpath.splitext(redact_uri(ref.uri).split("?")[0])[1] or f".{subtype}"
    try:
        for index, frame in enumerate(iio.imiter(data, plugin="pyav", extension=extension)):
            if frame.shape[0] * frame.shape[1] > max_pixels:
                size = f"{frame.shape[1]}x{frame.shape[0]}"
                raise ValueError(f"video frame of {size} pixels is over the limit")
            yield index, np.asarray(frame)
    except (OSError, RuntimeError, TypeError) as exc:  # PyAV reports bad streams this way
        raise ValueError(f"video mask could not be decoded: {exc}") from exc


def _mapping_for(ref: MaskRef, mask_labels: MaskLabels) -> MaskLabels:
    """The version's mapping, with the labels of this mask's deprecated ROI links added."""
    if not ref.roi_labels:
        return mask_labels
    mapping = dict(mask_labels)
    for value, labels in ref.roi_labels:
        known = mapping.get(value, ())
        mapping[value] = known + tuple(label for label in labels if label not in known)
    return mapping


def _label_rows(
    stats: ColourStats, grey: bool, mapping: MaskLabels, ident: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per distinct value of a pixel-segmentation mask (its :func:`label_values`
    measured by :func:`colour_stats`), with its labels."""
    if grey:
        values = [(int(k), int(k), int(k)) for k in stats.keys]
    else:
        values = [(int(c[0]), int(c[1]), int(c[2])) for c in stats.colours]
    found = []
    for i, value in enumerate(values):
        found.append(
            {
                **ident,
                "value": list(value),
                "labels": list(mapping.get(value, ())),
                "pixels": int(stats.pixels[i]),
                "x_min": int(stats.x_min[i]),
                "y_min": int(stats.y_min[i]),
                "x_max": int(stats.x_max[i]),
                "y_max": int(stats.y_max[i]),
                "centroid_x": float(stats.centroid_x[i]),
                "centroid_y": float(stats.centroid_y[i]),
            }
        )
    return found


def _alpha_row(stats: AlphaStats) -> dict[str, Any]:
    box = stats.visible_bbox or (None, None, None, None)
    return {
        "mean_opacity": stats.mean_opacity,
        "transparent_pixels": stats.transparent_pixels,
        "opaque_pixels": stats.opaque_pixels,
        "partial_pixels": stats.partial_pixels,
        "x_min": box[0],
        "y_min": box[1],
        "x_max": box[2],
        "y_max": box[3],
    }


def _write_scaled(uri: str, png: bytes | None, ctx: TaskContext) -> str | None:
    return None if png is None else write_scaled(ctx, safe_relative_path(uri), png)
