"""A whole-video reference for the video metadata tables and the gap tracker.

Chunk files are read with :func:`json.loads` (which accepts the ``NaN`` literals Python writes),
file names are split with a regex of their own, and the README's frame rule is written out over
each whole video:

* a video's chunks are ordered by the start frame of their name (then end frame, then path);
* the first copy of a frame counts (earlier chunk, then earlier position in the file);
* a frame is linked when its counted copy sits in a chunk whose name starts at or before it;
* detections without four finite bbox numbers are never linked.

The linked frames then go through the product's tracker in **one** feed (:func:`link`): what
the pipeline streams chunk by chunk, batch by batch, must equal one sequential pass. The
tracker's own behaviour is tested in ``tests/kernels/test_tracking.py`` and on real ground
truth in ``tests/test_gap_tracker_mot.py``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.formats.metadata import resolve_size_order
from pipeline.kernels.tracking import GapFinder

Box = tuple[float, float, float, float]

CHUNK_NAME = re.compile(r"^(.+)-(\d+)-(\d+)\.json$")


@dataclass(frozen=True)
class RefGap:
    """One expected row of ``gaps/`` (``track`` as the one-pass tracker numbers it)."""

    track: int
    label: str | None
    first: int
    last: int
    unprocessed: int
    box_before: Box
    box_after: Box
    iou: float
    predicted: tuple[Box, ...]
    track_frames: int
    confidence: float


@dataclass(frozen=True)
class RefChunk:
    """A chunk file as named: ``media`` is ``folder/video`` (``video`` at the root)."""

    path: str
    media: str
    start: int
    end: int


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes ``x1, y1, x2, y2`` (max exclusive); 0 for an empty union."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def usable_box(detection: Any) -> Box | None:
    """The detection's bbox when it is four finite numbers, else ``None`` (never linked)."""
    if not isinstance(detection, dict):
        return None
    bbox = detection.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_finite, bbox)):
        return None
    return (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))


def label_of(detection: Any) -> str | None:
    """The detection's ``type_label`` when it is a string."""
    label = detection.get("type_label") if isinstance(detection, dict) else None
    return label if isinstance(label, str) else None


def link(
    frames: Iterable[tuple[int, Sequence[tuple[str | None, Box | None, float]]]],
    sizes: Sequence[tuple[float, float]] | None = None,
    **params: Any,
) -> list[RefGap]:
    """One sequential pass: ``frames`` are ``(frame id, [(label, box or None, score), ...])``
    with strictly increasing ids (every frame that has metadata, with or without detections);
    ``sizes`` the (width, height) of each; ``params`` those of the tracker."""
    det_frames, labels, boxes, scores, ids = [], [], [], [], []
    for frame, detections in frames:
        assert not ids or frame > ids[-1], "frames must ascend strictly"
        ids.append(frame)
        for label, box, score in detections:
            det_frames.append(frame)
            labels.append(label)
            boxes.append((math.nan,) * 4 if box is None else box)
            scores.append(score)
    linked = GapFinder(**params).feed(
        np.asarray(det_frames, dtype=np.int64), labels,
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(ids, dtype=np.int64),
        np.asarray(scores, dtype=np.float64), None if sizes is None else np.asarray(sizes),
    )  # fmt: skip
    return [
        RefGap(g.track, g.label, g.first_missing, g.last_missing, g.unprocessed, g.box_before,
               g.box_after, g.iou, g.predicted, g.track_frames, g.confidence)
        for g in linked.gaps
    ]  # fmt: skip


def score_of(detection: Any) -> float:
    """The detection's score when it is a finite number, else NaN (taken as high)."""
    score = detection.get("score") if isinstance(detection, dict) else None
    return float(score) if _finite(score) else math.nan


def size_of(raw: Any, detections: list[Any]) -> tuple[float, float]:
    """(width, height) of a frame as the product resolves ``size`` (NaN when absent)."""
    size = raw.get("size") if isinstance(raw, dict) else None
    if not isinstance(size, list) or len(size) != 2 or not all(map(_finite, size)):
        return (math.nan, math.nan)
    boxes = [b for b in map(usable_box, detections) if b is not None]
    resolved = resolve_size_order((int(size[0]), int(size[1])), boxes)
    return (float(resolved.width), float(resolved.height))


def chunk_of(rel: str) -> RefChunk | None:
    """Interpret a POSIX path relative to the root as a chunk name (split from the right)."""
    folder, _, name = rel.rpartition("/")
    match = CHUNK_NAME.match(name)
    if match is None:
        return None
    video, start, end = match.group(1), int(match.group(2)), int(match.group(3))
    return RefChunk(rel, f"{folder}/{video}" if folder else video, start, end)


def load_json(path: Path) -> Any | None:
    """The decoded document, or ``None`` when the file is not JSON."""
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def video_frames(
    root: Path, chunks: Sequence[RefChunk]
) -> list[tuple[int, list[dict[str, Any]], RefChunk, tuple[float, float]]]:
    """A video's linkable frames in frame order: the first copy counts, and it is linked when
    its chunk starts at or before it.

    Each entry is ``(frame id, raw detections, chunk, (width, height))``; a frame whose
    ``detections`` is not a list has metadata but no detections."""
    chosen: dict[int, tuple[list[dict[str, Any]], RefChunk, bool, tuple[float, float]]] = {}
    for chunk in sorted(chunks, key=lambda c: (c.start, c.end, c.path)):
        document = load_json(root / chunk.path)
        if not isinstance(document, list):
            continue
        for raw in document:
            frame = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(frame, int) or isinstance(frame, bool):
                continue
            if frame in chosen:
                continue
            detections = raw.get("detections")
            dets = detections if isinstance(detections, list) else []
            chosen[frame] = (dets, chunk, frame >= chunk.start, size_of(raw, dets))
    return [
        (f, dets, chunk, size)
        for f, (dets, chunk, linked, size) in sorted(chosen.items())
        if linked
    ]


def fleet_chunks(root: Path) -> dict[str, list[RefChunk]]:
    """Every chunk file under ``root`` grouped by media."""
    videos: dict[str, list[RefChunk]] = {}
    for path in sorted(root.rglob("*.json")):
        chunk = chunk_of(path.relative_to(root).as_posix())
        if chunk is not None:
            videos.setdefault(chunk.media, []).append(chunk)
    return videos


def reference_gaps(root: Path, **params: Any) -> dict[str, list[RefGap]]:
    """Per media, the gaps one sequential pass over the whole video finds."""
    result = {}
    for media, chunks in fleet_chunks(root).items():
        chosen = video_frames(root, chunks)
        frames = [
            (frame, [(label_of(d), usable_box(d), score_of(d)) for d in detections])
            for frame, detections, _, _ in chosen
        ]
        result[media] = link(frames, [size for *_, size in chosen], **params)
    return result


def gap_key(media: str, gap: RefGap) -> tuple[Any, ...]:
    """A gap without its track number, comparable with :func:`row_key` of a ``gaps/`` row."""
    return (media, gap.label, gap.first, gap.last, gap.unprocessed, gap.box_before,
            gap.box_after, gap.iou, gap.predicted, gap.track_frames, gap.confidence)  # fmt: skip


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """A ``gaps/`` row in the shape of :func:`gap_key`."""
    return (
        row["media"], row["type_label"], row["first_missing_frame"], row["last_missing_frame"],
        row["frames_without_metadata"],
        tuple(row[f"before_{c}"] for c in ("x1", "y1", "x2", "y2")),
        tuple(row[f"after_{c}"] for c in ("x1", "y1", "x2", "y2")),
        row["iou"],
        tuple(zip(*(row[f"predicted_{c}"] for c in ("x1", "y1", "x2", "y2")), strict=True)),
        row["track_frames"],
        row["confidence"],
    )  # fmt: skip
