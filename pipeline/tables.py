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
#: The bbox of a segment or a label value, which always has pixels.
_REQUIRED_BBOX = [f.with_nullable(False) for f in _BBOX]

SCHEMAS: dict[str, pa.Schema] = {
    "masks": pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("stem", pa.string()),
            pa.field("folder", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("bytes", pa.int64(), nullable=False),
            pa.field("png_mode", pa.string()),
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
            pa.field("metadata_path", pa.string()),
            pa.field("scaled_path", pa.string()),
            pa.field("frame_id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("mask_id", pa.string()),
            pa.field("video_frames", pa.int32()),
            pa.field("unmapped_values", pa.int32()),
            pa.field("unmapped_pixels", pa.int64()),
        ]
    ),
    "instances": pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("stem", pa.string()),
            pa.field("folder", pa.string()),
            # Delta Lake has no unsigned types: 0..255 values are int16 (Delta ``short``).
            pa.field("r", pa.int16(), nullable=False),
            pa.field("g", pa.int16(), nullable=False),
            pa.field("b", pa.int16(), nullable=False),
            pa.field("instance", pa.int16(), nullable=False),
            pa.field("type_bits", pa.int16(), nullable=False),
            pa.field("types", pa.list_(pa.string())),
            pa.field("valid", pa.bool_(), nullable=False),
            pa.field("overlap", pa.bool_(), nullable=False),
            pa.field("pixels", pa.int64(), nullable=False),
            *_REQUIRED_BBOX,
            pa.field("centroid_x", pa.float64(), nullable=False),
            pa.field("centroid_y", pa.float64(), nullable=False),
            pa.field("metadata_path", pa.string()),
            pa.field("detection_index", pa.int32()),
            pa.field("detection_id", pa.int64()),
            pa.field("score", pa.float64()),
            pa.field("type_label", pa.string()),
            pa.field("type_name", pa.string()),
            pa.field("match", pa.string()),
            pa.field("bbox_iou", pa.float64()),
        ]
    ),
    "detections": pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("media", pa.string()),
            pa.field("frame", pa.int64()),
            pa.field("detection_index", pa.int32(), nullable=False),
            pa.field("detection_id", pa.int64()),
            pa.field("type", pa.int64()),
            pa.field("type_label", pa.string()),
            pa.field("type_name", pa.string()),
            pa.field("score", pa.float64()),
            pa.field("is_anonymised", pa.bool_()),
            pa.field("x1", pa.float64()),
            pa.field("y1", pa.float64()),
            pa.field("x2", pa.float64()),
            pa.field("y2", pa.float64()),
            pa.field("offset_x", pa.float64()),
            pa.field("offset_y", pa.float64()),
            pa.field("color", pa.list_(pa.int16())),
            pa.field("frame_width", pa.int32()),
            pa.field("frame_height", pa.int32()),
        ]
    ),
    "frames": pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("media", pa.string()),
            pa.field("frame", pa.int64()),
            pa.field("detections", pa.int32(), nullable=False),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("size_order", pa.string()),
            pa.field("size_order_source", pa.string()),
            pa.field("duration", pa.float64()),
            pa.field("chunk_start", pa.int64()),
            pa.field("chunk_end", pa.int64()),
        ]
    ),
    "chunks": pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("media", pa.string()),
            pa.field("chunk_start", pa.int64(), nullable=False),
            pa.field("chunk_end", pa.int64(), nullable=False),
            pa.field("frames", pa.int32(), nullable=False),
            pa.field("detections", pa.int64(), nullable=False),
            pa.field("missing_frames", pa.int32(), nullable=False),
            pa.field("duplicate_frames", pa.int32(), nullable=False),
            pa.field("out_of_range_frames", pa.int32(), nullable=False),
        ]
    ),
    "gaps": pa.schema(
        [
            pa.field("media", pa.string(), nullable=False),
            pa.field("track", pa.int64()),
            pa.field("type_label", pa.string()),
            pa.field("type_name", pa.string()),
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
            pa.field("iou", pa.float64()),
            pa.field("predicted_x1", pa.list_(pa.float64())),
            pa.field("predicted_y1", pa.list_(pa.float64())),
            pa.field("predicted_x2", pa.list_(pa.float64())),
            pa.field("predicted_y2", pa.list_(pa.float64())),
            pa.field("track_frames", pa.int64()),
            pa.field("confidence", pa.float64()),
        ]
    ),
    "labels": pa.schema(
        [
            pa.field("frame_id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("mask_id", pa.string()),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("frame_index", pa.int32()),
            pa.field("value", pa.list_(pa.int32()), nullable=False),
            pa.field("labels", pa.list_(pa.string()), nullable=False),
            pa.field("pixels", pa.int64(), nullable=False),
            *_REQUIRED_BBOX,
            pa.field("centroid_x", pa.float64(), nullable=False),
            pa.field("centroid_y", pa.float64(), nullable=False),
        ]
    ),
    "alpha": pa.schema(
        [
            pa.field("frame_id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("mask_id", pa.string()),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("frame_index", pa.int32()),
            pa.field("mean_opacity", pa.float64(), nullable=False),
            pa.field("transparent_pixels", pa.int64(), nullable=False),
            pa.field("opaque_pixels", pa.int64(), nullable=False),
            pa.field("partial_pixels", pa.int64(), nullable=False),
            *_BBOX,
        ]
    ),
    "errors": pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("stage", pa.string()),
            pa.field("error", pa.string()),
            pa.field("message", pa.string()),
            pa.field("severity", pa.string()),
        ]
    ),
    "summary": pa.schema(
        [
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
            pa.field("implied_fps", pa.float64()),
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

#: What every column means, beside its schema (``docs/tables.md`` is generated from both; a test
#: checks that every column of :data:`SCHEMAS` has a meaning and no meaning lacks its column).
COLUMN_MEANINGS: dict[str, dict[str, str]] = {
    "masks": {
        "path": "the mask file, relative to the input folder (POSIX); for ClearML, the mask's URI",
        "stem": "file name without the mask suffix (`_ins_maks.png`, `_bin_mask.png`): the "
        "image it belongs to",
        "folder": "folder of the file relative to the input folder ('' at the top)",
        "kind": "`instance` or `binary` (Celantur), `pixel` or `alpha` (ClearML mode)",
        "width": "mask width in pixels (may be smaller than the image: rescaled masks)",
        "height": "mask height in pixels",
        "bytes": "size of the mask file",
        "png_mode": "colour type and bit depth read from the PNG header, e.g. `rgb8`, `rgba8`, "
        "`grey8`, `palette8`, `grey16`; null for video masks",
        "encoding": "instance-mask encoding the types were read with (`v26`, `legacy`, "
        "`legacy-red`); null for other kinds",
        "segments": "distinct non-background colours of an instance mask (rows in `instances/`)",
        "invalid_segments": "segments whose colour the encoding does not allow (counted, untyped)",
        "foreground_pixels": "non-background pixels (instance), anonymised pixels (binary: "
        "grey >= 128)",
        "person_pixels": "pixels of segments typed person (a pixel with several type flags "
        "counts for each of its types)",
        "license_plate_pixels": "pixels of segments typed license_plate",
        "face_pixels": "pixels of segments typed face",
        "vehicle_pixels": "pixels of segments typed vehicle",
        "overlap_pixels": "pixels of segments with more than one type flag (overlapping objects "
        "of different types, v26)",
        "invalid_pixels": "pixels of invalid segments",
        "bin_mismatch_pixels": "pixels where the binary mask (>= 128) and the instance mask's "
        "foreground of the same image disagree (on both masks' rows); null without both",
        "matched_detections": "segments matched to a metadata detection (`match` not null)",
        "metadata_path": "the image's metadata file, relative to the input folder; null without",
        "scaled_path": "the rescaled copy under `scaled/` of the output; null without a mask scale",
        "frame_id": "ClearML frame id",
        "source_id": "ClearML source id within the frame",
        "mask_id": 'ClearML mask id (given, or "00", "01"... by position)',
        "video_frames": "frames decoded from a `video/*` mask; null for PNG masks",
        "unmapped_values": "pixel mode: distinct values that `mask_labels` does not map",
        "unmapped_pixels": "pixel mode: pixels of those values",
    },
    "instances": {
        "path": "the instance mask, relative to the input folder (joins `masks.path`)",
        "stem": "the image's stem",
        "folder": "folder of the mask relative to the input folder",
        "r": "the segment's colour: red",
        "g": "green",
        "b": "blue",
        "instance": "instance id (G); an opaque id, only unique together with the type bits",
        "type_bits": "the channel that holds the type: B (`v26` flags, `legacy` values) or R "
        "(`legacy-red`)",
        "types": "type names the bits decode to (`v26`: one per flag, e.g. [license_plate, "
        "vehicle] for 80); empty for an invalid colour",
        "valid": "the colour is allowed by the encoding (else its pixels are `invalid_pixels`)",
        "overlap": "more than one type flag (objects of different types overlap here)",
        "pixels": "area of the segment in pixels",
        "x_min": "bounding box, inclusive left",
        "y_min": "bounding box, inclusive top",
        "x_max": "bounding box, exclusive right",
        "y_max": "bounding box, exclusive bottom",
        "centroid_x": "mean x of the segment's pixels (pixel centres at integer coordinates)",
        "centroid_y": "mean y of the segment's pixels",
        "metadata_path": "the image's metadata file; joins `detections.source`",
        "detection_index": "matched detection: position in the metadata's `detections` list; "
        "joins `detections.detection_index` with `metadata_path`",
        "detection_id": "matched detection's `id` as written (real files repeat ids)",
        "score": "matched detection's score (0..1)",
        "type_label": "matched detection's `type_label` as written (e.g. `license plate`)",
        "type_name": "canonical type of that label: person, face, license_plate, vehicle, or "
        "other (as in `types` and the `summary/` type rows)",
        "match": "how the detection was matched: `color` (its `color` equals the segment's), "
        "`bbox` (best box overlap of a compatible type), null: none",
        "bbox_iou": "IoU of the detection's box (scaled to the mask) and the segment's box",
    },
    "detections": {
        "source": "the metadata file (image metadata or video chunk), relative to the input",
        "media": "the image (folder/`filename` of the metadata, else its `id`, else the stem) "
        "or the video (folder/video name) it describes",
        "frame": "video frame number (the frame's `id`); null for images",
        "detection_index": "position in the frame's `detections` list (unique per source and "
        "frame, unlike `detection_id`)",
        "detection_id": "`id` as written (documented sequential; real files repeat ids)",
        "type": "`type` as written (e.g. 102 person, 103 face)",
        "type_label": "`type_label` as written (e.g. `license plate`, `License-Plate`)",
        "type_name": "canonical type of the label: person, face, license_plate, vehicle, or "
        "other; null without a label. Joins `summary.name` of scope type and `instances.types`",
        "score": "`score` (0..1); null when missing or not finite",
        "is_anonymised": "`is_anonymised` (or `is_anonymized`) as written",
        "x1": "box left, in the frame's pixels (`bbox` as written)",
        "y1": "box top",
        "x2": "box right",
        "y2": "box bottom",
        "offset_x": "`offset` x as written",
        "offset_y": "`offset` y as written",
        "color": "[r, g, b] of the detection in the instance mask, or null",
        "frame_width": "the frame's width, from `size` in the order resolved for the file",
        "frame_height": "the frame's height",
    },
    "frames": {
        "source": "the metadata file, relative to the input",
        "media": "the image or video it describes",
        "frame": "video frame number; null for images",
        "detections": "detections in the frame",
        "width": "width in pixels, from `size` read in `size_order`",
        "height": "height in pixels",
        "size_order": "how `size` was read: `wh` [width, height] (the docs) or `hw` [height, "
        "width] (the product's examples)",
        "size_order_source": "the evidence for `size_order`: `mask` (the image's mask has those "
        "dimensions), `bbox` (a box reaches beyond the other reading), `default` (none: `hw`)",
        "duration": "`duration` as written: seconds of inference and anonymisation, no I/O",
        "chunk_start": "first frame named by the chunk file (`<video>-<start>-<end>.json`)",
        "chunk_end": "last frame named by the chunk file",
    },
    "chunks": {
        "source": "the chunk file, relative to the input",
        "media": "the video: folder/video name (split from the right of the file name)",
        "chunk_start": "first frame named by the file",
        "chunk_end": "last frame named by the file",
        "frames": "frame objects in the file",
        "detections": "detections in the file",
        "missing_frames": "frame ids of the named range that the file does not hold",
        "duplicate_frames": "repeats of a frame id within the file (the first copy counts)",
        "out_of_range_frames": "frame ids outside the named range",
    },
    "gaps": {
        "media": "the video",
        "track": "track id within the video (a multi-object tracker's, see the README)",
        "type_label": "the track's detection label, as written",
        "type_name": "canonical type of that label (person, face, license_plate, vehicle, other)",
        "first_missing_frame": "first frame the tracked object is absent",
        "last_missing_frame": "last frame it is absent (it is seen again on the next frame)",
        "missing_frames": "frames in the gap",
        "frames_without_metadata": "frames of the gap that no chunk holds at all (a gap in the "
        "metadata rather than in the detections)",
        "before_x1": "the track's last detection before the gap: left",
        "before_y1": "top",
        "before_x2": "right",
        "before_y2": "bottom",
        "after_x1": "the detection it returns with, after the gap: left",
        "after_y1": "top",
        "after_x2": "right",
        "after_y2": "bottom",
        "iou": "IoU of the return with the track's predicted box for that frame (at least "
        "`--gap-iou`)",
        "predicted_x1": "predicted box of each missing frame, first_missing_frame first (where "
        "a reviewer should look): left edges",
        "predicted_y1": "top edges",
        "predicted_x2": "right edges",
        "predicted_y2": "bottom edges",
        "track_frames": "frames the track was detected in, its return included",
        "confidence": "0..1: iou x track evidence (1 - 2^(-track_frames / --gap-min-hits)) x "
        "0.9^(missing_frames - 1)",
    },
    "labels": {
        "frame_id": "ClearML frame id",
        "source_id": "ClearML source id",
        "mask_id": "ClearML mask id",
        "uri": "the mask's URI as resolved (after `--uri-map`)",
        "frame_index": "frame of a `video/*` mask; null for images",
        "value": "the pixel value [r, g, b]; a single-channel value v is [v, v, v]",
        "labels": "labels `mask_labels` (and deprecated ROI links) give the value; empty: unmapped",
        "pixels": "pixels with the value",
        "x_min": "bounding box, inclusive left",
        "y_min": "bounding box, inclusive top",
        "x_max": "bounding box, exclusive right",
        "y_max": "bounding box, exclusive bottom",
        "centroid_x": "mean x of the value's pixels",
        "centroid_y": "mean y of the value's pixels",
    },
    "alpha": {
        "frame_id": "ClearML frame id",
        "source_id": "ClearML source id",
        "mask_id": "ClearML mask id",
        "uri": "the mask's URI as resolved",
        "frame_index": "frame of a `video/*` mask; null for images",
        "mean_opacity": "mean opacity, 0 (transparent) .. 1 (opaque): the alpha channel, else "
        "the grey value, else the RGB luma",
        "transparent_pixels": "pixels of opacity 0",
        "opaque_pixels": "pixels of full opacity",
        "partial_pixels": "pixels in between",
        "x_min": "bounding box of the visible (opacity > 0) region, inclusive left; null when "
        "nothing is visible",
        "y_min": "inclusive top",
        "x_max": "exclusive right",
        "y_max": "exclusive bottom",
    },
    "errors": {
        "path": "the input at fault, relative to its root (or a frames document, a mask URI)",
        "stage": "where it failed: list, read, decode, validate, stats or write",
        "error": "a short code, e.g. `not_png`, `json_syntax`, `bad_field`, `invalid_pixels`",
        "message": "what happened, starting with the path",
        "severity": "`error`: the input is in no other table; `warning`: it is, with a doubt",
    },
    "summary": {
        "scope": "what the row aggregates: `run` (one row), `kind` (per mask kind), `type` "
        "(per canonical type, and `invalid`), `label` (per detection label as written), `video`, "
        "`video_label` (per video and label), `mask_label` (ClearML label)",
        "name": "the kind, type, label, video or ClearML label; `total` for the run",
        "value": "run: the encoding (Celantur) or mode (ClearML); video_label: the label",
        "masks": "masks (run, kind); masks holding the label (mask_label)",
        "segments": "segments (run: all; type: with the type's flag)",
        "pixels": "pixels of those segments (type) or of the label (mask_label)",
        "area_min": "smallest segment area (type)",
        "area_p50": "median segment area (type; exact up to 1024 pixels, within 0.5 % above)",
        "area_p90": "90th percentile of the segment areas (type)",
        "area_max": "largest segment area (type)",
        "detections": "metadata detections (run, type, label, video, video_label)",
        "anonymised": "of those, `is_anonymised` true",
        "mean_score": "mean of their finite scores",
        "frames": "metadata frames (run, video: images and video frames with metadata); frames "
        "holding the label (mask_label)",
        "mean_duration": "mean `duration` of the frames: seconds of processing per frame",
        "implied_fps": "1 / mean_duration: frames per second the anonymisation ran at (video)",
        "frames_with_detections": "frames with at least one detection (video)",
        "score_p50": "median detection score (video; exact to 0.001)",
        "score_p90": "90th percentile of the detection scores (video)",
        "missing_frames": "frames of the span the video's chunks name (first start to last end) "
        "minus the frames found (video)",
        "duplicate_frames": "frame ids held more than once (video)",
        "chunk_gaps": "holes between consecutive chunks' named ranges (video)",
        "chunk_overlaps": "overlaps between consecutive chunks' named ranges (video)",
        "anonymisation_gaps": "rows of `gaps/` for the video",
    },
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
        "Every column may be null unless marked *required*. Read nullable integers with",
        "pandas' Arrow-backed dtypes (`to_pandas(types_mapper=pd.ArrowDtype)`) to keep them",
        "integers.",
    ]
    for name, schema in SCHEMAS.items():
        lines += ["", f"## `{name}/`", "", f"One row per {ROW_MEANING[name]}.", ""]
        lines += ["| column | type | meaning |", "|---|---|---|"]
        for column in schema:
            required = "" if column.nullable else " (*required*)"
            meaning = COLUMN_MEANINGS[name][column.name].replace("|", "\\|")
            lines.append(f"| `{column.name}` | `{column.type}`{required} | {meaning} |")
    return "\n".join(lines) + "\n"


#: Tables every run commits (each gets at least an empty part, so readers always find it).
TABLES = tuple(SCHEMAS)


_ROW_TYPES = {name: pa.struct(schema) for name, schema in SCHEMAS.items()}


def to_arrow(table: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by column name; missing keys are null) as a table of ``table``'s schema.

    Raises
    ------
    ValueError
        When a required column holds a null (pyarrow does not check; a writer would fail later,
        outside the guard that turns one input's bad value into its error row).
    """
    # One conversion of the rows as structs: ~2.5x faster than ``Table.from_pylist`` (a
    # conversion per column), which is a batch's fixed cost (``make bench``'s spread).
    data = pa.Table.from_struct_array(pa.array(list(rows), _ROW_TYPES[table]))
    for field in data.schema:
        if not field.nullable and data.column(field.name).null_count:
            raise ValueError(f"{table}.{field.name} is required, got a null")
    return data


def empty(table: str) -> pa.Table:
    """A table with ``table``'s schema and no rows."""
    return SCHEMAS[table].empty_table()
