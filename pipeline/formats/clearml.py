"""What ClearML Hyper-Dataset frames mean: mask references, ``mask_labels`` and URIs.

A frame is ``{id, context_id, timestamp, sources: [{id, uri, content_type, width, height,
masks: [...]}], rois: [...]}``. Mask lists come in the SDK's shapes: dicts with ``id`` and
``uri``, bare URI strings, or a ``{mask id: uri}`` mapping; masks without an id get "00", "01",
... by position. The deprecated ``rois[].mask {id, value}`` links an ROI's labels to one value
of one mask.

``mask_labels`` (a dataset version's metadata) maps RGB values to labels: a list of
``{value, labels}``, the SDK's ``{"_all_": [...]}`` wrapper, or the Python form
``{(r, g, b): [labels]}`` (in JSON, keys such as ``"0,0,0"`` or ``"(0, 0, 0)"``). A grey value
``v`` means ``(v, v, v)``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pipeline.io.jsonio import JsonError, parse_json

MaskMode = Literal["pixel", "alpha", "auto"]
MASK_MODES: tuple[MaskMode, ...] = get_args(MaskMode)

Value = tuple[int, int, int]
MaskLabels = dict[Value, tuple[str, ...]]


class MaskLabelsError(ValueError):
    """A ``mask_labels`` mapping that cannot be used; the message names the value at fault."""


class FramesError(ValueError):
    """A frames document that is not frames at all (``code`` for the error row)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# mask_labels
# ---------------------------------------------------------------------------------------------


def _value(raw: Any, where: str) -> Value:
    if isinstance(raw, bool):
        raise MaskLabelsError(f"mask_labels: {where}: value {raw!r} is not a colour")
    if isinstance(raw, int):
        raw = (raw, raw, raw)
    if isinstance(raw, str):
        parts = [p for p in re.split(r"[\s,()\[\]]+", raw) if p]
        try:
            raw = tuple(int(p) for p in parts)
        except ValueError as exc:
            raise MaskLabelsError(f"mask_labels: {where}: value {raw!r} is not a colour") from exc
    if (
        isinstance(raw, (list, tuple))
        and len(raw) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535 for v in raw)
    ):
        return (int(raw[0]), int(raw[1]), int(raw[2]))
    raise MaskLabelsError(f"mask_labels: {where}: value {raw!r} is not [r, g, b]")


def _labels(raw: Any, where: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, (list, tuple)) and all(isinstance(label, str) for label in raw):
        return tuple(raw)
    raise MaskLabelsError(f"mask_labels: {where}: labels {raw!r} are not a list of strings")


def parse_mask_labels(raw: Any) -> MaskLabels:
    """Normalise ``mask_labels`` in any of its forms to ``{(r, g, b): labels}``.

    Raises
    ------
    MaskLabelsError
        For malformed entries, and for a value given twice with different labels.
    """
    if raw is None:
        return {}
    if isinstance(raw, Mapping) and set(raw) == {"_all_"}:
        raw = raw["_all_"]
    entries: list[tuple[Any, Any, str]] = []
    if isinstance(raw, Mapping):
        entries = [(key, labels, f"key {key!r}") for key, labels in raw.items()]
    elif isinstance(raw, list):
        for position, item in enumerate(raw):
            if not isinstance(item, Mapping) or "value" not in item:
                raise MaskLabelsError(
                    f"mask_labels: entry {position} is not an object with 'value' and 'labels'"
                )
            entries.append((item["value"], item.get("labels", []), f"entry {position}"))
    else:
        raise MaskLabelsError(f"mask_labels must be a list or a mapping, got {type(raw).__name__}")
    mapping: MaskLabels = {}
    for raw_value, raw_labels, where in entries:
        value, labels = _value(raw_value, where), _labels(raw_labels, where)
        if value in mapping and mapping[value] != labels:
            raise MaskLabelsError(
                f"mask_labels: value {list(value)} is mapped twice, to {list(mapping[value])} "
                f"and to {list(labels)}"
            )
        mapping[value] = labels
    return mapping


# ---------------------------------------------------------------------------------------------
# frames and their masks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskRef:
    """One mask of one source of one frame."""

    frames_file: str  # the frames document it came from (relative path or URL)
    frame_position: int  # position of the frame in that document
    frame_id: str | None
    source_id: str | None
    mask_id: str
    uri: str  # as written in the frame
    content_type: str | None
    roi_labels: tuple[tuple[Value, tuple[str, ...]], ...] = ()  # deprecated rois[].mask links

    @property
    def identity(self) -> str:
        """A stable name for the reference (batch boundaries, messages)."""
        return f"{self.frames_file}#{self.frame_position}/{self.source_id}/{self.mask_id}"

    @property
    def is_video(self) -> bool:
        """Whether the mask holds one mask per video frame."""
        return bool(self.content_type and self.content_type.lower().startswith("video/"))

    @property
    def shown_uri(self) -> str:
        """The URI as tables and messages show it (no query string: it may hold secrets)."""
        return redact_uri(self.uri)

    def describe(self) -> str:
        """How error messages name the mask."""
        return f"frame {self.frame_id!r}, source {self.source_id!r}, mask {self.mask_id!r}"


@dataclass
class FramesParse:
    """Mask references of a frames document, with problems found on the way."""

    masks: list[MaskRef] = field(default_factory=list)
    frames: int = 0
    warnings: list[str] = field(default_factory=list)


def load_frames(data: bytes, *, max_bytes: int) -> list[Any]:
    """The frames of a document holding one frame object, an array of them, or JSON Lines.

    Raises
    ------
    JsonError
        When the bytes are neither JSON nor JSON Lines.
    FramesError
        When the JSON is not frames (e.g. a number).
    """
    try:
        document = parse_json(data, max_bytes=max_bytes)
    except JsonError as whole_error:
        if whole_error.code != "syntax":
            raise
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) < 2:
            raise
        try:
            document = [parse_json(line, max_bytes=max_bytes) for line in lines]
        except JsonError:
            raise whole_error from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    raise FramesError("bad_frames", f"frames must be an object, an array or JSON Lines, got "
                      f"{type(document).__name__}")  # fmt: skip


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _mask_entries(raw: Any) -> list[tuple[str, Any]]:
    """(mask id, entry) pairs of a source's ``masks`` in any of the SDK's shapes."""
    if isinstance(raw, Mapping):
        return [(str(key), value) for key, value in raw.items()]
    if isinstance(raw, list):
        entries = []
        for position, item in enumerate(raw):
            given = item.get("id") if isinstance(item, Mapping) else None
            entries.append((str(given) if given not in (None, "") else f"{position:02d}", item))
        return entries
    return []


def frame_masks(frames_file: str, frames: list[Any]) -> FramesParse:
    """Every mask reference of a document's frames (frames without masks contribute none)."""
    parsed = FramesParse()
    for position, frame in enumerate(frames):
        if not isinstance(frame, Mapping):
            parsed.warnings.append(f"frame at position {position} is not an object; skipped")
            continue
        parsed.frames += 1
        frame_id = _text(frame.get("id"))
        roi_links = _roi_links(frame.get("rois"))
        sources = frame.get("sources") or []
        if not isinstance(sources, list):
            parsed.warnings.append(f"frame {frame_id!r}: 'sources' is not a list; skipped")
            continue
        for source in sources:
            if not isinstance(source, Mapping):
                parsed.warnings.append(f"frame {frame_id!r}: a source is not an object; skipped")
                continue
            source_id = _text(source.get("id"))
            for mask_id, entry in _mask_entries(source.get("masks")):
                uri = entry if isinstance(entry, str) else (entry or {}).get("uri")
                if not isinstance(uri, str) or not uri:
                    parsed.warnings.append(
                        f"frame {frame_id!r}, source {source_id!r}, mask {mask_id!r} has no uri"
                    )
                    continue
                content_type = entry.get("content_type") if isinstance(entry, Mapping) else None
                parsed.masks.append(
                    MaskRef(
                        frames_file, position, frame_id, source_id, mask_id, uri,
                        content_type if isinstance(content_type, str) else None,
                        roi_links.get(mask_id, ()),
                    )
                )  # fmt: skip
    return parsed


def _roi_links(rois: Any) -> dict[str, tuple[tuple[Value, tuple[str, ...]], ...]]:
    """Per mask id, the (value, labels) pairs of the deprecated ``rois[].mask`` links."""
    links: dict[str, list[tuple[Value, tuple[str, ...]]]] = {}
    if not isinstance(rois, list):
        return {}
    for roi in rois:
        if not isinstance(roi, Mapping) or not isinstance(roi.get("mask"), Mapping):
            continue
        mask = roi["mask"]
        try:
            value = _value(mask.get("value"), "roi")
        except MaskLabelsError:
            continue
        raw_labels = roi.get("labels", roi.get("label", []))
        labels = (raw_labels,) if isinstance(raw_labels, str) else tuple(
            label for label in raw_labels or [] if isinstance(label, str)
        )  # fmt: skip
        links.setdefault(str(mask.get("id", "00")), []).append((value, labels))
    return {mask_id: tuple(pairs) for mask_id, pairs in links.items()}


# ---------------------------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------------------------


def parse_uri_map(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """``PREFIX=REPLACEMENT`` pairs, longest prefix first (so the most specific one wins).

    Raises
    ------
    ValueError
        For a pair without ``=`` or with an empty prefix.
    """
    mapping = []
    for pair in pairs:
        prefix, sep, replacement = pair.partition("=")
        if not sep or not prefix:
            raise ValueError(f"option '--uri-map' expects PREFIX=REPLACEMENT, got {pair!r}")
        mapping.append((prefix, replacement))
    return tuple(sorted(mapping, key=lambda item: -len(item[0])))


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal: ``.`` and ``..`` go, empty segments (``//``) stay."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    return "/".join(kept)


def resolve_uri(uri: str, uri_map: tuple[tuple[str, str], ...], base: str) -> str:
    """Where to read a mask: the first matching prefix mapped; a relative URI joined to ``base``
    (the frames document's folder).

    An absolute URL is read exactly as written (``a//b`` and ``x/../y`` are literal object keys
    on S3); a relative one joined to a URL base has its ``.`` and ``..`` segments resolved, as
    a browser resolves a relative link; local paths are normalised.
    """
    for prefix, replacement in uri_map:
        if uri.startswith(prefix):
            uri = replacement + uri[len(prefix) :]
            break
    if _SCHEME.match(uri) or uri.startswith("/"):
        return uri if _SCHEME.match(uri) else posixpath.normpath(uri)
    if not base:
        return posixpath.normpath(uri)
    scheme = _SCHEME.match(base)
    if scheme is None:
        return posixpath.normpath(posixpath.join(base, uri))
    host, _, base_path = base[scheme.end() :].partition("/")
    joined = _remove_dot_segments(f"{base_path.rstrip('/')}/{uri}".lstrip("/"))
    return f"{scheme.group(0)}{host}/{joined}"


def redact_uri(uri: str) -> str:
    """A URI fit for tables, messages and logs: its query string (where presigned URLs carry
    signatures and credentials) and fragment replaced by a marker."""
    base, query, _ = uri.partition("?")
    base, fragment, _ = base.partition("#")
    return f"{base}?<redacted>" if query or fragment else base


def protocol_of(url: str) -> str:
    """The fsspec protocol of a URL (``file`` for plain paths)."""
    match = _SCHEME.match(url)
    return match.group(0)[:-3].lower() if match else "file"


def safe_relative_path(uri: str) -> str:
    """A path below an output folder that names ``uri`` and cannot leave that folder
    (scheme and host become folders; empty, ``.`` and ``..`` parts are dropped)."""
    without_scheme = _SCHEME.sub(lambda m: m.group(0)[:-3] + "/", redact_uri(uri).split("?")[0])
    parts = [p for p in re.split(r"[/\\]+", without_scheme) if p not in ("", ".", "..")]
    return "/".join(parts) or "mask"
