"""Tests of :mod:`pipeline.kernels.tracking`: the streaming anonymisation-gap tracker.

Videos are given as ``{frame: [(label, box or None), ...]}`` (every key has metadata). Its
figures on real footage are tested in ``tests/test_gap_tracker_mot.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from pipeline.kernels.tracking import Gap, GapFinder, Labels, gap_confidence, solve_assignment

Box = tuple[float, float, float, float]
Video = dict[int, list[tuple[str | None, Box | None]]]
NAN_BOX = (math.nan, math.nan, math.nan, math.nan)


def _arrays(video: Video, frames: list[int]) -> tuple[Any, list[str | None], Any, Any]:
    """The finder's input for some frames of a video."""
    det_frames: list[int] = []
    labels: list[str | None] = []
    boxes: list[Box] = []
    for frame in frames:
        for label, box in video.get(frame, []):
            det_frames.append(frame)
            labels.append(label)
            boxes.append(NAN_BOX if box is None else box)
    return (
        np.asarray(det_frames, dtype=np.int64),
        labels,
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(frames, dtype=np.int64),
    )


def _feed(finder: GapFinder, video: Video, frames: list[int] | None = None) -> list[Gap]:
    return finder.feed(*_arrays(video, sorted(video) if frames is None else frames)).gaps


def _moving(frames: range, x: float = 10, y: float = 10, step: float = 1, w: float = 20) -> dict:
    return {
        f: (x + step * (f - frames[0]), y, x + step * (f - frames[0]) + w, y + w) for f in frames
    }


# ---------------------------------------------------------------------------------------------
# Hypothesis: streaming invariance and equality with the sequential reference
# ---------------------------------------------------------------------------------------------

_coordinate = st.integers(0, 4).map(lambda v: 4.0 * v)
_box = st.one_of(
    st.tuples(
        _coordinate, _coordinate, st.sampled_from([4.0, 8.0, 12.0]), st.sampled_from([4.0, 8.0])
    ).map(lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3])),
    st.none(),
)
_detection = st.tuples(st.sampled_from(["face", "plate", None]), _box)


@st.composite
def _videos(draw: st.DrawFn) -> Video:
    length = draw(st.integers(1, 40))
    with_metadata = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    video: Video = {}
    for frame, present in enumerate(with_metadata):
        if present or frame == 0:
            video[frame + 100] = draw(st.lists(_detection, max_size=4))
    return video


@settings(max_examples=300, deadline=None)
@given(
    _videos(),
    st.data(),
    st.sampled_from([0.1, 0.3, 0.5, 1.0]),
    st.integers(1, 4),
    st.integers(1, 3),
)
def test_split_feeds_equal_one_feed(
    video: Video, data: st.DataObject, min_iou: float, max_gap: int, min_hits: int
) -> None:
    frames = sorted(video)
    params = {"min_iou": min_iou, "max_gap": max_gap, "min_hits": min_hits}
    whole = GapFinder(**params).feed(*_arrays(video, frames))
    cuts = sorted(data.draw(st.sets(st.integers(0, len(frames)), max_size=5)))
    streamed = GapFinder(**params)
    pieces: list[Gap] = []
    tracks = []
    for start, end in zip([0, *cuts], [*cuts, len(frames)], strict=True):
        # The pieces' labels as codes (Labels), numbered per piece: the same as the labels.
        det_frames, labels, boxes, ids = _arrays(video, frames[start:end])
        names = list(dict.fromkeys(labels))[::-1]
        codes = np.array([names.index(label) for label in labels], dtype=np.int64)
        linked = streamed.feed(det_frames, Labels(codes, names), boxes, ids)
        pieces += linked.gaps
        tracks.append(linked.tracks)
    assert pieces == whole.gaps
    assert np.concatenate(tracks).tolist() == whole.tracks.tolist()
    assert streamed.last_frame == frames[-1]
    for gap in whole.gaps:
        assert 1 <= gap.last_missing - gap.first_missing + 1 <= max_gap
        assert gap.iou >= min_iou
        assert len(gap.predicted) == gap.last_missing - gap.first_missing + 1
        assert gap.track_frames > min_hits
        assert 0 < gap.confidence <= 1
        missing = gap.last_missing - gap.first_missing + 1
        assert gap.confidence == gap_confidence(gap.iou, gap.track_frames, missing, min_hits)


@settings(max_examples=200, deadline=None)
@given(st.lists(_videos(), min_size=1, max_size=4), st.integers(1, 4), st.integers(1, 3))
def test_videos_linked_at_once_equal_a_finder_each(
    videos: list[Video], max_gap: int, min_hits: int
) -> None:
    """Several videos in one :meth:`GapFinder.link` call (the finder starting afresh at each
    video's first frame) give each video's gaps and tracks as a finder of its own does, and
    each gap's return position lies in its own video's frames."""
    params = {"max_gap": max_gap, "min_hits": min_hits}
    expected = [GapFinder(**params).feed(*_arrays(video, sorted(video))) for video in videos]
    pieces = [_arrays(video, sorted(video)) for video in videos]
    firsts = np.cumsum([0, *(len(ids) for *_, ids in pieces)])
    offsets = np.cumsum([0, *(len(frames) for frames, *_ in pieces)])
    spans = tuple(
        np.concatenate([offset + np.searchsorted(frames, ids, side) for (frames, *_, ids),
                        offset in zip(pieces, offsets, strict=False)])
        for side in ("left", "right")
    )  # fmt: skip
    linked, returns = GapFinder(**params).link(
        np.concatenate([ids for *_, ids in pieces]), (spans[0], spans[1]),
        [label for _, labels, _, _ in pieces for label in labels],
        np.concatenate([boxes for _, _, boxes, _ in pieces]), videos=firsts[:-1],
    )  # fmt: skip
    assert linked.gaps == [gap for one in expected for gap in one.gaps]
    assert linked.tracks.tolist() == np.concatenate([one.tracks for one in expected]).tolist()
    of_video = np.searchsorted(firsts, returns, "right") - 1
    assert of_video.tolist() == [v for v, one in enumerate(expected) for _ in one.gaps]


@settings(max_examples=100, deadline=None)
@given(_videos(), st.data())
def test_refeeding_seen_frames_changes_nothing(video: Video, data: st.DataObject) -> None:
    """Frames up to the last one linked are skipped when fed again (the first copy counts)."""
    frames = sorted(video)
    split = data.draw(st.integers(1, len(frames)))
    overlap = data.draw(st.integers(0, split))
    other: Video = {f: data.draw(st.lists(_detection, max_size=3)) for f in frames}
    once = GapFinder(min_hits=1)
    expected = _feed(once, video)
    twice = GapFinder(min_hits=1)
    got = _feed(twice, video, frames[:split])
    # the second slice repeats some frames with different content, then continues
    second = {f: other[f] for f in frames[split - overlap : split]}
    second.update({f: video[f] for f in frames[split:]})
    got += _feed(twice, second, frames[split - overlap :])
    assert got == expected


# ---------------------------------------------------------------------------------------------
# Gaps, motion model, life cycle
# ---------------------------------------------------------------------------------------------

BOX = (10.0, 10.0, 30.0, 30.0)


@pytest.mark.parametrize(("max_gap", "blink"), [(1, 1), (3, 1), (3, 2), (3, 3), (5, 4), (5, 5)])
def test_blink_of_a_still_object_is_reported_exactly(max_gap: int, blink: int) -> None:
    first = 12
    video: Video = {f: ([] if first <= f < first + blink else [("face", BOX)]) for f in range(30)}
    gaps = _feed(GapFinder(min_iou=0.3, max_gap=max_gap), video)
    assert gaps == [
        Gap(track=0, label="face", first_missing=first, last_missing=first + blink - 1,
            unprocessed=0, box_before=BOX, box_after=BOX, iou=1.0, predicted=(BOX,) * blink,
            track_frames=first + 1, confidence=gap_confidence(1.0, first + 1, blink, 3))
    ]  # fmt: skip


def test_predicted_boxes_follow_a_moving_object() -> None:
    """After 20 frames at 4 px per frame the filter's velocity is the object's: the predicted
    boxes of a 3-frame gap are where the object was, and its return fits them."""
    boxes = _moving(range(40), step=4.0, w=30)
    missing = range(20, 23)
    video: Video = {f: ([] if f in missing else [("plate", boxes[f])]) for f in range(40)}
    (gap,) = _feed(GapFinder(max_gap=3), video)
    assert (gap.first_missing, gap.last_missing, gap.track_frames) == (20, 22, 21)
    for predicted, frame in zip(gap.predicted, missing, strict=True):
        assert predicted == pytest.approx(boxes[frame], abs=0.5)
    assert gap.iou > 0.95
    # without the motion model the return (16 px further, 30 px wide) overlaps the last box
    # by 14/46: a greedy last-box linker at IoU 0.5 would lose the track
    assert gap.box_after == boxes[23]


@pytest.mark.parametrize("max_gap", [1, 2, 3, 5])
def test_gap_longer_than_max_gap_is_not_reported(max_gap: int) -> None:
    absent = set(range(10, 10 + max_gap + 1)) | {25}
    video: Video = {f: ([] if f in absent else [("face", BOX)]) for f in range(30)}
    linked = GapFinder(max_gap=max_gap).feed(*_arrays(video, list(range(30))))
    # the long absence ends track 0; the object comes back as track 1, whose gap is reported
    assert [(g.track, g.first_missing, g.last_missing) for g in linked.gaps] == [(1, 25, 25)]


@pytest.mark.parametrize(("min_hits", "reported"), [(1, True), (2, True), (3, False)])
def test_only_confirmed_tracks_report_gaps(min_hits: int, reported: bool) -> None:
    video: Video = {0: [("face", BOX)], 1: [("face", BOX)], 2: [], 3: [("face", BOX)]}
    gaps = _feed(GapFinder(min_hits=min_hits), video)
    assert [(g.first_missing, g.last_missing) for g in gaps] == ([(2, 2)] if reported else [])


def test_a_tentative_track_ends_at_its_first_miss() -> None:
    video: Video = {0: [("face", BOX)], 1: [], 2: [("face", BOX)], 3: [("face", BOX)]}
    linked = GapFinder(min_hits=2).feed(*_arrays(video, [0, 1, 2, 3]))
    assert linked.tracks.tolist() == [0, 1, 1]
    assert linked.gaps == []


def test_no_gap_when_the_prediction_leaves_the_frame() -> None:
    """An object predicted out of the frame is not missing: it left the picture (its track
    ends), even if something is detected there again."""
    boxes = _moving(range(30), x=400, step=10.0, w=40)  # centre 420 + 10 f
    missing = range(20, 23)  # predicted centres 620, 630, 640, then 650 at the return
    video: Video = {f: ([] if f in missing else [("person", boxes[f])]) for f in range(24)}
    frames = sorted(video)
    arrays = _arrays(video, frames)
    inside = np.tile([651.0, 480.0], (len(frames), 1))
    outside = np.tile([635.0, 480.0], (len(frames), 1))
    assert len(GapFinder().feed(*arrays, None, inside).gaps) == 1
    assert GapFinder().feed(*arrays, None, outside).gaps == []
    assert len(GapFinder().feed(*arrays).gaps) == 1  # frame size unknown: anywhere


def test_frames_without_metadata_count_as_unprocessed() -> None:
    video: Video = {f: [("plate", BOX)] for f in range(5)}
    video.update({5: [], 8: [("plate", BOX)]})  # frames 6 and 7 have no metadata at all
    (gap,) = _feed(GapFinder(max_gap=3), video)
    assert (gap.first_missing, gap.last_missing, gap.unprocessed) == (5, 7, 2)
    # the same, streamed with the hole at a slice boundary
    finder = GapFinder(max_gap=3)
    assert _feed(finder, video, [0, 1, 2, 3, 4, 5]) == []
    assert _feed(finder, video, [8]) == [gap]


def test_low_score_detections_extend_tracks_but_start_none() -> None:
    """ByteTrack's second round: a weak detection keeps the object's track (no gap), and a weak
    detection alone starts no track."""
    video: Video = {f: [("face", BOX)] for f in range(10)}
    video[5] = [("face", BOX), ("face", (200.0, 200.0, 220.0, 220.0))]
    frames = sorted(video)
    det_frames, labels, boxes, ids = _arrays(video, frames)
    scores = np.full(len(det_frames), 0.9)
    scores[5:7] = 0.2  # both detections of frame 5
    linked = GapFinder(high_score=0.5).feed(det_frames, labels, boxes, ids, scores)
    assert linked.gaps == []
    assert linked.tracks.tolist() == [0] * 6 + [-1] + [0] * 4
    # were they ignored, frame 5 would be a gap of track 0
    strict = GapFinder(high_score=0.5).feed(det_frames, labels, boxes, ids, scores * 0)
    assert strict.gaps == []  # low scores never start a track: nothing at all is tracked


def test_assignment_is_optimal_not_greedy() -> None:
    """Greedy best-IoU-first would give x (IoU 9/11) to a and leave b without a match; the
    optimal assignment pairs a-y (8/12) and b-x (7/13), so both tracks go on."""
    a, b = (0.0, 0.0, 10.0, 10.0), (4.0, 0.0, 14.0, 10.0)
    x, y = (1.0, 0.0, 11.0, 10.0), (-2.0, 0.0, 8.0, 10.0)
    video: Video = {f: [("p", a), ("p", b)] for f in range(3)}
    video[3] = [("p", x), ("p", y)]
    linked = GapFinder(min_iou=0.3, min_hits=1).feed(*_arrays(video, [0, 1, 2, 3]))
    assert linked.tracks.tolist() == [0, 1] * 3 + [1, 0]


def test_nan_boxes_are_never_linked() -> None:
    video: Video = {f: [("face", BOX)] for f in range(4)}
    video.update({4: [("face", None)], 5: [("face", None), ("face", None)], 6: [("face", BOX)]})
    linked = GapFinder(max_gap=3).feed(*_arrays(video, list(range(7))))
    assert [(g.first_missing, g.last_missing) for g in linked.gaps] == [(4, 5)]
    assert linked.tracks.tolist() == [0] * 4 + [-1] * 3 + [0]


def test_labels_never_cross_link() -> None:
    video: Video = {f: [("face", BOX)] for f in range(4)}
    video.update({4: [("license plate", BOX)], 5: [("face", BOX)]})
    linked = GapFinder(max_gap=3).feed(*_arrays(video, list(range(6))))
    assert [(g.label, g.first_missing) for g in linked.gaps] == [("face", 4)]
    assert linked.tracks.tolist() == [0] * 4 + [1, 0]


def test_duplicate_and_older_frames_are_skipped() -> None:
    finder = GapFinder(max_gap=3)
    assert _feed(finder, {f: [("face", BOX)] for f in range(6)}) == []
    assert finder.last_frame == 5
    # a second copy of frames 3-5 without the object, then the object again: no gap
    assert _feed(finder, {3: [], 4: [], 5: [], 6: [("face", BOX)]}) == []
    assert _feed(finder, {2: []}) == []
    assert finder.last_frame == 6
    (gap,) = _feed(finder, {7: [], 8: [("face", BOX)]})
    assert (gap.first_missing, gap.last_missing) == (7, 7)


def test_track_ids_count_per_video_across_labels() -> None:
    video: Video = {f: [("a", BOX), ("b", BOX)] for f in range(4)}
    video.update({4: [], 5: [("a", BOX), ("b", BOX)]})
    gaps = _feed(GapFinder(max_gap=1), video)
    assert sorted((g.track, g.label) for g in gaps) == [(0, "a"), (1, "b")]


# ---------------------------------------------------------------------------------------------
# The assignment solver against scipy's
# ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 7),
    st.integers(1, 7),
    st.data(),
)
def test_solver_gives_scipys_pairs(rows: int, cols: int, data: st.DataObject) -> None:
    """Same algorithm as :func:`scipy.optimize.linear_sum_assignment`, tie rules included: the
    same pairs, on matrices with many equal costs (and the tracker's 2.0 for "not allowed")."""
    values = st.sampled_from([0.0, 0.25, 0.5, 2.0]) | st.floats(0, 2, allow_nan=False)
    cost = np.array(data.draw(st.lists(values, min_size=rows * cols, max_size=rows * cols)))
    cost = cost.reshape(rows, cols)
    expected_rows, expected_cols = linear_sum_assignment(cost)
    chosen = solve_assignment(cost)
    got_rows = np.flatnonzero(chosen >= 0)
    assert got_rows.tolist() == expected_rows.tolist()
    assert chosen[got_rows].tolist() == expected_cols.tolist()


def test_a_box_with_any_nan_coordinate_is_not_linked() -> None:
    boxes = np.array([[1, 2, 30, 40], [1, math.nan, 30, 40], [math.nan] * 4, [5, 6, 30, math.nan]])
    linked = GapFinder().feed(np.zeros(4, np.int64), ["face"] * 4, boxes, np.zeros(1, np.int64))
    assert linked.tracks.tolist() == [0, -1, -1, -1]
