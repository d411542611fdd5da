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
  label (a face never links to a plate) and by ``min_iou``, solved optimally (the Hungarian
  assignment of :func:`scipy.optimize.linear_sum_assignment`) on ``1 - IoU``. Detections
  scoring at least ``high_score`` (or without a score) are associated first; ByteTrack's second
  round offers the tracks left over to the low-score detections, which never start tracks.
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

Speed: the frame loop is one numba kernel (:func:`_link`) over the tracks' state as arrays. A
candidate pair alone in its row and column is taken as it is; the others go to
:func:`solve_assignment`, scipy's ``linear_sum_assignment`` algorithm written again in numba
(a test checks they give the same pairs). Measured on TUD-Stadtmitte, where more than half of
the frames have such conflicts: a numpy loop per frame linked about 50k detections per second,
handing each conflicting frame from the kernel back to scipy about 150k, this 600k-850k. The
frame loop allocates nothing (the assignment works in scratch space made once per call): on the
bench's real tracks that took the kernel from 1.5 to about 0.55 ms. :meth:`GapFinder.link`
links several videos in one call (pass 2 gives it all of a task's videos).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from itertools import chain
from typing import Any, NamedTuple

import numba
import numpy as np

from pipeline.kernels import njit_inlined

Box = tuple[float, float, float, float]

# Kalman noises as standard deviations relative to the box's width (x edges) or height (y
# edges), per frame: position and velocity noise, measurement, and a new track's uncertainty.
# ByteTrack's values, except velocity: its 1/160 (start 10/160) suits 30 fps only; a person at
# 5 fps moves a third of its width per frame, so a new track may move a quarter of its size per
# frame and the velocity adapts 4x faster (README "Anonymisation gaps": the measurements).
_POSITION_NOISE = 1 / 20
_VELOCITY_NOISE = 1 / 40
_MEASUREMENT_NOISE = 1 / 20
_START_POSITION = 2 / 20
_START_VELOCITY = 1 / 4

# Columns of a track's float state: its last detected box, then per box edge the Kalman
# position, velocity and the covariance blocks (position, position-velocity, velocity).
_BOX, _POS, _VEL, _PPP, _PPV, _PVV = 0, 4, 8, 12, 16, 20
_FLOATS = 24
# Columns of a track's integer state: ``_SEEN`` is the number of frames linked before its
# last detection's frame (so the frames with metadata in a gap are a difference of two counts).
_ID, _LABEL, _LAST, _HITS, _SEEN = 0, 1, 2, 3, 4
_INTS = 5
# The state's "no frame linked yet" (the last frame linked of a new video).
_NO_FRAME = -(2**62)
# Why the kernel returned.
_DONE, _FULL = 0, 1


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


@dataclass(frozen=True)
class GapColumns:
    """Gaps as columns, one entry per gap (the fields of :class:`Gap`); ``predicted`` holds
    every gap's predicted boxes one gap after the other (``last_missing - first_missing + 1``
    rows each). What a table of gaps is built from without a Python object per gap."""

    track: np.ndarray  # (k,) int64
    labels: list[str | None]
    first_missing: np.ndarray  # (k,) int64
    last_missing: np.ndarray  # (k,) int64
    unprocessed: np.ndarray  # (k,) int64
    box_before: np.ndarray  # (k, 4)
    box_after: np.ndarray  # (k, 4)
    iou: np.ndarray  # (k,)
    predicted: np.ndarray  # (sum of missing frames, 4)
    track_frames: np.ndarray  # (k,) int64
    confidence: np.ndarray  # (k,)

    def __len__(self) -> int:
        return len(self.track)

    @staticmethod
    def concatenate(parts: Sequence[GapColumns]) -> GapColumns:
        """The gaps of ``parts``, one after the other (at least one part)."""
        columns: dict[str, Any] = {
            column.name: np.concatenate([getattr(part, column.name) for part in parts])
            for column in fields(GapColumns)
            if column.name != "labels"
        }
        labels = list(chain.from_iterable(part.labels for part in parts))
        return GapColumns(labels=labels, **columns)

    def to_gaps(self) -> list[Gap]:
        """One :class:`Gap` per gap."""
        missing = (self.last_missing - self.first_missing + 1).tolist()
        ends = np.cumsum(missing).tolist()
        predicted = list(map(_box, self.predicted.tolist()))
        rows = zip(
            self.track.tolist(), self.labels, self.first_missing.tolist(),
            self.last_missing.tolist(), self.unprocessed.tolist(), self.box_before.tolist(),
            self.box_after.tolist(), self.iou.tolist(), ends, missing,
            self.track_frames.tolist(), self.confidence.tolist(), strict=True,
        )  # fmt: skip
        return [
            Gap(track=ident, label=label, first_missing=gone, last_missing=back,
                unprocessed=unseen, box_before=_box(before), box_after=_box(after), iou=fit,
                predicted=tuple(predicted[end - count : end]), track_frames=frames,
                confidence=confidence)
            for ident, label, gone, back, unseen, before, after, fit, end, count, frames,
            confidence in rows
        ]  # fmt: skip


class Labels(NamedTuple):
    """Detection labels given as each one's position in ``names`` (a column read from a
    dictionary-encoded table): numbered per distinct name, not per detection."""

    codes: np.ndarray  # (n,) integers
    names: Sequence[str | None]


class Linked(NamedTuple):
    """What one :meth:`GapFinder.feed` found: the gaps it closed, in frame order (as columns),
    and the track of each detection fed (``-1``: not linked, a NaN box or a low-score
    detection left over)."""

    found: GapColumns
    tracks: np.ndarray

    @property
    def gaps(self) -> list[Gap]:
        """The gaps closed, one :class:`Gap` each."""
        return self.found.to_gaps()


def gap_confidence(iou: float, track_frames: int, missing: int, min_hits: int) -> float:
    """How sure a gap is, in [0, 1]: the return's fit to the prediction (IoU), times the
    evidence of the track (``1 - 2^(-frames / min_hits)``: long tracks are real objects), times
    ``0.9^(missing - 1)`` (a longer gap leans more on the motion model)."""
    return iou * _evidence(track_frames, min_hits) * _leaning(missing)


def _evidence(track_frames: int, min_hits: int) -> float:
    return 1 - 2.0 ** (-track_frames / min_hits)


def _leaning(missing: int) -> float:
    return 0.9 ** (missing - 1)


def _confidences(
    fits: np.ndarray, track_frames: np.ndarray, missing: np.ndarray, min_hits: int
) -> np.ndarray:
    """:func:`gap_confidence` of each gap, bit for bit: its factors worked out on Python floats
    once per distinct track length and gap length (few), not once per gap."""
    lengths, of_length = np.unique(track_frames, return_inverse=True)
    gaps, of_gap = np.unique(missing, return_inverse=True)
    evidence = np.array([_evidence(n, min_hits) for n in lengths.tolist()], dtype=np.float64)
    leaning = np.array(list(map(_leaning, gaps.tolist())), dtype=np.float64)
    return fits * evidence[of_length] * leaning[of_gap]


@numba.njit(cache=True, nogil=True)
def solve_assignment(cost: Any) -> Any:
    """Minimum-cost one-to-one assignment of a dense (rows, columns) cost matrix with finite
    entries: the column of each row (``-1``: none, when there are more rows than columns).

    The shortest augmenting path algorithm of :func:`scipy.optimize.linear_sum_assignment`
    (Crouse 2016, its tie rules included), written again in numba so the tracker's frame loop
    never leaves compiled code; a test checks both give the same pairs."""
    transposed = cost.shape[0] > cost.shape[1]
    rows, cols = (cost.shape[1], cost.shape[0]) if transposed else cost.shape
    assigned = np.empty(rows, np.int64)
    _augment(cost, rows, cols, transposed, np.empty(rows + 2 * cols),
             np.empty(rows + 3 * cols, np.int64), np.empty(rows + cols, np.bool_),
             assigned)  # fmt: skip
    if not transposed:
        return assigned
    result = np.full(cost.shape[0], -1, np.int64)
    for j in range(rows):
        result[assigned[j]] = j
    return result


@njit_inlined
def _augment(cost: Any, rows: Any, cols: Any, transposed: Any, reals: Any, ints: Any,
             flags: Any, out: Any) -> None:  # fmt: skip
    """:func:`solve_assignment`'s algorithm on ``rows <= cols``: the matrix ``cost[:rows,
    :cols]`` (``transposed``: ``cost[:cols, :rows]`` read transposed); ``out[:rows]``: the
    column of each row. Scratch space, so the frame loop allocates nothing: ``reals`` (at least
    ``rows + 2 * cols``), ``ints`` (``rows + 3 * cols``), ``flags`` (``rows + cols``)."""
    # The scratch's parts: u, v, shortest; path, col4row, row4col, remaining; in rows, in cols.
    u, v, shortest = 0, rows, rows + cols
    path, col4row, row4col, remaining = 0, cols, cols + rows, 2 * cols + rows
    for i in range(rows):
        reals[u + i] = 0.0
        ints[col4row + i] = -1
    for j in range(cols):
        reals[v + j] = 0.0
        ints[path + j] = -1
        ints[row4col + j] = -1
    for current in range(rows):
        for it in range(cols):
            ints[remaining + it] = cols - it - 1
        left = cols
        for i in range(rows):
            flags[i] = False
        for j in range(cols):
            flags[rows + j] = False
            reals[shortest + j] = np.inf
        min_value, sink, i = 0.0, -1, current
        while sink == -1:
            index, lowest = -1, np.inf
            flags[i] = True
            for it in range(left):
                j = ints[remaining + it]
                entry = cost[j, i] if transposed else cost[i, j]
                reduced = min_value + entry - reals[u + i] - reals[v + j]
                if reduced < reals[shortest + j]:
                    ints[path + j], reals[shortest + j] = i, reduced
                if reals[shortest + j] < lowest or (
                    reals[shortest + j] == lowest and ints[row4col + j] == -1
                ):
                    lowest, index = reals[shortest + j], it
            min_value = lowest
            j = ints[remaining + index]
            if ints[row4col + j] == -1:
                sink = j
            else:
                i = ints[row4col + j]
            flags[rows + j] = True
            left -= 1
            ints[remaining + index] = ints[remaining + left]
        reals[u + current] += min_value
        for i in range(rows):
            if flags[i] and i != current:
                reals[u + i] += min_value - reals[shortest + ints[col4row + i]]
        for j in range(cols):
            if flags[rows + j]:
                reals[v + j] -= min_value - reals[shortest + j]
        j = sink
        while True:
            i = ints[path + j]
            ints[row4col + j] = i
            ints[col4row + i], j = j, ints[col4row + i]
            if i == current:
                break
    for i in range(rows):
        out[i] = ints[col4row + i]


@njit_inlined
def _paired(allowed: Any, these: Any, n_these: Any, others: Any, n_others: Any, columns: Any,
            out: Any) -> Any:  # fmt: skip
    """Those of ``these[:n_these]`` (rows of ``allowed``, or its columns when ``columns``) with
    an allowed pair among ``others[:n_others]``, in order, into ``out``; returns how many."""
    kept = 0
    for a in range(n_these):
        for b in range(n_others):
            if allowed[others[b], these[a]] if columns else allowed[these[a], others[b]]:
                out[kept] = these[a]
                kept += 1
                break
    return kept


@njit_inlined
def _assign(iou: Any, allowed: Any, tracks: Any, n_tracks: Any, detections: Any,
            n_detections: Any, out: Any, work: Any) -> None:  # fmt: skip
    """Optimal pairs among the ``allowed`` ones (least ``1 - iou``) of the rows
    ``tracks[:n_tracks]`` and columns ``detections[:n_detections]`` (those without candidates
    left out); ``out[track]`` = column. ``work``: scratch space, made once per :func:`_link`
    call."""
    rows, cols, chosen, cost, reals, ints, flags = work
    n_rows = _paired(allowed, tracks, n_tracks, detections, n_detections, False, rows)
    if n_rows == 0:
        return
    n_cols = _paired(allowed, detections, n_detections, tracks, n_tracks, True, cols)
    for a in range(n_rows):
        for b in range(n_cols):
            # 2: not allowed, worse than any pair
            allow = allowed[rows[a], cols[b]]
            cost[a, b] = 1.0 - iou[rows[a], cols[b]] if allow else 2.0
    if n_rows <= n_cols:
        _augment(cost, n_rows, n_cols, False, reals, ints, flags, chosen)
        for a in range(n_rows):
            if allowed[rows[a], cols[chosen[a]]]:
                out[rows[a]] = cols[chosen[a]]
    else:  # solved transposed: a row for each column
        _augment(cost, n_cols, n_rows, True, reals, ints, flags, chosen)
        for b in range(n_cols):
            if allowed[rows[chosen[b]], cols[b]]:
                out[rows[chosen[b]]] = cols[b]


@njit_inlined
def _size(boxes: Any, row: Any, column: Any, edge: int) -> Any:
    """The width for an x edge (0, 2), the height for a y edge (1, 3) of the box at ``column``
    of ``boxes[row]``; at least 1. (Rows and columns, not a view of the box: a view costs a
    reference count in the kernels' inner loops.)"""
    extent = (
        boxes[row, column + 2] - boxes[row, column]
        if edge % 2 == 0
        else boxes[row, column + 3] - boxes[row, column + 1]
    )
    return max(extent, 1.0)


@njit_inlined
def _keep_live(frame: Any, previous: Any, size: Any, ints: Any, floats: Any, count: Any,
               max_gap: Any, min_hits: Any) -> Any:  # fmt: skip
    """Drop (compacting, oldest first) the tracks that can no longer match at ``frame``: unseen
    for more than ``max_gap`` frames, tentative and missed at ``previous``, or predicted with
    their centre outside the frame. Returns how many are left."""
    kept = 0
    for t in range(count):
        dt = frame - ints[t, _LAST]
        if dt > max_gap + 1 or (ints[t, _HITS] < min_hits and ints[t, _LAST] != previous):
            continue
        # The predicted box's centre, edge by edge (no temporary array per track and frame).
        x1 = floats[t, _POS] + dt * floats[t, _VEL]
        y1 = floats[t, _POS + 1] + dt * floats[t, _VEL + 1]
        x2 = floats[t, _POS + 2] + dt * floats[t, _VEL + 2]
        y2 = floats[t, _POS + 3] + dt * floats[t, _VEL + 3]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if size[0] == size[0] and not 0 <= cx < size[0]:  # x == x: the width is known
            continue
        if size[1] == size[1] and not 0 <= cy < size[1]:
            continue
        for c in range(_INTS):  # element by element: no temporary copy of the row
            ints[kept, c] = ints[t, c]
        for c in range(_FLOATS):
            floats[kept, c] = floats[t, c]
        kept += 1
    return kept


@njit_inlined
def _predict(frame: Any, ints: Any, floats: Any, count: Any, predicted: Any) -> None:
    """Kalman prediction of each track at ``frame``: box, then the covariance blocks."""
    for t in range(count):
        dt = float(frame - ints[t, _LAST])
        for k in range(4):
            size = _size(floats, t, _POS, k)
            ppv, pvv = floats[t, _PPV + k], floats[t, _PVV + k]
            predicted[t, k] = floats[t, _POS + k] + dt * floats[t, _VEL + k]
            q = (_POSITION_NOISE * size) ** 2 * dt
            predicted[t, 4 + k] = floats[t, _PPP + k] + 2 * dt * ppv + dt * dt * pvv + q
            predicted[t, 8 + k] = ppv + dt * pvv
            predicted[t, 12 + k] = pvv + (_VELOCITY_NOISE * size) ** 2 * dt


@njit_inlined
def _box_iou(boxes_a: Any, i: Any, boxes_b: Any, j: Any) -> Any:
    """IoU of the boxes ``boxes_a[i, :4]`` and ``boxes_b[j, :4]`` (as
    :func:`pipeline.kernels.matching.box_iou`; 0 for an empty union)."""
    ax1, ay1, ax2, ay2 = boxes_a[i, 0], boxes_a[i, 1], boxes_a[i, 2], boxes_a[i, 3]
    bx1, by1, bx2, by2 = boxes_b[j, 0], boxes_b[j, 1], boxes_b[j, 2], boxes_b[j, 3]
    inter = max(min(ax2, bx2) - max(ax1, bx1), 0.0) * max(min(ay2, by2) - max(ay1, by1), 0.0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


@njit_inlined
def _pairs(predicted: Any, ints: Any, count: Any, boxes: Any, codes: Any, high: Any, first: Any,
           end: Any, min_iou: Any, iou: Any, allowed: Any, per_row: Any, per_column: Any,
           partner: Any, lists: Any, work: Any) -> None:  # fmt: skip
    """The detection paired with each track (``partner[:count]``, a position in ``first:end``
    of ``boxes``, ``codes`` and ``high``; ``-1``: none). Candidates share the label and overlap
    the predicted box by at least ``min_iou``; a candidate alone in its row and column is taken
    as it is, the others are assigned optimally: high-score detections first, then
    ByteTrack's second round of the low-score ones for the tracks left. ``iou``, ``allowed``,
    ``per_row``, ``per_column``, ``lists`` (tracks, high and low detections, taken) and
    ``work`` (:func:`_assign`'s): scratch space, reused frame after frame (no allocation per
    frame: more than half of the frames of real tracks have conflicts)."""
    detections = end - first
    for t in range(count):
        per_row[t] = 0
        partner[t] = -1
    for j in range(detections):
        per_column[j] = 0
    for t in range(count):
        for j in range(detections):
            iou[t, j] = value = _box_iou(predicted, t, boxes, first + j)
            allowed[t, j] = value >= min_iou and value > 0 and ints[t, _LABEL] == codes[first + j]
            per_row[t] += allowed[t, j]
            per_column[j] += allowed[t, j]
    conflicts = False
    for t in range(count):
        for j in range(detections):
            if allowed[t, j] and per_row[t] == 1 and per_column[j] == 1:
                partner[t] = j
        conflicts |= per_row[t] > 0 and partner[t] < 0
    if not conflicts:
        return
    tracks, strong, weak, taken = lists
    n_tracks = n_strong = n_weak = 0
    for j in range(detections):
        taken[j] = False
    for t in range(count):
        if per_row[t] > 0 and partner[t] < 0:
            tracks[n_tracks] = t
            n_tracks += 1
        elif partner[t] >= 0:
            taken[partner[t]] = True
    for j in range(detections):  # the candidates not taken alone, high scores apart
        if per_column[j] > 0 and not taken[j]:
            if high[first + j]:
                strong[n_strong] = j
                n_strong += 1
            else:
                weak[n_weak] = j
                n_weak += 1
    _assign(iou, allowed, tracks, n_tracks, strong, n_strong, partner, work)
    left = 0
    for a in range(n_tracks):  # the tracks still without a partner, in order
        if partner[tracks[a]] < 0:
            tracks[left] = tracks[a]
            left += 1
    _assign(iou, allowed, tracks, left, weak, n_weak, partner, work)


@njit_inlined
def _update(track: Any, frame: Any, seen: Any, boxes: Any, d: Any, predicted: Any, ints: Any,
            floats: Any) -> None:  # fmt: skip
    """Kalman update of ``track`` with its detection ``boxes[d]`` at ``frame`` (``seen``
    frames linked before it)."""
    for k in range(4):
        ppp, ppv = predicted[track, 4 + k], predicted[track, 8 + k]
        s = ppp + (_MEASUREMENT_NOISE * _size(boxes, d, 0, k)) ** 2
        gain_p, gain_v = ppp / s, ppv / s
        innovation = boxes[d, k] - predicted[track, k]
        floats[track, _POS + k] = predicted[track, k] + gain_p * innovation
        floats[track, _VEL + k] += gain_v * innovation
        floats[track, _PVV + k] = predicted[track, 12 + k] - gain_v * ppv
        floats[track, _PPP + k] = (1 - gain_p) * ppp
        floats[track, _PPV + k] = (1 - gain_p) * ppv
        floats[track, _BOX + k] = boxes[d, k]
    ints[track, _HITS] += 1
    ints[track, _LAST] = frame
    ints[track, _SEEN] = seen


@njit_inlined
def _start(track: Any, ident: Any, label: Any, frame: Any, seen: Any, boxes: Any, d: Any,
           ints: Any, floats: Any) -> None:  # fmt: skip
    """A tentative track at ``boxes[d]`` at ``frame`` (``seen`` frames linked before it),
    standing still with the start uncertainty."""
    ints[track, _ID], ints[track, _LABEL], ints[track, _LAST], ints[track, _HITS] = (
        ident, label, frame, 1)  # fmt: skip
    ints[track, _SEEN] = seen
    for k in range(4):
        size = _size(boxes, d, 0, k)
        floats[track, _BOX + k] = floats[track, _POS + k] = boxes[d, k]
        floats[track, _VEL + k] = floats[track, _PPV + k] = 0.0
        floats[track, _PPP + k] = (_START_POSITION * size) ** 2
        floats[track, _PVV + k] = (_START_VELOCITY * size) ** 2


@numba.njit(cache=True, nogil=True)
def _link(frames: Any, starts: Any, ends: Any, resets: Any, sizes: Any, boxes: Any, codes: Any,
          high: Any, ints: Any, floats: Any, state: Any, params: Any, start: Any, track_of: Any,
          gap_ints: Any, gap_floats: Any) -> Any:  # fmt: skip
    """Link the frames ``start..`` in order; returns (reason, frame position).

    Per frame: ``frames`` id, detections ``starts:ends`` (rows of ``boxes``, ``codes`` and
    ``high``, the usable detections), ``resets`` (a new video starts there: no tracks, ids
    from 0, no frame linked), ``sizes`` (width, height). A frame is linked when it comes after
    the last frame linked. Tracks: ``ints`` and ``floats`` rows; ``state``: live tracks, next
    track id, last frame linked, gaps recorded, frames linked. ``params``: min IoU, max gap,
    min hits. Outputs: ``track_of`` each detection; per gap ``gap_ints`` (track, first and
    last missing frame, detection, track frames, frames linked in the gap, position of the
    return) and ``gap_floats`` (IoU, the Kalman position and velocity before the return, the
    last box). On ``_FULL`` the track arrays need room for the frame at the returned position:
    grow them and resume there (nothing of that frame was applied but a reset and dropping
    tracks, both idempotent)."""
    min_iou, max_gap, min_hits = params[0], int(params[1]), int(params[2])
    widest = (ends - starts).max() if len(frames) else 0
    predicted = np.empty((len(ints), 16))
    iou = np.empty((len(ints), widest))
    allowed = np.empty((len(ints), widest), np.bool_)
    per_row, partner = np.empty(len(ints), np.int64), np.empty(len(ints), np.int64)
    per_column, matched = np.empty(widest, np.int64), np.empty(widest, np.bool_)
    lists = (np.empty(len(ints), np.int64), np.empty(widest, np.int64),
             np.empty(widest, np.int64), np.empty(widest, np.bool_))  # fmt: skip
    both = len(ints) + widest
    work = (np.empty(len(ints), np.int64), np.empty(widest, np.int64), np.empty(both, np.int64),
            np.empty((len(ints), widest)), np.empty(3 * both), np.empty(4 * both, np.int64),
            np.empty(2 * both, np.bool_))  # fmt: skip
    for p in range(start, len(frames)):
        if resets[p]:
            state[0], state[1], state[2] = 0, 0, _NO_FRAME
        frame, first, end = frames[p], starts[p], ends[p]
        if frame <= state[2]:
            continue  # a copy of a frame linked already (the first copy counts)
        count = state[0]
        if first < end:  # tracks age by frame numbers: nothing to do without detections
            count = _keep_live(frame, state[2], sizes[p], ints, floats, count, max_gap, min_hits)
            state[0] = count
            if count + end - first > len(ints):
                return _FULL, p
        seen = state[4]
        state[2], state[4] = frame, seen + 1
        if first == end:
            continue
        _predict(frame, ints, floats, count, predicted)
        _pairs(predicted, ints, count, boxes, codes, high, first, end, min_iou, iou, allowed,
               per_row, per_column, partner, lists, work)  # fmt: skip
        matched[: end - first] = False
        for t in range(count):
            j = partner[t]
            if j < 0:
                continue
            if frame - ints[t, _LAST] > 1 and ints[t, _HITS] >= min_hits:  # a return
                g = state[3]
                gap_ints[g] = (ints[t, _ID], ints[t, _LAST] + 1, frame - 1, first + j,
                               ints[t, _HITS] + 1, seen - ints[t, _SEEN] - 1, p)  # fmt: skip
                gap_floats[g, 0] = iou[t, j]
                gap_floats[g, 1:9] = floats[t, _POS : _POS + 8]
                gap_floats[g, 9:13] = floats[t, _BOX : _BOX + 4]
                state[3] = g + 1
            _update(t, frame, seen, boxes, first + j, predicted, ints, floats)
            track_of[first + j] = ints[t, _ID]
            matched[j] = True
        for j in range(end - first):  # unmatched high-score detections start tentative tracks
            d = first + j
            if not matched[j] and high[d]:
                _start(state[0], state[1], codes[d], frame, seen, boxes, d, ints, floats)
                track_of[d] = state[1]
                state[0] += 1
                state[1] += 1
    return _DONE, len(frames)


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
    _ints: np.ndarray = field(default_factory=lambda: np.empty((0, _INTS), np.int64))
    _floats: np.ndarray = field(default_factory=lambda: np.empty((0, _FLOATS)))
    # live tracks, next track id, last frame linked, gaps recorded, frames linked (see _link)
    _state: np.ndarray = field(default_factory=lambda: np.array([0, 0, _NO_FRAME, 0, 0], np.int64))
    _labels: dict[str | None, int] = field(default_factory=dict)

    @property
    def last_frame(self) -> int | None:
        """The last frame linked so far (frames up to it are skipped when fed again)."""
        last = int(self._state[2])
        return None if last == _NO_FRAME else last

    def feed(
        self,
        frames: np.ndarray,
        labels: Sequence[str | None] | Labels,
        boxes: np.ndarray,
        frame_ids: np.ndarray,
        scores: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
    ) -> Linked:
        """Link one slice of a video.

        Parameters
        ----------
        frames : (n,) frame of each detection, non-decreasing, all after earlier slices' frames.
        labels : (n,) label of each detection, or their :class:`Labels`.
        boxes : (n, 4) boxes ``x1, y1, x2, y2``; rows with NaN are not linked.
        frame_ids : every frame id of the slice that had metadata (with or without detections),
            ascending; frames up to :attr:`last_frame` are skipped (the first copy counts).
        scores : (n,) detection scores (NaN or ``None``: unknown, taken as high).
        sizes : (len(frame_ids), 2) width and height of each frame (NaN or ``None``: unknown,
            then a track may be predicted anywhere).

        Returns
        -------
        The gaps closed by this slice and the track of each detection.
        """
        frames = np.asarray(frames, dtype=np.int64)
        ids = np.asarray(frame_ids, dtype=np.int64)
        spans = np.searchsorted(frames, ids, "left"), np.searchsorted(frames, ids, "right")
        return self.link(ids, spans, labels, boxes, scores, sizes)[0]

    def link(
        self,
        frame_ids: np.ndarray,
        spans: tuple[np.ndarray, np.ndarray],
        labels: Sequence[str | None] | Labels,
        boxes: np.ndarray,
        scores: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
        videos: np.ndarray | None = None,
    ) -> tuple[Linked, np.ndarray]:
        """Link frames given with the rows of their detections: what :meth:`feed` does, for
        one or several videos at once.

        Parameters
        ----------
        frame_ids : (m,) frame ids (with metadata), ascending within a video; a frame up to the
            last frame linked of its video is skipped (the first copy counts).
        spans : (m,) first and (m,) end row of each frame's detections.
        labels, boxes, scores, sizes : as for :meth:`feed` (``sizes`` per frame id).
        videos : positions in ``frame_ids`` where a new video starts: the tracker starts
            afresh there (no tracks, ids from 0), as a new :class:`GapFinder` would.

        Returns
        -------
        What :meth:`feed` returns, and the position in ``frame_ids`` of each gap's return.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        count = len(boxes)
        # A box without NaN: its four flags read as one 4-byte integer (``any(axis=1)`` over
        # four columns took 90 us for the bench's 6,600 detections, this 4 us).
        valid = np.ascontiguousarray(np.isnan(boxes)).view(np.int32)[:, 0] == 0
        usable = np.flatnonzero(valid)
        # The usable detections (as they are when every box is: no copies).
        pick = slice(None) if len(usable) == count else usable
        # Each frame's usable detections: rows of the usable ones.
        before = np.concatenate(([0], np.cumsum(valid)))
        starts, ends = before[spans[0]], before[spans[1]]
        score = np.full(count, np.nan) if scores is None else np.asarray(scores, np.float64)
        codes = self._codes(labels)
        ids = np.asarray(frame_ids, dtype=np.int64)
        size = np.full((len(ids), 2), np.nan) if sizes is None else np.asarray(sizes, np.float64)
        size = np.ascontiguousarray(size)
        resets = np.zeros(len(ids), np.bool_)
        if videos is not None:
            resets[videos] = True
        widest = int((ends - starts).max()) if len(ids) else 0
        self._reserve(widest)
        track_of = np.full(len(usable), -1, np.int64)
        gap_ints = np.empty((len(usable), 7), np.int64)
        gap_floats = np.empty((len(usable), 13))
        params = np.array([self.min_iou, self.max_gap, self.min_hits], np.float64)
        high = ~(score[pick] < self.high_score)  # NaN counts as high
        usable_boxes, usable_codes = np.ascontiguousarray(boxes[pick]), codes[pick]
        self._state[3] = 0
        position = 0
        while True:
            reason, position = _link(
                ids, starts, ends, resets, size, usable_boxes, usable_codes, high, self._ints,
                self._floats, self._state, params, position, track_of, gap_ints, gap_floats,
            )  # fmt: skip
            if reason == _DONE:
                break
            self._reserve(widest, grow=True)
        linked = np.full(count, -1, np.int64)
        linked[pick] = track_of
        recorded = int(self._state[3])
        gaps, returns = self._gaps(
            gap_ints[:recorded], gap_floats[:recorded], size, usable, labels, boxes
        )
        return Linked(gaps, linked), returns

    def _reserve(self, widest: int, grow: bool = False) -> None:
        """Room for every live track and the births of the widest frame (double on ``grow``)."""
        live = int(self._state[0])
        room = max(64, 2 * (live + widest), 2 * len(self._ints) if grow else 0)
        if len(self._ints) < live + widest or grow:
            ints = np.zeros((room, _INTS), np.int64)
            floats = np.zeros((room, _FLOATS))
            ints[:live], floats[:live] = self._ints[:live], self._floats[:live]
            self._ints, self._floats = ints, floats

    def _codes(self, labels: Sequence[str | None] | Labels) -> np.ndarray:
        """Each label's number (the same label, the same number in every call), numbered in
        order of first appearance (of :class:`Labels`: of their names): a look-up per
        detection in C, a Python call per distinct label."""
        if isinstance(labels, Labels):
            numbers = [self._labels.setdefault(name, len(self._labels)) for name in labels.names]
            return np.array(numbers, dtype=np.int64)[labels.codes]
        known = {
            label: self._labels.setdefault(label, len(self._labels))
            for label in dict.fromkeys(labels)
        }
        return np.fromiter(map(known.__getitem__, labels), np.int64, len(labels))

    def _gaps(
        self,
        records: np.ndarray,
        floats: np.ndarray,
        size: np.ndarray,
        usable: np.ndarray,
        labels: Sequence[str | None] | Labels,
        boxes: np.ndarray,
    ) -> tuple[GapColumns, np.ndarray]:
        """The recorded returns that are gaps: predicted inside the frame while missing (and
        the frame position of each one's return). Every return's predicted boxes are computed
        and checked at once, a row per missing frame."""
        track, first, last, detection, hits, processed, position = records.T
        missing = last - first + 1
        of_gap = np.repeat(np.arange(len(records)), missing)
        starts = np.cumsum(missing) - missing
        steps = (np.arange(len(of_gap)) - starts[of_gap] + 1).astype(np.float64)[:, np.newaxis]
        predicted = floats[of_gap, 1:5] + steps * floats[of_gap, 5:9]
        inside = _inside(predicted, size[position][of_gap])
        # Every missing frame's prediction in view (an empty segment cannot occur: missing >= 1).
        kept = np.logical_and.reduceat(inside, starts) if len(records) else inside
        g = np.flatnonzero(kept)
        returns = usable[detection[g]]
        fits, frames, counts = floats[g, 0], hits[g], missing[g]
        if isinstance(labels, Labels):
            names = labels.names
            returned = [names[code] for code in labels.codes[returns].tolist()]
        else:
            returned = [labels[index] for index in returns.tolist()]
        found = GapColumns(
            track=track[g], labels=returned,
            first_missing=first[g], last_missing=last[g],
            unprocessed=(missing - processed)[g], box_before=floats[g, 9:13],
            box_after=boxes[returns], iou=fits, predicted=predicted[np.repeat(kept, missing)],
            track_frames=frames, confidence=_confidences(fits, frames, counts, self.min_hits),
        )  # fmt: skip
        return found, position[g]


def _inside(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Whether each box's centre lies inside its frame of ``sizes`` (width, height; unknown
    NaN: everywhere)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    width, height = sizes[:, 0], sizes[:, 1]
    inside_x = np.isnan(width) | ((cx >= 0) & (cx < width))
    return inside_x & (np.isnan(height) | ((cy >= 0) & (cy < height)))


def _box(row: Any) -> Box:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
