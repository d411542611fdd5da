"""PNG bytes in and out, for untrusted input.

Decoding is PNG-only and checked before any pixel buffer is allocated:

1. the signature and the IHDR chunk are read and the declared size is compared with the pixel
   limit (decompression bombs are refused from the header alone);
2. every chunk is walked: lengths must fit the file, CRCs must match, IEND must be present —
   decoders such as libspng and Pillow accept a file cut after its last IDAT, we do not
   (bytes after IEND are ignored, as every decoder does);
3. animated PNGs (``acTL``) are refused: a mask is one image.

Plain 8-bit, non-interlaced grey / RGB / RGBA images go to libspng (pyspng), about twice as fast
as Pillow, and so are 16-bit RGB/RGBA, which libspng returns exactly; the other flavours
(palette, low bit depths, 16-bit grey, grey+alpha, interlaced) go through Pillow, whose handling
of those modes is exact once the image data is checked to hold every row (Pillow would fill a
short stream with zeros). 16-bit grey+alpha is refused: neither decoder returns it exactly.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from zlib_ng import zlib_ng

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# zlib-ng's stub declares ``error`` as an instance; it is the module's exception class.
_INFLATE_ERROR: type[Exception] = zlib_ng.error  # type: ignore[assignment]

#: Default pixel-count limit: 30000 x 30000 = 900 M pixels would be a 2.7 GB RGB buffer.
DEFAULT_MAX_PIXELS = 400_000_000

_COLOUR_TYPES = {0: "grey", 2: "rgb", 3: "palette", 4: "grey+alpha", 6: "rgba"}
_ALLOWED_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class PngError(ValueError):
    """A file that is not a complete, valid, acceptable PNG.

    ``code`` is a short machine-readable reason (``not_png``, ``truncated``, ``corrupt``,
    ``too_large``, ``animated``, ``unsupported``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PngHeader:
    """The IHDR facts of a PNG."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool

    @property
    def pixels(self) -> int:
        """Declared pixel count (width x height)."""
        return self.width * self.height

    @property
    def channels(self) -> int:
        """Channels after decoding (palette expands to RGB)."""
        return _CHANNELS[self.colour_type]

    @property
    def mode(self) -> str:
        """Human-readable colour type and depth, e.g. ``rgb8``."""
        return f"{_COLOUR_TYPES[self.colour_type]}{self.bit_depth}"


def read_png_header(data: bytes) -> PngHeader:
    """Parse the signature and IHDR of a PNG.

    Raises
    ------
    PngError
        ``not_png`` when the signature or first chunk is wrong, ``truncated`` when the file ends
        inside the header, ``corrupt`` for impossible header values or a bad IHDR CRC.
    """
    if len(data) < 8 or data[:8] != PNG_SIGNATURE:
        kind = _sniff(data)
        raise PngError("not_png", f"not a PNG file (starts like {kind})")
    if len(data) < 33:
        raise PngError("truncated", f"PNG truncated inside its header ({len(data)} bytes)")
    length, chunk_type = struct.unpack(">I4s", data[8:16])
    if chunk_type != b"IHDR" or length != 13:
        raise PngError("corrupt", "PNG does not start with a 13-byte IHDR chunk")
    if zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        raise PngError("corrupt", "PNG IHDR CRC mismatch")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data[16:29]
    )
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        raise PngError("corrupt", f"PNG declares an impossible size {width}x{height}")
    if colour not in _ALLOWED_DEPTHS or depth not in _ALLOWED_DEPTHS[colour]:
        raise PngError("corrupt", f"PNG declares colour type {colour} with bit depth {depth}")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise PngError("corrupt", "PNG declares an unknown compression, filter or interlace method")
    return PngHeader(width, height, depth, colour, interlace == 1)


def _sniff(data: bytes) -> str:
    """A short description of what non-PNG bytes look like, for error messages."""
    if not data:
        return "an empty file"
    if data[:3] == b"\xff\xd8\xff":
        return "a JPEG"
    if data[:4] in (b"GIF8", b"RIFF") or data[:2] in (b"BM", b"II", b"MM"):
        return "another image format"
    if data.lstrip()[:1] in (b"{", b"["):
        return "JSON text"
    head = data[:64]
    if head.isascii() and all(c >= 32 or c in b"\t\r\n" for c in head):
        return "text"
    return f"bytes {data[:8]!r}"


def check_png_structure(data: bytes) -> None:
    """Walk every chunk: lengths, CRCs, IDAT present, IEND last, no animation.

    Raises
    ------
    PngError
        ``truncated`` when the file ends early or lacks IEND, ``corrupt`` on a CRC mismatch or
        misplaced chunk, ``animated`` for APNG.
    """
    position = 8
    size = len(data)
    seen_idat = False
    while True:
        if position + 8 > size:
            raise PngError("truncated", f"PNG truncated: no IEND chunk (file ends at {size} bytes)")
        length, chunk_type = struct.unpack(">I4s", data[position : position + 8])
        end = position + 12 + length
        if length > 2**31 - 1 or end > size:
            raise PngError(
                "truncated", f"PNG truncated inside chunk {chunk_type!r} at offset {position}"
            )
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(data[position + 4 : end - 4]) != crc:
            name = chunk_type.decode("latin-1")
            raise PngError("corrupt", f"PNG chunk {name!r} at offset {position} has a bad CRC")
        if chunk_type == b"acTL":
            raise PngError("animated", "animated PNG (APNG): a mask must be a single image")
        if chunk_type in (b"zTXt", b"iTXt"):
            _check_text_size(chunk_type, data[position + 8 : end - 4], position)
        if chunk_type == b"IDAT":
            seen_idat = True
        if chunk_type == b"IEND":
            if not seen_idat:
                raise PngError("corrupt", "PNG has no IDAT chunk")
            return
        position = end


def checked_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PngHeader:
    """The header of a PNG that passed every check before decoding (module docs, 1-3): what
    :func:`decode_png` and the fused path (:func:`inflate_scanlines`) both start from.

    Raises
    ------
    PngError
        As :func:`decode_png`, for everything but the image data itself.
    """
    header = read_png_header(data)
    if header.bit_depth == 16 and header.colour_type == 4:
        # Pillow reduces it to 8 bits and libspng cannot decode it: refuse rather than guess.
        raise PngError("unsupported", "16-bit grey+alpha PNG")
    if header.pixels > max_pixels:
        raise PngError(
            "too_large",
            f"PNG declares {header.width}x{header.height} = {header.pixels} pixels, "
            f"over the limit of {max_pixels}",
        )
    check_png_structure(data)
    return header


#: Largest inflated text chunk accepted, as Pillow's limit: bigger ones are decompression bombs
#: that both decoders refuse, so every decode path refuses them here, alike.
MAX_TEXT_CHUNK = 1 << 20


def _check_text_size(chunk_type: bytes, payload: bytes, position: int) -> None:
    """Refuse a compressed text chunk that inflates beyond :data:`MAX_TEXT_CHUNK`; a text
    stream that does not inflate is left alone (text is never read, and Pillow ignores it)."""
    keyword_end = payload.find(b"\x00")
    if keyword_end < 0:
        return
    if chunk_type == b"zTXt":
        stream = payload[keyword_end + 2 :]
    else:  # iTXt: flag, method, language tag, translated keyword, then the text
        if payload[keyword_end + 1 : keyword_end + 2] != b"\x01":
            return  # uncompressed text
        language_end = payload.find(b"\x00", keyword_end + 3)
        translated_end = payload.find(b"\x00", language_end + 1) if language_end >= 0 else -1
        if translated_end < 0:
            return
        stream = payload[translated_end + 1 :]
    try:
        inflated = zlib_ng.decompressobj().decompress(stream, MAX_TEXT_CHUNK + 1)
    except _INFLATE_ERROR:
        return
    if len(inflated) > MAX_TEXT_CHUNK:
        name = chunk_type.decode("latin-1")
        raise PngError(
            "too_large",
            f"PNG {name} chunk at offset {position} inflates to more than {MAX_TEXT_CHUNK} "
            "bytes (a decompression bomb)",
        )


def decode_png(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a PNG to an (H, W, C) array after checking it (see module docs).

    Parameters
    ----------
    data : the whole file's bytes.
    max_pixels : refuse images declaring more pixels than this, before allocating anything.

    Returns
    -------
    (H, W, C) ``uint8`` array, or ``uint16`` for 16-bit PNGs; C is 1 (grey), 2 (grey+alpha),
    3 (RGB, also palette expanded) or 4 (RGBA, also palette with transparency). Bit depths
    below 8 are scaled to 0..255 as Pillow does for ``L``.

    Raises
    ------
    PngError
        For anything but a complete, valid, single-image PNG within the pixel limit.
    """
    return decode_checked_png(data, checked_header(data, max_pixels=max_pixels))


def decode_checked_png(data: bytes, header: PngHeader) -> np.ndarray:
    """:func:`decode_png` of a file whose ``header`` came from :func:`checked_header` (the
    checks are not repeated)."""
    # Pillow fills rows missing from a short image-data stream with zeros, and no decoder
    # refuses a stream inflating far beyond the rows: check both first.
    _check_image_data_length(data, header)
    try:
        if header.bit_depth == 16 and header.colour_type in (2, 6):
            # libspng is exact at 16 bits but adds an opaque alpha channel to RGB.
            pixels = _decode_spng(data)[:, :, : header.channels]
        elif header.bit_depth == 8 and header.colour_type in (0, 2, 6) and not header.interlaced:
            pixels = _decode_spng(data)
        else:
            pixels = _decode_pillow(data, header)
    except PngError:
        raise
    except Exception as exc:  # decoders raise RuntimeError / OSError / ValueError on bad streams
        raise PngError("corrupt", f"PNG image data could not be decoded: {exc}") from exc
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.shape[:2] != (header.height, header.width):
        raise PngError("corrupt", f"decoded size {pixels.shape[1]}x{pixels.shape[0]} != header")
    return pixels


_SAMPLES_PER_PIXEL = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 passes: (x offset, y offset, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def _image_data_size(header: PngHeader) -> int:
    """Bytes the inflated image data must hold: every scanline with its filter byte."""
    bits = _SAMPLES_PER_PIXEL[header.colour_type] * header.bit_depth

    def rows_bytes(width: int, height: int) -> int:
        return 0 if width == 0 or height == 0 else height * (1 + (width * bits + 7) // 8)

    if not header.interlaced:
        return rows_bytes(header.width, header.height)
    return sum(
        rows_bytes(-(-(header.width - x) // dx), -(-(header.height - y) // dy))
        for x, y, dx, dy in _ADAM7
    )


#: Inflated image data accepted beyond what the header's rows need: legitimate encoders write
#: none, so anything past this is refused (a 1x1 PNG carrying a gigabyte of inflated data is a
#: decompression bomb) after inflating at most this much more.
IMAGE_DATA_SLACK = 64 * 1024


def _check_image_data_length(data: bytes, header: PngHeader) -> None:
    """Refuse image data that inflates to fewer bytes than the header's rows need, or to more
    than :data:`IMAGE_DATA_SLACK` beyond; inflated a block at a time, never whole."""
    expected = _image_data_size(header)
    limit = expected + IMAGE_DATA_SLACK
    inflater = zlib_ng.decompressobj()
    inflated = 0
    try:
        for payload in _idat_payloads(data):
            tail: bytes | memoryview = payload
            while tail and not inflater.eof and inflated <= limit:
                inflated += len(inflater.decompress(tail, min(1 << 20, limit + 1 - inflated)))
                tail = inflater.unconsumed_tail
            if inflated > limit or inflater.eof:
                break
    except _INFLATE_ERROR as exc:
        if inflated < expected:
            raise PngError("corrupt", f"PNG image data could not be decoded: {exc}") from exc
    if inflated < expected:
        raise PngError("corrupt", f"PNG image data too short: {inflated} of {expected} bytes")
    if inflated > limit:
        raise _excess_error(header, expected)


def _excess_error(header: PngHeader, expected: int) -> PngError:
    return PngError(
        "too_large",
        f"PNG image data inflates beyond the {expected} bytes its {header.width}x"
        f"{header.height} pixels need (more than {IMAGE_DATA_SLACK} bytes over: a "
        "decompression bomb)",
    )


def _idat_payloads(data: bytes) -> Iterator[memoryview]:
    """The IDAT chunks' data in file order (of a PNG whose structure was checked)."""
    view = memoryview(data)
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", view[position : position + 8])
        if kind == b"IDAT":
            yield view[position + 8 : position + 8 + length]
        elif kind == b"IEND":
            return
        position += 12 + length


def inflate_scanlines(
    data: bytes, header: PngHeader, *, strip_bytes: int = 1 << 18
) -> Iterator[tuple[int, np.ndarray]]:
    """Inflate a checked, non-interlaced PNG's image data a strip at a time.

    Yields ``(first_row, raw)``: ``raw`` is a read-only uint8 array of whole filtered scanlines
    (each led by its filter type byte), about ``strip_bytes`` long, so the image data is never
    inflated whole. zlib-ng inflates mask data an order of magnitude faster than zlib. As with
    libspng, the stream's Adler-32 is not checked (the chunk CRCs were); what follows the last
    row may inflate to at most :data:`IMAGE_DATA_SLACK` bytes.

    Raises
    ------
    PngError
        ``corrupt`` when the stream is not valid deflate data or ends before the last row,
        ``too_large`` when it inflates far beyond the last row.
    """
    if header.interlaced:
        raise ValueError("inflate_scanlines reads non-interlaced images only")
    stride = 1 + (header.width * _SAMPLES_PER_PIXEL[header.colour_type] * header.bit_depth + 7) // 8
    strip_rows = max(1, strip_bytes // stride)
    inflater = zlib_ng.decompressobj()
    row, pending = 0, b""
    payloads = _idat_payloads(data)
    tail: bytes | memoryview = b""
    for payload in payloads:
        tail = payload
        while row < header.height:
            wanted = min(strip_rows, header.height - row) * stride - len(pending)
            try:
                out = inflater.decompress(tail, wanted)
            except _INFLATE_ERROR as exc:
                raise PngError("corrupt", f"PNG image data could not be decoded: {exc}") from exc
            tail = inflater.unconsumed_tail
            if not out:
                break  # this chunk is used up: on to the next
            out = pending + out if pending else out
            whole = len(out) // stride
            if whole:
                yield row, np.frombuffer(out, dtype=np.uint8, count=whole * stride)
                row += whole
            pending = out[whole * stride :]
        if row == header.height or inflater.eof:
            break
    if row < header.height:
        inflated = row * stride + len(pending)
        raise PngError(
            "corrupt",
            "PNG image data could not be decoded: stream too short "
            f"({inflated} of {header.height * stride} bytes)",
        )
    if _inflates_beyond(inflater, tail, payloads, IMAGE_DATA_SLACK):
        raise _excess_error(header, header.height * stride)


def _inflates_beyond(
    inflater: Any, tail: bytes | memoryview, payloads: Iterator[memoryview], slack: int
) -> bool:
    """Whether the rest of the stream inflates to more than ``slack`` bytes (inflating at most
    ``slack + 1``). A broken stream after the last row is not an error: no decoder reads it."""
    extra = 0
    for source in itertools.chain([tail], payloads):
        while source and not inflater.eof:
            try:
                out = inflater.decompress(source, slack + 1 - extra)
            except _INFLATE_ERROR:
                return False
            extra += len(out)
            if extra > slack:
                return True
            source = inflater.unconsumed_tail
            if not out:
                break
    return False


def decode_strips(
    data: bytes, header: PngHeader, *, strip_bytes: int = 1 << 18
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a checked PNG a strip of rows at a time: the decoded image never exists, whatever
    the flavour (interlaced ones too).

    Yields ``(first_row, pixels)``: ``pixels`` is an (rows, W, C) array of those rows exactly
    as :func:`decode_png` returns them (uint16 at 16 bits; palette expanded to RGB, or RGBA
    with a ``tRNS`` chunk; grey below 8 bits scaled to 0..255).

    Raises
    ------
    PngError
        As :func:`inflate_scanlines`; ``corrupt`` for an undefined filter type, or a palette
        image without a usable ``PLTE`` chunk.
    """
    palette = _palette(data) if header.colour_type == 3 else None
    if header.interlaced:
        yield from _deinterlaced_strips(data, header, palette, strip_bytes)
        return
    row_bytes = _row_bytes(header, header.width)
    above = np.zeros(row_bytes, dtype=np.uint8)
    for first_row, raw in inflate_scanlines(data, header, strip_bytes=strip_bytes):
        rows = np.empty((len(raw) // (row_bytes + 1), row_bytes), dtype=np.uint8)
        _unfilter(raw, header, above, rows, first_row)
        yield first_row, _samples(rows, header, header.width, palette)


def _row_bytes(header: PngHeader, width: int) -> int:
    """Bytes of an unfiltered row of ``width`` pixels (without the filter type byte)."""
    return (width * _SAMPLES_PER_PIXEL[header.colour_type] * header.bit_depth + 7) // 8


def _unfilter(
    raw: np.ndarray,
    header: PngHeader,
    above: np.ndarray,
    rows: np.ndarray,
    first_row: int,
    where: str = "",
) -> None:
    """Unfilter whole scanlines into ``rows`` (:func:`~pipeline.kernels.rows.unfilter_strip`);
    the first is row ``first_row`` (of the Adam7 pass ``where`` names, if any).

    Raises
    ------
    PngError
        ``corrupt`` naming the first row with an undefined filter type.
    """
    from pipeline.kernels.rows import unfilter_strip
    from pipeline.kernels.scanlines import ROWS_OK

    bpp = max(1, _SAMPLES_PER_PIXEL[header.colour_type] * header.bit_depth // 8)
    bad = unfilter_strip(raw, rows.shape[1] + 1, bpp, above, rows)
    if bad != ROWS_OK:
        message = f"invalid scanline filter in {where}row {first_row + bad}"
        raise PngError("corrupt", f"PNG image data could not be decoded: {message}")


class _PassReader:
    """Reads one Adam7 pass's scanlines in order, from its own copy of the inflater positioned
    at the pass's first byte: seven of them deinterlace the image row by row."""

    def __init__(self, inflater: Any, payloads: list[memoryview], index: int, offset: int) -> None:
        self.inflater, self.payloads, self.index, self.offset = inflater, payloads, index, offset

    def read(self, size: int) -> np.ndarray:
        out = b""
        while len(out) < size and self.index < len(self.payloads):
            payload = self.payloads[self.index]
            piece = payload[self.offset : self.offset + _INPUT_BLOCK]
            try:
                got = self.inflater.decompress(piece, size - len(out))
            except _INFLATE_ERROR as exc:
                raise PngError("corrupt", f"PNG image data could not be decoded: {exc}") from exc
            out += got
            self.offset += len(piece) - len(self.inflater.unconsumed_tail)
            if self.offset >= len(payload):
                self.index, self.offset = self.index + 1, 0
            elif not got and self.inflater.eof:
                break
        if len(out) < size:
            raise PngError("corrupt", "PNG image data could not be decoded: stream too short")
        return np.frombuffer(out, dtype=np.uint8)


#: Compressed bytes handed to the inflater at a time when reading passes (small: each call
#: copies what it leaves unconsumed).
_INPUT_BLOCK = 1 << 16


def _deinterlaced_strips(
    data: bytes, header: PngHeader, palette: np.ndarray | None, strip_bytes: int
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`decode_strips` of an Adam7-interlaced PNG.

    One inflating pass over the stream finds where each of the seven passes starts (a copy of
    the inflater there); then each output row takes its pixels from the next scanline of the
    passes that hold that row. Memory is seven inflater states and a strip of rows; the stream
    is inflated twice.
    """
    payloads = list(_idat_payloads(data))
    passes = [
        (x, y, dx, dy, -(-(header.width - x) // dx), -(-(header.height - y) // dy))
        for x, y, dx, dy in _ADAM7
    ]
    readers: list[_PassReader | None] = []
    scan = _PassReader(zlib_ng.decompressobj(), payloads, 0, 0)
    for _, _, _, _, width, height in passes:
        if width == 0 or height == 0:
            readers.append(None)
            continue
        readers.append(_PassReader(scan.inflater.copy(), payloads, scan.index, scan.offset))
        remaining = height * (1 + _row_bytes(header, width))
        while remaining:
            remaining -= len(scan.read(min(remaining, 1 << 20)))
    rest = payloads[scan.index][scan.offset :] if scan.index < len(payloads) else b""
    if _inflates_beyond(scan.inflater, rest, iter(payloads[scan.index + 1 :]), IMAGE_DATA_SLACK):
        raise _excess_error(header, _image_data_size(header))
    aboves = [np.zeros(_row_bytes(header, width), np.uint8) for *_, width, _ in passes]
    strip_rows = max(1, strip_bytes // max(1, _row_bytes(header, header.width)))
    for first_row in range(0, header.height, strip_rows):
        strip = None
        for y in range(first_row, min(first_row + strip_rows, header.height)):
            for number, (x0, y0, dx, dy, width, _) in enumerate(passes):
                reader = readers[number]
                if reader is None or y % dy != y0:
                    continue
                raw = reader.read(1 + len(aboves[number]))
                row = np.empty((1, len(aboves[number])), np.uint8)
                _unfilter(raw, header, aboves[number], row, y // dy, f"pass {number + 1} ")
                pixels = _samples(row, header, width, palette)[0]
                if strip is None:
                    shape = (min(strip_rows, header.height - first_row), header.width)
                    strip = np.empty((*shape, pixels.shape[1]), pixels.dtype)
                strip[y - first_row, x0::dx] = pixels
        assert strip is not None, "every row of an image holds pixels of some pass"
        yield first_row, strip


def _samples(
    rows: np.ndarray, header: PngHeader, width: int, palette: np.ndarray | None
) -> np.ndarray:
    """Unfiltered scanlines of ``width`` pixels as decoded pixels (see :func:`decode_strips`)."""
    count, depth = rows.shape[0], header.bit_depth
    samples = _SAMPLES_PER_PIXEL[header.colour_type]
    if depth == 16:
        wide = rows.view(">u2").reshape(count, width, samples)
        return wide.astype(np.uint16)
    if depth == 8:
        values = rows.reshape(count, width, samples)
    else:  # 1, 2 or 4 bits: grey or palette, one sample per pixel, packed from the high bits
        shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)
        unpacked = (rows[:, :, np.newaxis] >> shifts) & ((1 << depth) - 1)
        values = unpacked.reshape(count, -1)[:, :width, np.newaxis]
        if palette is None:
            values = values * np.uint8(255 // ((1 << depth) - 1))
    if palette is not None:
        return palette[values[:, :, 0]]
    return values


def _palette(data: bytes) -> np.ndarray:
    """The (256, 3 or 4) uint8 lookup of a palette PNG, as Pillow expands it: ``PLTE`` colours
    (missing entries black), a ``tRNS`` chunk's alphas as a fourth channel (missing ones
    opaque)."""
    chunks = dict(_chunks_before_idat(data, (b"PLTE", b"tRNS")))
    colours = chunks.get(b"PLTE")
    if colours is None or not 3 <= len(colours) <= 768 or len(colours) % 3:
        raise PngError("corrupt", "palette PNG without a valid PLTE chunk")
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colours) // 3] = np.frombuffer(colours, dtype=np.uint8).reshape(-1, 3)
    alphas = chunks.get(b"tRNS")
    if alphas is None:
        return table
    alpha = np.full((256, 1), 255, dtype=np.uint8)
    alpha[: min(len(alphas), 256), 0] = np.frombuffer(alphas[:256], dtype=np.uint8)
    return np.concatenate([table, alpha], axis=1)


def _chunks_before_idat(data: bytes, kinds: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of the chunks of the given types before the first IDAT (of a checked PNG)."""
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind in (b"IDAT", b"IEND"):
            return
        if kind in kinds:
            yield kind, data[position + 8 : position + 8 + length]
        position += 12 + length


def _decode_spng(data: bytes) -> np.ndarray:
    import pyspng

    return np.asarray(pyspng.load(data))


def _decode_pillow(data: bytes, header: PngHeader) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        # The pixel limit was enforced above with our own (possibly lower) bound.
        image.load()
        if header.colour_type == 3:
            return np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))
        if header.colour_type == 0 and header.bit_depth == 16:
            return np.asarray(image, dtype=np.uint16)
        if header.colour_type == 0 and header.bit_depth < 8:
            return np.asarray(image.convert("L"))
        return np.asarray(image)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


_COLOUR_TYPE_OF_CHANNELS = {1: 0, 2: 4, 3: 2, 4: 6}


#: zlib-ng's level 2 packs UP-filtered masks smaller than zlib's level 1, ~7x faster; level 6
#: gains ~10% in size for ~2.5x the time (``make bench``, section 4).
DEFAULT_COMPRESS_LEVEL = 2


def encode_png(pixels: np.ndarray, *, compress_level: int = DEFAULT_COMPRESS_LEVEL) -> bytes:
    """Encode an (H, W) or (H, W, 1|2|3|4) uint8 or uint16 array as PNG.

    Every row uses the UP filter (the difference to the row above): masks are mostly the row
    above again, so UP turns them into zeros, which zlib-ng deflates at ``compress_level``.
    """
    array = pixels if pixels.ndim == 3 else pixels[:, :, np.newaxis]
    height, width, channels = array.shape
    if channels not in _COLOUR_TYPE_OF_CHANNELS:
        raise ValueError(f"cannot encode {channels} channels as PNG")
    if array.dtype == np.uint16:
        big_endian = array.astype(">u2").view(np.uint8)
        depth, rows = 16, big_endian.reshape(height, width * channels * 2)
    elif array.dtype == np.uint8:
        depth, rows = 8, array.reshape(height, width * channels)
    else:
        raise ValueError(f"cannot encode {array.dtype} pixels as PNG")
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps mod 256
    return encode_filtered_png(filtered, width, channels, depth, compress_level=compress_level)


def encode_filtered_png(
    filtered: np.ndarray,
    width: int,
    channels: int,
    depth: int = 8,
    *,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
) -> bytes:
    """A PNG from ready scanlines: (H, 1 + row bytes) uint8, each row led by its filter type."""
    header = struct.pack(
        ">IIBBBBB", width, filtered.shape[0], depth, _COLOUR_TYPE_OF_CHANNELS[channels], 0, 0, 0
    )
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib_ng.compress(np.ascontiguousarray(filtered).data, compress_level))
        + _chunk(b"IEND", b"")
    )
