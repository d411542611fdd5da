"""The ledger of finished work items, under ``_ledger/`` in the output root.

Every work item records its summary when it finishes; an ``--incremental`` run reuses an entry
instead of redoing the work when every part the entry lists still exists. Entry names derive from
the inputs (paths, sizes, versions), the options and, for typed image results, the encoding, so
an entry is reused only for exactly the work it describes.
"""

from __future__ import annotations

import json

from pipeline.io.storage import Location
from pipeline.stages.summary import BatchSummary, summary_from_json, summary_to_json

LEDGER = "_ledger"
ENTRY_FORMAT = "mask-pipeline-ledger/1"


def entry_path(name: str) -> str:
    """Where the entry ``name`` lives below the output root."""
    return f"{LEDGER}/{name}.json"


def save_entry(output: Location, name: str, summary: BatchSummary) -> None:
    """Record a finished work item (written after all of its parts)."""
    payload = {"format": ENTRY_FORMAT, "summary": summary_to_json(summary)}
    output.write_bytes(entry_path(name), json.dumps(payload, sort_keys=True).encode())


def load_entry(output: Location, name: str) -> BatchSummary | None:
    """The recorded summary, or ``None`` when there is none, it is unreadable, or a part it
    lists is gone (then the work is simply done again)."""
    try:
        payload = json.loads(output.read_bytes(entry_path(name)))
        if payload.get("format") != ENTRY_FORMAT:
            return None
        summary = summary_from_json(payload["summary"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None
    parts = [part for listed in summary.parts.values() for part in listed]
    if not all(output.exists(part) for part in parts):
        return None
    return summary
