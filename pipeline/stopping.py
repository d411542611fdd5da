"""A stop asked for by a signal, as the run sees it.

The CLI's signal handler raises :class:`Stopped` in the main thread, which ends the run where it
is. A raised exception can still be lost in rare timing (a handler that runs inside a C
callback or a finaliser is reported as "Exception ignored" and dropped), so the handler also
records the stop, and the run looks at the record as each work item ends and right before it
commits (:func:`stop_if_asked`): a stopped run ends at its next work item and never commits,
whatever became of the exception.
"""

from __future__ import annotations

import signal
import threading

_asked: list[int] = []
_lock = threading.Lock()


class Stopped(BaseException):
    """A stop signal reached the CLI. A ``BaseException``, like ``KeyboardInterrupt``: no
    handler of an input's failure may take it for that input's error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def ask_to_stop(signum: int) -> Stopped:
    """Record that signal ``signum`` asked the run to stop; returns the exception to raise."""
    with _lock:
        _asked.append(signum)
    return Stopped(signum)


def stop_if_asked() -> None:
    """Raise :class:`Stopped` if a stop was asked for since :func:`forget_stops`."""
    with _lock:
        if _asked:
            raise Stopped(_asked[0])


def forget_stops() -> None:
    """Forget the stops asked for (a new command starts, in the same process)."""
    with _lock:
        _asked.clear()


__all__ = ["Stopped", "ask_to_stop", "forget_stops", "stop_if_asked"]
