"""Where bytes live: an fsspec URL plus storage options, rebuilt on whichever worker needs it.

A :class:`Location` is small and picklable, so Dask tasks receive locations, never clients or
open filesystems; fsspec's instance cache makes rebuilding one on a worker cheap.

Storage options come from the caller (CLI ``--storage-option``, job file, API) over the
environment variable ``MASK_PIPELINE_STORAGE_OPTIONS`` (a JSON object); s3fs/botocore also read
their own ``AWS_*`` variables (credentials, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``...). Nothing about
endpoints or credentials is set in code. For ``s3://`` one default is added unless the caller sets
``config_kwargs``: botocore's *adaptive* retry mode with at most :data:`S3_MAX_ATTEMPTS` attempts,
which backs off on throttling (``SlowDown``, 503) and connection errors, then fails the request.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.spec import AbstractFileSystem


class StorageError(RuntimeError):
    """Storage that cannot be used at all (missing root, no access): the run cannot proceed."""


#: Environment variable holding default storage options as a JSON object.
STORAGE_OPTIONS_ENV = "MASK_PIPELINE_STORAGE_OPTIONS"
#: Attempts per S3 request (first try included) before botocore gives up.
S3_MAX_ATTEMPTS = 8


def storage_options_with_environment(explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's storage options over those of ``MASK_PIPELINE_STORAGE_OPTIONS``.

    Raises
    ------
    StorageError
        When the variable is not a JSON object.
    """
    return {**_environment_storage_options(), **explicit}


def _environment_storage_options() -> dict[str, Any]:
    """Storage options from ``MASK_PIPELINE_STORAGE_OPTIONS`` (empty when unset).

    Raises
    ------
    StorageError
        When the variable is not a JSON object.
    """
    text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StorageError(f"{STORAGE_OPTIONS_ENV} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StorageError(f"{STORAGE_OPTIONS_ENV} must be a JSON object")
    return value


def _with_defaults(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(options)
    if url.startswith(("s3://", "s3a://")) and "config_kwargs" not in merged:
        merged["config_kwargs"] = {"retries": {"max_attempts": S3_MAX_ATTEMPTS, "mode": "adaptive"}}
    return merged


@dataclass(frozen=True)
class InputFile:
    """A discovered input: path relative to its root (POSIX), size and a change token."""

    rel: str
    size: int
    version: str  # ETag or modification time: part of the deterministic output names

    @property
    def name(self) -> str:
        """Base name of the file."""
        return posixpath.basename(self.rel)

    @property
    def folder(self) -> str:
        """Folder relative to the root ('' for the root itself)."""
        return posixpath.dirname(self.rel)


@dataclass(frozen=True)
class Location:
    """A folder in any fsspec filesystem (local path, ``file://``, ``s3://``, ``memory://``...)."""

    url: str
    # Never in repr: task arguments are printed in worker logs, and options hold credentials.
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def fs(self) -> AbstractFileSystem:
        """The filesystem (cached by fsspec per protocol and options)."""
        return self._resolved[0]

    @property
    def root(self) -> str:
        """The folder's path inside its filesystem, without a trailing slash."""
        return self._resolved[1]

    @functools.cached_property
    def _resolved(self) -> tuple[AbstractFileSystem, str]:
        # Parsing the URL costs more than a small read; do it once per Location instance.
        fs, path = url_to_fs(self.url, **_with_defaults(self.url, self.storage_options))
        return fs, path.rstrip("/") or "/"

    def __getstate__(self) -> dict[str, Any]:
        # Ship the URL and options only: each worker resolves its own filesystem.
        return {"url": self.url, "storage_options": self.storage_options}

    def path(self, rel: str) -> str:
        """Filesystem path of ``rel`` below this location."""
        return posixpath.join(self.root, rel) if rel else self.root

    def url_of(self, rel: str) -> str:
        """A URL naming ``rel`` below this location, for messages and records."""
        return posixpath.join(self.url.rstrip("/"), rel) if rel else self.url

    def read_bytes(self, rel: str) -> bytes:
        """The whole content of one file."""
        return bytes(self.fs.cat_file(self.path(rel)))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one file (one PUT on object stores), creating parent folders where needed.

        Raises
        ------
        StorageError
            When the storage refuses the write (no access, no bucket, ...) after the client's
            own retries: the output is unusable, so the run stops, naming the object.
        """
        fs, target = self.fs, self.path(rel)
        parent = posixpath.dirname(target)
        try:
            if parent and not _is_object_store(fs):
                fs.makedirs(parent, exist_ok=True)
            fs.pipe_file(target, data)
        except OSError as exc:
            raise StorageError(f"cannot write {self.url_of(rel)}: {exc}") from exc

    def exists(self, rel: str = "") -> bool:
        """Whether ``rel`` (or the location itself) exists."""
        return bool(self.fs.exists(self.path(rel)))

    def remove(self, rels: Iterable[str]) -> None:
        """Delete files (missing ones are ignored)."""
        paths = [self.path(rel) for rel in rels]
        if not paths:
            return
        try:
            self.fs.rm(paths)  # one bulk request on object stores
        except FileNotFoundError:
            # Something vanished between listing and deleting: finish one by one.
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)

    def list_files(self, under: str = "") -> list[InputFile]:
        """Every file below ``under``, from ONE recursive listing pass, sorted by path.

        No per-object HEAD requests: size and version come from the listing itself.
        """
        base = self.path(under)
        # Object-store filesystems cache listings per instance; a second run in the same
        # process (a notebook) must see what the first one wrote and deleted.
        self.fs.invalidate_cache(base)
        try:
            entries = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return []
        prefix = self.root.rstrip("/") + "/"
        files = []
        for path, info in entries.items():
            if info.get("type") == "directory":
                continue
            rel = path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)
            files.append(InputFile(rel, int(info.get("size") or 0), _version_of(info)))
        return sorted(files, key=lambda f: f.rel)


def _version_of(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def _is_object_store(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return any(p in ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory") for p in protocols)


def is_inside(inner: Location, outer: Location) -> str | None:
    """``inner``'s path relative to ``outer`` when it lies below it on the same filesystem."""
    if type(inner.fs) is not type(outer.fs):
        return None
    outer_root = outer.root.rstrip("/") + "/"
    inner_root = inner.root.rstrip("/") + "/"
    if inner_root.startswith(outer_root):
        return inner_root[len(outer_root) :].rstrip("/")
    return None


__all__ = ["InputFile", "Location", "StorageError", "fsspec", "is_inside"]
