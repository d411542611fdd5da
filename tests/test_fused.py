"""The fused decode path (:mod:`pipeline.stages.measure`) gives exactly what decode + kernels give.

Every mask a test writes is measured both ways (``fused=True`` / ``False``): the generated
Celantur trees of every encoding, every PNG of the bad-input corpus (same result or the same
error code), and hypothesis masks written by an independent encoder here that uses every PNG
filter type per row and splits the image data over several IDAT chunks. The standard path is
itself checked against brute-force references elsewhere (tests/kernels, tests/test_celantur*).
"""

from __future__ import annotations

import itertools
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from corpus import GREY, GREY_ALPHA, PALETTE, RGB, RGBA, SIGNATURE, chunk, ihdr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import many_colours_repeating_across_black
from test_bad_inputs import build_corpus

from pipeline.io.png import PngError, checked_header, decode_png, inflate_scanlines
from pipeline.kernels.segments import ForegroundRuns, foreground_runs
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.styles import ENCODERS, STYLES, encode_as, style_mask
from pipeline.stages.measure import (
    BinaryMeasure,
    InstanceMeasure,
    measure_binary,
    measure_instance,
)

LIMIT = 10**9
CHANNELS = {GREY: 1, GREY_ALPHA: 2, RGB: 3, RGBA: 4}

# ---------------------------------------------------------------------------------------------
# An independent PNG writer with every filter type (PNG spec, section 9)
# ---------------------------------------------------------------------------------------------


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def filter_row(kind: int, row: np.ndarray, above: np.ndarray, bpp: int) -> bytes:
    """One scanline (filter byte first) of ``row`` under filter ``kind``; int arithmetic mod
    256, neighbours left of the row and above the first row are 0."""
    x = row.astype(np.int64)
    b = above.astype(np.int64)
    a = np.concatenate([np.zeros(bpp, np.int64), x[:-bpp]])
    c = np.concatenate([np.zeros(bpp, np.int64), b[:-bpp]])
    predictor = {
        0: np.zeros_like(x),
        1: a,
        2: b,
        3: (a + b) // 2,
        4: _paeth(a, b, c),
    }[kind]
    return bytes([kind]) + ((x - predictor) % 256).astype(np.uint8).tobytes()


def write_png(samples: np.ndarray, colour_type: int, filters: list[int], parts: int = 1) -> bytes:
    """An 8-bit PNG of (h, w, c) ``samples`` with ``filters[y % len]`` on row y, its deflate
    stream cut into ``parts`` IDAT chunks (some may be empty)."""
    height, width, channels = samples.shape
    rows = samples.reshape(height, width * channels)
    above = np.zeros(width * channels, np.uint8)
    raw = b""
    for y in range(height):
        raw += filter_row(filters[y % len(filters)], rows[y], above, channels)
        above = rows[y]
    stream = zlib.compress(raw, 9)
    cuts = np.linspace(0, len(stream), parts + 1).astype(int)
    idats = [chunk(b"IDAT", stream[s:e]) for s, e in itertools.pairwise(cuts)]
    header = ihdr(width, height, 8, colour_type, False)
    return SIGNATURE + header + b"".join(idats) + chunk(b"IEND", b"")


def _packed_rows(samples: np.ndarray, depth: int) -> np.ndarray:
    """(h, w, c) samples as (h, row bytes) scanline data: big-endian at 16 bits, packed from
    the high bits below 8."""
    height, width, _ = samples.shape
    if depth == 16:
        return samples.astype(">u2").view(np.uint8).reshape(height, -1)
    if depth == 8:
        return samples.astype(np.uint8).reshape(height, -1)
    per_byte = 8 // depth
    padded = np.zeros((height, -(-width // per_byte) * per_byte), np.uint8)
    padded[:, :width] = samples[:, :, 0]
    shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)
    return np.bitwise_or.reduce(padded.reshape(height, -1, per_byte) << shifts, axis=2)


#: Adam7 passes: (x start, y start, x step, y step).
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))  # fmt: skip


def write_any_png(
    samples: np.ndarray,
    colour_type: int,
    depth: int,
    filters: list[int],
    *,
    interlace: bool = False,
    palette: bytes = b"",
    transparency: bytes | None = None,
) -> bytes:
    """A PNG of any colour type, bit depth and interlacing: (h, w, c) ``samples`` (palette
    indices for type 3), ``filters[i % len]`` on the i-th scanline of each image or pass."""
    height, width, channels = samples.shape
    bpp = max(1, channels * depth // 8)
    images = [samples[y::dy, x::dx] for x, y, dx, dy in ADAM7] if interlace else [samples]
    raw = b""
    for image in images:
        if image.size == 0:
            continue  # an empty pass has no scanlines
        rows = _packed_rows(image, depth)
        above = np.zeros(rows.shape[1], np.uint8)
        for y in range(rows.shape[0]):
            raw += filter_row(filters[y % len(filters)], rows[y], above, bpp)
            above = rows[y]
    extra = chunk(b"PLTE", palette) if palette else b""
    if transparency is not None:
        extra += chunk(b"tRNS", transparency)
    return (SIGNATURE + ihdr(width, height, depth, colour_type, interlace) + extra
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Comparing the two paths
# ---------------------------------------------------------------------------------------------


def assert_same_instance(fused: InstanceMeasure, standard: InstanceMeasure) -> None:
    assert fused.header == standard.header
    for name in ("colours", "pixels", "x_min", "y_min", "x_max", "y_max"):
        np.testing.assert_array_equal(getattr(fused.stats, name), getattr(standard.stats, name))
    np.testing.assert_array_equal(fused.stats.centroid_x, standard.stats.centroid_x)
    np.testing.assert_array_equal(fused.stats.centroid_y, standard.stats.centroid_y)
    assert fused.stats.background_pixels == standard.stats.background_pixels
    np.testing.assert_array_equal(fused.foreground.bounds, standard.foreground.bounds)
    np.testing.assert_array_equal(fused.foreground.row_ends, standard.foreground.row_ends)
    assert fused.scaled == standard.scaled


def both_instance(data: bytes, scale: int | None) -> InstanceMeasure:
    fused = measure_instance(data, max_pixels=LIMIT, scale=scale)
    standard = measure_instance(data, max_pixels=LIMIT, scale=scale, fused=False)
    assert_same_instance(fused, standard)
    return fused


def both_binary(data: bytes, scale: int | None, foreground: ForegroundRuns | None) -> BinaryMeasure:
    fused = measure_binary(data, max_pixels=LIMIT, scale=scale, foreground=foreground)
    standard = measure_binary(
        data, max_pixels=LIMIT, scale=scale, foreground=foreground, fused=False
    )
    assert fused == standard
    return fused


masks = st.integers(1, 24).flatmap(
    lambda h: st.integers(1, 24).flatmap(
        lambda w: st.tuples(
            st.sampled_from([RGB, RGBA]),
            # Few values, so rows have runs (as masks do) and colours repeat across rows.
            hnp.arrays(np.uint8, (h, w, 4), elements=st.sampled_from([0, 0, 0, 1, 128, 254, 255])),
            hnp.arrays(np.uint8, (h, w, 2), elements=st.sampled_from([0, 0, 127, 128, 255])),
        )
    )
)
filters = st.lists(st.integers(0, 4), min_size=1, max_size=6)
scales = st.sampled_from([None, 100, 50, 33, 1, 99])


@settings(max_examples=150, deadline=None)
@given(masks, filters, st.integers(1, 4), scales, st.sampled_from([GREY, GREY_ALPHA, RGB, RGBA]))
def test_random_masks_with_every_filter_type_measure_identically(
    mask, row_filters, parts, scale, binary_type
):
    instance_type, pixels, grey = mask
    instance = pixels[:, :, : CHANNELS[instance_type]]
    result = both_instance(write_png(instance, instance_type, row_filters, parts), scale)
    binary = (
        grey[:, :, : CHANNELS[binary_type]]
        if binary_type in (GREY, GREY_ALPHA)
        else pixels[:, :, : CHANNELS[binary_type]]
    )
    data = write_png(binary, binary_type, row_filters[::-1], parts)
    compared = both_binary(data, scale, result.foreground)
    assert compared.mismatch is not None
    assert both_binary(data, scale, None).mismatch is None


@st.composite
def run_rows(draw):
    """(h, w, 4) pixels whose rows are runs of a few colours, 1 to 70 pixels long: filtered
    Sub, Average or Paeth they are words of zeros for many words at a time, entered at every
    byte of a pixel and every word of the 3-word (24-byte) cycle of RGB rows."""
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 160))
    colours = draw(st.lists(st.tuples(*[st.sampled_from([0, 1, 9, 128, 255])] * 4), min_size=2,
                            max_size=4))  # fmt: skip
    pixels = np.zeros((height, width, 4), np.uint8)
    for y in range(height):
        x = 0
        while x < width:
            length = draw(st.integers(1, 70))
            pixels[y, x : x + length] = colours[draw(st.integers(0, len(colours) - 1))]
            x += length
    return pixels


@settings(max_examples=150, deadline=None)
@given(run_rows(), st.sampled_from([[1], [1, 0], [3, 1], [4, 1, 2]]), st.integers(1, 2),
       st.sampled_from([GREY, GREY_ALPHA, RGB, RGBA]), st.sampled_from([None, 50]))  # fmt: skip
def test_long_runs_of_left_predicted_rows_measure_identically(
    pixels, row_filters, parts, binary_type, scale
):
    """Sub rows (and Average and Paeth ones around them) crossing long stretches of zeros, for
    every pixel size the fused path reads (1 to 4 bytes)."""
    for instance_type in (RGB, RGBA):
        instance = pixels[:, :, : CHANNELS[instance_type]]
        both_instance(write_png(instance, instance_type, row_filters, parts), scale)
    both_binary(write_png(pixels[:, :, : CHANNELS[binary_type]], binary_type, row_filters, parts),
                scale, None)  # fmt: skip


@st.composite
def edited_rows(draw):
    """An RGB(A) mask whose rows are the row above with a few edits, as masks are (the runs of a
    row are then mostly found from the row above's): an edge moved by a few pixels, a span
    repainted in one of a few colours, or its alpha changed."""
    height, width = draw(st.integers(2, 12)), draw(st.integers(1, 40))
    colours = [(0, 0, 0), (0, 5, 2), (0, 9, 6), (7, 5, 2)]
    rows = [np.zeros((width, 4), np.uint8)]
    for _ in range(height - 1):
        row = rows[-1].copy()
        for _ in range(draw(st.integers(0, 4))):
            start = draw(st.integers(0, width - 1))
            end = draw(st.integers(start + 1, min(width, start + 12)))
            edit = draw(st.sampled_from(["grow", "shrink", "paint", "alpha"]))
            if edit == "grow":  # the run left of ``start`` grows over start..end-1
                row[start:end] = row[start - 1] if start else row[start]
            elif edit == "shrink":  # the run right of ``end - 1`` grows leftwards
                row[start:end] = row[end] if end < width else row[end - 1]
            elif edit == "paint":
                row[start:end, :3] = colours[draw(st.integers(0, len(colours) - 1))]
            else:
                row[start:end, 3] = draw(st.sampled_from([0, 255]))
        rows.append(row)
    return draw(st.sampled_from([RGB, RGBA])), np.stack(rows)


@settings(max_examples=150, deadline=None)
@given(edited_rows(), filters, st.integers(1, 3), scales)
def test_masks_edited_from_row_to_row_measure_identically(mask, row_filters, parts, scale):
    instance_type, pixels = mask
    instance = pixels[:, :, : CHANNELS[instance_type]]
    both_instance(write_png(instance, instance_type, row_filters, parts), scale)


#: The flavours the fused path leaves to row-streamed decode: (colour type, bit depth).
STREAMED = [
    *((GREY, depth) for depth in (1, 2, 4, 8, 16)),
    *((PALETTE, depth) for depth in (1, 2, 4, 8)),
    (GREY_ALPHA, 8), (RGB, 8), (RGBA, 8), (RGB, 16), (RGBA, 16),
]  # fmt: skip
flavoured = st.sampled_from(STREAMED).flatmap(
    lambda flavour: st.tuples(
        st.just(flavour),
        hnp.arrays(
            np.uint16 if flavour[1] == 16 else np.uint8,
            st.tuples(
                st.integers(1, 20),
                st.integers(1, 20),
                st.just(1 if flavour[0] == PALETTE else CHANNELS[flavour[0]]),
            ),
            elements=st.sampled_from(
                [0, 0, 1, (1 << flavour[1]) - 1]
                + ([128, 257, 128 * 257, 32768] if flavour[1] == 16 else [1 << (flavour[1] - 1)])
            ),
        ),
        st.booleans(),  # 16-bit values widened from 8 bits (instance masks need them)
        st.booleans(),  # palette with a tRNS chunk
        st.booleans(),  # interlaced
    )
)


@settings(max_examples=200, deadline=None)
@given(flavoured, filters, scales)
def test_every_streamed_flavour_measures_as_decoded(case, row_filters, scale):
    """16-bit, grey, low bit depths, palette (with and without tRNS, short palettes), grey+alpha
    masks, each also interlaced (8-bit RGB/RGBA only interlaced: plain ones are fused): the
    row-streamed path equals decode + whole-image kernels, as instance masks (same error when
    16-bit values are not widened 8-bit values) and as binary masks."""
    (colour_type, depth), samples, widened, transparent, interlace = case
    if depth == 16 and widened:
        samples = (samples & 255) * 257
    palette, transparency = b"", None
    if colour_type == PALETTE:
        entries = max(1, int(samples.max()))  # the highest index may lie beyond the palette
        palette = bytes(i * 37 % 256 for i in range(3 * entries))
        transparency = bytes(range(0, 256, 7))[:entries] if transparent else None
    data = write_any_png(samples, colour_type, depth, row_filters, interlace=interlace,
                         palette=palette, transparency=transparency)  # fmt: skip
    assert _instance_outcome(data, True) == _instance_outcome(data, False)
    foreground = foreground_runs(np.zeros((*samples.shape[:2], 3), np.uint8))
    for runs in (None, foreground):
        fused = measure_binary(data, max_pixels=LIMIT, scale=scale, foreground=runs)
        standard = measure_binary(data, max_pixels=LIMIT, scale=scale, foreground=runs,
                                  fused=False)  # fmt: skip
        assert fused == standard


def test_strips_cross_row_and_chunk_boundaries():
    """A mask several strips long, every filter type, the stream cut into many IDATs: strips
    end mid-chunk and chunks end mid-row."""
    rng = np.random.default_rng(7)
    palette = rng.integers(0, 256, (40, 3), dtype=np.uint8)
    labels = np.repeat(rng.integers(0, 40, (300, 30)), 10, axis=1)  # runs of 10 pixels
    rgb = palette[labels]
    data = write_png(rgb, RGB, [0, 1, 2, 3, 4, 4, 2], parts=37)
    header = checked_header(data)
    stride = 1 + 300 * 3
    strips = list(inflate_scanlines(data, header, strip_bytes=5 * stride + 17))
    next_row = 0
    for first, raw in strips:  # contiguous whole rows, never more than the strip holds
        rows, rest = divmod(len(raw), stride)
        assert (first, rest) == (next_row, 0) and 1 <= rows <= 5
        next_row += rows
    assert next_row == 300
    whole = zlib.decompress(b"".join(_idat_payloads(data)))
    assert b"".join(raw.tobytes() for _, raw in strips) == whole
    assert len(list(inflate_scanlines(data, header))) > 1  # the default strip splits it too
    result = both_instance(data, 50)
    assert len(result.stats) == len(np.unique(labels))


def _idat_payloads(data: bytes) -> list[bytes]:
    out, position = [], 8
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        if data[position + 4 : position + 8] == b"IDAT":
            out.append(data[position + 8 : position + 8 + length])
        position += 12 + length
    return out


@pytest.mark.parametrize("encoding", ["v26", "legacy", "legacy-red"])
def test_every_sample_tree_mask_measures_identically(tmp_path: Path, encoding):
    make_celantur_tree(tmp_path, seed=5, images=12, encoding=encoding, mask_scale=40)
    instances = sorted(tmp_path.rglob("*_ins_maks.png")) + sorted(tmp_path.rglob("*_ins_mask.png"))
    assert instances
    for path in instances:
        result = both_instance(path.read_bytes(), 50)
        binary = path.with_name(path.name.replace("_ins_mask", "_bin_mask").replace(
            "_ins_maks", "_bin_mask"))  # fmt: skip
        if binary.exists():
            assert both_binary(binary.read_bytes(), 50, result.foreground).mismatch is not None


def test_every_corpus_png_gives_the_same_outcome_both_ways(tmp_path: Path):
    """Good or bad, every PNG of the bad-input corpus: equal results or the same error code."""
    corpus = build_corpus(tmp_path)
    pngs = sorted(corpus.mixed.rglob("*.png"))
    assert len(pngs) > 30
    outcomes = set()
    for path in pngs:
        data = path.read_bytes()
        for measure in (_instance_outcome, _binary_outcome):
            fused, standard = measure(data, True), measure(data, False)
            assert fused == standard, path.name
            outcomes.add(fused if isinstance(fused, str) else "ok")
    assert {"ok", "corrupt", "truncated", "not_png"} <= outcomes


def _instance_outcome(data: bytes, fused: bool) -> object:
    try:
        result = measure_instance(data, max_pixels=LIMIT, scale=50, fused=fused)
    except PngError as exc:
        return exc.code
    stats = result.stats
    return (
        stats.colours.tobytes(), stats.pixels.tobytes(), stats.x_min.tobytes(),
        stats.y_max.tobytes(), stats.centroid_x.tobytes(), result.foreground.bounds.tobytes(),
        result.scaled,
    )  # fmt: skip


def _binary_outcome(data: bytes, fused: bool) -> object:
    try:
        return measure_binary(data, max_pixels=LIMIT, scale=50, foreground=None, fused=fused)
    except PngError as exc:
        return exc.code


def test_undefined_filter_type_is_corrupt_naming_the_row():
    rgb = np.zeros((4, 3, 3), np.uint8)
    data = write_png(rgb, RGB, [0])
    raw = bytearray(zlib.decompress(_idat_payloads(data)[0]))
    raw[2 * (1 + 9)] = 5  # row 2's filter byte
    bad = SIGNATURE + ihdr(3, 4, 8, RGB, False) + chunk(b"IDAT", zlib.compress(bytes(raw)))
    bad += chunk(b"IEND", b"")
    with pytest.raises(PngError, match="invalid scanline filter in row 2") as caught:
        measure_instance(bad, max_pixels=LIMIT, scale=None)
    assert caught.value.code == "corrupt"


def test_short_and_broken_streams_are_corrupt():
    rgb = np.full((4, 3, 3), 9, np.uint8)
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(4))
    head = SIGNATURE + ihdr(3, 4, 8, RGB, False)
    short = head + chunk(b"IDAT", zlib.compress(raw[:-1])) + chunk(b"IEND", b"")
    with pytest.raises(PngError, match=r"stream too short \(39 of 40 bytes\)"):
        measure_instance(short, max_pixels=LIMIT, scale=None)
    broken = head + chunk(b"IDAT", b"\x78\x9c\xff\xff\xff") + chunk(b"IEND", b"")
    with pytest.raises(PngError, match="could not be decoded") as caught:
        measure_instance(broken, max_pixels=LIMIT, scale=None)
    assert caught.value.code == "corrupt"


def _peak_traced(function) -> int:
    function()  # compile and warm outside the measurement
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fused_path_builds_no_full_size_image():
    """Peak traced memory while measuring a 2000x1500 RGB mask (9 MB decoded): a strip and two
    rows (plus, with a rescale, the rescaled scanlines). numpy's buffers are traced (shown on a
    copy of the decoded image); libspng's are not, so the standard path is no comparison."""
    rgb = np.zeros((1500, 2000, 3), np.uint8)
    rgb[200:1300, 300:1700] = (0, 10, 128)
    rgb[400:600, 500:900] = (0, 11, 32)
    data = write_png(rgb, RGB, [2])
    decoded_copy = _peak_traced(lambda: decode_png(data).copy())
    fused = _peak_traced(lambda: measure_instance(data, max_pixels=LIMIT, scale=None))
    rescaled = _peak_traced(lambda: measure_instance(data, max_pixels=LIMIT, scale=50))
    assert decoded_copy >= rgb.nbytes
    assert fused < 1 << 20  # a 256 KiB strip, its zero rows, the accumulators
    scanlines = 750 * (1 + 1000 * 3)
    assert rescaled < scanlines + (1 << 20)


def test_foreground_runs_match_the_mask():
    rgb = np.zeros((3, 6, 4), np.uint8)
    rgb[0, 1:3, 0] = 5
    rgb[0, 4, 2] = 1
    rgb[2, :, 1] = 7
    rgb[1, 2, 3] = 255  # alpha alone is background
    runs = foreground_runs(rgb)
    assert runs.bounds.tolist() == [[1, 3], [4, 5], [0, 6]]
    assert runs.row_ends.tolist() == [2, 2, 3]


@pytest.mark.parametrize("style", STYLES)
def test_every_mask_style_and_encoder_measures_identically(style):
    """Masks in every style of the benchmark's spread, written by every encoder it times
    (Pillow default and optimize, libpng's adaptive filters at level 1, each filter forced):
    both paths agree, with and without a rescale, binary masks against the instance foreground."""
    mask = style_mask(style, seed=3, size=(331, 187))
    foreground = None
    if style == "binary":
        instance = style_mask("street", seed=3, size=(331, 187))
        foreground = both_instance(encode_as(instance, "pillow"), None).foreground
    for encoder in ENCODERS:
        data = encode_as(mask, encoder)
        for scale in (None, 50):
            if style == "binary":
                assert both_binary(data, scale, foreground).mismatch is not None
            else:
                result = both_instance(data, scale)
                assert result.stats.background_pixels < mask.shape[0] * mask.shape[1]


def test_colours_repeating_while_the_accumulator_grows():
    """The fused kernel grows the colour accumulator mid-row too (2,100 colours, each as colour,
    black, colour): the same statistics as the whole-image kernel, which its test checks
    against a reference."""
    rgb = many_colours_repeating_across_black(2100)
    result = both_instance(write_png(rgb, RGB, [0, 2]), 50)
    assert result.stats.pixels.tolist() == [4] * 2100


@pytest.mark.parametrize("encoder", ["pillow", "up-only", "none-only"])
def test_full_size_masks_measure_identically_across_strips(encoder):
    """1080p masks span many 256 KiB strips: rows the same as the row above (measured from the
    runs already found, rescaled as zeros) continue correctly from one strip into the next."""
    foreground = both_instance(encode_as(style_mask("street"), encoder), 50).foreground
    both_binary(encode_as(style_mask("binary"), encoder), 50, foreground)
