"""Test helpers for object storage (not a reference: these only move bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec


def upload_tree(local: Path, url: str, storage: dict[str, Any]) -> None:
    """Copy every file below ``local`` to the same relative path below the fsspec ``url``."""
    fs, root = fsspec.core.url_to_fs(url, **storage)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
