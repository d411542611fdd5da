"""Section 8: a large collection of tiny masks (issue 4.4): graph size, client memory, rate.

The tree (:func:`write_tiny_tree`): ``masks`` instance masks of 8x8 or 16x16 pixels with one or
two v26 segments, in nested folders of 1,000 files (``site-NN/cam-N/``), plus a few video
chunks (two videos, section 5's dense chunks). Only :data:`DISTINCT` different masks are
encoded; each file gets one of them, written with ``os.write`` on local disk under the
benchmark's temporary folder.

Each configuration runs ``run_celantur(tree, out, encoding="v26")`` (no rescaled masks: the
figures are about per-file and per-task costs) in a child process (``benchmarks.child``) on a
``LocalCluster`` of 1 or 2 single-threaded workers started by the child, after a warm-up run over a
small tree of the same kind (the workers' imports and numba cache loads are not timed). Figures:

* tasks in the graph: ``inputs.batches`` (pass 1) and ``work.done`` (all passes) of the run's
  ``_run.json``, and ``work.done`` extrapolated linearly to 1,000,000 masks (an upper bound:
  batches are cut by bytes, so they grow more slowly than the file count), against
  :data:`TARGET_TASKS_PER_MILLION`;
* the client's memory: the child's peak (``VmHWM``: client and ``LocalCluster``'s in-process
  scheduler, not the workers) minus a baseline child that only imports ``pipeline`` and
  ``distributed``, and the growth during the timed run alone (peak since a reset just before it
  minus the resident memory then);
* masks per second (the run's wall time, listing to commit) and the 2-worker speed-up;
* planning time, listing + grouping and batching (``timings.list`` + ``timings.plan`` of
  ``_run.json``), per 100,000 files.

Every run must put every mask in ``masks/``, every segment in ``instances/`` and give exit code 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.child import spawn
from benchmarks.timing import (
    BenchmarkError,
    format_ratio,
    print_table,
    ratio,
    seconds,
    speedup_split,
)
from benchmarks.video import write_dense_chunks
from pipeline.formats.celantur import V26_FLAGS
from pipeline.io.png import encode_png

#: Different mask contents encoded; files cycle through them.
DISTINCT = 64
#: Files per leaf folder.
PER_FOLDER = 1_000
#: The graph should stay below this many tasks for a million masks.
TARGET_TASKS_PER_MILLION = 10_000
VIDEOS = 2
_FLAGS = tuple(V26_FLAGS.values())  # four flags


def _tiny_masks(seed: int) -> list[tuple[bytes, int]]:
    """:data:`DISTINCT` tiny v26 instance masks as PNG bytes, with their segment counts."""
    rng = np.random.default_rng([seed, 44])
    masks = []
    for index in range(DISTINCT):
        side = 8 if index % 2 else 16
        rgb = np.zeros((side, side, 3), dtype=np.uint8)
        segments = 1 + index % 3 // 2  # 1, 1, 2, 1, 1, 2, ...
        half = side // 2
        for segment in range(segments):
            x0 = int(rng.integers(0, half)) + segment * half // 2
            y0 = int(rng.integers(0, half))
            instance = 1 + segment + 2 * index % 250
            rgb[y0 : y0 + half, x0 : x0 + half] = (0, instance, _FLAGS[(index + segment) % 4])
        colours = np.unique(rgb.reshape(-1, 3), axis=0)
        masks.append((encode_png(rgb, compress_level=6), int(np.count_nonzero(colours.any(1)))))
    return masks


def write_tiny_tree(root: Path, *, masks: int, seed: int, chunks: int) -> dict[str, int]:
    """Write the section's tree under ``root``; returns its file, segment and byte counts."""
    contents = _tiny_masks(seed)
    segments = written = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    folder = ""
    for index in range(masks):
        if index % PER_FOLDER == 0:
            folder = str(root / f"site-{index // 10_000:02d}" / f"cam-{index // PER_FOLDER % 10}")
            os.makedirs(folder, exist_ok=True)
        data, count = contents[index % DISTINCT]
        descriptor = os.open(f"{folder}/img-{index:07d}_ins_maks.png", flags, 0o644)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
        segments += count
        written += len(data)
    chunk_bytes = 0
    for video in range(VIDEOS):
        paths = write_dense_chunks(root / f"video-{video}", chunks=chunks, seed=seed + video)
        chunk_bytes += sum(p.stat().st_size for p in paths)
    return {"masks": masks, "segments": segments, "mask_bytes": written,
            "chunks": VIDEOS * chunks, "chunk_bytes": chunk_bytes}  # fmt: skip


def _check(report: dict[str, Any], tree: dict[str, int], label: str) -> None:
    rows = report["record"]["rows"]
    if (report["exit_code"] != 0 or rows["masks"] != tree["masks"]
            or rows["instances"] != tree["segments"]):  # fmt: skip
        raise BenchmarkError(
            f"{label}: exit code {report['exit_code']}, {rows['masks']} masks and "
            f"{rows['instances']} segments in the tables, {tree['masks']} and {tree['segments']} "
            "expected"
        )


def run(scratch: Path, *, masks: int, seed: int, chunks: int) -> dict[str, Any]:
    """Write the trees, run the baseline and the 1- and 2-worker children, print the table."""
    source, warm = scratch / "scale-tree", scratch / "scale-warm"
    write_s, tree = seconds(lambda: write_tiny_tree(source, masks=masks, seed=seed, chunks=chunks))
    warm_tree = write_tiny_tree(warm, masks=100, seed=seed, chunks=1)
    files = tree["masks"] + tree["chunks"]
    baseline = spawn({"mode": "baseline", "imports": ["pipeline", "distributed"]})
    base_kib = baseline["end"]["VmHWM"]
    runs: dict[int, dict[str, Any]] = {}
    for workers in (1, 2):
        report = spawn({
            "mode": "celantur", "source": str(source),
            "output": str(scratch / f"scale-out-{workers}"), "options": {"encoding": "v26"},
            "workers": workers, "warmup": [str(warm), str(scratch / f"scale-warm-out-{workers}")],
        }, timeout=1800)  # fmt: skip
        _check(report, tree, f"{workers} worker(s)")
        if report["warmup_exit_code"] != 0:
            raise BenchmarkError(f"{workers} worker(s): warm-up run failed")
        record = report["record"]
        peak_kib = max(report["warmed"]["VmHWM"], report["after_run"]["VmHWM"])
        planning_s = record["timings"]["list"] + record["timings"]["plan"]
        runs[workers] = {
            "wall_s": report["wall_s"],
            "masks_per_s": masks / report["wall_s"],
            "batches": record["inputs"]["batches"],
            "work_done": record["work"]["done"],
            "tasks_per_million_masks": record["work"]["done"] * 1_000_000 / masks,
            "client_peak_kib": peak_kib,
            "client_peak_minus_baseline_mib": (peak_kib - base_kib) / 1024.0,
            "client_growth_during_run_mib":
                (report["after_run"]["VmHWM"] - report["before_run"]["VmRSS"]) / 1024.0,
            "planning_s": planning_s,
            "planning_s_per_100k_files": planning_s * 100_000 / files,
            "timings": record["timings"],
            "peak_reset": report["peak_reset"],
            "task_stream": report["task_stream"],
        }  # fmt: skip
    rows = [
        [f"{w} worker(s)", f"{r['batches']:,}", f"{r['work_done']:,}",
         f"{r['tasks_per_million_masks']:,.0f}", f"{r['client_peak_minus_baseline_mib']:,.1f}",
         f"{r['client_growth_during_run_mib']:,.1f}", f"{r['wall_s']:.1f}",
         f"{r['task_stream']['longest_task_s']:.1f}", f"{r['masks_per_s']:,.0f}",
         f"{r['planning_s_per_100k_files']:.2f}"]
        for w, r in runs.items()
    ]  # fmt: skip
    print_table(
        f"8. Scale (issue 4.4): {masks:,} tiny masks (8x8 / 16x16, {tree['segments']:,} segments) "
        f"in {masks // PER_FOLDER:,} folders + {tree['chunks']} video chunks, run_celantur "
        "encoding=v26 in a child process, warm LocalCluster",
        ["workers", "pass-1 tasks", "tasks", "tasks per 1M masks", "client peak - base MiB",
         "growth in run MiB", "wall s", "longest task s", "masks/s", "plan s / 100k files"],
        rows,
    )  # fmt: skip
    worst = max(r["tasks_per_million_masks"] for r in runs.values())
    met = worst <= TARGET_TASKS_PER_MILLION
    growth_kib = max(r["client_growth_during_run_mib"] for r in runs.values()) * 1024 / files
    speedup = ratio(runs[1]["wall_s"], runs[2]["wall_s"])
    split = speedup_split(runs[1]["task_stream"], runs[2]["task_stream"])
    largest = max(split, key=lambda k: split[k])
    lost = runs[2]["wall_s"] - runs[1]["wall_s"] / 2
    print(f"   tasks for 1M masks (linear extrapolation, an upper bound) <= "
          f"{TARGET_TASKS_PER_MILLION:,}: {'met' if met else 'not met'} ({worst:,.0f}); "
          f"client growth in the run {growth_kib:.1f} KiB per input file; "
          f"baseline child (import pipeline, distributed) {base_kib / 1024:,.1f} MiB; "
          f"writing the tree took {write_s:.1f} s")  # fmt: skip
    print(f"   2-worker / 1-worker speed-up {format_ratio(speedup)} (bound: {largest}; the "
          f"2-worker run takes {lost:.1f} s more than half the 1-worker run: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in split.items()) + ")")  # fmt: skip
    for workers, r in runs.items():
        stream = r["task_stream"]
        print(f"   {workers} worker(s): longest task {stream['longest_task_s']:.1f} s = "
              f"{ratio(stream['longest_task_s'], stream['task_s']):.0%} of all task time, busiest "
              f"worker {stream['busiest_worker_s']:.1f} s, mean worker "
              f"{stream['mean_worker_s']:.1f} s")  # fmt: skip
    return {
        "tree": {**tree, "files": files, "write_s": write_s, "distinct_contents": DISTINCT,
                 "warm_tree": warm_tree},
        "baseline_peak_kib": base_kib,
        "client_growth_kib_per_file": growth_kib,
        "runs": {str(w): r for w, r in runs.items()},
        "speedup_2_vs_1_workers": speedup,
        "speedup_lost_s_split": split,
        "target_tasks_per_million": {"value": worst, "target_max": TARGET_TASKS_PER_MILLION,
                                     "met": met},
    }  # fmt: skip
