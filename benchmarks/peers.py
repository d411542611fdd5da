"""Section 1b: per-colour pixel count and bounding box, ours against two more peers (issue 7).

Contenders, each starting from the same decoded (H, W, 3) uint8 mask and paying for what a user
has to build before calling the library:

* ``colour_stats`` — ours, the one-pass compiled kernel;
* ``pycocotools`` RLE — a 24-bit colour key and ``np.unique`` for the colours, then per colour a
  boolean mask, ``np.asfortranarray(mask.astype(np.uint8))`` (the layout ``mask.encode``
  requires), ``mask.encode``, ``mask.area`` and ``mask.toBbox``;
* ``dask_image.ndmeasure`` — the label image (24-bit key, ``np.unique(return_inverse=True)``,
  as for scikit-image in section 1) as a dask array, then ``ndmeasure.area`` and
  ``ndmeasure.find_objects``, each computed with ``scheduler="sync"`` (in this thread: no
  scheduler overhead of a cluster).

Before timing, both peers must give exactly ours's pixel counts and boxes for every colour.
Every row is also put against the fastest standalone decode of the same PNG (the decoders of
section 2, timed again here round-robin), the reference issue 7 asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from benchmarks.decode import standalone_decoders
from benchmarks.kernels import SLOW_MS, label_image, ours
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
    time_interleaved,
)

#: colour -> (pixels, x_min, y_min, x_max, y_max); max exclusive.
Boxes = dict[tuple[int, int, int], tuple[int, int, int, int, int]]

OURS = "colour_stats (ours)"
COCO = "pycocotools RLE: masks + encode + area + toBbox"
COCO_PREP = "  of which key, np.unique, per-colour Fortran masks"
DASK = "dask_image.ndmeasure area + find_objects (sync)"
DASK_PREP = "  of which label image (key, np.unique inverse)"
#: Peers verified against ours before timing.
PEERS = (COCO, DASK)


def _colour(key: int) -> tuple[int, int, int]:
    return key >> 16, (key >> 8) & 255, key & 255


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    """The (H, W) 24-bit colour key a user computes to compare colours in one go."""
    flat = rgb.astype(np.int32)
    return (flat[..., 0] << 16) | (flat[..., 1] << 8) | flat[..., 2]


def coco_prep(rgb: np.ndarray) -> int:
    """Only the masks ``mask.encode`` needs, built and dropped one at a time (no RLE)."""
    key = _colour_keys(rgb)
    built = 0
    for k in np.unique(key):
        if k != 0:
            built += np.asfortranarray((key == k).astype(np.uint8)).shape[0]
    return built


def coco(rgb: np.ndarray) -> Boxes:
    """pycocotools as a user would call it: one RLE per colour, then its area and box."""
    from pycocotools import mask as coco_mask

    key = _colour_keys(rgb)
    result: Boxes = {}
    for k in np.unique(key):
        if k == 0:
            continue
        rle = coco_mask.encode(np.asfortranarray((key == k).astype(np.uint8)))
        area = int(coco_mask.area(rle))
        x, y, w, h = (int(v) for v in coco_mask.toBbox(rle))
        result[_colour(int(k))] = (area, x, y, x + w, y + h)
    return result


def dask_image(rgb: np.ndarray) -> Boxes:
    """dask-image over the label image: ``area`` and ``find_objects``, computed in-thread."""
    return dask_measure(*label_image(rgb))


def dask_measure(keys: np.ndarray, labels: np.ndarray) -> Boxes:
    """``ndmeasure.area`` and ``ndmeasure.find_objects`` of a label image (0 = background)."""
    import dask.array as da
    from dask_image import ndmeasure

    image = da.from_array(labels)
    index = np.arange(1, len(keys))
    areas = ndmeasure.area(image, image, index).compute(scheduler="sync")
    slices = ndmeasure.find_objects(image).compute(scheduler="sync")
    result: Boxes = {}
    for label, area in zip(index, areas, strict=True):
        rows, cols = slices.loc[label, 0], slices.loc[label, 1]
        result[_colour(int(keys[label]))] = (
            int(area), int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)
        )  # fmt: skip
    return result


def _ours_boxes(rgb: np.ndarray) -> Boxes:
    return {colour: values[:5] for colour, values in ours(rgb).items()}


def verify(rgb: np.ndarray, name: str) -> tuple[int, dict[str, float]]:
    """Run ours and both peers once; raise :class:`BenchmarkError` unless counts and boxes agree.

    Returns the number of colours and each peer's time for this first run (ms).
    """
    reference = _ours_boxes(rgb)
    first_ms: dict[str, float] = {}
    for label, function in ((COCO, coco), (DASK, dask_image)):
        elapsed, result = seconds(partial(function, rgb))
        first_ms[label] = elapsed * 1000.0
        if result.keys() != reference.keys():
            raise BenchmarkError(
                f"{name}: {label} finds colours {sorted(result.keys() ^ reference.keys())} "
                f"that colour_stats does not (or the reverse)"
            )
        for colour, values in reference.items():
            if result[colour] != values:
                raise BenchmarkError(
                    f"{name}: colour {colour}: colour_stats gives (pixels, box) {values}, "
                    f"{label} {result[colour]}"
                )
    return len(reference), first_ms


def _fastest_decode(data: bytes, expected: np.ndarray, repeats: int) -> tuple[str, Timing]:
    decoders = standalone_decoders()
    for label, decoder in decoders.items():
        if not np.array_equal(np.asarray(decoder(data)), expected):
            raise BenchmarkError(f"{label} does not return the encoded mask exactly")
    timings = time_interleaved(
        {label: partial(decoder, data) for label, decoder in decoders.items()}, repeats=repeats
    )
    fastest = min(timings, key=lambda label: timings[label].median_ms)
    return fastest, timings[fastest]


def run(
    masks: dict[str, np.ndarray],
    encoded: dict[str, bytes],
    repeats: dict[str, dict[str, int]],
    decode_repeats: dict[str, int],
) -> dict[str, Any]:
    """Verify, then time ours, the peers and the fastest standalone decode on every mask.

    Parameters
    ----------
    masks : name -> decoded (H, W, 3) uint8 mask.
    encoded : name -> the PNG bytes of that mask (for the decode reference).
    repeats : name -> row label (``OURS``, ``COCO``, ``COCO_PREP``, ``DASK``, ``DASK_PREP``) ->
        timed repeats; 0 or missing skips the row (never ``OURS``). Peers slower than
        :data:`~benchmarks.kernels.SLOW_MS` count their verification run as a repeat.
    decode_repeats : name -> round-robin repeats of the standalone decoders.
    """
    figures: dict[str, Any] = {"masks": {}}
    rows = []
    for name, rgb in masks.items():
        colours, first_ms = verify(rgb, name)
        fastest, decode = _fastest_decode(encoded[name], rgb, decode_repeats[name])
        calls: dict[str, Callable[[], object]] = {
            OURS: partial(ours, rgb), COCO: partial(coco, rgb), COCO_PREP: partial(coco_prep, rgb),
            DASK: partial(dask_image, rgb), DASK_PREP: partial(label_image, rgb),
        }  # fmt: skip
        timings: dict[str, Timing] = {}
        for label, call in calls.items():
            runs = repeats[name].get(label, 0)
            if runs and first_ms.get(label, 0.0) >= SLOW_MS:
                timings[label] = Timing.from_samples([first_ms[label], *sample_ms(call, runs - 1)])
            elif runs:
                timings[label] = time_call(call, repeats=runs, warmup=0 if label in first_ms else 1)
        base = timings[OURS].median_ms
        height, width = rgb.shape[:2]
        entry: dict[str, Any] = {
            "width": width, "height": height, "colours": colours, "png_bytes": len(encoded[name]),
            "fastest_decode": {"decoder": fastest, **decode.as_dict()}, "contenders": {},
        }  # fmt: skip
        label_of_mask = f"{name} {width}x{height}, {colours} colours"
        for label, timing in timings.items():
            entry["contenders"][label.strip()] = {
                **timing.as_dict(),
                "ratio_vs_ours": ratio(timing.median_ms, base),
                "ratio_vs_fastest_decode": ratio(timing.median_ms, decode.median_ms),
            }
            rows.append([
                label_of_mask, label, format_ms(timing.median_ms), str(timing.repeats),
                "-" if label == OURS else format_ratio(ratio(timing.median_ms, base)),
                format_ratio(ratio(timing.median_ms, decode.median_ms)),
            ])  # fmt: skip
        rows.append([label_of_mask, f"{fastest} (fastest decode of the PNG)",
                     format_ms(decode.median_ms), str(decode.repeats),
                     format_ratio(ratio(decode.median_ms, base)), "1.00x"])  # fmt: skip
        figures["masks"][name] = entry
    print_table(
        "1b. Kernel peers: per-colour pixel count and bbox of one decoded mask "
        "(median ms per mask)",
        ["mask", "contender", "ms/mask", "runs", "/ ours", "/ fastest decode"],
        rows,
    )
    return figures
