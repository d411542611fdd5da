"""JSON bytes in: size-capped, strict first, and tolerant of the NaN/Infinity Python writes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

#: Default cap on a metadata file's size. A 500-frame chunk with 20 detections a frame is ~8 MB
#: of indented JSON; parsing a file costs up to ~10x its size in memory, so 16 MiB keeps a
#: worker well under 256 MiB per input (measured by the bad-input tests).
DEFAULT_MAX_JSON_BYTES = 16 * 1024 * 1024


#: Bounds on what parsing a metadata file may allocate, counted from its bytes before parsing
#: (:func:`_structure_counts`; brackets and commas inside strings count too, so the
#: counts are upper bounds). An object or array costs 56-200 bytes as a Python object however
#: small it is in the file (``{}`` is 2 bytes), any other value up to ~60: without these caps
#: 16 MiB of ``{},{},...`` takes ~400 MiB to parse, with them parsing allocates under ~130 MiB.
#: A detection with every field is 4 containers and 19 values, so the caps leave room for
#: :data:`pipeline.formats.metadata.MAX_DETECTIONS` real detections.
MAX_JSON_CONTAINERS = 250_000
MAX_JSON_VALUES = 1_200_000


class JsonError(ValueError):
    """JSON that cannot be read: ``code`` is ``too_large``, ``too_complex``, ``encoding`` or
    ``syntax``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_json_bounds(data: bytes, *, max_bytes: int, bounded: bool = True) -> None:
    """Refuse a document before parsing it: over ``max_bytes``, or (``bounded``) holding more
    than :data:`MAX_JSON_CONTAINERS` objects and arrays or :data:`MAX_JSON_VALUES` values.

    Raises
    ------
    JsonError
        ``too_large`` or ``too_complex``.
    """
    if len(data) > max_bytes:
        raise JsonError("too_large", f"JSON of {len(data)} bytes exceeds the cap of {max_bytes}")
    if not bounded or len(data) <= MAX_JSON_CONTAINERS:
        # Each byte counted is at most one container or one value, so a document this short
        # is under both caps: no count needed (most video chunks of real tracks are).
        return
    containers, commas = _structure_counts(data)
    if containers > MAX_JSON_CONTAINERS:
        raise JsonError(
            "too_complex",
            f"JSON with up to {containers} objects and arrays, over the cap of "
            f"{MAX_JSON_CONTAINERS}",
        )
    values = containers + commas
    if values > MAX_JSON_VALUES:
        raise JsonError(
            "too_complex", f"JSON with up to {values} values, over the cap of {MAX_JSON_VALUES}"
        )


#: Bytes compared at a time by :func:`_structure_counts` (its temporary arrays stay this small).
_COUNT_BLOCK = 1 << 20


def _structure_counts(data: bytes) -> tuple[int, int]:
    """How many ``{`` and ``[`` bytes, and how many ``,`` bytes ``data`` holds. NumPy compares a
    block at a time: 5x faster than three ``bytes.count`` passes, which cost as much as a tenth
    of a video chunk's whole parse."""
    view = np.frombuffer(data, dtype=np.uint8)
    containers = commas = 0
    for start in range(0, len(view), _COUNT_BLOCK):
        block = view[start : start + _COUNT_BLOCK]
        containers += int(np.count_nonzero(block == ord("{")) + np.count_nonzero(block == ord("[")))
        commas += int(np.count_nonzero(block == ord(",")))
    return containers, commas


def parse_json(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_JSON_BYTES, bounded: bool = False
) -> Any:
    """Parse a JSON document.

    orjson parses valid JSON several times faster than the standard library; documents it
    refuses are tried once more with ``json`` only to accept ``NaN``/``Infinity`` literals
    (written by Python's own encoder), which later validation reports value by value.
    Nesting deeper than orjson's 1024 levels is refused (``syntax``, "nested too deeply").

    Parameters
    ----------
    data : the document's bytes.
    max_bytes : refuse larger documents before parsing.
    bounded : also refuse documents over the container and value caps before parsing
        (:func:`check_json_bounds`): every metadata door parses bounded.

    Raises
    ------
    JsonError
        Over ``max_bytes`` or the caps, not UTF-8, or not JSON (including nesting too deep).
    """
    check_json_bounds(data, max_bytes=max_bytes, bounded=bounded)
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
