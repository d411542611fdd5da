"""Section 1: per-colour statistics of one decoded instance mask, ours against what a user writes.

Contenders, all on the same decoded (H, W, 3) uint8 array, all producing pixel count, bounding
box and centroid of every non-background colour:

* ``colour_stats`` — ours, the one-pass compiled kernel (compile time reported separately);
* a per-colour numpy loop — ``np.unique(axis=0)``, then per colour a boolean mask, a count,
  ``np.nonzero`` for the box and a mean for the centroid;
* ``skimage.measure.regionprops_table`` — after building the label image a user needs first
  (24-bit colour key, ``np.unique(return_inverse=True)``).

The three must agree exactly (counts and boxes; centroids to 1e-9) before anything is timed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from benchmarks.timing import (
    BenchmarkError,
    Timing,
    format_ms,
    format_ratio,
    print_table,
    ratio,
    sample_ms,
    seconds,
    time_call,
)
from pipeline.kernels import segments
from pipeline.kernels.segments import colour_stats

#: colour -> (pixels, x_min, y_min, x_max, y_max, centroid_x, centroid_y); max exclusive.
Stats = dict[tuple[int, int, int], tuple[int, int, int, int, int, float, float]]


def ours(rgb: np.ndarray) -> Stats:
    """``colour_stats`` in the common comparison form."""
    s = colour_stats(rgb)
    return {
        (int(c[0]), int(c[1]), int(c[2])): (
            int(s.pixels[i]), int(s.x_min[i]), int(s.y_min[i]), int(s.x_max[i]),
            int(s.y_max[i]), float(s.centroid_x[i]), float(s.centroid_y[i]),
        )
        for i, c in enumerate(s.colours)
    }  # fmt: skip


def per_colour_loop(rgb: np.ndarray) -> Stats:
    """What a user writes with numpy alone: ``np.unique(axis=0)``, one boolean mask per colour."""
    return loop_over_colours(rgb, np.unique(rgb.reshape(-1, 3), axis=0))


def loop_over_colours(rgb: np.ndarray, colours: np.ndarray) -> Stats:
    """The per-colour loop given its colours: mask, count, ``np.nonzero`` box, mean centroid."""
    result: Stats = {}
    for colour in colours:
        if not colour.any():
            continue
        mask = np.all(rgb == colour, axis=2)
        count = int(np.count_nonzero(mask))
        ys, xs = np.nonzero(mask)
        result[(int(colour[0]), int(colour[1]), int(colour[2]))] = (
            count, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1,
            float(xs.mean()), float(ys.mean()),
        )  # fmt: skip
    return result


def label_image(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label image a user builds from the colours: ``(keys, labels)``, where ``labels`` is
    (H, W) and ``keys[label]`` the 24-bit colour of a label; label 0 is the background."""
    flat = rgb.reshape(-1, 3).astype(np.int32)
    keys, inverse = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2],
                              return_inverse=True)  # fmt: skip
    if keys[0] != 0:  # no background pixel: keep label 0 free
        keys, inverse = np.concatenate([[0], keys]), inverse + 1
    return keys, inverse.reshape(rgb.shape[:2])


def regionprops(rgb: np.ndarray) -> Stats:
    """``regionprops_table`` on a label image built from the colours (label 0 = background)."""
    from skimage.measure import regionprops_table

    keys, labels = label_image(rgb)
    table = regionprops_table(labels, properties=("label", "area", "bbox", "centroid"))
    result: Stats = {}
    for i, label in enumerate(table["label"]):
        key = int(keys[label])
        result[(key >> 16, (key >> 8) & 255, key & 255)] = (
            int(table["area"][i]), int(table["bbox-1"][i]), int(table["bbox-0"][i]),
            int(table["bbox-3"][i]), int(table["bbox-2"][i]),
            float(table["centroid-1"][i]), float(table["centroid-0"][i]),
        )  # fmt: skip
    return result


CONTENDERS: dict[str, Callable[[np.ndarray], Stats]] = {
    "colour_stats (ours)": ours,
    "per-colour numpy loop": per_colour_loop,
    "skimage regionprops_table": regionprops,
}


def verify(rgb: np.ndarray, name: str) -> tuple[int, dict[str, float]]:
    """Run every contender once and raise :class:`BenchmarkError` unless all agree.

    Returns the number of colours measured and each contender's time for this first run (ms).
    """
    results: dict[str, Stats] = {}
    first_ms: dict[str, float] = {}
    for label, function in CONTENDERS.items():
        elapsed, results[label] = seconds(partial(function, rgb))
        first_ms[label] = elapsed * 1000.0
    reference_label, reference = next(iter(results.items()))
    for label, result in results.items():
        if result.keys() != reference.keys():
            raise BenchmarkError(
                f"{name}: {label} finds colours {sorted(result.keys() ^ reference.keys())} "
                f"that {reference_label} does not (or the reverse)"
            )
        for colour, values in reference.items():
            other = result[colour]
            if other[:5] != values[:5] or not np.allclose(other[5:], values[5:], atol=1e-9):
                raise BenchmarkError(
                    f"{name}: colour {colour}: {reference_label} gives {values}, {label} {other}"
                )
    return len(reference), first_ms


def compile_seconds(rgb: np.ndarray) -> dict[str, Any]:
    """Time the first call of ``colour_stats`` in this process (JIT compile or cache load).

    The call gets a small C-contiguous array, the layout decoders return: numba compiles one
    specialisation per array layout, and a sliced view would compile a different one.
    """
    elapsed, _ = seconds(partial(colour_stats, np.ascontiguousarray(rgb[:8, :8])))
    dispatcher = segments._colour_stats_kernel
    return {
        "first_call_s": elapsed,
        "numba_cache_hits": sum(dispatcher.stats.cache_hits.values()),
        "numba_cache_misses": sum(dispatcher.stats.cache_misses.values()),
        "signatures": [str(s) for s in dispatcher.signatures],
    }


#: A contender slower than this per call (ms) counts its verification run as a timed sample.
SLOW_MS = 1000.0

#: Extra row: the per-colour loop with its colours handed over, to show what np.unique costs.
LOOP_WITHOUT_UNIQUE = "  loop only (colours given)"


def run(masks: dict[str, np.ndarray], repeats: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Verify, then time every contender on every mask; print one table; return the figures.

    Parameters
    ----------
    masks : name -> decoded (H, W, 3) uint8 mask.
    repeats : name -> contender label (:data:`CONTENDERS` or :data:`LOOP_WITHOUT_UNIQUE`) ->
        timed repeats; a missing label or 0 skips that row. Contenders slower than
        :data:`SLOW_MS` count their verification run as one of the repeats.
    """
    first = next(iter(masks.values()))
    compile_info = compile_seconds(first)
    figures: dict[str, Any] = {"compile": compile_info, "masks": {}}
    rows = []
    for name, rgb in masks.items():
        colours, first_ms = verify(rgb, name)
        known = np.array(sorted(ours(rgb)), dtype=np.uint8).reshape(-1, 3)
        calls: dict[str, Callable[[], object]] = {
            label: partial(function, rgb) for label, function in CONTENDERS.items()
        }
        calls[LOOP_WITHOUT_UNIQUE] = partial(loop_over_colours, rgb, known)
        timings: dict[str, Timing] = {}
        for label, call in calls.items():
            runs = repeats[name].get(label, 0)
            if runs and first_ms.get(label, 0.0) >= SLOW_MS:
                # Seconds per call: warm-up effects are noise, the verification run is a sample.
                timings[label] = Timing.from_samples([first_ms[label], *sample_ms(call, runs - 1)])
            elif runs:
                # verify() already ran the full contenders once: that was their warm-up.
                timings[label] = time_call(call, repeats=runs, warmup=0 if label in first_ms else 1)
        base = timings["colour_stats (ours)"].median_ms
        entry: dict[str, Any] = {
            "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "colours": colours,
            "contenders": {},
        }  # fmt: skip
        for label, timing in timings.items():
            factor = ratio(timing.median_ms, base)
            entry["contenders"][label.strip()] = {**timing.as_dict(), "ratio_vs_ours": factor}
            rows.append([
                f"{name} {rgb.shape[1]}x{rgb.shape[0]}, {colours} colours", label,
                format_ms(timing.median_ms), str(timing.repeats),
                "-" if label.endswith("(ours)") else format_ratio(factor),
            ])  # fmt: skip
        figures["masks"][name] = entry
    print_table(
        "1. Kernel: per-colour pixels, bbox and centroid of one decoded mask (median ms per mask)",
        ["mask", "contender", "ms/mask", "runs", "contender / ours"],
        rows,
    )
    state = "JIT compile" if compile_info["numba_cache_misses"] else "numba cache load"
    print(
        f"   colour_stats first call in this process ({state}): "
        f"{compile_info['first_call_s'] * 1000:,.0f} ms, not in the figures above"
    )
    return figures
