"""Measuring masks from their PNG scanlines as they are inflated: the fused decode path.

A strip kernel takes a run of filtered scanlines (each led by its filter type byte), unfilters
every row into one of two row buffers (the row and the one above, alternating by row parity) and
hands the row straight to the measuring code the whole-image kernels use
(:mod:`pipeline.kernels.segments`). The decoded image never exists: memory is two rows, the
strip, the accumulators and the rescaled output.

Only 8-bit, non-interlaced images come here, so a pixel is ``channels`` bytes and the PNG
filters' "bytes per pixel" is ``channels``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from pipeline.kernels.segments import _append_foreground, _binary_row, _measure_row, _sample_row

#: Returned by a strip kernel when every row was good.
ROWS_OK = -1


@numba.njit(cache=True, nogil=True)
def _paeth(a: Any, b: Any, c: Any) -> Any:
    """The PNG Paeth predictor of signed (int64) neighbours: left, above, above-left."""
    p = a + b - c
    pa = abs(p - a)
    pb = abs(p - b)
    pc = abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    if pb <= pc:
        return b
    return c


@numba.njit(cache=True, nogil=True)
def _unfilter(
    raw: np.ndarray, start: int, stride: int, bpp: int, above: np.ndarray, row: np.ndarray
) -> bool:
    """Undo the PNG filter of the scanline at ``raw[start:start+stride]`` (filter byte first)
    into ``row``, given the unfiltered row ``above`` (zeros for the first row).
    False for a filter type PNG does not define."""
    kind = raw[start]
    data = start + 1
    length = stride - 1
    if kind == 0:
        for i in range(length):
            row[i] = raw[data + i]
    elif kind == 1:
        for i in range(bpp):
            row[i] = raw[data + i]
        for i in range(bpp, length):
            row[i] = raw[data + i] + row[i - bpp]
    elif kind == 2:
        for i in range(length):
            row[i] = raw[data + i] + above[i]
    elif kind == 3:
        for i in range(bpp):
            row[i] = raw[data + i] + (above[i] >> 1)
        for i in range(bpp, length):
            row[i] = raw[data + i] + ((np.int64(row[i - bpp]) + np.int64(above[i])) >> 1)
    elif kind == 4:
        for i in range(bpp):
            row[i] = raw[data + i] + above[i]  # Paeth with a = c = 0 picks b
        for i in range(bpp, length):
            # int64, not int(): numba's int() of a uint8 is unsigned and a + b - c would wrap.
            left, up, up_left = np.int64(row[i - bpp]), np.int64(above[i]), np.int64(above[i - bpp])
            row[i] = raw[data + i] + _paeth(left, up, up_left)
    else:
        return False
    return True


@numba.njit(cache=True, nogil=True)
def _sample_if_due(
    pixels: np.ndarray,
    y: int,
    sample_rows: np.ndarray,
    sample_cols: np.ndarray,
    sampled_above: np.ndarray,
    scaled: np.ndarray,
    progress: np.ndarray,
) -> None:
    """Emit the rescaled scanlines that sample source row ``y`` (``progress[0]`` counts those
    emitted so far)."""
    while progress[0] < sample_rows.shape[0] and sample_rows[progress[0]] == y:
        r = progress[0]
        _sample_row(pixels, sample_cols, sampled_above, r == 0, scaled[r])
        progress[0] = r + 1


@numba.njit(cache=True, nogil=True)
def instance_strip(
    raw: np.ndarray,
    first_row: int,
    width: int,
    channels: int,
    lines: np.ndarray,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
    bounds: np.ndarray,
    row_ends: np.ndarray,
    sample_rows: np.ndarray,
    sample_cols: np.ndarray,
    sampled_above: np.ndarray,
    scaled: np.ndarray,
    progress: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Unfilter a strip of an RGB(A) instance mask and measure it: colours (``_measure_row``
    with black as background), foreground runs and the rescaled scanlines.

    Returns the (possibly grown) ``keys``, ``table``, ``bounds`` and ``ROWS_OK``, or the index
    of the first row with an undefined filter type.
    """
    stride = 1 + width * channels
    for i in range(raw.shape[0] // stride):
        y = first_row + i
        row = lines[y & 1]
        if not _unfilter(raw, i * stride, stride, channels, lines[(y + 1) & 1], row):
            return keys, table, bounds, y
        pixels = row.reshape((width, channels))
        keys, table = _measure_row(pixels, y, True, keys, table, state)
        bounds = _append_foreground(pixels, y, bounds, row_ends)
        _sample_if_due(pixels, y, sample_rows, sample_cols, sampled_above, scaled, progress)
    return keys, table, bounds, ROWS_OK


@numba.njit(cache=True, nogil=True)
def binary_strip(
    raw: np.ndarray,
    first_row: int,
    width: int,
    channels: int,
    lines: np.ndarray,
    threshold: int,
    bounds: np.ndarray,
    row_ends: np.ndarray,
    foreground: np.ndarray,
    compare: bool,
    counts: np.ndarray,
    sample_rows: np.ndarray,
    sample_cols: np.ndarray,
    sampled_above: np.ndarray,
    scaled: np.ndarray,
    progress: np.ndarray,
) -> int:
    """Unfilter a strip of an 8-bit binary mask and measure it (``_binary_row``), adding to
    ``counts`` = [anonymised, mismatch], and emit its rescaled scanlines.

    Returns ``ROWS_OK`` or the index of the first row with an undefined filter type.
    """
    stride = 1 + width * channels
    for i in range(raw.shape[0] // stride):
        y = first_row + i
        row = lines[y & 1]
        if not _unfilter(raw, i * stride, stride, channels, lines[(y + 1) & 1], row):
            return y
        pixels = row.reshape((width, channels))
        hidden, differ = _binary_row(pixels, y, threshold, bounds, row_ends, foreground, compare)
        counts[0] += hidden
        counts[1] += differ
        _sample_if_due(pixels, y, sample_rows, sample_cols, sampled_above, scaled, progress)
    return ROWS_OK
