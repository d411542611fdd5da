"""Per-colour segment statistics of a decoded mask, in one compiled pass over the pixels.

The kernel is encoding-agnostic: it measures every distinct non-background colour. What a colour
*means* (types, validity) is decided afterwards from the few hundred colours, not the millions of
pixels (see :mod:`pipeline.formats.celantur`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from pipeline.kernels import njit_unmanaged

# Columns of the kernel's accumulator table.
_COUNT, _XMIN, _XMAX, _YMIN, _YMAX, _SUMX, _SUMY = range(7)
_FIELDS = 7
_EMPTY = -1
# Slots of the accumulator's row-to-row state.
_USED, _BACKGROUND, _LAST_KEY, _LAST_SLOT = range(4)


@numba.njit(cache=True, nogil=True)
def _hash_slot(key: Any, mask: int) -> Any:
    # Fibonacci hashing spreads the colour keys over the table. The 48-bit keys of 16-bit
    # colours are folded first, so their red bits reach the slot; 24-bit keys fold to themselves.
    return (((key ^ (key >> 24)) * 2654435761) >> 7) & mask


@numba.njit(cache=True, nogil=True)
def _grow(keys: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    capacity = keys.shape[0] * 2
    new_keys = np.full(capacity, _EMPTY, dtype=np.int64)
    new_table = np.zeros((capacity, _FIELDS), dtype=np.int64)
    mask = capacity - 1
    for old in range(keys.shape[0]):
        key = keys[old]
        if key == _EMPTY:
            continue
        slot = _hash_slot(key, mask)
        while new_keys[slot] != _EMPTY:
            slot = (slot + 1) & mask
        new_keys[slot] = key
        new_table[slot, :] = table[old, :]
    return new_keys, new_table


@njit_unmanaged
def _room_for_one_more(keys: np.ndarray, table: np.ndarray, state: np.ndarray) -> bool:
    """Whether the accumulator can take one more colour without growing (half full at most)."""
    return (state[_USED] + 1) * 2 <= keys.shape[0]


@njit_unmanaged
def _add_run(
    key: Any,
    start: int,
    end: int,
    y: int,
    skip_black: bool,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
) -> None:
    """Add a run of pixels ``start..end-1`` of row ``y``, all of colour ``key``
    (``r << 16 | g << 8 | b``; 16-bit colours ``r << 32 | g << 16 | b``), to the accumulator,
    which must have room for one more colour (``_room_for_one_more``, else ``_grow`` it first:
    growing here would make every call return the arrays, which costs more than the rest of the
    call).

    ``state`` holds what carries from run to run: colours used, background pixels, and the last
    colour seen with its slot (the hash lookup is skipped while the colour repeats; whoever
    grows the accumulator forgets it, since growing moves the slots). With ``skip_black``,
    (0, 0, 0) is counted apart and not measured (Celantur background); without, it is measured
    like any colour (a ClearML label value may be black).
    """
    if key == 0 and skip_black:
        state[_BACKGROUND] += end - start
        return
    if key != state[_LAST_KEY]:
        state[_LAST_SLOT] = _slot_of(key, start, end, y, keys, table, state)
        state[_LAST_KEY] = key
    _add_to_slot(state[_LAST_SLOT], start, end, y, table)


@njit_unmanaged
def _slot_of(
    key: Any, start: int, end: int, y: int, keys: np.ndarray, table: np.ndarray, state: np.ndarray
) -> Any:
    """The accumulator's slot of colour ``key``; a new colour takes a free one, with the run
    ``start..end-1`` of row ``y`` as its first bounds (the accumulator must have room)."""
    mask = keys.shape[0] - 1
    slot = _hash_slot(key, mask)
    while keys[slot] != key and keys[slot] != _EMPTY:
        slot = (slot + 1) & mask
    if keys[slot] == _EMPTY:
        keys[slot] = key
        table[slot, _XMIN] = start
        table[slot, _XMAX] = end - 1
        table[slot, _YMIN] = y
        state[_USED] += 1
    return slot


@njit_unmanaged
def _add_to_slot(slot: Any, start: int, end: int, y: int, table: np.ndarray) -> None:
    """Add the run ``start..end-1`` of row ``y`` to the colour in ``slot``."""
    run = end - start
    table[slot, _COUNT] += run
    if start < table[slot, _XMIN]:
        table[slot, _XMIN] = start
    if end - 1 > table[slot, _XMAX]:
        table[slot, _XMAX] = end - 1
    # Rows are visited in order, so y only grows: the first visit set y_min.
    table[slot, _YMAX] = y
    # Sum of start..end-1; run * (first + last) is always even.
    table[slot, _SUMX] += run * (start + end - 1) // 2
    table[slot, _SUMY] += run * y


@numba.njit(cache=True, nogil=True)
def _measure_row(
    row: np.ndarray,
    y: int,
    skip_black: bool,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Add one (W, C>=3) row of 8- or 16-bit pixels to the accumulator (``_add_run``); returns
    it (it may have grown). Masks are long runs of one colour, so the row is walked run by run
    and the accumulator is touched once per run."""
    width = row.shape[0]
    bits = np.int64(8 * row.itemsize)  # a constant of each compiled dtype
    x = 0
    while x < width:
        r = row[x, 0]
        g = row[x, 1]
        b = row[x, 2]
        start = x
        x += 1
        while x < width and row[x, 0] == r and row[x, 1] == g and row[x, 2] == b:
            x += 1
        if not _room_for_one_more(keys, table, state):
            keys, table = _grow(keys, table)
            state[_LAST_KEY] = _EMPTY  # its slot moved
        key = (np.int64(r) << (2 * bits)) | (np.int64(g) << bits) | np.int64(b)
        _add_run(key, start, x, y, skip_black, keys, table, state)
    return keys, table


@numba.njit(cache=True, nogil=True)
def _colour_stats_kernel(
    pixels: np.ndarray, skip_black: bool, keys: np.ndarray, table: np.ndarray, state: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    for y in range(pixels.shape[0]):
        keys, table = _measure_row(pixels[y], y, skip_black, keys, table, state)
    return keys, table


@dataclass(frozen=True)
class ColourStats:
    """Statistics of every distinct non-background colour of one mask, sorted by colour.

    Bounding boxes follow the output convention: ``x_min``/``y_min`` inclusive,
    ``x_max``/``y_max`` exclusive. Centroids are the mean pixel coordinates (column, row),
    as in ``skimage.measure.regionprops`` (``centroid`` = (row, col)).
    """

    colours: np.ndarray  # (n, 3) uint8 (uint16 for 16-bit colours)
    pixels: np.ndarray  # (n,) int64
    x_min: np.ndarray
    y_min: np.ndarray
    x_max: np.ndarray
    y_max: np.ndarray
    centroid_x: np.ndarray  # (n,) float64
    centroid_y: np.ndarray
    width: int
    height: int
    background_pixels: int

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def keys(self) -> np.ndarray:
        """Each colour packed as ``r << 16 | g << 8 | b`` (int64; 16 bits a channel for 16-bit
        colours)."""
        c, bits = self.colours.astype(np.int64), 8 * self.colours.itemsize
        return np.asarray((c[:, 0] << (2 * bits)) | (c[:, 1] << bits) | c[:, 2])

    @property
    def foreground_pixels(self) -> int:
        """Pixels of any non-background colour."""
        return self.width * self.height - self.background_pixels


def colour_stats(rgb: np.ndarray, *, skip_black: bool = True) -> ColourStats:
    """Measure every distinct colour of an RGB(A) mask in one pass.

    Parameters
    ----------
    rgb : (H, W, C) uint8 or uint16 array with C >= 3; channels beyond the third (alpha) are
        ignored.
    skip_black : (0, 0, 0) is background, counted in ``background_pixels`` only (Celantur);
        when false it is measured like any colour (``background_pixels`` is then 0).

    Returns
    -------
    ColourStats sorted by colour value (R, G, B), so the result is deterministic.
    """
    check_colour_pixels(rgb.shape, rgb.dtype)
    accumulator = ColourAccumulator(skip_black)
    accumulator.keys, accumulator.table = _colour_stats_kernel(
        rgb, skip_black, accumulator.keys, accumulator.table, accumulator.state
    )
    return accumulator.result(int(rgb.shape[1]), int(rgb.shape[0]), 8 * rgb.itemsize)


def check_colour_pixels(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse pixels :func:`colour_stats` cannot measure.

    Raises
    ------
    ValueError
        Unless ``shape`` is (H, W, C>=3) and ``dtype`` uint8 or uint16.
    """
    if len(shape) != 3 or shape[2] < 3 or dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W, >=3) uint8 or uint16 array, got {shape} {dtype}")


class ColourAccumulator:
    """The per-colour accumulator of :func:`colour_stats`, for kernels that feed it row by row
    (``_measure_row``) as rows arrive, e.g. while a PNG is being inflated."""

    def __init__(self, skip_black: bool) -> None:
        self.skip_black = skip_black
        self.keys = np.full(1024, _EMPTY, dtype=np.int64)
        self.table = np.zeros((1024, _FIELDS), dtype=np.int64)
        self.state = np.array([0, 0, _EMPTY, 0], dtype=np.int64)

    def result(self, width: int, height: int, depth: int = 8) -> ColourStats:
        """The statistics of the rows measured so far, sorted by colour; ``depth`` is the bits
        per channel of the rows (8 or 16)."""
        # As few numpy calls as will do: this runs once per mask, on caches the mask's pixels
        # have just evicted (each call costs several times its in-cache time there).
        used = np.flatnonzero(self.keys != _EMPTY)
        order = used[np.argsort(self.keys[used])]  # keys are distinct: any sort is stable
        keys, table = self.keys[order], self.table[order]
        colours = (keys[:, None] >> np.array([2 * depth, depth, 0])) & ((1 << depth) - 1)
        counts = table[:, _COUNT]
        with np.errstate(invalid="ignore", divide="ignore"):
            centroid_x, centroid_y = table[:, [_SUMX, _SUMY]].T / counts
        return ColourStats(
            colours=colours.astype(np.uint16 if depth == 16 else np.uint8),
            pixels=counts,
            x_min=table[:, _XMIN],
            y_min=table[:, _YMIN],
            x_max=table[:, _XMAX] + 1,
            y_max=table[:, _YMAX] + 1,
            centroid_x=centroid_x,
            centroid_y=centroid_y,
            width=width,
            height=height,
            background_pixels=int(self.state[_BACKGROUND]),
        )


# ---------------------------------------------------------------------------------------------
# Foreground of an instance mask, as runs per row: what a binary mask is compared with
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _room_for_row(bounds: np.ndarray, count: int, width: int) -> np.ndarray:
    """``bounds`` with room after its first ``count`` runs for the most a row of ``width``
    pixels can hold, made before the pixel loop: growing inside it makes the loop ~14x slower.
    """
    needed = count + (width + 1) // 2
    if needed > bounds.shape[0]:
        grown = np.empty((max(needed, bounds.shape[0] * 2), 2), dtype=np.int32)
        grown[:count] = bounds[:count]
        return grown
    return bounds


@numba.njit(cache=True, nogil=True)
def _append_foreground(
    row: np.ndarray, y: int, bounds: np.ndarray, row_ends: np.ndarray
) -> np.ndarray:
    """Append the row's runs of non-black pixels (first three channels) to ``bounds``
    ((capacity, 2) int32 of [start, end)); ``row_ends[y]`` becomes the run count after row y.
    Returns ``bounds`` (it may have grown)."""
    count = row_ends[y - 1] if y > 0 else 0
    width = row.shape[0]
    bounds = _room_for_row(bounds, count, width)
    x = 0
    while x < width:
        if (row[x, 0] | row[x, 1] | row[x, 2]) == 0:
            x += 1
            continue
        start = x
        while x < width and (row[x, 0] | row[x, 1] | row[x, 2]) != 0:
            x += 1
        bounds[count, 0] = start
        bounds[count, 1] = x
        count += 1
    row_ends[y] = count
    return bounds


@numba.njit(cache=True, nogil=True)
def _foreground_kernel(pixels: np.ndarray, bounds: np.ndarray, row_ends: np.ndarray) -> np.ndarray:
    for y in range(pixels.shape[0]):
        bounds = _append_foreground(pixels[y], y, bounds, row_ends)
    return bounds


@dataclass(frozen=True)
class ForegroundRuns:
    """Where an instance mask is not background, as runs per row: ``bounds[i]`` is one run's
    [start, end) column span; the runs of row y are ``bounds[row_ends[y-1]:row_ends[y]]``.
    Masks are long runs, so this is a few KiB where the mask itself is megabytes."""

    bounds: np.ndarray  # (n, 2) int32
    row_ends: np.ndarray  # (height,) int64
    width: int
    height: int

    @classmethod
    def empty_buffers(cls, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Buffers for ``_append_foreground`` to fill (bounds grow as needed)."""
        return np.empty((256, 2), dtype=np.int32), np.zeros(height, dtype=np.int64)

    @classmethod
    def buffers_of(cls, runs: ForegroundRuns | None, height: int) -> tuple[np.ndarray, np.ndarray]:
        """``(bounds, row_ends)`` of ``runs`` for a binary row kernel to compare with, or empty
        ones (never read) without runs."""
        return (runs.bounds, runs.row_ends) if runs is not None else cls.empty_buffers(height)

    @classmethod
    def from_buffers(cls, bounds: np.ndarray, row_ends: np.ndarray, width: int) -> ForegroundRuns:
        """The runs once every row was appended."""
        count = int(row_ends[-1]) if len(row_ends) else 0
        return cls(bounds[:count].copy(), row_ends, width, len(row_ends))


def foreground_runs(rgb: np.ndarray) -> ForegroundRuns:
    """The non-background runs of an (H, W, C>=3) instance mask (alpha ignored)."""
    bounds, row_ends = ForegroundRuns.empty_buffers(rgb.shape[0])
    bounds = _foreground_kernel(rgb, bounds, row_ends)
    return ForegroundRuns.from_buffers(bounds, row_ends, int(rgb.shape[1]))


# ---------------------------------------------------------------------------------------------
# Binary masks
# ---------------------------------------------------------------------------------------------


@njit_unmanaged
def _binary_row(
    row: np.ndarray,
    channels: int,
    y: int,
    threshold: int,
    bounds: np.ndarray,
    row_ends: np.ndarray,
    foreground: np.ndarray,
    compare: bool,
) -> tuple[int, int]:
    """Anonymised pixels of one binary-mask row (``row``: the row's samples, ``channels`` per
    pixel) and, with ``compare``, how many disagree with the instance foreground runs of the
    same row (``foreground`` is a W-byte scratch row)."""
    width = row.shape[0] // channels
    if compare:
        foreground[:] = 0
        for i in range(row_ends[y - 1] if y > 0 else 0, row_ends[y]):
            foreground[bounds[i, 0] : bounds[i, 1]] = 1
    anonymised = 0
    mismatch = 0
    # Separate loops per case keep each one branch-free, so the compiler vectorises the grey
    # ones (the common binary mask).
    if channels == 1 and compare:
        for x in range(width):
            hidden = row[x] >= threshold
            anonymised += hidden
            mismatch += hidden != (foreground[x] != 0)
    elif channels == 1:
        for x in range(width):
            anonymised += row[x] >= threshold
    else:
        for x in range(width):
            j = x * channels
            level = row[j]
            if channels >= 3:
                level = max(level, row[j + 1], row[j + 2])
            hidden = level >= threshold
            anonymised += hidden
            if compare:
                mismatch += hidden != (foreground[x] != 0)
    return anonymised, mismatch


@numba.njit(cache=True, nogil=True)
def _binary_kernel(
    binary: np.ndarray, threshold: int, bounds: np.ndarray, row_ends: np.ndarray, compare: bool
) -> tuple[int, int]:
    height, width, channels = binary.shape
    foreground = np.zeros(width, dtype=np.uint8)
    anonymised = 0
    mismatch = 0
    for y in range(height):
        hidden, differ = _binary_row(
            binary[y].reshape(width * channels), channels, y, threshold, bounds, row_ends,
            foreground, compare,
        )  # fmt: skip
        anonymised += hidden
        mismatch += differ
    return anonymised, mismatch


def binary_threshold(dtype: np.dtype) -> int:
    """The level from which a binary-mask pixel counts as anonymised: mid-grey, because
    resampled binary masks have grey edges."""
    return 128 * 257 if dtype == np.uint16 else 128


def binary_stats(
    binary: np.ndarray, foreground: ForegroundRuns | None = None
) -> tuple[int, int | None]:
    """One pass over a binary mask: anonymised pixels (grey >= 128, the brightest colour channel
    for RGB; alpha ignored) and, given the foreground of the instance mask of the same image and
    size (:func:`foreground_runs`), how many pixels disagree with it.

    Returns ``(anonymised, mismatch)``; ``mismatch`` is ``None`` without a comparable instance
    mask.
    """
    if binary.ndim == 2:
        binary = binary[:, :, np.newaxis]
    binary = np.ascontiguousarray(binary)  # the kernel reads each row as one run of samples
    compare = foreground is not None and (foreground.height, foreground.width) == binary.shape[:2]
    bounds, row_ends = (
        (foreground.bounds, foreground.row_ends)
        if compare and foreground is not None
        else ForegroundRuns.empty_buffers(binary.shape[0])
    )
    anonymised, mismatch = _binary_kernel(
        binary, binary_threshold(binary.dtype), bounds, row_ends, compare
    )
    return int(anonymised), int(mismatch) if compare else None


# ---------------------------------------------------------------------------------------------
# Rescaled masks, sampled straight into PNG scanlines
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _sample_row(
    row: np.ndarray, cols: np.ndarray, above: np.ndarray, first: bool, out_row: np.ndarray
) -> None:
    """One UP-filtered scanline of the nearest-neighbour sample ``row[cols]`` of a (W, C) row;
    ``above`` holds the previous sampled row (unfiltered) and becomes this one."""
    channels = row.shape[1]
    out_row[0] = 2  # PNG filter type UP
    # Gather first, then filter (_up_filter) in a second loop.
    for c in range(cols.shape[0]):
        x = cols[c]
        for k in range(channels):
            out_row[1 + c * channels + k] = row[x, k]
    _up_filter(out_row, above, first)


@numba.njit(cache=True, nogil=True)
def _up_filter(out_row: np.ndarray, above: np.ndarray, first: bool) -> None:
    """UP-filter the sampled pixels in ``out_row[1:]`` in place against ``above`` (the previous
    sampled row, unfiltered), which becomes this row; branch-free, so the compiler vectorises
    it."""
    if first:
        # Element by element: a slice copy may allocate, which kernels compiled without
        # numba's reference counting (njit_unmanaged callers) cannot.
        for i in range(above.shape[0]):
            above[i] = out_row[1 + i]
        return
    for i in range(above.shape[0]):
        value = out_row[1 + i]
        out_row[1 + i] = value - above[i]  # uint8 wraps mod 256
        above[i] = value


@numba.njit(cache=True, nogil=True)
def _nearest_up_filtered(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    channels = pixels.shape[2]
    out = np.empty((rows.shape[0], cols.shape[0] * channels + 1), dtype=np.uint8)
    above = np.empty(cols.shape[0] * channels, dtype=np.uint8)
    for r in range(rows.shape[0]):
        _sample_row(pixels[rows[r]], cols, above, r == 0, out[r])
    return out


def nearest_up_filtered(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """PNG scanlines (UP filter) of the nearest-neighbour sample ``pixels[rows][:, cols]`` of an
    (H, W, C) uint8 mask, in one pass: rescaling and filtering without the sampled copy."""
    return _nearest_up_filtered(pixels, rows.astype(np.int64), cols.astype(np.int64))
