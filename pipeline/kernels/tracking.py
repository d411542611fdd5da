"""Anonymisation-gap finder: link detections across frames, report objects that blink out.

A face or plate detected in frame f and again in frame f + j + 1, but in none of the j frames
between (1 <= j <= ``max_gap``), was most likely not anonymised in those j frames.

Linking is greedy IoU per label: at each frame, the tracks of a label that were last seen at
most ``max_gap + 1`` frames earlier are paired with the frame's detections of that label, best IoU
first (ties: older track id, then detection position), when the IoU reaches ``min_iou``.
Unpaired detections start new tracks. The finder is fed in frame order and keeps only the
tracks that can still be linked, so a video can be streamed through it chunk by chunk and the
result equals one sequential pass over the whole video.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from pipeline.kernels.matching import box_iou


@dataclass
class _Track:
    track_id: int
    last_frame: int
    box: np.ndarray  # (4,)


@dataclass(frozen=True)
class Gap:
    """One blink: ``track`` absent in ``first_missing..last_missing`` (inclusive) and seen on
    both sides. ``unprocessed`` counts frames of the blink that had no metadata at all."""

    track: int
    label: str | None
    first_missing: int
    last_missing: int
    unprocessed: int
    box_before: tuple[float, float, float, float]
    box_after: tuple[float, float, float, float]
    iou: float


@dataclass
class GapFinder:
    """Streaming gap finder; call :meth:`feed` with detections in non-decreasing frame order.

    Parameters
    ----------
    min_iou : smallest IoU that links a detection to a track.
    max_gap : longest blink (in frames) that is still linked and reported.
    """

    min_iou: float = 0.3
    max_gap: int = 3
    _tracks: dict[str | None, list[_Track]] = field(default_factory=dict)
    _next_track: int = 0
    _last_frame: int | None = None
    _recent_frames: deque[int] = field(default_factory=deque)

    @property
    def last_frame(self) -> int | None:
        """The last frame linked so far (frames up to it are skipped when fed again)."""
        return self._last_frame

    def feed(
        self, frames: np.ndarray, labels: list[str | None], boxes: np.ndarray, frame_ids: np.ndarray
    ) -> list[Gap]:
        """Link one slice of a video.

        Parameters
        ----------
        frames : (n,) frame of each detection, non-decreasing, all after earlier slices' frames.
        labels : (n,) label of each detection.
        boxes : (n, 4) boxes ``x1, y1, x2, y2``; rows with NaN are not linked.
        frame_ids : every frame id of the slice that had metadata (with or without detections),
            ascending; used to tell frames without detections from frames without metadata.

        Returns
        -------
        The gaps closed by this slice, in frame order.
        """
        gaps: list[Gap] = []
        frames = np.asarray(frames, dtype=np.int64)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        usable = np.asarray(~np.isnan(boxes).any(axis=1))
        starts: list[int] = (
            np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]).tolist() if len(frames) else []
        )
        bounds = [*starts, len(frames)]
        detection_frames = {int(frames[s]): (s, e) for s, e in pairwise(bounds)}
        for frame in np.asarray(frame_ids, dtype=np.int64).tolist():
            if self._last_frame is not None and frame <= self._last_frame:
                continue  # already seen (overlapping chunks): the first copy counts
            self._last_frame = frame
            self._recent_frames.append(frame)
            while self._recent_frames and self._recent_frames[0] < frame - self.max_gap - 1:
                self._recent_frames.popleft()
            span = detection_frames.get(frame)
            if span is None:
                continue
            selected = [i for i in range(*span) if usable[i]]
            by_label: dict[str | None, list[int]] = {}
            for i in selected:
                by_label.setdefault(labels[i], []).append(i)
            for label, indices in by_label.items():
                gaps.extend(self._link(frame, label, indices, boxes))
        return gaps

    def _link(
        self, frame: int, label: str | None, indices: list[int], boxes: np.ndarray
    ) -> list[Gap]:
        horizon = frame - self.max_gap - 1
        tracks = [t for t in self._tracks.get(label, []) if t.last_frame >= horizon]
        gaps = []
        taken_tracks: set[int] = set()
        taken_detections: set[int] = set()
        if tracks:
            iou = box_iou(np.stack([t.box for t in tracks]), boxes[indices])
            ids = np.array([t.track_id for t in tracks])
            # Candidate pairs found and ordered in numpy: a crowded frame has thousands.
            tis, dis = np.nonzero((iou >= self.min_iou) & (iou > 0))
            order = np.lexsort((dis, ids[tis], -iou[tis, dis]))
            for ti, di in zip(tis[order].tolist(), dis[order].tolist(), strict=True):
                if ti in taken_tracks or di in taken_detections:
                    continue
                taken_tracks.add(ti)
                taken_detections.add(di)
                track = tracks[ti]
                box = boxes[indices[di]]
                if frame - track.last_frame > 1:
                    gaps.append(self._gap(track, label, frame, box, float(iou[ti, di])))
                track.last_frame = frame
                track.box = box
        for di, index in enumerate(indices):
            if di not in taken_detections:
                tracks.append(_Track(self._next_track, frame, boxes[index]))
                self._next_track += 1
        self._tracks[label] = tracks
        return gaps

    def _gap(
        self, track: _Track, label: str | None, frame: int, box: np.ndarray, iou: float
    ) -> Gap:
        first, last = track.last_frame + 1, frame - 1
        processed = sum(1 for f in self._recent_frames if first <= f <= last)
        return Gap(
            track=track.track_id,
            label=label,
            first_missing=first,
            last_missing=last,
            unprocessed=(last - first + 1) - processed,
            box_before=(
                float(track.box[0]),
                float(track.box[1]),
                float(track.box[2]),
                float(track.box[3]),
            ),
            box_after=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            iou=iou,
        )
