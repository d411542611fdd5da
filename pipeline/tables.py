"""The output tables' schemas: the one place their columns are defined (docs are generated here).

Bounding boxes everywhere: ``x_min, y_min`` inclusive, ``x_max, y_max`` exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

_BBOX = [
    pa.field("x_min", pa.int32()),
    pa.field("y_min", pa.int32()),
    pa.field("x_max", pa.int32()),
    pa.field("y_max", pa.int32()),
]

SCHEMAS: dict[str, pa.Schema] = {
    "masks": pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("stem", pa.string()),
            pa.field("folder", pa.string()),
            pa.field("kind", pa.string()),  # instance | binary | pixel | alpha
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("bytes", pa.int64()),
            pa.field("png_mode", pa.string()),  # e.g. rgb8, rgba8, grey8
            pa.field("encoding", pa.string()),
            pa.field("segments", pa.int32()),
            pa.field("invalid_segments", pa.int32()),
            pa.field("foreground_pixels", pa.int64()),
            pa.field("person_pixels", pa.int64()),
            pa.field("license_plate_pixels", pa.int64()),
            pa.field("face_pixels", pa.int64()),
            pa.field("vehicle_pixels", pa.int64()),
            pa.field("overlap_pixels", pa.int64()),
            pa.field("invalid_pixels", pa.int64()),
            pa.field("bin_mismatch_pixels", pa.int64()),
            pa.field("matched_detections", pa.int32()),
            pa.field("metadata_path", pa.string()),  # the image's metadata file, if any
            pa.field("scaled_path", pa.string()),
            # ClearML masks: which frame, source and mask; values without labels
            pa.field("frame_id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("mask_id", pa.string()),
            pa.field("video_frames", pa.int32()),  # frames of a video/* mask
            pa.field("unmapped_values", pa.int32()),
            pa.field("unmapped_pixels", pa.int64()),
        ]
    ),
    "instances": pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("stem", pa.string()),
            pa.field("folder", pa.string()),
            pa.field("r", pa.uint8()),
            pa.field("g", pa.uint8()),
            pa.field("b", pa.uint8()),
            pa.field("instance", pa.uint8()),  # G
            pa.field("type_bits", pa.uint8()),  # B, or R for legacy-red
            pa.field("types", pa.list_(pa.string())),
            pa.field("valid", pa.bool_()),
            pa.field("overlap", pa.bool_()),
            pa.field("pixels", pa.int64()),
            *_BBOX,
            pa.field("centroid_x", pa.float64()),
            pa.field("centroid_y", pa.float64()),
            pa.field("metadata_path", pa.string()),  # joins detections/ on source
            pa.field("detection_index", pa.int32()),  # position in the metadata list (unique)
            pa.field("detection_id", pa.int64()),  # as written; real files repeat ids
            pa.field("score", pa.float64()),
            pa.field("type_label", pa.string()),
            pa.field("match", pa.string()),  # color | bbox | null
            pa.field("bbox_iou", pa.float64()),
        ]
    ),
    "detections": pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("media", pa.string()),
            pa.field("frame", pa.int64()),
            pa.field("detection_index", pa.int32()),
            pa.field("detection_id", pa.int64()),
            pa.field("type", pa.int64()),
            pa.field("type_label", pa.string()),
            pa.field("score", pa.float64()),
            pa.field("is_anonymised", pa.bool_()),
            pa.field("x1", pa.float64()),
            pa.field("y1", pa.float64()),
            pa.field("x2", pa.float64()),
            pa.field("y2", pa.float64()),
            pa.field("offset_x", pa.float64()),
            pa.field("offset_y", pa.float64()),
            pa.field("color", pa.list_(pa.uint8())),
            pa.field("frame_width", pa.int32()),
            pa.field("frame_height", pa.int32()),
        ]
    ),
    "frames": pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("media", pa.string()),
            pa.field("frame", pa.int64()),
            pa.field("detections", pa.int32()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("size_order", pa.string()),  # wh | hw: how `size` was read
            pa.field("size_order_source", pa.string()),  # mask | bbox | default
            pa.field("duration", pa.float64()),
            pa.field("chunk_start", pa.int64()),
            pa.field("chunk_end", pa.int64()),
        ]
    ),
    "chunks": pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("media", pa.string()),  # folder/video name
            pa.field("chunk_start", pa.int64()),
            pa.field("chunk_end", pa.int64()),
            pa.field("frames", pa.int32()),  # frame objects in the file
            pa.field("detections", pa.int64()),
            pa.field("missing_frames", pa.int32()),  # ids of the name's range not in the file
            pa.field("duplicate_frames", pa.int32()),  # repeats of an id within the file
            pa.field("out_of_range_frames", pa.int32()),  # ids outside the name's range
        ]
    ),
    "gaps": pa.schema(
        [
            pa.field("media", pa.string(), nullable=False),
            pa.field("track", pa.int64()),
            pa.field("type_label", pa.string()),
            pa.field("first_missing_frame", pa.int64()),
            pa.field("last_missing_frame", pa.int64()),
            pa.field("missing_frames", pa.int32()),
            pa.field("frames_without_metadata", pa.int32()),
            pa.field("before_x1", pa.float64()),
            pa.field("before_y1", pa.float64()),
            pa.field("before_x2", pa.float64()),
            pa.field("before_y2", pa.float64()),
            pa.field("after_x1", pa.float64()),
            pa.field("after_y1", pa.float64()),
            pa.field("after_x2", pa.float64()),
            pa.field("after_y2", pa.float64()),
            pa.field("iou", pa.float64()),  # overlap of the return with the track's prediction
            # Predicted box of each missing frame, first_missing_frame first (where to look).
            pa.field("predicted_x1", pa.list_(pa.float64())),
            pa.field("predicted_y1", pa.list_(pa.float64())),
            pa.field("predicted_x2", pa.list_(pa.float64())),
            pa.field("predicted_y2", pa.list_(pa.float64())),
            pa.field("track_frames", pa.int64()),  # frames the track was detected in, return incl.
            pa.field("confidence", pa.float64()),  # 0..1: fit x track evidence x gap length
        ]
    ),
    "labels": pa.schema(
        [
            pa.field("frame_id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("mask_id", pa.string()),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("frame_index", pa.int32()),  # frame of a video/* mask, null for images
            pa.field("value", pa.list_(pa.int32())),  # [r, g, b]; grey v is [v, v, v]
            pa.field("labels", pa.list_(pa.string())),  # empty: unmapped
            pa.field("pixels", pa.int64()),
            *_BBOX,
            pa.field("centroid_x", pa.float64()),
            pa.field("centroid_y", pa.float64()),
        ]
    ),
    "alpha": pa.schema(
        [
            pa.field("frame_id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("mask_id", pa.string()),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("frame_index", pa.int32()),
            pa.field("mean_opacity", pa.float64()),  # 0..1
            pa.field("transparent_pixels", pa.int64()),
            pa.field("opaque_pixels", pa.int64()),
            pa.field("partial_pixels", pa.int64()),
            *_BBOX,  # of the visible (opacity > 0) region; null when nothing is visible
        ]
    ),
    "errors": pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("stage", pa.string()),  # list | read | decode | validate | stats | write
            pa.field("error", pa.string()),
            pa.field("message", pa.string()),
            pa.field("severity", pa.string()),  # error | warning
        ]
    ),
    "summary": pa.schema(
        [
            # run | kind | type | label | video | video_label | mask_label | unmapped
            pa.field("scope", pa.string(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("value", pa.string()),
            pa.field("masks", pa.int64()),
            pa.field("segments", pa.int64()),
            pa.field("pixels", pa.int64()),
            pa.field("area_min", pa.int64()),
            pa.field("area_p50", pa.int64()),
            pa.field("area_p90", pa.int64()),
            pa.field("area_max", pa.int64()),
            pa.field("detections", pa.int64()),
            pa.field("anonymised", pa.int64()),
            pa.field("mean_score", pa.float64()),
            pa.field("frames", pa.int64()),
            pa.field("mean_duration", pa.float64()),
            pa.field("implied_fps", pa.float64()),  # 1 / mean processing duration
            pa.field("frames_with_detections", pa.int64()),
            pa.field("score_p50", pa.float64()),
            pa.field("score_p90", pa.float64()),
            pa.field("missing_frames", pa.int64()),
            pa.field("duplicate_frames", pa.int64()),
            pa.field("chunk_gaps", pa.int64()),
            pa.field("chunk_overlaps", pa.int64()),
            pa.field("anonymisation_gaps", pa.int64()),
        ]
    ),
}

#: What one row of each table is (for the generated schema documentation).
ROW_MEANING: dict[str, str] = {
    "masks": "mask file (Celantur instance or binary mask, ClearML pixel or alpha mask)",
    "instances": "distinct non-background colour (segment) of a Celantur instance mask",
    "detections": "detection of a Celantur image metadata file or video frame",
    "frames": "Celantur metadata image or video frame",
    "chunks": "Celantur video metadata chunk file",
    "gaps": "anonymisation gap: a confirmed track undetected 1..K frames while in view, then back",
    "labels": "(ClearML mask, value[, video frame]) of a pixel-segmentation mask",
    "alpha": "ClearML alpha mask[, video frame]",
    "errors": "bad or doubtful input (severity error: the input is in no other table)",
    "summary": "aggregate (scope: run, kind, type, label, video, video_label, mask_label)",
}


def schema_markdown() -> str:
    """The tables' columns as Markdown, generated from :data:`SCHEMAS` (``docs/tables.md``)."""
    lines = [
        "# Output tables",
        "",
        "Generated from `pipeline/tables.py` by `mask-pipeline schema`; a test keeps this file",
        "equal to the code. Bounding boxes: `x_min, y_min` inclusive, `x_max, y_max` exclusive.",
        "Every column may be null unless marked *required*.",
    ]
    for name, schema in SCHEMAS.items():
        lines += ["", f"## `{name}/`", "", f"One row per {ROW_MEANING[name]}.", ""]
        lines += ["| column | type |", "|---|---|"]
        for column in schema:
            required = "" if column.nullable else " (*required*)"
            lines.append(f"| `{column.name}` | `{column.type}`{required} |")
    return "\n".join(lines) + "\n"


#: Tables every run commits (each gets at least an empty part, so readers always find it).
TABLES = tuple(SCHEMAS)


def to_arrow(table: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by column name; missing keys are null) as a table of ``table``'s schema."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMAS[table])


def empty(table: str) -> pa.Table:
    """A table with ``table``'s schema and no rows."""
    return SCHEMAS[table].empty_table()
