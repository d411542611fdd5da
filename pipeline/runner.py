"""A run's life: list -> plan -> map batches -> summarise -> commit ``_run.json`` -> clean up.

The client lists inputs once and plans batches; workers do all reading, decoding and writing.
What comes back per batch is a :class:`~pipeline.stages.summary.BatchSummary`, merged as it
arrives, so the client's memory does not grow with the number of rows.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import Any, cast

from pipeline.config import CelanturOptions
from pipeline.formats.celantur import Encoding
from pipeline.graph import Executor, open_executor
from pipeline.io.parquet import write_part_if_changed
from pipeline.io.runrecord import RUN_RECORD, write_run_record
from pipeline.io.storage import (
    InputFile,
    Location,
    StorageError,
    is_inside,
    storage_options_with_environment,
)
from pipeline.stages.common import TaskContext
from pipeline.stages.ledger import LEDGER, entry_path
from pipeline.stages.plan import (
    Batch,
    ImageGroup,
    VideoChunk,
    assign_tracking,
    batch_groups,
    group_images,
    order_chunks,
)
from pipeline.stages.summary import BatchSummary
from pipeline.stages.work import Work, ledger_name, run_work
from pipeline.tables import CELANTUR_TABLES, empty, to_arrow

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INPUT_ERRORS = 0, 1, 2, 3
#: Batches per worker thread for small collections, so every worker gets work to balance.
BATCHES_PER_THREAD = 4
PACKAGE = "mask-pipeline"
#: What a run writes at its output root (besides nothing else: other files are left alone).
OUTPUT_ENTRIES = (
    *(f"{t}/" for t in CELANTUR_TABLES), "scaled/", "_work/", f"{LEDGER}/", RUN_RECORD,
)  # fmt: skip


@dataclass
class RunResult:
    """What a finished run reports: where its tables are, its summary and its exit code."""

    output: str
    tables: dict[str, list[str]]
    summary: list[dict[str, Any]]
    record: dict[str, Any]
    exit_code: int = EXIT_OK
    scheduler: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Inputs that ended in ``errors/`` with severity ``error``."""
        return int(self.record["errors"].get("error", 0))


def _versions() -> dict[str, str]:
    names = [
        PACKAGE,
        "dask",
        "distributed",
        "numpy",
        "numba",
        "pyarrow",
        "fsspec",
        "pyspng",
        "pillow",
    ]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _fingerprint(options: CelanturOptions) -> str:
    """Hash of what changes output bytes: the version and the output-affecting options."""
    relevant = {
        "version": _versions()[PACKAGE],
        "encoding": options.encoding,
        "mask_scale": options.mask_scale,
        "max_pixels": options.max_pixels,
        "max_json_bytes": options.max_json_bytes,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _list_inputs(source: Location, output: Location) -> list[InputFile]:
    try:
        if not source.fs.isdir(source.root):
            raise StorageError(f"input folder not found: {source.url}")
        files = source.list_files()
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot list input folder {source.url}: {exc}") from exc
    nested = is_inside(output, source)
    if nested is not None:
        # The output lives inside the input tree: never read our own outputs back as inputs.
        prefix = f"{nested}/" if nested else ""
        own = tuple(f"{prefix}{entry}" for entry in OUTPUT_ENTRIES)
        files = [f for f in files if not f.rel.startswith(own)]
    return files


def run_celantur(options: CelanturOptions, client: Any | None = None) -> RunResult:
    """Run the Celantur pipeline (see :func:`pipeline.api.run_celantur` for the public door).

    Raises
    ------
    StorageError
        When the input cannot be listed or the output cannot be written (exit code 1).
    """
    started = datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    storage_options = storage_options_with_environment(options.storage_options)
    source = Location(options.source, storage_options)
    output = Location(options.output, storage_options)

    files = _list_inputs(source, output)
    groups, inventory = group_images(files)
    timings["list"] = time.perf_counter() - clock
    fingerprint = _fingerprint(options)
    ctx = TaskContext(source, output, options, work_prefix=f"_work/{fingerprint}")

    with open_executor(options.execution, client) as executor:
        min_batches = BATCHES_PER_THREAD * executor.total_threads
        batch_bytes = options.execution.batch_bytes
        plan = Plan(
            fingerprint,
            image_batches=batch_groups(
                groups, batch_bytes=batch_bytes, min_batches=min_batches, fingerprint=fingerprint
            ),
            chunk_batches=batch_groups(
                order_chunks(inventory.video_chunks),
                batch_bytes=batch_bytes,
                min_batches=min_batches,
                fingerprint=fingerprint,
            ),
        )
        clock = time.perf_counter()
        encoding, encoding_warning, summary, ledger = _execute(
            options, ctx, executor, plan, timings
        )
        scheduler = dict(executor.description)
    timings["execute"] = time.perf_counter() - clock

    clock = time.perf_counter()
    summary = summary.merge(_run_level_rows(output, fingerprint, encoding_warning))
    summary_table = to_arrow("summary", summary.summary_rows(encoding))
    summary.parts["summary"] = [
        write_part_if_changed(output, f"summary/part-{fingerprint}.parquet", summary_table)
    ]
    summary.rows["summary"] = summary_table.num_rows
    for table in CELANTUR_TABLES:
        if not summary.parts.get(table):
            summary.parts[table] = [
                write_part_if_changed(output, f"{table}/part-empty.parquet", empty(table))
            ]

    exit_code = EXIT_INPUT_ERRORS if summary.errors.get("error") else EXIT_OK
    batches = len(plan.image_batches) + len(plan.chunk_batches)
    run_id = uuid.uuid4().hex
    found = {
        kind: inventory.found.get(kind, 0)
        for kind in ("instance", "binary", "metadata", "video_metadata")
    }
    record: dict[str, Any] = {
        "run_id": run_id,
        "command": "celantur",
        "options": options.record(),
        "versions": _versions(),
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "scheduler": {k: v for k, v in scheduler.items() if k != "dashboard"},
        "encoding": {"choice": options.encoding, "used": encoding, "warning": encoding_warning},
        "inputs": {"found": found, "ignored_files": inventory.ignored, "batches": batches},
        "accounting": {
            "found": sum(found.values()),
            "in_tables": summary.landed.total(),
            "in_errors": summary.failed_inputs.total(),
        },
        "tables": {
            table: {"rows": int(summary.rows.get(table, 0)), "parts": sorted(summary.parts[table])}
            for table in CELANTUR_TABLES
        },
        "scaled": {
            "folder": "scaled/" if options.mask_scale else None,
            "mask_scale": options.mask_scale,
        },
        "errors": dict(summary.errors),
        "work": {"done": summary.work.get("done", 0), "reused": summary.work.get("reused", 0)},
        "exit_code": exit_code,
        "timings": timings,
    }
    timings["commit"] = time.perf_counter() - clock
    write_run_record(output, record)
    _remove_orphans(output, record, files, options, ledger)
    return RunResult(
        output=options.output,
        tables={
            t: [output.url_of(p) for p in record["tables"][t]["parts"]] for t in CELANTUR_TABLES
        },
        summary=summary.summary_rows(encoding),
        record=record,
        exit_code=exit_code,
        scheduler=scheduler,
    )


@dataclass(frozen=True)
class Plan:
    """The batches of a run."""

    fingerprint: str
    image_batches: list[Batch[ImageGroup]]
    chunk_batches: list[Batch[VideoChunk]]


def _execute(
    options: CelanturOptions,
    ctx: TaskContext,
    executor: Executor,
    plan: Plan,
    timings: dict[str, float],
) -> tuple[Encoding, str | None, BatchSummary, set[str]]:
    """Two passes over the cluster. Pass 1: image batches (measured, or finished when the
    encoding is given) and video chunk batches. Pass 2: what needs all of pass 1 — finishing
    images under the encoding ``auto`` decided, and linking each video across its chunks."""
    given = None if options.encoding == "auto" else cast(Encoding, options.encoding)
    first = [Work("images" if given else "measure", b, given) for b in plan.image_batches]
    first += [Work("chunks", b) for b in plan.chunk_batches]
    clock = time.perf_counter()
    summary = _run_pass(executor, first, ctx, "pass 1", options)
    timings["pass1"] = time.perf_counter() - clock
    encoding: Encoding
    warning: str | None = None
    if given:
        encoding = given
    elif plan.image_batches:
        encoding, warning = summary.evidence.decide()
    else:
        encoding = "v26"  # no instance mask to decide on, and none to type
    second = [] if given else [Work("finish", b, encoding) for b in plan.image_batches]
    second += [Work("tracks", a) for a in assign_tracking(plan.chunk_batches, plan.fingerprint)]
    ledger = {ledger_name(work) for work in (*first, *second)}
    summary = summary.merge(_run_pass(executor, second, ctx, "pass 2", options))
    return encoding, warning, summary, ledger


def _run_pass(
    executor: Executor, work: list[Work], ctx: TaskContext, label: str, options: CelanturOptions
) -> BatchSummary:
    summary = BatchSummary()
    progress = bool(options.execution.progress)
    for part in executor.map(run_work, work, ctx, label=label, progress=progress):
        summary = summary.merge(part)
    return summary


def _run_level_rows(output: Location, fingerprint: str, warning: str | None) -> BatchSummary:
    """Error rows the client itself knows: the encoding decision."""
    rows = []
    if warning:
        rows.append({"path": ".", "stage": "validate", "error": "encoding_ambiguous",
                     "message": warning, "severity": "warning"})  # fmt: skip
    summary = BatchSummary()
    if rows:
        summary.add_errors(rows)
        summary.rows["errors"] = len(rows)
        summary.parts["errors"] = [
            write_part_if_changed(
                output, f"errors/part-run-{fingerprint}.parquet", to_arrow("errors", rows)
            )
        ]
    return summary


def _remove_orphans(
    output: Location,
    record: dict[str, Any],
    inputs: list[InputFile],
    options: CelanturOptions,
    ledger: set[str],
) -> None:
    """After the commit, delete what no committed record lists: parts of earlier runs with other
    inputs or options, parked rows of crashed runs, rescaled masks of removed inputs, ledger
    entries of work this run did not need."""
    listed = {part for info in record["tables"].values() for part in info["parts"]}
    stale = [
        f.rel for table in CELANTUR_TABLES for f in output.list_files(table)
        if f.name.startswith("part-") and f.name.endswith(".parquet") and f.rel not in listed
    ]  # fmt: skip
    stale += [
        name for name in (p.rsplit("/", 1)[-1] for p in output.fs.ls(output.root, detail=False))
        if name.startswith(f"{RUN_RECORD}.") and name.endswith(".partial")
    ]  # fmt: skip
    expected_scaled = {f"scaled/{f.rel}" for f in inputs} if options.mask_scale else set()
    stale += [f.rel for f in output.list_files("scaled") if f.rel not in expected_scaled]
    used = {entry_path(name) for name in ledger}
    stale += [f.rel for f in output.list_files(LEDGER) if f.rel not in used]
    output.remove(stale)
    if output.exists("_work"):
        output.fs.rm(output.path("_work"), recursive=True)
