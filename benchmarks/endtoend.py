"""Section 3: whole runs of ``run_celantur`` over a generated tree, and what their parts cost.

Runs (each into a fresh output folder, rescaled masks written at ``mask_scale``):

* ``sync`` in-process, with the default ``encoding="auto"`` (a batch whose own evidence decides
  is typed in pass 1, another's rows are parked under ``_work/`` for pass 2) and with
  ``encoding="v26"`` (one pass);
* a ``LocalCluster`` of 1 and of 2 workers started by the run itself (``ExecutionOptions(workers=
  N)``): *cold*, the wall time includes starting the cluster and the workers' first imports;
* the same clusters started once and handed over as ``client=``, after one untimed run: *warm*,
  the steady state of a long job.

The standalone parts are timed over the same files, in this process, one file after the other:
reading the bytes, measuring every mask as a run does (the fused path: inflate, unfilter,
statistics, rescaled scanlines, zlib-ng encode) and writing each rescaled mask to a new file;
and, for comparison, the standard path (``decode_png`` + whole-image kernels + rescale) and
``pyspng.load`` as the reference decode. Their sum against the ``sync`` run's time shows what the
pipeline adds around them (metadata, matching, Parquet parts, run record, fsspec).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.timing import BenchmarkError, format_ms, format_ratio, print_table, ratio, seconds
from pipeline.api import run_celantur
from pipeline.config import SCHEDULER_ENV, ExecutionOptions
from pipeline.graph import open_executor
from pipeline.io.png import DEFAULT_MAX_PIXELS, decode_png
from pipeline.runner import RunResult
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.stages.common import scaled_png
from pipeline.stages.measure import measure_binary, measure_instance

SPNG = "pyspng.load (reference, not part of a run)"
SYNC = "sync, encoding=auto"


@contextmanager
def _local_client(workers: int) -> Iterator[Any]:
    """The LocalCluster a run starts itself (the product's own executor), kept open for reuse."""
    with open_executor(ExecutionOptions(workers=workers)) as executor:
        yield executor.client


class _Runner:
    """Runs ``run_celantur`` on one source into numbered fresh output folders, checking each."""

    def __init__(self, source: Path, scratch: Path, masks: int, mask_scale: int) -> None:
        self.source, self.scratch, self.masks, self.mask_scale = source, scratch, masks, mask_scale
        self.count = 0

    def __call__(self, execution: ExecutionOptions, **options: Any) -> tuple[float, RunResult]:
        self.count += 1
        output = self.scratch / f"out-{self.count:03d}"
        elapsed, result = seconds(
            partial(
                run_celantur, str(self.source), str(output), execution=execution,
                mask_scale=self.mask_scale, **options,
            )
        )  # fmt: skip
        processed = result.record["tables"]["masks"]["rows"]
        if result.exit_code != 0 or processed != self.masks:
            raise BenchmarkError(
                f"run {output.name} ({execution}): exit code {result.exit_code}, "
                f"{processed} masks in the table, {self.masks} expected"
            )
        return elapsed, result


def _summarise(times: list[float], results: list[RunResult], masks: int) -> dict[str, Any]:
    wall = statistics.median(times)
    # The run records each phase: the two passes over the cluster, without its start.
    execute = statistics.median(
        r.record["timings"]["pass1"] + r.record["timings"]["pass2"] for r in results
    )
    return {
        "runs": len(times),
        "wall_s": wall,
        "wall_s_all": times,
        "execute_s": execute,
        "masks_per_s": masks / wall,
        "ms_per_mask": wall * 1000.0 / masks,
        "scheduler": {k: v for k, v in results[0].scheduler.items() if k != "dashboard"},
    }


def _stem_key(rel: str) -> str:
    for suffix in ("_ins_maks.png", "_ins_mask.png", "_bin_mask.png"):
        if rel.endswith(suffix):
            return rel[: -len(suffix)]
    return rel


#: Standalone parts timed for comparison only: a run does neither.
STANDARD = "decode_png + kernels + rescale (standard path, not taken by these masks)"
NOT_IN_RUN = (SPNG, STANDARD)


def _measure_groups(
    groups: list[tuple[bytes | None, bytes | None]], mask_scale: int, fused: bool
) -> Callable[[], None]:
    """Every (instance, binary) pair measured as the stage does: the binary mask compared with
    its instance mask's foreground, both rescaled and encoded."""

    def run_all() -> None:
        for instance, binary in groups:
            foreground = None
            if instance is not None:
                foreground = measure_instance(
                    instance, max_pixels=DEFAULT_MAX_PIXELS, scale=mask_scale, fused=fused
                ).foreground
            if binary is not None:
                measure_binary(
                    binary, max_pixels=DEFAULT_MAX_PIXELS, scale=mask_scale,
                    foreground=foreground, fused=fused,
                )  # fmt: skip

    return run_all


def _parts(
    pngs: list[str], files: list[bytes], scratch: Path, mask_scale: int
) -> dict[str, Callable[[], Any]]:
    """The per-mask work of a run as standalone loops over all files' bytes (same order as
    the stage: measure the instance mask, then its binary mask; write the rescaled masks)."""
    import pyspng

    by_stem: dict[str, list[bytes | None]] = {}
    for rel, data in zip(pngs, files, strict=True):
        pair = by_stem.setdefault(_stem_key(rel), [None, None])
        pair[0 if "_ins_" in rel else 1] = data
    groups = [(instance, binary) for instance, binary in by_stem.values()]
    scaled = [scaled_png(data, decode_png(data), mask_scale) for data in files]
    folders = iter(range(1_000_000))

    def write_new_files() -> None:
        folder = scratch / f"write-{next(folders)}"
        folder.mkdir()
        for index, payload in enumerate(scaled):
            (folder / f"{index}.png").write_bytes(payload)

    def decode_all() -> None:
        for data in files:
            pyspng.load(data)

    return {
        "measure masks: fused inflate + unfilter + stats + rescale + encode": _measure_groups(
            groups, mask_scale, fused=True
        ),
        "write scaled mask to a new local file": write_new_files,
        STANDARD: _measure_groups(groups, mask_scale, fused=False),
        SPNG: decode_all,
    }


def _time_runs(runner: _Runner, repeats: int) -> dict[str, dict[str, Any]]:
    """Every run configuration, medians over its repeats (cold clusters: one run each)."""
    figures: dict[str, dict[str, Any]] = {}
    fewer = max(1, repeats - 1)  # keeps the whole benchmark within its time budget

    def timed(label: str, count: int, execution: ExecutionOptions, **options: Any) -> None:
        outcomes = [runner(execution, **options) for _ in range(count)]
        times, results = [t for t, _ in outcomes], [r for _, r in outcomes]
        figures[label] = _summarise(times, results, runner.masks)

    sync = ExecutionOptions(scheduler="sync", progress=False)
    runner(sync)  # untimed: first use of Parquet, fsspec, the page cache
    timed(SYNC, repeats, sync)
    timed("sync, encoding=v26 (one pass)", fewer, sync, encoding="v26")
    for workers in (1, 2):
        timed(f"{workers} worker(s), cold: the run starts the cluster", 1,
              ExecutionOptions(workers=workers, progress=False))  # fmt: skip
    for workers in (1, 2):
        with _local_client(workers) as client:
            runner(ExecutionOptions(progress=False), client=client)  # warm-up
            timed(f"{workers} worker(s), warm: cluster reused", fewer,
                  ExecutionOptions(progress=False), client=client)  # fmt: skip
    return figures


def _time_parts(
    source: Path, pngs: list[str], scratch: Path, mask_scale: int, repeats: int
) -> dict[str, float]:
    """Mean ms per mask of every standalone part (median of ``repeats`` loops over all files)."""
    paths = [source / rel for rel in pngs]
    files = [p.read_bytes() for p in paths]
    parts: dict[str, Callable[[], Any]] = {
        "read bytes (local files)": lambda: [p.read_bytes() for p in paths],
        **_parts(pngs, files, scratch, mask_scale),
    }
    part_ms: dict[str, float] = {}
    for label, call in parts.items():
        call()  # warm-up
        total = statistics.median(seconds(call)[0] for _ in range(repeats))
        part_ms[label] = total * 1000.0 / len(pngs)
    return part_ms


def run(scratch: Path, *, images: int, seed: int, mask_scale: int, repeats: int) -> dict[str, Any]:
    """Generate a tree under ``scratch``, time the runs and the standalone parts, print tables.

    Side effects: removes ``DASK_SCHEDULER_ADDRESS`` from this process's environment, so the
    cluster runs start their own ``LocalCluster`` instead of joining an existing cluster.
    """
    inherited = os.environ.pop(SCHEDULER_ENV, None)
    if inherited:
        print(f"   note: {SCHEDULER_ENV}={inherited} ignored: the runs start their own clusters")
    source = scratch / "celantur"
    generate_s, tree = seconds(partial(make_celantur_tree, source, seed=seed, images=images))
    pngs = [rel for rel in tree.files if rel.endswith(".png")]
    masks = len(pngs)
    png_bytes = sum((source / rel).stat().st_size for rel in pngs)
    runs = _time_runs(_Runner(source, scratch, masks, mask_scale), repeats)

    base = runs[SYNC]["wall_s"]
    rows = [
        [label, f"{r['wall_s']:.2f}", f"{r['execute_s']:.2f}", f"{r['masks_per_s']:.0f}",
         format_ms(r["ms_per_mask"]), str(r["runs"]), format_ratio(ratio(base, r["wall_s"]))]
        for label, r in runs.items()
    ]  # fmt: skip
    print_table(
        f"3. End to end: run_celantur over {images} images = {masks} masks "
        f"({png_bytes / 1024:,.0f} KiB of PNG), mask_scale={mask_scale} (median of runs)",
        ["run", "wall s", "execute s", "masks/s", "ms/mask", "runs", "speed vs sync"],
        rows,
    )
    speedup = {
        kind: ratio(runs[f"1 worker(s), {kind}"]["wall_s"], runs[f"2 worker(s), {kind}"]["wall_s"])
        for kind in ("cold: the run starts the cluster", "warm: cluster reused")
    }
    speedup = {kind.split(":")[0]: value for kind, value in speedup.items()}
    print(
        "   2-worker / 1-worker speed-up: "
        + ", ".join(f"{kind} {format_ratio(value)}" for kind, value in speedup.items())
        + f"; generating the tree took {generate_s:.1f} s"
    )

    part_ms = _time_parts(source, pngs, scratch, mask_scale, repeats)
    sync_ms = runs[SYNC]["ms_per_mask"]
    spng_ms = part_ms[SPNG]
    parts_ms = sum(value for label, value in part_ms.items() if label not in NOT_IN_RUN)
    rows = [[label, format_ms(value), format_ratio(ratio(value, spng_ms))]
            for label, value in part_ms.items()]  # fmt: skip
    rows.append(["sum of the parts a run does", format_ms(parts_ms),
                 format_ratio(ratio(parts_ms, spng_ms))])  # fmt: skip
    rows.append([f"run_celantur {SYNC}", format_ms(sync_ms),
                 format_ratio(ratio(sync_ms, spng_ms))])  # fmt: skip
    print_table(
        f"3b. Where a mask's time goes: standalone loops over the same {masks} files "
        f"(mean ms per mask, median of {repeats} loops)",
        ["part", "ms/mask", "/ pyspng decode"],
        rows,
    )
    return {
        "tree": {
            "images": images, "seed": seed, "files": len(tree.files), "masks": masks,
            "png_bytes": png_bytes, "generate_s": generate_s,
        },
        "mask_scale": mask_scale,
        "runs": runs,
        "speedup_2_vs_1_workers": speedup,
        "standalone_ms_per_mask": part_ms,
        "standalone_sum_ms_per_mask": parts_ms,
        "sync_vs_pyspng_decode": ratio(sync_ms, spng_ms),
        "sync_vs_sum_of_parts": ratio(sync_ms, parts_ms),
    }  # fmt: skip
