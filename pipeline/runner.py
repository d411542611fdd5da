"""A run's life: list -> plan -> map batches -> summarise -> assemble -> commit -> ``_run.json``.

The client lists inputs once and plans batches; workers do all reading, decoding and writing.
What comes back per batch is a :class:`~pipeline.stages.summary.BatchSummary`, merged as it
arrives, so the client's memory does not grow with the number of rows. Both run kinds
(Celantur, ClearML) end in the same commit: the client stages the summary rows, workers assemble
every table's staged parts into a few new Delta data files, the client commits each table in one
Delta transaction against the version the run started from, and ``_run.json`` (written last)
records the committed versions. Nothing committed is ever overwritten; what no version needs any
more is removed by ``mask-pipeline vacuum``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import Any, Literal, TypeVar, cast

from pipeline.config import (
    CelanturOptions,
    ClearmlOptions,
    OptionError,
    RunOptions,
    check_storage_options,
)
from pipeline.formats.celantur import Encoding
from pipeline.formats.clearml import (
    FramesError,
    MaskLabels,
    MaskLabelsError,
    frame_masks,
    load_frames,
    parse_mask_labels,
    parse_uri_map,
    resolve_uri,
)
from pipeline.graph import Executor, InputSize, open_executor
from pipeline.io.delta import (
    CommitConflict,
    DeltaTable,
    UnsupportedOutput,
    commit_table,
    committed_since,
    delta_storage_options,
    open_tables,
)
from pipeline.io.jsonio import JsonError, parse_json
from pipeline.io.parquet import STAGED, write_content_part
from pipeline.io.runrecord import RUN_RECORD, read_run_record, write_run_record
from pipeline.io.storage import (
    InputFile,
    Location,
    StorageError,
    all_at_once,
    in_background,
    is_inside,
    storage_options_with_environment,
)
from pipeline.io.watchdog import watch_storage
from pipeline.logs import fields, show_bar
from pipeline.stages.assemble import (
    FileGroup,
    assemble_files,
    deal_groups,
    plan_files,
    staged_sizes,
)
from pipeline.stages.clearml import FrameMasks
from pipeline.stages.common import ErrorLog, TaskContext
from pipeline.stages.ledger import LEDGER
from pipeline.stages.plan import (
    Batch,
    ImageGroup,
    VideoChunk,
    assign_tracking,
    batch_groups,
    group_images,
    order_chunks,
    split_tracking,
)
from pipeline.stages.summary import BatchSummary, SummaryFold, merge_all
from pipeline.stages.work import Work, run_work
from pipeline.stopping import stop_if_asked
from pipeline.tables import SCHEMAS, TABLES, to_arrow

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INPUT_ERRORS = 0, 1, 2, 3
#: Batches a small collection is cut into, whatever the cluster (so an incremental run on
#: another number of workers finds the same batches; large collections are cut by
#: ``batch_bytes`` alone). Small collections finish in seconds, so a few batches suffice.
MIN_BATCHES = 8
PACKAGE = "mask-pipeline"
#: What a run writes at its output root (other files there are left alone).
OUTPUT_ENTRIES = (
    *(f"{t}/" for t in TABLES), "scaled/", "_work/", f"{STAGED}/", f"{LEDGER}/", RUN_RECORD,
)  # fmt: skip
#: Frames documents in a ClearML frames folder.
FRAMES_SUFFIXES = (".json", ".jsonl", ".ndjson")
#: Failed inputs named in the log, ``_run.json`` and the printed summary (errors/ has them all).
FAILED_EXAMPLES = 5
#: Per-batch warning lines of a pass; further failures are counted in the pass's last line.
WARNING_LINES = 20

LOG = logging.getLogger(__name__)


class EmptyInputError(StorageError):
    """No input was found (a mistyped prefix?) and ``allow_empty`` is off: exit code 1."""


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


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """The versions of the code this process runs (read once: importlib.metadata parses each
    package's metadata file, ~1 ms a package, and what is imported does not change)."""
    names = [PACKAGE, "dask", "distributed", "numpy", "numba", "pyarrow", "fsspec", "pyspng",
             "pillow", "msgspec", "deltalake"]  # fmt: skip
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return tuple(versions.items())


def _versions() -> dict[str, str]:
    """Python's and the packages' versions, for ``_run.json`` and the options fingerprint."""
    return dict(_installed_versions())


def _fingerprint(relevant: dict[str, Any]) -> str:
    """Hash of what changes output bytes: the version, the tables' schemas (a column added
    between releases must not let an incremental run reuse parts without it) and the
    output-affecting options."""
    schemas = {name: schema.to_string() for name, schema in SCHEMAS.items()}
    payload = {"version": _versions()[PACKAGE], "schemas": schemas, **relevant}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Run:
    """What every run carries from its start to its commit."""

    command: Literal["celantur", "clearml"]
    options: RunOptions
    output: Location
    storage_options: dict[str, Any]
    # Each table as the run found it (its latest version; None: no table yet), which the run
    # commits on top of, and the last committed run's record: read in the background once the
    # inputs are listed (see _read_output), complete when `reading` is.
    snapshots: dict[str, DeltaTable | None] = field(default_factory=dict)
    previous: dict[str, Any] | None = None
    reading: Future[None] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    timings: dict[str, float] = field(default_factory=dict)
    clock: float = field(default_factory=time.perf_counter)
    started_clock: float = field(default_factory=time.perf_counter)

    @property
    def work_prefix(self) -> str:
        """Where this run's tasks keep files between passes (``auto`` parks measured rows)."""
        return f"_work/{self.run_id}"

    @property
    def read_versions(self) -> dict[str, int | None]:
        """Each table's version when the run read it (``None``: no table yet)."""
        return {t: None if s is None else s.version() for t, s in self.snapshots.items()}

    def lap(self, name: str) -> None:
        """Record the time since the last lap under ``name``."""
        now = time.perf_counter()
        self.timings[name] = now - self.clock
        self.clock = now


RunFunction = TypeVar("RunFunction", bound=Callable[..., "RunResult"])


def _guarded(run: RunFunction) -> RunFunction:
    """What every run shares around its body: process-local storage refused where worker
    processes would not see it, and the storage watched (a run stops when its storage answers
    nothing for ``storage_timeout`` seconds, see :mod:`pipeline.io.watchdog`)."""

    @functools.wraps(run)
    def guarded(options: CelanturOptions | ClearmlOptions, client: Any | None = None) -> RunResult:
        in_process = client is None and options.execution.resolved_scheduler() == "sync"
        options.refuse_process_local(in_process=in_process)
        storage_options = storage_options_with_environment(options.storage_options)
        check_storage_options(options.urls(), storage_options)  # those of the environment too
        locations = {name: Location(url, storage_options) for name, url in options.urls().items()}
        with watch_storage(locations, options.storage_timeout):
            return run(options, client)

    return cast(RunFunction, guarded)


def _start(command: Literal["celantur", "clearml"], options: RunOptions) -> _Run:
    storage_options = storage_options_with_environment(options.storage_options)
    try:
        delta_storage_options(options.output, storage_options)
    except UnsupportedOutput as exc:
        raise OptionError(f"option 'output': {exc}") from exc
    output = Location(options.output, storage_options, options.storage_timeout)
    run = _Run(command, options, output, storage_options)
    LOG.info("%s run to %s", command, run.output.url, extra=fields(output=run.output.url))
    return run


def _read_output(run: _Run) -> None:
    """Start reading what the output holds — every table's latest snapshot and the last run's
    record — in the background: its round trips overlap planning and the first pass, and the
    commit waits for them (:func:`_commit`). Started once the inputs are listed, so a storage
    that is not there fails the listing first, with no Delta request in flight."""

    def read() -> None:
        snapshots = in_background(functools.partial(open_tables, run.output, TABLES))
        run.previous = read_run_record(run.output)
        run.snapshots = snapshots.result()

    run.reading = in_background(read)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in counts.items())


def _log_phase(run: _Run, phase: str, message: str, *args: Any, **values: Any) -> None:
    """An INFO line for a finished phase, with its duration (the last lap)."""
    seconds = run.timings[phase]
    LOG.info(
        f"{phase.replace('pass', 'pass ')}: {message}, %.1f s", *args, seconds,
        extra=fields(phase=phase, seconds=round(seconds, 3), **values),
    )  # fmt: skip


def _log_plan(run: _Run, executor: Executor, **batches: int) -> None:
    where = executor.description
    _log_phase(
        run, "plan", "%s batches on the %s scheduler (workers %s, threads %s)",
        _counts(batches), where.get("kind"), where.get("workers"), where.get("threads"),
        batches=batches, scheduler=where.get("kind"),
    )  # fmt: skip


def _earlier_output_rows(folders: list[str]) -> ErrorLog:
    """Warning rows in ``errors/`` for the earlier runs' outputs the listing left out."""
    rows = ErrorLog()
    for folder in folders:
        rows.add(folder or ".", "list", "earlier_output",
                 "the output of an earlier run; its files are not inputs and were not read",
                 "warning")  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------
# Celantur
# ---------------------------------------------------------------------------------------------


def earlier_outputs(files: list[InputFile]) -> list[str]:
    """Folders among ``files`` that are outputs of earlier runs (relative; ``""`` for the
    root): a folder holding ``_run.json``, ``_ledger/``, ``_staged/`` or ``_work/``, or a Delta
    table's folder (holding ``_delta_log/``), whose run folder is its parent when it is named
    as one of our tables."""
    roots: set[str] = set()
    for file in files:
        parts = file.rel.split("/")
        if parts[-1] == RUN_RECORD:
            roots.add("/".join(parts[:-1]))
        for depth, part in enumerate(parts[:-1]):
            if part in (LEDGER, STAGED, "_work"):
                roots.add("/".join(parts[:depth]))
            elif part == "_delta_log":
                table = depth - 1 if depth and parts[depth - 1] in TABLES else depth
                roots.add("/".join(parts[:table]))
    # the outermost folders only: a run root inside another one is already excluded
    return sorted(
        r for r in roots if not any(o != r and (o == "" or r.startswith(f"{o}/")) for o in roots)
    )


def _without_earlier_outputs(
    files: list[InputFile], location: Location
) -> tuple[list[InputFile], list[str], int]:
    """``files`` minus those of earlier runs' outputs (warned about: never read as inputs);
    returns the kept files, the output folders and how many files they held."""
    roots = earlier_outputs(files)
    if not roots:
        return files, [], 0
    kept = [f for f in files if not any(r == "" or f.rel.startswith(f"{r}/") for r in roots)]
    skipped = len(files) - len(kept)
    named = ", ".join(location.url_of(r) if r else location.url for r in roots[:FAILED_EXAMPLES])
    LOG.warning(
        "list: %d files in %d output folders of earlier runs are ignored, never read as inputs: %s",
        skipped, len(roots), named, extra=fields(phase="list", ignored=skipped, folders=roots),
    )  # fmt: skip
    return kept, roots, skipped


def _refuse_empty(options: RunOptions, url: str, what: str) -> None:
    if not options.allow_empty:
        raise EmptyInputError(
            f"no inputs found in {url} ({what}); check the URL, or pass --allow-empty "
            "(job key allow_empty) to commit empty tables"
        )
    LOG.warning("list: no inputs found in %s (%s); committing empty tables", url, what)


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


@dataclass(frozen=True)
class Plan:
    """The batches of a Celantur run."""

    fingerprint: str
    image_batches: list[Batch[ImageGroup]]
    chunk_batches: list[Batch[VideoChunk]]


@_guarded
def run_celantur(options: CelanturOptions, client: Any | None = None) -> RunResult:
    """Run the Celantur pipeline (see :func:`pipeline.api.run_celantur` for the public door).

    Raises
    ------
    StorageError
        When the input cannot be listed or the output cannot be written, or the storage
        answers nothing for ``storage_timeout`` seconds (exit code 1).
    OptionError
        For process-local storage (``memory://``) with worker processes (exit code 2).
    """
    run = _start("celantur", options)
    source = Location(options.source, run.storage_options)
    files, earlier, skipped = _without_earlier_outputs(_list_inputs(source, run.output), source)
    _read_output(run)
    groups, inventory = group_images(files)
    found = {kind: inventory.found.get(kind, 0)
             for kind in ("instance", "binary", "metadata", "video_metadata")}  # fmt: skip
    if not sum(found.values()):
        _refuse_empty(options, source.url, f"{len(files)} other files")
    run.lap("list")
    _log_phase(
        run, "list", "%d inputs in %s (%s), %d other files ignored",
        sum(found.values()), source.url, _counts(found), inventory.ignored,
        inputs=found, ignored=inventory.ignored,
    )  # fmt: skip
    fingerprint = _fingerprint(
        {name: getattr(options, name) for name in ("encoding", "gap_iou", "gap_max_frames",
                                                   "gap_min_hits", "gap_high_score",
                                                   "mask_scale", "max_pixels", "max_json_bytes")}
    )  # fmt: skip
    ctx = TaskContext(source, run.output, options, work_prefix=run.work_prefix)
    cut = functools.partial(
        batch_groups,
        batch_bytes=options.execution.batch_bytes,
        min_batches=MIN_BATCHES,
        fingerprint=fingerprint,
    )
    plan = Plan(fingerprint, cut(groups), cut(order_chunks(inventory.video_chunks)))
    inputs = InputSize(len(files), sum(f.size for f in files))
    with open_executor(
        options.execution, client, inputs, remote_storage=ctx.remote_storage
    ) as executor:
        run.lap("plan")
        _log_plan(run, executor, image=len(plan.image_batches), chunk=len(plan.chunk_batches))
        encoding, warning, summary = _execute_celantur(options, ctx, executor, plan, run)
        client_errors = _earlier_output_rows(earlier)
        if warning:
            LOG.warning("encoding: %s", warning)
            client_errors.add(".", "validate", "encoding_ambiguous", warning, "warning")
        return _commit(
            run, executor, summary, client_errors, found=found,
            ignored=inventory.ignored + skipped,
            batches=len(plan.image_batches) + len(plan.chunk_batches), summary_value=encoding,
            extra={"encoding": {"choice": options.encoding, "used": encoding, "warning": warning}},
        )  # fmt: skip


def _execute_celantur(
    options: CelanturOptions, ctx: TaskContext, executor: Executor, plan: Plan, run: _Run
) -> tuple[Encoding, str | None, BatchSummary]:
    """Two passes over the cluster. Pass 1: image batches and video chunk batches; an image
    batch is finished under the given encoding or, with ``auto``, under the one its own
    evidence decides (else its measured rows are parked). Pass 2: what needs all of pass 1 —
    the image batches whose evidence decided nothing (finished from their parked rows) or
    another encoding than the dataset's (measured again: the dataset's evidence conflicts), and
    linking each video whose chunks lie in several batches (a video within one batch is linked
    by that batch's pass-1 task)."""
    given = None if options.encoding == "auto" else cast(Encoding, options.encoding)
    first = [Work("images" if given else "auto", b, given) for b in plan.image_batches]
    # Videos that lie in one chunk batch are linked by its pass-1 task, the others in pass 2.
    within, across = split_tracking(assign_tracking(plan.chunk_batches, plan.fingerprint))
    first += [Work("chunks", b, tracks=within.get(b.key)) for b in plan.chunk_batches]
    # Summaries by the encoding that typed their image rows (None: none typed), so the rows of
    # batches typed under another encoding than the dataset's can be left out.
    folds: dict[str | None, SummaryFold] = {}
    for part in _pass_results(executor, first, ctx, "pass 1"):
        folds.setdefault(next(iter(part.typed.values()), None), SummaryFold()).add(part)
    run.lap("pass1")
    by_encoding = {typed: fold.result() for typed, fold in folds.items()}
    everything = merge_all(by_encoding.values())
    _log_pass(run, "pass1", everything)
    encoding: Encoding
    warning: str | None = None
    if given:
        encoding = given
    elif plan.image_batches:
        encoding, warning = everything.evidence.decide()
    else:
        encoding = "v26"  # no instance mask to decide on, and none to type
    summary = by_encoding.pop(None, BatchSummary()).merge(by_encoding.pop(encoding, BatchSummary()))
    mistyped = {key for other in by_encoding.values() for key in other.typed}
    for other in by_encoding.values():
        summary.work += other.work  # done, though its rows are left out
    if mistyped:
        LOG.info(
            "encoding: %d image batches typed %s by their own evidence are measured again as %s",
            len(mistyped), " or ".join(sorted(map(str, by_encoding))), encoding,
            extra=fields(phase="pass2", batches=len(mistyped), encoding=encoding),
        )  # fmt: skip
    # Finished from parked rows where this run parked them; measured again otherwise: typed
    # under another encoding, or parked by the run whose ledger entry pass 1 reused (its rows
    # were in that run's _work/ folder, so none are looked for).
    second = [
        Work("finish" if b.key in summary.parked else "images", b, encoding)
        for b in plan.image_batches if b.key not in summary.typed
    ]  # fmt: skip
    second += [Work("tracks", a) for a in across]
    second_summary = _run_pass(executor, second, ctx, "pass 2")
    run.lap("pass2")
    _log_pass(run, "pass2", second_summary)
    summary = summary.merge(second_summary)
    return encoding, warning, summary


def _run_pass(executor: Executor, work: list[Work], ctx: TaskContext, label: str) -> BatchSummary:
    """Map the work items over the executor, merging their summaries as they arrive."""
    return merge_all(_pass_results(executor, work, ctx, label))


def _pass_results(
    executor: Executor, work: list[Work], ctx: TaskContext, label: str
) -> Iterator[BatchSummary]:
    """Map the work items over the executor, yielding their summaries as they arrive; a batch
    with failed inputs is logged at once (the first :data:`WARNING_LINES` of the pass)."""
    bar = show_bar(ctx.options.execution.progress)
    LOG.info("%s: %d batches", label, len(work), extra=fields(phase=label, batches=len(work)))
    # Largest first: a cluster starts tasks in the order given, so the last ones to start are
    # the smallest and the workers finish together (content-defined batches range up to twice
    # their target size; one of them started last would leave the other workers idle).
    largest_first = sorted(work, key=lambda item: -item.item.bytes)
    warned = 0
    for part in executor.map(run_work, largest_first, ctx, label=label, progress=bar):
        if part.failed and warned < WARNING_LINES:
            warned += 1
            LOG.warning(
                "%s: %d inputs failed, e.g. %s (%s)%s", label, part.failed_inputs.total(),
                part.failed[0][0], part.failed[0][1],
                "; further failures are only counted" if warned == WARNING_LINES else "",
                extra=fields(phase=label, failed=part.failed),
            )  # fmt: skip
        yield part


def _log_pass(run: _Run, phase: str, summary: BatchSummary) -> None:
    _log_phase(
        run, phase, "%d inputs in tables, %d in errors/, work items done %d, reused %d",
        summary.landed.total(), summary.failed_inputs.total(),
        summary.work.get("done", 0), summary.work.get("reused", 0),
        in_tables=summary.landed.total(), in_errors=summary.failed_inputs.total(),
        work=dict(summary.work),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# ClearML
# ---------------------------------------------------------------------------------------------


def _load_mask_labels(options: ClearmlOptions, storage_options: dict[str, Any]) -> MaskLabels:
    raw = options.mask_labels
    try:
        if isinstance(raw, str):
            folder, name = posixpath.split(raw.rstrip("/"))
            try:
                data = Location(folder or ".", storage_options).read_bytes(name)
            except (OSError, ValueError) as exc:
                raise OptionError(f"option 'mask_labels': cannot read {raw}: {exc}") from exc
            try:
                raw = parse_json(data, max_bytes=options.max_json_bytes)
            except JsonError as exc:
                raise OptionError(f"option 'mask_labels': {raw} is not JSON: {exc}") from exc
        return parse_mask_labels(raw)
    except MaskLabelsError as exc:
        raise OptionError(f"option 'mask_labels': {exc}") from exc


def _frames_documents(frames: Location) -> tuple[Location, list[InputFile], list[str]]:
    """The folder holding the frames documents, the documents (one file, or a folder's) and
    the output folders of earlier runs found among them (not read)."""
    try:
        if frames.fs.isdir(frames.root):
            files, earlier, _ = _without_earlier_outputs(frames.list_files(), frames)
            documents = [f for f in files if f.name.lower().endswith(FRAMES_SUFFIXES)]
            return frames, documents, earlier
        info = frames.fs.info(frames.root)
    except FileNotFoundError as exc:
        raise StorageError(f"frames not found: {frames.url}") from exc
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read frames {frames.url}: {exc}") from exc
    folder, name = posixpath.split(frames.url.rstrip("/"))
    parent = Location(folder or ".", frames.storage_options)
    file = InputFile.listed(name, int(info.get("size") or 0), str(info.get("mtime", "")))
    return parent, [file], []


def _plan_frames(
    root: Location, documents: list[InputFile], options: ClearmlOptions, errors: ErrorLog
) -> tuple[list[FrameMasks], BatchSummary]:
    """Parse the frames documents (on the client: they list the inputs, like a listing does)."""
    uri_map = parse_uri_map(list(options.uri_map))
    groups: list[FrameMasks] = []
    landed = BatchSummary()
    for document in documents:
        try:
            frames = load_frames(root.read_bytes(document.key), max_bytes=options.max_json_bytes)
        except JsonError as exc:
            errors.add(document.rel, "decode", f"json_{exc.code}", str(exc))
            continue
        except FramesError as exc:
            errors.add(document.rel, "validate", exc.code, str(exc))
            continue
        landed.landed["frames_document"] += 1
        parsed = frame_masks(document.rel, frames)
        for warning in parsed.warnings:
            errors.add(document.rel, "validate", "bad_frame", warning, "warning")
        base = root.url_of(document.folder)
        by_frame: dict[int, list[Any]] = {}
        for ref in parsed.masks:
            by_frame.setdefault(ref.frame_position, []).append(ref)
        for position, refs in sorted(by_frame.items()):
            resolved = tuple(resolve_uri(ref.uri, uri_map, base) for ref in refs)
            groups.append(FrameMasks(document, position, tuple(refs), resolved))
    return groups, landed


@_guarded
def run_clearml(options: ClearmlOptions, client: Any | None = None) -> RunResult:
    """Run the ClearML pipeline (see :func:`pipeline.api.run_clearml` for the public door).

    Raises
    ------
    OptionError
        For an unusable ``mask_labels`` (exit code 2).
    StorageError
        When the frames cannot be read or the output cannot be written, or the storage
        answers nothing for ``storage_timeout`` seconds (exit code 1).
    """
    run = _start("clearml", options)
    mask_labels = _load_mask_labels(options, run.storage_options)
    mode: Literal["pixel", "alpha"] = (
        options.mode if options.mode != "auto" else ("pixel" if mask_labels else "alpha")
    )
    frames = Location(options.frames, run.storage_options)
    root, documents, earlier = _frames_documents(frames)
    _read_output(run)
    client_errors = ErrorLog()
    groups, landed = _plan_frames(root, documents, options, client_errors)
    masks = sum(len(group.masks) for group in groups)
    if not masks and not client_errors:
        _refuse_empty(options, frames.url, f"{len(documents)} frames documents, no mask")
    client_errors.extend(_earlier_output_rows(earlier))
    run.lap("list")
    _log_phase(
        run, "list", "%d masks in %d frames documents of %s (%d unreadable)",
        masks, len(documents), frames.url, len(documents) - landed.landed["frames_document"],
        inputs={"frames_document": len(documents), "mask": masks},
    )  # fmt: skip
    fingerprint = _fingerprint(
        {"mode": mode, "mask_labels": sorted((list(k), list(v)) for k, v in mask_labels.items()),
         "uri_map": sorted(options.uri_map), "mask_scale": options.mask_scale,
         "max_pixels": options.max_pixels, "max_json_bytes": options.max_json_bytes}
    )  # fmt: skip
    ctx = TaskContext(root, run.output, options, run.work_prefix, mask_labels, mode)
    batches = batch_groups(
        groups,
        batch_bytes=options.execution.batch_bytes,
        min_batches=MIN_BATCHES,
        fingerprint=fingerprint,
    )
    # Masks are known by reference only (no sizes): the small-run choice counts them.
    with open_executor(
        options.execution, client, InputSize(masks), remote_storage=ctx.remote_storage
    ) as executor:
        run.lap("plan")
        _log_plan(run, executor, mask=len(batches))
        work = [Work("clearml", batch) for batch in batches]
        masks_summary = _run_pass(executor, work, ctx, "pass 1")
        run.lap("pass1")
        _log_pass(run, "pass1", masks_summary)
        summary = landed.merge(masks_summary)
        return _commit(
            run, executor, summary, client_errors,
            found={"frames_document": len(documents), "mask": masks}, ignored=0,
            batches=len(batches), summary_value=mode,
            extra={"mode": {"choice": options.mode, "used": mode},
                   "mask_labels": {"values": len(mask_labels)}},
        )  # fmt: skip


def run_options(options: RunOptions, client: Any | None = None) -> RunResult:
    """Run whichever pipeline ``options`` describe (as a job file does)."""
    if isinstance(options, CelanturOptions):
        return run_celantur(options, client)
    if isinstance(options, ClearmlOptions):
        return run_clearml(options, client)
    raise TypeError(f"no pipeline takes {type(options).__name__}")


# ---------------------------------------------------------------------------------------------
# The commit, shared
# ---------------------------------------------------------------------------------------------


def _commit(
    run: _Run,
    executor: Executor,
    summary: BatchSummary,
    client_errors: ErrorLog,
    *,
    found: dict[str, int],
    ignored: int,
    batches: int,
    summary_value: str | None,
    extra: dict[str, Any],
) -> RunResult:
    """Stage the client's rows, assemble every table's data files on the workers, commit each
    table against the version the run started from, then write ``_run.json`` (last).

    Raises
    ------
    CommitConflict
        When another run committed to the output since this run started (exit code 1).
    """
    output, options = run.output, run.options
    assert run.reading is not None, "the output is read once the inputs are listed"
    run.reading.result()
    client_rows: dict[str, Any] = {}
    if client_errors:
        summary.add_errors(client_errors, kind="frames_document")
        summary.rows["errors"] += len(client_errors)
        client_rows["errors"] = to_arrow("errors", client_errors)
    summary_rows = summary.summary_rows(summary_value)
    client_rows["summary"] = to_arrow("summary", summary_rows)
    summary.rows["summary"] = client_rows["summary"].num_rows
    summary.parts["summary"] = []
    sizes = staged_sizes(output, STAGED)
    written = all_at_once([
        functools.partial(write_content_part, output, f"{STAGED}/{table}", rows, sizes)
        for table, rows in client_rows.items()
    ])  # fmt: skip
    for table, (rel, size) in zip(client_rows, written, strict=True):
        sizes[rel] = size
        summary.parts.setdefault(table, []).append(rel)
    staged = {table: sorted(summary.parts.get(table, [])) for table in TABLES}
    unchanged = _unchanged_tables(run, staged)
    groups: list[FileGroup] = [
        group for table in TABLES if table not in unchanged
        for group in plan_files(table, staged[table], sizes)
    ]  # fmt: skip
    adds: dict[str, list[Any]] = {table: [] for table in TABLES}
    tasks = deal_groups(groups, executor.total_threads)
    for assembled in executor.map(assemble_files, tasks, output, label="assemble"):
        for table, add in assembled:
            adds[table].append(add)
    # Right before the commits (one request per table, all at once), so that two runs whose
    # commits would interleave table by table rarely get that far: delta-rs asks again, per
    # table, right before each commit.
    _stop_if_committed(run, committed_since(output, run.read_versions))
    run.lap("assemble")
    scheduler = dict(executor.description)
    exit_code = EXIT_INPUT_ERRORS if summary.errors.get("error") else EXIT_OK
    record: dict[str, Any] = {
        "run_id": run.run_id,
        "command": run.command,
        "options": options.record(),
        "versions": _versions(),
        "started": run.started.isoformat(),
        "scheduler": {k: v for k, v in scheduler.items() if k != "dashboard"},
        **extra,
        "inputs": {"found": found, "ignored_files": ignored, "batches": batches},
        "accounting": {
            "found": sum(found.values()),
            "in_tables": summary.landed.total(),
            "in_errors": summary.failed_inputs.total(),
        },
        "scaled": {
            "folder": "scaled/" if options.mask_scale else None,
            "mask_scale": options.mask_scale,
        },
        "errors": dict(summary.errors),
        "first_failed": [{"path": path, "error": error} for path, error in summary.failed],
        "work": {"done": summary.work.get("done", 0), "reused": summary.work.get("reused", 0)},
        "exit_code": exit_code,
    }

    def commit(table: str) -> dict[str, Any]:
        rows_in_table = int(summary.rows.get(table, 0))
        if table in unchanged:
            return {**unchanged[table], "rows": rows_in_table}
        described = {"run_id": run.run_id, "command": run.command, "rows": rows_in_table,
                     "options": record["options"]}  # fmt: skip
        version = commit_table(
            output, table, run.snapshots[table], adds[table], SCHEMAS[table], described
        )
        files = sorted(f"{table}/{add.path}" for add in adds[table])
        return {"rows": rows_in_table, "version": version, "files": files, "staged": staged[table]}

    # A stop signal's exception can be lost in rare timing (pipeline.stopping); its record
    # cannot: a stopped run commits nothing.
    stop_if_asked()
    # Delta has no multi-table transaction (only _run.json, written last, pins a cross-table
    # snapshot). The first changed table is committed alone: of two runs that passed the look
    # above at the same moment, only one wins it (a conditional put of the same version), and
    # the other stops having committed nothing, instead of each winning some tables. The rest
    # go at once, so that their round trips overlap (7.5 s of a 13 s run at 40 ms per request,
    # one by one).
    first = [table for table in TABLES if table not in unchanged][:1]
    committed = {table: commit(table) for table in first}
    others = [table for table in TABLES if table not in committed]
    committed.update(
        zip(others, all_at_once([functools.partial(commit, t) for t in others]), strict=True)
    )
    tables = {table: committed[table] for table in TABLES}
    run.lap("commit")
    record.update(
        tables=tables, finished=datetime.now(timezone.utc).isoformat(), timings=run.timings
    )
    write_run_record(output, record)
    # Committed: the run's work folder goes (its files went as each batch finished). Other
    # runs' folders stay: one under way is still working, a crashed one waits for vacuum.
    output.remove_folder(run.work_prefix)
    _log_phase(
        run, "commit", "%s rows, _run.json written", _counts(
            {t: info["rows"] for t, info in record["tables"].items() if info["rows"]}),
        rows={t: info["rows"] for t, info in record["tables"].items()},
    )  # fmt: skip
    _log_finish(output, record, time.perf_counter() - run.started_clock)
    return RunResult(
        output=options.output,
        tables={t: [output.url_of(f) for f in info["files"]] for t, info in tables.items()},
        summary=summary_rows,
        record=record,
        exit_code=exit_code,
        scheduler=scheduler,
    )


def _log_finish(output: Location, record: dict[str, Any], seconds: float) -> None:
    """The run's last line: exit code, accounting, work done and reused, where errors are."""
    accounting, failed = record["accounting"], record["first_failed"]
    message = (
        f"finished with exit code {record['exit_code']} in {seconds:.1f} s: "
        f"{accounting['found']} inputs = {accounting['in_tables']} in tables + "
        f"{accounting['in_errors']} in errors/; work items done {record['work']['done']}, "
        f"reused {record['work']['reused']}"
    )
    values = fields(
        phase="finish", exit_code=record["exit_code"], seconds=round(seconds, 3),
        accounting=accounting, work=record["work"], first_failed=failed,
    )  # fmt: skip
    if failed:
        named = ", ".join(f"{f['path']} ({f['error']})" for f in failed)
        LOG.warning("%s; failed: %s; all in %s", message, named, output.url_of("errors"),
                    extra=values)  # fmt: skip
    else:
        LOG.info(message, extra=values)


def _unchanged_tables(run: _Run, staged: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The tables whose latest version the last committed run made from exactly these staged
    parts (whose bytes the ledger verified): an incremental rerun over unchanged inputs then
    writes and commits nothing for them."""
    if run.previous is None:
        return {}
    unchanged = {}
    for table, info in run.previous.get("tables", {}).items():
        if (
            table in staged
            and info.get("version") is not None
            and info.get("version") == run.read_versions[table]
            and info.get("staged") == staged[table]
        ):
            unchanged[table] = info
    return unchanged


def _stop_if_committed(run: _Run, committed: list[str]) -> None:
    """Stop before committing anything when another run committed to some of the ``committed``
    tables of the output while this one ran (delta-rs catches the races this check leaves,
    table by table)."""
    if committed:
        table = committed[0]
        raise CommitConflict(
            f"another run committed {run.output.url_of(table)} while this run was running (it "
            f"started at version {run.read_versions[table]}); nothing of this run was committed"
        )
