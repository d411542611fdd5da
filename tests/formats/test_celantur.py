"""Tests of :mod:`pipeline.formats.celantur`: encodings, type labels, ``auto`` evidence, names.

Every type-channel value 0..255 is checked under each encoding against the SPEC 2.1 table written
out literally below, not derived from the module's own constants.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.celantur import (
    TYPE_TABLES,
    EncodingEvidence,
    NamedInput,
    classify_colours,
    classify_name,
    flag_names,
    normalise_type_label,
    parse_colour,
)

# SPEC 2.1. v26: B holds type bit flags (person 128, license_plate 64, face 32, vehicle 16);
# bits 0-3 must be 0; B == 0 carries no type and cannot be typed. Every valid value, literally:
V26_TYPES: dict[int, set[str]] = {
    16: {"vehicle"},
    32: {"face"},
    48: {"face", "vehicle"},
    64: {"license_plate"},
    80: {"license_plate", "vehicle"},
    96: {"license_plate", "face"},
    112: {"license_plate", "face", "vehicle"},
    128: {"person"},
    144: {"person", "vehicle"},
    160: {"person", "face"},
    176: {"person", "face", "vehicle"},
    192: {"person", "license_plate"},
    208: {"person", "license_plate", "vehicle"},
    224: {"person", "license_plate", "face"},
    240: {"person", "license_plate", "face", "vehicle"},
}
# legacy (in B) and legacy-red (in R): exact values, not flags.
LEGACY_TYPES: dict[int, set[str]] = {
    64: {"license_plate"},
    128: {"person"},
    192: {"face"},
    255: {"vehicle"},
}
EXPECTED = {"v26": V26_TYPES, "legacy": LEGACY_TYPES, "legacy-red": LEGACY_TYPES}
NAME_ORDER = ("person", "license_plate", "face", "vehicle")


def _colour(encoding: str, type_value: int, instance: int = 7) -> list[int]:
    if encoding == "legacy-red":
        return [type_value, instance, 0]
    return [0, instance, type_value]


# ---------------------------------------------------------------------------------------------
# classify_colours / TYPE_TABLES / flag_names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["v26", "legacy", "legacy-red"])
def test_every_type_value_against_spec_table(encoding):
    expected = EXPECTED[encoding]
    colours = np.array([_colour(encoding, v) for v in range(256)], dtype=np.uint8)
    type_bits, flags = classify_colours(colours, encoding)
    assert type_bits.tolist() == list(range(256))
    for value in range(256):
        names = expected.get(value)
        if names is None:
            assert flags[value] == -1, (encoding, value)
            assert TYPE_TABLES[encoding][value] == -1, (encoding, value)
            assert flag_names(int(flags[value])) == []
        else:
            assert flags[value] > 0, (encoding, value)
            assert set(flag_names(int(flags[value]))) == names, (encoding, value)
            assert set(flag_names(int(TYPE_TABLES[encoding][value]))) == names


def test_spec_examples():
    def names(colour, encoding):
        return flag_names(int(classify_colours(np.array([colour]), encoding)[1][0]))

    assert names([0, 1, 80], "v26") == ["license_plate", "vehicle"]
    assert names([0, 1, 192], "v26") == ["person", "license_plate"]
    assert names([0, 1, 128], "v26") == ["person"]  # two overlapping persons stay 128
    assert names([0, 1, 255], "v26") == []
    assert names([0, 1, 192], "legacy") == ["face"]
    assert names([0, 1, 255], "legacy") == ["vehicle"]
    assert names([0, 1, 16], "legacy") == []
    assert names([255, 1, 0], "legacy-red") == ["vehicle"]
    assert names([192, 1, 0], "legacy-red") == ["face"]


@pytest.mark.parametrize("encoding", ["v26", "legacy", "legacy-red"])
def test_non_zero_in_the_zero_channel_is_invalid(encoding):
    zero_channel = 2 if encoding == "legacy-red" else 0
    for value, names in EXPECTED[encoding].items():
        for noise in (1, 128, 255):
            colour = _colour(encoding, value)
            colour[zero_channel] = noise
            type_bits, flags = classify_colours(np.array([colour], dtype=np.uint8), encoding)
            assert flags.tolist() == [-1], (encoding, colour, names)
            assert type_bits.tolist() == [value]


@pytest.mark.parametrize("encoding", ["v26", "legacy", "legacy-red"])
def test_untyped_instance_colour_is_invalid(encoding):
    # [0, g, 0] is non-background but carries no type under any encoding.
    colours = np.array([[0, g, 0] for g in (1, 2, 128, 255)], dtype=np.uint8)
    _, flags = classify_colours(colours, encoding)
    assert flags.tolist() == [-1] * 4


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["v26", "legacy", "legacy-red"]),
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
        min_size=1,
        max_size=20,
    ),
)
def test_instance_channel_never_matters(encoding, colours):
    array = np.array(colours, dtype=np.uint8)
    other = array.copy()
    other[:, 1] = 255 - other[:, 1]
    type_bits, flags = classify_colours(array, encoding)
    np.testing.assert_array_equal(flags, classify_colours(other, encoding)[1])
    np.testing.assert_array_equal(type_bits, array[:, 0 if encoding == "legacy-red" else 2])
    for (r, _, b), flag in zip(colours, flags.tolist(), strict=True):
        value, zero = (r, b) if encoding == "legacy-red" else (b, r)
        names = EXPECTED[encoding].get(value) if zero == 0 else None
        if names is None:
            assert flag == -1
        else:
            assert set(flag_names(flag)) == names


def test_classify_colours_output_dtypes_and_empty():
    type_bits, flags = classify_colours(np.zeros((0, 3), dtype=np.uint8), "v26")
    assert type_bits.shape == flags.shape == (0,)
    type_bits, flags = classify_colours(np.array([[0, 1, 255]], dtype=np.uint8), "legacy")
    assert type_bits.tolist() == [255]  # int16: 255 is not -1
    assert flags.dtype == np.int8


def test_flag_names_order_and_invalid():
    assert flag_names(-1) == []
    assert flag_names(0) == []
    assert flag_names(0b0001) == ["person"]
    assert flag_names(0b0010) == ["license_plate"]
    assert flag_names(0b0100) == ["face"]
    assert flag_names(0b1000) == ["vehicle"]
    assert flag_names(0b1111) == list(NAME_ORDER)
    assert flag_names(0b1010) == ["license_plate", "vehicle"]


# ---------------------------------------------------------------------------------------------
# EncodingEvidence (auto)
# ---------------------------------------------------------------------------------------------


def _evidence(*colours) -> EncodingEvidence:
    evidence = EncodingEvidence.empty()
    evidence.add_colours(np.array(colours, dtype=np.uint8).reshape(-1, 3))
    return evidence


@pytest.mark.parametrize("b", [16, 32, 48, 80, 144])
def test_values_only_v26_allows_decide_v26(b):
    evidence = _evidence([0, 1, b], [0, 2, 128])
    assert evidence.votes == {"v26": 1, "legacy": 0, "legacy-red": 0}
    assert evidence.colours_seen == 2
    assert evidence.decide() == ("v26", None)


def test_all_v26_only_values_together():
    evidence = _evidence([0, 1, 16], [0, 2, 48], [0, 3, 80], [0, 4, 144])
    assert evidence.votes["v26"] == 4
    assert evidence.decide() == ("v26", None)


def test_255_in_blue_decides_legacy():
    evidence = _evidence([0, 1, 255], [0, 2, 128], [0, 3, 64])
    assert evidence.votes == {"v26": 0, "legacy": 1, "legacy-red": 0}
    assert evidence.decide() == ("legacy", None)


@pytest.mark.parametrize("r", [64, 128, 192, 255])
def test_type_value_in_red_decides_legacy_red(r):
    evidence = _evidence([r, 1, 0])
    assert evidence.votes == {"v26": 0, "legacy": 0, "legacy-red": 1}
    assert evidence.decide() == ("legacy-red", None)


def test_ambiguous_values_decide_v26_with_warning():
    evidence = _evidence([0, 1, 128], [0, 2, 64], [0, 3, 192])
    assert evidence.votes == {"v26": 0, "legacy": 0, "legacy-red": 0}
    encoding, warning = evidence.decide()
    assert encoding == "v26"
    assert warning is not None and "v26" in warning


def test_no_evidence_at_all_decides_v26_with_warning():
    encoding, warning = EncodingEvidence.empty().decide()
    assert encoding == "v26"
    assert warning


def test_metadata_face_at_192_decides_legacy():
    evidence = _evidence([0, 5, 192])
    evidence.add_detection([0, 5, 192], "face")
    assert evidence.votes == {"v26": 0, "legacy": 1, "legacy-red": 0}
    assert evidence.decide() == ("legacy", None)


def test_metadata_person_at_192_does_not_single_out_an_encoding():
    # 192 is person+plate in v26 only; a "person" label agrees with v26 alone.
    evidence = EncodingEvidence.empty()
    evidence.add_detection([0, 5, 192], "Person")
    assert evidence.votes == {"v26": 1, "legacy": 0, "legacy-red": 0}
    # A "license plate" at 64 is valid in both v26 and legacy: no vote.
    evidence.add_detection([0, 6, 64], "License Plate")
    assert evidence.votes == {"v26": 1, "legacy": 0, "legacy-red": 0}


@pytest.mark.parametrize(
    ("colour", "label"),
    [(None, "face"), ([0, 5, 192], None), ([0, 5, 192], "tree"), ([0, 5], "face"), ("x", "face")],
)
def test_detection_without_usable_colour_or_label_is_ignored(colour, label):
    evidence = EncodingEvidence.empty()
    evidence.add_detection(colour, label)
    assert evidence.votes == {"v26": 0, "legacy": 0, "legacy-red": 0}


def test_conflicting_evidence_takes_majority_with_warning():
    evidence = _evidence([0, 1, 16], [0, 2, 48], [0, 3, 255])
    encoding, warning = evidence.decide()
    assert encoding == "v26"
    assert warning is not None and "legacy" in warning


def test_merge_sums_votes_and_colours():
    a = _evidence([0, 1, 16], [0, 2, 128])
    b = _evidence([0, 1, 255], [0, 2, 255], [9, 9, 9])
    c = _evidence([128, 1, 0])
    merged = a.merge(b)
    assert merged.votes == {"v26": 1, "legacy": 2, "legacy-red": 0}
    assert merged.colours_seen == 5
    # Inputs are left as they were.
    assert a.votes == {"v26": 1, "legacy": 0, "legacy-red": 0} and a.colours_seen == 2
    assert b.votes == {"v26": 0, "legacy": 2, "legacy-red": 0} and b.colours_seen == 3
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    assert left.votes == right.votes == {"v26": 1, "legacy": 2, "legacy-red": 1}
    assert left.colours_seen == right.colours_seen == 6
    assert EncodingEvidence.empty().merge(a).votes == a.votes


def test_add_colours_accumulates():
    evidence = _evidence([0, 1, 16])
    evidence.add_colours(np.array([[0, 1, 80], [0, 1, 255]], dtype=np.uint8))
    assert evidence.votes == {"v26": 2, "legacy": 1, "legacy-red": 0}
    assert evidence.colours_seen == 3


# ---------------------------------------------------------------------------------------------
# parse_colour / normalise_type_label
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([0, 5, 192], (0, 5, 192)),
        ((255, 0, 1), (255, 0, 1)),
        (None, None),
        ([0, 5], None),
        ([0, 5, 192, 255], None),
        ([0, 5, 256], None),
        ([0, -1, 1], None),
        ([0, 5.0, 1], None),
        ([True, 0, 0], None),
        ("0,5,192", None),
        ({"r": 0}, None),
    ],
)
def test_parse_colour(value, expected):
    assert parse_colour(value) == expected


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("License Plate", "license_plate"),
        ("license-plate", "license_plate"),
        ("license_plate", "license_plate"),
        ("  LICENSE   PLATE ", "license_plate"),
        ("licence plate", "license_plate"),
        ("plate", "license_plate"),
        ("head", "face"),
        ("Face", "face"),
        ("Car", "vehicle"),
        ("vehicle", "vehicle"),
        ("person", "person"),
        ("Pedestrian", "person"),
        ("tree", None),
        ("", None),
        ("license plates", None),
        (None, None),
        (102, None),
        (["face"], None),
    ],
)
def test_normalise_type_label(label, expected):
    assert normalise_type_label(label) == expected


# ---------------------------------------------------------------------------------------------
# classify_name
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "stem"),
    [
        ("a_ins_maks.png", "instance", "a"),
        ("a_ins_mask.png", "instance", "a"),
        ("A_INS_MAKS.PNG", "instance", "A"),
        ("My Photo.2024_ins_maks.png", "instance", "My Photo.2024"),
        ("x.y-z_bin_mask.png", "binary", "x.y-z"),
        ("X_BIN_MASK.png", "binary", "X"),
        ("image.json", "metadata", "image"),
        ("image_ins_maks.json", "metadata", "image_ins_maks"),
    ],
)
def test_classify_name_masks_and_image_metadata(name, kind, stem):
    named = classify_name(name)
    assert named == NamedInput(kind, stem)
    assert named.video is None and named.chunk_start is None and named.chunk_end is None


@pytest.mark.parametrize(
    ("name", "video", "start", "end"),
    [
        ("my-clip.mp4-500-999.json", "my-clip.mp4", 500, 999),
        ("cam-02-500-620.json", "cam-02", 500, 620),
        ("video.mp4-0-499.json", "video.mp4", 0, 499),
        ("a-b-c.d-e.avi-1000-1499.JSON", "a-b-c.d-e.avi", 1000, 1499),
    ],
)
def test_classify_name_video_chunks_split_from_the_right(name, video, start, end):
    named = classify_name(name)
    assert named is not None
    assert named.kind == "video_metadata"
    assert (named.video, named.chunk_start, named.chunk_end) == (video, start, end)


@pytest.mark.parametrize(
    "name",
    [
        "photo.jpg",
        "photo.png",
        "_ins_maks.png",
        "_ins_mask.png",
        "_bin_mask.png",
        ".json",
        "a_ins_maks.png.bak",
        "a_inst_mask.png",
        "",
    ],
)
def test_classify_name_rejects_non_inputs(name):
    assert classify_name(name) is None
