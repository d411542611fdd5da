"""Masks in the styles users have, written by the encoders they use: the speed spread.

The styles (:data:`STYLES`) are v26 Celantur instance masks of street photographs, drawn as
polygons and rotated ellipses with hard (not anti-aliased) edges, like the product's masks:

* ``sparse``: a few small faces and plates, the rest background (most real masks);
* ``street``: 3-6 persons with faces and 1-3 vehicles with plates;
* ``dense``: 30-45 objects, a crowd with traffic;
* ``binary``: the grey binary mask (255 where anonymised) of a ``street`` scene;
* ``4k``: a ``street`` scene at 3840x2160.

The encoders (:data:`ENCODERS`) choose each row's PNG filter as real writers do: Pillow's default
(adaptive filters, level 6) and ``optimize=True``; libpng as OpenCV calls it (``cv2.imwrite``'s
default: level 1, ``Z_RLE``, every filter tried per row with libpng's minimum-sum-of-absolute-
differences heuristic), emulated here so no OpenCV is needed; and each filter type forced on every
row (level 6), which no decoder can shortcut. Nothing here was shaped after the measuring kernels.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from pipeline.formats.celantur import V26_FLAGS

#: (width, height) of every style but ``4k``.
FULL_HD = (1920, 1080)
STYLES = ("sparse", "street", "dense", "binary", "4k")
FILTERS = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}
ENCODERS = ("pillow", "pillow-optimize", "libpng-level1", *(f"{name}-only" for name in FILTERS))


def _polygon(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pixels of ``mask``'s shape whose centres lie inside the polygon (even-odd rule)."""
    height, width = mask.shape
    inside = np.zeros(mask.shape, bool)
    y0, y1 = max(0, int(np.floor(ys.min()))), min(height, int(np.ceil(ys.max())) + 1)
    x0, x1 = max(0, int(np.floor(xs.min()))), min(width, int(np.ceil(xs.max())) + 1)
    cx = np.arange(x0, x1) + 0.5
    x_start, y_start = xs, ys
    x_end, y_end = np.roll(xs, -1), np.roll(ys, -1)
    for y in range(y0, y1):
        cy = y + 0.5
        crosses = (y_start <= cy) != (y_end <= cy)
        if not crosses.any():
            continue
        t = (cy - y_start[crosses]) / (y_end[crosses] - y_start[crosses])
        at = np.sort(x_start[crosses] + t * (x_end[crosses] - x_start[crosses]))
        for left, right in zip(at[0::2], at[1::2], strict=False):
            inside[y, x0:x1] |= (cx >= left) & (cx < right)
    return inside


def _ellipse(mask: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float) -> None:
    """Set the pixels whose centres lie inside a rotated ellipse."""
    height, width = mask.shape
    reach = max(rx, ry)
    r0, r1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 2)
    c0, c1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 2)
    if r0 >= r1 or c0 >= c1:
        return
    dy = (np.arange(r0, r1) + 0.5 - cy)[:, None]
    dx = (np.arange(c0, c1) + 0.5 - cx)[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (dx * cos + dy * sin) / rx, (-dx * sin + dy * cos) / ry
    mask[r0:r1, c0:c1] |= u * u + v * v <= 1.0


def _blob(
    rng: np.random.Generator, cx: float, cy: float, w: float, h: float
) -> tuple[np.ndarray, np.ndarray]:
    """An irregular convex-ish outline (a car body, a torso) of about ``w`` x ``h``."""
    corners = int(rng.integers(7, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radius = rng.uniform(0.75, 1.0, corners)
    return cx + np.cos(angles) * radius * w / 2, cy + np.sin(angles) * radius * h / 2


class _Painter:
    """Paints instances in v26 colours: G is the instance, B the OR of the flags of every
    instance covering the pixel (persons/vehicles first, then faces/plates on top)."""

    def __init__(self, width: int, height: int, rng: np.random.Generator) -> None:
        self.g = np.zeros((height, width), np.uint8)
        self.flags = np.zeros((height, width), np.uint8)
        self.rng = rng
        self.free = [int(v) + 1 for v in rng.permutation(255)]

    def paint(self, shape: np.ndarray, flag: int) -> None:
        self.g[shape] = self.free.pop()
        self.flags[shape] |= flag

    def rgb(self) -> np.ndarray:
        return np.stack([np.zeros_like(self.g), self.g, self.flags], axis=-1)


def _person(p: _Painter, x: float, y: float, size: float, faces: list[np.ndarray]) -> None:
    rng = p.rng
    body = _polygon(p.g, *_blob(rng, x, y + 0.55 * size, 0.42 * size, 0.85 * size))
    _ellipse(body, x, y, 0.12 * size, 0.15 * size, rng.uniform(-0.3, 0.3))
    p.paint(body, V26_FLAGS["person"])
    face = np.zeros(body.shape, bool)
    _ellipse(face, x + rng.uniform(-0.05, 0.05) * size, y + 0.02 * size, 0.1 * size,
             0.13 * size, rng.uniform(-0.4, 0.4))  # fmt: skip
    faces.append(face)


def _vehicle(p: _Painter, x: float, y: float, size: float, plates: list[np.ndarray]) -> None:
    rng = p.rng
    body = _polygon(p.g, *_blob(rng, x, y, size, 0.45 * size))
    for side in (-0.3, 0.3):
        _ellipse(body, x + side * size, y + 0.2 * size, 0.09 * size, 0.09 * size, 0.0)
    p.paint(body, V26_FLAGS["vehicle"])
    plates.append(_plate(p.g, rng, x, y + 0.15 * size, 0.2 * size))


def _plate(like: np.ndarray, rng: np.random.Generator, x: float, y: float, w: float) -> np.ndarray:
    angle = rng.uniform(-0.15, 0.15)
    dx, dy = np.array([-1, 1, 1, -1]) * w / 2, np.array([-1, -1, 1, 1]) * w / 9
    cos, sin = np.cos(angle), np.sin(angle)
    return _polygon(like, x + dx * cos - dy * sin, y + dx * sin + dy * cos)


def style_mask(style: str, seed: int = 0, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask of ``style`` (:data:`STYLES`): (H, W, 3) uint8 v26 instance mask, or (H, W, 1)
    grey for ``binary``, of ``size`` (width, height; default 1920x1080, 3840x2160 for ``4k``).
    The same seed gives the same mask."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}, expected one of {STYLES}")
    width, height = size or ((3840, 2160) if style == "4k" else FULL_HD)
    rng = np.random.default_rng([seed, STYLES.index(style)])
    p = _Painter(width, height, rng)
    faces: list[np.ndarray] = []
    plates: list[np.ndarray] = []
    if style == "sparse":
        for _ in range(int(rng.integers(1, 5))):
            face = np.zeros(p.g.shape, bool)
            _ellipse(face, rng.uniform(0, width), rng.uniform(0.1, 0.7) * height,
                     rng.uniform(8, 30), rng.uniform(10, 38), rng.uniform(-0.4, 0.4))  # fmt: skip
            faces.append(face)
        for _ in range(int(rng.integers(0, 3))):
            plates.append(_plate(p.g, rng, rng.uniform(0, width), rng.uniform(0.6, 0.95) * height,
                                 rng.uniform(40, 110)))  # fmt: skip
    else:
        persons, vehicles = (
            (int(rng.integers(18, 28)), int(rng.integers(12, 18)))
            if style == "dense"
            else (int(rng.integers(3, 7)), int(rng.integers(1, 4)))
        )
        for _ in range(vehicles):
            extent = rng.uniform(0.15, 0.4) * width
            _vehicle(p, rng.uniform(0, width), rng.uniform(0.55, 0.9) * height, extent, plates)
        for _ in range(persons):
            extent = rng.uniform(0.2, 0.5) * height
            _person(p, rng.uniform(0, width), rng.uniform(0.1, 0.5) * height, extent, faces)
    for face in faces:
        p.paint(face, V26_FLAGS["face"])
    for plate in plates:
        p.paint(plate, V26_FLAGS["license_plate"])
    rgb = p.rgb()
    if style == "binary":
        return np.where(rgb[..., 1:2] != 0, 255, 0).astype(np.uint8)
    return rgb


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------


def _filtered(rows: np.ndarray, bpp: int, kind: int) -> np.ndarray:
    """Every row of (H, N) ``rows`` under PNG filter ``kind`` (without the filter byte)."""
    x = rows.astype(np.int16)
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    if kind == 0:
        predictor = np.zeros_like(x)
    elif kind == 1:
        predictor = a
    elif kind == 2:
        predictor = b
    elif kind == 3:
        predictor = (a + b) // 2
    else:
        c = np.zeros_like(x)
        c[:, bpp:] = b[:, :-bpp]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        predictor = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    return ((x - predictor) & 255).astype(np.uint8)


def _png(rgb: np.ndarray, scanlines: np.ndarray, compress: Callable[[bytes], bytes]) -> bytes:
    height, width, channels = rgb.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", compress(scanlines.tobytes())) + chunk(b"IEND", b""))  # fmt: skip


def _min_sum_choice(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Scanlines with libpng's adaptive choice: per row the filter whose output, read as signed
    bytes, has the smallest sum of absolute values."""
    candidates = [_filtered(rows, bpp, kind) for kind in range(5)]
    costs = np.stack([np.abs(c.view(np.int8).astype(np.int32)).sum(axis=1) for c in candidates])
    best = costs.argmin(axis=0)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = best
    for kind in range(5):
        chosen = best == kind
        out[chosen, 1:] = candidates[kind][chosen]
    return out


def encode_as(mask: np.ndarray, encoder: str) -> bytes:
    """The PNG bytes of an (H, W, C) uint8 mask as ``encoder`` (:data:`ENCODERS`) writes it."""
    height, width, channels = mask.shape
    if encoder in ("pillow", "pillow-optimize"):
        buffer = io.BytesIO()
        Image.fromarray(mask[..., 0] if channels == 1 else mask).save(
            buffer, format="PNG", optimize=encoder == "pillow-optimize"
        )
        return buffer.getvalue()
    rows = mask.reshape(height, width * channels)
    if encoder == "libpng-level1":
        rle = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
        return _png(
            mask, _min_sum_choice(rows, channels), lambda raw: rle.compress(raw) + rle.flush()
        )
    kind = FILTERS.get(encoder.removesuffix("-only"))
    if kind is None or not encoder.endswith("-only"):
        raise ValueError(f"unknown encoder {encoder!r}, expected one of {ENCODERS}")
    scanlines = np.empty((height, width * channels + 1), np.uint8)
    scanlines[:, 0] = kind
    scanlines[:, 1:] = _filtered(rows, channels, kind)
    return _png(mask, scanlines, lambda raw: zlib.compress(raw, 6))
