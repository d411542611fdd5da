"""Measuring PNG masks a strip of decoded rows at a time.

The Celantur flavours the fused path does not take (16-bit, palette, low-bit-depth, interlaced
and grey instance masks) and every ClearML PNG mask are decoded strip by strip
(:func:`~pipeline.io.png.decode_strips`) and each strip goes to the row kernels
(:mod:`pipeline.kernels.rows`, :class:`~pipeline.kernels.masks.AlphaAccumulator`) and, for a
rescale, to the sampled rows: memory is a strip, the accumulators and the rescaled mask, never
the decoded image. Results equal decode + whole-image kernels (``tests/test_fused.py`` and
``tests/test_streamed_clearml.py`` hold them to it).
"""

from __future__ import annotations

import numpy as np

from pipeline.io.png import PngError, PngHeader, decode_strips, encode_png
from pipeline.kernels.masks import AlphaAccumulator, AlphaStats, label_values, nearest_grid, to_rgb8
from pipeline.kernels.rows import binary_rows, colour_rows, instance_rows
from pipeline.kernels.segments import (
    ColourAccumulator,
    ColourStats,
    ForegroundRuns,
    binary_threshold,
)


class Sampled:
    """The rows of a nearest-neighbour rescale, gathered from strips as they pass (the same
    pixels :func:`~pipeline.stages.common.scaled_png` samples from the whole image)."""

    def __init__(self, header: PngHeader, scale: int | None) -> None:
        self.scale = scale
        sampling = scale is not None and scale != 100
        self.rows: np.ndarray = np.empty(0, np.int64)
        self.cols: np.ndarray = np.empty(0, np.int64)
        if sampling and scale is not None:
            self.rows, self.cols = nearest_grid(header.width, header.height, scale)
        self.pixels: np.ndarray | None = None
        self.done = 0

    def add(self, first_row: int, strip: np.ndarray) -> None:
        """Keep the sampled pixels of the strip whose first row is ``first_row``."""
        if not len(self.rows):
            return
        if self.pixels is None:
            shape = (len(self.rows), len(self.cols), strip.shape[2])
            self.pixels = np.empty(shape, dtype=strip.dtype)
        end = int(np.searchsorted(self.rows, first_row + strip.shape[0]))
        if end > self.done:
            picked = self.rows[self.done : end] - first_row
            self.pixels[self.done : end] = strip[picked][:, self.cols]
            self.done = end

    def png(self, data: bytes) -> bytes | None:
        """The rescaled PNG of the mask whose file is ``data`` (``None`` without a scale), as
        :func:`~pipeline.stages.common.scaled_png` encodes it."""
        if self.scale is None:
            return None
        if self.scale == 100:
            return data
        assert self.pixels is not None, "every row of a checked PNG was decoded"
        return encode_png(self.pixels)


def streamed_instance(
    data: bytes, header: PngHeader, scale: int | None
) -> tuple[ColourStats, ForegroundRuns, bytes | None]:
    """Colours, foreground runs and rescaled PNG of a checked instance mask.

    Raises
    ------
    PngError
        As :func:`~pipeline.io.png.decode_strips`; ``unsupported`` for 16-bit values that are
        not widened 8-bit values (:func:`~pipeline.kernels.masks.to_rgb8`).
    """
    colours = ColourAccumulator(skip_black=True)
    bounds, row_ends = ForegroundRuns.empty_buffers(header.height)
    sampled = Sampled(header, scale)
    for first_row, strip in decode_strips(data, header):
        try:
            rgb = np.ascontiguousarray(to_rgb8(strip))
        except ValueError as exc:
            raise PngError("unsupported", str(exc)) from exc
        colours.keys, colours.table, bounds = instance_rows(
            rgb, first_row, colours.keys, colours.table, colours.state, bounds, row_ends
        )
        sampled.add(first_row, strip)
    return (
        colours.result(header.width, header.height),
        ForegroundRuns.from_buffers(bounds, row_ends, header.width),
        sampled.png(data),
    )


def streamed_binary(
    data: bytes, header: PngHeader, scale: int | None, foreground: ForegroundRuns | None
) -> tuple[int, int | None, bytes | None]:
    """Anonymised pixels, mismatch with ``foreground`` (``None`` without one) and rescaled PNG
    of a checked binary mask of the same size as ``foreground``.

    Raises
    ------
    PngError
        As :func:`~pipeline.io.png.decode_strips`.
    """
    compare = foreground is not None
    bounds, row_ends = ForegroundRuns.buffers_of(foreground, header.height)
    scratch = np.zeros(header.width, dtype=np.uint8)
    counts = np.zeros(2, dtype=np.int64)
    sampled = Sampled(header, scale)
    threshold = binary_threshold(np.dtype(np.uint16 if header.bit_depth == 16 else np.uint8))
    for first_row, strip in decode_strips(data, header):
        rows = np.ascontiguousarray(strip)
        binary_rows(rows, first_row, threshold, bounds, row_ends, scratch, compare, counts)
        sampled.add(first_row, strip)
    return int(counts[0]), int(counts[1]) if compare else None, sampled.png(data)


def streamed_labels(
    data: bytes, header: PngHeader, scale: int | None
) -> tuple[ColourStats, bool, bytes | None]:
    """Per-value statistics of a checked pixel-segmentation mask (black measured like any
    value; 16-bit colours at their full 16 bits a channel), whether its values are grey, and
    its rescaled PNG: what :func:`~pipeline.kernels.masks.label_values` and
    :func:`~pipeline.kernels.segments.colour_stats` give of the decoded image.

    Raises
    ------
    PngError
        As :func:`~pipeline.io.png.decode_strips`.
    """
    colours = ColourAccumulator(skip_black=False)
    sampled = Sampled(header, scale)
    grey, depth = False, 8
    for first_row, strip in decode_strips(data, header):
        sampled.add(first_row, strip)
        rgb, grey = label_values(strip)
        depth = 8 * rgb.itemsize
        colours.keys, colours.table = colour_rows(
            np.ascontiguousarray(rgb), first_row, False, colours.keys, colours.table, colours.state
        )
    return colours.result(header.width, header.height, depth), grey, sampled.png(data)


def streamed_alpha(
    data: bytes, header: PngHeader, scale: int | None
) -> tuple[AlphaStats, bytes | None]:
    """:func:`~pipeline.kernels.masks.alpha_stats` of a checked alpha mask, and its rescaled
    PNG.

    Raises
    ------
    PngError
        As :func:`~pipeline.io.png.decode_strips`.
    """
    alpha = AlphaAccumulator()
    sampled = Sampled(header, scale)
    for first_row, strip in decode_strips(data, header):
        alpha.add(first_row, strip)
        sampled.add(first_row, strip)
    return alpha.result(), sampled.png(data)
