"""Tests of :mod:`pipeline.kernels.tracking`: the streaming anonymisation-gap finder.

Videos are given as ``{frame: [(label, box or None), ...]}`` (every key has metadata); the
independent sequential reference is :func:`video_reference.link`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from video_reference import RefGap, link

from pipeline.kernels.tracking import Gap, GapFinder

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
    return finder.feed(*_arrays(video, sorted(video) if frames is None else frames))


def _key(gap: Gap | RefGap) -> tuple[Any, ...]:
    if isinstance(gap, Gap):
        return (gap.label, gap.first_missing, gap.last_missing, gap.unprocessed,
                gap.box_before, gap.box_after, gap.iou)  # fmt: skip
    return (gap.label, gap.first, gap.last, gap.unprocessed, gap.box_before, gap.box_after,
            gap.iou)  # fmt: skip


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
)
def test_split_feeds_equal_one_feed_and_the_reference(
    video: Video, data: st.DataObject, min_iou: float, max_gap: int
) -> None:
    frames = sorted(video)
    whole = _feed(GapFinder(min_iou=min_iou, max_gap=max_gap), video)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(frames)), max_size=5)))
    streamed = GapFinder(min_iou=min_iou, max_gap=max_gap)
    pieces: list[Gap] = []
    for start, end in zip([0, *cuts], [*cuts, len(frames)], strict=True):
        pieces += _feed(streamed, video, frames[start:end])
    assert pieces == whole
    assert streamed.last_frame == frames[-1]
    reference = link(sorted(video.items()), min_iou=min_iou, max_gap=max_gap)
    assert [_key(g) for g in whole] == [_key(g) for g in reference]
    for gap in whole:
        assert 1 <= gap.last_missing - gap.first_missing + 1 <= max_gap
        assert gap.iou >= min_iou


@settings(max_examples=100, deadline=None)
@given(_videos(), st.data())
def test_refeeding_seen_frames_changes_nothing(video: Video, data: st.DataObject) -> None:
    """Frames up to the last one linked are skipped when fed again (the first copy counts)."""
    frames = sorted(video)
    split = data.draw(st.integers(1, len(frames)))
    overlap = data.draw(st.integers(0, split))
    other: Video = {f: data.draw(st.lists(_detection, max_size=3)) for f in frames}
    once = GapFinder()
    expected = _feed(once, video)
    twice = GapFinder()
    got = _feed(twice, video, frames[:split])
    # the second slice repeats some frames with different content, then continues
    second = {f: other[f] for f in frames[split - overlap : split]}
    second.update({f: video[f] for f in frames[split:]})
    got += _feed(twice, second, frames[split - overlap :])
    assert got == expected


# ---------------------------------------------------------------------------------------------
# Single blinks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_gap", "blink"), [(1, 1), (3, 1), (3, 2), (3, 3), (5, 4), (5, 5)])
def test_blink_up_to_max_gap_is_reported_exactly(max_gap: int, blink: int) -> None:
    boxes = _moving(range(0, 30), step=0.5)
    first = 12
    video: Video = {
        f: ([] if first <= f < first + blink else [("face", boxes[f])]) for f in range(30)
    }
    gaps = _feed(GapFinder(min_iou=0.3, max_gap=max_gap), video)
    before, after = boxes[first - 1], boxes[first + blink]
    width = 20 - (after[0] - before[0])
    iou = width * 20 / (2 * 400 - width * 20)
    assert gaps == [
        Gap(track=0, label="face", first_missing=first, last_missing=first + blink - 1,
            unprocessed=0, box_before=before, box_after=after, iou=iou)
    ]  # fmt: skip


@pytest.mark.parametrize("max_gap", [1, 2, 3, 5])
def test_blink_longer_than_max_gap_starts_a_new_track(max_gap: int) -> None:
    box = (10.0, 10.0, 30.0, 30.0)
    absent = set(range(10, 10 + max_gap + 1)) | {25}
    video: Video = {f: ([] if f in absent else [("face", box)]) for f in range(30)}
    gaps = _feed(GapFinder(min_iou=0.3, max_gap=max_gap), video)
    # the long blink is not reported; the object comes back as track 1, whose blink is
    assert gaps == [Gap(1, "face", 25, 25, 0, box, box, 1.0)]


def test_frames_without_metadata_count_as_unprocessed() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    # frame 3 and 4 have no metadata at all, frame 2 has metadata without the object
    video: Video = {0: [("plate", box)], 1: [("plate", box)], 2: [], 5: [("plate", box)]}
    assert _feed(GapFinder(max_gap=3), video) == [Gap(0, "plate", 2, 4, 2, box, box, 1.0)]
    # the same, streamed with the hole at a slice boundary
    finder = GapFinder(max_gap=3)
    assert _feed(finder, video, [0, 1, 2]) == []
    assert _feed(finder, video, [5]) == [Gap(0, "plate", 2, 4, 2, box, box, 1.0)]


def test_a_hole_without_metadata_longer_than_max_gap_is_not_a_gap() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    video: Video = {0: [("plate", box)], 5: [("plate", box)], 6: [], 7: [("plate", box)]}
    assert _feed(GapFinder(max_gap=3), video) == [Gap(1, "plate", 6, 6, 0, box, box, 1.0)]


# ---------------------------------------------------------------------------------------------
# Skipped frames, NaN boxes, labels, greedy choices
# ---------------------------------------------------------------------------------------------


def test_duplicate_and_older_frames_are_skipped() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    finder = GapFinder(max_gap=3)
    assert _feed(finder, {f: [("face", box)] for f in range(6)}) == []
    assert finder.last_frame == 5
    # a second copy of frames 3-5 without the object, then the object again: no gap
    again: Video = {3: [], 4: [], 5: [], 6: [("face", box)]}
    assert _feed(finder, again) == []
    # an older frame alone is skipped too, and does not move last_frame back
    assert _feed(finder, {2: []}) == []
    assert finder.last_frame == 6
    assert _feed(finder, {7: [], 8: [("face", box)]}) == [Gap(0, "face", 7, 7, 0, box, box, 1.0)]


def test_repeated_frame_id_within_one_feed_is_skipped() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    frames = np.array([0, 1, 2], dtype=np.int64)
    boxes = np.array([box, box, box], dtype=np.float64)
    finder = GapFinder(max_gap=3)
    gaps = finder.feed(frames, ["face"] * 3, boxes, np.array([0, 1, 1, 2, 2], dtype=np.int64))
    assert gaps == []
    assert finder.last_frame == 2


def test_nan_boxes_are_never_linked() -> None:
    box = (5.0, 5.0, 25.0, 25.0)
    video: Video = {
        0: [("face", box)],
        1: [("face", None)],  # the object's box is unusable: it is not seen here
        2: [("face", None), ("face", None)],
        3: [("face", box)],
    }
    assert _feed(GapFinder(max_gap=3), video) == [Gap(0, "face", 1, 2, 0, box, box, 1.0)]
    # a NaN box starts no track either
    only_nan: Video = {0: [("face", None)], 1: [], 2: [("face", box)], 3: [], 4: [("face", box)]}
    assert _feed(GapFinder(max_gap=3), only_nan) == [Gap(0, "face", 3, 3, 0, box, box, 1.0)]


def test_partly_nan_box_is_not_linked() -> None:
    box = (5.0, 5.0, 25.0, 25.0)
    frames = np.array([0, 1, 2], dtype=np.int64)
    boxes = np.array([box, (5.0, math.nan, 25.0, 25.0), box])
    gaps = GapFinder(max_gap=3).feed(frames, ["face"] * 3, boxes, frames)
    assert gaps == [Gap(0, "face", 1, 1, 0, box, box, 1.0)]


def test_labels_never_cross_link() -> None:
    box = (10.0, 10.0, 30.0, 30.0)
    video: Video = {
        0: [("face", box)],
        1: [("license plate", box)],  # same box, other label: the face is absent here
        2: [("face", box), (None, box)],
        3: [(None, box)],
        4: [("license plate", box)],
    }
    gaps = _feed(GapFinder(max_gap=3), video)
    assert gaps == [
        Gap(0, "face", 1, 1, 0, box, box, 1.0),
        Gap(1, "license plate", 2, 3, 0, box, box, 1.0),
    ]


def test_unlabelled_detections_link_among_themselves() -> None:
    box = (0.0, 0.0, 8.0, 8.0)
    video: Video = {0: [(None, box)], 1: [], 2: [(None, box)]}
    assert _feed(GapFinder(max_gap=1), video) == [Gap(0, None, 1, 1, 0, box, box, 1.0)]


def test_equal_iou_goes_to_the_older_track() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    video: Video = {
        0: [("face", box), ("face", box)],  # tracks 0 and 1, identical
        1: [("face", box)],  # ties: the older track 0 takes it
        2: [("face", box), ("face", box)],  # track 1 comes back after one frame
    }
    assert _feed(GapFinder(max_gap=3), video) == [Gap(1, "face", 1, 1, 0, box, box, 1.0)]


def test_equal_iou_ties_between_detections_go_to_the_first_position() -> None:
    left = (0.0, 0.0, 10.0, 10.0)
    shifted_right = (5.0, 0.0, 15.0, 10.0)
    shifted_left = (-5.0, 0.0, 5.0, 10.0)
    video: Video = {
        0: [("face", left)],
        1: [],
        2: [("face", shifted_right), ("face", shifted_left)],  # both IoU 1/3 with the track
        3: [],
        4: [("face", shifted_right)],  # track 0 (at shifted_right) blinks here, not track 1
    }
    gaps = _feed(GapFinder(min_iou=0.3, max_gap=3), video)
    assert gaps == [
        Gap(0, "face", 1, 1, 0, left, shifted_right, 1 / 3),
        Gap(0, "face", 3, 3, 0, shifted_right, shifted_right, 1.0),
    ]


def test_best_iou_is_paired_first() -> None:
    a = (0.0, 0.0, 10.0, 10.0)
    b = (6.0, 0.0, 16.0, 10.0)
    # the detection overlaps b more than a: track 1 (b) takes it although track 0 is older
    detection = (5.0, 0.0, 15.0, 10.0)
    video: Video = {0: [("face", a), ("face", b)], 1: [], 2: [("face", detection)]}
    gaps = _feed(GapFinder(min_iou=0.1, max_gap=3), video)
    assert [(g.track, g.box_before) for g in gaps] == [(1, b)]
    assert gaps[0].iou == pytest.approx(9 / 11)


def test_greedy_pairs_best_first_not_an_optimal_assignment() -> None:
    """Greedy by best IoU first, as documented: an optimal assignment would pair a-y and b-x."""
    a = (0.0, 0.0, 10.0, 10.0)
    b = (4.0, 0.0, 14.0, 10.0)
    x = (1.0, 0.0, 11.0, 10.0)  # IoU 9/11 with a, 7/13 with b
    y = (-2.0, 0.0, 8.0, 10.0)  # IoU 8/12 with a, 4/16 (< 0.3) with b
    video: Video = {0: [("p", a), ("p", b)], 1: [], 2: [("p", x), ("p", y)], 3: [("p", y)]}
    gaps = _feed(GapFinder(min_iou=0.3, max_gap=3), video)
    # a takes x; b finds nothing; y starts track 2 (no gap when it is seen again at frame 3)
    assert gaps == [Gap(0, "p", 1, 1, 0, a, x, 9 / 11)]


def test_iou_threshold_is_inclusive_and_zero_never_links() -> None:
    a = (0.0, 0.0, 40.0, 10.0)
    b = (10.0, 0.0, 50.0, 10.0)  # IoU 30/50 = 0.6 exactly
    video: Video = {0: [("p", a)], 1: [], 2: [("p", b)]}
    assert _feed(GapFinder(min_iou=0.6, max_gap=1), video) == [Gap(0, "p", 1, 1, 0, a, b, 0.6)]
    assert _feed(GapFinder(min_iou=0.61, max_gap=1), video) == []
    touching = (40.0, 0.0, 80.0, 10.0)  # IoU 0
    video = {0: [("p", a)], 1: [], 2: [("p", touching)]}
    assert _feed(GapFinder(min_iou=0.0, max_gap=1), video) == []


def test_track_ids_count_per_video_across_labels() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    video: Video = {0: [("a", box), ("b", box)], 1: [], 2: [("a", box), ("b", box)]}
    gaps = _feed(GapFinder(max_gap=1), video)
    assert sorted((g.track, g.label) for g in gaps) == [(0, "a"), (1, "b")]
