"""What every batch task shares: its context, its storage requests in flight, its error rows,
reading one input."""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from pipeline.config import CelanturOptions, ClearmlOptions
from pipeline.formats.clearml import MaskLabels
from pipeline.graph import step_aside
from pipeline.io.parquet import write_bundle
from pipeline.io.png import encode_filtered_png, encode_png
from pipeline.io.storage import BatchIO, InputFile, Location, Prefetch, StorageError, in_process
from pipeline.kernels.masks import nearest_grid, rescale_nearest
from pipeline.kernels.segments import nearest_up_filtered
from pipeline.stages.summary import BatchSummary


@dataclass(frozen=True)
class TaskContext:
    """What every batch task needs: small and picklable.

    ``source`` is the input root (Celantur) or the frames location (ClearML, whose mask URIs
    are read with the same storage options); ``mask_labels`` and ``mask_mode`` are the ClearML
    run's normalised mapping and decided mode.
    """

    source: Location
    output: Location
    options: CelanturOptions | ClearmlOptions
    work_prefix: str  # where ``auto`` parks measured rows between its two passes
    mask_labels: MaskLabels = field(default_factory=dict)
    mask_mode: Literal["pixel", "alpha"] = "pixel"

    @property
    def remote_storage(self) -> bool:
        """Whether the run reads or writes storage other than local disk or memory."""
        return not (in_process(self.source) and in_process(self.output))


class ErrorLog(list[dict[str, Any]]):
    """Rows for ``errors/``; every message starts with the path of the input at fault."""

    def add(self, path: str, stage: str, code: str, message: str, severity: str = "error") -> None:
        """Record a problem with an input (``severity`` error: the input is in no other table)."""
        self.append(
            {"path": path, "stage": stage, "error": code, "message": f"{path}: {message}",
             "severity": severity}
        )  # fmt: skip


@contextlib.contextmanager
def batch_io(ctx: TaskContext) -> Iterator[tuple[TaskContext, BatchIO]]:
    """A task's storage requests in flight (:class:`~pipeline.io.storage.BatchIO`, bounded by
    the ``io_concurrency`` and ``batch_bytes`` options): yields the context whose output is
    written behind, and the ``BatchIO`` to prefetch inputs with. When the block ends every
    write has finished, so the task reports only outputs that are on storage.

    Once the block's work is done and only its writes are left to wait for, the task steps
    aside where its work item allows it (:func:`pipeline.graph.step_aside`): the worker
    thread's next task starts meanwhile.
    """
    execution = ctx.options.execution
    with BatchIO(execution.io_concurrency, execution.batch_bytes) as storage:
        yield replace(ctx, output=storage.behind(ctx.output)), storage
        step_aside()


def stage_rows(
    summary: BatchSummary, output: Location, key: str, tables: Mapping[str, pa.Table | None]
) -> None:
    """Count each table's rows into ``summary`` and write the tables that have rows as the work
    item's one staged bundle ``key`` (:func:`~pipeline.io.parquet.write_bundle`), recorded in
    ``summary``; nothing is written when no table has rows (``None``: none built)."""
    staged = {table: data for table, data in tables.items() if data is not None and data.num_rows}
    for table, data in staged.items():
        summary.rows[table] = data.num_rows
    if staged:
        summary.add_bundle(write_bundle(output, key, staged))


def read_input(
    file: InputFile, ctx: TaskContext, reads: Prefetch, errors: ErrorLog
) -> bytes | None:
    """An input's bytes (prefetched by ``reads``), or ``None`` after recording why it could not
    be read.

    Other storage errors propagate: the task is retried and a storage that stays broken stops
    the run (exit code 1) rather than filling ``errors/`` with every input.
    """
    try:
        return reads.take(ctx.source, file.key)
    except FileNotFoundError:
        errors.add(file.rel, "read", "missing", "listed but gone before it could be read")
    except PermissionError as exc:
        errors.add(file.rel, "read", "unreadable", f"could not be read: {exc}")
    return None


@contextlib.contextmanager
def guarded(path: str, errors: ErrorLog) -> Iterator[None]:
    """Turn an unexpected failure on one input into its error row, so one odd file cannot fail
    its batch. Storage errors (OSError) still propagate: the task is retried, and a storage that
    stays broken stops the run. Callers append an input's rows only once all are built, so a
    failure never leaves half an input in the tables."""
    try:
        yield
    except (OSError, StorageError):
        raise
    except Exception as exc:
        errors.add(path, "stats", "internal", f"unexpected {type(exc).__name__}: {exc}")


def scaled_rel(rel: str, png: bytes) -> str:
    """Where the rescaled copy ``png`` of the input ``rel`` goes: ``scaled/<folder>/<digest of
    png>/<name>``.

    Addressed by content: a run never writes over a rescaled mask that a committed ``masks/``
    row points at unless it writes the very same bytes, so a run that does not commit changes
    nothing a reader sees (and the same input rescaled the same way lands at the same path).
    """
    folder, name = posixpath.split(rel)
    digest = hashlib.sha256(png).hexdigest()[:16]
    return posixpath.join("scaled", folder, digest, name)


def write_scaled(ctx: TaskContext, rel: str, png: bytes) -> str:
    """Write ``png``, the rescaled copy of the input ``rel``, under the output root; returns its
    path there (:func:`scaled_rel`)."""
    target = scaled_rel(rel, png)
    ctx.output.write_bytes(target, png)
    return target


def scaled_png(data: bytes, pixels: np.ndarray, percent: int) -> bytes:
    """The PNG of a mask (file ``data``, decoded ``pixels``) rescaled to ``percent``, nearest
    neighbour.

    100 % is a byte copy: re-encoding could only change the file, never improve it. 8-bit masks
    are sampled straight into PNG scanlines (no rescaled copy in between).
    """
    if percent == 100:
        return data
    if pixels.dtype == np.uint8:
        rows, cols = nearest_grid(pixels.shape[1], pixels.shape[0], percent)
        return encode_filtered_png(
            nearest_up_filtered(pixels, rows, cols), len(cols), pixels.shape[2]
        )
    return encode_png(rescale_nearest(pixels, percent))
