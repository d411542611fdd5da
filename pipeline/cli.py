"""The command-line door: ``mask-pipeline celantur | demo | summary``.

Exit codes (SPEC 4): 0 every input processed; 3 finished with inputs in ``errors/``; 2 usage
error; 1 the run could not proceed (e.g. storage unreachable). Messages name the option or input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import (
    CelanturOptions,
    ExecutionOptions,
    OptionError,
    nest_storage_options,
    parse_storage_option,
)
from pipeline.formats.celantur import ENCODING_CHOICES
from pipeline.io.storage import StorageError
from pipeline.runner import EXIT_FAILED, EXIT_USAGE, RunResult, run_celantur


def _add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ExecutionOptions()
    parser.add_argument(
        "--scheduler",
        help="'sync' (in-process), a scheduler address (tcp://host:8786), or unset for "
        "$DASK_SCHEDULER_ADDRESS, else a local cluster sized to the machine",
    )
    parser.add_argument("--workers", type=int, help="worker processes of the local cluster")
    parser.add_argument(
        "--batch-bytes", type=int, default=defaults.batch_bytes, help="input bytes per task"
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None)
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def _add_celantur_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CelanturOptions(source="-", output="-")
    parser.add_argument(
        "--encoding",
        choices=ENCODING_CHOICES,
        default=defaults.encoding,
        help="instance-mask encoding; auto decides per dataset from evidence (default: auto)",
    )
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
        help="refuse PNGs declaring more pixels (decompression bombs)",
    )
    parser.add_argument(
        "--max-json-bytes",
        type=int,
        default=defaults.max_json_bytes,
        help="refuse metadata files larger than this",
    )
    parser.add_argument(
        "--gap-iou",
        type=float,
        default=defaults.gap_iou,
        help="video gap finder: smallest box IoU that links a detection to a track",
    )
    parser.add_argument(
        "--gap-max-frames",
        type=int,
        default=defaults.gap_max_frames,
        help="video gap finder: longest blink, in frames, reported as an anonymisation gap",
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec/s3fs storage option, repeatable (e.g. endpoint_url=http://127.0.0.1:9000)",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="process only new or changed inputs, reusing recorded results of the others",
    )
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
    _add_celantur_arguments(celantur)

    demo = commands.add_parser("demo", help="make sample data and run the whole pipeline on it")
    demo.add_argument("output", nargs="?", help="folder for the sample data and results")
    demo.add_argument("--images", type=int, default=24, help="sample images to generate")
    _add_execution_arguments(demo)

    summary = commands.add_parser("summary", help="print the summary of a finished run")
    summary.add_argument("output", help="output folder of a run")
    summary.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _execution(args: argparse.Namespace) -> ExecutionOptions:
    return ExecutionOptions(
        scheduler=args.scheduler,
        workers=args.workers,
        batch_bytes=args.batch_bytes,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    return nest_storage_options([parse_storage_option(text) for text in args.storage_option])


def _celantur_options(args: argparse.Namespace) -> CelanturOptions:
    return CelanturOptions(
        source=args.source,
        output=args.output,
        encoding=args.encoding,
        mask_scale=args.mask_scale,
        max_pixels=args.max_pixels,
        max_json_bytes=args.max_json_bytes,
        gap_iou=args.gap_iou,
        gap_max_frames=args.gap_max_frames,
        incremental=args.incremental,
        storage_options=_storage_options(args),
        execution=_execution(args),
    )


def format_summary(record: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    """A short human-readable report of a run."""
    tables = record["tables"]
    accounting = record["accounting"]
    lines = [
        f"encoding: {record['encoding']['used']} (chosen: {record['encoding']['choice']})",
        "inputs: " + ", ".join(f"{k} {v}" for k, v in record["inputs"]["found"].items()),
        f"accounting: {accounting['found']} inputs = {accounting['in_tables']} in tables "
        f"+ {accounting['in_errors']} in errors/",
        "rows: " + ", ".join(f"{name} {info['rows']}" for name, info in tables.items()),
    ]
    types = [row for row in summary if row["scope"] == "type" and row.get("segments")]
    if types:
        lines.append(f"{'type':<14}{'segments':>9}{'pixels':>12}{'area p50':>10}{'detections':>11}")
        for row in types:
            detections = row.get("detections")
            lines.append(
                f"{row['name']:<14}{row['segments']:>9}{row['pixels']:>12}"
                f"{row['area_p50'] or 0:>10}{'' if detections is None else detections:>11}"
            )
    videos = [row for row in summary if row["scope"] == "video"]
    if videos:
        lines.append(f"{'video':<32}{'frames':>8}{'detections':>11}{'chunk gaps':>11}{'blinks':>8}")
        for row in videos[:20]:
            lines.append(
                f"{row['name'][-32:]:<32}{row['frames']:>8}{row['detections']:>11}"
                f"{row['chunk_gaps']:>11}{row['anonymisation_gaps']:>8}"
            )
        if len(videos) > 20:
            lines.append(f"... and {len(videos) - 20} more videos (summary/ has them all)")
    errors = record["errors"]
    lines.append(f"errors: {errors.get('error', 0)}, warnings: {errors.get('warning', 0)}")
    return "\n".join(lines)


def _report(result: RunResult) -> None:
    dashboard = result.scheduler.get("dashboard")
    print(format_summary(result.record, result.summary))
    print(f"output: {result.output} (exit code {result.exit_code})")
    if dashboard:
        print(f"dashboard was: {dashboard}", file=sys.stderr)


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.sampledata import make_celantur_tree

    root = Path(args.output or tempfile.mkdtemp(prefix="mask-pipeline-demo-"))
    source, output = root / "celantur", root / "results"
    tree = make_celantur_tree(source, seed=0, images=args.images)
    print(f"sample data: {len(tree.images)} images under {source}")
    options = CelanturOptions(
        source=str(source), output=str(output), mask_scale=50, execution=_execution(args)
    )
    result = run_celantur(options)
    _report(result)
    return result.exit_code


def _print_summary(args: argparse.Namespace) -> int:
    from pipeline.api import read_run, read_table

    storage = _storage_options(args)
    record = read_run(args.output, storage)
    summary = read_table(args.output, "summary", storage).to_pylist()
    print(format_summary(record, summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mask-pipeline`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "celantur":
            result = run_celantur(_celantur_options(args))
            _report(result)
            return result.exit_code
        if args.command == "demo":
            return _run_demo(args)
        return _print_summary(args)
    except OptionError as exc:
        print(f"mask-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageError, FileNotFoundError, PermissionError) as exc:
        print(f"mask-pipeline: cannot proceed: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
