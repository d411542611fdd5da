"""Row kernels for decoded strips: the whole-image kernels' row functions fed a few rows at a
time, so PNG flavours the fused path does not take (16-bit, palette, low bit depths, grey
instance masks) are measured without ever holding the decoded image.

Rows are numbered from the top of the image (``first_row`` + index in the strip): the per-row
state (foreground runs, colour extents) is the same as when the whole image is measured.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.kernels import njit_unmanaged
from pipeline.kernels.scanlines import ROWS_OK, _unfilter_bytes
from pipeline.kernels.segments import _append_foreground, _binary_row, _measure_row


@njit_unmanaged
def _unfilter_row(
    raw: np.ndarray,
    start: int,
    length: int,
    bpp: int,
    above: np.ndarray,
    row: np.ndarray,
    last: np.ndarray,
) -> bool:
    """Undo the PNG filter of the scanline at ``raw[start]`` (filter byte, then ``length``
    bytes) into ``row``, given the unfiltered row ``above``; False for an undefined filter.
    ``last`` (at least ``bpp`` bytes) is scratch.

    For any ``bpp`` (1 to 8: 16-bit RGBA is 8) and rows of any length: the fused path's
    word-at-a-time ``_unfilter`` takes 8-bit pixels (``bpp`` <= 4) in padded rows only. Sub,
    Average and Paeth share its byte loop (``_unfilter_bytes``), one call per filter so each is
    compiled with its kind as a constant.
    """
    kind = raw[start]
    data = start + 1
    if kind == 0:
        for i in range(length):  # a loop: numba's slice copy is ~10x slower here
            row[i] = raw[data + i]
        return True
    if kind == 2:
        for i in range(length):
            row[i] = raw[data + i] + above[i]
        return True
    last[:bpp] = 0
    if kind == 1:
        _unfilter_bytes(1, raw, data, 0, length, bpp, above, row, last, 0)
    elif kind == 3:
        _unfilter_bytes(3, raw, data, 0, length, bpp, above, row, last, 0)
    elif kind == 4:
        _unfilter_bytes(4, raw, data, 0, length, bpp, above, row, last, 0)
    else:
        return False
    return True


@numba.njit(cache=True, nogil=True)
def unfilter_strip(
    raw: np.ndarray, stride: int, bpp: int, above: np.ndarray, out: np.ndarray
) -> int:
    """Undo the PNG filters of the whole scanlines in ``raw`` (each led by its filter byte) into
    ``out`` ((rows, stride - 1) uint8); ``above`` is the unfiltered row before the strip (zeros
    for the first) and becomes the strip's last row. ``bpp`` is the filters' bytes per pixel
    (at least 1). Returns ``ROWS_OK`` or the strip index of the first row with an undefined
    filter type."""
    rows = raw.shape[0] // stride
    last = np.zeros(bpp, dtype=np.uint8)
    for i in range(rows):
        previous = above if i == 0 else out[i - 1]
        if not _unfilter_row(raw, i * stride, stride - 1, bpp, previous, out[i], last):
            return i
    if rows:
        above[:] = out[rows - 1]
    return ROWS_OK


@numba.njit(cache=True, nogil=True)
def instance_rows(
    rgb: np.ndarray,
    first_row: int,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
    bounds: np.ndarray,
    row_ends: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measure a strip of an (rows, W, C>=3) uint8 instance mask: colours with black as
    background, and foreground runs. Returns the (possibly grown) ``keys``, ``table``,
    ``bounds``."""
    for i in range(rgb.shape[0]):
        keys, table = _measure_row(rgb[i], first_row + i, True, keys, table, state)
        bounds = _append_foreground(rgb[i], first_row + i, bounds, row_ends)
    return keys, table, bounds


@numba.njit(cache=True, nogil=True)
def colour_rows(
    rgb: np.ndarray,
    first_row: int,
    skip_black: bool,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Measure a strip of an (rows, W, C>=3) uint8 or uint16 mask's colours, as
    :func:`~pipeline.kernels.segments.colour_stats` does the whole image. Returns the (possibly
    grown) ``keys``, ``table``."""
    for i in range(rgb.shape[0]):
        keys, table = _measure_row(rgb[i], first_row + i, skip_black, keys, table, state)
    return keys, table


@numba.njit(cache=True, nogil=True)
def binary_rows(
    pixels: np.ndarray,
    first_row: int,
    threshold: int,
    bounds: np.ndarray,
    row_ends: np.ndarray,
    foreground: np.ndarray,
    compare: bool,
    counts: np.ndarray,
) -> None:
    """Measure a strip of a C-contiguous (rows, W, C) binary mask of any depth
    (``_binary_row``), adding to ``counts`` = [anonymised, mismatch]."""
    _, width, channels = pixels.shape
    for i in range(pixels.shape[0]):
        hidden, differ = _binary_row(
            pixels[i].reshape(width * channels), channels, first_row + i, threshold, bounds,
            row_ends, foreground, compare,
        )  # fmt: skip
        counts[0] += hidden
        counts[1] += differ
