"""An independent, whole-video reference for the video metadata tables and the gap finder.

Nothing here calls the product: chunk files are read with :func:`json.loads` (which accepts the
``NaN`` literals Python writes), file names are split with a regex of their own, and the README's
linking rule is written out as one sequential pass over each whole video:

* a video's chunks are ordered by the start frame of their name (then end frame, then path);
* the first copy of a frame counts (earlier chunk, then earlier position in the file);
* a frame is linked when its counted copy sits in a chunk whose name starts at or before it;
* at each frame, per ``type_label``, the tracks last seen at most ``max_gap + 1`` frames earlier
  are paired greedily with the frame's detections by box IoU, best first, ties by older track,
  then by detection position; a pair needs ``IoU >= min_iou`` and ``IoU > 0``; detections left
  over start new tracks; detections without four finite bbox numbers are never linked;
* a track linked again after 1..max_gap frames without it is a gap; ``unprocessed`` counts the
  gap's frames that are not linked.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Box = tuple[float, float, float, float]

CHUNK_NAME = re.compile(r"^(.+)-(\d+)-(\d+)\.json$")


@dataclass(frozen=True)
class RefGap:
    """One expected row of ``gaps/`` (``track`` is the reference's own numbering)."""

    track: int
    label: str | None
    first: int
    last: int
    unprocessed: int
    box_before: Box
    box_after: Box
    iou: float


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
    frames: Iterable[tuple[int, Sequence[tuple[str | None, Box | None]]]],
    *,
    min_iou: float,
    max_gap: int,
) -> list[RefGap]:
    """One sequential pass: ``frames`` are ``(frame id, [(label, box or None), ...])`` with
    strictly increasing ids (every frame that has metadata, with or without detections)."""
    tracks: list[dict[str, Any]] = []  # id, label, last, box; ids ascend = age
    processed: set[int] = set()
    gaps: list[RefGap] = []
    previous: int | None = None
    for frame, detections in frames:
        assert previous is None or frame > previous, "frames must ascend strictly"
        previous = frame
        processed.add(frame)
        labels: list[str | None] = []
        for label, box in detections:
            if box is not None and label not in labels:
                labels.append(label)
        new_tracks: list[tuple[int, str | None, Box]] = []
        for label in labels:
            dets = [(pos, box) for pos, (lab, box) in enumerate(detections)
                    if lab == label and box is not None]  # fmt: skip
            live = [t for t in tracks if t["label"] == label and t["last"] >= frame - max_gap - 1]
            pairs = []
            for t in live:
                for pos, box in dets:
                    value = iou(t["box"], box)
                    if value >= min_iou and value > 0:
                        pairs.append((-value, t["id"], pos, t, box))
            pairs.sort(key=lambda p: (p[0], p[1], p[2]))
            used_tracks: set[int] = set()
            used_dets: set[int] = set()
            for negative, track_id, pos, t, box in pairs:
                if track_id in used_tracks or pos in used_dets:
                    continue
                used_tracks.add(track_id)
                used_dets.add(pos)
                if frame - t["last"] > 1:
                    first, last = t["last"] + 1, frame - 1
                    unprocessed = sum(1 for f in range(first, last + 1) if f not in processed)
                    gaps.append(
                        RefGap(track_id, label, first, last, unprocessed, t["box"], box, -negative)
                    )
                t["last"], t["box"] = frame, box
            new_tracks += [(pos, label, box) for pos, box in dets if pos not in used_dets]
        for _, label, box in sorted(new_tracks, key=lambda n: n[0]):
            tracks.append({"id": len(tracks), "label": label, "last": frame, "box": box})
    return gaps


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
) -> list[tuple[int, list[dict[str, Any]], RefChunk]]:
    """A video's linkable frames in frame order: the first copy counts, and it is linked when
    its chunk starts at or before it.

    Each entry is ``(frame id, raw detections, chunk)``; a frame whose ``detections`` is not a
    list has metadata but no detections."""
    chosen: dict[int, tuple[list[dict[str, Any]], RefChunk, bool]] = {}
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
            chosen[frame] = (dets, chunk, frame >= chunk.start)
    return [(f, dets, chunk) for f, (dets, chunk, linked) in sorted(chosen.items()) if linked]


def fleet_chunks(root: Path) -> dict[str, list[RefChunk]]:
    """Every chunk file under ``root`` grouped by media."""
    videos: dict[str, list[RefChunk]] = {}
    for path in sorted(root.rglob("*.json")):
        chunk = chunk_of(path.relative_to(root).as_posix())
        if chunk is not None:
            videos.setdefault(chunk.media, []).append(chunk)
    return videos


def reference_gaps(root: Path, *, min_iou: float, max_gap: int) -> dict[str, list[RefGap]]:
    """Per media, the gaps one sequential pass over the whole video finds."""
    result = {}
    for media, chunks in fleet_chunks(root).items():
        frames = [
            (frame, [(label_of(d), usable_box(d)) for d in detections])
            for frame, detections, _ in video_frames(root, chunks)
        ]
        result[media] = link(frames, min_iou=min_iou, max_gap=max_gap)
    return result


def gap_key(media: str, gap: RefGap) -> tuple[Any, ...]:
    """A gap without its track number, comparable with :func:`row_key` of a ``gaps/`` row."""
    return (media, gap.label, gap.first, gap.last, gap.unprocessed, gap.box_before,
            gap.box_after, gap.iou)  # fmt: skip


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """A ``gaps/`` row in the shape of :func:`gap_key`."""
    return (
        row["media"], row["type_label"], row["first_missing_frame"], row["last_missing_frame"],
        row["frames_without_metadata"],
        tuple(row[f"before_{c}"] for c in ("x1", "y1", "x2", "y2")),
        tuple(row[f"after_{c}"] for c in ("x1", "y1", "x2", "y2")),
        row["iou"],
    )  # fmt: skip
