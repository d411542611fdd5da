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

# Columns of the kernel's accumulator table.
_COUNT, _XMIN, _XMAX, _YMIN, _YMAX, _SUMX, _SUMY = range(7)
_FIELDS = 7
_EMPTY = -1


@numba.njit(cache=True, nogil=True)
def _hash_slot(key: Any, mask: int) -> Any:
    # Fibonacci hashing spreads the 24-bit colour keys over the table.
    return ((key * 2654435761) >> 7) & mask


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


@numba.njit(cache=True, nogil=True)
def _colour_stats_kernel(
    pixels: np.ndarray, skip_black: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """One pass over an (H, W, C>=3) uint8 image; returns (keys, table, black_pixels).

    With ``skip_black``, (0, 0, 0) is counted apart and not measured (Celantur background);
    without, it is measured like any colour (a ClearML label value may be black).

    Masks are long runs of one colour, so each row is walked run by run and the accumulator is
    touched once per run; the hash lookup is skipped while the colour repeats.
    """
    height, width = pixels.shape[0], pixels.shape[1]
    capacity = 1024
    keys = np.full(capacity, _EMPTY, dtype=np.int64)
    table = np.zeros((capacity, _FIELDS), dtype=np.int64)
    used = 0
    background = 0
    last_key: Any = _EMPTY
    last_slot = 0
    for y in range(height):
        x = 0
        while x < width:
            r = pixels[y, x, 0]
            g = pixels[y, x, 1]
            b = pixels[y, x, 2]
            start = x
            x += 1
            while (
                x < width and pixels[y, x, 0] == r and pixels[y, x, 1] == g and pixels[y, x, 2] == b
            ):
                x += 1
            run = x - start
            key = (np.int64(r) << 16) | (np.int64(g) << 8) | np.int64(b)
            if key == 0 and skip_black:
                background += run
                continue
            if key != last_key:
                mask = capacity - 1
                slot = _hash_slot(key, mask)
                while keys[slot] != key and keys[slot] != _EMPTY:
                    slot = (slot + 1) & mask
                if keys[slot] == _EMPTY:
                    if (used + 1) * 2 > capacity:
                        keys, table = _grow(keys, table)
                        capacity = keys.shape[0]
                        mask = capacity - 1
                        slot = _hash_slot(key, mask)
                        while keys[slot] != _EMPTY:
                            slot = (slot + 1) & mask
                    keys[slot] = key
                    table[slot, _XMIN] = start
                    table[slot, _XMAX] = x - 1
                    table[slot, _YMIN] = y
                    used += 1
                last_key = key
                last_slot = slot
            table[last_slot, _COUNT] += run
            if start < table[last_slot, _XMIN]:
                table[last_slot, _XMIN] = start
            if x - 1 > table[last_slot, _XMAX]:
                table[last_slot, _XMAX] = x - 1
            # Rows are visited in order, so y only grows: the first visit set y_min.
            table[last_slot, _YMAX] = y
            # Sum of start..x-1; run * (first + last) is always even.
            table[last_slot, _SUMX] += run * (start + x - 1) // 2
            table[last_slot, _SUMY] += run * y
    return keys, table, background


@dataclass(frozen=True)
class ColourStats:
    """Statistics of every distinct non-background colour of one mask, sorted by colour.

    Bounding boxes follow the output convention: ``x_min``/``y_min`` inclusive,
    ``x_max``/``y_max`` exclusive. Centroids are the mean pixel coordinates (column, row),
    as in ``skimage.measure.regionprops`` (``centroid`` = (row, col)).
    """

    colours: np.ndarray  # (n, 3) uint8
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
        """Each colour packed as ``r << 16 | g << 8 | b`` (int64)."""
        c = self.colours.astype(np.int64)
        return np.asarray((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2])

    @property
    def foreground_pixels(self) -> int:
        """Pixels of any non-background colour."""
        return self.width * self.height - self.background_pixels


def colour_stats(rgb: np.ndarray, *, skip_black: bool = True) -> ColourStats:
    """Measure every distinct colour of an RGB(A) mask in one pass.

    Parameters
    ----------
    rgb : (H, W, C) uint8 array with C >= 3; channels beyond the third (alpha) are ignored.
    skip_black : (0, 0, 0) is background, counted in ``background_pixels`` only (Celantur);
        when false it is measured like any colour (``background_pixels`` is then 0).

    Returns
    -------
    ColourStats sorted by colour value (R, G, B), so the result is deterministic.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, >=3) uint8 array, got {rgb.shape} {rgb.dtype}")
    keys, table, background = _colour_stats_kernel(rgb, skip_black)
    used = keys != _EMPTY
    keys, table = keys[used], table[used]
    order = np.argsort(keys, kind="stable")
    keys, table = keys[order], table[order]
    colours = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=1).astype(np.uint8)
    counts = table[:, _COUNT]
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid_x = table[:, _SUMX] / counts
        centroid_y = table[:, _SUMY] / counts
    return ColourStats(
        colours=colours,
        pixels=counts,
        x_min=table[:, _XMIN],
        y_min=table[:, _YMIN],
        x_max=table[:, _XMAX] + 1,
        y_max=table[:, _YMAX] + 1,
        centroid_x=centroid_x,
        centroid_y=centroid_y,
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
        background_pixels=int(background),
    )


@numba.njit(cache=True, nogil=True)
def _binary_kernel(
    binary: np.ndarray, threshold: int, instance: np.ndarray, compare: bool
) -> tuple[int, int]:
    height, width, channels = binary.shape
    colour = channels >= 3
    anonymised = 0
    mismatch = 0
    for y in range(height):
        for x in range(width):
            level = binary[y, x, 0]
            if colour:
                level = max(level, binary[y, x, 1], binary[y, x, 2])
            hidden = level >= threshold
            anonymised += hidden
            if compare:
                foreground = (instance[y, x, 0] | instance[y, x, 1] | instance[y, x, 2]) != 0
                mismatch += hidden != foreground
    return anonymised, mismatch


def binary_stats(binary: np.ndarray, instance: np.ndarray | None = None) -> tuple[int, int | None]:
    """One pass over a binary mask: anonymised pixels (grey >= 128, the brightest colour channel
    for RGB; alpha ignored) and, given the instance mask of the same image and size, how many
    pixels disagree with its non-background pixels.

    Returns ``(anonymised, mismatch)``; ``mismatch`` is ``None`` without a comparable instance
    mask.
    """
    if binary.ndim == 2:
        binary = binary[:, :, np.newaxis]
    # Resampled binary masks have grey edges: from mid-grey on, a pixel counts as anonymised.
    threshold = 128 * 257 if binary.dtype == np.uint16 else 128
    compare = instance is not None and instance.shape[:2] == binary.shape[:2]
    other = instance if compare and instance is not None else np.zeros((1, 1, 3), np.uint8)
    anonymised, mismatch = _binary_kernel(binary, threshold, other, compare)
    return int(anonymised), int(mismatch) if compare else None


@numba.njit(cache=True, nogil=True)
def _nearest_up_filtered(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    channels = pixels.shape[2]
    out = np.empty((rows.shape[0], cols.shape[0] * channels + 1), dtype=np.uint8)
    for r in range(rows.shape[0]):
        out[r, 0] = 2  # PNG filter type UP
        y = rows[r]
        above = rows[r - 1] if r > 0 else -1
        for c in range(cols.shape[0]):
            x = cols[c]
            for k in range(channels):
                value = pixels[y, x, k]
                if above >= 0:
                    value = value - pixels[above, x, k]  # uint8 arithmetic wraps mod 256
                out[r, 1 + c * channels + k] = value
    return out


def nearest_up_filtered(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """PNG scanlines (UP filter) of the nearest-neighbour sample ``pixels[rows][:, cols]`` of an
    (H, W, C) uint8 mask, in one pass: rescaling and filtering without the sampled copy."""
    return _nearest_up_filtered(pixels, rows.astype(np.int64), cols.astype(np.int64))
