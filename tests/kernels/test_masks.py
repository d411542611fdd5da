"""Tests of :mod:`pipeline.kernels.masks`: typed totals, binary masks, bboxes and rescaling.

``typed_totals`` is compared with a per-pixel reference that types every pixel from the SPEC 2.1
table written out here; ``rescale_nearest`` is checked for its SPEC 3 promise (nearest-neighbour
only: every output colour exists in the input) and against exact rational pixel-centre sampling.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.formats.celantur import classify_colours
from pipeline.kernels.masks import (
    TypedTotals,
    bbox_of,
    nearest_indices,
    rescale_nearest,
    scaled_size,
    typed_totals,
    typed_totals_of_masks,
)
from pipeline.kernels.segments import binary_stats, colour_stats, foreground_runs

# ---------------------------------------------------------------------------------------------
# SPEC 2.1, written out: which types one pixel colour carries under each encoding
# ---------------------------------------------------------------------------------------------

V26_FLAG_BITS = {"person": 128, "license_plate": 64, "face": 32, "vehicle": 16}
LEGACY_VALUE_TYPE = {128: "person", 64: "license_plate", 192: "face", 255: "vehicle"}
TYPES = ("person", "license_plate", "face", "vehicle")


def spec_pixel_types(r: int, g: int, b: int, encoding: str) -> set[str] | None:
    """Types of one non-background pixel, or ``None`` when its colour breaks the encoding."""
    if encoding == "v26":
        if r != 0 or b & 0b1111 or b == 0:
            return None
        return {name for name, bit in V26_FLAG_BITS.items() if b & bit}
    if encoding == "legacy":
        if r != 0 or b not in LEGACY_VALUE_TYPE:
            return None
        return {LEGACY_VALUE_TYPE[b]}
    assert encoding == "legacy-red"
    if b != 0 or r not in LEGACY_VALUE_TYPE:
        return None
    return {LEGACY_VALUE_TYPE[r]}


def reference_totals(rgb: np.ndarray, encoding: str) -> TypedTotals:
    """Walk every pixel: a pixel with several types counts for each, and as overlap."""
    per_type = dict.fromkeys(TYPES, 0)
    overlap = invalid = 0
    invalid_colours = set()
    for row in rgb[:, :, :3].tolist():
        for r, g, b in row:
            if r == g == b == 0:
                continue
            types = spec_pixel_types(r, g, b, encoding)
            if types is None:
                invalid += 1
                invalid_colours.add((r, g, b))
                continue
            for name in types:
                per_type[name] += 1
            if len(types) > 1:
                overlap += 1
    return TypedTotals(
        person_pixels=per_type["person"],
        license_plate_pixels=per_type["license_plate"],
        face_pixels=per_type["face"],
        vehicle_pixels=per_type["vehicle"],
        overlap_pixels=overlap,
        invalid_pixels=invalid,
        invalid_segments=len(invalid_colours),
    )


def kernel_totals(rgb: np.ndarray, encoding: str) -> TypedTotals:
    stats = colour_stats(rgb)
    _, flags = classify_colours(stats.colours, encoding)
    return typed_totals(stats.pixels, flags)


# ---------------------------------------------------------------------------------------------
# typed_totals
# ---------------------------------------------------------------------------------------------


def test_typed_totals_hand_counted_v26():
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    flat = rgb.reshape(-1, 3)
    layout = [
        ((0, 1, 128), 10),  # person
        ((0, 2, 80), 5),  # license_plate + vehicle (plate on vehicle)
        ((0, 3, 255), 3),  # invalid: low bits of B set
        ((7, 4, 128), 2),  # invalid: R != 0
        ((0, 5, 0), 4),  # invalid: untyped
        ((0, 6, 240), 6),  # all four types
        ((0, 9, 128), 1),  # another person
    ]
    start = 0
    for colour, count in layout:
        flat[start : start + count] = colour
        start += count
    assert kernel_totals(rgb, "v26") == TypedTotals(
        person_pixels=10 + 6 + 1,
        license_plate_pixels=5 + 6,
        face_pixels=6,
        vehicle_pixels=5 + 6,
        overlap_pixels=5 + 6,
        invalid_pixels=3 + 2 + 4,
        invalid_segments=3,
    )
    assert kernel_totals(rgb, "v26") == reference_totals(rgb, "v26")


def test_typed_totals_hand_counted_legacy_and_legacy_red():
    legacy = np.array(
        [[[0, 1, 128], [0, 2, 64], [0, 3, 192], [0, 4, 255], [0, 5, 16], [9, 6, 128], [0, 7, 0]]],
        dtype=np.uint8,
    )
    expected = TypedTotals(
        person_pixels=1,
        license_plate_pixels=1,
        face_pixels=1,
        vehicle_pixels=1,
        overlap_pixels=0,
        invalid_pixels=3,
        invalid_segments=3,
    )
    assert kernel_totals(legacy, "legacy") == expected
    red = legacy[:, :, ::-1].copy()  # type value moves to R, the zero channel to B
    assert kernel_totals(red, "legacy-red") == expected
    # The same pixels read under the wrong encoding are mostly invalid.
    assert kernel_totals(red, "legacy").invalid_pixels == 7
    assert kernel_totals(legacy, "legacy-red").invalid_pixels == 7


def test_typed_totals_direct_arrays():
    # Flags are compact (bit 0 person, 1 plate, 2 face, 3 vehicle); -1 is invalid.
    pixels = np.array([10, 20, 30, 40, 50, 60])
    flags = np.array([0b0001, 0b1010, -1, 0b0100, 0b1111, -1], dtype=np.int8)
    assert typed_totals(pixels, flags) == TypedTotals(
        person_pixels=10 + 50,
        license_plate_pixels=20 + 50,
        face_pixels=40 + 50,
        vehicle_pixels=20 + 50,
        overlap_pixels=20 + 50,
        invalid_pixels=30 + 60,
        invalid_segments=2,
    )
    assert typed_totals(np.array([], dtype=np.int64), np.array([], dtype=np.int8)) == TypedTotals(
        0, 0, 0, 0, 0, 0, 0
    )


def test_typed_totals_of_masks_is_each_masks_own_totals():
    # A batch's segments in any order, some masks with none: each mask's totals as if alone.
    rng = np.random.default_rng(16)
    pixels = rng.integers(1, 10**6, 500)
    flags = rng.choice(np.array([-1, 0, 1, 2, 4, 8, 5, 10, 15], dtype=np.int8), 500)
    masks = rng.choice(np.array([0, 1, 3, 4, 6]), 500)
    totals = typed_totals_of_masks(pixels, flags, masks, 7)
    assert totals == [typed_totals(pixels[masks == i], flags[masks == i]) for i in range(7)]
    assert totals[2] == totals[5] == TypedTotals(0, 0, 0, 0, 0, 0, 0)
    assert typed_totals_of_masks(pixels[:0], flags[:0], masks[:0], 2) == [totals[2]] * 2


_TYPE_VALUES = [0, 1, 8, 15, 16, 17, 32, 48, 64, 80, 96, 112, 128, 144, 160, 192, 200, 240, 255]


@st.composite
def typed_masks(draw) -> tuple[np.ndarray, str]:
    """Masks of valid and invalid colours for one encoding (type values in B, or R for red)."""
    encoding = draw(st.sampled_from(["v26", "legacy", "legacy-red"]))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    type_value = st.sampled_from(_TYPE_VALUES)
    # The channel that must be 0 is mostly 0, sometimes not (invalid).
    zero_value = st.sampled_from([0, 0, 0, 0, 1, 128, 255])
    instance = st.integers(0, 255)
    palette = draw(st.lists(st.tuples(zero_value, instance, type_value), min_size=1, max_size=8))
    palette.append((0, 0, 0))
    colours = np.array(palette, dtype=np.uint8)
    if encoding == "legacy-red":
        colours = colours[:, ::-1]
    index = draw(hnp.arrays(np.intp, (height, width), elements=st.integers(0, len(colours) - 1)))
    return np.ascontiguousarray(colours[index]), encoding


@settings(max_examples=100, deadline=None)
@given(typed_masks())
def test_typed_totals_match_per_pixel_reference(case):
    rgb, encoding = case
    assert kernel_totals(rgb, encoding) == reference_totals(rgb, encoding)


@pytest.mark.parametrize("encoding", ["v26", "legacy", "legacy-red"])
def test_typed_totals_dense_generated_masks(encoding):
    rng = np.random.default_rng({"v26": 26, "legacy": 25, "legacy-red": 24}[encoding])
    for _ in range(5):
        height, width = (int(v) for v in rng.integers(20, 90, size=2))
        rgb = np.zeros((height, width, 3), dtype=np.uint8)
        channel = 0 if encoding == "legacy-red" else 2
        for _ in range(15):
            y0, y1 = np.sort(rng.integers(0, height + 1, size=2))
            x0, x1 = np.sort(rng.integers(0, width + 1, size=2))
            colour = np.zeros(3, dtype=np.uint8)
            colour[1] = rng.integers(0, 256)
            colour[channel] = rng.choice(_TYPE_VALUES)
            if rng.random() < 0.15:
                colour[2 - channel] = rng.integers(1, 256)
            rgb[y0:y1, x0:x1] = colour
        assert kernel_totals(rgb, encoding) == reference_totals(rgb, encoding)


# ---------------------------------------------------------------------------------------------
# Binary masks and foreground
# ---------------------------------------------------------------------------------------------


def _anonymised(binary):
    return binary_stats(binary)[0]


def test_binary_threshold_grey():
    grey = np.array([[0, 1, 127, 128, 129, 254, 255]], dtype=np.uint8)
    assert _anonymised(grey) == 4
    assert _anonymised(grey[:, :, None]) == 4


def test_binary_la_ignores_alpha():
    la = np.array([[[127, 255], [128, 0], [0, 255], [255, 0]]], dtype=np.uint8)
    assert _anonymised(la) == 2


def test_binary_rgb_and_rgba_use_the_brightest_channel():
    greys = [0, 127, 128, 255]
    rgb = np.array([[[v, v, v] for v in greys]], dtype=np.uint8)
    assert _anonymised(rgb) == 2
    rgba = np.array([[[v, v, v, 255 - v] for v in greys]], dtype=np.uint8)
    assert _anonymised(rgba) == 2
    transparent = rgba.copy()
    transparent[:, :, 3] = 0
    assert _anonymised(transparent) == 2
    opaque_black = np.zeros((1, 2, 4), dtype=np.uint8)
    opaque_black[:, :, 3] = 255
    assert _anonymised(opaque_black) == 0
    one_bright_channel = np.array([[[0, 200, 0], [127, 0, 127]]], dtype=np.uint8)
    assert _anonymised(one_bright_channel) == 1


def test_binary_sixteen_bit():
    grey = np.array([[0, 32895, 32896, 65535]], dtype=np.uint16)
    assert _anonymised(grey) == 2


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda h: st.integers(1, 30).flatmap(
            lambda w: st.tuples(
                hnp.arrays(np.uint8, (h, w, 3), elements=st.sampled_from([0, 0, 0, 1, 128, 255])),
                hnp.arrays(np.uint8, (h, w, 1), elements=st.sampled_from([0, 127, 128, 255])),
            )
        )
    )
)
def test_binary_mismatch_matches_per_pixel_rule(masks):
    instance, binary = masks
    foreground = [[any(px) for px in row] for row in instance.tolist()]
    hidden = [[px[0] >= 128 for px in row] for row in binary.tolist()]
    pairs = zip(
        (f for row in foreground for f in row), (h for row in hidden for h in row), strict=True
    )
    expected = sum(f != h for f, h in pairs)
    anonymised, mismatch = binary_stats(binary, foreground_runs(instance))
    assert mismatch == expected
    assert anonymised == sum(map(sum, hidden))


def test_binary_mismatch_ignores_instance_alpha_and_needs_equal_sizes():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[:, :, 3] = 255
    rgba[1, 1] = (0, 3, 0, 0)
    binary = np.zeros((2, 2, 1), dtype=np.uint8)
    assert binary_stats(binary, foreground_runs(rgba)) == (0, 1)
    assert binary_stats(np.zeros((3, 2, 1), np.uint8), foreground_runs(rgba)) == (0, None)
    assert binary_stats(binary) == (0, None)


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        bool,
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
        elements=st.booleans(),
        fill=st.just(False),
    )
)
def test_bbox_of_matches_nonzero(area):
    ys, xs = np.nonzero(area)
    if ys.size == 0:
        assert bbox_of(area) is None
    else:
        assert bbox_of(area) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_bbox_of_examples():
    area = np.zeros((5, 8), dtype=bool)
    assert bbox_of(area) is None
    area[2, 3] = True
    assert bbox_of(area) == (3, 2, 4, 3)
    area[4, 7] = True
    assert bbox_of(area) == (3, 2, 8, 5)
    assert all(type(v) is int for v in bbox_of(area))


# ---------------------------------------------------------------------------------------------
# Rescaling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, -1, 101, 1000])
def test_scaled_size_rejects_out_of_range(percent):
    with pytest.raises(ValueError):
        scaled_size(100, 100, percent)
    with pytest.raises(ValueError):
        rescale_nearest(np.zeros((4, 4, 3), dtype=np.uint8), percent)


def test_scaled_size_examples():
    assert scaled_size(1000, 500, 100) == (1000, 500)
    assert scaled_size(1000, 500, 25) == (250, 125)
    assert scaled_size(1920, 1080, 50) == (960, 540)
    assert scaled_size(3, 7, 1) == (1, 1)  # never below one pixel
    assert scaled_size(1, 1, 1) == (1, 1)


@st.composite
def palette_images(draw) -> np.ndarray:
    """(H, W, 3) uint8 colour masks, (H, W, 4) RGBA or (H, W) label masks; colours repeat."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["rgb", "rgba", "labels"]))
    if kind == "labels":
        values = draw(st.lists(st.integers(0, 65535), min_size=1, max_size=6))
        palette = np.array(values, dtype=np.uint16)
    else:
        channels = 3 if kind == "rgb" else 4
        colour = st.tuples(*[st.integers(0, 255)] * channels)
        palette = np.array(draw(st.lists(colour, min_size=1, max_size=6)), dtype=np.uint8)
    index = draw(hnp.arrays(np.intp, (height, width), elements=st.integers(0, len(palette) - 1)))
    return palette[index]


def _colour_set(pixels: np.ndarray) -> set:
    if pixels.ndim == 2:
        return set(np.unique(pixels).tolist())
    return {tuple(c) for c in np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0).tolist()}


@settings(max_examples=100, deadline=None)
@given(palette_images(), st.integers(1, 100))
def test_rescale_output_colours_subset_and_shape(pixels, percent):
    out = rescale_nearest(pixels, percent)
    height, width = pixels.shape[:2]
    new_width, new_height = scaled_size(width, height, percent)
    assert out.shape == (new_height, new_width, *pixels.shape[2:])
    assert out.dtype == pixels.dtype
    assert out.flags.c_contiguous
    assert _colour_set(out) <= _colour_set(pixels)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_nearest_indices_sample_the_pixel_under_each_output_centre(source, target):
    indices = nearest_indices(source, target)
    assert indices.shape == (target,)
    assert indices.min() >= 0 and indices.max() <= source - 1
    assert np.all(np.diff(indices) >= 0)
    # Output centre i + 1/2 lands at (i + 1/2) * source / target in source coordinates; the chosen
    # source pixel k covers [k, k + 1] (a centre exactly on a boundary may take either side).
    for i in {0, target // 3, target // 2, target - 1} | set(
        range(0, target, max(1, target // 50))
    ):
        centre = Fraction(2 * i + 1, 2) * Fraction(source, target)
        k = int(indices[i])
        assert k <= centre <= k + 1, (source, target, i, k)


def test_rescale_samples_by_pixel_centre_reference():
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    for percent in (1, 13, 33, 50, 67, 99):
        out = rescale_nearest(pixels, percent)
        new_height, new_width = out.shape[:2]
        for y in range(new_height):
            sy = ((2 * y + 1) * 37) // (2 * new_height)
            for x in range(new_width):
                sx = ((2 * x + 1) * 53) // (2 * new_width)
                np.testing.assert_array_equal(out[y, x], pixels[sy, sx])


@settings(max_examples=50, deadline=None)
@given(palette_images())
def test_rescale_100_percent_is_identity(pixels):
    out = rescale_nearest(pixels, 100)
    assert out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels)


@settings(max_examples=50, deadline=None)
@given(palette_images())
def test_rescale_50_percent_of_constant_2x2_blocks_is_block_subsample(blocks):
    image = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)
    out = rescale_nearest(image, 50)
    np.testing.assert_array_equal(out, image[::2, ::2])
    np.testing.assert_array_equal(out, blocks)


def test_rescale_non_contiguous_input():
    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 256, size=(40, 60, 4), dtype=np.uint8)
    view = pixels[::-1, :, :3]
    out = rescale_nearest(view, 30)
    np.testing.assert_array_equal(out, rescale_nearest(np.ascontiguousarray(view), 30))
    assert _colour_set(out) <= _colour_set(view)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4])),
        elements=st.sampled_from([0, 1, 7, 128, 200, 255]),
    ),
    st.integers(1, 100),
)
def test_fused_rescale_encode_equals_rescale_then_encode(pixels, percent):
    from pipeline.io.png import decode_png, encode_filtered_png
    from pipeline.kernels.masks import nearest_grid
    from pipeline.kernels.segments import nearest_up_filtered

    rows, cols = nearest_grid(pixels.shape[1], pixels.shape[0], percent)
    png = encode_filtered_png(nearest_up_filtered(pixels, rows, cols), len(cols), pixels.shape[2])
    np.testing.assert_array_equal(decode_png(png), rescale_nearest(pixels, percent))
