"""The options model: one source of defaults for the CLI, job files and the Python API.

Every door builds the same frozen dataclasses, and every check lives in their ``__post_init__``,
so an invalid value raises :class:`OptionError` naming the option whichever door it came through.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.formats.celantur import ENCODING_CHOICES, EncodingChoice
from pipeline.io.jsonio import DEFAULT_MAX_JSON_BYTES

#: Environment variable naming an existing Dask scheduler (Dask's own convention).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


class OptionError(ValueError):
    """An invalid option value; the message names the option. The CLI exits with code 2."""


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OptionError(f"option {name!r} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ExecutionOptions:
    """Where and how the Dask graph runs.

    Attributes
    ----------
    scheduler : ``None`` (the ``DASK_SCHEDULER_ADDRESS`` environment variable, else a
        ``LocalCluster`` sized to the machine), ``"sync"`` (in-process, for debugging) or a
        scheduler address such as ``tcp://10.0.0.5:8786``.
    workers : worker processes of the embedded ``LocalCluster`` (default: one per core).
    batch_bytes : input bytes per task; small files are batched so the graph stays small.
    progress : show a progress bar (default: when the terminal is interactive).
    """

    scheduler: str | None = None
    workers: int | None = None
    batch_bytes: int = 32 * 1024 * 1024
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.workers is not None:
            _check_positive("workers", self.workers)
        _check_positive("batch_bytes", self.batch_bytes)
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise OptionError("option 'scheduler' must not be empty")

    def resolved_scheduler(self) -> str | None:
        """The scheduler to use: the option, else the environment, else ``None`` (local)."""
        return self.scheduler or os.environ.get(SCHEDULER_ENV) or None


@dataclass(frozen=True)
class CelanturOptions:
    """A Celantur run: masks and metadata under ``source`` to tables under ``output``.

    Attributes
    ----------
    source, output : folder URLs (local path, ``file://``, ``s3://``, any fsspec URL).
    encoding : instance-mask encoding, or ``auto`` to decide per dataset from evidence.
    mask_scale : percent (1..100) for rescaled masks under ``scaled/``; ``None`` writes none.
    max_pixels : PNGs declaring more pixels are refused before decoding (decompression bombs).
    max_json_bytes : metadata files larger than this are refused.
    gap_iou : smallest box IoU that links a video detection to a track (anonymisation gaps).
    gap_max_frames : longest blink, in frames, reported as an anonymisation gap.
    incremental : reuse the recorded results of batches whose inputs and options are unchanged
        (the ledger under ``_ledger/``); the tables equal those of a full run.
    storage_options : fsspec/s3fs options (endpoint, profile, anon...) for source and output.
    execution : scheduler and batching.
    """

    source: str
    output: str
    encoding: EncodingChoice = "auto"
    mask_scale: int | None = None
    max_pixels: int = 50_000_000
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    gap_iou: float = 0.3
    gap_max_frames: int = 3
    incremental: bool = False
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)

    def __post_init__(self) -> None:
        for name in ("source", "output"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise OptionError(f"option {name!r} must be a non-empty URL or path")
        if self.encoding not in ENCODING_CHOICES:
            raise OptionError(
                f"option 'encoding' must be one of {', '.join(ENCODING_CHOICES)}, "
                f"got {self.encoding!r}"
            )
        scale = self.mask_scale
        if scale is not None and (
            isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 100
        ):
            raise OptionError(
                f"option 'mask_scale' must be an integer percent 1..100, got {scale!r}"
            )
        _check_positive("max_pixels", self.max_pixels)
        _check_positive("max_json_bytes", self.max_json_bytes)
        _check_positive("gap_max_frames", self.gap_max_frames)
        iou = self.gap_iou
        if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 < iou <= 1:
            raise OptionError(f"option 'gap_iou' must be a number in (0, 1], got {iou!r}")
        if not isinstance(self.storage_options, Mapping):
            raise OptionError("option 'storage_options' must be a mapping of key=value pairs")

    def record(self) -> dict[str, Any]:
        """The options as plain JSON-able data for ``_run.json`` (storage option values hidden:
        they may hold credentials)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "execution"}
        data["storage_options"] = {key: "***" for key in self.storage_options}
        data["execution"] = {
            f.name: getattr(self.execution, f.name) for f in fields(ExecutionOptions)
        }
        return data


def parse_storage_option(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as JSON when it parses
    (``true``, ``3``, ``{"a": 1}``), else kept as a string. Dotted keys nest:
    ``client_kwargs.endpoint_url=http://...``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OptionError(f"option '--storage-option' expects key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def nest_storage_options(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a nested mapping from dotted ``key=value`` pairs."""
    options: dict[str, Any] = {}
    for key, value in pairs:
        *parents, leaf = key.split(".")
        target = options
        for parent in parents:
            existing = target.setdefault(parent, {})
            if not isinstance(existing, dict):
                raise OptionError(f"storage option {key!r} conflicts with {parent!r}")
            target = existing
        target[leaf] = value
    return options
