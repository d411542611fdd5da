"""The command-line door: ``mask-pipeline celantur | clearml | run | demo | schema | summary |
history | vacuum``.

Exit codes (SPEC 4): 0 every input processed; 3 finished with inputs in ``errors/``; 2 usage
error; 1 the run could not proceed (e.g. storage unreachable, no input found); 143 / 130 stopped
by SIGTERM / SIGINT. Messages name the option or input; a failure is one line (its traceback only
at log level debug). Results go to stdout; log lines (``--log-level``, ``--log-format``) to
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import (
    DEFAULT_STORAGE_TIMEOUT,
    CelanturOptions,
    ClearmlOptions,
    ExecutionOptions,
    OptionError,
    RunOptions,
    nest_storage_options,
    parse_key_value,
)
from pipeline.formats.celantur import ENCODING_CHOICES
from pipeline.formats.clearml import MASK_MODES
from pipeline.graph import SchedulerError, work_left_behind
from pipeline.housekeeping import DEFAULT_RETENTION_HOURS
from pipeline.io.storage import StorageError
from pipeline.jobs import load_job
from pipeline.logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from pipeline.runner import (
    EXIT_FAILED,
    EXIT_USAGE,
    RunResult,
    run_celantur,
    run_options,
)
from pipeline.stopping import Stopped, ask_to_stop, forget_stops
from pipeline.tables import schema_markdown


def _add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format`` (every subcommand; unset: the job file's or the
    defaults, ``info`` and ``text``)."""
    defaults = ExecutionOptions()
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help=f"least severe log line written to stderr (default: {defaults.log_level})",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text: timestamped lines; json: one JSON object per line, for log collectors "
        f"(default: {defaults.log_format})",
    )


def _add_execution_arguments(parser: argparse.ArgumentParser, *, job: bool = False) -> None:
    """The fields of ExecutionOptions; for ``run`` (``job``) no defaults: only the flags given
    override the job file."""
    defaults = ExecutionOptions()
    parser.add_argument(
        "--scheduler",
        help="'sync' (in-process), a scheduler address (tcp://host:8786), or unset for "
        "$DASK_SCHEDULER_ADDRESS, else a local cluster sized to the machine",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes of the local cluster (default: one per core, none for a small run; "
        "ignored, with a warning, with --scheduler)",
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=None if job else defaults.batch_bytes,
        help=f"input bytes per task (default: {defaults.batch_bytes})",
    )
    parser.add_argument(
        "--io-concurrency",
        type=int,
        default=None if job else defaults.io_concurrency,
        metavar="N",
        help="storage requests in flight per worker thread, reads ahead and writes behind "
        f"(default: {defaults.io_concurrency})",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="draw a progress bar on stderr (default: when stderr is a terminal; otherwise "
        "progress is logged every ~10 s or 10%% of the batches)",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    _add_log_arguments(parser)


def _add_storage_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec/s3fs storage option, repeatable (e.g. endpoint_url=http://127.0.0.1:9000)",
    )


def _add_storage_timeout_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--storage-timeout",
        type=float,
        default=DEFAULT_STORAGE_TIMEOUT,
        metavar="SECONDS",
        help=f"stop {what} (exit 1) when the storage answers no request for this long "
        f"(default {DEFAULT_STORAGE_TIMEOUT:g})",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every run (the fields of RunOptions)."""
    defaults = RunOptions(output="-")
    parser.add_argument(
        "--mask-scale",
        type=int,
        metavar="P",
        help="also write masks rescaled to P percent (1..100, nearest neighbour) under scaled/",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=defaults.max_pixels,
        help="refuse PNGs (and video frames) declaring more pixels (decompression bombs)",
    )
    parser.add_argument(
        "--max-json-bytes",
        type=int,
        default=defaults.max_json_bytes,
        help="refuse metadata and frames files larger than this",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="process only new or changed inputs, reusing recorded results of the others",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="commit empty tables when no input is found (default: exit 1 naming the URL)",
    )
    _add_storage_timeout_argument(parser, "the run")
    _add_storage_argument(parser)
    _add_execution_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests to validate command lines in manifests)."""
    parser = argparse.ArgumentParser(
        prog="mask-pipeline",
        description="Segmentation masks and detection metadata to Parquet statistics, on Dask.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    celantur = commands.add_parser(
        "celantur", help="statistics of a folder of Celantur masks and metadata"
    )
    celantur.add_argument("source", help="input folder: path or fsspec URL (s3://bucket/prefix)")
    celantur.add_argument("output", help="output folder: path or fsspec URL")
    defaults = CelanturOptions(source="-", output="-")
    celantur.add_argument(
        "--encoding",
        choices=ENCODING_CHOICES,
        default=defaults.encoding,
        help="instance-mask encoding; auto decides per dataset from evidence (default: auto)",
    )
    celantur.add_argument(
        "--gap-iou",
        type=float,
        default=defaults.gap_iou,
        help="video gap tracker: smallest IoU of a track's predicted box and a detection that "
        "links them (default: %(default)s)",
    )
    celantur.add_argument(
        "--gap-max-frames",
        type=int,
        default=defaults.gap_max_frames,
        help="video gap tracker: longest gap, in frames, reported as an anonymisation gap "
        "(default: %(default)s)",
    )
    celantur.add_argument(
        "--gap-min-hits",
        type=int,
        default=defaults.gap_min_hits,
        help="video gap tracker: detections in consecutive frames that confirm a track "
        "(default: %(default)s)",
    )
    celantur.add_argument(
        "--gap-high-score",
        type=float,
        default=defaults.gap_high_score,
        help="video gap tracker: detections scoring below it only extend tracks "
        "(default: %(default)s)",
    )
    _add_run_arguments(celantur)

    clearml = commands.add_parser(
        "clearml", help="statistics of the masks of ClearML Hyper-Dataset frames"
    )
    clearml.add_argument(
        "frames", help="frames document (JSON, array or JSON Lines) or a folder of them"
    )
    clearml.add_argument("output", help="output folder: path or fsspec URL")
    clearml.add_argument(
        "--mask-labels", metavar="FILE", help="JSON file with the version's mask_labels"
    )
    clearml.add_argument(
        "--mode",
        choices=MASK_MODES,
        default="auto",
        help="pixel (values to labels), alpha (opacity), auto: pixel when mask_labels is given",
    )
    clearml.add_argument(
        "--uri-map",
        action="append",
        default=[],
        metavar="PREFIX=REPLACEMENT",
        help="rewrite mask URIs, repeatable (e.g. https://host/bucket/=s3://bucket/)",
    )
    _add_run_arguments(clearml)

    job = commands.add_parser("run", help="run a job file (TOML; see jobs/)")
    job.add_argument("job", help="the job file")
    job.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a job key, repeatable; dotted for tables: execution.scheduler=sync",
    )
    _add_execution_arguments(job, job=True)

    demo = commands.add_parser("demo", help="make sample data and run the whole pipeline on it")
    demo.add_argument(
        "output",
        nargs="?",
        help="folder of the run (sample data under its input/; `summary` reads it) "
        "(default: a new temporary folder)",
    )
    demo.add_argument("--images", type=int, default=24, help="sample images to generate")
    demo.add_argument("--videos", type=int, default=3, help="sample videos to generate")
    _add_execution_arguments(demo)

    schema = commands.add_parser("schema", help="print the output tables' columns (Markdown)")
    _add_log_arguments(schema)

    summary = commands.add_parser("summary", help="print the summary of a finished run")
    summary.add_argument("output", help="output folder of a run")
    _add_storage_timeout_argument(summary, "reading")
    _add_storage_argument(summary)
    _add_log_arguments(summary)

    history = commands.add_parser("history", help="list the runs committed to an output folder")
    history.add_argument("output", help="output folder")
    _add_storage_timeout_argument(history, "reading")
    _add_storage_argument(history)
    _add_log_arguments(history)

    vacuum = commands.add_parser(
        "vacuum",
        help="delete files no kept table version needs (older than the retention)",
        description="Delete data files of superseded table versions and of runs that never "
        "committed, unused staged parts and ledger entries, abandoned _work/ folders and "
        "rescaled masks no kept masks/ version points at, when older than the retention. "
        "Table versions older than the retention may become unreadable (time travel).",
    )
    vacuum.add_argument("output", help="output folder")
    vacuum.add_argument(
        "--retention-hours", type=float, default=DEFAULT_RETENTION_HOURS,
        help="keep everything younger than this (default %(default)s: a week, as Delta Lake)",
    )  # fmt: skip
    vacuum.add_argument("--dry-run", action="store_true", help="list, do not delete")
    _add_storage_timeout_argument(vacuum, "the vacuum")
    _add_storage_argument(vacuum)
    _add_log_arguments(vacuum)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown flag is reported with its subcommand's usage (argparse would
    print the top-level one)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


#: Execution flags and their job keys (what ``run`` turns into ``--set`` overrides).
_EXECUTION_FLAGS = (
    "scheduler", "workers", "batch_bytes", "io_concurrency", "progress", "log_level", "log_format",
)  # fmt: skip


def _execution(args: argparse.Namespace) -> ExecutionOptions:
    given = {name: getattr(args, name) for name in _EXECUTION_FLAGS}
    return ExecutionOptions(**{name: value for name, value in given.items() if value is not None})


def _job_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides, then the execution flags given to ``run`` (they win)."""
    flags = [
        f"execution.{name}={json.dumps(value) if not isinstance(value, str) else value}"
        for name in _EXECUTION_FLAGS
        if (value := getattr(args, name)) is not None
    ]
    return [*args.overrides, *flags]


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    return nest_storage_options([parse_key_value(text) for text in args.storage_option])


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RunOptions fields from the command line."""
    return {
        "output": args.output,
        "mask_scale": args.mask_scale,
        "max_pixels": args.max_pixels,
        "max_json_bytes": args.max_json_bytes,
        "incremental": args.incremental,
        "allow_empty": args.allow_empty,
        "storage_timeout": args.storage_timeout,
        "storage_options": _storage_options(args),
        "execution": _execution(args),
    }


def _celantur_options(args: argparse.Namespace) -> CelanturOptions:
    return CelanturOptions(
        source=args.source,
        encoding=args.encoding,
        gap_iou=args.gap_iou,
        gap_max_frames=args.gap_max_frames,
        gap_min_hits=args.gap_min_hits,
        gap_high_score=args.gap_high_score,
        **_run_options(args),
    )


def _clearml_options(args: argparse.Namespace) -> ClearmlOptions:
    return ClearmlOptions(
        frames=args.frames,
        mask_labels=args.mask_labels,
        mode=args.mode,
        uri_map=tuple(args.uri_map),
        **_run_options(args),
    )


def _table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str, int]], limit: int = 20
) -> list[str]:
    """Fixed-width lines: (heading, key, width) per column; the first column left-aligned."""
    if not rows:
        return []
    lines = ["".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, _, w) in enumerate(columns))]
    for row in rows[:limit]:
        cells = []
        for i, (_, key, width) in enumerate(columns):
            value = row.get(key)
            text = "" if value is None else str(value)[-width:]
            cells.append(f"{text:<{width}}" if i == 0 else f"{text:>{width}}")
        lines.append("".join(cells))
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more (summary/ has them all)")
    return lines


def format_summary(record: dict[str, Any], summary: list[dict[str, Any]], output: str) -> str:
    """A short human-readable report of the run at ``output``: inputs, accounting, work done
    and reused, rows of the tables that have any (a ClearML run lists no Celantur table), the
    summary's tables, and the first failed inputs with where the rest are."""
    tables = record["tables"]
    accounting = record["accounting"]
    work = record.get("work", {})
    filled = {name: info["rows"] for name, info in tables.items() if info["rows"]}
    lines = []
    if "encoding" in record:
        lines.append(
            f"encoding: {record['encoding']['used']} (chosen: {record['encoding']['choice']})"
        )
    if "mode" in record:
        lines.append(f"mode: {record['mode']['used']} (chosen: {record['mode']['choice']})")
    lines += [
        "inputs: " + ", ".join(f"{k} {v}" for k, v in record["inputs"]["found"].items()),
        f"accounting: {accounting['found']} inputs = {accounting['in_tables']} in tables "
        f"+ {accounting['in_errors']} in errors/",
        f"work items: {work.get('done', 0)} done, {work.get('reused', 0)} reused (--incremental)",
        "rows: " + (", ".join(f"{name} {rows}" for name, rows in filled.items()) or "none"),
    ]
    by_scope: dict[str, list[dict[str, Any]]] = {}
    for row in summary:
        by_scope.setdefault(row["scope"], []).append(row)
    lines += _table(
        [row for row in by_scope.get("type", []) if row.get("segments")],
        [("type", "name", 14), ("segments", "segments", 9), ("pixels", "pixels", 12),
         ("area p50", "area_p50", 10), ("detections", "detections", 11)],
    )  # fmt: skip
    lines += _table(
        by_scope.get("video", []),
        [("video", "name", 32), ("frames", "frames", 8), ("detections", "detections", 11),
         ("chunk gaps", "chunk_gaps", 11), ("blinks", "anonymisation_gaps", 8)],
    )  # fmt: skip
    lines += _table(
        by_scope.get("mask_label", []),
        [("label", "name", 24), ("masks", "masks", 8), ("frames", "frames", 8),
         ("pixels", "pixels", 12)],
    )  # fmt: skip
    errors = record["errors"]
    lines.append(f"errors: {errors.get('error', 0)}, warnings: {errors.get('warning', 0)}")
    failed = record.get("first_failed", [])
    if failed:
        lines.append("failed inputs (first by path):")
        lines += [f"  {f['path']}: {f['error']}" for f in failed]
    if errors.get("error") or errors.get("warning"):
        where = f"{output.rstrip('/')}/errors/"
        more = "all of them" if errors.get("error", 0) > len(failed) else "messages"
        lines.append(f"{more} and warnings: {where} (e.g. read_table(OUT, 'errors'))")
    return "\n".join(lines)


def _report(result: RunResult) -> None:
    print(format_summary(result.record, result.summary, result.output))
    print(f"output: {result.output} (exit code {result.exit_code})")


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.sampledata.celantur import make_celantur_tree
    from pipeline.sampledata.video import make_video_fleet

    root = Path(args.output or tempfile.mkdtemp(prefix="mask-pipeline-demo-"))
    # The run's tables at the root, so `mask-pipeline summary ROOT` reads it; the sample data
    # beside them (never inside an output: it would not be read as input).
    source, output = root / "input", root
    tree = make_celantur_tree(source / "images", seed=0, images=args.images)
    fleet = make_video_fleet(source / "videos", seed=0, videos=args.videos, quirks=False)
    print(f"sample data: {len(tree.images)} images and {len(fleet.videos)} videos under {source}")
    options = CelanturOptions(
        source=str(source), output=str(output), mask_scale=50, execution=_execution(args)
    )
    result = run_celantur(options)
    _report(result)
    print(f"again: mask-pipeline summary {output}")
    return result.exit_code


def _print_summary(args: argparse.Namespace) -> int:
    from pipeline.api import read_run, read_table

    storage, timeout = _storage_options(args), args.storage_timeout
    record = read_run(args.output, storage, storage_timeout=timeout)
    summary = read_table(args.output, "summary", storage, storage_timeout=timeout).to_pylist()
    print(format_summary(record, summary, args.output))
    return 0


def _print_history(args: argparse.Namespace) -> int:
    from pipeline.api import run_history

    runs = run_history(args.output, _storage_options(args), storage_timeout=args.storage_timeout)
    if not runs:
        print(f"no runs committed under {args.output}")
        return 0
    for entry in runs:
        rows = ", ".join(f"{t} {info['rows']} (v{info['version']})"
                         for t, info in entry["tables"].items())  # fmt: skip
        print(f"{entry['time']}  {entry['command']}  run {entry['run_id']}")
        print(f"  options: {json.dumps(entry['options'], sort_keys=True)}")
        print(f"  rows: {rows}")
    return 0


def _vacuum(args: argparse.Namespace) -> int:
    from pipeline.api import vacuum_output

    removed = vacuum_output(
        args.output, _storage_options(args), retention_hours=args.retention_hours,
        dry_run=args.dry_run, storage_timeout=args.storage_timeout,
    )  # fmt: skip
    for rel in removed:
        print(rel)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} files", file=sys.stderr)
    return 0


#: Signals that stop a run: Kubernetes deleting a pod (TERM), Ctrl-C (INT).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`~pipeline.stopping.Stopped` in the main thread: the run
    stops scheduling where it is, its cluster is closed, and nothing more is committed (the
    commit is the run's last step, and looks for a stop first). A second signal during that
    clean-up ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        raise ask_to_stop(signum)

    report_unraisable = sys.unraisablehook

    def quiet_lost_stop(unraisable: Any) -> None:
        # A handler run inside a C callback (llvmlite's, while numba loads a kernel) raises
        # where nobody can catch it: Python reports it as "Exception ignored" on stderr. The
        # stop is recorded, and the run ends at its next work item (pipeline.stopping).
        if not isinstance(unraisable.exc_value, Stopped):
            report_unraisable(unraisable)

    forget_stops()
    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    sys.unraisablehook = quiet_lost_stop
    try:
        yield
    finally:
        sys.unraisablehook = report_unraisable
        for number, handler in previous.items():
            signal.signal(number, handler)
        forget_stops()


def _fail(message: str) -> int:
    """Print one line for a run that cannot proceed; the traceback only at log level debug."""
    print(f"mask-pipeline: {message}", file=sys.stderr)
    if logging.getLogger("pipeline").isEnabledFor(logging.DEBUG):
        traceback.print_exc()
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mask-pipeline`` console script; returns the exit code."""
    with _stop_on_signals():
        try:
            return _main(argv)
        except Stopped as stopped:
            print(
                f"mask-pipeline: stopped by {stopped}; the output holds the last committed run",
                file=sys.stderr,
            )
            return 128 + stopped.signum


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    # Our log lines go to stderr, results to stdout; Dask's own loggers keep their
    # configuration (their INFO lines are noise to a user).
    configure_logging(args.log_level or "info", args.log_format or "text")
    try:
        if args.command in ("celantur", "clearml", "run"):
            if args.command == "celantur":
                options: RunOptions = _celantur_options(args)
            elif args.command == "clearml":
                options = _clearml_options(args)
            else:
                options = load_job(args.job, _job_overrides(args))
                configure_logging(options.execution.log_level, options.execution.log_format)
            result = run_options(options)
            _report(result)
            return result.exit_code
        if args.command == "demo":
            return _run_demo(args)
        if args.command == "schema":
            print(schema_markdown(), end="")
            return 0
        if args.command == "history":
            return _print_history(args)
        if args.command == "vacuum":
            return _vacuum(args)
        return _print_summary(args)
    except OptionError as exc:
        print(f"mask-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageError, SchedulerError, FileNotFoundError, PermissionError) as exc:
        return _fail(f"cannot proceed: {exc}")
    except Exception as exc:  # e.g. a storage client's own error type, raised by a task
        return _fail(f"cannot proceed: {type(exc).__name__}: {exc}")


def entry() -> None:
    """The ``mask-pipeline`` console script and ``python -m pipeline``: exit with the code of
    :func:`main`, through the interpreter's normal teardown: any cluster was closed, and no
    Arrow pool thread holds Python memory (see :func:`pipeline.io.parquet.table_from_bytes`).

    Except after an in-process run that stopped early with work items still under way
    (:func:`pipeline.graph.work_left_behind`): the teardown would wait for them, minutes
    against a storage that went away, for writes no commit will use. The process ends at
    once instead, its output flushed.
    """
    code = main()
    if work_left_behind():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
