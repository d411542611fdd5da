"""Deterministic sample Celantur video metadata fleets, with ground truth.

:func:`make_video_fleet` writes the per-frame metadata the Celantur container produces for videos
(SPEC 2.4): ``<video name>-<startframe>-<endframe>.json`` chunks (end frame inclusive, at most 500
frames each), every chunk a JSON array of frames. It returns what it wrote and planted as
:class:`VideoFleet`. It serves the tests, the benchmarks and the demo, so the same arguments
always give byte-identical files.

Layout of the default fleet (``videos=4``, ``frames_per_video=1300``, ``chunk_frames=500``;
further videos go to ``front.cam-7``, ``clip.0003-b`` and then ``extra.cam-NNN`` names)::

    #   folder               video              chunks written               quirks
    0   fleet-a/day.1        cam-02             0-499, 1000-1299,            missing range 500-999,
                                                corrupt 1300-1799            corrupt chunk
    1   fleet-a/day.1        my-clip.mp4        0-499, 500-999, 1000-1299    duplicate frame,
                                                                             NaN score
    2   fleet-b/2024-05-01   drive-2024-05-01   0-499, 500-1009 (510 fr.),   oversized chunk
                                                1010-1299
    3   fleet-b/run.2        v1-1-1             0-498 (holds 0-499),         out-of-range frame,
                                                500-999, 1000-1299           "is_anonymized"

Quirk ``k`` of (missing range, duplicate frame, oversized chunk, out-of-range frame, corrupt
chunk, NaN score) goes to video ``k % videos``, so from six videos on each quirk has a video of
its own; ``"is_anonymized"`` (instead of the product's ``"is_anonymised"``) is spelled in the
last video. The missing range is a video's second chunk (its first one when a single video holds
every quirk); the out-of-range frame is the last frame of the first chunk (of the last chunk when
the first one is missing), the file name's range ending one frame early; the NaN score (on a
detection of object 0) and the duplicated frame lie in the middle half of the first and the last
written chunk; the corrupt chunk is truncated JSON named for the ``chunk_frames`` frames after
the video's end. With ``folder_names=False`` every video is written to the root.

Frames: ``{"id", "detections", "size": [height, width], "duration"}`` (``size`` in the order of
the product's own example, so a bbox ``x2`` may exceed ``size[0]``); detections as in the product:
``id`` (sequential from 0 within the frame), ``parent_image`` (the frame id), ``offset``
(``[x1, y1]``), ``bbox`` (``[x1, y1, x2, y2]``, integers inside the frame), ``type`` (103 face,
104 license plate, 102 person), ``score`` (0.5..1), ``is_anonymised``, ``type_label`` and
``"color": null``.

Content: each video has 2..6 objects, each of one type, with a box of 20..60 px that moves at
constant velocity (at most 0.4 px per frame) plus up to half a pixel of jitter, always inside the
frame, over an interval of frames (object 0 over the whole video; others may start late or leave
for good). Consecutive boxes of one object have IoU > 0.5, also across a planted gap; boxes of
two different objects (of any type) have IoU < 0.1 in every pair of frames at most 4 apart while
both are visible or within 6 frames of being visible, so greedy IoU linking cannot confuse them.

Planted gaps: per video 2..4 flickers where one object is absent for 1..3 consecutive frames and
then reappears, after the object's first ``SEEN_BEFORE_GAP`` visible frames (a tracker confirms
a track first) and never at its last visible frame. Every video plants its first gap across
a chunk boundary (absent in the last frame of one chunk file and the first frame of the next)
when it has a boundary clear of quirks, so a fleet whose videos span more than one chunk (always
the case with quirks) has at least one such gap. No object is absent otherwise.
Gaps (with the frames before and after them) keep :data:`QUIRK_MARGIN` frames away from every
quirk frame and every other gap, and never touch a missing range.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "OVERSIZED_FRAMES",
    "QUIRK_MARGIN",
    "SEEN_BEFORE_GAP",
    "PlantedGap",
    "SampleChunk",
    "SampleVideo",
    "VideoFleet",
    "make_video_fleet",
]

#: Frames in the oversized chunk (the product writes at most 500 frames per file).
OVERSIZED_FRAMES = 510
#: Smallest distance (frames) between a gap's span (the missing frames plus the frame before and
#: the frame after) and any quirk frame, missing range or other gap of the same video.
QUIRK_MARGIN = 8
#: Longest planted gap in frames.
MAX_GAP = 3
#: Frames an object is visible before any gap of it (the gap tracker's default ``min_hits``).
SEEN_BEFORE_GAP = 3
#: Largest speed of an object's box in pixels per frame along each axis.
MAX_SPEED = 0.4
#: Shortest chunk whose middle half keeps a quirk frame clear of straddling gaps at its edges.
_MIN_TAIL = 4 * (QUIRK_MARGIN + MAX_GAP + 2)

#: ``(type_label, type code)`` of the object types.
VIDEO_TYPES: tuple[tuple[str, int], ...] = (("face", 103), ("license plate", 104), ("person", 102))

_QUIRKS = ("missing", "duplicate", "oversized", "out_of_range", "corrupt", "nan")
_FIXED_VIDEOS: tuple[tuple[str, str], ...] = (
    ("fleet-a/day.1", "cam-02"),
    ("fleet-a/day.1", "my-clip.mp4"),
    ("fleet-b/2024-05-01", "drive-2024-05-01"),
    ("fleet-b/run.2", "v1-1-1"),
    ("", "front.cam-7"),
    ("fleet-a/day.2", "clip.0003-b"),
)
_EXTRA_FOLDERS: tuple[str, ...] = ("fleet-a/day.1", "fleet-a/day.2", "fleet-b/run.2", "")
# Frames around an object's visible interval in which other objects must stay clear of it, and
# the largest frame distance between two boxes compared (a gap of 3 spans 4 frames).
_NEAR_FRAMES = 6
_LINK_FRAMES = MAX_GAP + 1
_MAX_IOU = 0.1

Box = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------
# Public ground truth
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlantedGap:
    """One planted flicker: an object absent in a few consecutive frames, present around them.

    Attributes
    ----------
    type_label : the object's ``type_label`` (``"face"``, ``"license plate"``, ``"person"``).
    first_missing_frame, last_missing_frame : the absent frames (inclusive, 1..3 frames).
    bbox_before : the object's (x1, y1, x2, y2) in frame ``first_missing_frame - 1``.
    bbox_after : the object's (x1, y1, x2, y2) in frame ``last_missing_frame + 1``.
    """

    type_label: str
    first_missing_frame: int
    last_missing_frame: int
    bbox_before: Box
    bbox_after: Box


@dataclass(frozen=True)
class SampleChunk:
    """One chunk file.

    Attributes
    ----------
    path : POSIX path relative to the fleet root.
    start, end : the frame range the file name states (end inclusive).
    frames : the frame ids written, in file order (a duplicated frame appears twice, an
        out-of-range frame lies outside ``start..end``); empty for a corrupt chunk.
    corrupt : the file is truncated JSON (it names a range beyond the video's end).
    """

    path: str
    start: int
    end: int
    frames: tuple[int, ...]
    corrupt: bool = False


@dataclass(frozen=True)
class SampleVideo:
    """One video and its chunk files.

    Attributes
    ----------
    name : the video name (the chunk file names minus ``-<start>-<end>.json``).
    folder : POSIX folder relative to the fleet root, ``""`` for the root itself.
    chunks : the chunk files written, ordered by start frame, a corrupt chunk last.
    frame_count : frames of the video (ids ``0..frame_count - 1``), including missing ones.
    gaps : the planted gaps, ordered by first missing frame.
    missing_ranges : inclusive frame ranges whose chunk file was not written.
    duplicate_frames : frame ids written twice (the second copy identical).
    out_of_range_frames : frame ids written to a chunk whose name range does not hold them.
    nan_scores : detections whose ``score`` is NaN.
    detections : detections in the readable chunks (the duplicated frame's counted twice).
    objects : moving objects of the video.
    anonymised_key : spelling of the anonymised flag in this video's detections.
    """

    name: str
    folder: str
    chunks: tuple[SampleChunk, ...]
    frame_count: int
    gaps: tuple[PlantedGap, ...]
    missing_ranges: tuple[tuple[int, int], ...] = ()
    duplicate_frames: tuple[int, ...] = ()
    out_of_range_frames: tuple[int, ...] = ()
    nan_scores: int = 0
    detections: int = 0
    objects: int = 0
    anonymised_key: str = "is_anonymised"


@dataclass(frozen=True)
class VideoFleet:
    """A written fleet of video metadata.

    Attributes
    ----------
    root : the fleet's root folder.
    videos : one entry per video, in generation order.
    files : every file written, as sorted POSIX paths relative to ``root``.
    """

    root: Path
    videos: tuple[SampleVideo, ...]
    files: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Track:
    """One object: its type, visible interval and its box in every frame of the video."""

    type_index: int
    first: int
    last: int
    boxes: npt.NDArray[np.int64]  # (frames, 4), also defined outside first..last


def _iou(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Row-wise IoU of two (n, 4) box arrays."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = (w * h).astype(np.float64)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


def _box_size(
    type_index: int, width: int, height: int, rng: np.random.Generator
) -> tuple[int, int]:
    label = VIDEO_TYPES[type_index][0]
    if label == "face":
        bw = int(rng.integers(20, 41))
        bh = round(bw * rng.uniform(1.1, 1.4))
    elif label == "license plate":
        bw = int(rng.integers(30, 61))
        bh = int(rng.integers(20, 25))
    else:
        bw = int(rng.integers(20, 37))
        bh = int(rng.integers(40, 61))
    return min(bw, max(20, width // 4)), min(bh, 60, max(20, height // 3))


def _axis(
    first: int, last: int, extent: int, box: int, frames: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Box start along one axis in every frame: constant velocity plus jitter, inside the frame.

    The start ``a`` and the velocity keep ``a + v * (t - first)`` within ``[1, extent - box - 1]``
    over ``first..last``, so half a pixel of jitter and rounding stay within ``[0, extent - box]``.
    """
    high = max(1.0, extent - box - 1.0)
    start = rng.uniform(1.0, high)
    target = rng.uniform(1.0, high)
    speed = float(np.clip((target - start) / max(1, last - first), -MAX_SPEED, MAX_SPEED))
    t = np.arange(frames, dtype=np.float64)
    pos = start + speed * (t - first) + rng.uniform(-0.5, 0.5, size=frames)
    return np.clip(np.rint(pos), 0, extent - box).astype(np.int64)


def _candidate(
    index: int, frames: int, width: int, height: int, rng: np.random.Generator
) -> _Track:
    type_index = int(rng.integers(len(VIDEO_TYPES)))
    bw, bh = _box_size(type_index, width, height, rng)
    min_len = max(20, frames // 4)
    if index == 0 or rng.random() < 0.35:
        first, last = 0, frames - 1
    elif rng.random() < 0.5:
        first, last = 0, int(rng.integers(min_len - 1, frames - 1))
    else:
        first = int(rng.integers(1, max(2, frames - min_len)))
        last = frames - 1 if rng.random() < 0.5 else int(rng.integers(first + min_len - 1, frames))
    last = min(max(last, first + min_len - 1), frames - 1)
    x1 = _axis(first, last, width, bw, frames, rng)
    y1 = _axis(first, last, height, bh, frames, rng)
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
    return _Track(type_index, first, last, boxes)


def _clear(a: _Track, b: _Track, frames: int) -> bool:
    """Whether two objects stay apart: IoU < 0.1 for all frame pairs at most 4 frames apart
    in which both are visible or near their visible interval."""
    lo = max(a.first, b.first) - _NEAR_FRAMES
    hi = min(a.last, b.last) + _NEAR_FRAMES
    lo, hi = max(lo, 0), min(hi, frames - 1)
    if lo > hi:
        return True
    for shift in range(-_LINK_FRAMES, _LINK_FRAMES + 1):
        s, e = max(lo, lo + shift), min(hi, hi + shift)
        if s > e:
            continue
        if _iou(a.boxes[s : e + 1], b.boxes[s - shift : e - shift + 1]).max() >= _MAX_IOU:
            return False
    return True


def _tracks(frames: int, width: int, height: int, rng: np.random.Generator) -> list[_Track]:
    """2..6 objects that keep clear of each other (fewer only if no room is found)."""
    wanted = int(rng.integers(2, 7))
    tracks: list[_Track] = []
    for index in range(wanted):
        for _ in range(200 if index < 2 else 60):
            track = _candidate(index, frames, width, height, rng)
            if all(_clear(track, other, frames) for other in tracks):
                tracks.append(track)
                break
    return tracks


# ---------------------------------------------------------------------------------------------
# Chunks, quirks and gaps
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    start: int  # first frame written (before quirks)
    end: int  # last frame written, inclusive
    written: bool = True


def _chunk_ranges(frames: int, chunk_frames: int, oversized_index: int | None) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    pos = 0
    while pos < frames:
        length = OVERSIZED_FRAMES if len(chunks) == oversized_index else chunk_frames
        end = min(pos + length, frames) - 1
        chunks.append(_Chunk(pos, end))
        pos = end + 1
    return chunks


def _middle(start: int, end: int, rng: np.random.Generator) -> int:
    """A frame from the middle half of ``start..end``."""
    quarter = (end - start) // 4
    return int(rng.integers(start + quarter, end - quarter + 1))


@dataclass
class _GapPlanner:
    """Plants gaps that keep ``QUIRK_MARGIN`` frames away from blocked frames and each other."""

    tracks: list[_Track]
    blocked: list[tuple[int, int]]  # inclusive frame ranges gaps must keep away from
    gaps: list[tuple[int, int, int]]  # (track index, first missing, last missing)

    def fits(self, track: int, first: int, last: int) -> bool:
        obj = self.tracks[track]
        if first < obj.first + SEEN_BEFORE_GAP or last >= obj.last:
            return False
        lo, hi = first - 1 - QUIRK_MARGIN, last + 1 + QUIRK_MARGIN
        spans = self.blocked + [(f - 1, m + 1) for _, f, m in self.gaps]
        return all(hi < s or lo > e for s, e in spans)

    def add(self, track: int, first: int, last: int) -> None:
        self.gaps.append((track, first, last))


def _plan_gaps(
    tracks: list[_Track],
    chunks: list[_Chunk],
    blocked: list[tuple[int, int]],
    rng: np.random.Generator,
) -> list[tuple[int, int, int]]:
    planner = _GapPlanner(tracks, blocked, [])
    wanted = int(rng.integers(2, 5))
    # First a gap across a chunk boundary (last frame of one file, first frame of the next).
    options: list[tuple[int, int, int]] = []
    for before, after in pairwise(chunks):
        if not (before.written and after.written):
            continue
        for length in (2, 3):
            for first in range(before.end - length + 2, before.end + 1):
                for track in range(len(tracks)):
                    if planner.fits(track, first, first + length - 1):
                        options.append((track, first, first + length - 1))
    if options:
        planner.add(*options[int(rng.integers(len(options)))])
    # Then anywhere.
    for _ in range(1000):
        if len(planner.gaps) >= wanted:
            break
        track = int(rng.integers(len(tracks)))
        length = int(rng.integers(1, MAX_GAP + 1))
        obj = tracks[track]
        if obj.last - obj.first < length + 2:
            continue
        first = int(rng.integers(obj.first + 1, obj.last - length + 1))
        if planner.fits(track, first, first + length - 1):
            planner.add(track, first, first + length - 1)
    return sorted(planner.gaps, key=lambda gap: gap[1])


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _dump(frames: list[dict[str, object]]) -> bytes:
    return (json.dumps(frames, indent=2, allow_nan=True) + "\n").encode()


def _write_video(
    root: Path,
    index: int,
    folder: str,
    name: str,
    quirks: frozenset[str],
    *,
    seed: int,
    frames: int,
    chunk_frames: int,
    width: int,
    height: int,
    anonymised_key: str,
) -> tuple[SampleVideo, list[str]]:
    rng = np.random.default_rng([seed, index])
    tracks = _tracks(frames, width, height, rng)

    # Chunk layout and quirk frames.
    # The missing chunk is the second one, or the first one in a video holding every quirk (a
    # lone video), so that one chunk boundary stays clear of quirks for a straddling gap.
    missing_index = None
    if "missing" in quirks:
        missing_index = 0 if len(quirks) == len(_QUIRKS) else 1
    oversized_index = None
    if "oversized" in quirks:
        oversized_index = 0 if missing_index == 1 else 1
    chunks = _chunk_ranges(frames, chunk_frames, oversized_index)
    blocked: list[tuple[int, int]] = []
    missing: tuple[int, int] | None = None
    if missing_index is not None:
        chunk = chunks[missing_index]
        chunks[missing_index] = _Chunk(chunk.start, chunk.end, written=False)
        missing = (chunk.start, chunk.end)
        blocked.append(missing)
    written_chunks = [chunk for chunk in chunks if chunk.written]
    # The out-of-range frame is the last frame of the first chunk (of the last one when the first
    # chunk is missing): the file name's range ends one frame early.
    out_of_range_index = None
    if "out_of_range" in quirks:
        out_of_range_index = 0
        if missing_index == 0:
            out_of_range_index = len(chunks) - 1
            if chunks[-1].end == chunks[-1].start:  # a one-frame name range cannot end early
                out_of_range_index -= 1
    out_of_range = chunks[out_of_range_index].end if out_of_range_index is not None else None
    # The NaN score and the duplicated frame sit in the middle half of the first and the last
    # written chunk (the one before it when the last one is too short to keep its boundary free).
    nan_frame = None
    if "nan" in quirks:
        nan_frame = _middle(written_chunks[0].start, written_chunks[0].end, rng)
    duplicate = None
    if "duplicate" in quirks:
        last = written_chunks[-1]
        if last.end - last.start + 1 < _MIN_TAIL:
            last = written_chunks[-2]
        duplicate = _middle(last.start, last.end, rng)
        if duplicate == nan_frame:
            duplicate += 1
    blocked += [(f, f) for f in (out_of_range, duplicate, nan_frame) if f is not None]

    planned = _plan_gaps(tracks, chunks, blocked, rng)
    absent: set[tuple[int, int]] = {
        (track, f) for track, first, last in planned for f in range(first, last + 1)
    }
    scores = rng.uniform(0.5, 1.0, size=(frames, len(tracks)))
    durations = rng.uniform(0.2, 0.5, size=frames)

    def frame_doc(f: int) -> tuple[dict[str, object], int]:
        detections: list[dict[str, object]] = []
        for track_index, track in enumerate(tracks):
            if not track.first <= f <= track.last or (track_index, f) in absent:
                continue
            x1, y1, x2, y2 = (int(v) for v in track.boxes[f])
            label, code = VIDEO_TYPES[track.type_index]
            score = float(scores[f, track_index])
            if f == nan_frame and track_index == 0:
                score = float("nan")
            detections.append(
                {
                    "id": len(detections),
                    "parent_image": f,
                    "offset": [x1, y1],
                    "bbox": [x1, y1, x2, y2],
                    "type": code,
                    "score": score,
                    anonymised_key: True,
                    "type_label": label,
                    "color": None,
                }
            )
        doc: dict[str, object] = {
            "id": f,
            "detections": detections,
            "size": [height, width],
            "duration": float(durations[f]),
        }
        return doc, len(detections)

    folder_path = root / folder if folder else root
    folder_path.mkdir(parents=True, exist_ok=True)
    prefix = f"{folder}/" if folder else ""
    written: list[str] = []
    samples: list[SampleChunk] = []
    detection_count = 0
    for chunk_index, chunk in enumerate(chunks):
        if not chunk.written:
            continue
        docs: list[dict[str, object]] = []
        ids: list[int] = []
        for f in range(chunk.start, chunk.end + 1):
            doc, count = frame_doc(f)
            copies = 2 if f == duplicate else 1
            docs += [doc] * copies
            ids += [f] * copies
            detection_count += count * copies
        name_end = chunk.end - 1 if chunk_index == out_of_range_index else chunk.end
        file_name = f"{name}-{chunk.start}-{name_end}.json"
        (folder_path / file_name).write_bytes(_dump(docs))
        samples.append(SampleChunk(prefix + file_name, chunk.start, name_end, tuple(ids)))
        written.append(prefix + file_name)
    if "corrupt" in quirks:
        start, end = frames, frames + chunk_frames - 1
        beyond = [
            {"id": f, "detections": [], "size": [height, width], "duration": 0.25}
            for f in range(start, min(start + 3, end + 1))
        ]
        text = _dump(beyond)
        file_name = f"{name}-{start}-{end}.json"
        (folder_path / file_name).write_bytes(text[: len(text) * 2 // 3])
        samples.append(SampleChunk(prefix + file_name, start, end, (), corrupt=True))
        written.append(prefix + file_name)

    gaps = tuple(
        PlantedGap(
            type_label=VIDEO_TYPES[tracks[track].type_index][0],
            first_missing_frame=first,
            last_missing_frame=last,
            bbox_before=_box(tracks[track].boxes[first - 1]),
            bbox_after=_box(tracks[track].boxes[last + 1]),
        )
        for track, first, last in planned
    )
    video = SampleVideo(
        name=name,
        folder=folder,
        chunks=tuple(samples),
        frame_count=frames,
        gaps=gaps,
        missing_ranges=(missing,) if missing is not None else (),
        duplicate_frames=(duplicate,) if duplicate is not None else (),
        out_of_range_frames=(out_of_range,) if out_of_range is not None else (),
        nan_scores=1 if nan_frame is not None else 0,
        detections=detection_count,
        objects=len(tracks),
        anonymised_key=anonymised_key,
    )
    return video, written


def _box(row: npt.NDArray[np.int64]) -> Box:
    x1, y1, x2, y2 = (int(v) for v in row)
    return (x1, y1, x2, y2)


def _video_name(index: int) -> tuple[str, str]:
    if index < len(_FIXED_VIDEOS):
        return _FIXED_VIDEOS[index]
    return _EXTRA_FOLDERS[index % len(_EXTRA_FOLDERS)], f"extra.cam-{index:03d}"


def make_video_fleet(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    videos: int = 4,
    frames_per_video: int = 1300,
    chunk_frames: int = 500,
    size: tuple[int, int] = (320, 178),
    quirks: bool = True,
    folder_names: bool = True,
) -> VideoFleet:
    """Write a deterministic fleet of Celantur video metadata chunks and return its ground truth.

    Parameters
    ----------
    root : folder to write into (created if missing; existing files of the same names are
        overwritten, other files are left alone).
    seed : non-negative seed; the same arguments always give byte-identical files.
    videos : number of videos (the layout of the module docstring, then ``extra.cam-NNN``).
    frames_per_video : frames of every video; the default spans three chunks of 500. With
        ``quirks`` at least ``chunk_frames + 562``, so every video spans three chunks even with
        the 510-frame oversized chunk, the third of at least 52 frames; otherwise at least 100.
    chunk_frames : frames per chunk file, 10..500 (the last chunk of a video may be shorter).
    size : (width, height) of the video frames, at least (100, 80); metadata ``size`` is written
        as ``[height, width]``.
    quirks : plant the quirks of the module docstring (missing range, duplicate frame, oversized
        chunk, out-of-range frame, corrupt chunk, NaN score) and the ``"is_anonymized"``
        spelling; without them every chunk is regular and complete.
    folder_names : put the videos into nested folders (else all into ``root``).

    Returns
    -------
    VideoFleet
        What was written and planted: per video its chunks, gaps and quirks.

    Raises
    ------
    ValueError
        For a negative seed or video count, a chunk size outside 10..500, too few frames or a
        frame smaller than 100 x 80.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if videos < 0:
        raise ValueError(f"videos must be >= 0, got {videos}")
    if not 10 <= chunk_frames <= 500:
        raise ValueError(f"chunk_frames must be in 10..500, got {chunk_frames}")
    min_frames = chunk_frames + OVERSIZED_FRAMES + _MIN_TAIL if quirks else 100
    if frames_per_video < min_frames:
        raise ValueError(
            f"frames_per_video must be >= {min_frames} (quirks={quirks}, "
            f"chunk_frames={chunk_frames}), got {frames_per_video}"
        )
    width, height = size
    if width < 100 or height < 80:
        raise ValueError(f"size must be at least (100, 80), got {size!r}")

    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    placed: list[set[str]] = [set() for _ in range(videos)]
    if quirks and videos:
        for k, quirk in enumerate(_QUIRKS):
            placed[k % videos].add(quirk)
    samples: list[SampleVideo] = []
    files: list[str] = []
    for index in range(videos):
        folder, name = _video_name(index)
        anonymised_key = "is_anonymized" if quirks and index == videos - 1 else "is_anonymised"
        sample, written = _write_video(
            root_path,
            index,
            folder if folder_names else "",
            name,
            frozenset(placed[index]),
            seed=seed,
            frames=frames_per_video,
            chunk_frames=chunk_frames,
            width=width,
            height=height,
            anonymised_key=anonymised_key,
        )
        samples.append(sample)
        files += written
    return VideoFleet(root=root_path, videos=tuple(samples), files=tuple(sorted(files)))
