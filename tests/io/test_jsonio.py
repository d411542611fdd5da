"""Tests of :func:`pipeline.io.jsonio.parse_json`: size cap, encoding, syntax, NaN tolerance."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.io.jsonio import (
    DEFAULT_MAX_JSON_BYTES,
    MAX_JSON_CONTAINERS,
    MAX_JSON_VALUES,
    JsonError,
    parse_json,
)


def json_error(data: bytes, **kwargs: int) -> JsonError:
    with pytest.raises(JsonError) as info:
        parse_json(data, **kwargs)
    return info.value


def test_valid_json_document() -> None:
    document = {
        "id": "image-name.jpg",
        "detections": [{"id": 0, "bbox": [1957, 744, 3003, 1855], "score": 0.9993754029273987}],
        "size": [3456, 5184],
        "folder": None,
        "name": "caf\u00e9 \u2603",
        "ok": True,
    }
    assert parse_json(json.dumps(document, ensure_ascii=False).encode("utf-8")) == document


@pytest.mark.parametrize(
    ("text", "expected"), [("1", 1), ('"x"', "x"), ("null", None), ("[]", []), ("2.5", 2.5)]
)
def test_top_level_scalars_and_arrays(text: str, expected: object) -> None:
    assert parse_json(text.encode()) == expected


def test_nan_and_infinity_literals_are_accepted() -> None:
    result = parse_json(b'{"score": NaN, "values": [Infinity, -Infinity, 0.5]}')
    assert isinstance(result["score"], float)
    assert math.isnan(result["score"])
    assert result["values"][0] == math.inf
    assert result["values"][1] == -math.inf
    assert result["values"][2] == 0.5


def test_python_json_dumps_of_nan_round_trips() -> None:
    text = json.dumps({"score": float("nan"), "duration": float("inf")})
    result = parse_json(text.encode())
    assert math.isnan(result["score"])
    assert result["duration"] == math.inf


def test_size_cap_is_inclusive() -> None:
    data = b'{"a": [1, 2, 3]}'
    assert parse_json(data, max_bytes=len(data)) == {"a": [1, 2, 3]}
    error = json_error(data, max_bytes=len(data) - 1)
    assert error.code == "too_large"
    assert str(len(data)) in str(error)


def test_size_cap_is_checked_before_parsing() -> None:
    # Invalid JSON over the cap reports the cap, not a syntax error.
    assert json_error(b"[" * 1000, max_bytes=999).code == "too_large"


def test_default_cap_is_16_mib_and_the_options_default() -> None:
    from pipeline.config import RunOptions

    assert DEFAULT_MAX_JSON_BYTES == 16 * 1024 * 1024
    assert RunOptions(output="-").max_json_bytes == DEFAULT_MAX_JSON_BYTES


@pytest.mark.parametrize(
    "data",
    [
        b'{"name": "caf\xe9"}',  # latin-1
        "{}".encode("utf-16"),  # BOM + UTF-16
        b'{"a": "\xc3\x28"}',  # broken UTF-8 sequence
        b"\xff",
    ],
    ids=["latin-1", "utf-16", "broken-sequence", "lone-ff"],
)
def test_non_utf8_bytes_are_an_encoding_error(data: bytes) -> None:
    error = json_error(data)
    assert error.code == "encoding"
    assert str(error).startswith("not UTF-8 text")


@pytest.mark.parametrize(
    "data",
    [b'{"detections": [{"id": 0', b'{"a": ', b"[1, 2", b'"unterminated', b"", b"{'a': 1}"],
    ids=["cut-object", "cut-value", "cut-array", "cut-string", "empty", "single-quotes"],
)
def test_truncated_or_invalid_json_is_a_syntax_error(data: bytes) -> None:
    error = json_error(data)
    assert error.code == "syntax"
    assert str(error).startswith("invalid JSON")


@pytest.mark.parametrize("closed", [False, True], ids=["unclosed", "closed"])
def test_deep_nesting_is_a_syntax_error_not_recursion_error(closed: bool) -> None:
    data = b"[" * 100_000 + (b"]" * 100_000 if closed else b"")
    try:
        parse_json(data)
    except JsonError as exc:
        assert exc.code == "syntax"
    except RecursionError:  # pragma: no cover - the failure this test exists for
        pytest.fail("parse_json let a RecursionError escape")
    else:  # pragma: no cover
        pytest.fail("parse_json accepted 100000 nested arrays")


def test_json_error_is_a_value_error() -> None:
    assert isinstance(json_error(b"{"), ValueError)


def test_structure_caps_are_counted_from_the_bytes_before_parsing() -> None:
    """Bounded parsing refuses more than MAX_JSON_CONTAINERS objects and arrays, or more than
    MAX_JSON_VALUES values (containers + commas), and accepts exactly the caps; unbounded
    parsing (frames documents, mask labels) only has the size cap."""
    containers = b"[" + b",".join([b"{}"] * (MAX_JSON_CONTAINERS - 1)) + b"]"
    assert parse_json(containers, bounded=True) == [{}] * (MAX_JSON_CONTAINERS - 1)
    over = b"[" + b",".join([b"{}"] * MAX_JSON_CONTAINERS) + b"]"
    error = json_error(over, bounded=True)
    assert (error.code, str(error)) == (
        "too_complex",
        f"JSON with up to {MAX_JSON_CONTAINERS + 1} objects and arrays, over the cap of "
        f"{MAX_JSON_CONTAINERS}",
    )
    assert len(parse_json(over)) == MAX_JSON_CONTAINERS
    values = b"[" + b",".join([b"0"] * (MAX_JSON_VALUES - 1)) + b"]"  # 1 array, n - 2 commas
    assert len(parse_json(values, bounded=True)) == MAX_JSON_VALUES - 1
    error = json_error(b"[" + b",".join([b"0"] * (MAX_JSON_VALUES + 1)) + b"]", bounded=True)
    assert (error.code, str(error)) == (
        "too_complex", f"JSON with up to {MAX_JSON_VALUES + 1} values, over the cap of "
        f"{MAX_JSON_VALUES}",
    )  # fmt: skip
