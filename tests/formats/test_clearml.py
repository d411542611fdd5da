"""Tests of :mod:`pipeline.formats.clearml`: frames documents, mask references, ``mask_labels``
and mask URIs (SPEC 2.5), and the promise that no URI can name a path outside the output."""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.clearml import (
    FramesError,
    MaskLabelsError,
    MaskRef,
    frame_masks,
    load_frames,
    parse_mask_labels,
    parse_uri_map,
    resolve_uri,
    safe_relative_path,
)
from pipeline.io.jsonio import JsonError

CAP = 1 << 20


def _frame(frame_id: Any, *sources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": frame_id, "context_id": "ctx", "timestamp": 0, "sources": list(sources), **extra}


def _source(source_id: Any, masks: Any) -> dict[str, Any]:
    return {"id": source_id, "uri": f"https://example.com/{source_id}.png", "masks": masks}


def _ids(masks: list[MaskRef]) -> list[tuple[str | None, str | None, str, str]]:
    return [(m.frame_id, m.source_id, m.mask_id, m.uri) for m in masks]


# ---------------------------------------------------------------------------------------------
# load_frames
# ---------------------------------------------------------------------------------------------

FRAME_A = _frame("a", _source("s", ["a.png"]))
FRAME_B = _frame("b", _source("s", ["b.png"]))


def test_load_frames_object() -> None:
    assert load_frames(json.dumps(FRAME_A).encode(), max_bytes=CAP) == [FRAME_A]


def test_load_frames_array() -> None:
    data = json.dumps([FRAME_A, FRAME_B], indent=2).encode()
    assert load_frames(data, max_bytes=CAP) == [FRAME_A, FRAME_B]


def test_load_frames_empty_array() -> None:
    assert load_frames(b"[]", max_bytes=CAP) == []


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_load_frames_json_lines(newline: str) -> None:
    lines = [json.dumps(FRAME_A), json.dumps(FRAME_B), json.dumps(FRAME_A)]
    data = (newline.join(lines) + newline).encode()
    assert load_frames(data, max_bytes=CAP) == [FRAME_A, FRAME_B, FRAME_A]


def test_load_frames_json_lines_with_blank_lines() -> None:
    data = f"{json.dumps(FRAME_A)}\n\n   \n{json.dumps(FRAME_B)}\n\n".encode()
    assert load_frames(data, max_bytes=CAP) == [FRAME_A, FRAME_B]


def test_load_frames_json_lines_of_one_line() -> None:
    assert load_frames((json.dumps(FRAME_A) + "\n").encode(), max_bytes=CAP) == [FRAME_A]


@pytest.mark.parametrize(
    "data",
    [
        b'{"id": "a", "sources": [',
        b"",
        b"not json at all",
        # JSON Lines with one broken line: the whole document is refused, not half of it.
        (json.dumps(FRAME_A) + "\n" + '{"id": "b", \n').encode(),
    ],
)
def test_load_frames_invalid_json(data: bytes) -> None:
    with pytest.raises(JsonError):
        load_frames(data, max_bytes=CAP)


def test_load_frames_over_the_cap() -> None:
    with pytest.raises(JsonError) as info:
        load_frames(json.dumps(FRAME_A).encode(), max_bytes=10)
    assert info.value.code == "too_large"


@pytest.mark.parametrize("data", [b"42", b'"frames"', b"null", b"true"])
def test_load_frames_not_frames(data: bytes) -> None:
    with pytest.raises(FramesError):
        load_frames(data, max_bytes=CAP)


# ---------------------------------------------------------------------------------------------
# frame_masks
# ---------------------------------------------------------------------------------------------


def test_masks_as_dicts_with_ids() -> None:
    frame = _frame(
        "f1",
        _source(
            "left",
            [
                {"id": "labelIds", "uri": "m/a.png", "content_type": "image/png"},
                {"id": "instanceIds", "uri": "m/b.png", "content_type": "image/png"},
            ],
        ),
    )
    parsed = frame_masks("frames.json", [frame])
    assert _ids(parsed.masks) == [
        ("f1", "left", "labelIds", "m/a.png"),
        ("f1", "left", "instanceIds", "m/b.png"),
    ]
    assert [m.content_type for m in parsed.masks] == ["image/png", "image/png"]
    assert parsed.frames == 1
    assert parsed.warnings == []


def test_masks_as_bare_uris_get_ids_by_position() -> None:
    frame = _frame("f1", _source("s", ["a.png", "b.png", "c.png"]))
    parsed = frame_masks("frames.json", [frame])
    assert [m.mask_id for m in parsed.masks] == ["00", "01", "02"]
    assert [m.uri for m in parsed.masks] == ["a.png", "b.png", "c.png"]
    assert all(m.content_type is None for m in parsed.masks)


def test_masks_without_ids_count_positions_per_source() -> None:
    frame = _frame("f1", _source("s1", ["a.png", "b.png"]), _source("s2", ["c.png"]))
    parsed = frame_masks("frames.json", [frame])
    assert [(m.source_id, m.mask_id) for m in parsed.masks] == [
        ("s1", "00"),
        ("s1", "01"),
        ("s2", "00"),
    ]


def test_dict_masks_without_id_get_their_position() -> None:
    frame = _frame("f1", _source("s", [{"id": "x", "uri": "a.png"}, {"uri": "b.png"}]))
    parsed = frame_masks("frames.json", [frame])
    assert [m.mask_id for m in parsed.masks] == ["x", "01"]


def test_masks_as_mapping() -> None:
    frame = _frame("f1", _source("s", {"ID 1 ": "a.png", "ID 2": "b.png"}))
    parsed = frame_masks("frames.json", [frame])
    assert _ids(parsed.masks) == [("f1", "s", "ID 1 ", "a.png"), ("f1", "s", "ID 2", "b.png")]


@pytest.mark.parametrize(("given_id", "expected"), [(5, "5"), (0, "0"), ("007", "007")])
def test_given_ids_are_kept_as_strings(given_id: Any, expected: str) -> None:
    frame = _frame(12, _source(3, [{"id": given_id, "uri": "a.png"}]))
    (mask,) = frame_masks("frames.json", [frame]).masks
    assert mask.mask_id == expected
    assert mask.frame_id == "12"
    assert mask.source_id == "3"


def test_video_content_type() -> None:
    frame = _frame(
        "f",
        _source(
            "s",
            [
                {"id": "v", "uri": "v.mp4", "content_type": "video/mp4"},
                {"id": "p", "uri": "p.png", "content_type": "image/png"},
            ],
        ),
    )
    video, png = frame_masks("frames.json", [frame]).masks
    assert video.is_video and video.content_type == "video/mp4"
    assert not png.is_video


def test_frame_positions_and_documents() -> None:
    frames = [FRAME_A, {"id": "no-sources"}, FRAME_B]
    parsed = frame_masks("dir/frames.jsonl", frames)
    assert [(m.frames_file, m.frame_position, m.frame_id) for m in parsed.masks] == [
        ("dir/frames.jsonl", 0, "a"),
        ("dir/frames.jsonl", 2, "b"),
    ]
    assert parsed.frames == 3


def test_bad_frames_and_masks_are_warnings() -> None:
    frames = [
        "not a frame",
        _frame("f", _source("s", [{"id": "x"}, {"id": "y", "uri": ""}, "ok.png"])),
        {"id": "g", "sources": "not a list"},
    ]
    parsed = frame_masks("frames.json", frames)
    assert _ids(parsed.masks) == [("f", "s", "02", "ok.png")]
    assert len(parsed.warnings) == 4
    assert any("'x'" in w for w in parsed.warnings)
    assert any("'y'" in w for w in parsed.warnings)


def test_rois_link_labels_to_a_mask_value() -> None:
    frame = _frame(
        "f",
        _source("left", [{"id": "seg", "uri": "seg.png"}, {"id": "other", "uri": "o.png"}]),
        rois=[
            {"id": "r0", "label": "debris", "confidence": 1, "sources": ["left"],
             "mask": {"id": "seg", "value": [34, 34, 34]}},
            {"id": "r1", "labels": ["road", "wet"], "mask": {"id": "seg", "value": [7, 7, 7]}},
            {"id": "r2", "labels": ["grey"], "mask": {"id": "other", "value": 9}},
            {"id": "r3", "labels": ["no mask"]},
            {"id": "r4", "labels": ["bad value"], "mask": {"id": "seg", "value": [1, 2]}},
        ],
    )  # fmt: skip
    seg, other = frame_masks("frames.json", [frame]).masks
    assert seg.roi_labels == (((34, 34, 34), ("debris",)), ((7, 7, 7), ("road", "wet")))
    assert other.roi_labels == (((9, 9, 9), ("grey",)),)


def test_roi_mask_without_id_links_mask_00() -> None:
    frame = _frame(
        "f",
        _source("s", ["a.png", "b.png"]),
        rois=[{"label": "x", "mask": {"value": [1, 1, 1]}}],
    )
    first, second = frame_masks("frames.json", [frame]).masks
    assert first.roi_labels == (((1, 1, 1), ("x",)),)
    assert second.roi_labels == ()


def test_roi_links_stay_in_their_frame() -> None:
    linked = _frame(
        "f1", _source("s", [{"id": "seg", "uri": "a.png"}]),
        rois=[{"label": "x", "mask": {"id": "seg", "value": [1, 1, 1]}}],
    )  # fmt: skip
    plain = _frame("f2", _source("s", [{"id": "seg", "uri": "b.png"}]))
    first, second = frame_masks("frames.json", [linked, plain]).masks
    assert first.roi_labels and not second.roi_labels


# ---------------------------------------------------------------------------------------------
# parse_mask_labels
# ---------------------------------------------------------------------------------------------

LIST_FORM = [
    {"value": [0, 0, 0], "labels": ["background"]},
    {"value": [1, 1, 1], "labels": ["person", "sitting"]},
    {"value": [2, 2, 2], "labels": ["cat"]},
    {"value": [128, 64, 128], "labels": ["road"]},
]
EXPECTED = {
    (0, 0, 0): ("background",),
    (1, 1, 1): ("person", "sitting"),
    (2, 2, 2): ("cat",),
    (128, 64, 128): ("road",),
}


def test_mask_labels_list_form() -> None:
    assert parse_mask_labels(LIST_FORM) == EXPECTED


def test_mask_labels_all_form() -> None:
    assert parse_mask_labels({"_all_": LIST_FORM}) == EXPECTED


def test_mask_labels_python_form() -> None:
    python_form = {(0, 0, 0): ["background"], (1, 1, 1): ["person", "sitting"],
                   (2, 2, 2): ["cat"], (128, 64, 128): ["road"]}  # fmt: skip
    assert parse_mask_labels(python_form) == EXPECTED


@pytest.mark.parametrize("key", ["128,64,128", "(128, 64, 128)", "[128, 64, 128]", "128 64 128"])
def test_mask_labels_python_form_from_json_keys(key: str) -> None:
    assert parse_mask_labels({key: ["road"]}) == {(128, 64, 128): ("road",)}


def test_mask_labels_grey_int_values() -> None:
    assert parse_mask_labels([{"value": 7, "labels": ["road"]}]) == {(7, 7, 7): ("road",)}
    assert parse_mask_labels({7: ["road"], 26001: ["car"]}) == {
        (7, 7, 7): ("road",),
        (26001, 26001, 26001): ("car",),
    }


def test_mask_labels_single_label_string() -> None:
    assert parse_mask_labels([{"value": [3, 3, 3], "labels": "dog"}]) == {(3, 3, 3): ("dog",)}


def test_mask_labels_empty_forms() -> None:
    assert parse_mask_labels(None) == {}
    assert parse_mask_labels([]) == {}
    assert parse_mask_labels({"_all_": []}) == {}


def test_mask_labels_conflicting_duplicate_names_the_value() -> None:
    with pytest.raises(MaskLabelsError) as info:
        parse_mask_labels([*LIST_FORM, {"value": [128, 64, 128], "labels": ["street"]}])
    assert "[128, 64, 128]" in str(info.value)


def test_mask_labels_conflicting_grey_and_rgb_spelling() -> None:
    with pytest.raises(MaskLabelsError) as info:
        parse_mask_labels([{"value": 7, "labels": ["road"]}, {"value": [7, 7, 7], "labels": ["x"]}])
    assert "[7, 7, 7]" in str(info.value)


def test_mask_labels_same_duplicate_is_fine() -> None:
    assert parse_mask_labels([*LIST_FORM, {"value": [2, 2, 2], "labels": ["cat"]}]) == EXPECTED


@pytest.mark.parametrize(
    "raw",
    [
        [{"value": [1, 2], "labels": ["x"]}],
        [{"value": [1, 2, 3, 4], "labels": ["x"]}],
        [{"value": [1, 2, -3], "labels": ["x"]}],
        [{"value": [1, 2, 70000], "labels": ["x"]}],
        [{"value": True, "labels": ["x"]}],
        [{"value": [1, 2, 3], "labels": [1]}],
        [{"labels": ["x"]}],
        ["not an entry"],
        {"a,b,c": ["x"]},
        "not mask labels",
        42,
    ],
)
def test_mask_labels_malformed(raw: Any) -> None:
    with pytest.raises(MaskLabelsError):
        parse_mask_labels(raw)


# ---------------------------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------------------------


def test_uri_map_longest_prefix_wins_in_any_order() -> None:
    pairs = ["https://host/=s3://generic/", "https://host/bucket/=s3://bucket/"]
    for order in (pairs, list(reversed(pairs))):
        uri_map = parse_uri_map(order)
        assert resolve_uri("https://host/bucket/a/b.png", uri_map, "") == "s3://bucket/a/b.png"
        assert resolve_uri("https://host/other/b.png", uri_map, "") == "s3://generic/other/b.png"


def test_uri_map_applies_once() -> None:
    uri_map = parse_uri_map(["a/=a/a/"])
    assert resolve_uri("a/x.png", uri_map, "/base") == "/base/a/a/x.png"


def test_uri_map_replacement_may_hold_equals() -> None:
    assert parse_uri_map(["https://h/=s3://b/k=v/"]) == (("https://h/", "s3://b/k=v/"),)


@pytest.mark.parametrize("pair", ["no-equals-sign", "=s3://bucket/"])
def test_uri_map_malformed(pair: str) -> None:
    with pytest.raises(ValueError, match="PREFIX=REPLACEMENT"):
        parse_uri_map([pair])


def test_uri_map_unmatched_uri_is_unchanged() -> None:
    uri_map = parse_uri_map(["https://host/=s3://b/"])
    assert resolve_uri("https://elsewhere/x.png", uri_map, "/base") == "https://elsewhere/x.png"


@pytest.mark.parametrize(
    ("uri", "base", "expected"),
    [
        ("masks/a.png", "/data/frames", "/data/frames/masks/a.png"),
        ("../masks/a.png", "/data/frames", "/data/masks/a.png"),
        ("./masks//a.png", "/data/frames/", "/data/frames/masks/a.png"),
        ("/abs/./x/../a.png", "/data/frames", "/abs/a.png"),
        ("masks/a.png", "", "masks/a.png"),
        ("masks/a.png", "s3://bucket/frames", "s3://bucket/frames/masks/a.png"),
        ("masks/a.png", "s3://bucket/frames/", "s3://bucket/frames/masks/a.png"),
    ],
)
def test_resolve_relative_and_local(uri: str, base: str, expected: str) -> None:
    assert resolve_uri(uri, (), base) == expected


def test_resolve_relative_dot_dot_under_a_url_base() -> None:
    """A relative reference with ``..`` under an object-store base resolves as in a URL
    (RFC 3986 removes dot segments): the key ``frames/../masks/a.png`` does not exist."""
    assert resolve_uri("../masks/a.png", (), "s3://bucket/frames") == "s3://bucket/masks/a.png"


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/masks/a.png",
        "s3://bucket/masks//double/a.png",
        "s3://b/../../k",
        "file:///data/x/../a.png",
        "https://example.com/a/./b.png",
        "memory://root/a.png",
    ],
)
def test_resolve_urls_untouched(uri: str) -> None:
    assert resolve_uri(uri, (), "/data/frames") == uri
    assert resolve_uri(uri, (), "s3://other/frames") == uri


def test_resolve_mapped_to_url_is_not_normalised() -> None:
    uri_map = parse_uri_map(["https://example-bucket.s3.amazonaws.com/=s3://test-bucket/"])
    uri = "https://example-bucket.s3.amazonaws.com/masks//a.png"
    assert resolve_uri(uri, uri_map, "/data") == "s3://test-bucket/masks//a.png"


def test_resolve_mapped_to_local_path() -> None:
    uri_map = parse_uri_map(["https://host/=/mnt/mirror/"])
    assert resolve_uri("https://host/a/../b.png", uri_map, "/data") == "/mnt/mirror/b.png"


# ---------------------------------------------------------------------------------------------
# safe_relative_path
# ---------------------------------------------------------------------------------------------


def _inside(rel: str) -> bool:
    if rel.startswith("/") or "\\" in rel:
        return False
    joined = posixpath.normpath(posixpath.join("/out", rel))
    return joined.startswith("/out/") and ".." not in rel.split("/")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("../../x", "x"),
        ("/etc/passwd", "etc/passwd"),
        ("s3://b/../../k", "s3/b/k"),
        ("..\\..\\x", "x"),
        ("a\\..\\..\\b", "a/b"),
        ("/tmp/data/masks/a.png", "tmp/data/masks/a.png"),
        ("https://host.example/a/b.png", "https/host.example/a/b.png"),
        ("file:///data/./a.png", "file/data/a.png"),
        ("", "mask"),
        ("../..", "mask"),
        ("/", "mask"),
    ],
)
def test_safe_relative_path_examples(uri: str, expected: str) -> None:
    rel = safe_relative_path(uri)
    assert rel == expected
    assert _inside(rel)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=list("ab./\\:s3~ "), max_size=30))
def test_safe_relative_path_never_escapes(uri: str) -> None:
    assert _inside(safe_relative_path(uri))


def test_safe_relative_path_is_deterministic_and_distinct() -> None:
    first = safe_relative_path("s3://bucket/masks/a.png")
    assert first == safe_relative_path("s3://bucket/masks/a.png")
    assert first != safe_relative_path("s3://bucket/masks/b.png")
