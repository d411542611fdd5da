"""Tests of :mod:`pipeline.formats.video`: video metadata chunks as columns.

The fast typed path (msgspec) and the validating path must give identical columns for every chunk
the schema accepts; chunks it refuses go to the validating path, which reports each problem.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats import video
from pipeline.formats.metadata import MAX_DETECTIONS, Finding, MetadataError, ResolvedSize
from pipeline.formats.video import (
    _DECODER,
    _LENIENT_DECODER,
    DETECTION_COLUMNS,
    ParsedChunk,
    _parse_scanned,
    _parse_typed,
    _parse_validating,
    parse_chunk,
    summarise_findings,
)
from pipeline.io.jsonio import JsonError, parse_json
from pipeline.kernels import chunkscan
from pipeline.sampledata import mot
from pipeline.sampledata.video import make_video_fleet
from pipeline.tables import SCHEMAS

CAP = 1 << 20
COMPARED = ("detections", "frame_ids", "frame_sizes", "frame_detections", "frame_durations")


def _columns(parsed: ParsedChunk) -> dict[str, Any]:
    columns = {name: getattr(parsed, name) for name in COMPARED}
    assert all(v.type == SCHEMAS["detections"].field(k).type for k, v in parsed.detections.items())
    columns["detections"] = _values(parsed)
    return columns


def _values(parsed: ParsedChunk) -> dict[str, list[Any]]:
    return {name: values.to_pylist() for name, values in parsed.detections.items()}


def _dumps(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


# ---------------------------------------------------------------------------------------------
# Strategies: chunks the typed schema accepts (values may still be unusable, e.g. a score of 1.5)
# ---------------------------------------------------------------------------------------------

_numbers = st.one_of(
    st.integers(-50, 5000),
    st.floats(-50, 5000, allow_nan=False, allow_infinity=False),
    # Finite, but a column's sum overflows (the fast path must fall back, not fail).
    st.sampled_from([1.7e308, -1.7e308]),
)
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


_detection = st.fixed_dictionaries(
    {},
    optional={
        "id": _maybe(st.integers(0, 10**6)),
        "parent_image": st.integers(0, 10**6),
        "type": _maybe(st.integers(0, 255)),
        "type_label": _maybe(st.sampled_from(["face", "license plate", "person", ""]) | _text),
        "score": _maybe(
            st.floats(-0.5, 1.5, allow_nan=False, allow_infinity=False) | st.integers(0, 1)
        ),
        "is_anonymised": _maybe(st.booleans()),
        "is_anonymized": _maybe(st.booleans()),
        "bbox": _maybe(
            st.lists(_numbers, min_size=4, max_size=4) | st.lists(_numbers, min_size=0, max_size=6)
        ),
        "offset": _maybe(st.lists(_numbers, min_size=1, max_size=3)),
        "color": _maybe(st.lists(st.integers(-3, 300), min_size=2, max_size=4)),
    },
)
_frame = st.fixed_dictionaries(
    {"id": st.integers(-3, 40), "detections": st.lists(_detection, max_size=5)},
    optional={
        "size": _maybe(
            st.lists(st.integers(1, 4000), min_size=2, max_size=2)
            | st.lists(st.integers(-2, 4000), min_size=1, max_size=3)
        ),
        "duration": _maybe(
            st.floats(0, 5, allow_nan=False, allow_infinity=False) | st.integers(0, 3)
        ),
    },
)
_chunk = st.lists(_frame, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_chunk)
def test_fast_and_validating_paths_give_identical_columns(frames: list[dict[str, Any]]) -> None:
    data = _dumps(frames)
    lenient = _LENIENT_DECODER.decode(data)  # the typed schema accepts it: parse_chunk takes a
    fast = parse_chunk(data, max_bytes=CAP)  # typed path (boxes as tuples when all hold 4)
    slow = _parse_validating(parse_json(data))
    assert _columns(fast) == _columns(slow)
    assert _columns(_parse_typed(lenient, fixed=False)) == _columns(fast)
    assert (fast.frames_in_file, fast.duplicate_frames) == (
        slow.frames_in_file,
        slow.duplicate_frames,
    )
    assert set(fast.detections) == set(DETECTION_COLUMNS)
    assert all(len(values) == fast.detection_count for values in fast.detections.values())
    assert fast.frame_ids == list(dict.fromkeys(f["id"] for f in frames))
    if len(set(f["id"] for f in frames)) == len(frames):
        # The typed path counts the values it refused ("3 values unusable"); the validating
        # path reports each one.
        counted = {f.error: int(f.message.split()[0]) for f in fast.findings}
        assert all(f.message.endswith(" values unusable") for f in fast.findings)
        assert counted == Counter(f.error for f in slow.findings)


def test_whole_column_fast_paths_equal_the_validating_path() -> None:
    """Every box, offset and score usable and every colour null (as the product writes): the
    columns are built whole; huge finite boxes (their sum overflows) take the per-value way."""
    for big in (1.0, 1.7e308):
        frames = [
            {"id": f, "size": [1080, 1920], "detections": [
                {"id": d, "type": 102, "type_label": "person", "score": 0.25 * d,
                 "is_anonymised": True, "bbox": [big, 2.0, big, 40.5], "offset": [1, 2],
                 "color": None} for d in range(5)]}
            for f in range(4)
        ]  # fmt: skip
        data = _dumps(frames)
        fast = parse_chunk(data, max_bytes=CAP)
        assert _columns(fast) == _columns(_parse_validating(parse_json(data)))
        assert _values(fast)["x1"] == [big] * 20 and not fast.findings


@settings(max_examples=150, deadline=None)
@given(_chunk.filter(lambda fs: any(f["detections"] for f in fs)), st.data())
def test_a_nan_score_only_nulls_that_score(
    frames: list[dict[str, Any]], data: st.DataObject
) -> None:
    """A NaN literal forces the validating path; the columns equal the fast path's on the same
    chunk with that score null, and the problem is reported."""
    where = [(i, j) for i, f in enumerate(frames) for j in range(len(f["detections"]))]
    i, j = data.draw(st.sampled_from(where))
    with_null = json.loads(json.dumps(frames))
    with_null[i]["detections"][j]["score"] = None
    with_nan = json.loads(json.dumps(frames))
    with_nan[i]["detections"][j]["score"] = float("nan")
    parsed = parse_chunk(_dumps(with_nan), max_bytes=CAP)
    assert _columns(parsed) == _columns(parse_chunk(_dumps(with_null), max_bytes=CAP))
    first_copy = all(frames[k]["id"] != frames[i]["id"] for k in range(i))
    expected = Finding(
        "warning", "bad_score", f"frame {frames[i]['id']}: detection {j}: score nan not in 0..1"
    )
    assert (expected in parsed.findings) == first_copy


# ---------------------------------------------------------------------------------------------
# Inputs the typed schema refuses: documented rows and findings
# ---------------------------------------------------------------------------------------------


def _detection(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 0, "parent_image": 7, "offset": [1, 2], "bbox": [1, 2, 11, 22], "type": 103,
        "score": 0.5, "is_anonymised": True, "type_label": "face", "color": None,
    }  # fmt: skip
    base.update(fields)
    return base


def _frame(frame_id: Any = 7, detections: Any = None, **fields: Any) -> dict[str, Any]:
    frame = {"id": frame_id, "detections": [_detection()] if detections is None else detections,
             "size": [100, 200], "duration": 0.25}  # fmt: skip
    frame.update(fields)
    return frame


def _refused(frames: list[Any]) -> ParsedChunk:
    data = _dumps(frames)
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        _LENIENT_DECODER.decode(data)
    return parse_chunk(data, max_bytes=CAP)


def test_nan_score_is_null_with_a_finding() -> None:
    parsed = _refused([_frame(detections=[_detection(score=float("nan")), _detection(id=1)])])
    assert _values(parsed)["score"] == [None, 0.5]
    assert _values(parsed)["detection_id"] == [0, 1]
    assert parsed.findings == [
        Finding("warning", "bad_score", "frame 7: detection 0: score nan not in 0..1")
    ]


def test_bool_score_is_null_with_a_finding() -> None:
    parsed = _refused([_frame(detections=[_detection(score=True)])])
    assert _values(parsed)["score"] == [None]
    assert parsed.findings == [
        Finding("warning", "bad_score", "frame 7: detection 0: score True not in 0..1")
    ]


def test_integral_float_id_is_read_as_int() -> None:
    parsed = _refused([_frame(detections=[_detection(id=3.0), _detection(id=4)])])
    assert _values(parsed)["detection_id"] == [3, 4]
    assert all(type(v) is int for v in _values(parsed)["detection_id"])
    assert parsed.findings == []
    # every other column as the fast path gives it for id 3
    fast = parse_chunk(
        _dumps([_frame(detections=[_detection(id=3), _detection(id=4)])]), max_bytes=CAP
    )
    assert _columns(parsed) == _columns(fast)


@pytest.mark.parametrize("bad_id", [None, "7", True, 7.5, "missing"])
def test_frame_without_integer_id_is_skipped(bad_id: Any) -> None:
    middle = _frame(bad_id)
    if bad_id == "missing":
        del middle["id"]
    parsed = _refused([_frame(1), middle, _frame(3)])
    assert parsed.frame_ids == [1, 3]
    assert _values(parsed)["frame"] == [1, 3]
    assert parsed.frames_in_file == 2
    assert parsed.findings == [
        Finding("warning", "bad_frame", "frame at position 1 has no integer id; skipped")
    ]


@pytest.mark.parametrize(
    ("detections", "kind"),
    [({"a": 1}, "dict"), ("x", "str"), (None, "NoneType"), ("missing", "NoneType")],
)
def test_detections_not_a_list_leave_the_frame_without_detections(
    detections: Any, kind: str
) -> None:
    frame = _frame(5, detections=[])
    if detections == "missing":
        del frame["detections"]
    else:
        frame["detections"] = detections
    parsed = _refused([frame, _frame(6)])
    assert parsed.frame_ids == [5, 6]
    assert parsed.frame_detections == [0, 1]
    assert _values(parsed)["frame"] == [6]
    assert parsed.findings == [
        Finding("warning", "bad_detections", f"frame 5: 'detections' is {kind}, not a list")
    ]


def test_type_label_that_is_not_a_string_is_null_and_reported() -> None:
    """The module promises that the validating path "reports each problem as a finding"."""
    parsed = _refused([_frame(detections=[_detection(type_label=5), _detection(id=1)])])
    assert _values(parsed)["type_label"] == [None, "face"]
    assert _values(parsed)["detection_id"] == [0, 1]
    assert any("type_label" in f.message for f in parsed.findings), parsed.findings


def test_refused_chunk_keeps_everything_else() -> None:
    """One bad value sends the chunk down the validating path; the other values stay."""
    frames = [_frame(f, detections=[_detection(id=0, bbox=[f, f, 150, f + 10])]) for f in range(4)]
    valid = parse_chunk(_dumps(frames), max_bytes=CAP)
    frames[2]["detections"][0]["score"] = float("nan")
    refused = _refused(frames)
    expected = _columns(valid)
    expected["detections"]["score"][2] = None
    assert _columns(refused) == expected
    assert refused.frame_sizes == [ResolvedSize(200, 100, "hw", "bbox")] * 4


def test_a_box_of_another_length_takes_the_lenient_typed_path() -> None:
    """The strict decoder takes boxes and offsets of exactly 4 and 2 numbers; a chunk holding
    another length is decoded again with lists, and only those values are refused (a box with a
    finding, as the validating path refuses it; an offset silently, as ever)."""
    frames = [_frame(detections=[_detection(bbox=[1, 2, 3]), _detection(id=1, offset=[1, 2, 3])])]
    data = _dumps(frames)
    with pytest.raises(msgspec.ValidationError):
        _DECODER.decode(data)
    parsed = parse_chunk(data, max_bytes=CAP)
    values = _values(parsed)
    assert (values["x1"], values["y2"]) == ([None, 1.0], [None, 22.0])
    assert (values["offset_x"], values["offset_y"]) == ([1.0, None], [2.0, None])
    assert parsed.findings == [Finding("warning", "bad_bbox", "1 values unusable")]
    assert {f.error for f in _parse_validating(parse_json(data)).findings} == {"bad_bbox"}


def test_top_level_object_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError) as info:
        parse_chunk(b'{"id": 1, "detections": []}', max_bytes=CAP)
    assert info.value.code == "bad_video_metadata"
    assert "dict" in str(info.value)


def test_not_json_is_a_json_error() -> None:
    with pytest.raises(JsonError) as info:
        parse_chunk(b'[{"id": 1, "detections": [', max_bytes=CAP)
    assert info.value.code == "syntax"


def test_too_large_is_a_json_error() -> None:
    data = _dumps([_frame(f) for f in range(3)])
    assert parse_chunk(data, max_bytes=len(data)).frame_ids == [0, 1, 2]
    with pytest.raises(JsonError) as info:
        parse_chunk(data, max_bytes=len(data) - 1)
    assert info.value.code == "too_large"
    assert str(len(data)) in str(info.value)


def test_duplicate_frames_keep_the_first_copy() -> None:
    frames = [_frame(1), _frame(2, detections=[]), _frame(1, detections=[]), _frame(2), _frame(3)]
    parsed = parse_chunk(_dumps(frames), max_bytes=CAP)
    assert parsed.frame_ids == [1, 2, 3]
    assert parsed.frame_detections == [1, 0, 1]
    assert _values(parsed)["frame"] == [1, 3]
    assert (parsed.frames_in_file, parsed.duplicate_frames) == (5, 2)
    assert [f.error for f in parsed.findings] == ["duplicate_frame", "duplicate_frame"]
    assert "frame id 1 " in parsed.findings[0].message


def test_both_spellings_of_is_anonymised() -> None:
    detections = [
        {"is_anonymised": True},
        {"is_anonymized": False},
        {"is_anonymised": None, "is_anonymized": True},
        {},
    ]
    parsed = parse_chunk(_dumps([_frame(detections=detections)]), max_bytes=CAP)
    assert _values(parsed)["is_anonymised"] == [True, False, True, None]


def test_empty_chunk() -> None:
    parsed = parse_chunk(b"[]", max_bytes=CAP)
    assert parsed.frame_ids == [] and parsed.detection_count == 0 and parsed.findings == []


# ---------------------------------------------------------------------------------------------
# summarise_findings
# ---------------------------------------------------------------------------------------------


def test_summarise_findings_groups_per_severity_and_code() -> None:
    findings = [Finding("warning", "bad_score", f"m{i}") for i in range(5)]
    findings.insert(2, Finding("warning", "bad_bbox", "box"))
    findings.append(Finding("error", "bad_score", "e"))
    assert summarise_findings(findings) == [
        Finding("warning", "bad_score", "5x m0; m1; m2 (+2 more)"),
        Finding("warning", "bad_bbox", "box"),
        Finding("error", "bad_score", "e"),
    ]


def test_summarise_findings_limit_and_exact_count() -> None:
    findings = [Finding("warning", "x", "a"), Finding("warning", "x", "b")]
    assert summarise_findings(findings) == [Finding("warning", "x", "2x a; b")]
    assert summarise_findings(findings, limit=1) == [Finding("warning", "x", "2x a (+1 more)")]
    three = [*findings, Finding("warning", "x", "c")]
    assert summarise_findings(three) == [Finding("warning", "x", "3x a; b; c")]
    assert summarise_findings([]) == []


def test_nan_scores_in_many_frames_summarise_to_one_finding() -> None:
    frames = [_frame(f, detections=[_detection(score=math.nan)]) for f in range(10)]
    parsed = _refused(frames)
    summary = summarise_findings(parsed.findings)
    assert len(summary) == 1
    assert summary[0].error == "bad_score"
    assert summary[0].message.startswith("10x frame 0: detection 0: score nan")
    assert summary[0].message.endswith("(+7 more)")


@pytest.mark.parametrize(
    "score", ["0.5", '0.5, "color": [1, 2, 3]', "NaN"], ids=["scanned", "typed", "validating"]
)
def test_detections_over_the_cap_refuse_the_chunk_before_they_are_built(score: str) -> None:
    """MAX_DETECTIONS counts every frame's detections together, on every parse path (a colour
    sends the chunk past the scanner, NaN to the validating path); exactly the cap is
    accepted."""
    half = MAX_DETECTIONS // 2
    detection = '{"score": ' + score + "}"

    def chunk(counts: list[int]) -> bytes:
        frames = [f'{{"id": {i}, "detections": [{",".join([detection] * n)}]}}'
                  for i, n in enumerate(counts)]  # fmt: skip
        return ("[" + ",".join(frames) + "]").encode()

    assert parse_chunk(chunk([half, MAX_DETECTIONS - half]), max_bytes=10**8).detection_count == (
        MAX_DETECTIONS
    )
    with pytest.raises(MetadataError, match=f"more than {MAX_DETECTIONS} detections") as info:
        parse_chunk(chunk([half, MAX_DETECTIONS - half + 1]), max_bytes=10**8)
    assert info.value.code == "too_many_detections"


# ---------------------------------------------------------------------------------------------
# The scanner (pipeline.kernels.chunkscan): what it accepts gives what msgspec's path gives
# ---------------------------------------------------------------------------------------------


def _unscanned(data: bytes) -> ParsedChunk:
    """``parse_chunk`` without the scanner: msgspec's typed path, else the validating one."""
    with mock.patch.object(
        video, "_parse_scanned", side_effect=lambda datas: ([None] * len(datas), {})
    ):
        return parse_chunk(data, max_bytes=CAP)


def _scanned(data: bytes) -> ParsedChunk | None:
    """The scanner's path alone: ``None`` when it refuses the chunk."""
    outcomes, detections = _parse_scanned([data])
    parsed = outcomes[0]
    assert not isinstance(parsed, MetadataError)
    if parsed is not None:
        parsed.detections = detections
    return parsed


def _outcome(parse: Any) -> Any:
    """What ``parse()`` gives (:func:`_everything`), or the error it raises."""
    try:
        return _everything(parse())
    except (JsonError, MetadataError) as exc:
        return type(exc), str(exc)


def _everything(parsed: ParsedChunk) -> dict[str, Any]:
    """Every field of a parsed chunk, the detection columns with their types and validity."""
    columns = _columns(parsed)
    columns["types"] = {name: values.type for name, values in parsed.detections.items()}
    columns["nulls"] = {name: values.null_count for name, values in parsed.detections.items()}
    columns["float bits"] = {  # -0.0 == 0.0: compare the floats' bits too
        name: values.fill_null(0.0).to_numpy().tobytes()
        for name, values in parsed.detections.items()
        if values.type == "double"
    }
    columns["rest"] = (parsed.findings, parsed.frames_in_file, parsed.duplicate_frames)
    return columns


def _product_shaped(frame: dict[str, Any]) -> bool:
    """Whether a frame is in the shape the scanner must take (the product's own)."""

    def sized(values: list[Any] | None, length: int) -> bool:
        return values is None or len(values) == length

    def plain(label: str | None) -> bool:
        return label is None or (label.isascii() and label.isprintable() and '"' not in label
                                 and "\\" not in label)  # fmt: skip

    return sized(frame.get("size"), 2) and all(
        d.get("color") is None and plain(d.get("type_label")) and sized(d.get("bbox"), 4)
        and sized(d.get("offset"), 2)
        for d in frame["detections"]
    )  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_chunk, st.sampled_from([None, 2]))
def test_what_the_scanner_accepts_equals_the_msgspec_path(
    frames: list[dict[str, Any]], indent: int | None
) -> None:
    data = json.dumps(frames, indent=indent).encode()
    scanned = _scanned(data)
    if scanned is not None:
        assert _everything(scanned) == _everything(_unscanned(data))
    if frames and all(_product_shaped(frame) for frame in frames):
        assert scanned is not None


_PRODUCT = (
    '[{"id": 7, "detections": [{"id": 0, "parent_image": 7, "offset": [1, 2.5], '
    '"bbox": [1, 2.5, 30, 40.25], "type": 102, "score": 0.875, "is_anonymised": true, '
    '"type_label": "person", "color": null}], "size": [1080, 1920], "duration": 0.04}]'
)


#: Variations of the product's chunk: (old, new, taken by the scanner).
_QUIRKS = [
    ("", "", True),
    ("0.875", "-0.0", True),
    ("0.875", "1E-3", True),
    ("0.875", "1e+0", True),
    ("2.5, 30", "2.5e-400, 30", True),  # underflows to 0 in both parsers
    ("2.5, 30", "5e-324, 30", True),  # subnormal: converted by float(), not the kernel
    ("0.875", "0.87500000000000000001", True),  # beyond 19 digits: the same
    ("0.875", "1.0", True),  # Eisel-Lemire gives up: Clinger's fast path
    ("0.875", "123456789012345", True),
    ("0.875", "1234567890123456", False),  # an integer beyond 15 digits, where a float is
    ("0.875", "-0", False),
    ("0.875", "1e400", False),  # beyond a double
    ("0.875", "NaN", False),
    ("0.875", "true", False),
    ("0.875", '"0.5"', False),
    ("0.875", "01", False),
    ("0.875", "1.", False),
    ("0.875", ".5", False),
    ("0.875", "1e", False),
    ("0.875", "- 1", False),
    ('"id": 7', '"id": 7.0', False),
    ('"id": 7', '"id": null', False),
    ('"id": 7', '"id": 1234567890123456789', False),  # 19 digits
    ('"id": 0', '"id": -12', True),
    ('"type": 102', '"type": 102.5', False),
    ('"person"', '"per\\u0073on"', False),
    ('"person"', '"pers\u00f6n"', False),
    ('"person"', '""', True),
    ('"color": null', '"color": [1, 2, 3]', False),
    ('"color": null', '"colour": null', False),
    ('"color": null', '"color": null, "color": null', False),
    ('"color": null', '"parent_image": 8', False),  # a key twice
    ('"parent_image": 7', '"parent_image": 7.5', True),
    ('"parent_image": 7', '"parent_image": [7]', False),
    ('"is_anonymised": true', '"is_anonymized": false', True),
    ('"is_anonymised": true', '"is_anonymised": 1', False),
    ("[1080, 1920]", "[1080, 1920, 3]", False),
    ("[1080, 1920]", "[-1, 0]", True),
    ("[1080, 1920]", "[1080, 2147483648]", True),  # a side beyond 32 bits: unusable
    ("[1080, 1920]", "[2147483647, 1]", True),
    ("[1080, 1920]", "null", True),
    ("[1, 2.5]", "[1]", False),
    ("[1, 2.5, 30, 40.25]", "null", True),
    ('"duration": 0.04', '"duration": null', True),
    ('"duration": 0.04', '"duration": 4', True),
    (", ", ",\t\r\n ", True),
    (", ", ",\f", False),
    ("}], ", "}, {}], ", True),  # an empty detection
    ('"detections": [{', '"detections": [], "x": [{', False),
]


@pytest.mark.parametrize(("old", "new", "scanned"), _QUIRKS)
def test_the_scanner_on_the_quirks_it_must_refuse_or_take(
    old: str, new: str, scanned: bool
) -> None:
    """Each variation of a chunk as the product writes it is taken by the scanner or refused,
    and either way ``parse_chunk`` gives exactly what it gave without the scanner."""
    data = _PRODUCT.replace(old, new, 1).encode()
    assert (_scanned(data) is not None) == scanned
    assert _outcome(lambda: parse_chunk(data, max_bytes=CAP)) == _outcome(lambda: _unscanned(data))


@pytest.mark.parametrize(
    "data",
    [b"", b"  ", b"[]", b"{}", b"[{}]", b"[1]", b"null", b"\xef\xbb\xbf" + _PRODUCT.encode(),
     _PRODUCT.encode() + b" x", _PRODUCT.encode() + b"]", b" " + _PRODUCT.encode() + b"\n",
     b'[{"id": 1, "detections": []},]', b'[{"id": 1, "detections": [],}]',
     b'[{"id": 1, "detections": [{"id": 1,}]}]', b'[{"id": 1}]', b'[{"detections": []}]',
     _PRODUCT.encode()[:-3]],
)  # fmt: skip
def test_the_scanner_refuses_what_is_not_a_chunk_of_frames(data: bytes) -> None:
    """Only whitespace around one array of frame objects is accepted; everything else fails or
    passes as it did without the scanner."""
    taken = _scanned(data)
    assert taken is None or data.strip() == _PRODUCT.encode()
    assert _outcome(lambda: parse_chunk(data, max_bytes=CAP)) == _outcome(lambda: _unscanned(data))


def test_the_scanner_takes_the_product_shaped_chunks_of_the_bench_and_sample_data(
    tmp_path: Path,
) -> None:
    """Real tracks (full-precision floats, the bench's section 5e) and the sample fleet's
    pretty-printed chunks without quirks all take the scanner, which converts every number
    itself, and give what msgspec's path gives."""
    sequence = mot.MOT_SEQUENCES[0]
    resampling, max_gap = next(iter(mot.REGIMES.values()))
    planted = mot.planted_video(sequence, **resampling, max_gap=max_gap, seed=1)
    mot.write_chunks(tmp_path, "clean.mp4", planted)
    mot.write_chunks(tmp_path, "noisy.mp4", mot.detector_noise(planted, **mot.NOISE, seed=2))
    make_video_fleet(tmp_path / "fleet", seed=2, videos=1, frames_per_video=600, quirks=False)
    paths = sorted(tmp_path.rglob("*.json"))
    assert len(paths) == 4
    for path in paths:
        data = path.read_bytes()
        scanned = _scanned(data)
        assert scanned is not None, path.name
        assert not len(chunkscan.scan_chunks([data]).pending), path.name
        assert _everything(scanned) == _everything(_unscanned(data)), path.name


# ---------------------------------------------------------------------------------------------
# Chunks parsed together (parse_chunks): each one's outcome is what it gives alone
# ---------------------------------------------------------------------------------------------

_batch_chunk = st.one_of(
    _chunk.map(lambda frames: json.dumps(frames).encode()),
    st.sampled_from([_PRODUCT.replace(old, new, 1).encode() for old, new, _ in _QUIRKS]),
    st.just((_PRODUCT[:-1] + ", " + _PRODUCT[1:]).encode()),  # frame 7 twice
    st.binary(max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_batch_chunk, max_size=6))
def test_chunks_parsed_together_give_what_each_gives_alone(datas: list[bytes]) -> None:
    """Scanned together, refused ones among them (whole or after the scan: a number beyond a
    double), each chunk's outcome and detection rows are what ``parse_chunk`` gives for it."""
    parsed = video.parse_chunks(datas, max_bytes=CAP)
    assert len(parsed.outcomes) == len(datas)
    for k, (data, outcome) in enumerate(zip(datas, parsed.outcomes, strict=True)):
        alone = _outcome(lambda data=data: parse_chunk(data, max_bytes=CAP))
        if isinstance(outcome, ParsedChunk):
            outcome.detections = parsed.detections_of([k])
            assert _everything(outcome) == alone
        else:
            assert (type(outcome), str(outcome)) == alone
    rows = sum(o.detection_count for o in parsed.outcomes if isinstance(o, ParsedChunk))
    assert all(len(values) == rows for values in parsed.detections.values())


# ---------------------------------------------------------------------------------------------
# The scanner's number conversion (Clinger's fast path, then Eisel-Lemire): Python's float
# ---------------------------------------------------------------------------------------------

_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


def _decimals(seed: int) -> list[str]:
    """JSON numbers: shortest reprs of random doubles (in a chunk's range and of any bits),
    decimals of 1-19 digits at exponents across a double's range, and the exact midpoints
    between neighbouring doubles (the inputs a conversion rounds wrongly if any), whole and cut
    to 17-19 digits."""
    rng = random.Random(seed)
    numbers = ["0", "-0.0", "1.0", "399.0", "9007199254740993", "1.7976931348623157e308",
               "1.7976931348623159e308", "2.2250738585072014e-308", "5e-324", "2.5e-400",
               "0e999", "-0e5", "1E2", "1e+2", "123456789012345678901"]  # fmt: skip
    for _ in range(3000):
        numbers.append(repr(rng.uniform(-5000, 5000)))
        numbers.append(repr(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]))
        digits = str(rng.randint(1, 10 ** rng.randint(1, 19)))
        numbers.append(f"{digits[0]}.{digits[1:] or 0}e{rng.randint(-30, 30)}")
        numbers.append(f"-{digits}e{rng.randint(-345, 320)}")
        below = rng.uniform(0.5, 5000.0)
        midpoint = (Decimal(below) + Decimal(math.nextafter(below, math.inf))) / 2
        numbers.append(format(midpoint, "f"))
        for kept in (17, 18, 19):
            step = Decimal(1).scaleb(midpoint.adjusted() - kept + 1)
            numbers.append(format(midpoint.quantize(step, rounding="ROUND_DOWN"), "f"))
    return [number for number in numbers if _JSON_NUMBER.match(number)]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_scanner_converts_numbers_as_python_does(seed: int) -> None:
    """Every number the kernel converts has exactly the bits of Python's correctly rounded
    ``float``; the others (beyond 19 digits, subnormal, beyond a double, undecided) it leaves
    to the caller, which converts them with ``float``."""
    for number in _decimals(seed):
        data = np.frombuffer(number.encode(), np.uint8)
        end, _, _, mantissa, exp10, exact = chunkscan._number(data, 0)
        assert end == len(data)
        negative = number[0] == "-"
        value, bits, how = chunkscan._convert(np.uint64(mantissa), exp10, negative, exact)
        if how != chunkscan._UNDECIDED:
            found = int(bits) if how == chunkscan._BITS else _bits(value)
            assert found == _bits(float(number)), number


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def test_a_fault_of_the_scanner_sends_every_chunk_to_msgspecs_path() -> None:
    """An unexpected exception in the scanner fails no chunk: each takes msgspec's path, which
    gives the same."""
    datas = [_PRODUCT.encode(), b"[]", _PRODUCT.replace("0.875", "1.5").encode(), b"{"]
    alone = [_outcome(lambda data=data: parse_chunk(data, max_bytes=CAP)) for data in datas]
    with mock.patch.object(video, "scan_chunks", side_effect=RuntimeError("a fault")):
        parsed = video.parse_chunks(datas, max_bytes=CAP)
    for k, outcome in enumerate(parsed.outcomes):
        if isinstance(outcome, ParsedChunk):
            outcome.detections = parsed.detections_of([k])
            assert _everything(outcome) == alone[k]
        else:
            assert (type(outcome), str(outcome)) == alone[k]


def test_a_fault_on_one_chunk_is_that_chunks_outcome() -> None:
    """An unexpected exception while decoding one chunk (one the scanner refuses) is its
    outcome, raised by ``parse_chunk``; the chunks around it are parsed as alone."""
    refused = _PRODUCT.replace('"color": null', '"color": [1, 2, 3]').encode()
    datas = [_PRODUCT.encode(), refused, _PRODUCT.encode()]
    with mock.patch.object(video, "_parse_typed", side_effect=RuntimeError("a fault")):
        parsed = video.parse_chunks(datas, max_bytes=CAP)
        with pytest.raises(RuntimeError, match="a fault"):
            parse_chunk(refused, max_bytes=CAP)
    assert isinstance(parsed.outcomes[1], RuntimeError)
    for k in (0, 2):
        outcome = parsed.outcomes[k]
        assert isinstance(outcome, ParsedChunk)
        outcome.detections = parsed.detections_of([k])
        assert _everything(outcome) == _everything(parse_chunk(datas[k], max_bytes=CAP))
