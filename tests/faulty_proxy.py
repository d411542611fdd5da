"""Fault injectors for the resilience tests (``tests/test_faults.py``).

* :class:`FaultyProxy`: a threaded HTTP reverse proxy on 127.0.0.1 in front of an S3 endpoint
  (moto's server) that answers a seeded fraction of requests with an S3 ``503 SlowDown`` error,
  drops the connection without an answer (before or after forwarding the request) or halfway
  through the answer's body, or refuses with ``403 AccessDenied``; it counts what it injected
  and every request by HTTP method. It can also hold every request for a fixed ``delay``, as a
  cloud store's round trip does for small objects (the storage benchmark uses it without faults).
* :class:`FaultyProxyProcess`: the same proxy in a process of its own (its threads then take
  no turns at the GIL of the process that measures, e.g. one holding a Dask scheduler), steered
  and read over a pipe: the storage benchmark uses it.
* :class:`KillWorkerOnce`: a Dask worker plugin that kills its worker process (``os._exit``) the
  first time a chosen task finishes (or steps aside) after a number of others, once per test (a
  marker file survives the Nanny's restart of the worker).
* :class:`RecordTransitions`: a Dask worker plugin writing down which tasks reached a state.

Both live here, not in the test module, so worker processes can import them by name (and the
benchmarks as ``tests.faulty_proxy``).
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import os
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any, Literal
from urllib.parse import urlsplit

from distributed.diagnostics.plugin import WorkerPlugin

#: ``slowdown``: 503 SlowDown, the request not forwarded; ``reset``: the connection dropped (TCP
#: RST) before forwarding; ``lost_answer``: the request forwarded and applied, then the connection
#: dropped without the answer (a write that happened but the client cannot know it did);
#: ``truncated``: the request forwarded, the answer's status and headers sent, then the
#: connection dropped halfway through its body; ``denied``: 403 AccessDenied.
FaultKind = Literal["slowdown", "reset", "lost_answer", "truncated", "denied"]
FAULT_KINDS: tuple[FaultKind, ...] = ("slowdown", "reset", "lost_answer", "truncated", "denied")
#: Seconds any socket of the proxy may wait (client side and upstream): nothing hangs a test.
SOCKET_TIMEOUT = 30.0
#: Headers that belong to one hop, never forwarded (RFC 9110 7.6.1), plus the body framing we
#: recompute.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "proxy-connection", "content-length", "expect"}
)  # fmt: skip

_ERRORS: dict[str, tuple[int, str, str]] = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "denied": (403, "AccessDenied", "Access Denied"),
}


def s3_error_body(code: str, message: str, resource: str) -> bytes:
    """An S3 REST error document, as AWS sends it."""
    request_id = uuid.uuid4().hex[:16].upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


@dataclass
class FaultPlan:
    """Which requests fail and how: a fraction ``rate`` of requests, drawn with a seeded RNG,
    gets one of ``kinds`` (chosen with the same RNG). ``rate=1, kinds=("denied",)`` refuses all.
    With ``prefixes``, only requests whose path (``/bucket/key...``) starts with one of them
    can fail.
    """

    rate: float = 0.3
    kinds: Sequence[FaultKind] = ("slowdown", "reset")
    seed: int = 0
    prefixes: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be in 0..1, got {self.rate}")
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {FAULT_KINDS}, got {self.kinds}")


@dataclass
class FaultCounters:
    """What the proxy saw: requests (all, by HTTP method, and each as ``(method, path)`` with
    its query), forwarded answers, injected faults by kind and by request (``"<METHOD> <kind>"``,
    e.g. ``"PUT reset"``), and the most requests it was handling at once."""

    requests: int = 0
    forwarded: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    seen: list[tuple[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    @property
    def faults(self) -> int:
        """Faults injected, all kinds."""
        return sum(self.injected.values())


class FaultyProxy:
    """A reverse proxy on 127.0.0.1 (free port) in front of ``upstream`` (``http://host:port``)
    injecting the faults of ``plan``. Use as a context manager, or :meth:`start` / :meth:`stop`.

    The fault decision is drawn per request, under a lock, from ``random.Random(plan.seed)``:
    the sequence of decisions is reproducible, which request meets which one depends on thread
    timing. Faults can be switched off and on (:attr:`enabled`) without restarting.

    ``delay`` (seconds, changeable while running) holds every request that long once its body
    has arrived, before it is answered or forwarded: a round trip's latency. Each connection
    has its own thread, so requests in flight at once wait at the same time, as on a real store.
    A plan with ``rate=0`` injects nothing: a latency-only proxy.
    """

    def __init__(self, upstream: str, plan: FaultPlan | None = None, *, delay: float = 0.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.hostname not in (
            "127.0.0.1", "localhost",
        ):  # fmt: skip
            raise ValueError(f"upstream must be a loopback http:// URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.plan = plan or FaultPlan()
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        self.delay = delay
        self.counters = FaultCounters()
        self.enabled = True
        self._rng = random.Random(self.plan.seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The proxy's endpoint URL (what ``endpoint_url`` should point at)."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultyProxy:
        """Listen on a free loopback port and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"proxy": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name="faulty-proxy",
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (open keep-alive threads are daemons
        and end with their client's connection or :data:`SOCKET_TIMEOUT`)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=SOCKET_TIMEOUT)
        self._server = self._thread = None

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- decisions --------------------------------------------------------------------------

    def decide(self, method: str, path: str) -> FaultKind | None:
        """The fault for the next request (``None``: forward it), counted."""
        with self._lock:
            self.counters.requests += 1
            self.counters.methods[method] += 1
            self.counters.seen.append((method, path))
            if not self.enabled:
                return None
            if self.plan.prefixes and not path.startswith(tuple(self.plan.prefixes)):
                return None
            if self._rng.random() >= self.plan.rate:
                return None
            kind = self._rng.choice(list(self.plan.kinds))
            self.counters.injected[kind] += 1
            self.counters.by_method[f"{method} {kind}"] += 1
            return kind

    def count_forwarded(self) -> None:
        with self._lock:
            self.counters.forwarded += 1

    def handling(self, change: int) -> None:
        """One more (``+1``) or one fewer (``-1``) request being handled."""
        with self._lock:
            self.counters.in_flight += change
            self.counters.max_in_flight = max(self.counters.max_in_flight, self.counters.in_flight)

    def reset_counters(self) -> FaultCounters:
        """Start counting afresh; returns what was counted so far."""
        with self._lock:
            counted, self.counters = self.counters, FaultCounters()
            return counted


class _Handler(BaseHTTPRequestHandler):
    """One client connection; HTTP/1.1 keep-alive, as botocore's pool uses it."""

    proxy: FaultyProxy
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the counters are the log

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Drop the connection: SO_LINGER 0 makes close() send a TCP RST."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _hang_up(self) -> None:
        """End the connection in order (FIN): what was written arrives, then end of stream."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    def _error(self, kind: str) -> None:
        status, code, message = _ERRORS[kind]
        body = s3_error_body(code, message, self.path.split("?", 1)[0])
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "FAULTYPROXY")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes, answer: Literal["full", "none", "half"] = "full") -> None:
        """Send the request upstream; then pass the answer on whole, not at all (reset), or
        its first half — status line, headers and body as one byte string, so an answer
        without a body is cut inside its headers — followed by an orderly hang-up."""
        upstream = http.client.HTTPConnection(
            self.proxy.upstream_host, self.proxy.upstream_port, timeout=SOCKET_TIMEOUT
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = b"" if self.command == "HEAD" else response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            # A HEAD answer announces the object's length but carries no body.
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            kept.append(("Content-Length", length if length is not None else str(len(payload))))
        finally:
            upstream.close()
        if answer == "none":
            self._reset()
            return
        lines = [f"HTTP/1.1 {response.status} {response.reason}", *(f"{k}: {v}" for k, v in kept)]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        if answer == "half":
            self.wfile.write(raw[: len(raw) // 2])
            self._hang_up()
            return
        self.wfile.write(raw)
        self.proxy.count_forwarded()

    def _handle(self) -> None:
        body = self._read_body()
        self.proxy.handling(+1)
        try:
            self._answer(body)
        finally:
            self.proxy.handling(-1)

    def _answer(self, body: bytes) -> None:
        if self.proxy.delay:
            time.sleep(self.proxy.delay)
        kind = self.proxy.decide(self.command, self.path)
        if kind == "reset":
            self._reset()
        elif kind == "lost_answer":
            self._forward(body, answer="none")
        elif kind == "truncated":
            self._forward(body, answer="half")
        elif kind is not None:
            self._error(kind)
        else:
            self._forward(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class FaultyProxyProcess:
    """A :class:`FaultyProxy` in a child process (started with ``spawn``), for measurements:
    :attr:`delay` is set and :attr:`counters` read over a pipe, :attr:`pid` names the process
    (e.g. to measure its CPU time). Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, upstream: str, plan: FaultPlan | None = None, *, delay: float = 0.0) -> None:
        self._arguments = (upstream, plan or FaultPlan(), delay)
        self._pipe: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """The proxy's endpoint URL."""
        if not self._url:
            raise RuntimeError("proxy not started")
        return self._url

    @property
    def pid(self) -> int:
        """The child process's id."""
        if self._process is None or self._process.pid is None:
            raise RuntimeError("proxy not started")
        return self._process.pid

    @property
    def delay(self) -> float:
        """Seconds every request is held (see :class:`FaultyProxy`)."""
        return float(self._ask("delay"))

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._ask("delay", seconds)

    @property
    def counters(self) -> FaultCounters:
        """A copy of what the proxy counted so far."""
        counted: FaultCounters = self._ask("counters")
        return counted

    def reset_counters(self) -> FaultCounters:
        """Start counting afresh; returns what was counted so far."""
        counted: FaultCounters = self._ask("reset")
        return counted

    def start(self) -> FaultyProxyProcess:
        """Start the child and wait until its proxy listens."""
        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve_proxy, args=(theirs, *self._arguments), daemon=True,
            name="faulty-proxy",
        )  # fmt: skip
        self._process.start()
        theirs.close()
        if not self._pipe.poll(SOCKET_TIMEOUT):
            self.stop()
            raise RuntimeError("the proxy process did not start")
        self._url = self._pipe.recv()
        return self

    def stop(self) -> None:
        """Stop the proxy and wait for the child to end."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.send(("stop", None))
            self._pipe.close()
        if self._process is not None:
            self._process.join(timeout=SOCKET_TIMEOUT)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._pipe = self._process = None
        self._url = ""

    def __enter__(self) -> FaultyProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ask(self, command: str, value: Any = None) -> Any:
        if self._pipe is None:
            raise RuntimeError("proxy not started")
        self._pipe.send((command, value))
        return self._pipe.recv()


def _serve_proxy(pipe: Connection, upstream: str, plan: FaultPlan, delay: float) -> None:
    """The child of :class:`FaultyProxyProcess`: serve, and answer the parent until it says
    ``stop`` (or goes away)."""
    with FaultyProxy(upstream, plan, delay=delay) as proxy:
        pipe.send(proxy.url)
        while True:
            try:
                command, value = pipe.recv()
            except EOFError:
                return
            if command == "stop":
                return
            if command == "delay":
                if value is not None:
                    proxy.delay = float(value)
                pipe.send(proxy.delay)
            elif command == "counters":
                with proxy._lock:
                    pipe.send(proxy.counters)
            elif command == "reset":
                pipe.send(proxy.reset_counters())


class KillWorkerOnce(WorkerPlugin):
    """A ``distributed`` worker plugin: on the first worker where the ``after``-th task whose
    key starts with ``prefix`` reaches the worker state ``state`` —
    ``memory``: its result computed, its outputs written, the scheduler not yet told;
    ``long-running``: it stepped aside (``secede``) with its last writes and its ledger entry
    still to come — the process exits with status 1, once: ``marker`` is created first
    (exclusively: the task's key, then the worker's name), and a worker that finds it does
    nothing (the Nanny restarts the worker under the same name, and the scheduler installs
    this plugin on it again). Any worker, not a chosen one: which worker gets how many tasks
    is the scheduler's business (a worker held up loading compiled kernels may get only one).
    """

    name = "kill-worker-once"

    def __init__(self, prefix: str, after: int, marker: str, state: str = "memory") -> None:
        self.prefix, self.after, self.marker, self.state = prefix, after, marker, state
        self._armed = False
        self._finished = 0
        self._worker_name = ""

    def setup(self, worker: Any) -> None:
        self._armed = not os.path.exists(self.marker)
        self._finished = 0
        self._worker_name = str(worker.name)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not self._armed or finish != self.state or not str(key).startswith(self.prefix):
            return
        self._finished += 1
        if self._finished < self.after:
            return
        self._armed = False
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{key}\n{self._worker_name}\n".encode())
        os.close(fd)
        os._exit(1)


class RecordTransitions(WorkerPlugin):
    """A ``distributed`` worker plugin: appends the key of every task that reaches the worker
    state ``state`` (e.g. ``long-running``: the task stepped aside) as a line to the file
    ``path``, from every worker."""

    name = "record-transitions"

    def __init__(self, state: str, path: str) -> None:
        self.state, self.path = state, path

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == self.state:
            with open(self.path, "a") as lines:
                lines.write(f"{key}\n")
