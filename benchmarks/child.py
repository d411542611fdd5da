"""Runs measured in a child process, for their peak memory: ``python -m benchmarks.child SPEC``.

The peak is the child's own ``VmHWM`` from ``/proc/self/status`` (the most resident memory it
ever held). ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` would not do: a forked child
starts with its parent's pages, and the figure then reports the benchmark process's own peak.

``SPEC`` is a JSON object:

* ``{"mode": "baseline", "imports": [...]}`` imports the modules and reports;
* ``{"mode": "celantur", "source": ..., "output": ..., "options": {...}, "workers": N or null,
  "warmup": [source, output] or null}`` imports ``pipeline.api``; with ``workers`` starts a
  ``LocalCluster`` of N single-threaded worker processes and hands its client to the runs, else
  runs with ``scheduler="sync"`` in this process; runs the warm-up first when given (the
  workers' imports, numba cache loads, first Parquet writes); then resets the peak (``5`` to
  ``/proc/self/clear_refs``) and times ``run_celantur(source, output, **options)``.

The child prints one JSON line: ``VmHWM``/``VmRSS`` in KiB at each step, the run's wall time and
the parts of its ``_run.json`` the benchmark reads; with a cluster, also the task stream of the
timed run (:func:`stream_figures`). With a cluster, only this process (client and the in-process
scheduler of ``LocalCluster``) is measured, not the worker processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

from benchmarks.timing import stream_figures

_REPOSITORY = Path(__file__).resolve().parent.parent


def status_kib() -> dict[str, int]:
    """``VmHWM`` and ``VmRSS`` of this process, in KiB (empty where ``/proc`` is missing)."""
    figures: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    figures[key] = int(value.split()[0])
    except OSError:
        pass
    return figures


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def spawn(spec: dict[str, Any], *, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python -m benchmarks.child`` with ``spec``; its report, or RuntimeError."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPOSITORY), env.get("PYTHONPATH", "")) if p
    )
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark child {spec.get('mode')} failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}"
        )
    return dict(json.loads(lines[-1]))


def _celantur(spec: dict[str, Any], report: dict[str, Any]) -> None:
    from pipeline.api import run_celantur
    from pipeline.config import ExecutionOptions

    report["imported"] = status_kib()
    options = dict(spec.get("options") or {})
    with ExitStack() as stack:
        client = None
        if spec.get("workers"):
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=int(spec["workers"]), threads_per_worker=1, processes=True,
                    dashboard_address="127.0.0.1:0", host="127.0.0.1",
                )
            )  # fmt: skip
            client = stack.enter_context(Client(cluster))
            execution = ExecutionOptions(progress=False)
            report["cluster_started"] = status_kib()
        else:
            execution = ExecutionOptions(scheduler="sync", progress=False)
        if spec.get("warmup"):
            source, output = spec["warmup"]
            warm = run_celantur(source, output, client=client, execution=execution, **options)
            report["warmup_exit_code"] = warm.exit_code
            report["warmed"] = status_kib()
        if client is not None:
            from distributed import get_task_stream

            stream: Any = get_task_stream(client=client)
        else:
            stream = nullcontext()
        report["peak_reset"] = reset_peak()
        report["before_run"] = status_kib()
        with stream as tasks:
            start = time.perf_counter()
            result = run_celantur(
                spec["source"], spec["output"], client=client, execution=execution, **options
            )
            report["wall_s"] = time.perf_counter() - start
        report["after_run"] = status_kib()
        if tasks is not None:
            report["task_stream"] = stream_figures(
                tasks.data, report["wall_s"], int(spec["workers"])
            )
    record = result.record
    report["record"] = {
        key: record[key] for key in ("inputs", "accounting", "work", "timings", "exit_code")
    }
    report["record"]["rows"] = {table: info["rows"] for table, info in record["tables"].items()}
    report["exit_code"] = result.exit_code


def main(argv: list[str]) -> int:
    """Run the spec in ``argv[0]`` and print the report as one JSON line."""
    spec = json.loads(argv[0])
    report: dict[str, Any] = {"mode": spec["mode"], "start": status_kib()}
    if spec["mode"] == "baseline":
        for name in spec.get("imports", ["pipeline"]):
            __import__(name)
    elif spec["mode"] == "celantur":
        _celantur(spec, report)
    else:
        raise ValueError(f"unknown mode {spec['mode']!r}")
    report["end"] = status_kib()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":  # guarded: cluster workers re-import the main module when spawned
    raise SystemExit(main(sys.argv[1:]))
