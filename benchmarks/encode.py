"""Section 4: writing a rescaled mask: our UP filter + zlib-ng deflate at a few levels against
Pillow (adaptive filters, zlib) at its default level and at level 1.

The mask is rescaled with the pipeline's own nearest-neighbour rescale; both encodings must
decode back to it exactly before they are timed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.timing import (
    BenchmarkError,
    format_ms,
    format_ratio,
    print_table,
    ratio,
    time_interleaved,
)
from pipeline.io.png import DEFAULT_COMPRESS_LEVEL, decode_png, encode_png
from pipeline.kernels.masks import rescale_nearest

OURS = f"encode_png, zlib-ng level {DEFAULT_COMPRESS_LEVEL} (ours)"
PILLOW = "Pillow save, default level (6)"
PILLOW_FAST = "Pillow save, level 1 (zlib)"
RESCALE = "rescale_nearest"


def _pillow(pixels: np.ndarray, level: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def run(mask: np.ndarray, percent: int, repeats: int) -> dict[str, Any]:
    """Rescale ``mask`` to ``percent``, time both encoders, print a table, return the figures."""
    scaled = rescale_nearest(mask, percent)
    encoders: dict[str, Callable[[np.ndarray], bytes]] = {
        OURS: encode_png,
        "encode_png, zlib-ng level 1": partial(encode_png, compress_level=1),
        "encode_png, zlib-ng level 6": partial(encode_png, compress_level=6),
        PILLOW: _pillow,
        PILLOW_FAST: partial(_pillow, level=1),
    }
    sizes: dict[str, int] = {}
    for label, encoder in encoders.items():
        data = encoder(scaled)
        if not np.array_equal(decode_png(data), scaled):
            raise BenchmarkError(f"{label} does not round-trip the rescaled mask")
        sizes[label] = len(data)
    calls: dict[str, Callable[[], object]] = {
        label: partial(encoder, scaled) for label, encoder in encoders.items()
    }
    calls[RESCALE] = partial(rescale_nearest, mask, percent)
    timings = time_interleaved(calls, repeats=repeats)
    rescale = timings.pop(RESCALE)
    height, width = scaled.shape[:2]
    base_ms, base_bytes = timings[OURS].median_ms, sizes[OURS]
    figures: dict[str, Any] = {
        "source": {"width": int(mask.shape[1]), "height": int(mask.shape[0])},
        "scaled": {"width": width, "height": height, "percent": percent},
        "rescale_nearest": rescale.as_dict(),
        "encoders": {
            label: {
                **timing.as_dict(), "bytes": sizes[label],
                "time_ratio_vs_ours": ratio(timing.median_ms, base_ms),
                "size_ratio_vs_ours": ratio(sizes[label], base_bytes),
            }
            for label, timing in timings.items()
        },
    }  # fmt: skip
    rows = [
        [label, format_ms(t.median_ms), str(t.repeats), f"{sizes[label]:,}",
         format_ratio(ratio(t.median_ms, base_ms)), format_ratio(ratio(sizes[label], base_bytes))]
        for label, t in timings.items()
    ]  # fmt: skip
    rows.append(["  (rescale_nearest itself)", format_ms(rescale.median_ms), str(repeats),
                 "", "", ""])  # fmt: skip
    print_table(
        f"4. Rescaled-mask encode: {mask.shape[1]}x{mask.shape[0]} at {percent}% = "
        f"{width}x{height} (median ms per mask)",
        ["encoder", "ms/mask", "runs", "bytes", "time / ours", "bytes / ours"],
        rows,
    )
    return figures
