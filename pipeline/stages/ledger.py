"""The ledger of finished work items, under ``_ledger/`` in the output root.

Every work item records its summary when it finishes, with the size and SHA-256 of every staged
part it wrote; an ``--incremental`` run reuses an entry instead of redoing the work only when
every part still has exactly those bytes (a truncated or rewritten part means the work is done
again). Entry names derive from the inputs (paths, sizes, versions), the options and, for typed
image results, the encoding, so an entry is reused only for exactly the work it describes.
"""

from __future__ import annotations

import json

from pipeline.io.parquet import part_fingerprint
from pipeline.io.storage import Location
from pipeline.stages.summary import BatchSummary, summary_from_json, summary_to_json

LEDGER = "_ledger"
#: /3: summaries name the batches they typed and the encoding that typed them (``typed``);
#: /4: the parts are Arrow IPC streams (``part-*.arrow``), no longer Parquet
ENTRY_FORMAT = "mask-pipeline-ledger/4"


def entry_path(name: str) -> str:
    """Where the entry ``name`` lives below the output root."""
    return f"{LEDGER}/{name}.json"


def save_entry(output: Location, name: str, summary: BatchSummary) -> None:
    """Record a finished work item (written after all of its parts) with the size and SHA-256
    of every part as the work wrote it: nothing is read back."""
    parts = sorted(part for listed in summary.parts.values() for part in listed)
    payload = {
        "format": ENTRY_FORMAT,
        "summary": summary_to_json(summary),
        "parts": {part: list(summary.written[part]) for part in parts},
    }
    output.write_bytes(entry_path(name), json.dumps(payload, sort_keys=True).encode())


def load_entry(output: Location, name: str) -> BatchSummary | None:
    """The recorded summary, or ``None`` when there is none, it is unreadable, or a part it
    lists is gone or no longer has the recorded size and checksum (then the work is simply
    done again)."""
    try:
        payload = json.loads(output.read_bytes(entry_path(name)))
        if payload.get("format") != ENTRY_FORMAT:
            return None
        summary = summary_from_json(payload["summary"])
        recorded = payload["parts"]
        parts = sorted(part for listed in summary.parts.values() for part in listed)
        if sorted(recorded) != parts:
            return None
        for part, data in zip(parts, output.read_many(parts), strict=True):
            if list(part_fingerprint(data)) != recorded[part]:
                return None
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return summary
