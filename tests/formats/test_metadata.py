"""Tests of :mod:`pipeline.formats.metadata`: image metadata records and the ``size`` order.

The documents below are the examples of the Celantur documentation (``seeds/``, SPEC 2.3/2.4),
parsed through :func:`pipeline.io.jsonio.parse_json` like the pipeline does. The image example in
the documentation is missing the ``]`` that closes ``detections``; it is written here closed.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pipeline.formats.metadata import (
    Detection,
    Finding,
    MetadataError,
    ResolvedSize,
    parse_detection,
    parse_image_metadata,
    resolve_size_order,
)
from pipeline.io.jsonio import parse_json

SEED_IMAGE = b"""{
    "id": "image-name.jpg",
    "detections": [
    {
        "id": 0,
        "parent_image": "image-name.jpg",
        "offset": [1560, 744],
        "bbox": [1957, 744, 3003, 1855],
        "type": 103,
        "score": 0.9993754029273987,
        "is_anonymised": true,
        "type_label": "face",
        "color": null
    }],
    "size": [3456, 5184],
    "duration": 1.8533296539999355,
    "filename": "image-name.jpg",
    "folder": null
}"""

# First two frames of the video example: size [178, 320] with a bbox x2 of 201 > 178.
VIDEO_FRAMES = [
    {"size": [178, 320], "bboxes": [(3.0, 4.0, 201.0, 171.0)]},
    {"size": [178, 320], "bboxes": [(0.0, 20.0, 137.0, 175.0)]},
]
VIDEO_BOXES = VIDEO_FRAMES[0]["bboxes"] + VIDEO_FRAMES[1]["bboxes"]


def detection(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 0,
        "parent_image": "a.jpg",
        "offset": [1, 2],
        "bbox": [1, 2, 30, 40],
        "type": 102,
        "score": 0.5,
        "is_anonymised": True,
        "type_label": "person",
        "color": [0, 7, 128],
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def image(detections: list[Any], **fields: Any) -> dict[str, Any]:
    return {"id": "a.jpg", "detections": detections, "size": [100, 200], **fields}


# ---------------------------------------------------------------------------------------------
# parse_image_metadata
# ---------------------------------------------------------------------------------------------


def test_seed_image_example() -> None:
    metadata = parse_image_metadata(parse_json(SEED_IMAGE))
    assert metadata.image_id == "image-name.jpg"
    assert metadata.filename == "image-name.jpg"
    assert metadata.folder is None
    assert metadata.size == (3456, 5184)
    assert metadata.duration == 1.8533296539999355
    assert metadata.findings == ()
    assert metadata.detections == (
        Detection(
            index=0,
            detection_id=0,
            type=103,
            type_label="face",
            score=0.9993754029273987,
            is_anonymised=True,
            bbox=(1957.0, 744.0, 3003.0, 1855.0),
            offset=(1560.0, 744.0),
            colour=None,
        ),
    )


def test_seed_image_size_order_is_default_hw() -> None:
    # Both orders hold the seed bbox (x2 3003, y2 1855), there is no mask: the product's order.
    metadata = parse_image_metadata(parse_json(SEED_IMAGE))
    boxes = [d.bbox for d in metadata.detections if d.bbox is not None]
    assert resolve_size_order(metadata.size, boxes) == ResolvedSize(5184, 3456, "hw", "default")


@pytest.mark.parametrize("value", [True, False])
def test_is_anonymized_spelling_is_accepted(value: bool) -> None:
    raw = detection(is_anonymised=..., is_anonymized=value)
    metadata = parse_image_metadata(image([raw]))
    assert metadata.detections[0].is_anonymised is value
    assert metadata.findings == ()


def test_is_anonymised_not_boolean_is_a_finding() -> None:
    findings: list[Finding] = []
    parsed = parse_detection(detection(is_anonymised="yes"), 0, findings)
    assert parsed is not None
    assert parsed.is_anonymised is None
    assert [f.error for f in findings] == ["bad_field"]


def test_repeated_detection_ids_keep_distinct_indexes() -> None:
    raws = [detection(id=0), detection(id=0), detection(id=1), detection(id=0)]
    metadata = parse_image_metadata(image(raws))
    assert [d.index for d in metadata.detections] == [0, 1, 2, 3]
    assert [d.detection_id for d in metadata.detections] == [0, 0, 1, 0]
    assert metadata.findings == ()


@pytest.mark.parametrize("score", [math.nan, math.inf, -0.1, 1.5, "0.5", True], ids=str)
def test_unusable_score_becomes_none_with_a_warning(score: object) -> None:
    metadata = parse_image_metadata(image([detection(score=score)]))
    assert metadata.detections[0].score is None
    assert len(metadata.findings) == 1
    finding = metadata.findings[0]
    assert (finding.severity, finding.error) == ("warning", "bad_score")
    assert "detection 0" in finding.message


def test_nan_score_literal_through_parse_json() -> None:
    document = parse_json(b'{"detections": [{"id": 3, "score": NaN, "bbox": [0, 0, 1, 1]}]}')
    metadata = parse_image_metadata(document)
    assert metadata.detections[0].score is None
    assert metadata.detections[0].bbox == (0.0, 0.0, 1.0, 1.0)
    assert [(f.severity, f.error) for f in metadata.findings] == [("warning", "bad_score")]


@pytest.mark.parametrize("score", [0, 0.0, 1, 1.0, None])
def test_boundary_and_absent_scores_are_kept_silently(score: object) -> None:
    metadata = parse_image_metadata(image([detection(score=score)]))
    assert metadata.detections[0].score == (None if score is None else float(score))
    assert metadata.findings == ()


@pytest.mark.parametrize(
    "bbox",
    [[1, 2, 3], [1, 2, 3, 4, 5], [1, 2, math.nan, 4], [1, "2", 3, 4], "1,2,3,4", {"x": 1}],
    ids=["three", "five", "nan", "string-item", "string", "object"],
)
def test_bad_bbox_becomes_none_with_a_warning(bbox: object) -> None:
    metadata = parse_image_metadata(image([detection(bbox=bbox)]))
    parsed = metadata.detections[0]
    assert parsed.bbox is None
    assert parsed.score == 0.5  # the rest of the detection stays usable
    assert [(f.severity, f.error) for f in metadata.findings] == [("warning", "bad_bbox")]


def test_missing_bbox_is_none_without_a_finding() -> None:
    metadata = parse_image_metadata(image([detection(bbox=...)]))
    assert metadata.detections[0].bbox is None
    assert metadata.findings == ()


def test_non_object_detections_are_findings_and_skipped() -> None:
    raws = [detection(id=0), 5, "face", None, [1, 2], detection(id=1)]
    metadata = parse_image_metadata(image(raws))
    assert [(d.index, d.detection_id) for d in metadata.detections] == [(0, 0), (5, 1)]
    assert [(f.severity, f.error) for f in metadata.findings] == [("warning", "bad_detection")] * 4
    assert [f.message for f in metadata.findings] == [
        f"detection {i} is not an object" for i in (1, 2, 3, 4)
    ]


def test_bad_colour_is_a_finding() -> None:
    metadata = parse_image_metadata(image([detection(color=[0, 300, 16])]))
    assert metadata.detections[0].colour is None
    assert [f.error for f in metadata.findings] == ["bad_color"]


def test_colour_is_a_tuple() -> None:
    metadata = parse_image_metadata(image([detection(color=[0, 85, 16])]))
    assert metadata.detections[0].colour == (0, 85, 16)


def test_missing_detections_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError) as info:
        parse_image_metadata({"id": "a.jpg", "size": [1, 2]})
    assert info.value.code == "bad_metadata"


def test_detections_not_a_list_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError) as info:
        parse_image_metadata({"id": "a.jpg", "detections": {"0": {}}})
    assert info.value.code == "bad_detections"


@pytest.mark.parametrize("document", [[], [{"detections": []}], "text", 3, None])
def test_top_level_not_an_object_is_a_metadata_error(document: object) -> None:
    with pytest.raises(MetadataError) as info:
        parse_image_metadata(document)
    assert info.value.code == "bad_metadata"


@pytest.mark.parametrize("size", [[0, 5], [5], [5, 6, 7], [5.5, 6], ["5", "6"], "5x6"], ids=str)
def test_bad_size_is_none_with_a_warning(size: object) -> None:
    metadata = parse_image_metadata(image([], size=size))
    assert metadata.size is None
    assert [(f.severity, f.error) for f in metadata.findings] == [("warning", "bad_size")]


def test_nan_duration_is_none_with_a_warning() -> None:
    metadata = parse_image_metadata(image([], duration=math.nan))
    assert metadata.duration is None
    assert [f.error for f in metadata.findings] == ["bad_field"]


# ---------------------------------------------------------------------------------------------
# resolve_size_order
# ---------------------------------------------------------------------------------------------


def test_video_example_bbox_proves_hw() -> None:
    # Frame 0: bbox x2 201 > 178, so 178 cannot be the width.
    resolved = resolve_size_order((178, 320), VIDEO_FRAMES[0]["bboxes"])
    assert resolved == ResolvedSize(width=320, height=178, order="hw", source="bbox")


def test_video_frame_whose_box_fits_both_orders_is_default() -> None:
    # Frame 1's box (x2 137, y2 175) fits both orders: no evidence, the product's order.
    resolved = resolve_size_order((178, 320), VIDEO_FRAMES[1]["bboxes"])
    assert resolved == ResolvedSize(320, 178, "hw", "default")


def test_video_boxes_of_all_frames_prove_hw() -> None:
    assert resolve_size_order((178, 320), VIDEO_BOXES) == ResolvedSize(320, 178, "hw", "bbox")


def test_half_scale_mask_proves_hw() -> None:
    # 160 x 89 is 320 x 178 at 50 %: only [height, width] fits, whatever the boxes say.
    assert resolve_size_order((178, 320), [], mask_size=(160, 89)) == ResolvedSize(
        320, 178, "hw", "mask"
    )
    assert resolve_size_order((178, 320), VIDEO_BOXES, mask_size=(160, 89)).source == "mask"


@pytest.mark.parametrize("mask_size", [(178, 320), (89, 160), (18, 32)])
def test_mask_matching_width_height_proves_wh(mask_size: tuple[int, int]) -> None:
    assert resolve_size_order((178, 320), [], mask_size=mask_size) == ResolvedSize(
        178, 320, "wh", "mask"
    )


def test_mask_evidence_beats_bbox_evidence() -> None:
    # The boxes alone say hw; a mask of the [w, h] aspect wins.
    resolved = resolve_size_order((178, 320), VIDEO_BOXES, mask_size=(89, 160))
    assert resolved == ResolvedSize(178, 320, "wh", "mask")


def test_box_fitting_only_wh() -> None:
    resolved = resolve_size_order((320, 178), [(0.0, 0.0, 300.0, 170.0), (1.0, 1.0, 2.0, 175.0)])
    assert resolved == ResolvedSize(320, 178, "wh", "bbox")


@pytest.mark.parametrize("mask_size", [None, (50, 50), (64, 64)])
def test_square_size_is_default(mask_size: tuple[int, int] | None) -> None:
    resolved = resolve_size_order((256, 256), [(0.0, 0.0, 300.0, 10.0)], mask_size=mask_size)
    assert resolved == ResolvedSize(256, 256, "hw", "default")


def test_both_orders_consistent_and_no_mask_is_default_hw() -> None:
    resolved = resolve_size_order((3456, 5184), [(1957.0, 744.0, 3003.0, 1855.0)])
    assert resolved == ResolvedSize(5184, 3456, "hw", "default")


def test_no_boxes_and_no_mask_is_default_hw() -> None:
    assert resolve_size_order((178, 320), []) == ResolvedSize(320, 178, "hw", "default")


@pytest.mark.parametrize("mask_size", [(100, 100), (300, 10), (1000, 5)])
def test_mask_fitting_neither_order_falls_back_to_bbox(mask_size: tuple[int, int]) -> None:
    resolved = resolve_size_order((178, 320), VIDEO_BOXES, mask_size=mask_size)
    assert resolved == ResolvedSize(320, 178, "hw", "bbox")


def test_mask_fitting_neither_and_no_box_evidence_is_default() -> None:
    resolved = resolve_size_order((178, 320), [(0.0, 0.0, 10.0, 10.0)], mask_size=(100, 100))
    assert resolved == ResolvedSize(320, 178, "hw", "default")


def test_rounded_mask_sizes_still_count_as_scaled() -> None:
    # 33 % of 5184 x 3456 is 1710.7 x 1140.5: floored or rounded, each side is off by < 1 pixel.
    for mask_size in [(1710, 1140), (1711, 1141), (1711, 1140)]:
        resolved = resolve_size_order((3456, 5184), [], mask_size=mask_size)
        assert resolved == ResolvedSize(5184, 3456, "hw", "mask"), mask_size
    for mask_size in [(1140, 1710), (1141, 1711)]:
        resolved = resolve_size_order((3456, 5184), [], mask_size=mask_size)
        assert resolved == ResolvedSize(3456, 5184, "wh", "mask"), mask_size
