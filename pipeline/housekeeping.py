"""Looking after an output folder: the runs its tables' history holds, and vacuum.

Runs never delete what a committed version may need: earlier table versions stay readable (time
travel), and what crashed or superseded runs left behind stays on storage until
:func:`vacuum_output` removes it. Vacuum keeps everything younger than its retention (default
:data:`DEFAULT_RETENTION_HOURS`, Delta Lake's own default), so a run still writing into the
output is never robbed of its files, and everything the last committed run (``_run.json``) reads.
The doors (:mod:`pipeline.api`, the CLI) run both under the storage watchdog.
"""

from __future__ import annotations

import json
import math
import posixpath
from datetime import datetime, timedelta, timezone
from typing import Any

from pipeline.io.delta import RUN_KEY, open_table, read_delta, table_history
from pipeline.io.parquet import STAGED, staged_span
from pipeline.io.runrecord import read_run_record
from pipeline.io.storage import Location
from pipeline.stages.ledger import LEDGER
from pipeline.tables import TABLES

#: Files younger than this are never vacuumed (Delta Lake's default deleted-file retention).
DEFAULT_RETENTION_HOURS = 168


def run_history(output: Location) -> list[dict[str, Any]]:
    """The runs that committed to ``output``, newest first: one entry per run with its time,
    command, options and, per table, the version it committed and its rows."""
    runs: dict[str, dict[str, Any]] = {}
    for table in _tables_present(output):
        for commit in table_history(output, table):
            described = commit.get(RUN_KEY)
            if not isinstance(described, dict) or "run_id" not in described:
                continue
            entry = runs.setdefault(
                described["run_id"],
                {"run_id": described["run_id"], "command": described.get("command"),
                 "options": described.get("options", {}), "timestamp": 0, "tables": {}},
            )  # fmt: skip
            entry["timestamp"] = max(entry["timestamp"], int(commit.get("timestamp") or 0))
            entry["tables"][table] = {
                "version": commit.get("version"), "rows": described.get("rows"),
            }  # fmt: skip
    for entry in runs.values():
        entry["time"] = datetime.fromtimestamp(entry["timestamp"] / 1000, timezone.utc).isoformat()
    return sorted(runs.values(), key=lambda e: e["timestamp"], reverse=True)


def _tables_present(output: Location) -> list[str]:
    """The tables with a folder under ``output``, from one listing: a Python request, which
    the storage watchdog can interrupt (a delta-rs call cannot be: opening a table against a
    storage that never answers took minutes), and none for a table not there."""
    output.fs.invalidate_cache(output.root)
    try:
        listed = output.fs.ls(output.root, detail=False)
    except FileNotFoundError:
        return []
    names = {posixpath.basename(str(path).rstrip("/")) for path in listed}
    return [table for table in TABLES if table in names]


def vacuum_output(
    output: Location, retention_hours: float = DEFAULT_RETENTION_HOURS, dry_run: bool = False
) -> list[str]:
    """Delete what no kept table version needs and is older than ``retention_hours``: data
    files of superseded versions and of runs that never committed, staged bundles and ledger
    entries the last committed run does not use, abandoned ``_work/`` folders, rescaled masks
    no kept ``masks/`` version points at; on local disk, then the folders that left empty
    (never ``output`` itself). Returns the removed paths (below ``output``).

    Table versions older than the retention may no longer be readable afterwards.
    """
    record = read_run_record(output) or {"tables": {}}
    cutoff = datetime.now(timezone.utc) - timedelta(hours=retention_hours)
    removed: list[str] = []
    kept_scaled: set[str] = set()
    for table in TABLES:
        opened = open_table(output, table)
        if opened is None:
            continue
        pinned = record["tables"].get(table, {}).get("version")
        keep = sorted({opened.version(), *([pinned] if pinned is not None else [])})
        if table == "masks":
            for version in _versions_since(output, table, cutoff, keep):
                paths = read_delta(output, table, version, columns=["scaled_path"])
                kept_scaled.update(p for p in paths["scaled_path"].to_pylist() if p)
        # delta-rs takes whole hours: rounded up, no file younger than asked is removed.
        deleted = opened.vacuum(
            retention_hours=math.ceil(retention_hours), dry_run=dry_run,
            enforce_retention_duration=False, full=True, keep_versions=keep,
        )  # fmt: skip
        removed += [f"{table}/{path.rsplit(table + '/', 1)[-1]}" for path in deleted]
    staged = {
        staged_span(p).rel for info in record["tables"].values() for p in info.get("staged", [])
    }
    stale = [
        rel for rel, modified in _files(output, STAGED) if rel not in staged and modified < cutoff
    ]
    stale += [
        rel for rel, modified in _files(output, LEDGER)
        if modified < cutoff and not _ledger_entry_kept(output, rel, staged)
    ]  # fmt: skip
    stale += [rel for rel, modified in _files(output, "_work") if modified < cutoff]
    stale += [
        rel for rel, modified in _files(output, "scaled")
        if rel not in kept_scaled and modified < cutoff
    ]  # fmt: skip
    if not dry_run:
        output.remove(stale)
        output.remove_emptied_folders(removed + stale)
    return sorted(removed + stale)


def _versions_since(location: Location, table: str, cutoff: datetime, keep: list[int]) -> list[int]:
    """Versions committed after ``cutoff`` (still within retention), plus ``keep``."""
    recent = {
        int(commit["version"])
        for commit in table_history(location, table)
        if datetime.fromtimestamp(int(commit.get("timestamp") or 0) / 1000, timezone.utc) >= cutoff
    }
    return sorted(recent | set(keep))


def _files(location: Location, under: str) -> list[tuple[str, datetime]]:
    """Files below ``under`` with their modification times, from one listing."""
    base = location.path(under)
    location.fs.invalidate_cache(base)
    try:
        found = location.fs.find(base, detail=True)
    except FileNotFoundError:
        return []
    prefix = location.root.rstrip("/") + "/"
    files = []
    for path, info in found.items():
        modified = info.get("mtime") or info.get("LastModified") or info.get("created")
        if isinstance(modified, (int, float)):
            when = datetime.fromtimestamp(modified, timezone.utc)
        elif isinstance(modified, datetime):
            when = modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)
        else:
            when = datetime.now(timezone.utc)  # unknown age: keep it
        files.append((path[len(prefix) :] if path.startswith(prefix) else path, when))
    return files


def _ledger_entry_kept(location: Location, rel: str, staged: set[str]) -> bool:
    """A ledger entry stays while every staged bundle it lists is kept."""
    try:
        parts = json.loads(location.read_bytes(rel)).get("parts", {})
    except (OSError, ValueError):
        return False
    return bool(parts) and all(part in staged for part in parts)
