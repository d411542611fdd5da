"""Per-label statistics computed per distinct label (``label_groups``) against plain loops
over the detections, one by one: the batch summary's exact sums and a video's frame-order
float sums, bit for bit."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stages.summary import BatchSummary, label_groups
from pipeline.stages.video import _add_detections, _LabelKeys, _VideoStats

_labels = st.lists(st.sampled_from([None, "None", "face", "person", "", "licence plate"]))
_score = st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0.1, 0.2, 0.7, -0.0]))


@st.composite
def _detections(draw: st.DrawFn) -> tuple[list[Any], list[Any], list[Any]]:
    labels = draw(_labels)
    scores = draw(st.lists(_score, min_size=len(labels), max_size=len(labels)))
    flags = draw(st.lists(st.sampled_from([None, True, False]), min_size=len(labels),
                          max_size=len(labels)))  # fmt: skip
    return labels, scores, flags


@settings(max_examples=200, deadline=None)
@given(_labels)
def test_label_groups_partition_the_positions_by_str_label(labels: list[Any]) -> None:
    groups = list(label_groups(labels))
    assert [key for key, _ in groups] == list(dict.fromkeys(map(str, labels)))
    for key, selected in groups:
        assert np.flatnonzero(selected).tolist() == [
            i for i, label in enumerate(labels) if str(label) == key
        ]


@settings(max_examples=200, deadline=None)
@given(_labels, st.permutations([None, "None", "face", "person", "", "licence plate", "unused"]))
def test_label_groups_of_codes_equal_those_of_their_labels(
    labels: list[Any], names: list[Any]
) -> None:
    """Labels as codes into names, as a dictionary array or as pass 2 holds them (codes into a
    task's labels, a missing label a name too, some names unused), group as the labels
    themselves do: pass 2 counts them under the same keys, in the same order."""
    codes = [names.index(label) for label in labels]
    encoded = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int64()), pa.array(names))
    expected = list(label_groups(labels))
    got = list(label_groups(encoded))
    assert [key for key, _ in got] == [key for key, _ in expected]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))
    stats = _VideoStats()
    scores = np.zeros(len(codes))
    _add_detections([(stats, np.array(codes, dtype=np.int64), scores)], _LabelKeys.of(names))
    assert list(stats.labels.items()) == [(key, int(mask.sum())) for key, mask in expected]


@settings(max_examples=200, deadline=None)
@given(_detections())
def test_batch_label_statistics_equal_a_loop(columns: tuple[list[Any], ...]) -> None:
    labels, scores, flags = columns
    summary = BatchSummary()
    summary.add_detection_columns(pa.array(labels, pa.string()), scores, flags)
    expected: dict[str, list[Any]] = {}
    for label, score, flag in zip(labels, scores, flags, strict=True):
        row = expected.setdefault(str(label), [0, 0, [], 0])
        row[0] += 1
        row[1] += bool(flag)
        if score is not None:
            row[2].append(score)
            row[3] += 1
    got = {
        key: [s.detections, s.anonymised, s.score_sum, s.scored]
        for key, s in summary.labels.items()
    }
    assert got == {k: [d, a, Fraction(math.fsum(v)), n] for k, (d, a, v, n) in expected.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(_detections(), max_size=4))
def test_video_label_sums_equal_a_loop_in_frame_order(videos: list[tuple[list[Any], ...]]) -> None:
    """Several videos counted at once (pass 2's one kernel call per task) each equal a plain
    loop over its detections: counts, float sums bit for bit (sign of zero included), the
    order labels first appear in, the score histogram."""
    names = [None, "None", "face", "person", "", "licence plate"]
    keys = _LabelKeys.of(names)
    stats = [_VideoStats() for _ in videos]
    counted = []
    for video, (labels, given_scores, _) in zip(stats, videos, strict=True):
        scores = np.array([math.nan if s is None else s for s in given_scores], dtype=np.float64)
        codes = np.array([names.index(label) for label in labels], dtype=np.int64)
        counted.append((video, codes, scores))
    _add_detections(counted, keys)
    for video, (_, _, scores), (labels, _, _) in zip(stats, counted, videos, strict=True):
        counts: Counter[str] = Counter()
        sums: dict[str, float] = {}
        scored: Counter[str] = Counter()
        histogram = np.zeros(1001, dtype=np.int64)
        for label, score in zip(labels, scores.tolist(), strict=True):
            counts[str(label)] += 1
            if math.isfinite(score):
                sums[str(label)] = sums.get(str(label), 0.0) + score
                scored[str(label)] += 1
            if 0 <= score <= 1:
                histogram[math.floor(score * 1000)] += 1
        assert video.detections == len(labels)
        assert list(video.labels.items()) == list(counts.items())
        assert video.label_scored == scored
        # In order of each label's first detection (as label_groups gives them), scored or not.
        firsts = dict.fromkeys(map(str, labels))
        assert list(video.label_score_sum.items()) == [(k, sums[k]) for k in firsts if k in sums]
        assert all(math.copysign(1, video.label_score_sum[k]) == math.copysign(1, sums[k])
                   for k in scored)  # fmt: skip
        assert video.scores.counts.tolist() == histogram.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(_detections(), max_size=5))
def test_files_added_at_once_equal_each_file_added_alone(
    files: list[tuple[list[Any], ...]],
) -> None:
    """The stage adds a batch's chunks in one call, each chunk's scores summed on their own."""
    alone = BatchSummary()
    for labels, scores, flags in files:
        alone.add_detection_columns(labels, scores, flags)
    at_once = BatchSummary()
    at_once.add_detection_columns(
        [label for labels, _, _ in files for label in labels],
        [score for _, scores, _ in files for score in scores],
        [flag for _, _, flags in files for flag in flags],
        files=[i for i, (labels, _, _) in enumerate(files) for _ in labels],
    )
    assert at_once.labels == alone.labels
