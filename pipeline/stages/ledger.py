"""The ledger of finished work items, under ``_ledger/`` in the output root.

Every work item records its summary when it finishes, with the size and SHA-256 of the staged
bundle it wrote (:func:`pipeline.io.parquet.write_bundle`: all its tables' parts in one object);
an ``--incremental`` run reuses an entry instead of redoing the work only when the bundle still
has exactly those bytes (one read per work item; a truncated or rewritten bundle means the work
is done again). Entry names derive from the inputs (paths, sizes, versions), the options and,
for typed image results, the encoding, so an entry is reused only for exactly the work it
describes.
"""

from __future__ import annotations

import json

from pipeline.io.parquet import part_fingerprint, staged_span
from pipeline.io.storage import Location
from pipeline.stages.summary import BatchSummary, summary_from_json, summary_to_json

LEDGER = "_ledger"
#: /3: summaries name the batches they typed and the encoding that typed them (``typed``);
#: /4: the parts are Arrow IPC streams (``part-*.arrow``), no longer Parquet;
#: /5: one staged bundle per work item; ``parts`` fingerprints the bundles
ENTRY_FORMAT = "mask-pipeline-ledger/5"


def entry_path(name: str) -> str:
    """Where the entry ``name`` lives below the output root."""
    return f"{LEDGER}/{name}.json"


def save_entry(output: Location, name: str, summary: BatchSummary) -> None:
    """Record a finished work item (written after its staged bundle) with the size and
    SHA-256 of the bundle as the work wrote it: nothing is read back."""
    payload = {
        "format": ENTRY_FORMAT,
        "summary": summary_to_json(summary),
        "parts": {rel: list(summary.written[rel]) for rel in _bundles(summary)},
    }
    output.write_bytes(entry_path(name), json.dumps(payload, sort_keys=True).encode())


def load_entry(output: Location, name: str) -> BatchSummary | None:
    """The recorded summary, or ``None`` when there is none, it is unreadable, or a staged
    bundle it lists is gone or no longer has the recorded size and checksum (then the work is
    simply done again)."""
    try:
        payload = json.loads(output.read_bytes(entry_path(name)))
        if payload.get("format") != ENTRY_FORMAT:
            return None
        summary = summary_from_json(payload["summary"])
        recorded = payload["parts"]
        bundles = _bundles(summary)
        if sorted(recorded) != bundles:
            return None
        for rel, data in zip(bundles, output.read_many(bundles), strict=True):
            if list(part_fingerprint(data)) != recorded[rel]:
                return None
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return summary


def _bundles(summary: BatchSummary) -> list[str]:
    """The staged bundles holding the summary's parts, sorted."""
    return sorted({staged_span(ref).rel for refs in summary.parts.values() for ref in refs})
