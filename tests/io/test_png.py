"""Tests of :mod:`pipeline.io.png`: decoding untrusted PNG bytes and encoding masks.

PNGs are built two ways: with Pillow, and by hand (:func:`make_png` writes the signature, IHDR,
optional PLTE/tRNS/extra chunks, a zlib IDAT stream with filter type 0 scanlines — Adam7
interlaced on request — and IEND, all with correct CRCs). The expected pixels of the hand-built
files are derived here from the sample arrays, independently of any decoder.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.io.png import (
    IMAGE_DATA_SLACK,
    PNG_SIGNATURE,
    PngError,
    check_png_structure,
    checked_header,
    decode_png,
    decode_strips,
    encode_png,
    read_png_header,
)

GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
SAMPLES = {GREY: 1, RGB: 3, PALETTE: 1, GREY_ALPHA: 2, RGBA: 4}

# Adam7 passes: (x0, y0, dx, dy).
ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)

# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _pack_row(samples: np.ndarray, depth: int) -> bytes:
    """One scanline's samples packed at ``depth`` bits, most significant bits first."""
    samples = np.asarray(samples, dtype=np.int64).reshape(-1)
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per_byte = 8 // depth
    padded = np.zeros(-(-samples.size // per_byte) * per_byte, dtype=np.int64)
    padded[: samples.size] = samples
    groups = padded.reshape(-1, per_byte)
    shifts = 8 - depth * (np.arange(per_byte) + 1)
    return (groups << shifts).sum(axis=1).astype(np.uint8).tobytes()


def _scanlines(samples: np.ndarray, depth: int) -> bytes:
    return b"".join(b"\x00" + _pack_row(row, depth) for row in samples)


def make_png(
    samples: np.ndarray,
    colour_type: int,
    depth: int = 8,
    *,
    interlace: bool = False,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    before_idat: tuple[bytes, ...] = (),
    after_idat: tuple[bytes, ...] = (),
    idat_pieces: int = 1,
) -> bytes:
    """A PNG of ``samples`` (H, W, samples-per-pixel) written by hand.

    ``before_idat`` / ``after_idat`` are complete extra chunks (see :func:`chunk`); the zlib stream
    is split over ``idat_pieces`` IDAT chunks.
    """
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples[:, :, np.newaxis]
    height, width, channels = samples.shape
    assert channels == SAMPLES[colour_type]
    if interlace:
        raw = b"".join(
            _scanlines(sub.reshape(sub.shape[0], -1), depth)
            for x0, y0, dx, dy in ADAM7
            if (sub := samples[y0::dy, x0::dx]).size
        )
    else:
        raw = _scanlines(samples.reshape(height, -1), depth)
    stream = zlib.compress(raw)
    step = -(-len(stream) // idat_pieces)
    idats = b"".join(chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlace))
    out = PNG_SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(before_idat)
    if palette is not None:
        out += chunk(b"PLTE", np.asarray(palette, dtype=np.uint8).tobytes())
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + idats + b"".join(after_idat) + chunk(b"IEND", b"")


def pillow_png(array: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def chunk_offset(data: bytes, kind: bytes) -> int:
    """Offset of the first chunk of ``kind`` (its length field)."""
    position = 8
    while True:
        length, found = struct.unpack(">I4s", data[position : position + 8])
        if found == kind:
            return position
        position += 12 + length


def flip_crc(data: bytes, kind: bytes) -> bytes:
    start = chunk_offset(data, kind)
    length = struct.unpack(">I", data[start : start + 4])[0]
    crc_at = start + 8 + length
    out = bytearray(data)
    out[crc_at] ^= 0x01
    return bytes(out)


def decode_error(data: bytes, **kwargs: int) -> PngError:
    with pytest.raises(PngError) as info:
        decode_png(data, **kwargs)
    return info.value


RNG = np.random.default_rng(20240611)
PALETTE_RGB = RNG.integers(0, 256, (16, 3), dtype=np.uint8)

# ---------------------------------------------------------------------------------------------
# Round trips through Pillow-written files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(7, 5), (7, 5, 2), (7, 5, 3), (7, 5, 4)],
    ids=["L", "LA", "RGB", "RGBA"],
)
def test_pillow_written_png_round_trips_exactly(shape: tuple[int, ...]) -> None:
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    decoded = decode_png(pillow_png(array))
    expected = array if array.ndim == 3 else array[:, :, np.newaxis]
    assert decoded.dtype == np.uint8
    assert decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)


def test_pillow_palette_png_expands_to_rgb() -> None:
    index = RNG.integers(0, 16, (6, 9), dtype=np.uint8)
    image = Image.fromarray(index)
    image.putpalette(PALETTE_RGB.tobytes())
    assert image.mode == "P"
    decoded = decode_png(pillow_png(image))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, PALETTE_RGB[index])


def test_pillow_palette_png_with_transparency_expands_to_rgba() -> None:
    index = RNG.integers(0, 16, (6, 9), dtype=np.uint8)
    alpha = np.arange(0, 256, 16, dtype=np.uint8)[::-1].copy()  # 240, 224, ..., 0
    image = Image.fromarray(index)
    image.putpalette(PALETTE_RGB.tobytes())
    decoded = decode_png(pillow_png(image, transparency=alpha.tobytes()))
    expected = np.concatenate([PALETTE_RGB[index], alpha[index][:, :, np.newaxis]], axis=2)
    assert decoded.shape == (6, 9, 4)
    np.testing.assert_array_equal(decoded, expected)


def test_pillow_16_bit_grey_decodes_to_exact_uint16() -> None:
    array = np.array([[0, 1, 255, 256], [1000, 32768, 65534, 65535]], dtype=np.uint16)
    decoded = decode_png(pillow_png(array))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded[:, :, 0], array)


# ---------------------------------------------------------------------------------------------
# Hand-built files: every colour type / bit depth the module accepts, interlaced or not
# ---------------------------------------------------------------------------------------------


def _case(colour_type: int, depth: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Random samples for a colour type and the pixels ``decode_png`` must return for them."""
    if colour_type == PALETTE:
        entries = min(2**depth, len(PALETTE_RGB))
        samples = RNG.integers(0, entries, (height, width, 1))
        return samples, PALETTE_RGB[samples[:, :, 0]]
    samples = RNG.integers(0, 2**depth, (height, width, SAMPLES[colour_type]))
    if depth == 16:
        return samples, samples.astype(np.uint16)
    # Depths below 8 are scaled to 0..255: 1 bit -> x255, 2 bits -> x85, 4 bits -> x17.
    return samples, (samples * (255 // (2**depth - 1))).astype(np.uint8)


HAND_BUILT = [
    (GREY, 1),
    (GREY, 2),
    (GREY, 4),
    (GREY, 8),
    (GREY, 16),
    (RGB, 8),
    (PALETTE, 1),
    (PALETTE, 2),
    (PALETTE, 4),
    (PALETTE, 8),
    (GREY_ALPHA, 8),
    (RGBA, 8),
]


@pytest.mark.parametrize("interlace", [False, True], ids=["plain", "adam7"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (11, 9)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(("colour_type", "depth"), HAND_BUILT, ids=lambda v: str(v))
def test_hand_built_png_decodes_exactly(
    colour_type: int, depth: int, size: tuple[int, int], interlace: bool
) -> None:
    samples, expected = _case(colour_type, depth, *size)
    palette = PALETTE_RGB[: 2**depth] if colour_type == PALETTE else None
    data = make_png(samples, colour_type, depth, interlace=interlace, palette=palette)
    header = read_png_header(data)
    assert (header.height, header.width, header.interlaced) == (*size, interlace)
    decoded = decode_png(data)
    assert decoded.dtype == expected.dtype
    assert decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)
    # Row-streamed, strips of a row or two: the same pixels, rows in order.
    strips = list(decode_strips(data, checked_header(data), strip_bytes=7))
    assert [first for first, _ in strips] == sorted({first for first, _ in strips})
    streamed = np.concatenate([pixels for _, pixels in strips])
    assert streamed.dtype == expected.dtype
    np.testing.assert_array_equal(streamed, expected)


def _with_extra_data(extra: int) -> bytes:
    """A 3x2 RGB PNG whose image data holds ``extra`` zero bytes after its rows."""
    raw = b"".join(b"\x00" + bytes(range(9)) for _ in range(2)) + bytes(extra)
    ihdr = struct.pack(">IIBBBBB", 3, 2, 8, RGB, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("extra", [0, 1, IMAGE_DATA_SLACK, IMAGE_DATA_SLACK + 1, 256 << 20])
def test_image_data_beyond_the_rows_is_refused_past_the_slack(extra: int) -> None:
    """Up to IMAGE_DATA_SLACK bytes after the last row are tolerated by every path; more is a
    decompression bomb (``too_large``), found without inflating it all (256 MiB here)."""
    data = _with_extra_data(extra)
    header = checked_header(data)
    decoders = {
        "decode": lambda: decode_png(data),
        "strips": lambda: np.concatenate([p for _, p in decode_strips(data, header)]),
    }
    for name, decode in decoders.items():
        if extra <= IMAGE_DATA_SLACK:
            np.testing.assert_array_equal(decode().reshape(2, 9), np.tile(np.arange(9), (2, 1)))
            continue
        with pytest.raises(PngError, match="inflates beyond the 20 bytes its 3x2 pixels") as info:
            decode()
        assert info.value.code == "too_large", name


def test_palette_trns_shorter_than_palette_leaves_other_entries_opaque() -> None:
    samples = np.array([[[0], [1], [2], [3]], [[3], [2], [1], [0]]])
    trns = bytes([0, 128])  # entries 2 and 3 have no alpha entry: opaque
    data = make_png(samples, PALETTE, 2, palette=PALETTE_RGB[:4], trns=trns)
    decoded = decode_png(data)
    alpha = np.array([0, 128, 255, 255], dtype=np.uint8)[samples[:, :, 0]]
    assert decoded.shape == (2, 4, 4)
    np.testing.assert_array_equal(decoded[:, :, :3], PALETTE_RGB[samples[:, :, 0]])
    np.testing.assert_array_equal(decoded[:, :, 3], alpha)


def test_interlaced_palette_with_transparency() -> None:
    samples, rgb = _case(PALETTE, 4, 10, 13)
    alpha = RNG.integers(0, 256, 16, dtype=np.uint8)
    data = make_png(samples, PALETTE, 4, interlace=True, palette=PALETTE_RGB, trns=alpha.tobytes())
    decoded = decode_png(data)
    np.testing.assert_array_equal(decoded[:, :, :3], rgb)
    np.testing.assert_array_equal(decoded[:, :, 3], alpha[samples[:, :, 0]])


def test_ancillary_chunks_and_split_idat_are_accepted() -> None:
    samples = RNG.integers(0, 256, (9, 12, 3))
    text = chunk(b"tEXt", b"Comment\x00made by hand")
    data = make_png(samples, RGB, before_idat=(text,), after_idat=(text,), idat_pieces=4)
    assert data.count(b"IDAT") == 4
    np.testing.assert_array_equal(decode_png(data), samples.astype(np.uint8))


def test_read_png_header_reports_declared_facts() -> None:
    data = make_png(np.zeros((3, 5, 2)), GREY_ALPHA, 8, interlace=True)
    header = read_png_header(data)
    assert (header.width, header.height, header.bit_depth, header.colour_type) == (5, 3, 8, 4)
    assert header.interlaced is True
    assert (header.pixels, header.channels, header.mode) == (15, 2, "grey+alpha8")


# ---------------------------------------------------------------------------------------------
# Truncation, corruption, refusals
# ---------------------------------------------------------------------------------------------

TRUNCATION_SOURCES = {
    "pillow-rgb": lambda: pillow_png(RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)),
    "hand-palette-trns-text": lambda: make_png(
        RNG.integers(0, 4, (3, 4, 1)),
        PALETTE,
        2,
        palette=PALETTE_RGB[:4],
        trns=b"\x00\x80",
        before_idat=(chunk(b"tEXt", b"k\x00v"),),
        idat_pieces=2,
    ),
    "hand-grey16-adam7": lambda: make_png(
        RNG.integers(0, 65536, (5, 6, 1)), GREY, 16, interlace=True
    ),
}


@pytest.mark.parametrize("source", sorted(TRUNCATION_SOURCES))
def test_every_truncation_is_refused(source: str) -> None:
    data = TRUNCATION_SOURCES[source]()
    decode_png(data)  # the whole file is fine
    outcomes = {}
    for cut in range(len(data)):
        try:
            decoded = decode_png(data[:cut])
        except PngError as exc:
            outcomes[cut] = exc.code
        else:  # pragma: no cover - reported by the assertion below
            outcomes[cut] = f"returned {decoded.shape}"
    expected = {cut: "not_png" if cut < 8 else "truncated" for cut in range(len(data))}
    assert outcomes == expected


def test_check_png_structure_accepts_whole_file_and_refuses_missing_iend() -> None:
    data = make_png(np.zeros((2, 2, 1)), GREY)
    check_png_structure(data)
    with pytest.raises(PngError) as info:
        check_png_structure(data[: -len(chunk(b"IEND", b""))])
    assert info.value.code == "truncated"


@pytest.mark.parametrize("kind", [b"IHDR", b"IDAT", b"IEND", b"tEXt"])
def test_crc_mismatch_is_corrupt(kind: bytes) -> None:
    data = make_png(np.ones((3, 3, 3)), RGB, before_idat=(chunk(b"tEXt", b"a\x00b"),))
    error = decode_error(flip_crc(data, kind))
    assert error.code == "corrupt"
    assert "CRC" in str(error)


def test_flipped_idat_data_byte_is_corrupt() -> None:
    data = bytearray(make_png(np.ones((3, 3, 3)), RGB))
    data[chunk_offset(bytes(data), b"IDAT") + 10] ^= 0xFF
    assert decode_error(bytes(data)).code == "corrupt"


@pytest.mark.parametrize("interlace", [False, True])
def test_short_zlib_stream_with_valid_crcs_is_corrupt(interlace: bool) -> None:
    samples = RNG.integers(0, 256, (6, 6, 3))
    good = make_png(samples, RGB, interlace=interlace)
    start = chunk_offset(good, b"IDAT")
    length = struct.unpack(">I", good[start : start + 4])[0]
    stream = good[start + 8 : start + 8 + length]
    short = good[:start] + chunk(b"IDAT", stream[: len(stream) // 2]) + chunk(b"IEND", b"")
    assert decode_error(short).code == "corrupt"


def test_file_with_iend_but_no_idat_is_corrupt() -> None:
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, GREY, 0, 0, 0)
    data = PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    error = decode_error(data)
    assert error.code == "corrupt"
    assert "IDAT" in str(error)


def test_huge_chunk_length_is_truncated() -> None:
    good = make_png(np.ones((2, 2, 1)), GREY)
    start = chunk_offset(good, b"IDAT")
    data = good[:start] + struct.pack(">I", 0xFFFFFFFF) + good[start + 4 :]
    assert decode_error(data).code == "truncated"


def test_bytes_after_iend_are_ignored() -> None:
    # check_png_structure returns at IEND; what follows it is not read (no error, same pixels).
    for data in (
        pillow_png(np.full((3, 4), 9, np.uint8)),
        make_png(np.full((3, 4, 1), 9), GREY, 4),
    ):
        expected = decode_png(data)
        np.testing.assert_array_equal(decode_png(data + b"trailing junk \x00\xff" * 10), expected)


@pytest.mark.parametrize(
    ("field", "value"),
    [("width", 0), ("height", 0), ("depth", 4), ("interlace", 2), ("compression", 1)],
)
def test_impossible_header_values_are_corrupt(field: str, value: int) -> None:
    values = {"width": 2, "height": 2, "depth": 8, "interlace": 0, "compression": 0}
    values[field] = value
    ihdr = struct.pack(
        ">IIBBBBB",
        values["width"],
        values["height"],
        values["depth"],
        RGB,
        values["compression"],
        0,
        values["interlace"],
    )
    data = PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")
    assert decode_error(data).code == "corrupt"


def test_first_chunk_not_ihdr_is_corrupt() -> None:
    good = make_png(np.ones((2, 2, 1)), GREY)
    data = PNG_SIGNATURE + chunk(b"tEXt", b"k\x00vvvvv") + good[8:]
    assert decode_error(data).code == "corrupt"


def test_decompression_bomb_header_is_refused_without_allocating() -> None:
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, RGBA, 0, 0, 0)
    # A real deflate stream of a few rows: a decoder that trusted the header would allocate 14 GB.
    stream = zlib.compress(b"\x00" + b"\x00" * 60000 * 4)
    data = PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    tracemalloc.start()
    try:
        with pytest.raises(PngError) as info:
            decode_png(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "too_large"
    assert "60000x60000" in str(info.value)
    assert peak < 2 * 1024 * 1024


def test_too_large_is_checked_before_the_chunk_walk() -> None:
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, GREY, 0, 0, 0)
    data = PNG_SIGNATURE + chunk(b"IHDR", ihdr) + b"\x00\x00"  # cut after the header
    assert decode_error(data).code == "too_large"


def test_max_pixels_limit_is_inclusive() -> None:
    data = make_png(np.full((10, 10, 1), 3), GREY)
    assert decode_png(data, max_pixels=100).shape == (10, 10, 1)
    error = decode_error(data, max_pixels=99)
    assert error.code == "too_large"
    assert "99" in str(error)


def test_hand_built_apng_is_animated() -> None:
    actl = chunk(b"acTL", struct.pack(">II", 2, 0))
    data = make_png(np.zeros((2, 2, 3)), RGB, before_idat=(actl,))
    error = decode_error(data)
    assert error.code == "animated"


def test_pillow_written_apng_is_animated() -> None:
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (0, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    data = buffer.getvalue()
    assert b"acTL" in data
    assert decode_error(data).code == "animated"


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (_jpeg(), "starts like a JPEG"),
        (_gif(), "starts like another image format"),
        (b"hello, this is plain text\n", "starts like text"),
        (b'  {"id": "image-name.jpg", "detections": []}', "starts like JSON text"),
        (b"[1, 2, 3]", "starts like JSON text"),
        (b"", "starts like an empty file"),
        (PNG_SIGNATURE[:7], "starts like bytes b'\\x89PNG\\r\\n\\x1a'"),
    ],
    ids=["jpeg", "gif", "text", "json-object", "json-array", "empty", "cut-signature"],
)
def test_non_png_bytes_are_not_png_with_a_description(data: bytes, looks_like: str) -> None:
    error = decode_error(data)
    assert error.code == "not_png"
    assert str(error) == f"not a PNG file ({looks_like})"


def test_16_bit_grey_alpha_is_unsupported() -> None:
    samples = RNG.integers(0, 65536, (2, 3, SAMPLES[GREY_ALPHA]))
    error = decode_error(make_png(samples, GREY_ALPHA, 16))
    assert error.code == "unsupported"
    assert str(error) == "16-bit grey+alpha PNG"


@pytest.mark.parametrize("colour_type", [RGB, RGBA])
def test_16_bit_colour_decodes_exactly(colour_type: int) -> None:
    samples = RNG.integers(0, 65536, (4, 5, SAMPLES[colour_type])).astype(np.uint16)
    pixels = decode_png(make_png(samples, colour_type, 16))
    assert pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, samples)
    np.testing.assert_array_equal(decode_png(encode_png(pixels)), samples)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(6, 7), (6, 7, 1), (6, 7, 2), (6, 7, 3), (6, 7, 4)], ids=lambda s: str(s)
)
def test_encode_png_round_trips_uint8(shape: tuple[int, ...]) -> None:
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(array)
    assert data.startswith(PNG_SIGNATURE)
    decoded = decode_png(data)
    expected = array if array.ndim == 3 else array[:, :, np.newaxis]
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, expected)


def test_encode_png_round_trips_16_bit_grey() -> None:
    array = np.array([[0, 300, 65535], [1, 40000, 255]], dtype=np.uint16)
    decoded = decode_png(encode_png(array))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded[:, :, 0], array)


def test_encode_png_accepts_non_contiguous_views() -> None:
    array = RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    view = array[::2, ::-1]
    np.testing.assert_array_equal(decode_png(encode_png(view)), view)
