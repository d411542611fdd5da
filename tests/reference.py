"""The independent reference the tests compare against: Pillow decodes, per-colour brute force,
the SPEC 2.1 tables written out literally. Nothing here calls the product's kernels."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from deltalake import DeltaTable
from PIL import Image

from pipeline.tables import TABLES


def read_output(out: Path, table: str) -> list[dict[str, Any]]:
    """All rows of one output table, as a plain Delta reader (deltalake) sees its latest version."""
    return DeltaTable(str(out / table)).to_pyarrow_table().to_pylist()


def output_tables(out: Path) -> dict[str, list[str]]:
    """Every output table's rows (:func:`read_output`) as sorted JSON texts, to compare runs."""
    return {
        table: sorted(json.dumps(row, sort_keys=True) for row in read_output(out, table))
        for table in TABLES
    }


V26_FLAGS = {128: "person", 64: "license_plate", 32: "face", 16: "vehicle"}
LEGACY_VALUES = {128: "person", 64: "license_plate", 192: "face", 255: "vehicle"}


def reference_types(colour: tuple[int, int, int], encoding: str) -> list[str] | None:
    """Type names of a colour per SPEC 2.1, or None when the colour is invalid."""
    r, _, b = colour
    if encoding == "v26":
        if r != 0 or b & 0x0F or b == 0:
            return None
        return [name for bit, name in V26_FLAGS.items() if b & bit]
    if encoding == "legacy":
        return [LEGACY_VALUES[b]] if r == 0 and b in LEGACY_VALUES else None
    return [LEGACY_VALUES[r]] if b == 0 and r in LEGACY_VALUES else None


def reference_segments(png: bytes) -> dict[tuple[int, int, int], dict[str, Any]]:
    """Per-colour statistics by brute force: one boolean mask per colour (Pillow decode)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    result = {}
    for colour in colours:
        key = (int(colour[0]), int(colour[1]), int(colour[2]))
        if key == (0, 0, 0):
            continue
        result[key] = region_stats(np.all(rgb == colour, axis=2))
    return result


def region_stats(area: np.ndarray) -> dict[str, Any]:
    """Pixels, bbox (max exclusive) and centroid of a boolean (H, W) region, by brute force."""
    ys, xs = np.nonzero(area)
    return {
        "pixels": len(xs),
        "x_min": int(xs.min()),
        "y_min": int(ys.min()),
        "x_max": int(xs.max()) + 1,
        "y_max": int(ys.max()) + 1,
        "centroid_x": float(xs.mean()),
        "centroid_y": float(ys.mean()),
    }


def many_colours_repeating_across_black(colours: int) -> np.ndarray:
    """An RGB mask of ``colours`` distinct colours, each as colour, black, colour: the colour comes
    back right after the black run, while the accumulator grows in between (its table doubles
    at 512, 1024, 2048 colours)."""
    rgb = np.zeros((2, 3 * colours, 3), dtype=np.uint8)
    for k in range(colours):
        value = k + 1
        colour = (value >> 16 or 1, (value >> 8) & 255, value & 255)
        rgb[:, 3 * k] = colour
        rgb[:, 3 * k + 2] = colour
    return rgb
