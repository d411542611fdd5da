"""Section 2: PNG bytes to pixels, ours (checks + libspng) against standalone decoders.

Every decoder gets the same encoded bytes and must return exactly the drawn mask before it is
timed. ``imageio`` is optional: when it is not installed its row is skipped.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from benchmarks.timing import (
    BenchmarkError,
    format_ms,
    format_ratio,
    print_table,
    ratio,
    time_interleaved,
)
from pipeline.io.png import DEFAULT_MAX_PIXELS, check_png_structure, decode_png, read_png_header
from pipeline.stages.measure import measure_instance

OURS = "decode_png (ours: checks + libspng)"
#: Not a decoder: what a run does instead of decoding an RGB instance mask.
FUSED = "fused measure, no image built (checks + zlib-ng inflate + unfilter + colour stats)"
CHECKS_ONLY = "  of which header + chunk/CRC walk"


def _checks(data: bytes) -> None:
    read_png_header(data)
    check_png_structure(data)


def _pyspng(data: bytes) -> np.ndarray:
    import pyspng

    return np.asarray(pyspng.load(data))


def _pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def standalone_decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    """The standalone decoders available here (``imageio`` only when installed)."""
    decoders: dict[str, Callable[[bytes], np.ndarray]] = {
        "pyspng.load": _pyspng,
        "PIL open + convert('RGB') + asarray": _pillow,
    }
    try:
        import imageio.v3 as iio
    except ImportError:
        return decoders

    def imageio_read(data: bytes) -> np.ndarray:
        return np.asarray(iio.imread(data, extension=".png"))

    decoders["imageio.v3.imread"] = imageio_read
    return decoders


def run(
    encoded: dict[str, bytes], expected: dict[str, np.ndarray], repeats: dict[str, int]
) -> dict[str, Any]:
    """Verify every decoder on every file, time them, print one table, return the figures.

    Parameters
    ----------
    encoded : name -> PNG bytes.
    expected : name -> the array those bytes were encoded from.
    repeats : name -> timed repeats per decoder.
    """
    decoders: dict[str, Callable[[bytes], Any]] = {OURS: decode_png, **standalone_decoders()}
    figures: dict[str, Any] = {"files": {}}
    rows = []
    for name, data in encoded.items():
        for label, decoder in decoders.items():
            pixels = np.asarray(decoder(data))
            if pixels.shape != expected[name].shape or not np.array_equal(pixels, expected[name]):
                raise BenchmarkError(f"{name}: {label} does not return the encoded mask exactly")
        calls: dict[str, Callable[[], object]] = {
            label: partial(decoder, data) for label, decoder in decoders.items()
        }
        calls[CHECKS_ONLY] = partial(_checks, data)
        calls[FUSED] = partial(measure_instance, data, max_pixels=DEFAULT_MAX_PIXELS, scale=None)
        timings = time_interleaved(calls, repeats=repeats[name])
        standalone = {k: v for k, v in timings.items() if k not in (OURS, CHECKS_ONLY, FUSED)}
        fastest = min(standalone, key=lambda k: standalone[k].median_ms)
        base = standalone[fastest].median_ms
        height, width = expected[name].shape[:2]
        entry: dict[str, Any] = {
            "width": width, "height": height, "png_bytes": len(data), "fastest_standalone": fastest,
            "decoders": {},
        }  # fmt: skip
        order = [FUSED, OURS, CHECKS_ONLY, *standalone]
        for label in order:
            timing = timings[label]
            factor = ratio(timing.median_ms, base)
            entry["decoders"][label.strip()] = {**timing.as_dict(), "ratio_vs_fastest": factor}
            rows.append([
                f"{name} {width}x{height}, {len(data) / 1024:,.0f} KiB", label,
                format_ms(timing.median_ms), str(timing.repeats), format_ratio(factor),
            ])  # fmt: skip
        entry["ours_vs_fastest"] = ratio(timings[OURS].median_ms, base)
        entry["fused_measure_vs_fastest"] = ratio(timings[FUSED].median_ms, base)
        figures["files"][name] = entry
    print_table(
        "2. Decode: PNG bytes -> (H, W, 3) array (median ms per mask)",
        ["file", "decoder", "ms/mask", "runs", "decoder / fastest standalone"],
        rows,
    )
    return figures
