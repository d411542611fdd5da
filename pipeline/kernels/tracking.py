"""Anonymisation-gap finder: a multi-object tracker per video, SORT / ByteTrack style.

A face or plate tracked up to frame f and again from frame f + j + 1, but detected in none of
the j frames between (1 <= j <= ``max_gap``) while its predicted box stayed in the frame, was
most likely not anonymised in those j frames.

The tracker, fed in frame order:

* **Motion model**: a Kalman filter with constant velocity on each box edge (``x1, y1, x2, y2``
  and their velocities). Its noises are diagonal, so the 8-state filter of SORT / ByteTrack
  splits exactly into four independent 2-state (position, velocity) filters, kept as columns of
  arrays over all tracks; noises scale with the box's width (x edges) or height (y edges), as in
  ByteTrack, so the filter behaves the same for a small plate and a large pedestrian.
* **Association**: IoU between each track's predicted box and the frame's detections, gated by
  label (a face never links to a plate) and by ``min_iou``, solved optimally by
  :func:`scipy.optimize.linear_sum_assignment` on ``1 - IoU``. Detections scoring at least
  ``high_score`` (or without a score) are associated first; ByteTrack's second round offers the
  tracks left over to the low-score detections, which never start tracks.
* **Life cycle**: an unmatched high-score detection starts a tentative track; it is confirmed
  after ``min_hits`` detections in consecutive frames with metadata and dropped at the first
  frame with metadata that misses it before that. A track is dropped once it is unmatched for
  more than ``max_gap`` frames or its predicted centre leaves the frame.
* **Gaps**: a confirmed track matched again after 1..``max_gap`` frames without it, whose
  predicted centre stayed inside the frame in every one of them, reports a :class:`Gap` with the
  predicted box of each missing frame.

The state carries over between :meth:`GapFinder.feed` calls and each frame is handled alone, so
a video can be streamed through it chunk by chunk and the result equals one sequential pass.
Ties are broken by track age and detection position, so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.kernels.matching import box_iou

Box = tuple[float, float, float, float]

# Kalman noises as standard deviations relative to the box's width (x) or height (y): ByteTrack's
# 1/20 (position) and 1/160 (velocity), measurement 1/20, start 2/20 and 10/160; see the README
# "Anonymisation gaps" for the measurements behind them.
_POSITION_NOISE = 1 / 20
_VELOCITY_NOISE = 1 / 40
_MEASUREMENT_NOISE = 1 / 20
_START_POSITION = 2 / 20
_START_VELOCITY = 1 / 4


@dataclass(frozen=True)
class Gap:
    """One anonymisation gap: ``track`` undetected in ``first_missing..last_missing``.

    ``unprocessed`` counts frames of the gap that had no metadata at all; ``box_before`` is the
    track's last detection, ``box_after`` its return; ``iou`` is the overlap of the return with
    the track's prediction for that frame; ``predicted`` holds the predicted box of each missing
    frame (where a reviewer should look); ``track_frames`` counts the frames the track was
    detected in, its return included; ``confidence`` is in [0, 1] (see :func:`gap_confidence`).
    """

    track: int
    label: str | None
    first_missing: int
    last_missing: int
    unprocessed: int
    box_before: Box
    box_after: Box
    iou: float
    predicted: tuple[Box, ...]
    track_frames: int
    confidence: float


class Linked(NamedTuple):
    """What one :meth:`GapFinder.feed` found: the gaps it closed, in frame order, and the track
    of each detection fed (``-1``: not linked, a NaN box or a low-score detection left over)."""

    gaps: list[Gap]
    tracks: np.ndarray


def gap_confidence(iou: float, track_frames: int, missing: int, min_hits: int) -> float:
    """How sure a gap is, in [0, 1]: the return's fit to the prediction (IoU), times the
    evidence of the track (``1 - 2^(-frames / min_hits)``: long tracks are real objects), times
    ``0.9^(missing - 1)`` (a longer blink leans more on the motion model)."""
    return iou * (1 - 2.0 ** (-track_frames / min_hits)) * 0.9 ** (missing - 1)


def _noise(boxes: np.ndarray, weight: float) -> np.ndarray:
    """Per-edge variance ``(weight * size)^2``: width for x edges, height for y edges."""
    width = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    height = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    size = np.stack([width, height, width, height], axis=1)
    return (weight * size) ** 2


def _assign(iou: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one pairs (rows, columns) among the ``allowed`` ones, by least ``1 - iou``.

    When no row or column has two candidates the answer is the candidates themselves; otherwise
    the rows and columns with candidates go to the Hungarian solver."""
    if not allowed.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if (allowed.sum(axis=0) <= 1).all() and (allowed.sum(axis=1) <= 1).all():
        rows, cols = np.nonzero(allowed)
        return rows, cols
    rows = np.flatnonzero(allowed.any(axis=1))
    cols = np.flatnonzero(allowed.any(axis=0))
    sub = allowed[np.ix_(rows, cols)]
    cost = np.where(sub, 1.0 - iou[np.ix_(rows, cols)], 2.0)
    r, c = linear_sum_assignment(cost)
    keep = sub[r, c]
    return rows[r[keep]], cols[c[keep]]


@dataclass
class _Tracks:
    """The live tracks as columns, oldest first (the Kalman state per box edge)."""

    ident: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    label: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    last: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # last detected
    hits: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    box: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))  # last detection
    pos: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))
    vel: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))
    ppp: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))  # covariance blocks
    ppv: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))
    pvv: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))

    def keep(self, mask: np.ndarray) -> None:
        for name, column in vars(self).items():
            setattr(self, name, column[mask])

    def extend(self, other: _Tracks) -> None:
        for name, column in vars(self).items():
            setattr(self, name, np.concatenate([column, getattr(other, name)]))


@dataclass
class GapFinder:
    """Streaming gap finder; call :meth:`feed` with detections in non-decreasing frame order.

    Parameters
    ----------
    min_iou : smallest IoU between a track's predicted box and a detection that links them.
    max_gap : longest gap (in frames) that is still bridged and reported.
    min_hits : detections in consecutive frames that confirm a track (only confirmed tracks
        report gaps).
    high_score : detections scoring below it only extend tracks (ByteTrack's second round).
    """

    min_iou: float = 0.3
    max_gap: int = 3
    min_hits: int = 3
    high_score: float = 0.5
    _tracks: _Tracks = field(default_factory=_Tracks)
    _labels: dict[str | None, int] = field(default_factory=dict)
    _next_track: int = 0
    _last_frame: int | None = None
    _recent_frames: list[int] = field(default_factory=list)  # processed, at most max_gap back

    @property
    def last_frame(self) -> int | None:
        """The last frame linked so far (frames up to it are skipped when fed again)."""
        return self._last_frame

    def feed(
        self,
        frames: np.ndarray,
        labels: list[str | None],
        boxes: np.ndarray,
        frame_ids: np.ndarray,
        scores: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
    ) -> Linked:
        """Link one slice of a video.

        Parameters
        ----------
        frames : (n,) frame of each detection, non-decreasing, all after earlier slices' frames.
        labels : (n,) label of each detection.
        boxes : (n, 4) boxes ``x1, y1, x2, y2``; rows with NaN are not linked.
        frame_ids : every frame id of the slice that had metadata (with or without detections),
            ascending; used to tell frames without detections from frames without metadata.
        scores : (n,) detection scores (NaN or ``None``: unknown, taken as high).
        sizes : (len(frame_ids), 2) width and height of each frame (NaN or ``None``: unknown,
            then a track may be predicted anywhere).

        Returns
        -------
        The gaps closed by this slice and the track of each detection.
        """
        frames = np.asarray(frames, dtype=np.int64)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        count = len(frames)
        score = np.full(count, np.nan) if scores is None else np.asarray(scores, np.float64)
        high = ~(score < self.high_score)  # NaN counts as high
        codes = np.array([self._labels.setdefault(x, len(self._labels)) for x in labels], np.int64)
        usable = np.asarray(~np.isnan(boxes).any(axis=1))
        ids = np.asarray(frame_ids, dtype=np.int64)
        size = np.full((len(ids), 2), np.nan) if sizes is None else np.asarray(sizes, np.float64)
        starts: list[int] = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]).tolist()
        bounds = [*starts, count] if count else []
        spans = {int(frames[s]): (s, e) for s, e in pairwise(bounds)}
        gaps: list[Gap] = []
        track_of = np.full(count, -1, np.int64)
        for position, frame in enumerate(ids.tolist()):
            if self._last_frame is not None and frame <= self._last_frame:
                continue  # already seen (overlapping chunks): the first copy counts
            previous = self._last_frame
            self._last_frame = frame
            self._recent_frames = [f for f in self._recent_frames if f >= frame - self.max_gap]
            self._recent_frames.append(frame)
            span = spans.get(frame)
            if span is None:
                continue
            index = np.arange(*span)[usable[span[0] : span[1]]]
            if len(index):
                width, height = size[position]
                gaps += self._step(frame, previous, (width, height), index, boxes, codes, high,
                                   labels, track_of)  # fmt: skip
        return Linked(gaps, track_of)

    def _predict(self, frame: int) -> tuple[np.ndarray, ...]:
        """Every track's predicted box and covariance blocks at ``frame``."""
        t = self._tracks
        dt = (frame - t.last).astype(np.float64)[:, np.newaxis]
        q_pos = _noise(t.pos, _POSITION_NOISE) * dt
        q_vel = _noise(t.pos, _VELOCITY_NOISE) * dt
        pos = t.pos + dt * t.vel
        ppp = t.ppp + 2 * dt * t.ppv + dt * dt * t.pvv + q_pos
        ppv = t.ppv + dt * t.pvv
        pvv = t.pvv + q_vel
        return pos, ppp, ppv, pvv

    def _step(
        self,
        frame: int,
        previous: int | None,
        size: tuple[float, float],
        index: np.ndarray,
        boxes: np.ndarray,
        codes: np.ndarray,
        high: np.ndarray,
        labels: list[str | None],
        track_of: np.ndarray,
    ) -> list[Gap]:
        t = self._tracks
        # Tracks that can no longer be matched: too long unseen, tentative and missed a frame.
        alive = frame - t.last <= self.max_gap + 1
        alive &= (t.hits >= self.min_hits) | (t.last == previous)
        pos, ppp, ppv, pvv = self._predict(frame)
        alive &= _inside(pos, size)
        if not alive.all():
            t.keep(alive)
            pos, ppp, ppv, pvv = pos[alive], ppp[alive], ppv[alive], pvv[alive]
        det = boxes[index]
        iou = box_iou(pos, det)
        allowed = (iou >= self.min_iou) & (iou > 0) & (t.label[:, None] == codes[index][None, :])
        is_high = high[index]
        rows_a, cols_a = _assign(iou, allowed & is_high[None, :])
        free = np.ones(len(t.ident), bool)
        free[rows_a] = False
        rest = allowed & ~is_high[None, :] & free[:, None]
        rows_b, cols_b = _assign(iou, rest)
        rows = np.concatenate([rows_a, rows_b])
        cols = np.concatenate([cols_a, cols_b])
        order = np.argsort(rows, kind="stable")
        rows, cols = rows[order], cols[order]
        gaps = self._gaps(frame, size, rows, cols, det, iou, pos, index, labels)
        # Kalman update of the matched tracks.
        z = det[cols]
        r = _noise(z, _MEASUREMENT_NOISE)
        s = ppp[rows] + r
        gain_p, gain_v = ppp[rows] / s, ppv[rows] / s
        innovation = z - pos[rows]
        t.pos[rows] = pos[rows] + gain_p * innovation
        t.vel[rows] = t.vel[rows] + gain_v * innovation
        t.pvv[rows] = pvv[rows] - gain_v * ppv[rows]
        t.ppp[rows] = (1 - gain_p) * ppp[rows]
        t.ppv[rows] = (1 - gain_p) * ppv[rows]
        t.hits[rows] += 1
        t.last[rows] = frame
        t.box[rows] = z
        track_of[index[cols]] = t.ident[rows]
        # Unmatched high-score detections start tentative tracks.
        unmatched = np.ones(len(index), bool)
        unmatched[cols] = False
        new = np.flatnonzero(unmatched & is_high)
        if len(new):
            self._start(frame, det[new], codes[index[new]])
            track_of[index[new]] = self._tracks.ident[-len(new) :]
        return gaps

    def _start(self, frame: int, det: np.ndarray, codes: np.ndarray) -> None:
        n = len(det)
        ident = np.arange(self._next_track, self._next_track + n, dtype=np.int64)
        self._next_track += n
        one = np.ones(n, np.int64)
        self._tracks.extend(
            _Tracks(
                ident=ident,
                label=codes,
                last=one * frame,
                hits=one,
                box=det.copy(),
                pos=det.copy(),
                vel=np.zeros_like(det),
                ppp=_noise(det, _START_POSITION),
                ppv=np.zeros_like(det),
                pvv=_noise(det, _START_VELOCITY),
            )
        )

    def _gaps(
        self,
        frame: int,
        size: tuple[float, float],
        rows: np.ndarray,
        cols: np.ndarray,
        det: np.ndarray,
        iou: np.ndarray,
        pos: np.ndarray,
        index: np.ndarray,
        labels: list[str | None],
    ) -> list[Gap]:
        """Gaps closed by the matches ``rows``-``cols`` (before the tracks are updated)."""
        t = self._tracks
        returning = (frame - t.last[rows] > 1) & (t.hits[rows] >= self.min_hits)
        gaps = []
        for row, col in zip(rows[returning].tolist(), cols[returning].tolist(), strict=True):
            last = int(t.last[row])
            steps = np.arange(1, frame - last, dtype=np.float64)[:, np.newaxis]
            predicted = t.pos[row] + steps * t.vel[row]
            if not _inside(predicted, size).all():
                continue  # predicted out of view in some missing frame: not a gap
            first, end = last + 1, frame - 1
            missing = end - first + 1
            processed = sum(1 for f in self._recent_frames if first <= f <= end)
            hits = int(t.hits[row]) + 1
            fit = float(iou[row, col])
            gaps.append(
                Gap(
                    track=int(t.ident[row]),
                    label=labels[int(index[col])],
                    first_missing=first,
                    last_missing=end,
                    unprocessed=missing - processed,
                    box_before=_box(t.box[row]),
                    box_after=_box(det[col]),
                    iou=fit,
                    predicted=tuple(_box(b) for b in predicted),
                    track_frames=hits,
                    confidence=gap_confidence(fit, hits, missing, self.min_hits),
                )
            )
        return gaps


def _inside(boxes: np.ndarray, size: tuple[float, float]) -> np.ndarray:
    """Whether each box's centre lies inside a frame of ``size`` (unknown size: everywhere)."""
    width, height = size
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = np.ones(len(boxes), bool)
    if width == width:  # not NaN
        inside &= (cx >= 0) & (cx < width)
    if height == height:
        inside &= (cy >= 0) & (cy < height)
    return inside


def _box(row: np.ndarray) -> Box:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
