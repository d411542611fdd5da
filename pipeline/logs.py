"""What a run tells as it goes: standard :mod:`logging` under the ``pipeline`` logger.

Library code only logs (``logging.getLogger(__name__)``, children of ``pipeline``); the console
script configures the handler once (:func:`configure_logging`): timestamped lines with a level
on stderr, as text or one JSON object per line for cloud log collectors. API users keep their
own logging configuration. A run logs its phases with counts and timings, warnings as they
happen and its final summary; while batches run, :func:`progress` shows a tqdm bar on a
terminal and logs a progress line every ~10 s or 10 % of the batches everywhere else.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Literal, get_args

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
#: A progress line at least this often (seconds) ...
PROGRESS_SECONDS = 10.0
#: ... and whenever another tenth of the batches has finished,
PROGRESS_STEPS = 10
#: ... but not within this many seconds of the last line (a small run's batches finish together).
PROGRESS_MIN_SECONDS = 1.0

LOG = logging.getLogger("pipeline")
PROGRESS_LOG = logging.getLogger("pipeline.progress")


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2026-12-01T04:05:06.789Z INFO pipeline.runner: message`` (UTC, ISO 8601)."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (a traceback, when attached, follows on the next lines)."""
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, and the fields
    a call passed in ``extra={"fields": {...}}`` (counts, seconds, paths)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (so a redirected or
    captured stderr gets the lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write one formatted record and flush (a cron job's log is read while it runs)."""
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send the ``pipeline`` logger's records at ``level`` and above to stderr, formatted as
    ``log_format`` (``text`` or ``json``). Idempotent: a second call replaces the handler."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    for handler in [h for h in LOG.handlers if isinstance(h, StderrHandler)]:
        LOG.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    LOG.addHandler(handler)
    LOG.setLevel(level.upper())
    LOG.propagate = False  # one line per record, even when the root logger has a handler


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured values for the JSON format (text shows the
    message only)."""
    return {"fields": values}


class _Progress:
    """Counts finished batches; a tqdm bar when ``bar``, else a log line now and then."""

    def __init__(self, total: int, label: str, bar: bool) -> None:
        from tqdm import tqdm

        self.total, self.label, self.done = total, label, 0
        self.bar = tqdm(total=total, desc=label, unit="batch", disable=not bar, file=sys.stderr)
        self.lines = not bar
        self.started = self.last_time = time.monotonic()
        self.last_step = 0

    def update(self, count: int = 1) -> None:
        """``count`` more batches finished."""
        self.done += count
        self.bar.update(count)
        if not self.lines or self.done >= self.total:
            return
        now = time.monotonic()
        step = self.done * PROGRESS_STEPS // max(self.total, 1)
        since = now - self.last_time
        if (step > self.last_step and since >= PROGRESS_MIN_SECONDS) or since >= PROGRESS_SECONDS:
            self.last_step, self.last_time = step, now
            elapsed = now - self.started
            PROGRESS_LOG.info(
                "%s: %d/%d batches (%d%%), %.1f s",
                self.label, self.done, self.total, 100 * self.done // self.total, elapsed,
                extra=fields(phase=self.label, done=self.done, total=self.total,
                             seconds=round(elapsed, 3)),
            )  # fmt: skip

    def close(self) -> None:
        """Close the bar (the phase's own line reports the end)."""
        self.bar.close()


def progress(total: int, label: str, bar: bool) -> _Progress:
    """Progress of ``total`` batches of phase ``label``: a tqdm bar on stderr when ``bar``
    (a terminal), otherwise an INFO line every :data:`PROGRESS_SECONDS` or every tenth."""
    return _Progress(total, label, bar)


def show_bar(progress_option: bool | None) -> bool:
    """Whether to draw a progress bar: the option when set, else when stderr is a terminal."""
    return sys.stderr.isatty() if progress_option is None else bool(progress_option)
