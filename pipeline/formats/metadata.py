"""Celantur image metadata (``<stem>.json``): records, validation findings and the size-order quirk.

Real files differ from the documentation in ways this module absorbs:

* ``is_anonymised`` is also spelled ``is_anonymized``;
* detection ``id`` values repeat, so a detection's key is its position in the list (``index``);
* ``size`` is documented as [width, height] but the product writes [height, width]; the order is
  resolved per file from the mask dimensions, else the bounding boxes (:func:`resolve_size_order`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.formats.celantur import parse_colour

SizeOrder = Literal["wh", "hw"]
Severity = Literal["error", "warning"]
SizeOrderSource = Literal["mask", "bbox", "default"]


@dataclass(frozen=True)
class Detection:
    """One detection of an image or video frame, normalised."""

    index: int  # position in the file's detection list: the unique key
    detection_id: int | None
    type: int | None
    type_label: str | None
    score: float | None
    is_anonymised: bool | None
    bbox: tuple[float, float, float, float] | None  # x1, y1, x2, y2 as written (image pixels)
    offset: tuple[float, float] | None
    colour: tuple[int, int, int] | None


@dataclass(frozen=True)
class Finding:
    """A validation finding: the data stays usable when ``severity`` is ``warning``."""

    severity: Severity
    error: str
    message: str


@dataclass(frozen=True)
class ImageMetadata:
    """A parsed image-metadata file."""

    image_id: str | None
    filename: str | None
    folder: str | None
    size: tuple[int, int] | None  # as written; see resolve_size_order
    duration: float | None
    detections: tuple[Detection, ...]
    findings: tuple[Finding, ...] = field(default=())


class MetadataError(ValueError):
    """Metadata that cannot be used at all (wrong top-level shape, no detection list)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer literal beyond any float (1 followed by 400 zeros)
        return None


def finite_number(value: Any) -> float | None:
    """A JSON number as a finite float; ``None`` for booleans, NaN, infinities and non-numbers."""
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


#: Most detections one metadata file (an image's, or a video chunk's over all its frames) may
#: hold: checked before any per-detection object is built. A file at the cap costs a worker
#: ~100 MiB (about 2 KiB per detection from parse to table rows); real files hold tens to a
#: few thousand (a 500-frame chunk with 20 per frame: 10,000).
MAX_DETECTIONS = 50_000
#: Integers a 64-bit column holds: -INT64_LIMIT <= v < INT64_LIMIT (ids, types, frame numbers).
INT64_LIMIT = 2**63
#: Sizes become 32-bit columns: a side must be below this (no image is 2**31 pixels wide).
SIDE_LIMIT = 2**31


def _integer(value: Any) -> int | None:
    """A JSON integer (or integral float) that a 64-bit column can hold, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -INT64_LIMIT <= value < INT64_LIMIT:
        return value
    return None


def _text(value: Any, where: str, findings: list[Finding]) -> str | None:
    """A JSON string as storable text: lone surrogates (escaped in JSON, invalid in UTF-8)
    are kept as visible escapes, with a finding."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        findings.append(Finding("warning", "bad_text", f"{where}: text is not valid Unicode"))
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _coords(value: Any, length: int) -> tuple[float, ...] | None:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        return None
    numbers = [finite_number(v) for v in value]
    if any(n is None for n in numbers):
        return None
    return tuple(n for n in numbers if n is not None)


def parse_detection(raw: Any, index: int, findings: list[Finding]) -> Detection | None:
    """Normalise one raw detection; problems become findings (``None`` if it is not an object)."""
    where = f"detection {index}"
    if not isinstance(raw, dict):
        findings.append(Finding("warning", "bad_detection", f"{where} is not an object"))
        return None
    anonymised = raw.get("is_anonymised")
    if anonymised is None:
        anonymised = raw.get("is_anonymized")
    if anonymised is not None and not isinstance(anonymised, bool):
        findings.append(Finding("warning", "bad_field", f"{where}: is_anonymised not a boolean"))
        anonymised = None
    score = _number(raw.get("score"))
    if raw.get("score") is not None and (score is None or not 0.0 <= score <= 1.0):
        findings.append(
            Finding("warning", "bad_score", f"{where}: score {raw.get('score')!r} not in 0..1")
        )
        score = None
    bbox = _coords(raw.get("bbox"), 4)
    if bbox is None and raw.get("bbox") is not None:
        findings.append(Finding("warning", "bad_bbox", f"{where}: bbox {raw['bbox']!r} unusable"))
    offset = _coords(raw.get("offset"), 2)
    colour = parse_colour(raw.get("color"))
    if colour is None and raw.get("color") is not None:
        findings.append(Finding("warning", "bad_color", f"{where}: color {raw['color']!r}"))
    label = raw.get("type_label")
    if label is not None and not isinstance(label, str):
        findings.append(Finding("warning", "bad_field", f"{where}: type_label {label!r}"))
    label = _text(label, f"{where}: type_label", findings)
    integers = {}
    for name in ("id", "type"):
        integers[name] = _integer(raw.get(name))
        if raw.get(name) is not None and integers[name] is None:
            findings.append(Finding("warning", "bad_field", f"{where}: {name} {raw[name]!r}"))
    return Detection(
        index=index,
        detection_id=integers["id"],
        type=integers["type"],
        type_label=label,
        score=score,
        is_anonymised=anonymised,
        bbox=(bbox[0], bbox[1], bbox[2], bbox[3]) if bbox else None,
        offset=(offset[0], offset[1]) if offset else None,
        colour=colour,
    )


def parse_detections(
    raw: Any, findings: list[Finding], *, before: int = 0
) -> tuple[Detection, ...]:
    """Normalise a ``detections`` list (shared by image metadata and video frames).

    ``before`` counts the file's detections already parsed (earlier frames of a chunk).

    Raises
    ------
    MetadataError
        ``bad_detections`` when ``raw`` is no list; ``too_many_detections`` when the file's
        detections exceed :data:`MAX_DETECTIONS`.
    """
    if not isinstance(raw, list):
        raise MetadataError("bad_detections", f"'detections' is {type(raw).__name__}, not a list")
    check_detection_count(before + len(raw))
    parsed = (parse_detection(item, i, findings) for i, item in enumerate(raw))
    return tuple(d for d in parsed if d is not None)


def check_detection_count(count: int) -> None:
    """Refuse a file holding more than :data:`MAX_DETECTIONS` detections.

    Raises
    ------
    MetadataError
        ``too_many_detections``.
    """
    if count > MAX_DETECTIONS:
        raise MetadataError(
            "too_many_detections",
            f"more than {MAX_DETECTIONS} detections in one file (at least {count})",
        )


def parse_size(raw: Any, findings: list[Finding]) -> tuple[int, int] | None:
    """A ``size`` field as two positive integers, or ``None`` with a finding."""
    if raw is None:
        return None
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        values = [_integer(v) for v in raw]
        if all(v is not None and 0 < v < SIDE_LIMIT for v in values):
            return (int(values[0] or 0), int(values[1] or 0))
    findings.append(Finding("warning", "bad_size", f"size {raw!r} is not two positive integers"))
    return None


def parse_image_metadata(document: Any) -> ImageMetadata:
    """Interpret a decoded image-metadata JSON document.

    Raises
    ------
    MetadataError
        When the document is not an object or has no usable ``detections`` list.
    """
    if not isinstance(document, dict):
        raise MetadataError(
            "bad_metadata", f"image metadata must be a JSON object, got {type(document).__name__}"
        )
    findings: list[Finding] = []
    if "detections" not in document:
        raise MetadataError("bad_metadata", "image metadata has no 'detections' list")
    detections = parse_detections(document["detections"], findings)
    duration = finite_number(document.get("duration"))
    if document.get("duration") is not None and duration is None:
        findings.append(Finding("warning", "bad_field", "duration is not a finite number"))
    raw_id = document.get("id")
    return ImageMetadata(
        image_id=_text(raw_id if isinstance(raw_id, str) else None, "id", findings)
        or (str(raw_id) if raw_id is not None and not isinstance(raw_id, str) else None),
        filename=_text(document.get("filename"), "filename", findings),
        folder=_text(document.get("folder"), "folder", findings),
        size=parse_size(document.get("size"), findings),
        duration=duration,
        detections=detections,
        findings=tuple(findings),
    )


@dataclass(frozen=True)
class ResolvedSize:
    """Image width/height with the order that ``size`` was read in and why."""

    width: int
    height: int
    order: SizeOrder
    source: SizeOrderSource


def _scale_fits(mask_width: int, mask_height: int, width: int, height: int) -> bool:
    """Whether a mask of this size can be the image rescaled by one common factor.

    Rescaling rounds (or floors) each side, so the two per-axis factors may differ by up to
    one mask pixel per side.
    """
    tolerance = 1.0 / width + 1.0 / height + 1e-9
    return abs(mask_width / width - mask_height / height) <= tolerance


def resolve_size_order(
    size: tuple[int, int],
    bboxes: list[tuple[float, float, float, float]],
    mask_size: tuple[int, int] | None = None,
) -> ResolvedSize:
    """Decide whether ``size`` is [width, height] or [height, width].

    Parameters
    ----------
    size : the two values as written.
    bboxes : detection boxes (x1, y1, x2, y2) in image pixels.
    mask_size : (width, height) of a mask of the same image, at any scale, when one exists.

    Returns
    -------
    ResolvedSize. Evidence in order of strength: the mask's aspect ratio (``mask``), boxes that
    fit only one order (``bbox``); otherwise [height, width], the order the product writes
    (``default``).
    """
    first, second = size
    candidates: dict[SizeOrder, tuple[int, int]] = {"wh": (first, second), "hw": (second, first)}
    if first == second:
        return ResolvedSize(first, second, "hw", "default")
    if mask_size is not None:
        fitting = [o for o, (w, h) in candidates.items() if _scale_fits(*mask_size, w, h)]
        if len(fitting) == 1:
            width, height = candidates[fitting[0]]
            return ResolvedSize(width, height, fitting[0], "mask")
    if bboxes:
        max_x = max(b[2] for b in bboxes)
        max_y = max(b[3] for b in bboxes)
        fitting = [o for o, (w, h) in candidates.items() if max_x <= w and max_y <= h]
        if len(fitting) == 1:
            width, height = candidates[fitting[0]]
            return ResolvedSize(width, height, fitting[0], "bbox")
    width, height = candidates["hw"]
    return ResolvedSize(width, height, "hw", "default")
