"""ClearML PNG masks measured a strip at a time equal the whole-image kernels exactly.

Every PNG mask the sample ClearML dataset holds (:mod:`pipeline.sampledata.clearml`: L, 16-bit
grey, P with and without transparency, RGB, RGBA, the LA/RGBA/L alpha cut-outs and the empty
one), plus flavours it does not write (interlaced, 1-bit grey, LA labels, 16-bit RGB(A)), go
through :func:`~pipeline.stages.streamed.streamed_labels` and
:func:`~pipeline.stages.streamed.streamed_alpha` with strips cut at several heights, and are
compared with :func:`~pipeline.io.png.decode_png` + ``label_values``/``colour_stats``,
``alpha_stats`` and ``scaled_png`` (the path ClearML masks took before).
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from corpus import GREY, GREY_ALPHA, RGB, RGBA, encode
from PIL import Image

import pipeline.stages.streamed as streamed
from pipeline.io.png import checked_header, decode_png
from pipeline.kernels.masks import alpha_stats, label_values
from pipeline.kernels.segments import ColourStats, colour_stats
from pipeline.sampledata.clearml import make_clearml_dataset
from pipeline.stages.common import scaled_png

#: Strip sizes in bytes: one row per strip, a few rows cutting the image at odd heights, and
#: the default (a small mask in one strip).
STRIP_BYTES = (1, 3 * 97 + 5, 1 << 18)
SCALES = (None, 100, 50, 37)


def _synthetic(grey: np.ndarray) -> dict[str, bytes]:
    """Flavours the sample dataset does not write, from its grey labels ``grey`` and a soft
    alpha ramp (transparent left and bottom, opaque right, partial between)."""
    height, width = grey.shape
    ramp = np.clip((np.arange(width) - width // 3) * 9, 0, 255)
    alpha = np.tile(ramp, (height, 1)).astype(np.uint8)
    alpha[height - height // 5 :] = 0
    one_bit = io.BytesIO()
    Image.fromarray(grey > 10).save(one_bit, format="PNG")
    wide = grey.astype(np.uint16) * 1000 + 7
    colour = np.stack([grey, grey * 3, 255 - grey], axis=2).astype(np.uint8)
    return {
        "interlaced L": encode(grey, GREY, interlace=True),
        "interlaced 16-bit grey": encode(wide, GREY, bit_depth=16, interlace=True),
        "interlaced RGBA": encode(np.dstack([colour, alpha]), RGBA, interlace=True),
        "1-bit grey": one_bit.getvalue(),
        "LA labels": encode(np.dstack([grey, alpha]), GREY_ALPHA),
        "16-bit RGB": encode(colour.astype(np.uint16) * 257 + 1, RGB, bit_depth=16),
        "16-bit RGBA": encode(np.dstack([colour, alpha]).astype(np.uint16) * 250, RGBA,
                              bit_depth=16),
    }  # fmt: skip


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every PNG mask of the sample dataset (template 4 as a PNG), and the synthetic ones."""
    root = tmp_path_factory.mktemp("clearml")
    make_clearml_dataset(root, seed=5, frames=8, video=False)
    files = {str(path.relative_to(root)): path.read_bytes()
             for path in sorted((root / "masks").rglob("*.png"))}  # fmt: skip
    base = next(decode_png(data) for name, data in files.items() if "labelIds" in name)
    return {**files, **_synthetic(base[:, :, 0])}


def test_the_masks_cover_every_flavour(masks: dict[str, bytes]) -> None:
    modes = {checked_header(data).mode for data in masks.values()}
    interlaced = {checked_header(data).interlaced for data in masks.values()}
    assert {"grey8", "grey16", "grey1", "grey+alpha8", "palette4", "rgb8", "rgba8", "rgb16",
            "rgba16"} <= modes, modes  # fmt: skip
    assert interlaced == {False, True}


def _strips_of(monkeypatch: pytest.MonkeyPatch, strip_bytes: int) -> None:
    decode = functools.partial(streamed.decode_strips, strip_bytes=strip_bytes)
    monkeypatch.setattr(streamed, "decode_strips", decode)


def _assert_colour_stats_equal(actual: ColourStats, expected: ColourStats) -> None:
    for field in dataclasses.fields(ColourStats):
        a, e = getattr(actual, field.name), getattr(expected, field.name)
        if isinstance(e, np.ndarray):
            assert a.dtype == e.dtype and np.array_equal(a, e), field.name
        else:
            assert a == e, field.name


def _cases(
    masks: dict[str, bytes],
) -> Iterator[tuple[str, bytes, np.ndarray, int | None, bytes | None]]:
    """(name, file, decoded pixels, scale, the whole image's rescaled PNG) of every mask and
    scale."""
    for name, data in masks.items():
        pixels = decode_png(data)
        for scale in SCALES:
            yield (
                name,
                data,
                pixels,
                scale,
                None if scale is None else scaled_png(data, pixels, scale),
            )


@pytest.mark.parametrize("strip_bytes", STRIP_BYTES)
def test_streamed_labels_equal_the_whole_image(
    masks: dict[str, bytes], strip_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _strips_of(monkeypatch, strip_bytes)
    for name, data, pixels, scale, expected_png in _cases(masks):
        rgb, grey = label_values(pixels)
        stats, streamed_grey, png = streamed.streamed_labels(data, checked_header(data), scale)
        assert streamed_grey == grey, name
        _assert_colour_stats_equal(stats, colour_stats(rgb, skip_black=False))
        assert png == expected_png, (name, scale)


@pytest.mark.parametrize("strip_bytes", STRIP_BYTES)
def test_streamed_alpha_equals_the_whole_image(
    masks: dict[str, bytes], strip_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _strips_of(monkeypatch, strip_bytes)
    for name, data, pixels, scale, expected_png in _cases(masks):
        stats, png = streamed.streamed_alpha(data, checked_header(data), scale)
        assert stats == alpha_stats(pixels), name
        assert png == expected_png, (name, scale)


def test_strips_really_split_the_masks(masks: dict[str, bytes]) -> None:
    """The strip sizes above cut every mask at several heights (else the tests prove little)."""
    for name, data in masks.items():
        header = checked_header(data)
        for strip_bytes in STRIP_BYTES[:2]:
            strips = streamed.decode_strips(data, header, strip_bytes=strip_bytes)
            assert len([first for first, _ in strips]) > 2, (name, strip_bytes)


def test_sample_dataset_holds_alpha_and_label_masks(masks: dict[str, bytes]) -> None:
    names = [Path(name).name for name in masks]
    assert any("alpha_empty" in name for name in names)
    assert any("instanceIds" in name for name in names)
