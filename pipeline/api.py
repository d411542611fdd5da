"""The Python door, for notebooks and scripts: the same runs as the CLI, plus table readers.

>>> from pipeline import api
>>> result = api.run_celantur("celantur-out/", "stats/", mask_scale=50)   # doctest: +SKIP
>>> api.read_table("stats/", "instances").to_pandas()                      # doctest: +SKIP

Signals: unlike the CLI, the API installs no signal handler. A library must not take its
host's signals (a notebook kernel, a web server or a job wrapper has its own handlers, and only
the main thread may install one). Ctrl-C raises ``KeyboardInterrupt`` as usual: the run closes
the cluster it started and commits nothing. SIGTERM does whatever the host set; Python's default
ends the process at once. Either way ``_run.json``, written last, still names the last
committed run, which is what :func:`read_run` and :func:`read_table` read. To get the CLI's
behaviour (exit 143, the cluster closed), a script installs its own handler before the run:
``signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, TypeVar

import pyarrow as pa

from pipeline import housekeeping
from pipeline.config import (
    DEFAULT_STORAGE_TIMEOUT,
    CelanturOptions,
    ClearmlOptions,
    ExecutionOptions,
    check_storage_timeout,
)
from pipeline.io.delta import read_delta
from pipeline.io.runrecord import read_run_record
from pipeline.io.storage import Location, storage_options_with_environment
from pipeline.io.watchdog import watch_storage
from pipeline.jobs import load_job
from pipeline.runner import RunResult
from pipeline.runner import run_celantur as _run_celantur
from pipeline.runner import run_clearml as _run_clearml
from pipeline.runner import run_options as _run_options
from pipeline.tables import SCHEMAS


def run_celantur(
    source: str | CelanturOptions,
    output: str | None = None,
    *,
    client: Any | None = None,
    execution: ExecutionOptions | None = None,
    **options: Any,
) -> RunResult:
    """Compute statistics tables (and rescaled masks) for a folder of Celantur outputs.

    Parameters
    ----------
    source : input folder URL, or a complete :class:`~pipeline.config.CelanturOptions`.
    output : output folder URL (required unless ``source`` is an options object).
    client : a ``dask.distributed.Client`` to run on (left open); ``None`` follows
        ``execution.scheduler`` (default: a local cluster started and stopped for this run).
    execution : scheduler, workers, batching; default :class:`~pipeline.config.ExecutionOptions`.
    **options : any other :class:`~pipeline.config.CelanturOptions` field
        (``encoding``, ``mask_scale``, ``storage_options``, ``max_pixels``, ...).

    Returns
    -------
    RunResult with the committed tables' data file URLs, the summary rows and the exit code
    (0, or 3 when some inputs ended in ``errors/``).

    Side effects: commits a new version of every Delta table under ``output``, writes
    ``scaled/`` and ``_run.json``; a rerun replaces the tables' rows (no duplicates) and
    earlier versions stay readable until ``mask-pipeline vacuum``.
    """
    opts = _options(CelanturOptions, "source", source, output, execution, options)
    return _run_celantur(opts, client=client)


OptionsType = TypeVar("OptionsType", CelanturOptions, ClearmlOptions)


def _options(
    kind: type[OptionsType],
    first_name: str,
    first: Any,
    output: str | None,
    execution: ExecutionOptions | None,
    options: dict[str, Any],
) -> OptionsType:
    """The options a run function was called with: a complete options object (with
    ``options`` replacing some of its fields) or its input and output URLs plus fields."""
    if isinstance(first, kind):
        opts = replace(first, **options) if options else first
    elif output is None:
        raise TypeError(f"{kind.__name__} needs an output folder")
    else:
        opts = kind(**{first_name: first, "output": output, **options})
    return replace(opts, execution=execution) if execution is not None else opts


def run_clearml(
    frames: str | ClearmlOptions,
    output: str | None = None,
    *,
    client: Any | None = None,
    execution: ExecutionOptions | None = None,
    **options: Any,
) -> RunResult:
    """Compute per-label (pixel mode) or opacity (alpha mode) tables for the masks of ClearML
    Hyper-Dataset frames.

    Parameters
    ----------
    frames : a frames document (JSON object, array or JSON Lines) or a folder of them, as a
        URL; or a complete :class:`~pipeline.config.ClearmlOptions`.
    output : output folder URL (required unless ``frames`` is an options object).
    client : a ``dask.distributed.Client`` to run on (left open); ``None`` follows
        ``execution.scheduler``.
    execution : scheduler, workers, batching.
    **options : any other :class:`~pipeline.config.ClearmlOptions` field: ``mask_labels`` (in
        any of its forms, e.g. ``{(0, 0, 0): ["background"]}``, or a JSON file URL),
        ``mode``, ``uri_map``, ``mask_scale``, ``storage_options``, ...

    Returns
    -------
    RunResult, as :func:`run_celantur`. Side effects and idempotency likewise.
    """
    opts = _options(ClearmlOptions, "frames", frames, output, execution, options)
    return _run_clearml(opts, client=client)


def run_job(job: str | os.PathLike[str], *overrides: str, client: Any | None = None) -> RunResult:
    """Run a TOML job file (see :mod:`pipeline.jobs`), as ``mask-pipeline run`` does.

    ``overrides`` are ``key=value`` strings (``execution.scheduler=sync``).
    """
    return _run_options(load_job(job, overrides), client=client)


def read_run(
    output: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    storage_timeout: float = DEFAULT_STORAGE_TIMEOUT,
) -> dict[str, Any]:
    """The ``_run.json`` of the last complete run under ``output``.

    ``storage_timeout`` bounds a storage that answers nothing, as it does a run's (see
    :func:`_watched`).

    Raises
    ------
    FileNotFoundError
        When no run has been committed there (or the last one crashed before committing).
    StorageError
        When the storage answered no request for ``storage_timeout`` seconds.
    """
    location = _output_location(output, storage_options, storage_timeout)
    with _watched(location, storage_timeout):
        return _run_record(location)


def read_table(
    output: str,
    table: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    columns: list[str] | None = None,
    filters: Any = None,
    storage_timeout: float = DEFAULT_STORAGE_TIMEOUT,
) -> pa.Table:
    """One output table: the Delta version the last committed run (``_run.json``) recorded, or
    ``version`` (any version still kept: time travel).

    Every table read without ``version`` comes from the same run, so tables join consistently
    even while another run is committing. ``columns`` and ``filters`` (pyarrow/DNF form, e.g.
    ``[("kind", "=", "instance")]``) are pushed down to the Parquet files by deltalake.
    ``storage_timeout`` bounds a storage that answers nothing, as it does a run's (see
    :func:`_watched`).

    Raises
    ------
    FileNotFoundError
        When no run has been committed there (``version`` not given) or the table is absent.
    StorageError
        When the storage answered no request for ``storage_timeout`` seconds.
    """
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(SCHEMAS)}")
    location = _output_location(output, storage_options, storage_timeout)
    with _watched(location, storage_timeout):
        if version is None:
            version = _run_record(location)["tables"][table]["version"]
        return read_delta(location, table, version, columns=columns, filters=filters)


def run_history(
    output: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    storage_timeout: float = DEFAULT_STORAGE_TIMEOUT,
) -> list[dict[str, Any]]:
    """The runs that committed to ``output``, newest first, from the tables' Delta history:
    one entry per run with its ``time``, ``command``, ``options`` and, per table, the
    ``version`` it committed and its ``rows`` (as ``mask-pipeline history`` prints them).
    ``storage_timeout`` bounds a storage that answers nothing, as it does a run's (see
    :func:`_watched`).

    Raises
    ------
    StorageError
        When the storage answered no request for ``storage_timeout`` seconds.
    """
    location = _output_location(output, storage_options, storage_timeout)
    with _watched(location, storage_timeout):
        return housekeeping.run_history(location)


def vacuum_output(
    output: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    retention_hours: float = housekeeping.DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    storage_timeout: float = DEFAULT_STORAGE_TIMEOUT,
) -> list[str]:
    """Delete what no kept table version needs and is older than ``retention_hours``, as
    ``mask-pipeline vacuum`` does (see :func:`pipeline.housekeeping.vacuum_output`); returns
    the removed paths (below ``output``), or with ``dry_run`` those it would remove.
    ``storage_timeout`` bounds a storage that answers nothing, as it does a run's (see
    :func:`_watched`).

    Raises
    ------
    StorageError
        When the storage answered no request for ``storage_timeout`` seconds (what was
        deleted until then stays deleted; a vacuum run again picks up where it stopped).
    """
    location = _output_location(output, storage_options, storage_timeout)
    with _watched(location, storage_timeout):
        return housekeeping.vacuum_output(location, retention_hours, dry_run)


def _output_location(
    output: str, storage_options: Mapping[str, Any] | None, storage_timeout: float
) -> Location:
    options = storage_options_with_environment(storage_options or {})
    return Location(output, options, storage_timeout)


def _watched(output: Location, storage_timeout: float) -> AbstractContextManager[Any]:
    """The run's storage watchdog (:mod:`pipeline.io.watchdog`) around a read of ``output``:
    when the storage answers nothing for ``storage_timeout`` seconds, the read stops with the
    run's one-line :class:`~pipeline.io.storage.StorageError`, not after the storage client's
    own retries. Only the main thread can be interrupted (from others the bound is those
    retries), and a delta-rs or Arrow call under way ends at its own limit first."""
    check_storage_timeout(storage_timeout)
    return watch_storage({"output": output}, storage_timeout)


def _run_record(output: Location) -> dict[str, Any]:
    record = read_run_record(output)
    if record is None:
        raise FileNotFoundError(f"no committed run under {output.url} (no _run.json)")
    return record


__all__ = [
    "RunResult",
    "read_run",
    "read_table",
    "run_celantur",
    "run_clearml",
    "run_history",
    "run_job",
    "vacuum_output",
]
