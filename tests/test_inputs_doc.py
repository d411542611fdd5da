"""The JSON examples of docs/inputs.md are read by the parsers as the text says."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.formats.celantur import classify_name, type_name
from pipeline.formats.clearml import frame_masks, load_frames, parse_mask_labels
from pipeline.formats.metadata import parse_image_metadata
from pipeline.formats.video import parse_chunk

DOC = Path(__file__).resolve().parents[1] / "docs" / "inputs.md"
EXAMPLE = re.compile(
    r"<!-- inputs-example: (?P<kind>\S+)(?: (?P<name>\S+))? -->\n```json\n(?P<body>.*?)```", re.S
)


def _examples(kind: str) -> list[tuple[str | None, str]]:
    found = [(m["name"], m["body"]) for m in EXAMPLE.finditer(DOC.read_text()) if m["kind"] == kind]
    assert found, kind
    return found


def test_image_metadata_example() -> None:
    ((_, body),) = _examples("image")
    metadata = parse_image_metadata(json.loads(body))
    assert not metadata.findings
    assert [d.detection_id for d in metadata.detections] == [0, 0]  # ids repeat
    assert [d.is_anonymised for d in metadata.detections] == [True, True]  # both spellings
    assert [type_name(d.type_label) for d in metadata.detections] == ["person", "license_plate"]


def test_video_chunk_example() -> None:
    ((name, body),) = _examples("chunk")
    assert name is not None
    named = classify_name(name)
    assert named is not None and named.kind == "video_metadata"
    assert (named.video, named.chunk_start, named.chunk_end) == ("my-clip.mp4", 500, 502)
    parsed = parse_chunk(body.encode(), max_bytes=1 << 20)
    assert not parsed.findings
    assert parsed.frame_ids == [500, 501, 502] and parsed.detection_count == 2


def test_frames_example() -> None:
    ((_, body),) = _examples("frames")
    parsed = frame_masks("frames.json", load_frames(body.encode(), max_bytes=1 << 20))
    assert not parsed.warnings
    assert [(m.frame_id, m.source_id, m.mask_id) for m in parsed.masks] == [
        ("f-0001", "front", "seg"),
        ("f-0002", "front", "00"),
        ("f-0002", "front", "01"),
        ("f-0002", "rear", "seg"),
    ]


def test_mask_labels_examples() -> None:
    parsed = [parse_mask_labels(json.loads(body)) for _, body in _examples("mask_labels")]
    assert parsed[0] == {
        (0, 0, 142): ("car",),
        (220, 20, 60): ("person", "pedestrian"),
        (7, 7, 7): ("road",),
    }
    assert parsed[1] == {(0, 0, 142): ("car",)}
    assert parsed[2] == {(0, 0, 142): ("car",), (220, 20, 60): ("person",)}
