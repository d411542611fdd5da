"""Section 6: issue 7.2's targets on 1080p production-like masks.

The tree (:func:`write_fullhd_tree`): ``images`` Celantur images of 1920x1080, each a different
:func:`~benchmarks.data.celantur_scene` (45 colours), with its binary mask and metadata JSON
(one detection per instance, colours given), in four camera folders. Every run is
``run_celantur(tree, out, encoding="v26", mask_scale=50)`` into a fresh folder, checked (exit
code 0, one ``masks/`` row per mask file, no error rows).

Targets:

* end to end with ``scheduler="sync"`` at most :data:`TARGET_SYNC_VS_DECODE` times the sum of
  standalone ``pyspng.load`` decodes of the same PNG files (instance and binary masks);
* a warm ``LocalCluster`` (started once, passed as ``client=``, one untimed run first) of 2
  workers at least :data:`TARGET_SPEEDUP` times as fast as one of 1 worker (issue 16), on this
  tree and on a larger one of ``scaling_images`` images (a scheduled job of several hundred
  masks, a few seconds per run). Both clusters stay open together and the runs take turns
  (1 worker, 2 workers, tree after tree), so load from elsewhere hits both alike.

When a target is not met the verdict names the bound. For the decode ratio: the standalone parts
of a run (section 3b's loops over this tree) and what the run adds around them, largest first.
For the speed-up, the task stream of each timed cluster run splits the 2-worker run's time beyond
half the 1-worker run's (``wall2 - wall1 / 2``) into: the time outside tasks that does not
shrink (``outside2 - outside1 / 2``, where ``outside`` = wall minus the busiest worker's task
time: listing, planning, scheduling, commit), the imbalance between the workers (busiest worker
minus the mean) and the inflation of the task time itself (``(tasks2 - tasks1) / 2``, e.g. two
workers, the client and the scheduler sharing two cores). Beside the task stream, the CPU time of
every process of each timed run (psutil): the workers' task threads, the rest of the workers
(event loop: messages, heartbeats, monitors) and this process (client and scheduler, listing,
planning, merging summaries, commit). CPU time is what a loaded machine inflates least, and on
two cores whatever is not task CPU in a 2-worker run is taken from the tasks. When the decode
target is not met, a
cProfile of one more sync run gives the cumulative time of the run's steps; and a machine check
times the reference decode loop in two processes at once against one alone (no dask).
"""

from __future__ import annotations

import contextlib
import cProfile
import itertools
import multiprocessing
import os
import pstats
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.data import write_scene_tree
from benchmarks.endtoend import NOT_IN_RUN, SPNG, _local_client, _Runner, _time_parts
from benchmarks.timing import (
    BenchmarkError,
    format_ms,
    format_ratio,
    print_table,
    ratio,
    seconds,
    speedup_split,
    stream_figures,
)
from pipeline.api import run_celantur
from pipeline.config import ExecutionOptions
from pipeline.runner import RunResult

#: Issue 7.2: sync end to end / sum of the fastest standalone decodes of the same files.
TARGET_SYNC_VS_DECODE = 1.3
#: Issue 16 (was 1.8 in issue 7.2): warm 2-worker speed over 1 worker.
TARGET_SPEEDUP = 1.85
WIDTH, HEIGHT = 1920, 1080
ENCODING = "v26"

SYNC = "sync, mask_scale=50"
SMALL, LARGE = "this tree", "the larger tree"
SYNC_UNSCALED = "sync, no rescaled masks"


def write_fullhd_tree(root: Path, *, images: int, seed: int) -> list[str]:
    """Write the section's tree; returns every written path relative to ``root``."""
    return write_scene_tree(root, images=images, seed=seed, width=WIDTH, height=HEIGHT)


def _checked(result: RunResult, label: str) -> None:
    errors = result.record["tables"]["errors"]["rows"]
    if errors:
        raise BenchmarkError(f"{label}: {errors} error rows on inputs written to be clean")


def _cpu_of(client: Any) -> dict[str, float]:
    """CPU seconds so far: this process (client and scheduler), the workers' task threads and
    the rest of the workers (event loop and other threads)."""
    import psutil

    def worker_threads() -> tuple[float, float]:
        # Defined here, so it travels to the workers by value.
        import threading

        import psutil

        names = {t.native_id: t.name for t in threading.enumerate()}
        tasks = other = 0.0
        for thread in psutil.Process().threads():
            spent = thread.user_time + thread.system_time
            if "Dask-Default-Threads" in names.get(thread.id, ""):
                tasks += spent
            else:
                other += spent
        return tasks, other

    per_worker = client.run(worker_threads).values()
    own = psutil.Process().cpu_times()
    return {
        "task_threads": sum(tasks for tasks, _ in per_worker),
        "workers_other": sum(other for _, other in per_worker),
        "client_and_scheduler": own.user + own.system,
    }


def _cluster_runs(runners: dict[str, _Runner], repeats: int) -> dict[int, dict[str, Any]]:
    """Warm runs of every tree on a cluster of 1 and one of 2 workers, both started once and
    open together, so that the runs they are compared by take turns (1 then 2 workers, tree
    after tree) and a burst of load from elsewhere on the machine hits both alike; task stream
    and CPU of every timed run, per cluster and tree. (The cluster not running costs its idle
    ticks, a few ms of CPU a second, billed to this process.)"""
    from distributed import get_task_stream

    runs: dict[int, dict[str, list[dict[str, Any]]]] = {1: {}, 2: {}}
    with contextlib.ExitStack() as stack:
        clients = {workers: stack.enter_context(_local_client(workers)) for workers in runs}
        for (workers, client), (label, runner) in itertools.product(
            clients.items(), runners.items()
        ):
            _checked(runner(ExecutionOptions(progress=False), client=client, encoding=ENCODING)[1],
                     f"{workers} worker(s) warm-up, {label}")  # fmt: skip
        for _, (label, runner), (workers, client) in itertools.product(
            range(repeats), runners.items(), clients.items()
        ):
            before = _cpu_of(client)
            with get_task_stream(client=client) as stream:
                elapsed, result = runner(
                    ExecutionOptions(progress=False), client=client, encoding=ENCODING
                )
            after = _cpu_of(client)
            _checked(result, f"{workers} worker(s), {label}")
            runs[workers].setdefault(label, []).append({
                "wall_s": elapsed, "phases_s": result.record["timings"],
                "cpu_s": {k: after[k] - before[k] for k in after},
                "task_stream": stream_figures(stream.data, elapsed, workers),
            })  # fmt: skip
    return {
        workers: {label: _cluster_summary(workers, runners[label].masks, rows)
                  for label, rows in by_tree.items()}
        for workers, by_tree in runs.items()
    }  # fmt: skip


def _cluster_summary(workers: int, masks: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [row["wall_s"] for row in rows]
    median = statistics.median(walls)
    # The run whose wall time is the median (or closest above it) gives the task stream.
    chosen = rows[min(range(len(walls)), key=lambda i: (walls[i] < median, walls[i]))]
    cpu = {k: statistics.median(row["cpu_s"][k] for row in rows) for k in rows[0]["cpu_s"]}
    phases = {k: statistics.median(row["phases_s"].get(k, 0.0) for row in rows)
              for k in rows[0]["phases_s"]}  # fmt: skip
    return {
        "workers": workers, "runs": len(walls), "wall_s": median, "wall_s_all": walls,
        "ms_per_mask": median * 1000.0 / masks, "masks_per_s": masks / median,
        "masks": masks, "phases_s": phases, "cpu_s": cpu,
        "task_stream": chosen["task_stream"], "task_streams": [r["task_stream"] for r in rows],
    }  # fmt: skip


def _accounting_row(label: str, r: dict[str, Any]) -> list[str]:
    phases, cpu, stream = r["phases_s"], r["cpu_s"], r["task_stream"]
    figures = [
        r["wall_s"], phases.get("list", 0.0) + phases.get("plan", 0.0),
        phases.get("pass1", 0.0) + phases.get("pass2", 0.0), phases.get("assemble", 0.0),
        phases.get("commit", 0.0), stream["task_s"], stream["busiest_worker_s"],
        cpu["task_threads"], cpu["workers_other"], cpu["client_and_scheduler"],
    ]  # fmt: skip
    return [label, *(f"{value:.3f}" for value in figures)]


def _speedup_verdict(tree: str, one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """Print the 2-vs-1 speed-up of one tree against the target and, when missed, the bound;
    returns the figures."""
    speedup = ratio(one["wall_s"], two["wall_s"])
    split = speedup_split(one["task_stream"], two["task_stream"])
    met = speedup >= TARGET_SPEEDUP
    print(f"   target: warm 2-worker / 1-worker speed-up >= {TARGET_SPEEDUP}x, {tree}: "
          f"{format_ratio(speedup)}, {'met' if met else 'not met'}")  # fmt: skip
    # On two cores every CPU second that is not a task's in the 2-worker run is taken from the
    # tasks: the client and scheduler, the workers' event loops.
    overhead = two["cpu_s"]["workers_other"] + two["cpu_s"]["client_and_scheduler"]
    share = ratio(overhead, overhead + two["cpu_s"]["task_threads"])
    if not met:
        lost = two["wall_s"] - one["wall_s"] / 2
        largest = max(split, key=lambda k: split[k])
        parts = ", ".join(f"{k} {v * 1000:,.0f} ms" for k, v in split.items())
        print(f"     (bound: {largest}; the 2-worker run takes {lost * 1000:,.0f} ms more than "
              f"half the 1-worker run: {parts}; CPU outside the tasks in the 2-worker run: "
              f"{overhead * 1000:,.0f} ms = {share:.0%} of its CPU)")  # fmt: skip
    return {"value": speedup, "target_min": TARGET_SPEEDUP, "met": met, "lost_s_split": split,
            "cpu_outside_tasks_s": overhead, "cpu_outside_tasks_share": share}  # fmt: skip


def _decode_bound(part_ms: dict[str, float], sync_ms: float) -> list[tuple[str, float]]:
    """What a sync run spends, per mask, part by part, largest first (the reference decode
    and the standard path left out: a run does neither)."""
    beyond = {label: value for label, value in part_ms.items() if label not in NOT_IN_RUN}
    beyond["the run around its parts (metadata, matching, Parquet, fsspec, commit)"] = (
        sync_ms - sum(beyond.values())
    )
    return sorted(beyond.items(), key=lambda item: -item[1])


#: Steps of a run whose cumulative time the profile of a sync run reports: (file, function,
#: label); labels starting with spaces are part of the step above them.
RUN_STEPS = (
    ("pipeline/runner.py", "_list_inputs", "listing the inputs"),
    ("pipeline/stages/celantur.py", "_measured_png", "read + measure (instance and binary masks)"),
    ("pipeline/stages/measure.py", "_fused_instance", "  of which fused instance masks"),
    ("pipeline/stages/measure.py", "_fused_binary", "  of which fused binary masks"),
    ("pipeline/io/png.py", "encode_filtered_png", "  of which encoding rescaled masks"),
    ("pipeline/stages/celantur.py", "_write_scaled", "writing rescaled masks"),
    ("pipeline/stages/celantur.py", "_measure_metadata", "metadata: JSON, rows, candidates"),
    ("pipeline/stages/celantur.py", "finish_batch", "finish_batch: types, matching, Parquet"),
    ("pipeline/kernels/matching.py", "match_detections", "  of which match_detections"),
    ("pipeline/io/parquet.py", "write_bundle", "  of which staged bundles (serialise, write)"),
    ("pipeline/stages/ledger.py", "save_entry", "ledger entries"),
    ("pipeline/runner.py", "_commit", "commit: summary, empty parts, _run.json"),
)
_RUN = ("pipeline/runner.py", "run_celantur")


def _profile_run(source: Path, output: Path, masks: int) -> dict[str, float]:
    """cProfile of one sync run: cumulative ms per mask of :data:`RUN_STEPS`, of the whole run
    and of what no step covers."""
    profiler = cProfile.Profile()
    sync = ExecutionOptions(scheduler="sync", progress=False)
    profiler.runcall(
        run_celantur, str(source), str(output), execution=sync, encoding=ENCODING, mask_scale=50
    )
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative_ms(file: str, function: str) -> float:
        seconds_ = sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == function)
        return seconds_ * 1000.0 / masks

    steps = {label: cumulative_ms(file, function) for file, function, label in RUN_STEPS}
    whole = cumulative_ms(*_RUN)
    steps["everything else in the run"] = whole - sum(
        value for label, value in steps.items() if not label.startswith(" ")
    )
    steps["whole run under the profiler"] = whole
    return steps


def _decode_loop(paths: list[str]) -> tuple[int, float]:
    """``pyspng.load`` of every file once: (process id, seconds), bytes read beforehand."""
    import pyspng

    data = [Path(path).read_bytes() for path in paths]
    start = time.perf_counter()
    for payload in data:
        pyspng.load(payload)
    return os.getpid(), time.perf_counter() - start


def _parallel_ceiling(paths: list[str], repeats: int) -> dict[str, Any]:
    """The machine's own limit for two workers: the reference decode loop in one process alone,
    then in two processes at once (no dask); ``inflation`` = together / alone."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_decode_loop, [paths[:2], paths[:2]], chunksize=1)  # both processes started
        alone = [pool.apply(_decode_loop, (paths,))[1] for _ in range(repeats)]
        together = [pool.map(_decode_loop, [paths, paths], chunksize=1) for _ in range(repeats)]
    rounds = [statistics.mean(seconds_ for _, seconds_ in pair) for pair in together]
    return {
        "alone_s": statistics.median(alone),
        "together_s": statistics.median(rounds),
        "inflation": ratio(statistics.median(rounds), statistics.median(alone)),
        "distinct_processes": all(len({pid for pid, _ in pair}) == 2 for pair in together),
    }


def run(
    scratch: Path, *, images: int, scaling_images: int, seed: int, repeats: int
) -> dict[str, Any]:
    """Write the 1080p trees, time the runs and the standalone parts, print the verdicts."""
    source = scratch / "fullhd"
    runs_folder = scratch / "fullhd-runs"
    runs_folder.mkdir()
    generate_s, files = seconds(partial(write_fullhd_tree, source, images=images, seed=seed))
    pngs = [rel for rel in files if rel.endswith(".png")]
    masks = len(pngs)
    png_bytes = sum((source / rel).stat().st_size for rel in pngs)
    runner = _Runner(source, runs_folder, masks, 50)
    unscaled = _Runner(source, runs_folder / "unscaled", masks, None)  # type: ignore[arg-type]
    sync = ExecutionOptions(scheduler="sync", progress=False)

    def sync_runs(which: _Runner, count: int) -> dict[str, Any]:
        times = []
        for _ in range(count):
            elapsed, result = which(sync, encoding=ENCODING)
            _checked(result, "sync run")
            times.append(elapsed)
        wall = statistics.median(times)
        return {"runs": count, "wall_s": wall, "wall_s_all": times,
                "ms_per_mask": wall * 1000.0 / masks}  # fmt: skip

    _checked(runner(sync, encoding=ENCODING)[1], "sync warm-up")  # numba, Parquet, page cache
    runs = {SYNC: sync_runs(runner, repeats)}
    runs[SYNC_UNSCALED] = sync_runs(unscaled, max(1, repeats - 1))
    part_ms = _time_parts(source, pngs, runs_folder, 50, repeats)
    large = scratch / "fullhd-large"
    large_masks = sum(
        rel.endswith(".png")
        for rel in write_fullhd_tree(large, images=scaling_images, seed=seed + 1)
    )
    trees = {SMALL: runner, LARGE: _Runner(large, runs_folder / "large", large_masks, 50)}
    by_workers = _cluster_runs(trees, repeats)
    cluster = {workers: by_tree[SMALL] for workers, by_tree in by_workers.items()}
    large_cluster = {workers: by_tree[LARGE] for workers, by_tree in by_workers.items()}
    ceiling = _parallel_ceiling([str(source / rel) for rel in pngs], repeats)

    spng_ms = part_ms[SPNG]

    def row(label: str, wall_s: float, ms_per_mask: float, count: int) -> list[str]:
        return [label, format_ms(wall_s * 1000.0), format_ms(ms_per_mask), str(count),
                format_ratio(ratio(ms_per_mask, spng_ms))]  # fmt: skip

    rows = [row(label, r["wall_s"], r["ms_per_mask"], r["runs"]) for label, r in runs.items()]
    for workers, r in cluster.items():
        label = f"{workers} worker(s), warm LocalCluster ({r['task_stream']['tasks']} tasks)"
        rows.append(row(label, r["wall_s"], r["ms_per_mask"], r["runs"]))
    rows.append(row(f"pyspng.load of all {masks} files (reference)", spng_ms * masks / 1000.0,
                    spng_ms, repeats))  # fmt: skip
    print_table(
        f"6. 1080p targets (issue 7.2): run_celantur over {images} images of {WIDTH}x{HEIGHT} = "
        f"{masks} masks ({png_bytes / 1024:,.0f} KiB of PNG), encoding={ENCODING} (median of runs)",
        ["run", "wall ms", "ms/mask", "runs", "/ pyspng decodes"],
        rows,
    )
    rows = [[label, format_ms(value), format_ratio(ratio(value, spng_ms))]
            for label, value in part_ms.items()]  # fmt: skip
    print_table(
        f"6b. Where a 1080p mask's time goes: standalone loops over the same {masks} files "
        f"(mean ms per mask, median of {repeats} loops)",
        ["part", "ms/mask", "/ pyspng decode"],
        rows,
    )

    sync_ratio = ratio(runs[SYNC]["ms_per_mask"], spng_ms)
    unscaled_ratio = ratio(runs[SYNC_UNSCALED]["ms_per_mask"], spng_ms)
    beyond = _decode_bound(part_ms, runs[SYNC]["ms_per_mask"])
    decode_met = sync_ratio <= TARGET_SYNC_VS_DECODE
    profile: dict[str, float] = {}
    if not decode_met:
        profile = _profile_run(source, runs_folder / "profiled", masks)
        rows = [[label, format_ms(value), format_ratio(ratio(value, spng_ms))]
                for label, value in profile.items()]  # fmt: skip
        print_table(
            "6c. cProfile of one sync run, mask_scale=50: cumulative time of its steps (ms per "
            "mask; the profiler inflates Python-heavy steps)",
            ["step", "ms/mask", "/ pyspng decode"],
            rows,
        )
    trees_described = {
        SMALL: f"{images} images = {masks} masks",
        LARGE: f"{scaling_images} images = {large_masks} masks",
    }
    print_table(
        "6d. 2 workers vs 1, warm LocalCluster, per run (medians; seconds): phases of the run "
        "record, task time of the task stream, CPU time per process (psutil)",
        ["tree, workers", "wall", "list+plan", "passes", "assemble", "commit", "task time",
         "busiest", "task CPU", "workers' other CPU", "client+scheduler CPU"],
        [_accounting_row(f"{trees_described[label]}, {workers}", r)
         for label, by_tree in ((SMALL, cluster), (LARGE, large_cluster))
         for workers, r in by_tree.items()],
    )  # fmt: skip

    print(f"   target: sync end to end <= {TARGET_SYNC_VS_DECODE}x the pyspng decodes: "
          f"{format_ratio(sync_ratio)}, {'met' if decode_met else 'not met'}")  # fmt: skip
    if not decode_met:
        largest = "; ".join(
            f"{label} {format_ms(value)} ms = {format_ratio(ratio(value, spng_ms))}"
            for label, value in beyond[:3]
        )
        print(f"     (bound: beyond the decode, per mask: {largest}; "
              f"without rescaled masks the run is {format_ratio(unscaled_ratio)})")  # fmt: skip
    speedups = {label: _speedup_verdict(trees_described[label], by_tree[1], by_tree[2])
                for label, by_tree in ((SMALL, cluster), (LARGE, large_cluster))}  # fmt: skip
    print(f"   machine check: two processes running the pyspng decode loop at once (no dask) "
          f"take {format_ratio(ceiling['inflation'])} the time of one alone")  # fmt: skip
    return {
        "tree": {"images": images, "masks": masks, "width": WIDTH, "height": HEIGHT,
                 "png_bytes": png_bytes, "generate_s": generate_s, "seed": seed},
        "encoding": ENCODING, "mask_scale": 50,
        "runs": runs,
        "clusters": {str(w): r for w, r in cluster.items()},
        "clusters_larger_tree": {str(w): r for w, r in large_cluster.items()},
        "standalone_ms_per_mask": part_ms,
        "profiled_sync_run_ms_per_mask": profile,
        "targets": {
            "sync_vs_pyspng_decodes": {
                "value": sync_ratio, "target_max": TARGET_SYNC_VS_DECODE, "met": decode_met,
                "unscaled_value": unscaled_ratio, "beyond_decode_ms_per_mask": dict(beyond),
            },
            "speedup_2_vs_1_workers": {
                **speedups[SMALL], "machine_parallel_decode": ceiling,
            },
            "speedup_2_vs_1_workers_larger_tree": {
                **speedups[LARGE], "images": scaling_images, "masks": large_masks,
            },
        },
    }  # fmt: skip
