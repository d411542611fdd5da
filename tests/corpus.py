"""Building blocks for bad-input corpora: a small independent PNG writer (every colour type and
bit depth, Adam7 interlacing, extra chunks) and byte-level surgery on valid files (truncation,
CRC flips, rewritten IHDR). Nothing here calls the product's PNG code."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
_CHANNELS = {GREY: 1, RGB: 3, PALETTE: 1, GREY_ALPHA: 2, RGBA: 4}
# (x start, y start, x step, y step) of the seven Adam7 passes.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def ihdr(width: int, height: int, bit_depth: int, colour_type: int, interlace: bool) -> bytes:
    """An IHDR chunk."""
    return chunk(
        b"IHDR",
        struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, int(interlace)),
    )


def _scanlines(samples: np.ndarray, bit_depth: int) -> bytes:
    """Filter type 0 scanlines of an (h, w, c) sample array."""
    if samples.size == 0:
        return b""
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = samples.astype(dtype).reshape(samples.shape[0], -1)
    return b"".join(b"\x00" + row.tobytes() for row in rows)


def encode(
    samples: np.ndarray,
    colour_type: int,
    *,
    bit_depth: int = 8,
    interlace: bool = False,
    palette: np.ndarray | None = None,
    transparency: bytes | None = None,
    before_idat: Sequence[bytes] = (),
    after_iend: bytes = b"",
) -> bytes:
    """Encode an (h, w, c) sample array (palette indices for colour type 3) as a PNG.

    ``before_idat`` are complete chunks written between PLTE/tRNS and IDAT.
    """
    if samples.ndim == 2:
        samples = samples[:, :, np.newaxis]
    height, width, channels = samples.shape
    assert channels == _CHANNELS[colour_type], (channels, colour_type)
    if interlace:
        raw = b"".join(_scanlines(samples[y0::dy, x0::dx], bit_depth) for x0, y0, dx, dy in _ADAM7)
    else:
        raw = _scanlines(samples, bit_depth)
    parts = [SIGNATURE, ihdr(width, height, bit_depth, colour_type, interlace)]
    if palette is not None:
        parts.append(chunk(b"PLTE", np.asarray(palette, dtype=np.uint8).tobytes()))
    if transparency is not None:
        parts.append(chunk(b"tRNS", transparency))
    parts += [*before_idat, chunk(b"IDAT", zlib.compress(raw, 6)), chunk(b"IEND", b"")]
    return b"".join(parts) + after_iend


def encode_rows(
    width: int,
    height: int,
    colour_type: int,
    bit_depth: int,
    row: Callable[[int], bytes],
    *,
    interlace: bool = False,
    before_idat: Sequence[bytes] = (),
) -> bytes:
    """A PNG whose scanline y (packed samples, without its filter byte) is ``row(y)``, deflated
    row by row: big images without their raw data in memory. Interlacing takes bit depths of 8
    and 16 (the passes slice whole pixels out of the rows)."""
    deflate = zlib.compressobj(1)
    parts = []
    if interlace:
        size = _CHANNELS[colour_type] * bit_depth // 8
        for x0, y0, dx, dy in _ADAM7:
            if x0 >= width:
                continue
            for y in range(y0, height, dy):
                pixels = np.frombuffer(row(y), np.uint8).reshape(width, size)[x0::dx]
                parts.append(deflate.compress(b"\x00" + pixels.tobytes()))
    else:
        parts = [deflate.compress(b"\x00" + row(y)) for y in range(height)]
    stream = b"".join(parts) + deflate.flush()
    return (SIGNATURE + ihdr(width, height, bit_depth, colour_type, interlace)
            + b"".join(before_idat) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))  # fmt: skip


def to_palette(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, palette) of an RGB image with at most 256 colours."""
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    assert len(colours) <= 256, len(colours)
    return inverse.reshape(rgb.shape[:2]).astype(np.uint8), colours.astype(np.uint8)


def text_chunk(keyword: str, size: int) -> bytes:
    """A valid tEXt chunk carrying ``size`` bytes of Latin-1 text."""
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + b"x" * size)


def apng(frames: Sequence[np.ndarray]) -> bytes:
    """An animated PNG (acTL/fcTL/fdAT, written by Pillow) of RGB frames."""
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PNG", save_all=True, append_images=images[1:], duration=40)
    return buffer.getvalue()


def chunk_spans(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset of the length field, length) of every chunk of a well-formed PNG."""
    spans = []
    position = len(SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        spans.append((kind, position, length))
        position += 12 + length
        if kind == b"IEND":
            break
    return spans


def find_chunk(data: bytes, kind: bytes) -> tuple[int, int]:
    """(offset, length) of the first chunk of a type."""
    for found, offset, length in chunk_spans(data):
        if found == kind:
            return offset, length
    raise KeyError(kind)


def flip_crc(data: bytes, kind: bytes) -> bytes:
    """The file with one bit of a chunk's CRC flipped."""
    offset, length = find_chunk(data, kind)
    crc_at = offset + 8 + length
    return data[:crc_at] + bytes([data[crc_at] ^ 0x01]) + data[crc_at + 1 :]


def replace_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """The file with a chunk's data replaced (and a matching CRC)."""
    offset, length = find_chunk(data, kind)
    return data[:offset] + chunk(kind, payload) + data[offset + 12 + length :]


def chunk_data(data: bytes, kind: bytes) -> bytes:
    """The data of the first chunk of a type."""
    offset, length = find_chunk(data, kind)
    return data[offset + 8 : offset + 8 + length]


def with_size(data: bytes, width: int, height: int) -> bytes:
    """The file with its IHDR declaring another size (valid CRC, pixel data unchanged)."""
    fields = bytearray(chunk_data(data, b"IHDR"))
    fields[0:8] = struct.pack(">II", width, height)
    return replace_chunk(data, b"IHDR", bytes(fields))


def insert_before(data: bytes, kind: bytes, chunks: Iterable[bytes]) -> bytes:
    """The file with raw chunk bytes inserted before the first chunk of a type."""
    offset, _ = find_chunk(data, kind)
    return data[:offset] + b"".join(chunks) + data[offset:]


def decode_rgb(data: bytes) -> np.ndarray:
    """Pillow's RGB decode (the reference for flavour variants)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
