"""Tests of the ClearML mask kernels of :mod:`pipeline.kernels.masks`: opacity of alpha masks and
the values pixel-segmentation masks are measured on.

``opacity`` is checked per PNG flavour against what SPEC 2.5 says counts (the A channel if
present, else the grey value; for RGB, Pillow's own ``convert("L")`` as the reference luma);
``alpha_stats`` against a brute-force numpy reference; ``grey_as_rgb``/``label_values`` against
the colour key the one-pass kernel measures (``r << 16 | g << 8 | b``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from pipeline.kernels.masks import alpha_stats, grey_as_rgb, label_values, opacity
from pipeline.kernels.segments import colour_stats


def _random(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 65536 if dtype is np.uint16 else 256
    array = rng.integers(0, top, size=shape).astype(dtype)
    # Make sure both ends of the range occur.
    array.flat[0] = 0
    array.flat[-1] = top - 1
    return array


# ---------------------------------------------------------------------------------------------
# opacity per mode
# ---------------------------------------------------------------------------------------------


def test_opacity_of_grey_is_the_grey_value() -> None:
    grey = _random((7, 9, 1), np.uint8)
    alpha, full = opacity(grey)
    assert full == 255
    assert alpha.shape == (7, 9)
    np.testing.assert_array_equal(alpha, grey[:, :, 0])


def test_opacity_of_grey_alpha_is_the_alpha_channel() -> None:
    la = _random((6, 5, 2), np.uint8, seed=1)
    alpha, full = opacity(la)
    assert full == 255
    np.testing.assert_array_equal(alpha, la[:, :, 1])
    # The grey channel does not matter.
    changed = la.copy()
    changed[:, :, 0] = 255 - changed[:, :, 0]
    np.testing.assert_array_equal(opacity(changed)[0], la[:, :, 1])


def test_opacity_of_rgba_is_the_alpha_channel() -> None:
    rgba = _random((5, 8, 4), np.uint8, seed=2)
    alpha, full = opacity(rgba)
    assert full == 255
    np.testing.assert_array_equal(alpha, rgba[:, :, 3])


def test_opacity_of_sixteen_bit_grey_counts_up_to_65535() -> None:
    grey = _random((4, 6, 1), np.uint16, seed=3)
    alpha, full = opacity(grey)
    assert full == 65535
    assert alpha.dtype == np.uint16
    np.testing.assert_array_equal(alpha, grey[:, :, 0])


def test_opacity_of_rgb_equals_pillow_convert_l() -> None:
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, size=(64, 64, 3)).astype(np.uint8)
    # Pure primaries, greys and both extremes, where rounding is most likely to differ.
    levels = np.arange(256, dtype=np.uint8)
    rgb[0, :, :] = 0
    rgb[1, :, 0] = 255
    rgb[2, :, 1] = 255
    rgb[3, :, 2] = 255
    rgb[4:8, :, :] = np.stack([levels] * 3, axis=-1).reshape(4, 64, 3)
    alpha, full = opacity(rgb)
    expected = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    assert full == 255
    assert alpha.dtype == np.uint8
    np.testing.assert_array_equal(alpha, expected)


def test_opacity_of_rgb_grey_pixels_is_their_value() -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([levels] * 3, axis=-1)
    np.testing.assert_array_equal(opacity(rgb)[0], levels)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6)
                  .map(lambda s: (s[0], s[1], 3))))  # fmt: skip
def test_opacity_of_any_rgb_equals_pillow(rgb: np.ndarray) -> None:
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L"))
    np.testing.assert_array_equal(opacity(rgb)[0], expected)


# ---------------------------------------------------------------------------------------------
# alpha_stats against brute force
# ---------------------------------------------------------------------------------------------


def _brute_alpha(alpha: np.ndarray, full: int) -> dict[str, object]:
    """Per-pixel loops: mean, counts and the bbox (max exclusive) of the pixels above 0."""
    height, width = alpha.shape
    total = transparent = opaque = 0
    xs: list[int] = []
    ys: list[int] = []
    for y in range(height):
        for x in range(width):
            value = int(alpha[y, x])
            total += value
            transparent += value == 0
            opaque += value == full
            if value > 0:
                xs.append(x)
                ys.append(y)
    pixels = height * width
    return {
        "mean_opacity": total / (pixels * full),
        "transparent_pixels": transparent,
        "opaque_pixels": opaque,
        "partial_pixels": pixels - transparent - opaque,
        "visible_bbox": (min(xs), min(ys), max(xs) + 1, max(ys) + 1) if xs else None,
    }


def _as_dict(pixels: np.ndarray) -> dict[str, object]:
    stats = alpha_stats(pixels)
    return {
        "mean_opacity": stats.mean_opacity,
        "transparent_pixels": stats.transparent_pixels,
        "opaque_pixels": stats.opaque_pixels,
        "partial_pixels": stats.partial_pixels,
        "visible_bbox": stats.visible_bbox,
    }


def _soft_disc(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    distance = np.hypot((xs - width / 2) / (width / 3), (ys - height / 2) / (height / 3))
    return np.rint(np.clip(1.5 - distance, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "name",
    ["L", "LA", "RGBA", "RGB", "I;16", "soft-disc-LA", "empty-L", "opaque-RGBA", "edge-L"],
)
def test_alpha_stats_equal_brute_force(name: str) -> None:
    if name == "L":
        pixels = _random((9, 11, 1), np.uint8)
        alpha, full = pixels[:, :, 0], 255
    elif name == "LA":
        pixels = _random((9, 11, 2), np.uint8, seed=5)
        alpha, full = pixels[:, :, 1], 255
    elif name == "RGBA":
        pixels = _random((10, 7, 4), np.uint8, seed=6)
        alpha, full = pixels[:, :, 3], 255
    elif name == "RGB":
        pixels = _random((10, 7, 3), np.uint8, seed=7)
        alpha = np.asarray(Image.fromarray(pixels, "RGB").convert("L"))
        full = 255
    elif name == "I;16":
        pixels = _random((8, 8, 1), np.uint16, seed=8)
        pixels[2, 3, 0] = 65535
        alpha, full = pixels[:, :, 0], 65535
    elif name == "soft-disc-LA":
        disc = _soft_disc(20, 30)
        pixels = np.stack([np.full_like(disc, 200), disc], axis=-1)
        alpha, full = disc, 255
    elif name == "empty-L":
        pixels = np.zeros((5, 6, 1), dtype=np.uint8)
        alpha, full = pixels[:, :, 0], 255
    elif name == "opaque-RGBA":
        pixels = np.full((4, 3, 4), 255, dtype=np.uint8)
        alpha, full = pixels[:, :, 3], 255
    else:  # a single visible pixel in the bottom-right corner
        pixels = np.zeros((5, 6, 1), dtype=np.uint8)
        pixels[4, 5, 0] = 1
        alpha, full = pixels[:, :, 0], 255
    expected = _brute_alpha(alpha, full)
    actual = _as_dict(pixels)
    assert actual["mean_opacity"] == pytest.approx(expected["mean_opacity"], rel=1e-12, abs=0)
    assert {k: v for k, v in actual.items() if k != "mean_opacity"} == {
        k: v for k, v in expected.items() if k != "mean_opacity"
    }


def test_alpha_stats_of_a_fully_transparent_mask() -> None:
    stats = alpha_stats(np.zeros((3, 4, 2), dtype=np.uint8))
    assert stats.mean_opacity == 0.0
    assert (stats.transparent_pixels, stats.opaque_pixels, stats.partial_pixels) == (12, 0, 0)
    assert stats.visible_bbox is None


def test_alpha_stats_sixteen_bit_255_is_partial_not_opaque() -> None:
    pixels = np.array([[[255], [65535]], [[0], [65534]]], dtype=np.uint16)
    stats = alpha_stats(pixels)
    assert (stats.transparent_pixels, stats.opaque_pixels, stats.partial_pixels) == (1, 1, 2)
    assert stats.mean_opacity == pytest.approx((255 + 65535 + 65534) / (4 * 65535), rel=1e-12)
    assert stats.visible_bbox == (0, 0, 2, 2)


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(np.uint8,
               st.tuples(st.integers(1, 7), st.integers(1, 7), st.sampled_from([1, 2, 4])),
               elements=st.sampled_from([0, 0, 0, 1, 128, 254, 255, 255])),
)  # fmt: skip
def test_alpha_stats_property(pixels: np.ndarray) -> None:
    alpha = pixels[:, :, pixels.shape[2] - 1] if pixels.shape[2] in (2, 4) else pixels[:, :, 0]
    expected = _brute_alpha(alpha, 255)
    actual = _as_dict(pixels)
    assert actual["mean_opacity"] == pytest.approx(expected.pop("mean_opacity"), rel=1e-12)
    actual.pop("mean_opacity")
    assert actual == expected


# ---------------------------------------------------------------------------------------------
# grey_as_rgb / label_values: the colour key equals the grey value
# ---------------------------------------------------------------------------------------------


def _keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return np.asarray((rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2])


def test_grey_as_rgb_eight_bit() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    packed = grey_as_rgb(values)
    assert packed.dtype == np.uint8
    assert packed.shape == (16, 16, 3)
    np.testing.assert_array_equal(packed[:, :, 0], 0)
    np.testing.assert_array_equal(packed[:, :, 1], 0)
    np.testing.assert_array_equal(packed[:, :, 2], values)
    np.testing.assert_array_equal(_keys(packed), values)


def test_grey_as_rgb_sixteen_bit() -> None:
    values = np.array([[0, 1, 255, 256], [24000, 26001, 26002, 65535]], dtype=np.uint16)
    packed = grey_as_rgb(values)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed[:, :, 0], 0)
    np.testing.assert_array_equal(packed[:, :, 1], values >> 8)
    np.testing.assert_array_equal(packed[:, :, 2], values & 255)
    np.testing.assert_array_equal(_keys(packed), values)


@pytest.mark.parametrize(
    ("channels", "dtype", "grey"),
    [(1, np.uint8, True), (2, np.uint8, True), (1, np.uint16, True), (3, np.uint8, False),
     (4, np.uint8, False)],
)  # fmt: skip
def test_label_values_keys(channels: int, dtype: type, grey: bool) -> None:
    pixels = _random((6, 7, channels), dtype, seed=channels)
    rgb, is_grey = label_values(pixels)
    assert is_grey is grey
    if grey:
        # The grey channel's value is the key; an alpha channel (LA) is ignored.
        np.testing.assert_array_equal(_keys(rgb), pixels[:, :, 0])
    else:
        # The colour channels are the key; alpha (RGBA) is ignored.
        np.testing.assert_array_equal(_keys(rgb[:, :, :3]), _keys(pixels[:, :, :3]))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_label_values_measured_by_the_colour_kernel(dtype: type) -> None:
    """The kernel's keys over packed grey masks are exactly the distinct grey values."""
    pixels = _random((12, 13, 1), dtype, seed=9)
    pixels[0:3, 0:3, 0] = 26001 if dtype is np.uint16 else 34
    rgb, _ = label_values(pixels)
    stats = colour_stats(rgb, skip_black=False)
    colours = stats.colours.astype(np.int64)
    keys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    values, counts = np.unique(pixels[:, :, 0], return_counts=True)
    np.testing.assert_array_equal(keys, values)
    np.testing.assert_array_equal(stats.pixels, counts)
