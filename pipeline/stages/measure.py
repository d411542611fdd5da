"""Measuring one Celantur mask file: fused where the PNG allows it, decode + kernels otherwise.

The fused path inflates the image data a strip at a time and measures each row as it is
unfiltered (:mod:`pipeline.kernels.scanlines`): the decoded image is never built, and with
zlib-ng inflating, the whole measurement takes less time than decoding the file with libspng.
It takes the common flavours — 8-bit, non-interlaced RGB/RGBA instance masks and grey / grey+alpha
/ RGB / RGBA binary masks; every other flavour (palette, 16-bit, low bit depths, grey instance
masks, interlaced) is decoded a strip of rows at a time (:mod:`pipeline.stages.streamed`) into
the same row kernels. ``fused=False`` decodes the whole image
(:func:`~pipeline.io.png.decode_checked_png`) for the whole-image kernels, the reference: all
paths give identical results (``tests/test_fused.py`` proves it on every test mask and on random
ones of every flavour with every PNG filter type).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from pipeline.io.png import (
    PngError,
    PngHeader,
    checked_header,
    decode_checked_png,
    encode_filtered_png,
    inflate_scanlines,
)
from pipeline.kernels.masks import nearest_grid, to_rgb8
from pipeline.kernels.scanlines import ROWS_OK, binary_strip, instance_strip
from pipeline.kernels.segments import (
    ColourAccumulator,
    ColourStats,
    ForegroundRuns,
    binary_stats,
    binary_threshold,
    colour_stats,
    foreground_runs,
)
from pipeline.stages.common import scaled_png
from pipeline.stages.streamed import streamed_binary, streamed_instance

_RGB, _RGBA, _GREY, _GREY_ALPHA = 2, 6, 0, 4
_FUSED_INSTANCE_TYPES = (_RGB, _RGBA)
_FUSED_BINARY_TYPES = (_GREY, _GREY_ALPHA, _RGB, _RGBA)


@dataclass(frozen=True)
class InstanceMeasure:
    """An instance mask's colours, its foreground (for the binary mask of the same image) and,
    when asked for, the rescaled mask as PNG bytes."""

    header: PngHeader
    stats: ColourStats
    foreground: ForegroundRuns
    scaled: bytes | None


@dataclass(frozen=True)
class BinaryMeasure:
    """A binary mask's anonymised pixels, its disagreement with the instance mask's foreground
    (``None`` without an instance mask of the same size) and the rescaled mask."""

    header: PngHeader
    anonymised: int
    mismatch: int | None
    scaled: bytes | None


def measure_instance(
    data: bytes, *, max_pixels: int, scale: int | None, fused: bool = True
) -> InstanceMeasure:
    """Measure a Celantur instance mask (black is background).

    Parameters
    ----------
    data : the PNG file's bytes.
    max_pixels : refuse larger images before allocating anything.
    scale : percent for the rescaled mask, ``None`` for none.
    fused : take the fused path where the PNG allows it (``False`` forces decode + kernels,
        for comparisons).

    Raises
    ------
    PngError
        For input that is not an acceptable PNG, or (``unsupported``) a 16-bit mask whose
        values are not widened 8-bit values.
    """
    header = checked_header(data, max_pixels=max_pixels)
    if fused and _fusable(header, _FUSED_INSTANCE_TYPES):
        return _fused_instance(data, header, scale)
    if fused:
        return InstanceMeasure(header, *streamed_instance(data, header, scale))
    pixels = decode_checked_png(data, header)
    try:
        rgb = to_rgb8(pixels)
    except ValueError as exc:
        raise PngError("unsupported", str(exc)) from exc
    return InstanceMeasure(
        header, colour_stats(rgb), foreground_runs(rgb), _scaled(data, pixels, scale)
    )


def measure_binary(
    data: bytes,
    *,
    max_pixels: int,
    scale: int | None,
    foreground: ForegroundRuns | None,
    fused: bool = True,
) -> BinaryMeasure:
    """Measure a Celantur binary mask, compared with ``foreground`` (the instance mask's) when
    given and of the same size. Parameters and errors as :func:`measure_instance`."""
    header = checked_header(data, max_pixels=max_pixels)
    if foreground is not None and (foreground.width, foreground.height) != (
        header.width,
        header.height,
    ):
        foreground = None
    if fused and _fusable(header, _FUSED_BINARY_TYPES):
        return _fused_binary(data, header, scale, foreground)
    if fused:
        return BinaryMeasure(header, *streamed_binary(data, header, scale, foreground))
    pixels = decode_checked_png(data, header)
    anonymised, mismatch = binary_stats(pixels, foreground)
    return BinaryMeasure(header, anonymised, mismatch, _scaled(data, pixels, scale))


def _fusable(header: PngHeader, colour_types: tuple[int, ...]) -> bool:
    return header.bit_depth == 8 and not header.interlaced and header.colour_type in colour_types


def _scaled(data: bytes, pixels: np.ndarray, scale: int | None) -> bytes | None:
    return None if scale is None else scaled_png(data, pixels, scale)


@functools.lru_cache(maxsize=16)
def _sampling(width: int, height: int, scale: int | None) -> tuple[np.ndarray, ...]:
    """The rows and columns a rescale to ``scale`` samples, and for each pixel x the number of
    sampled columns before it (``first_col`` of the strip kernels). Kept per mask size: a run's
    masks mostly share one, and computing them costs ~0.05 ms a mask; shared by the masks (and
    threads) of that size, so never written."""
    # 100 % is a byte copy of the file (see scaled_png): nothing to sample.
    rows, cols = (
        nearest_grid(width, height, scale)
        if scale is not None and scale != 100
        else (np.empty(0, np.int64), np.empty(0, np.int64))
    )
    return rows, cols, np.searchsorted(cols, np.arange(width + 1))


class _Rescaled:
    """The buffers a strip kernel fills with the rescaled mask's PNG scanlines."""

    def __init__(self, header: PngHeader, scale: int | None) -> None:
        channels = header.channels
        rows, cols, self.first_col = _sampling(header.width, header.height, scale)
        self.scale = scale
        self.channels = channels
        self.rows, self.cols = rows, cols
        self.above = np.zeros(len(cols) * channels, dtype=np.uint8)
        # Zeros: the strip kernels write a scanline's filter type and the bytes that are not
        # zeros only (zeroing each scanline in the kernel cost ~0.3 ms a 1080p mask).
        self.scanlines = np.zeros((len(rows), 1 + len(cols) * channels), dtype=np.uint8)
        self.progress = np.zeros(1, dtype=np.int64)
        # What the strip kernels carry from strip to strip (see instance_strip): the sampled
        # runs of the scanline above the first are one black run.
        self.sampled = np.zeros((2, 2, len(cols) + 1), dtype=np.int64)
        self.sampled[0, 0, -1] = len(cols)
        self.memory = np.array([0, 0, 1], dtype=np.int64)

    def png(self, data: bytes) -> bytes | None:
        if self.scale is None:
            return None
        if self.scale == 100:
            return data
        return encode_filtered_png(self.scanlines, len(self.cols), self.channels)


def _row_buffers(header: PngHeader) -> np.ndarray:
    # Two unfiltered rows, alternating by row parity; zeros are the row above the first. Each is
    # padded to whole 8-byte words, which the kernels read as uint64 (the padding stays zero).
    words = -(-header.width * header.channels // 8)
    return np.zeros((2, words * 8), dtype=np.uint8)


def _check_rows(bad_row: int) -> None:
    if bad_row != ROWS_OK:
        message = f"invalid scanline filter in row {bad_row}"
        raise PngError("corrupt", f"PNG image data could not be decoded: {message}")


def _fused_instance(data: bytes, header: PngHeader, scale: int | None) -> InstanceMeasure:
    lines = _row_buffers(header)
    colours = ColourAccumulator(skip_black=True)
    bounds, row_ends = ForegroundRuns.empty_buffers(header.height)
    rescaled = _Rescaled(header, scale)
    starts = np.empty((2, header.width + 1), dtype=np.int64)  # the last two rows' runs
    for first_row, raw in inflate_scanlines(data, header):
        colours.keys, colours.table, bounds, bad_row = instance_strip(
            raw, first_row, header.width, header.channels, lines,
            colours.keys, colours.table, colours.state, bounds, row_ends,
            rescaled.rows, rescaled.cols, rescaled.first_col, rescaled.above, rescaled.sampled,
            rescaled.scanlines, rescaled.progress, starts, rescaled.memory,
        )  # fmt: skip
        _check_rows(bad_row)
    return InstanceMeasure(
        header,
        colours.result(header.width, header.height),
        ForegroundRuns.from_buffers(bounds, row_ends, header.width),
        rescaled.png(data),
    )


def _fused_binary(
    data: bytes, header: PngHeader, scale: int | None, foreground: ForegroundRuns | None
) -> BinaryMeasure:
    lines = _row_buffers(header)
    compare = foreground is not None
    bounds, row_ends = ForegroundRuns.buffers_of(foreground, header.height)
    scratch = np.zeros(header.width, dtype=np.uint8)
    counts = np.zeros(2, dtype=np.int64)
    rescaled = _Rescaled(header, scale)
    sampled_row = np.zeros_like(lines[0])  # the source row of the last scanline
    threshold = binary_threshold(np.dtype(np.uint8))
    for first_row, raw in inflate_scanlines(data, header):
        bad_row = binary_strip(
            raw, first_row, header.width, header.channels, lines, threshold,
            bounds, row_ends, scratch, compare, counts,
            rescaled.rows, rescaled.cols, rescaled.first_col, rescaled.above, sampled_row,
            rescaled.scanlines, rescaled.progress, rescaled.memory,
        )  # fmt: skip
        _check_rows(bad_row)
    return BinaryMeasure(
        header,
        int(counts[0]),
        int(counts[1]) if compare else None,
        rescaled.png(data),
    )
