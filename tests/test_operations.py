"""Operational failure modes, each with its exact outcome: storage that is closed from the start
or goes away mid-run (exit 1 within ``storage_timeout`` plus start-up and clean-up, one line
naming the storage, nothing committed), SIGTERM / SIGINT mid-run (exit 143 / 130, the committed
output unchanged), a local cluster that cannot start (one line, exit 1), bad or misplaced
storage options (exit 2 naming the option, the value never echoed), process-local storage with
worker processes (exit 2), and scripts using the Python API (exit 0, every time).

Runs go through ``python -m pipeline`` in a subprocess: exit codes, stderr and wall times are the
process's own. Wall times are printed and checked against the documented bound with generous
slack (the machine is shared); pytest-timeout is the backstop.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from faulty_proxy import FaultPlan, FaultyProxy
from storage_helpers import upload_tree

import pipeline
from pipeline import api, cli, read_run, read_table, runner, stopping
from pipeline.config import ExecutionOptions
from pipeline.io.storage import StorageError
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet
from pipeline.tables import TABLES

pytestmark = pytest.mark.timeout(180)

#: ``--storage-timeout`` of the outage tests, seconds.
TIMEOUT = 10.0
#: What a run may add to the timeout: interpreter and cluster start-up before, cluster
#: shutdown after (seconds; generous, the machine is shared).
SLACK = 30.0


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m pipeline ARGS`` started in a subprocess (stdout and stderr piped)."""
    argv = [sys.executable, "-m", "pipeline", *args]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or os.environ
    )


def _finish(process: subprocess.Popen[str], timeout: float = 150) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


#: A log line of the run's own (``pipeline.*`` loggers) below ERROR: its phases and progress.
_LOG_LINE = re.compile(r"\S+ (DEBUG|INFO|WARNING) pipeline(\.\w+)*: ")


def _one_message(err: str) -> str:
    """The one ``mask-pipeline:`` line on stderr; nothing else there but the run's own log
    lines: no traceback, no warning of Dask's, no second error line."""
    lines = err.strip().splitlines()
    ours = [line for line in lines if line.startswith("mask-pipeline: ")]
    notes = [line for line in lines if _LOG_LINE.match(line)]
    assert len(ours) == 1 and len(ours) + len(notes) == len(lines), err[-3000:]
    return ours[0]


def _tables(out: str, storage: dict[str, Any]) -> dict[str, list[str]]:
    """Every table of the committed run, rows as sorted JSON (read with the project's API)."""
    return {
        table: sorted(
            json.dumps(r, sort_keys=True, default=str)
            for r in read_table(out, table, storage).to_pylist()
        )
        for table in TABLES
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images and a video of 3 chunks: ~20 tasks per pass with one input per batch."""
    root = tmp_path_factory.mktemp("operations") / "in"
    make_celantur_tree(root / "images", seed=3, images=12)
    make_video_fleet(root / "videos", seed=3, videos=1, frames_per_video=1100, quirks=False)
    return root


# --- storage outages ------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["sync", "local"])
def test_storage_closed_from_the_start_stops_within_the_timeout(
    scheduler: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """An endpoint nobody listens on: exit 1 after ``storage_timeout``, one line naming the
    option, the URL and the endpoint, nothing written."""
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens on loopback
    where = ["--scheduler", "sync"] if scheduler == "sync" else ["--workers", "2"]
    started = time.monotonic()
    process = _cli(
        "celantur", "s3://bucket/in", "s3://bucket/out", "--no-progress",
        "--storage-option", f"endpoint_url={closed}",
        "--storage-timeout", str(TIMEOUT), *where,
    )  # fmt: skip
    code, out, err = _finish(process)
    elapsed = time.monotonic() - started
    print(f"\nclosed endpoint, {scheduler}: exit {code} after {elapsed:.1f} s")
    assert code == 1
    message = _one_message(err)
    assert message.startswith(
        f"mask-pipeline: cannot proceed: storage of option 'source' (s3://bucket/in at {closed})"
        f" answered no request for {TIMEOUT:g} s (option 'storage_timeout'); last error: "
    ), message
    assert "EndpointConnectionError" in message
    assert out == ""
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


@pytest.fixture
def outage_proxy(s3_endpoint: str) -> Iterator[FaultyProxy]:
    """A proxy in front of moto's server that, once enabled, resets every connection: the
    storage is gone (requests fail at the TCP level, as with a crashed endpoint)."""
    proxy = FaultyProxy(s3_endpoint, FaultPlan(rate=1.0, kinds=("reset",))).start()
    proxy.enabled = False
    yield proxy
    proxy.stop()


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, f"the run ended early: {_finish(process)}"
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)


@pytest.mark.parametrize("scheduler", ["sync", "local"])
def test_storage_gone_mid_run_stops_within_the_timeout_committing_nothing(
    scheduler: str,
    tree: Path,
    s3_bucket: tuple[str, dict[str, Any]],
    outage_proxy: FaultyProxy,
) -> None:
    """A committed run, then a run over more inputs whose storage goes away after its first
    40 requests (mid pass 1): exit 1 within ``storage_timeout`` of the outage plus clean-up,
    one line naming a storage of the run and its endpoint, and the committed run unchanged."""
    bucket, storage = s3_bucket
    upload_tree(tree / "images", f"{bucket}/in", storage)
    out = f"{bucket}/out"
    options = ["--storage-option", f"endpoint_url={outage_proxy.url}", "--no-progress"]
    code, _, err = _finish(_cli("celantur", f"{bucket}/in", out, *options, "--scheduler", "sync"))
    assert code == 0, err[-3000:]
    committed = read_run(out, storage)
    tables = _tables(out, storage)
    upload_tree(tree / "videos", f"{bucket}/in/videos", storage)

    where = ["--scheduler", "sync"] if scheduler == "sync" else ["--workers", "2"]
    first = outage_proxy.counters.requests
    process = _cli(
        "celantur", f"{bucket}/in", out, *options, "--batch-bytes", "1",
        "--storage-timeout", str(TIMEOUT), *where,
    )  # fmt: skip
    _wait_for(lambda: outage_proxy.counters.requests - first >= 40, process, 120)
    outage_proxy.enabled = True
    gone = time.monotonic()
    code, out_text, err = _finish(process)
    elapsed = time.monotonic() - gone
    print(
        f"\nstorage gone mid-run, {scheduler}: exit {code} {elapsed:.1f} s after the outage "
        f"({outage_proxy.counters.faults} requests reset)"
    )
    assert code == 1
    message = _one_message(err)
    # Input and output share the endpoint: the first whose last answer is older than the
    # timeout is named, which depends on where the outage fell in the round of questions.
    assert re.match(
        rf"mask-pipeline: cannot proceed: storage of option "
        rf"('source' \({bucket}/in|'output' \({bucket}/out) at {re.escape(outage_proxy.url)}\) "
        rf"answered no request for {TIMEOUT:g} s \(option 'storage_timeout'\); last error: ",
        message,
    ), message
    assert out_text == ""
    assert elapsed < TIMEOUT + SLACK
    outage_proxy.enabled = False
    assert read_run(out, storage) == committed
    assert _tables(out, storage) == tables


# --- readers under the same watchdog ---------------------------------------------------------


@pytest.fixture(params=["closed", "silent"])
def dead_endpoint(request: pytest.FixtureRequest, s3_endpoint: str) -> Iterator[str]:
    """An endpoint that answers nothing: ``closed`` (nobody listens: connections refused) or
    ``silent`` (a socket that listens but never accepts: connections are made, requests are
    sent, no answer ever comes, as with a hung storage). ``s3_endpoint`` sets the dummy
    credentials (the requests are signed before they are sent)."""
    if request.param == "closed":
        yield "http://127.0.0.1:9"
        return
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def _reader_error(out: str, endpoint: str) -> str:
    return (
        f"storage of option 'output' ({out} at {endpoint}) answered no request for "
        f"{TIMEOUT:g} s (option 'storage_timeout'); last error: "
    )


def test_summary_of_a_dead_storage_stops_within_the_timeout(dead_endpoint: str) -> None:
    """``mask-pipeline summary`` takes ``--storage-timeout``: exit 1 with the run's one line,
    not after the storage client's own retries."""
    out = "s3://bucket/out"
    started = time.monotonic()
    process = _cli("summary", out, "--storage-option", f"endpoint_url={dead_endpoint}",
                   "--storage-timeout", str(TIMEOUT))  # fmt: skip
    code, out_text, err = _finish(process)
    elapsed = time.monotonic() - started
    print(f"\nsummary, dead endpoint: exit {code} after {elapsed:.1f} s")
    assert code == 1
    message = _one_message(err)
    assert message.startswith(f"mask-pipeline: cannot proceed: {_reader_error(out, dead_endpoint)}")
    assert out_text == ""
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


@pytest.mark.parametrize("reader", ["read_run", "read_table"])
def test_api_readers_of_a_dead_storage_stop_within_the_timeout(
    reader: str, dead_endpoint: str
) -> None:
    """``read_run`` and ``read_table`` in the main thread: the run's ``StorageError`` after
    ``storage_timeout``."""
    out = "s3://bucket/out"
    storage = {"endpoint_url": dead_endpoint}
    read: Callable[[], object] = {
        "read_run": lambda: read_run(out, storage, storage_timeout=TIMEOUT),
        "read_table": lambda: read_table(out, "masks", storage, storage_timeout=TIMEOUT),
    }[reader]
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        read()
    elapsed = time.monotonic() - started
    print(f"\n{reader}, dead endpoint: {elapsed:.1f} s")
    assert str(raised.value).startswith(_reader_error(out, dead_endpoint))
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


@pytest.mark.parametrize("command", ["history", "vacuum"])
def test_history_and_vacuum_of_a_dead_storage_stop_with_the_watchdogs_line(
    command: str, dead_endpoint: str
) -> None:
    """``mask-pipeline history`` and ``vacuum`` take ``--storage-timeout`` as ``summary``
    does: exit 1 with the run's one line, nothing on stdout."""
    out = "s3://bucket/out"
    started = time.monotonic()
    process = _cli(command, out, "--storage-option", f"endpoint_url={dead_endpoint}",
                   "--storage-timeout", str(TIMEOUT))  # fmt: skip
    code, out_text, err = _finish(process)
    print(f"\n{command}, dead endpoint: exit {code} after {time.monotonic() - started:.1f} s")
    assert code == 1
    message = _one_message(err)
    assert message.startswith(f"mask-pipeline: cannot proceed: {_reader_error(out, dead_endpoint)}")
    assert out_text == ""


@pytest.mark.parametrize("function", ["run_history", "vacuum_output"])
def test_api_history_and_vacuum_of_a_dead_storage_raise_the_watchdogs_error(
    function: str, dead_endpoint: str
) -> None:
    """``run_history`` and ``vacuum_output`` in the main thread: the run's ``StorageError``."""
    out = "s3://bucket/out"
    storage = {"endpoint_url": dead_endpoint}
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        getattr(pipeline, function)(out, storage, storage_timeout=TIMEOUT)
    print(f"\n{function}, dead endpoint: {time.monotonic() - started:.1f} s")
    assert str(raised.value).startswith(_reader_error(out, dead_endpoint))


# --- stop signals ----------------------------------------------------------------------------


def _committed_then_more_inputs(
    tmp_path: Path,
) -> tuple[Path, Path, dict[str, Any] | None, dict[str, Any]]:
    """A committed run over 6 images and a small video, then two long videos added to its
    source (a run over them has minutes of work): the source, the output, the committed
    ``_run.json`` and tables."""
    source, out = tmp_path / "in", tmp_path / "out"
    make_celantur_tree(source / "images", seed=3, images=6)
    # The small video makes this first run compile every kernel into numba's cache: a signal
    # arriving while numba compiles lands in one of its ctypes callbacks, where Python drops
    # whatever the handler raises and the run ends only as its work item ends (see the README).
    make_video_fleet(source / "warm-up", seed=4, videos=1, frames_per_video=100, quirks=False)
    code, _, err = _finish(_cli("celantur", str(source), str(out), "--scheduler", "sync",
                                "--no-progress"))  # fmt: skip
    assert code == 0, err[-3000:]
    committed, tables = read_run(str(out)), _tables(str(out), {})
    make_video_fleet(source / "videos", seed=3, videos=2, frames_per_video=1100, quirks=False)
    return source, out, committed, tables


def _signalled_mid_run(
    source: Path, out: Path, signum: int, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str, float]:
    """A CLI run over ``source`` (one input per batch, ``args`` added) sent ``signum`` once its
    first work item is recorded (pass 1 under way): its exit code, stdout, stderr and the
    seconds from the signal to its exit."""
    process = _cli("celantur", str(source), str(out), "--no-progress", "--batch-bytes", "1",
                   *args, env=env)  # fmt: skip
    ledger = out / "_ledger"
    before = set(ledger.rglob("*"))
    _wait_for(lambda: bool(set(ledger.rglob("*")) - before), process, 120)
    signalled = time.monotonic()
    process.send_signal(signum)
    code, out_text, err = _finish(process, timeout=60)
    return code, out_text, err, time.monotonic() - signalled


@pytest.mark.parametrize(
    ("signum", "scheduler"),
    [(signal.SIGTERM, "local"), (signal.SIGINT, "local"), (signal.SIGTERM, "sync")],
)
def test_stop_signal_mid_run_exits_fast_and_commits_nothing(
    signum: int, scheduler: str, tree: Path, tmp_path: Path
) -> None:
    """A committed run, then a run over more inputs signalled once its first work item is
    recorded (pass 1 under way): exit 128 + signal, one line, the committed run unchanged, and
    no process of the run left behind."""
    source, out, committed, tables = _committed_then_more_inputs(tmp_path)

    where = ["--scheduler", "sync"] if scheduler == "sync" else ["--workers", "2"]
    code, out_text, err, elapsed = _signalled_mid_run(source, out, signum, *where)
    name = signal.Signals(signum).name
    print(f"\n{name} mid-run, {scheduler}: exit {code} {elapsed:.1f} s after the signal")
    assert code == 128 + signum
    assert _one_message(err) == (
        f"mask-pipeline: stopped by {name}; the output holds the last committed run"
    )
    assert out_text == ""
    assert read_run(str(out)) == committed
    assert _tables(str(out), {}) == tables
    assert elapsed < 30


#: What a worker preload logs as its worker closes (see :func:`_error_at_teardown`).
TEARDOWN_ERROR = "heartbeat met a closed scheduler"


def _error_at_teardown(tmp_path: Path) -> dict[str, str]:
    """The environment of a run whose workers log an error as they close, as distributed's
    worker does when its heartbeat meets the closing scheduler (a race seen in CI)."""
    preload = tmp_path / "error_at_teardown.py"
    preload.write_text(
        "import logging\n\n\n"
        "def dask_teardown(worker):\n"
        f"    logging.getLogger('distributed.worker').error({TEARDOWN_ERROR!r})\n"
    )
    return {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(preload)])}


@pytest.mark.parametrize("level", ["info", "debug"])
def test_errors_dask_logs_while_a_committed_run_closes_its_cluster_stay_off_stderr(
    level: str, tmp_path: Path
) -> None:
    """A run that commits on its own local cluster, whose workers log an error as the cluster
    closes: exit 0 and only the run's own log lines on stderr; at log level debug, the
    worker's error is there."""
    source = tmp_path / "in"
    make_celantur_tree(source, seed=3, images=2)
    code, _, err = _finish(
        _cli("celantur", str(source), str(tmp_path / "out"), "--no-progress", "--workers", "2",
             "--log-level", level, env=_error_at_teardown(tmp_path))
    )  # fmt: skip
    assert code == 0, err[-3000:]
    if level == "info":
        assert all(_LOG_LINE.match(line) for line in err.strip().splitlines()), err[-3000:]
    else:
        assert TEARDOWN_ERROR in err, err[-3000:]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_errors_dask_logs_while_a_stopped_run_closes_its_cluster_stay_off_stderr(
    level: str, tmp_path: Path
) -> None:
    """A stopped run whose workers log an error as the cluster closes: stderr still holds the
    one line of the stop; at log level debug, the worker's error is there."""
    source, out, _, _ = _committed_then_more_inputs(tmp_path)
    env = _error_at_teardown(tmp_path)
    code, _, err, _ = _signalled_mid_run(
        source, out, signal.SIGTERM, "--workers", "2", "--log-level", level, env=env
    )
    assert code == 128 + signal.SIGTERM
    if level == "info":
        assert _one_message(err) == (
            "mask-pipeline: stopped by SIGTERM; the output holds the last committed run"
        )
    else:
        assert TEARDOWN_ERROR in err, err[-3000:]


def _committed_in_process(
    tmp_path: Path, *, images: int, more: int
) -> tuple[list[str], Path, dict[str, Any] | None, dict[str, Any]]:
    """A committed sync run of the CLI in this process over ``images`` images, then ``more``
    images added to its source: the CLI's arguments, the output, the committed ``_run.json``
    and tables."""
    source, out = tmp_path / "in", tmp_path / "out"
    make_celantur_tree(source / "images", seed=3, images=images)
    run = ["celantur", str(source), str(out), "--scheduler", "sync", "--no-progress"]
    assert cli.main(run) == 0
    committed, tables = read_run(str(out)), _tables(str(out), {})
    make_celantur_tree(source / "more", seed=4, images=more)
    return run, out, committed, tables


def test_a_stop_whose_exception_was_lost_still_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stop signal whose :class:`~pipeline.stopping.Stopped` never reached the run (dropped
    in a C callback or a finaliser, in rare timing) still stops it before its commit: the run
    ends with 128 + signal and the committed run is unchanged."""
    run, out, committed, tables = _committed_in_process(tmp_path, images=4, more=2)
    look = runner._stop_if_committed

    def look_then_lose_a_stop(*args: Any) -> None:
        look(*args)
        stopping.ask_to_stop(signal.SIGTERM)  # recorded; the exception is never raised

    monkeypatch.setattr(runner, "_stop_if_committed", look_then_lose_a_stop)
    capsys.readouterr()
    assert cli.main(run) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines()[-1] == (
        "mask-pipeline: stopped by SIGTERM; the output holds the last committed run"
    )
    assert read_run(str(out)) == committed
    assert _tables(str(out), {}) == tables
    monkeypatch.undo()
    assert cli.main(run) == 0, "the stop is forgotten once its command ended"
    assert read_run(str(out)) != committed


# pytest takes Python's unraisable-exception reports during tests: as an error here, so the
# test fails if the lost ``Stopped`` would be reported.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_lost_mid_pass_stops_the_run_at_the_next_work_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stop signal whose handler runs inside a C callback while a work item runs (llvmlite's
    ctypes callbacks while numba loads a kernel: the ``Stopped`` it raises is lost, reported
    as "Exception ignored") ends the run as that item ends: no other work item starts, exit
    128 + signal, the one message and no report of the lost exception, nothing committed."""
    run, out, committed, tables = _committed_in_process(tmp_path, images=6, more=6)
    done = []
    work = runner.run_work

    def stop_in_a_c_callback() -> None:
        raise stopping.ask_to_stop(signal.SIGTERM)  # as the CLI's handler does

    def work_then_lose_a_stop(*args: Any) -> Any:
        done.append(work(*args))
        ctypes.CFUNCTYPE(None)(stop_in_a_c_callback)()  # the exception goes nowhere
        return done[-1]

    monkeypatch.setattr(runner, "run_work", work_then_lose_a_stop)
    capsys.readouterr()
    assert cli.main(run) == 128 + signal.SIGTERM
    assert len(done) == 1
    assert _one_message(capsys.readouterr().err) == (
        "mask-pipeline: stopped by SIGTERM; the output holds the last committed run"
    )
    assert read_run(str(out)) == committed
    assert _tables(str(out), {}) == tables


@pytest.mark.parametrize("scheduler", ["sync", "local"])
def test_api_runs_leave_stop_signals_to_the_host(
    scheduler: str, tree: Path, tmp_path: Path
) -> None:
    """The API installs no signal handler (a library must not take the host's signals): a
    script's own SIGTERM handler stays in place through a run and is what a SIGTERM mid-run
    calls; raising from it stops the run, which commits nothing (the README's recipe)."""
    source, out, committed, tables = _committed_then_more_inputs(tmp_path)
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import signal
            from pipeline import api
            from pipeline.config import ExecutionOptions

            def stop(signum, frame):
                raise SystemExit(128 + signum)

            if __name__ == "__main__":
                signal.signal(signal.SIGTERM, stop)
                local = {scheduler == "local"!r}  # a local cluster of 2 worker processes
                execution = ExecutionOptions(
                    scheduler=None if local else "sync", workers=2 if local else None,
                    batch_bytes=1, progress=False,
                )
                try:
                    api.run_celantur({str(source)!r}, {str(out)!r}, execution=execution)
                finally:
                    print("handler in place:", signal.getsignal(signal.SIGTERM) is stop)
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ledger = out / "_ledger"
    before = set(ledger.rglob("*"))
    _wait_for(lambda: bool(set(ledger.rglob("*")) - before), process, 120)
    process.send_signal(signal.SIGTERM)
    code, out_text, err = _finish(process, timeout=60)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert out_text == "handler in place: True\n"
    assert read_run(str(out)) == committed
    assert _tables(str(out), {}) == tables


# --- the local cluster cannot start -----------------------------------------------------------


def test_worker_dying_while_the_cluster_starts_is_one_message(tmp_path: Path) -> None:
    """Every worker process exits while starting (a preload that ends it): exit 1, one line
    naming the cluster and the ``workers`` option, no traceback."""
    preload = tmp_path / "die_at_start.py"
    preload.write_text("import os\n\nos._exit(1)\n")
    source = tmp_path / "in"
    make_celantur_tree(source, seed=3, images=2)
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(preload)])}
    code, out, err = _finish(
        _cli(
            "celantur",
            str(source),
            str(tmp_path / "out"),
            "--workers",
            "2",
            "--no-progress",
            env=env,
        )
    )
    print(f"\ncluster start-up failure: exit {code}; {err.strip().splitlines()[-1]}")
    assert code == 1
    message = _one_message(err)
    assert message.startswith(
        "mask-pipeline: cannot proceed: cannot start a local Dask cluster of 2 worker processes "
        "(option 'workers'): "
    ), message
    assert out == ""
    assert not (tmp_path / "out" / "_run.json").exists()


def test_log_level_debug_adds_the_traceback(tmp_path: Path) -> None:
    """The same start-up failure at ``--log-level debug``: the line, then its traceback."""
    preload = tmp_path / "die_at_start.py"
    preload.write_text("import os\n\nos._exit(1)\n")
    source = tmp_path / "in"
    make_celantur_tree(source, seed=3, images=2)
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(preload)])}
    code, _, err = _finish(
        _cli("celantur", str(source), str(tmp_path / "out"), "--workers", "2", "--no-progress",
             "--log-level", "debug", env=env)
    )  # fmt: skip
    assert code == 1
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("mask-pipeline: "))
    assert lines[first].startswith("mask-pipeline: cannot proceed: cannot start a local Dask")
    assert lines[first + 1] == "Traceback (most recent call last):"
    assert "SchedulerError: cannot start a local Dask cluster" in err


# --- options: exit 2 naming the option, secrets never echoed -----------------------------------

SECRET = "sEcReT-never-to-be-printed"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--storage-option", SECRET],
         "mask-pipeline: error: option '--storage-option' expects key=value; the value given "
         "has no = (not shown: it may be a secret)"),
        (["--storage-option", f"={SECRET}"],
         "mask-pipeline: error: option '--storage-option' expects key=value; the value given "
         "has no key before its = (not shown: it may be a secret)"),
        (["--storage-option", f"config_kwargs={SECRET}"],
         "mask-pipeline: error: storage option 'config_kwargs' must be a mapping (key.sub=value)"
         " for s3://, got a str (value not shown)"),
        (["--storage-option", f"client_kwargs={SECRET}"],
         "mask-pipeline: error: storage option 'client_kwargs' must be a mapping (key.sub=value)"
         " for s3://, got a str (value not shown)"),
        (["--storage-option", f"anon={SECRET}"],
         "mask-pipeline: error: storage option 'anon' must be true or false for s3://, got a str"
         " (value not shown)"),
        (["--storage-option", f"max_concurrency={SECRET}"],
         "mask-pipeline: error: storage option 'max_concurrency' must be an integer for s3://, "
         "got a str (value not shown)"),
        (["--storage-timeout", "0"],
         "mask-pipeline: error: option 'storage_timeout' must be a positive number of seconds, "
         "got 0.0"),
    ],
)  # fmt: skip
def test_bad_option_values_exit_2_naming_the_option_never_the_secret(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    code = main(["celantur", "s3://bucket/in", str(tmp_path / "out"), *argv])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip() == message
    assert SECRET not in captured.out + captured.err


def test_storage_options_from_the_environment_are_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("MASK_PIPELINE_STORAGE_OPTIONS", json.dumps({"config_kwargs": SECRET}))
    code = main(["celantur", "s3://bucket/in", str(tmp_path / "out"), "--scheduler", "sync"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "mask-pipeline: error: storage option 'config_kwargs' must be a mapping (key.sub=value)"
        " for s3://, got a str (value not shown)"
    )


@pytest.mark.parametrize(
    ("line", "override", "message"),
    [
        ("", SECRET,
         "option '--set' expects key=value; the value given has no = (not shown: it may be a "
         "secret)"),
        (f'storage_options = "{SECRET}"', None,
         "job key 'storage_options' must be Mapping, got a str (value not shown)"),
        ("[storage_options]\nconfig_kwargs = 3", None,
         "storage option 'config_kwargs' must be a mapping (key.sub=value) for s3://, got a int"
         " (value not shown)"),
        ("storage_timeout = -1", None,
         "option 'storage_timeout' must be a positive number of seconds, got -1.0"),
        ("", "storage_timeout=soon", "job key 'storage_timeout' must be float, got 'soon'"),
    ],
)  # fmt: skip
def test_bad_job_values_exit_2_naming_the_key_never_the_secret(
    line: str,
    override: str | None,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main

    job = tmp_path / "job.toml"
    job.write_text(
        f'command = "celantur"\nsource = "s3://bucket/in"\noutput = "{tmp_path}/out"\n{line}\n'
    )
    code = main(["run", str(job), *(["--set", override] if override else [])])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip() == f"mask-pipeline: error: {message}"
    assert SECRET not in captured.out + captured.err


# --- process-local storage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "output", "option"),
    [("TREE", "memory://ops/out", "output"), ("memory://ops/in", "OUT", "source")],
)
def test_memory_storage_with_worker_processes_is_a_usage_error(
    source: str,
    output: str,
    option: str,
    tree: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main

    source = str(tree) if source == "TREE" else source
    output = str(tmp_path / "out") if output == "OUT" else output
    url = output if option == "output" else source
    code = main(["celantur", source, output, "--workers", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        f"mask-pipeline: error: option {option!r}: {url} lives in this process only and worker "
        'processes cannot reach it; use --scheduler sync (execution.scheduler = "sync") or a '
        "shared storage"
    )
    assert not fsspec.filesystem("memory").exists("/ops/out/_run.json")


def test_memory_storage_in_process_keeps_working(tree: Path, tmp_path: Path) -> None:
    from pipeline.cli import main

    source, out = "memory://ops-sync/in", str(tmp_path / "out")
    upload_tree(tree, source, {})
    assert main(["celantur", source, out, "--scheduler", "sync", "--no-progress"]) == 0
    record = read_run(out)
    assert record["accounting"]["in_tables"] == record["accounting"]["found"] == 36
    assert read_table(out, "masks").num_rows == record["tables"]["masks"]["rows"] > 0


# --- scripts using the Python API exit cleanly ---------------------------------------------------

#: Runs of each kind: before the fix, a run that read Parquet back aborted at exit (code 134) in
#: 1 of 12-24 runs here, about half of the runs on other machines.
SCRIPT_RUNS = 6


def test_api_scripts_and_the_cli_exit_cleanly_every_time(tree: Path, tmp_path: Path) -> None:
    """A script that runs the pipeline in-process and reads every table back, a script that
    only reads, and the CLI's run and summary: each exits 0 every time, its output complete
    (no abort in interpreter teardown, no ``os._exit``)."""
    out = tmp_path / "out"
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pipeline import api
            from pipeline.config import ExecutionOptions

            if sys.argv[1] == "run":
                api.run_celantur({str(tree)!r}, {str(out)!r},
                                 execution=ExecutionOptions(scheduler="sync", progress=False))
            print(sum(api.read_table({str(out)!r}, t).num_rows for t in {list(TABLES)!r}))
            """
        )
    )
    kinds = {
        "API run + read": [str(script), "run"],
        "API read": [str(script), "read"],
        "CLI run": ["-m", "pipeline", "celantur", str(tree), str(out), "--scheduler", "sync",
                    "--no-progress"],
        "CLI summary": ["-m", "pipeline", "summary", str(out)],
    }  # fmt: skip
    codes: dict[str, list[int]] = {kind: [] for kind in kinds}
    for _ in range(SCRIPT_RUNS):
        for kind, argv in kinds.items():
            done = subprocess.run(
                [sys.executable, *argv], capture_output=True, text=True, timeout=120
            )
            codes[kind].append(done.returncode)
            assert done.returncode == 0, f"{kind}: {done.returncode}\n{done.stderr[-3000:]}"
            assert done.stdout.strip(), kind
    print(f"\nexit codes over {SCRIPT_RUNS} runs each: {codes}")


def test_each_run_record_names_the_versions_it_ran_with(tmp_path: Path) -> None:
    """``_run.json`` names Python's and the packages' versions (read once per process), the
    same in every run of the process and as the installed metadata says."""
    source = make_celantur_tree(tmp_path / "in", seed=2, images=1).root
    sync = ExecutionOptions(scheduler="sync", progress=False)
    first = api.run_celantur(str(source), str(tmp_path / "a"), execution=sync)
    second = api.run_celantur(str(source), str(tmp_path / "b"), execution=sync)
    versions = first.record["versions"]
    assert versions["python"] == platform.python_version()
    for name in ("mask-pipeline", "dask", "numpy", "pyarrow", "deltalake", "msgspec"):
        assert versions[name] == importlib.metadata.version(name), name
    assert second.record["versions"] == versions == read_run(str(tmp_path / "a"))["versions"]
