"""JSON bytes in: size-capped, strict first, and tolerant of the NaN/Infinity Python writes."""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Default cap on a metadata file's size. A 500-frame chunk with 20 detections a frame is ~8 MB
#: of indented JSON; parsing a file costs up to ~10x its size in memory, so 16 MiB keeps a
#: worker well under 256 MiB per input (measured by the bad-input tests).
DEFAULT_MAX_JSON_BYTES = 16 * 1024 * 1024


class JsonError(ValueError):
    """JSON that cannot be read: ``code`` is ``too_large``, ``encoding`` or ``syntax``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_json(data: bytes, *, max_bytes: int = DEFAULT_MAX_JSON_BYTES) -> Any:
    """Parse a JSON document.

    orjson parses valid JSON several times faster than the standard library; documents it
    refuses are tried once more with ``json`` only to accept ``NaN``/``Infinity`` literals
    (written by Python's own encoder), which later validation reports value by value.

    Raises
    ------
    JsonError
        Over ``max_bytes``, not UTF-8, or not JSON (including nesting too deep to parse).
    """
    if len(data) > max_bytes:
        raise JsonError("too_large", f"JSON of {len(data)} bytes exceeds the cap of {max_bytes}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as strict_error:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonError(
                "encoding", f"not UTF-8 text: {exc.reason} at byte {exc.start}"
            ) from exc
        try:
            return json.loads(text)
        except RecursionError as exc:
            raise JsonError("syntax", "JSON nested too deeply to parse") from exc
        except ValueError:
            raise JsonError("syntax", f"invalid JSON: {strict_error}") from strict_error
