"""Tests of :mod:`pipeline.kernels.matching`: box IoU and one-to-one detection matching.

Expected IoUs are computed by hand in the comments (boxes ``x_min, y_min, x_max, y_max`` with
the max exclusive, so a box's area is ``(x_max - x_min) * (y_max - y_min)``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.formats.celantur import TYPE_FLAG
from pipeline.kernels.matching import (
    MATCH_BBOX,
    MATCH_COLOUR,
    MATCH_NAMES,
    MATCH_NONE,
    box_iou,
    match_detections,
)

PERSON, PLATE, FACE, VEHICLE = (
    TYPE_FLAG["person"],
    TYPE_FLAG["license_plate"],
    TYPE_FLAG["face"],
    TYPE_FLAG["vehicle"],
)
NAN_BOX = [np.nan] * 4

# ---------------------------------------------------------------------------------------------
# box_iou
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching: max is exclusive
        ([0, 0, 10, 10], [0, 0, 10, 5], 0.5),  # inter 50, union 100
        ([0, 0, 10, 10], [5, 0, 15, 10], 1 / 3),  # inter 50, union 150
        ([0, 0, 4, 4], [2, 2, 6, 6], 4 / 28),  # inter 2x2, union 16 + 16 - 4
        ([0, 0, 10, 10], [2, 2, 4, 4], 0.04),  # contained: 4 / 100
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # empty boxes: union 0
        ([0, 0, 10, 10], NAN_BOX, 0.0),  # no box
    ],
    ids=[
        "identical",
        "disjoint",
        "touching",
        "half",
        "third",
        "corner",
        "contained",
        "empty",
        "nan",
    ],
)
def test_box_iou_hand_computed(a: list[float], b: list[float], expected: float) -> None:
    iou = box_iou(np.array([a]), np.array([b]))
    assert iou.shape == (1, 1)
    assert iou[0, 0] == pytest.approx(expected, abs=1e-12)
    assert box_iou(np.array([b]), np.array([a]))[0, 0] == pytest.approx(expected, abs=1e-12)


def test_box_iou_is_pairwise() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 5]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]])
    expected = np.array([[1.0, 1 / 3, 0.0], [0.5, 25 / 125, 0.0]])
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=0, atol=1e-12)


def test_box_iou_of_empty_sets() -> None:
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert box_iou(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)


# ---------------------------------------------------------------------------------------------
# match_detections
# ---------------------------------------------------------------------------------------------


def match(
    segments: list[tuple[tuple[int, int, int], int, list[float]]],
    detections: list[tuple[tuple[int, int, int] | None, int, list[float]]],
    min_iou: float = 0.0,
):
    """Run the matcher on (colour, flags, box) per segment and per detection."""
    return match_detections(
        np.array([s[0] for s in segments], dtype=np.uint8).reshape(-1, 3),
        np.array([s[1] for s in segments], dtype=np.int8),
        np.array([s[2] for s in segments], dtype=np.float64).reshape(-1, 4),
        [d[0] for d in detections],
        np.array([d[1] for d in detections], dtype=np.int64),
        np.array([d[2] for d in detections], dtype=np.float64).reshape(-1, 4),
        min_iou=min_iou,
    )


def as_lists(result) -> tuple[list[int], list[int], list[float | None]]:
    iou = [None if np.isnan(v) else round(float(v), 12) for v in result.iou]
    return result.detection.tolist(), result.kind.tolist(), iou


def test_match_names() -> None:
    assert MATCH_NAMES == {MATCH_NONE: None, MATCH_COLOUR: "color", MATCH_BBOX: "bbox"}


def test_colour_match_wins_over_a_better_iou_box() -> None:
    segments = [
        ((0, 1, 32), FACE, [0, 0, 10, 10]),
        ((0, 2, 32), FACE, [0, 0, 10, 5]),
    ]
    # The detection's box is segment 0's box exactly, but its colour names segment 1.
    detections = [((0, 2, 32), FACE, [0, 0, 10, 10])]
    result = match(segments, detections)
    assert as_lists(result) == ([-1, 0], [MATCH_NONE, MATCH_COLOUR], [None, 0.5])


def test_colour_match_ignores_type_and_box() -> None:
    segments = [((0, 9, 16), VEHICLE, [0, 0, 5, 5])]
    detections = [((0, 9, 16), FACE, NAN_BOX)]
    assert as_lists(match(segments, detections)) == ([0], [MATCH_COLOUR], [0.0])


def test_first_detection_with_a_colour_takes_the_segment() -> None:
    segments = [((0, 1, 128), PERSON, [0, 0, 10, 10])]
    detections = [((0, 1, 128), PERSON, [50, 50, 60, 60]), ((0, 1, 128), PERSON, [0, 0, 10, 10])]
    assert as_lists(match(segments, detections)) == ([0], [MATCH_COLOUR], [0.0])


def test_colour_taken_detection_is_not_reused_by_box() -> None:
    segments = [((0, 1, 32), FACE, [0, 0, 10, 10]), ((0, 2, 32), FACE, [0, 0, 10, 10])]
    detections = [((0, 1, 32), FACE, [0, 0, 10, 10])]
    assert as_lists(match(segments, detections)) == (
        [0, -1],
        [MATCH_COLOUR, MATCH_NONE],
        [1.0, None],
    )


def test_colour_not_in_the_mask_falls_back_to_box() -> None:
    segments = [((0, 1, 32), FACE, [0, 0, 10, 10])]
    detections = [((0, 99, 32), FACE, [0, 0, 10, 5])]
    assert as_lists(match(segments, detections)) == ([0], [MATCH_BBOX], [0.5])


def test_one_to_one_two_detections_one_segment() -> None:
    segments = [((0, 1, 128), PERSON, [0, 0, 10, 10])]
    detections = [
        (None, PERSON, [5, 0, 15, 10]),  # IoU 1/3
        (None, PERSON, [0, 0, 10, 5]),  # IoU 1/2: wins
    ]
    assert as_lists(match(segments, detections)) == ([1], [MATCH_BBOX], [0.5])


def test_one_to_one_two_segments_one_detection() -> None:
    segments = [((0, 1, 128), PERSON, [5, 0, 15, 10]), ((0, 2, 128), PERSON, [0, 0, 10, 5])]
    detections = [(None, PERSON, [0, 0, 10, 10])]
    assert as_lists(match(segments, detections)) == ([-1, 0], [MATCH_NONE, MATCH_BBOX], [None, 0.5])


def test_greedy_pairs_by_descending_iou() -> None:
    # s0-d0 1/3, s0-d1 1.0, s1-d0 0.5, s1-d1 0.5: s0 takes d1 first, then s1 takes d0.
    segments = [((0, 1, 128), PERSON, [0, 0, 10, 10]), ((0, 2, 128), PERSON, [0, 0, 10, 5])]
    detections = [(None, PERSON, [5, 0, 15, 10]), (None, PERSON, [0, 0, 10, 10])]
    result = match(segments, detections)
    assert as_lists(result) == ([1, 0], [MATCH_BBOX, MATCH_BBOX], [1.0, round(25 / 125, 12)])


def test_type_must_agree_for_box_matches() -> None:
    segments = [((0, 1, 16), VEHICLE, [0, 0, 10, 10])]
    detections = [(None, FACE, [0, 0, 10, 10])]
    assert as_lists(match(segments, detections)) == ([-1], [MATCH_NONE], [None])


def test_type_flags_of_overlapping_segment_match_either_type() -> None:
    # v26 plate-on-vehicle segment (B = 80) carries both flags.
    segments = [((0, 1, 80), PLATE | VEHICLE, [0, 0, 10, 10])]
    for flag in (PLATE, VEHICLE):
        assert as_lists(match(segments, [(None, flag, [0, 0, 10, 10])])) == (
            [0],
            [MATCH_BBOX],
            [1.0],
        )
    assert as_lists(match(segments, [(None, PERSON, [0, 0, 10, 10])]))[0] == [-1]


@pytest.mark.parametrize("segment_flags", [-1, 0])
def test_invalid_or_untyped_segments_never_match_by_box(segment_flags: int) -> None:
    segments = [((7, 1, 3), segment_flags, [0, 0, 10, 10])]
    detections = [(None, PERSON | FACE | PLATE | VEHICLE, [0, 0, 10, 10])]
    assert as_lists(match(segments, detections)) == ([-1], [MATCH_NONE], [None])


def test_unknown_detection_type_never_matches_by_box() -> None:
    segments = [((0, 1, 128), PERSON, [0, 0, 10, 10])]
    assert as_lists(match(segments, [(None, 0, [0, 0, 10, 10])])) == ([-1], [MATCH_NONE], [None])


def test_nan_boxes_never_match() -> None:
    segments = [((0, 1, 128), PERSON, [0, 0, 10, 10]), ((0, 2, 128), PERSON, NAN_BOX)]
    detections = [(None, PERSON, NAN_BOX), (None, PERSON, [0, 0, 10, 10])]
    result = match(segments, detections)
    assert as_lists(result) == ([1, -1], [MATCH_BBOX, MATCH_NONE], [1.0, None])


def test_min_iou_excludes_pairs_at_or_below_it() -> None:
    segments = [((0, 1, 128), PERSON, [0, 0, 10, 10])]
    detections = [(None, PERSON, [0, 0, 10, 5])]  # IoU 0.5
    assert as_lists(match(segments, detections, min_iou=0.5))[0] == [-1]
    assert as_lists(match(segments, detections, min_iou=0.49))[0] == [0]


def test_tie_goes_to_lower_segment_then_lower_detection() -> None:
    box = [0, 0, 10, 10]
    two_segments = [((0, 1, 128), PERSON, box), ((0, 2, 128), PERSON, box)]
    assert as_lists(match(two_segments, [(None, PERSON, box)]))[0] == [0, -1]
    one_segment = [((0, 1, 128), PERSON, box)]
    assert as_lists(match(one_segment, [(None, PERSON, box), (None, PERSON, box)]))[0] == [0]
    # All four pairs tie: (s0, d0) first, then (s1, d1).
    two_detections = [(None, PERSON, box), (None, PERSON, box)]
    assert as_lists(match(two_segments, two_detections))[0] == [0, 1]


def test_matching_is_deterministic_and_permutation_consistent() -> None:
    rng = np.random.default_rng(14)
    corners = rng.integers(0, 30, (6, 2))
    seg_boxes = np.concatenate([corners, corners + rng.integers(4, 15, (6, 2))], axis=1)
    det_boxes = seg_boxes[rng.permutation(6)] + rng.integers(-3, 4, (6, 4))
    seg_flags = rng.choice([PERSON, FACE, PLATE | VEHICLE], 6)
    det_flags = seg_flags[rng.permutation(6)]
    segments = [((0, i + 1, 0), int(seg_flags[i]), seg_boxes[i].tolist()) for i in range(6)]
    detections = [(None, int(det_flags[i]), det_boxes[i].tolist()) for i in range(6)]
    candidate = box_iou(seg_boxes, det_boxes)[(seg_flags[:, None] & det_flags[None, :]) != 0]
    candidate = candidate[candidate > 0]
    assert len(set(candidate.tolist())) == len(candidate) >= 8  # precondition: no ties
    first = as_lists(match(segments, detections))
    assert sum(d >= 0 for d in first[0]) >= 2
    assert all(as_lists(match(segments, detections)) == first for _ in range(3))
    # Without ties, reversing the detections permutes the indexes but not the pairs.
    reversed_result = as_lists(match(segments, detections[::-1]))
    assert [-1 if d < 0 else 5 - d for d in reversed_result[0]] == first[0]
    assert reversed_result[2] == first[2]
    taken = [d for d in first[0] if d >= 0]
    assert len(taken) == len(set(taken))


def test_unmatched_segments_are_minus_one_with_nan_iou() -> None:
    segments = [((0, i, 128), PERSON, [i * 20, 0, i * 20 + 10, 10]) for i in range(1, 4)]
    detections = [(None, PERSON, [20, 0, 30, 10])]
    result = match(segments, detections)
    assert result.detection.dtype == np.int64
    assert result.kind.dtype == np.int8
    assert result.iou.dtype == np.float64
    assert as_lists(result) == (
        [0, -1, -1],
        [MATCH_BBOX, MATCH_NONE, MATCH_NONE],
        [1.0, None, None],
    )


def test_no_detections_and_no_segments() -> None:
    segments = [((0, 1, 128), PERSON, [0, 0, 10, 10])]
    assert as_lists(match(segments, [])) == ([-1], [MATCH_NONE], [None])
    result = match([], [(None, PERSON, [0, 0, 10, 10])])
    assert result.detection.shape == result.kind.shape == result.iou.shape == (0,)


def test_against_brute_force_optimal_on_distinct_ious() -> None:
    # With distinct IoUs, greedy matching must pair each segment with a detection such that no
    # unmatched-or-worse pair has a higher IoU for both (greedy stability); check exhaustively.
    rng = np.random.default_rng(11)
    for _ in range(40):
        n, m = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        corners = rng.integers(0, 20, (n + m, 2))
        boxes = np.concatenate([corners, corners + rng.integers(1, 12, (n + m, 2))], axis=1)
        segments = [((0, i + 1, 128), PERSON, boxes[i].tolist()) for i in range(n)]
        detections = [(None, PERSON, boxes[n + j].tolist()) for j in range(m)]
        result = match(segments, detections)
        iou = box_iou(boxes[:n], boxes[n:])
        partner = {int(s): int(d) for s, d in enumerate(result.detection) if d >= 0}
        owner = {d: s for s, d in partner.items()}
        for s, d in itertools.product(range(n), range(m)):
            if iou[s, d] <= 0 or partner.get(s) == d:
                continue
            s_has = iou[s, partner[s]] if s in partner else -1.0
            d_has = iou[owner[d], d] if d in owner else -1.0
            assert not (iou[s, d] > s_has and iou[s, d] > d_has), (s, d, partner)
