"""Section 10: object storage at cloud latency (issue 13).

The tree: ``images`` Celantur images of 960x540 (:func:`~benchmarks.data.write_scene_tree`), each
an instance mask, a binary mask and a metadata JSON. It is uploaded once to moto's S3 server on
127.0.0.1 and read through :class:`tests.faulty_proxy.FaultyProxy` without faults, holding every
request for a fixed delay (0 / 20 / 40 / 80 ms): the round trip of a cloud store for small
objects. Server and proxy each run in a process of their own, so neither takes turns at the GIL
of this process, which holds the Dask scheduler and the run's client. Every run is
``run_celantur(SRC, OUT, mask_scale=50)`` (default ``encoding="auto"``: two passes, measured
rows parked on the output storage in between) with 2 workers, into a fresh output folder, and
is checked: exit code 0, one ``masks/`` row per mask file, the same rows per table as the local
run.

* *warm*: one ``LocalCluster`` of 2 workers started once and passed as ``client=`` (one untimed
  run of each kind first): at each latency the same run from local disk is timed right before
  the S3 run (so both see the same load on the machine), ``repeats`` times;
* *cold*, at 40 ms only: the run starts and stops its own cluster, as the CLI does
  (``mask-pipeline celantur ... --workers 2``); what the issue measured;
* *in-process*, at 40 ms only: ``scheduler="sync"``, what a run of this size does with default
  options (no cluster started below 1,000 files): two batches under way on threads when the
  storage is remote, one after another from local disk.

The table shows the medians, their ratio (target at 40 ms: at most 1.5x, goal 1.1x) and what the
proxy counted during the S3 runs: requests per input file by HTTP method (a listing is a GET;
deleting many objects is one POST), the client's requests included (listing, commit, clean-up).
A second table shows the CPU seconds each process spent per warm run (medians): the S3 stand-in
(moto's server), the proxy, the workers and this process (client and scheduler). On a machine of
few cores their sum, not the latency, bounds the S3 run's time. A third table shows the seconds
per phase of the run (as ``_run.json`` records them), local disk against S3: where latency adds
time.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from benchmarks.data import write_scene_tree
from benchmarks.endtoend import _local_client
from benchmarks.timing import BenchmarkError, format_ratio, print_table, ratio, seconds
from pipeline.api import run_celantur
from pipeline.config import SCHEDULER_ENV, ExecutionOptions
from pipeline.runner import RunResult

WIDTH, HEIGHT = 960, 540
LATENCIES_MS = (0, 20, 40, 80)
#: Issue 13: at 40 ms per request, a run from S3 takes at most this times the run from disk.
TARGET_RATIO, GOAL_RATIO, TARGET_LATENCY_MS = 1.5, 1.1, 40
WORKERS = 2
MASK_SCALE = 50
BUCKET = "mask-bench"
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")
#: The phases a run records in ``_run.json`` (``timings``), in order.
PHASES = ("list", "plan", "pass1", "pass2", "assemble", "commit")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _moto_server() -> Iterator[str]:
    """:func:`_moto_process`'s endpoint URL."""
    with _moto_process() as (endpoint, _):
        yield endpoint


@contextmanager
def _moto_process() -> Iterator[tuple[str, int]]:
    """moto's S3 server in a process of its own on a free loopback port (its CPU per request
    then competes with the workers for cores, as it must, but not for this process's GIL with
    the Dask scheduler): its endpoint URL and process id, with dummy credentials in the
    environment (which the cluster's workers inherit); real AWS configuration is hidden
    meanwhile."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
    for name in saved:
        os.environ.pop(name)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench-key-id", AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true",
    )  # fmt: skip
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise BenchmarkError("moto's S3 server did not start") from None
                time.sleep(0.2)
        yield endpoint, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            os.environ.pop(name)
        os.environ.update(saved)


def _upload(local: Path, files: list[str], endpoint: str) -> None:
    import s3fs

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir(BUCKET)
    fs.pipe({f"{BUCKET}/in/{rel}": (local / rel).read_bytes() for rel in files})


def _table_rows(result: RunResult) -> dict[str, int]:
    return {table: info["rows"] for table, info in result.record["tables"].items()}


def _cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) each named group of processes has spent so far."""
    spent = {}
    for name, group in pids.items():
        times = [psutil.Process(pid).cpu_times() for pid in group]
        spent[name] = sum(t.user + t.system for t in times)
    return spent


def run(scratch: Path, *, images: int, seed: int, repeats: int) -> dict[str, Any]:
    """Generate and upload the tree, time local and S3 runs at each latency, print the table.

    Side effects: removes ``DASK_SCHEDULER_ADDRESS`` from this process's environment (the runs
    use their own cluster); sets dummy ``AWS_*`` variables for the section's duration.
    """
    from tests.faulty_proxy import FaultPlan, FaultyProxyProcess

    os.environ.pop(SCHEDULER_ENV, None)
    source = scratch / "storage-tree"
    generate_s, files = seconds(
        lambda: write_scene_tree(source, images=images, seed=seed, width=WIDTH, height=HEIGHT)
    )
    masks = sum(rel.endswith(".png") for rel in files)
    outputs = iter(range(1_000_000))
    figures: dict[str, Any] = {"tree": {"images": images, "files": len(files), "masks": masks,
                                        "bytes": sum((source / r).stat().st_size for r in files),
                                        "generate_s": generate_s}}  # fmt: skip
    with (
        _moto_process() as (endpoint, server_pid),
        FaultyProxyProcess(endpoint, FaultPlan(rate=0.0)) as proxy,
        _local_client(WORKERS) as client,
    ):
        _upload(source, files, endpoint)
        storage = {"endpoint_url": proxy.url}
        expected: dict[str, int] = {}
        processes = {
            "s3": [server_pid], "proxy": [proxy.pid],
            "workers": sorted(client.run(os.getpid).values()), "client": [os.getpid()],
        }  # fmt: skip

        def one(kind: str, mode: str = "warm") -> tuple[float, RunResult, dict[str, float]]:
            n = next(outputs)
            src, out, options = (
                (str(source), str(scratch / f"storage-out-{n}"), {}) if kind == "local"
                else (f"s3://{BUCKET}/in", f"s3://{BUCKET}/out-{n}", storage)
            )  # fmt: skip
            execution = ExecutionOptions(
                workers=WORKERS if mode == "cold" else None,
                scheduler="sync" if mode == "in-process" else None, progress=False,
            )  # fmt: skip
            before = _cpu_seconds(processes)
            elapsed, result = seconds(
                lambda: run_celantur(
                    src, out, mask_scale=MASK_SCALE, storage_options=options,
                    execution=execution, client=client if mode == "warm" else None,
                )
            )  # fmt: skip
            cpu = {name: t - before[name] for name, t in _cpu_seconds(processes).items()}
            rows = _table_rows(result)
            if result.exit_code != 0 or rows["masks"] != masks or rows != expected.get(kind, rows):
                raise BenchmarkError(
                    f"storage run {kind} {n}: exit code {result.exit_code}, rows {rows}"
                )
            expected.setdefault(kind, rows)
            return elapsed, result, cpu

        one("local")
        one("s3")  # warm-up: imports, numba caches, connection pools
        if expected["local"] != expected["s3"]:
            raise BenchmarkError(f"S3 rows {expected['s3']} != local rows {expected['local']}")

        def pair(count: int, mode: str) -> dict[str, Any]:
            local_s: list[float] = []
            s3_s: list[float] = []
            cpu: dict[str, list[dict[str, float]]] = {"local": [], "s3": []}
            phases: dict[str, list[dict[str, float]]] = {"local": [], "s3": []}
            methods: Counter[str] = Counter()
            for _ in range(count):
                elapsed, result, spent = one("local", mode)
                local_s.append(elapsed)
                cpu["local"].append(spent)
                phases["local"].append(result.record["timings"])
                proxy.reset_counters()
                elapsed, result, spent = one("s3", mode)
                s3_s.append(elapsed)
                cpu["s3"].append(spent)
                phases["s3"].append(result.record["timings"])
                methods += proxy.counters.methods
            per_run = {m: n / count for m, n in methods.items()}
            return {
                "local_s": statistics.median(local_s), "s3_s": statistics.median(s3_s),
                "local_s_all": local_s, "s3_s_all": s3_s,
                "ratio": ratio(statistics.median(s3_s), statistics.median(local_s)),
                "requests_per_run": per_run,
                "requests_per_input": {m: n / len(files) for m, n in per_run.items()},
                # Seconds per phase of the run (median), as the run records them.
                "phases_s": {
                    kind: {name: statistics.median(run.get(name, 0.0) for run in runs)
                           for name in PHASES}
                    for kind, runs in phases.items()
                },
                # CPU seconds per run (median); only a warm run's workers are these processes.
                "cpu_s": {
                    kind: {name: statistics.median(run[name] for run in runs)
                           for name in processes if mode == "warm" or name != "workers"}
                    for kind, runs in cpu.items()
                },
            }  # fmt: skip

        by_latency: dict[str, dict[str, Any]] = {}
        for latency in LATENCIES_MS:
            proxy.delay = latency / 1000.0
            by_latency[f"{latency} ms, warm"] = pair(repeats, "warm")
        proxy.delay = TARGET_LATENCY_MS / 1000.0
        by_latency[f"{TARGET_LATENCY_MS} ms, cold"] = pair(1, "cold")
        by_latency[f"{TARGET_LATENCY_MS} ms, in-process"] = pair(repeats, "in-process")
    figures["runs"] = by_latency
    _print(figures, images, len(files), repeats)
    return figures


def _print(figures: dict[str, Any], images: int, inputs: int, repeats: int) -> None:
    rows = []
    for label, f in figures["runs"].items():
        per_input = f["requests_per_input"]
        others = sum(v for m, v in per_input.items() if m not in METHODS)
        rows.append(
            [label, f"{f['local_s']:.2f}",
             f"{f['s3_s']:.2f}", format_ratio(f["ratio"]),
             *(f"{per_input.get(m, 0.0):.2f}" for m in METHODS), f"{others:.2f}",
             f"{sum(per_input.values()):.2f}"]
        )  # fmt: skip
    print_table(
        f"10. Object storage: {images} images of {WIDTH}x{HEIGHT} = {inputs} input files "
        f"(instance + binary mask + metadata JSON), mask_scale={MASK_SCALE}, {WORKERS} "
        f"workers; moto S3 behind a proxy holding each request for the latency "
        f"(warm: median of {repeats}; cold: one run, cluster start included; in-process: "
        f"median of {repeats}, no cluster)",
        ["latency, cluster", "local disk s", "S3 s", "S3 / local",
         *(f"{m}/input" for m in METHODS), "other/input", "all/input"],
        rows,
    )  # fmt: skip
    for kind in ("warm", "cold", "in-process"):
        label = f"{TARGET_LATENCY_MS} ms, {kind}"
        value = figures["runs"][label]["ratio"]
        verdict = (
            "goal met" if value <= GOAL_RATIO else "met" if value <= TARGET_RATIO else "not met"
        )
        print(
            f"   at {TARGET_LATENCY_MS} ms, {kind}: S3 / local {format_ratio(value)} (target "
            f"<= {TARGET_RATIO}x, goal {GOAL_RATIO}x): {verdict}"
        )
    print(
        "   requests per input include the writes (rescaled masks, table parts, parked rows, "
        "ledger entries) and the client's (listing, commit, clean-up)"
    )
    rows = []
    for label, f in figures["runs"].items():
        local, s3 = f["cpu_s"]["local"], f["cpu_s"]["s3"]
        cells = [label]
        cells += [_cpu_cell(local, "workers"), _cpu_cell(local, "client"),
                  f"{f['local_s']:.2f}"]  # fmt: skip
        cells += [_cpu_cell(s3, name) for name in ("s3", "proxy", "workers", "client")]
        cells += [f"{sum(s3.values()):.2f}", f"{f['s3_s']:.2f}"]
        rows.append(cells)
    print_table(
        "10b. CPU seconds per run (medians) by process: local disk, and S3 (moto's server, the "
        "latency proxy, the 2 workers, this process = client + Dask scheduler); cold runs start "
        "their own workers, not counted; in-process runs have none",
        ["latency, cluster", "local: workers", "local: client", "local wall s",
         "S3: server", "S3: proxy", "S3: workers", "S3: client", "S3: CPU sum", "S3 wall s"],
        rows,
    )  # fmt: skip
    rows = []
    for label, f in figures["runs"].items():
        local, s3 = f["phases_s"]["local"], f["phases_s"]["s3"]
        rows.append(
            [label, *(f"{local[name]:.2f}/{s3[name]:.2f}" for name in PHASES)]
        )  # fmt: skip
    print_table(
        "10c. Seconds per phase of a run (medians), local disk / S3: where latency adds time "
        "(pass 1: the batches; assemble: staged parts into data files; commit: the Delta "
        "commits and _run.json)",
        ["latency, cluster", *PHASES],
        rows,
    )


def _cpu_cell(spent: dict[str, float], name: str) -> str:
    return f"{spent[name]:.2f}" if name in spent else "-"
