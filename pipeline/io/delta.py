"""Delta Lake tables with delta-rs (``deltalake``): data files written once, commits, reads.

Workers write Parquet data files under unique names and hand back :class:`AddAction` s; the
client commits each table's files in one transaction (the pattern of dask-deltatable). A
transaction replaces the whole table (``overwrite``), and every commit is checked against the
table version the run started from, so two runs into one output never interleave silently:
delta-rs detects the conflict (on S3 through conditional puts, ``If-None-Match``, which AWS
S3, MinIO and moto's server support) and the loser stops.
"""

from __future__ import annotations

import functools
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    PostCommitHookProperties,
    RemoveAction,
    create_table_with_add_actions,
)

from pipeline.io.parquet import table_bytes
from pipeline.io.storage import Location, StorageError, all_at_once

T = TypeVar("T")
#: Commits looked at when finding out whether a commit whose answer was lost landed.
LOOK_BACK = 20

#: Commit-info key holding the run's description (``history`` reads it back).
RUN_KEY = "maskPipelineRun"


class CommitConflict(StorageError):
    """Another run committed to the same table after this run started (exit code 1)."""


class UnsupportedOutput(ValueError):
    """An output URL delta-rs cannot write (a process-local filesystem such as ``memory://``)."""


def delta_storage_options(
    url: str, options: Mapping[str, Any], storage_timeout: float | None = None
) -> dict[str, str]:
    """delta-rs storage options for ``url`` from fsspec (s3fs-style) ``options``.

    ``endpoint_url`` (top level or in ``client_kwargs``), ``key``/``secret``/``token``,
    ``anon``, ``profile`` and ``client_kwargs.region_name`` are translated; delta-rs reads the
    ``AWS_*`` environment variables itself. Options of other filesystems pass as strings.
    ``storage_timeout`` (the run's) bounds how long delta-rs retries a request that fails.

    Raises
    ------
    UnsupportedOutput
        For ``memory://`` (delta-rs cannot see fsspec's in-process filesystem).
    """
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme == "memory":
        raise UnsupportedOutput(
            "memory:// cannot hold Delta tables (delta-rs writes through its own storage "
            "layer, which cannot see fsspec's in-process memory filesystem); use a local "
            "folder or object storage"
        )
    if scheme not in ("s3", "s3a"):
        return {k: str(v) for k, v in options.items() if not isinstance(v, Mapping)}
    client = dict(options.get("client_kwargs") or {})
    translated: dict[str, str] = {}
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    if endpoint:
        translated["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            translated["AWS_ALLOW_HTTP"] = "true"
    region = client.get("region_name") or options.get("region_name")
    if region:
        translated["AWS_REGION"] = str(region)
    for ours, theirs in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                         ("token", "AWS_SESSION_TOKEN"), ("profile", "AWS_PROFILE")):  # fmt: skip
        if options.get(ours):
            translated[theirs] = str(options[ours])
    if options.get("anon"):
        translated["AWS_SKIP_SIGNATURE"] = "true"
    # A request that gets no answer is abandoned (and retried) after `timeout`, not
    # object_store's 30 s. Its retries give up after the run's storage_timeout: by then the
    # watchdog has stopped the run, and a read still retrying in the background would hold
    # the process's exit (60 s, object_store's own limit, without one).
    retry_ms = round(1000 * (storage_timeout or 60.0))
    translated.update(
        timeout=f"{min(10_000, retry_ms)}ms",
        connect_timeout=f"{min(5_000, retry_ms)}ms",
        retry_timeout=f"{retry_ms}ms",
    )
    return translated


def table_uri(output: Location, table: str) -> str:
    """The URI delta-rs opens for ``table`` below ``output`` (a plain path on local disk)."""
    protocol = output.fs.protocol
    protocol = protocol[0] if isinstance(protocol, tuple) else protocol
    path = output.path(table)
    if protocol in ("file", "local"):
        return path
    return f"{protocol}://{path}"


def _storage(output: Location) -> dict[str, str]:
    return delta_storage_options(output.url, output.storage_options, output.storage_timeout)


def write_data_file(output: Location, table: str, data: pa.Table) -> AddAction:
    """Write ``data`` as a new data file of ``table`` (a unique name, never overwritten);
    returns the action that adds it in a commit."""
    payload = table_bytes(data)
    name = f"part-{uuid.uuid4().hex}.parquet"
    output.write_bytes(f"{table}/{name}", payload)
    metadata = pq.ParquetFile(pa.BufferReader(payload)).metadata
    return AddAction(
        path=name,
        size=len(payload),
        partition_values={},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(file_stats(metadata)),
    )


def file_stats(metadata: pq.FileMetaData) -> dict[str, Any]:
    """Delta file statistics (rows, and per top-level column nulls, min and max) from the
    Parquet footer, so readers can skip files by their values."""
    stats: dict[str, Any] = {
        "numRecords": metadata.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {},
    }  # fmt: skip
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    groups = [g for g in groups if g.num_rows]
    for index in range(metadata.num_columns):
        if not groups:
            break
        name = groups[0].column(index).path_in_schema
        if "." in name:
            continue  # nested (list) columns: Delta keeps no statistics for them here
        columns = [g.column(index).statistics for g in groups]
        if any(c is None for c in columns):
            continue
        stats["nullCount"][name] = sum(c.null_count for c in columns)
        values = [(c.min, c.max) for c in columns if c.has_min_max]
        if values and all(isinstance(v, (int, float, str)) for pair in values for v in pair):
            low, high = min(v[0] for v in values), max(v[1] for v in values)
            if not (isinstance(low, float) and not math.isfinite(low)):
                stats["minValues"][name] = low
            if not (isinstance(high, float) and not math.isfinite(high)):
                stats["maxValues"][name] = high
    return stats


#: Attempts of a delta-rs request that failed in transit (object_store retries some failures
#: itself, but not an answer cut off mid-body).
ATTEMPTS = 6


def _retrying(action: Callable[[], T], what: str) -> T:
    """``action()``, again after a short pause when the storage failed in transit (delta-rs
    raises ``OSError``); only for requests that change nothing or are safe to repeat."""
    for attempt in range(ATTEMPTS):
        try:
            return action()
        except (OSError, DeltaError) as exc:
            if not _in_transit(exc) or attempt == ATTEMPTS - 1:
                raise StorageError(f"{what}: {str(exc).splitlines()[0]}") from exc
            time.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def _in_transit(exc: Exception) -> bool:
    """Whether delta-rs failed talking to the storage (retry), not on the table's content."""
    text = str(exc)
    if "privileges" in text or "Access Denied" in text:
        return False  # refused, not lost: asking again changes nothing
    if isinstance(exc, OSError):
        return True
    return not isinstance(exc, CommitFailedError) and (
        "object store" in text or "S3 error" in text or "HTTP error" in text
    )


def open_table(output: Location, table: str, version: int | None = None) -> DeltaTable | None:
    """The table at ``version`` (latest when ``None``), or ``None`` when there is none yet."""
    uri = table_uri(output, table)

    def load() -> DeltaTable | None:
        try:
            return DeltaTable(uri, version=version, storage_options=_storage(output))
        except TableNotFoundError:
            return None

    return _retrying(load, f"cannot read {output.url_of(table)}")


def open_tables(output: Location, tables: Sequence[str]) -> dict[str, DeltaTable | None]:
    """Each table at its latest committed version (``None``: no table yet), the snapshot a run
    commits against; the tables are opened at once (each is a few requests in series, and
    delta-rs waits for them without the GIL)."""
    opened = all_at_once([functools.partial(open_table, output, table) for table in tables])
    return dict(zip(tables, opened, strict=True))


def committed_since(output: Location, versions: Mapping[str, int | None]) -> list[str]:
    """The tables of ``versions`` (table -> the version a run read, ``None``: none) that have a
    newer commit: one GET of the next commit file per table, all at once."""

    def newer(table: str) -> bool:
        version = versions[table]
        following = f"{table}/_delta_log/{0 if version is None else version + 1:020d}.json"

        def look() -> bool:
            try:
                output.read_bytes(following)
            except FileNotFoundError:
                return False
            return True

        return _retrying(look, f"cannot read {output.url_of(following)}")

    tables = list(versions)
    changed = all_at_once([functools.partial(newer, table) for table in tables])
    return [table for table, newer_commit in zip(tables, changed, strict=True) if newer_commit]


#: After a commit delta-rs writes a checkpoint when the version is a multiple of the table's
#: interval (as Delta writers do), but leaves expired-log clean-up to ``vacuum``: it lists the
#: whole log after every commit.
POST_COMMIT = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


def commit_table(
    output: Location,
    table: str,
    snapshot: DeltaTable | None,
    adds: list[AddAction],
    schema: pa.Schema,
    run: Mapping[str, Any],
) -> int:
    """Replace ``table``'s rows with the files of ``adds`` in one transaction on top of
    ``snapshot``, the version the run read (``None``: the table did not exist); returns the new
    version, always the one after ``snapshot``'s.

    The commit is delta-rs's: it looks for a newer version, then writes the next commit file
    with a conditional put (If-None-Match; an exclusive create on local disk). A snapshot that
    is no longer the latest fails at once (no retries: the run's rows replace the version it
    read, never one it did not see). Nothing is read back after a commit that succeeded.

    Raises
    ------
    CommitConflict
        When another run committed to the table after ``snapshot``.
    """
    uri = table_uri(output, table)
    read_version = None if snapshot is None else snapshot.version()
    properties = CommitProperties(custom_metadata={RUN_KEY: dict(run)}, max_commit_retries=0)
    actions: list[AddAction | RemoveAction] = list(adds)
    for attempt in range(ATTEMPTS):
        try:
            if snapshot is None:
                create_table_with_add_actions(
                    uri, Schema.from_arrow(schema), adds, mode="error",
                    storage_options=_storage(output), commit_properties=properties,
                    post_commithook_properties=POST_COMMIT,
                )  # fmt: skip
            else:
                snapshot.create_write_transaction(
                    actions, mode="overwrite", schema=schema, commit_properties=properties,
                    post_commithook_properties=POST_COMMIT,
                )  # fmt: skip
        except (OSError, DeltaError) as exc:
            if not _in_transit(exc):
                if not isinstance(exc, CommitFailedError) and "already exists" not in str(exc):
                    raise StorageError(f"cannot commit {output.url_of(table)}: {exc}") from exc
                # Our own commit, applied although its answer was lost, looks like a conflict.
                landed = _committed_by(output, table, run["run_id"])
                if landed is not None:
                    return landed
                detail = str(exc).splitlines()[0]
                if detail.startswith("Failed to commit transaction"):  # retries are off
                    detail = "a newer version exists"
                raise CommitConflict(
                    f"another run committed {output.url_of(table)} while this run was running "
                    f"(this run read version {read_version}): {detail}"
                ) from exc
            # Failed in transit: the commit may or may not have landed. Look before retrying.
            landed = _committed_by(output, table, run["run_id"])
            if landed is not None:
                return landed
            if attempt == ATTEMPTS - 1:
                raise StorageError(f"cannot commit {output.url_of(table)}: {exc}") from exc
            time.sleep(min(0.1 * 2**attempt, 2.0))
            continue
        return 0 if read_version is None else read_version + 1
    raise AssertionError("unreachable")


def _committed_by(output: Location, table: str, run_id: str) -> int | None:
    """The version of ``table`` that the run ``run_id`` committed, if any (recent commits).

    Reads the commit files themselves (one small object each) rather than
    ``DeltaTable.history``, which holds the GIL while it waits on the network.
    """
    opened = open_table(output, table)
    if opened is None:
        return None
    latest = opened.version()
    for version in range(latest, max(-1, latest - LOOK_BACK), -1):
        log = output.read_bytes(f"{table}/_delta_log/{version:020d}.json")
        for line in log.decode().splitlines():
            described = json.loads(line).get("commitInfo", {}).get(RUN_KEY)
            if isinstance(described, dict) and described.get("run_id") == run_id:
                return version
    return None


def _arrow_filesystem(output: Location, table: str) -> pa_fs.FileSystem:
    """A native Arrow filesystem rooted at the table: reads go by path, never through Python
    file objects (whose Arrow thread pools can abort the interpreter at exit)."""
    uri = table_uri(output, table)
    if "://" not in uri:
        return pa_fs.SubTreeFileSystem(uri, pa_fs.LocalFileSystem())
    options = _storage(output)
    s3 = pa_fs.S3FileSystem(
        access_key=options.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
        session_token=options.get("AWS_SESSION_TOKEN"),
        region=options.get("AWS_REGION"),
        endpoint_override=options.get("AWS_ENDPOINT_URL"),
        anonymous=options.get("AWS_SKIP_SIGNATURE") == "true",
    )
    return pa_fs.SubTreeFileSystem(uri.split("://", 1)[1], s3)


def read_delta(
    output: Location,
    table: str,
    version: int | None,
    columns: list[str] | None = None,
    filters: Any = None,
) -> pa.Table:
    """``table`` at ``version`` (column and filter pushdown by deltalake/Arrow).

    Raises
    ------
    FileNotFoundError
        When the table does not exist.
    """
    opened = open_table(output, table, version)
    if opened is None:
        raise FileNotFoundError(f"no Delta table at {output.url_of(table)}")
    filesystem = _arrow_filesystem(output, table)
    return _retrying(
        lambda: opened.to_pyarrow_table(columns=columns, filters=filters, filesystem=filesystem),
        f"cannot read {output.url_of(table)}",
    )


def table_history(output: Location, table: str) -> list[dict[str, Any]]:
    """The table's commits, newest first, as delta-rs reports them."""
    opened = open_table(output, table)
    if opened is None:
        return []
    return _retrying(opened.history, f"cannot read {output.url_of(table)}")
