"""mask-pipeline: segmentation masks and detection metadata to Parquet statistics, on Dask."""

from __future__ import annotations

from pipeline.api import (
    read_run,
    read_table,
    run_celantur,
    run_clearml,
    run_history,
    vacuum_output,
)
from pipeline.config import CelanturOptions, ClearmlOptions, ExecutionOptions, OptionError

__all__ = [
    "CelanturOptions",
    "ClearmlOptions",
    "ExecutionOptions",
    "OptionError",
    "read_run",
    "read_table",
    "run_celantur",
    "run_clearml",
    "run_history",
    "vacuum_output",
]
