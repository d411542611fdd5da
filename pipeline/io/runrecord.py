"""``_run.json``: the commit record of a run, written last. Readers trust only what it lists."""

from __future__ import annotations

import json
from typing import Any

from pipeline.io.storage import Location

RUN_RECORD = "_run.json"
RECORD_FORMAT = "mask-pipeline-run/1"


def write_run_record(output: Location, record: dict[str, Any]) -> None:
    """Commit a run: write ``_run.json`` whole, after every part it lists, so that a reader
    never sees a half-written record (one PUT on object stores; on local disk a temporary file
    moved into place, see :meth:`~pipeline.io.storage.Location.replace_bytes`)."""
    payload = json.dumps({"format": RECORD_FORMAT, **record}, indent=2, sort_keys=True).encode()
    output.replace_bytes(RUN_RECORD, payload)


def read_run_record(output: Location) -> dict[str, Any] | None:
    """The committed record, or ``None`` when the output holds no complete run."""
    try:
        record = json.loads(output.read_bytes(RUN_RECORD))
    except FileNotFoundError:
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ValueError(f"{output.url_of(RUN_RECORD)} is not a mask-pipeline run record")
    return record
