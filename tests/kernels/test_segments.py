"""Differential tests of :func:`pipeline.kernels.segments.colour_stats`.

The compiled one-pass kernel is compared with slow, obvious references written here: one boolean
mask per distinct colour (``np.unique(axis=0)``), a plain per-pixel Python loop for masks with too
many colours for the per-colour loop, and ``skimage.measure.regionprops`` on a label image.
Bounding boxes follow SPEC 3: ``x_min``/``y_min`` inclusive, ``x_max``/``y_max`` exclusive.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import many_colours_repeating_across_black
from skimage.draw import ellipse
from skimage.measure import regionprops

from pipeline.kernels.segments import ColourStats, colour_stats

# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def reference_by_colour(rgb: np.ndarray) -> dict[str, np.ndarray | int]:
    """Per distinct colour: a boolean mask, its count, its nonzero extent and its mean position."""
    rgb3 = np.asarray(rgb)[:, :, :3]
    colours = np.unique(rgb3.reshape(-1, 3), axis=0)  # lexicographic (R, G, B) order
    colours = colours[colours.any(axis=1)]
    columns: dict[str, list] = {
        k: [] for k in ("pixels", "x_min", "y_min", "x_max", "y_max", "cx", "cy")
    }
    for colour in colours:
        mask = np.all(rgb3 == colour, axis=2)
        ys, xs = np.nonzero(mask)
        columns["pixels"].append(np.count_nonzero(mask))
        columns["x_min"].append(xs.min())
        columns["y_min"].append(ys.min())
        columns["x_max"].append(xs.max() + 1)
        columns["y_max"].append(ys.max() + 1)
        columns["cx"].append(xs.mean())
        columns["cy"].append(ys.mean())
    result: dict[str, np.ndarray | int] = {
        k: np.array(v, dtype=np.float64 if k in ("cx", "cy") else np.int64)
        for k, v in columns.items()
    }
    result["colours"] = colours.reshape(-1, 3)
    result["background"] = int(np.count_nonzero(~rgb3.any(axis=2)))
    return result


def reference_by_pixel(rgb: np.ndarray) -> dict[str, np.ndarray | int]:
    """The same statistics from a plain Python loop over every pixel (fine for ~10^5 pixels)."""
    acc: dict[tuple[int, int, int], list[int]] = {}
    background = 0
    height, width = rgb.shape[:2]
    for y, row in enumerate(rgb[:, :, :3].tolist()):
        for x, (r, g, b) in enumerate(row):
            if r == g == b == 0:
                background += 1
                continue
            entry = acc.get((r, g, b))
            if entry is None:
                acc[(r, g, b)] = [1, x, y, x, y, x, y]
            else:
                entry[0] += 1
                entry[1] = min(entry[1], x)
                entry[2] = min(entry[2], y)
                entry[3] = max(entry[3], x)
                entry[4] = max(entry[4], y)
                entry[5] += x
                entry[6] += y
    assert background + sum(e[0] for e in acc.values()) == height * width
    keys = sorted(acc)
    rows = [acc[k] for k in keys]
    return {
        "colours": np.array(keys, dtype=rgb.dtype).reshape(-1, 3),
        "pixels": np.array([r[0] for r in rows], dtype=np.int64),
        "x_min": np.array([r[1] for r in rows], dtype=np.int64),
        "y_min": np.array([r[2] for r in rows], dtype=np.int64),
        "x_max": np.array([r[3] + 1 for r in rows], dtype=np.int64),
        "y_max": np.array([r[4] + 1 for r in rows], dtype=np.int64),
        "cx": np.array([r[5] / r[0] for r in rows], dtype=np.float64),
        "cy": np.array([r[6] / r[0] for r in rows], dtype=np.float64),
        "background": background,
    }


def assert_stats_equal(stats: ColourStats, ref: dict[str, np.ndarray | int], rgb: np.ndarray):
    height, width = rgb.shape[:2]
    assert stats.width == width
    assert stats.height == height
    assert len(stats) == len(ref["pixels"])
    assert stats.colours.dtype == rgb.dtype
    np.testing.assert_array_equal(stats.colours.reshape(-1, 3), ref["colours"])
    np.testing.assert_array_equal(stats.pixels, ref["pixels"])
    np.testing.assert_array_equal(stats.x_min, ref["x_min"])
    np.testing.assert_array_equal(stats.y_min, ref["y_min"])
    np.testing.assert_array_equal(stats.x_max, ref["x_max"])
    np.testing.assert_array_equal(stats.y_max, ref["y_max"])
    assert np.allclose(stats.centroid_x, ref["cx"], rtol=1e-12, atol=1e-9)
    assert np.allclose(stats.centroid_y, ref["cy"], rtol=1e-12, atol=1e-9)
    assert stats.background_pixels == ref["background"]
    # Background accounting (SPEC 3): every pixel is background or in exactly one segment.
    assert stats.background_pixels + int(stats.pixels.sum()) == height * width
    assert stats.foreground_pixels == height * width - ref["background"]


def check(rgb: np.ndarray) -> ColourStats:
    stats = colour_stats(rgb)
    assert_stats_equal(stats, reference_by_colour(rgb), rgb)
    return stats


# ---------------------------------------------------------------------------------------------
# Generated data
# ---------------------------------------------------------------------------------------------


def _paint_shapes(rng: np.random.Generator, height: int, width: int, shapes: int) -> np.ndarray:
    """Overlapping rectangles and ellipses; later shapes cover earlier ones; colours repeat."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, size=(max(2, shapes // 2), 3), dtype=np.uint8)
    palette[0] = (0, 0, 0)  # painting background over objects cuts holes into them
    for _ in range(shapes):
        colour = palette[rng.integers(0, len(palette))]
        if rng.random() < 0.5:
            y0, y1 = np.sort(rng.integers(0, height + 1, size=2))
            x0, x1 = np.sort(rng.integers(0, width + 1, size=2))
            rgb[y0:y1, x0:x1] = colour
        else:
            rr, cc = ellipse(
                rng.uniform(-5, height + 5),
                rng.uniform(-5, width + 5),
                rng.uniform(1, height / 2 + 1),
                rng.uniform(1, width / 2 + 1),
                shape=(height, width),
                rotation=rng.uniform(0, np.pi),
            )
            rgb[rr, cc] = colour
    return rgb


@pytest.fixture(scope="module")
def shape_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(20260221)
    masks = []
    for _ in range(24):
        height, width = (int(v) for v in rng.integers(1, 120, size=2))
        masks.append(_paint_shapes(rng, height, width, int(rng.integers(1, 25))))
    return masks


_channel = st.one_of(st.sampled_from([0, 1, 16, 80, 128, 192, 254, 255]), st.integers(0, 255))


@st.composite
def palette_masks(draw, max_side: int = 40) -> np.ndarray:
    """Small (H, W, 3) masks drawn from a palette of 1..6 colours, so that colours repeat."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    palette = draw(st.lists(st.tuples(_channel, _channel, _channel), min_size=1, max_size=6))
    if draw(st.booleans()):
        palette.append((0, 0, 0))
    colours = np.array(palette, dtype=np.uint8)
    index = draw(hnp.arrays(np.intp, (height, width), elements=st.integers(0, len(colours) - 1)))
    return colours[index]


# ---------------------------------------------------------------------------------------------
# Differential tests
# ---------------------------------------------------------------------------------------------


def test_generated_shapes_match_reference(shape_masks):
    for rgb in shape_masks:
        check(rgb)


@settings(max_examples=100, deadline=None)
@given(palette_masks())
def test_palette_masks_match_reference(rgb):
    check(rgb)


def test_generated_shapes_match_regionprops(shape_masks):
    for rgb in shape_masks:
        stats = colour_stats(rgb)
        colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        # Label i + 1 for the i-th colour in (R, G, B) order; background -> 0.
        labels = (inverse.reshape(rgb.shape[:2]) + 1).astype(np.int32)
        if not colours[0].any():
            labels -= 1
            colours = colours[1:]
        props = regionprops(labels)
        assert [p.label for p in props] == list(range(1, len(colours) + 1))
        np.testing.assert_array_equal(stats.colours, colours)
        np.testing.assert_array_equal(stats.pixels, [p.area for p in props])
        # regionprops bbox: (min_row, min_col, max_row, max_col), max exclusive.
        np.testing.assert_array_equal(stats.y_min, [p.bbox[0] for p in props])
        np.testing.assert_array_equal(stats.x_min, [p.bbox[1] for p in props])
        np.testing.assert_array_equal(stats.y_max, [p.bbox[2] for p in props])
        np.testing.assert_array_equal(stats.x_max, [p.bbox[3] for p in props])
        assert np.allclose(stats.centroid_y, [p.centroid[0] for p in props])
        assert np.allclose(stats.centroid_x, [p.centroid[1] for p in props])


def test_pixel_loop_reference_agrees_with_colour_reference(shape_masks):
    # The per-pixel reference stands in for the per-colour one on noise; make sure they agree.
    for rgb in shape_masks[:6]:
        a, b = reference_by_colour(rgb), reference_by_pixel(rgb)
        for key in ("colours", "pixels", "x_min", "y_min", "x_max", "y_max", "background"):
            np.testing.assert_array_equal(a[key], b[key])
        assert np.allclose(a["cx"], b["cx"]) and np.allclose(a["cy"], b["cy"])


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (29, 1), (40, 40)])
def test_empty_mask_has_no_segments(shape):
    rgb = np.zeros((*shape, 3), dtype=np.uint8)
    stats = check(rgb)
    assert len(stats) == 0
    assert stats.colours.shape == (0, 3)
    assert stats.background_pixels == shape[0] * shape[1]
    assert stats.foreground_pixels == 0


@pytest.mark.parametrize(("y", "x"), [(0, 0), (0, 9), (6, 0), (6, 9), (3, 4)])
def test_single_pixel(y, x):
    rgb = np.zeros((7, 10, 3), dtype=np.uint8)
    rgb[y, x] = (0, 12, 80)
    stats = check(rgb)
    assert len(stats) == 1
    assert stats.colours.tolist() == [[0, 12, 80]]
    assert stats.pixels.tolist() == [1]
    assert (stats.x_min[0], stats.y_min[0], stats.x_max[0], stats.y_max[0]) == (x, y, x + 1, y + 1)
    assert (stats.centroid_x[0], stats.centroid_y[0]) == (x, y)


def test_one_by_one_object():
    rgb = np.array([[[0, 1, 128]]], dtype=np.uint8)
    stats = check(rgb)
    assert stats.pixels.tolist() == [1]
    assert stats.background_pixels == 0


def test_full_frame_object():
    rgb = np.zeros((31, 47, 3), dtype=np.uint8)
    rgb[:] = (0, 200, 16)
    stats = check(rgb)
    assert len(stats) == 1
    assert stats.pixels.tolist() == [31 * 47]
    assert (stats.x_min[0], stats.y_min[0], stats.x_max[0], stats.y_max[0]) == (0, 0, 47, 31)
    assert stats.centroid_x[0] == pytest.approx(23.0)
    assert stats.centroid_y[0] == pytest.approx(15.0)
    assert stats.background_pixels == 0


def test_every_v26_flag_combination():
    # B in 16..240 step 16 is every combination of the four v26 type flags; two instances each.
    rgb = np.zeros((64, 90, 3), dtype=np.uint8)
    for i, b in enumerate(range(16, 256, 16)):
        for j, g in enumerate((1, 255)):
            y0, x0 = 4 * i, 40 * j + i
            rgb[y0 : y0 + 6, x0 : x0 + 30 + j] = (0, g, b)
    stats = check(rgb)
    expected = sorted((0, g, b) for b in range(16, 256, 16) for g in (1, 255))
    assert [tuple(c) for c in stats.colours.tolist()] == expected


def test_colours_differing_in_one_channel_are_distinct_segments():
    # Keys pack R, G and B: (1,0,0), (0,1,0), (0,0,1), (0,0,255), (255,255,255) must not merge.
    row = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 255), (255, 255, 255), (0, 0, 0), (1, 0, 0)]
    rgb = np.array([row, row[::-1]], dtype=np.uint8)
    stats = check(rgb)
    assert stats.colours.tolist() == [
        [0, 0, 1],
        [0, 0, 255],
        [0, 1, 0],
        [1, 0, 0],
        [255, 255, 255],
    ]
    assert stats.pixels.tolist() == [2, 2, 2, 4, 2]


def test_same_colour_in_disjoint_places_is_one_segment():
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[1:3, 2:5] = (0, 7, 128)
    rgb[15:19, 25:28] = (0, 7, 128)
    stats = check(rgb)
    assert stats.pixels.tolist() == [6 + 12]
    assert (stats.x_min[0], stats.y_min[0], stats.x_max[0], stats.y_max[0]) == (2, 1, 28, 19)


@pytest.mark.parametrize("alpha", ["zero", "opaque", "random"])
def test_rgba_alpha_is_ignored(shape_masks, alpha):
    rng = np.random.default_rng(7)
    for rgb in shape_masks[:8]:
        rgba = np.empty((*rgb.shape[:2], 4), dtype=np.uint8)
        rgba[:, :, :3] = rgb
        if alpha == "zero":
            rgba[:, :, 3] = 0
        elif alpha == "opaque":
            rgba[:, :, 3] = 255
        else:
            # Alpha changing inside a run of one colour must not split or merge anything.
            rgba[:, :, 3] = rng.integers(0, 256, size=rgb.shape[:2], dtype=np.uint8)
        stats = colour_stats(rgba)
        assert_stats_equal(stats, reference_by_colour(rgb), rgb)
        expected = colour_stats(rgb)
        np.testing.assert_array_equal(stats.colours, expected.colours)
        np.testing.assert_array_equal(stats.pixels, expected.pixels)


def test_non_contiguous_inputs(shape_masks):
    rgb = max(shape_masks, key=lambda m: m.size)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 9, np.uint8)], axis=2)
    views = {
        "strided": rgb[::2, ::3],
        "reversed rows and columns": rgb[::-1, ::-1],
        "transposed": rgb.transpose(1, 0, 2),
        "BGR channel view": rgb[:, :, ::-1],
        "RGB view of RGBA": rgba[:, :, :3],
        "fortran order": np.asfortranarray(rgb),
    }
    for name, view in views.items():
        assert not view.flags.c_contiguous, name
        stats = colour_stats(view)
        assert_stats_equal(stats, reference_by_colour(np.ascontiguousarray(view)), view)


def test_read_only_input(shape_masks):
    rgb = shape_masks[0].copy()
    rgb.setflags(write=False)
    check(rgb)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 2), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.int16),
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((2, 4, 4, 3), dtype=np.uint8),
    ],
    ids=["2d", "2 channels", "int16", "float32", "4d"],
)
def test_rejects_non_rgb_uint8_or_uint16(bad):
    with pytest.raises(ValueError):
        colour_stats(bad)


# ---------------------------------------------------------------------------------------------
# Many distinct colours: the kernel's hash table has to grow several times
# ---------------------------------------------------------------------------------------------


def test_random_noise_many_colours():
    rng = np.random.default_rng(300)
    rgb = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    rgb[100:140, 50:250] = 0  # some background too
    stats = colour_stats(rgb)
    assert len(stats) > 50_000
    assert_stats_equal(stats, reference_by_pixel(rgb), rgb)


def test_many_colours_in_runs():
    # Horizontal runs of 3 of one colour: exercises the run path together with table growth.
    rng = np.random.default_rng(301)
    noise = rng.integers(0, 256, size=(300, 100, 3), dtype=np.uint8)
    rgb = np.repeat(noise, 3, axis=1)
    stats = colour_stats(rgb)
    assert len(stats) > 20_000
    assert_stats_equal(stats, reference_by_pixel(rgb), rgb)


def test_thousands_of_repeating_colours():
    # A few thousand colours, each appearing in many places across rows.
    rng = np.random.default_rng(302)
    palette = rng.integers(0, 256, size=(3000, 3), dtype=np.uint8)
    rgb = palette[rng.integers(0, len(palette), size=(200, 240))]
    stats = colour_stats(rgb)
    assert len(stats) == len(np.unique(palette[palette.any(axis=1)], axis=0))
    assert_stats_equal(stats, reference_by_pixel(rgb), rgb)


@pytest.mark.parametrize("colours", [600, 1100, 2100])
def test_colours_repeating_while_the_accumulator_grows(colours):
    """Regression: a colour seen again right after the accumulator grew was added to the slot it
    had before the table was rehashed (another colour's, or none)."""
    stats = check(many_colours_repeating_across_black(colours))
    assert len(stats) == colours
    assert stats.pixels.tolist() == [4] * colours


# ---------------------------------------------------------------------------------------------
# 16-bit colours (ClearML 16-bit RGB label masks): every channel at its full 16 bits
# ---------------------------------------------------------------------------------------------


def test_sixteen_bit_colours_keep_every_bit():
    # Colours that differ only in bits an 8-bit reading drops, or only in red (the bits the
    # hash folds down), in runs and across table growth.
    rng = np.random.default_rng(303)
    palette = rng.integers(0, 65536, size=(2000, 3), dtype=np.uint16)
    palette[:500, 1:] = (7, 65535)  # red alone tells these apart
    palette[500:1000] = palette[500] + np.arange(500, dtype=np.uint16)[:, None] % 2
    rgb = np.repeat(palette[rng.integers(0, len(palette), size=(150, 80))], 2, axis=1)
    stats = colour_stats(rgb)
    assert len(stats) == len(np.unique(rgb.reshape(-1, 3), axis=0)) > 1000
    assert_stats_equal(stats, reference_by_pixel(rgb), rgb)
    np.testing.assert_array_equal(
        stats.keys,
        (stats.colours[:, 0].astype(np.int64) << 32)
        | (stats.colours[:, 1].astype(np.int64) << 16)
        | stats.colours[:, 2],
    )
