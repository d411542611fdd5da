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
from pipeline.stages.video import _LabelKeys, _VideoStats

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
    themselves do."""
    codes = [names.index(label) for label in labels]
    encoded = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int64()), pa.array(names))
    expected = list(label_groups(labels))
    for got in (
        list(label_groups(encoded)),
        list(_LabelKeys.of(names).groups(np.array(codes, dtype=np.int64))),
    ):
        assert [key for key, _ in got] == [key for key, _ in expected]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))


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
def test_video_label_sums_equal_a_loop_in_frame_order(batches: list[tuple[list[Any], ...]]) -> None:
    stats = _VideoStats()
    counts: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    scored: Counter[str] = Counter()
    for labels, given_scores, _ in batches:
        scores = np.array([math.nan if s is None else s for s in given_scores], dtype=np.float64)
        stats.add_detections(label_groups(labels), scores)
        for label, score in zip(labels, scores.tolist(), strict=True):
            counts[str(label)] += 1
            if math.isfinite(score):
                sums[str(label)] += score
                scored[str(label)] += 1
    assert stats.labels == counts and stats.label_scored == scored
    assert stats.label_score_sum == {key: sums[key] for key in scored}
    assert all(math.copysign(1, stats.label_score_sum[k]) == math.copysign(1, sums[k])
               for k in scored)  # fmt: skip


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
