"""Section 7: peak memory of a worker processing large masks (issue 7.4).

A small tree of ``images`` copies of one large mask (instance mask as PNG bytes, its binary mask
and metadata, as in section 6) is run by ``run_celantur(..., encoding="v26", mask_scale=50)``
with ``scheduler="sync"`` in a child process (``benchmarks.child``), which is then exactly what a
worker does. The child first runs a tiny tree of the same kind (imports, numba cache loads,
first Parquet writes: what a worker that has run before holds), then resets its peak and runs
the large tree. Figures, all from the children's own ``/proc/self/status``:

* the worker child's peak (``VmHWM`` over its whole life) minus the peak of a baseline child that
  only imports ``pipeline``: the headline of issue 7.4;
* the peak during the large run above the child's resident memory just before it: the working
  memory of the masks, also in multiples of one decoded (H, W, 3) mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.child import spawn
from benchmarks.data import celantur_scene, write_scene_files
from benchmarks.timing import BenchmarkError, format_ratio, print_table

KIB_PER_MIB = 1024.0


def _mib(kib: float) -> str:
    return f"{kib / KIB_PER_MIB:,.1f}"


def run(scratch: Path, *, name: str, rgb: np.ndarray, png: bytes, images: int) -> dict[str, Any]:
    """Write the trees, run the baseline and worker children, print the table."""
    height, width = rgb.shape[:2]
    source, warm = scratch / "memory-tree", scratch / "memory-warm"
    for index in range(images):
        write_scene_files(source, f"large/frame-{index:03d}", rgb, instance_png=png)
    write_scene_files(warm, "small/frame-000", celantur_scene(width // 20, height // 20))
    masks = 2 * images
    baseline = spawn({"mode": "baseline", "imports": ["pipeline"]})
    worker = spawn({
        "mode": "celantur", "source": str(source), "output": str(scratch / "memory-out"),
        "options": {"encoding": "v26", "mask_scale": 50}, "workers": None,
        "warmup": [str(warm), str(scratch / "memory-warm-out")],
    })  # fmt: skip
    if worker["exit_code"] != 0 or worker["record"]["rows"]["masks"] != masks:
        raise BenchmarkError(
            f"memory run: exit code {worker['exit_code']}, "
            f"{worker['record']['rows']['masks']} masks in the table, {masks} expected"
        )
    if not worker["peak_reset"]:
        raise BenchmarkError("memory run: cannot reset the peak (/proc/self/clear_refs)")
    base_kib = baseline["end"]["VmHWM"]
    peak_kib = max(worker["warmed"]["VmHWM"], worker["after_run"]["VmHWM"])
    before_kib = worker["before_run"]["VmRSS"]
    working_kib = worker["after_run"]["VmHWM"] - before_kib
    decoded_kib = width * height * 3 / 1024.0
    rows = [
        ["baseline child: import pipeline (peak)", _mib(base_kib), "-"],
        [f"worker child: warm-up, then {images} images = {masks} masks (peak)", _mib(peak_kib),
         "-"],
        ["worker peak - baseline peak", _mib(peak_kib - base_kib),
         format_ratio((peak_kib - base_kib) / decoded_kib)],
        ["  worker RSS before the large run (after warm-up)", _mib(before_kib), "-"],
        ["  peak during the large run - RSS before it", _mib(working_kib),
         format_ratio(working_kib / decoded_kib)],
    ]  # fmt: skip
    print_table(
        f"7. Worker memory (issue 7.4): run_celantur sync over {name} {width}x{height} masks, "
        f"mask_scale=50, in a child process (MiB, from /proc/self/status VmHWM)",
        ["figure", "MiB", "/ one decoded RGB mask"],
        rows,
    )
    print(f"   one decoded {width}x{height} RGB mask = {_mib(decoded_kib)} MiB; the large run took "
          f"{worker['wall_s']:.1f} s")  # fmt: skip
    return {
        "mask": {"name": name, "width": width, "height": height, "png_bytes": len(png)},
        "images": images, "masks": masks,
        "baseline_peak_kib": base_kib,
        "worker_peak_kib": peak_kib,
        "worker_peak_minus_baseline_mib": (peak_kib - base_kib) / KIB_PER_MIB,
        "worker_rss_before_run_kib": before_kib,
        "run_working_memory_mib": working_kib / KIB_PER_MIB,
        "decoded_mask_mib": decoded_kib / KIB_PER_MIB,
        "run_wall_s": worker["wall_s"],
        "children": {"baseline": baseline, "worker": worker},
    }  # fmt: skip
