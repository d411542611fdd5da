"""The options model: one source of defaults for the CLI, job files and the Python API.

Every door builds the same frozen dataclasses, and every check lives in their ``__post_init__``,
so an invalid value raises :class:`OptionError` naming the option whichever door it came through.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fsspec import get_filesystem_class

from pipeline.formats.celantur import ENCODING_CHOICES, EncodingChoice
from pipeline.formats.clearml import MASK_MODES, MaskMode, parse_uri_map
from pipeline.io.jsonio import DEFAULT_MAX_JSON_BYTES
from pipeline.io.storage import DEFAULT_IO_CONCURRENCY, url_protocol
from pipeline.logs import LOG_FORMATS, LOG_LEVELS, LogFormat, LogLevel

#: Environment variable naming an existing Dask scheduler (Dask's own convention).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Default of ``storage_timeout``: seconds without any successful storage request before a run
#: stops (exit code 1).
DEFAULT_STORAGE_TIMEOUT = 60.0
#: Filesystems that live inside one process: worker processes would each read and write their
#: own empty copy, and the client would commit nothing they wrote.
PROCESS_LOCAL_PROTOCOLS = frozenset({"memory"})


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
    workers : worker processes of the embedded ``LocalCluster`` (default: one per core); with
        another scheduler it is ignored with a warning (a job file sized for a local cluster
        stays usable with ``--set execution.scheduler=sync``).
    batch_bytes : input bytes per task; small files are batched so the graph stays small.
        Also the bound on bytes a task reads ahead, and on bytes it has writing at once.
    io_concurrency : storage requests each worker thread keeps in flight (inputs read ahead
        while earlier ones are measured, outputs written behind); it does not change outputs.
    progress : show a progress bar on stderr (default: when stderr is a terminal); without
        one, progress is logged every ~10 s or 10 % of the batches.
    log_level : ``debug``, ``info``, ``warning`` or ``error``: the least severe log line the
        console script writes to stderr (API users configure :mod:`logging` themselves).
    log_format : ``text`` (timestamped lines) or ``json`` (one object per line, for cloud log
        collectors); console script only, as ``log_level``.
    """

    scheduler: str | None = None
    workers: int | None = None
    batch_bytes: int = 32 * 1024 * 1024
    io_concurrency: int = DEFAULT_IO_CONCURRENCY
    progress: bool | None = None
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"

    def __post_init__(self) -> None:
        if self.workers is not None:
            _check_positive("workers", self.workers)
        if self.log_level not in LOG_LEVELS:
            raise OptionError(
                f"option 'log_level' must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise OptionError(
                f"option 'log_format' must be one of {', '.join(LOG_FORMATS)}, "
                f"got {self.log_format!r}"
            )
        _check_positive("batch_bytes", self.batch_bytes)
        _check_positive("io_concurrency", self.io_concurrency)
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise OptionError("option 'scheduler' must not be empty")

    def resolved_scheduler(self) -> str | None:
        """The scheduler to use: the option, else the environment, else ``None`` (local)."""
        return self.scheduler or os.environ.get(SCHEDULER_ENV) or None


def _check_scale(scale: Any) -> None:
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 100
    ):
        raise OptionError(f"option 'mask_scale' must be an integer percent 1..100, got {scale!r}")


def check_storage_timeout(timeout: object) -> None:
    """Refuse a ``storage_timeout`` that is not a positive number of seconds.

    Raises
    ------
    OptionError
        Naming the option (exit code 2).
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise OptionError(
            f"option 'storage_timeout' must be a positive number of seconds, got {timeout!r}"
        )


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What every run takes, whatever its input format.

    Attributes
    ----------
    output : output folder URL (local path, ``file://``, ``s3://``, any fsspec URL).
    mask_scale : percent (1..100) for rescaled masks under ``scaled/``; ``None`` writes none.
    max_pixels : PNGs (and video frames) declaring more pixels are refused before decoding.
    max_json_bytes : metadata / frames files larger than this are refused.
    storage_timeout : seconds the storage may go without answering any request before the run
        stops with exit code 1, naming the storage and its last error (default 60).
    incremental : reuse the recorded results of batches whose inputs and options are unchanged
        (the ledger under ``_ledger/``); the tables equal those of a full run.
    allow_empty : commit empty tables when no input is found; by default an empty input (a
        mistyped prefix) stops the run with exit code 1 naming the URL.
    storage_options : fsspec/s3fs options (endpoint, profile, anon...) for inputs and output.
    execution : scheduler and batching.
    """

    output: str
    mask_scale: int | None = None
    max_pixels: int = 50_000_000
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    storage_timeout: float = DEFAULT_STORAGE_TIMEOUT
    incremental: bool = False
    allow_empty: bool = False
    # Never in repr (worker logs print task arguments): the options may hold credentials.
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.output, str) or not self.output.strip():
            raise OptionError("option 'output' must be a non-empty URL or path")
        _check_scale(self.mask_scale)
        _check_positive("max_pixels", self.max_pixels)
        _check_positive("max_json_bytes", self.max_json_bytes)
        check_storage_timeout(self.storage_timeout)
        if not isinstance(self.storage_options, Mapping):
            # The value is not shown: a misplaced credential is still a credential.
            raise OptionError(
                "option 'storage_options' must be a mapping of key=value pairs, "
                f"got a {type(self.storage_options).__name__}"
            )
        check_storage_options(self.urls(), self.storage_options)

    def urls(self) -> dict[str, str]:
        """The storage URLs the options name, by option: where the run reads and writes."""
        return {"output": self.output}

    def refuse_process_local(self, *, in_process: bool) -> None:
        """Refuse a process-local filesystem (``memory://``) unless the run stays in this
        process: each worker process would see its own empty copy.

        Raises
        ------
        OptionError
            Naming the option whose URL is process-local (exit code 2).
        """
        if in_process:
            return
        for name, url in self.urls().items():
            if url_protocol(url) in PROCESS_LOCAL_PROTOCOLS:
                raise OptionError(
                    f"option {name!r}: {url} lives in this process only and worker processes "
                    'cannot reach it; use --scheduler sync (execution.scheduler = "sync") '
                    "or a shared storage"
                )

    def record(self) -> dict[str, Any]:
        """The options as plain JSON-able data for ``_run.json`` (storage option values hidden:
        they may hold credentials; local paths made absolute, so the record is usable from any
        working directory)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "execution"}
        for name in ("output", "source", "frames", "mask_labels"):
            if isinstance(data.get(name), str):
                data[name] = _absolute(data[name])
        data["storage_options"] = {key: "***" for key in self.storage_options}
        data["execution"] = {
            f.name: getattr(self.execution, f.name) for f in fields(ExecutionOptions)
        }
        return data


@dataclass(frozen=True, kw_only=True)
class CelanturOptions(RunOptions):
    """A Celantur run: masks and metadata under ``source`` to tables under ``output``.

    Attributes
    ----------
    source : input folder URL.
    encoding : instance-mask encoding, or ``auto`` to decide per dataset from evidence.
    gap_iou : smallest IoU between a track's predicted box and a video detection that links
        them (anonymisation-gap tracker).
    gap_max_frames : longest gap, in frames, bridged and reported as an anonymisation gap.
    gap_min_hits : detections in consecutive frames that confirm a track; only confirmed tracks
        report gaps.
    gap_high_score : detections scoring below it only extend tracks (ByteTrack's second round).
    (and every :class:`RunOptions` field)
    """

    source: str
    encoding: EncodingChoice = "auto"
    gap_iou: float = 0.3
    gap_max_frames: int = 3
    gap_min_hits: int = 3
    gap_high_score: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.source, str) or not self.source.strip():
            raise OptionError("option 'source' must be a non-empty URL or path")
        if self.encoding not in ENCODING_CHOICES:
            raise OptionError(
                f"option 'encoding' must be one of {', '.join(ENCODING_CHOICES)}, "
                f"got {self.encoding!r}"
            )
        _check_positive("gap_max_frames", self.gap_max_frames)
        _check_positive("gap_min_hits", self.gap_min_hits)
        for name, low in (("gap_iou", 0.0), ("gap_high_score", -1.0)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not low < value <= 1
            ):
                raise OptionError(
                    f"option {name!r} must be a number in ({low:g}, 1], got {value!r}"
                )

    def urls(self) -> dict[str, str]:
        """As :meth:`RunOptions.urls`, with ``source``."""
        return {"source": self.source, **super().urls()}


@dataclass(frozen=True, kw_only=True)
class ClearmlOptions(RunOptions):
    """A ClearML run: the masks of Hyper-Dataset frames to tables under ``output``.

    Attributes
    ----------
    frames : a frames document (JSON object, array or JSON Lines) or a folder of them.
    mask_labels : the version's ``mask_labels`` in any of its forms (list of ``{value,
        labels}``, ``{"_all_": [...]}``, ``{(r, g, b): [labels]}``), or the URL of a JSON file
        holding one; ``None`` for none.
    mode : ``pixel`` (values to labels), ``alpha`` (opacity), or ``auto``: pixel when
        ``mask_labels`` is non-empty, else alpha.
    uri_map : ``PREFIX=REPLACEMENT`` rewrites of mask URIs (e.g. a bucket's https host to
        ``s3://bucket/``); the longest matching prefix wins.
    (and every :class:`RunOptions` field)
    """

    frames: str
    mask_labels: Any = None
    mode: MaskMode = "auto"
    uri_map: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.frames, str) or not self.frames.strip():
            raise OptionError("option 'frames' must be a non-empty URL or path")
        if self.mode not in MASK_MODES:
            raise OptionError(
                f"option 'mode' must be one of {', '.join(MASK_MODES)}, got {self.mode!r}"
            )
        try:
            parse_uri_map(list(self.uri_map))
        except ValueError as exc:
            raise OptionError(str(exc)) from exc

    def urls(self) -> dict[str, str]:
        """As :meth:`RunOptions.urls`, with ``frames`` and a ``mask_labels`` file."""
        named = {"frames": self.frames}
        if isinstance(self.mask_labels, str):
            named["mask_labels"] = self.mask_labels
        return {**named, **super().urls()}

    def record(self) -> dict[str, Any]:
        """As :meth:`RunOptions.record`; an inline ``mask_labels`` is recorded by size only."""
        data = super().record()
        if not isinstance(self.mask_labels, (str, type(None))):
            data["mask_labels"] = f"<inline, {len(self.mask_labels)} entries>"
        return data


def _absolute(url: str) -> str:
    """A local path made absolute and normalised; URLs (``scheme://``) as they are."""
    return url if "://" in url else os.path.abspath(url)


def parse_key_value(text: str, option: str = "--storage-option") -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as JSON when it parses
    (``true``, ``3``, ``{"a": 1}``), else kept as a string. Dotted keys nest (see
    :func:`nest_storage_options`): ``client_kwargs.endpoint_url=http://...``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        # Never echo the text: a value given without its key is often a secret.
        raise OptionError(
            f"option {option!r} expects key=value; the value given has "
            f"{'no key before its =' if sep else 'no ='} (not shown: it may be a secret)"
        )
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


def check_storage_options(urls: Mapping[str, str], options: Mapping[str, Any]) -> None:
    """Check storage option types against the filesystems of ``urls`` before anything runs.

    An option is checked where the filesystem's constructor declares its type: a parameter
    with a non-``None`` default (``anon=False`` takes a bool, ``max_concurrency=10`` an int),
    or, by fsspec's naming convention, a ``*_kwargs`` parameter (``client_kwargs``,
    ``config_kwargs``...), which takes a mapping. Other options pass as they are.

    Raises
    ------
    OptionError
        Naming the storage option and the type it needs; never its value, which may be a
        credential (exit code 2).
    """
    for url in dict.fromkeys(u for u in urls.values() if isinstance(u, str)):
        try:
            filesystem = get_filesystem_class(url_protocol(url))
        except (ImportError, ValueError):
            continue  # an unknown protocol or a missing implementation: the run says so
        parameters = inspect.signature(filesystem.__init__).parameters
        for key, value in options.items():
            if key not in parameters:
                continue
            default = parameters[key].default
            if key.endswith("_kwargs"):
                expected: type = dict
            elif default is None or default is inspect.Parameter.empty:
                continue
            else:
                expected = type(default)
            if not _has_type(value, expected):
                raise OptionError(
                    f"storage option {key!r} must be {_TYPE_NAMES.get(expected, expected.__name__)}"
                    f" for {url_protocol(url)}://, got a {type(value).__name__} (value not shown)"
                )


_TYPE_NAMES = {dict: "a mapping (key.sub=value)", bool: "true or false", int: "an integer",
               float: "a number", str: "a string"}  # fmt: skip


def _has_type(value: Any, expected: type) -> bool:
    if expected is dict:
        return isinstance(value, Mapping)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)
