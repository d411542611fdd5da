"""Tests of the sample Celantur tree generator (:mod:`pipeline.sampledata.celantur`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.formats.celantur import ENCODINGS, Encoding, classify_colours, classify_name
from pipeline.sampledata.celantur import SampleTree, SizeOrder, make_celantur_tree

TYPE_CODES = {"person": 102, "face": 103, "license_plate": 104, "vehicle": 105}


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _colours(pixels: np.ndarray) -> np.ndarray:
    """Distinct non-background colours of an (h, w, 3) uint8 array, as an (n, 3) array."""
    flat = pixels.reshape(-1, 3).astype(np.uint32)
    keys = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2])
    keys = keys[keys != 0]
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=1).astype(np.uint8)


def _colour_set(pixels: np.ndarray) -> set[tuple[int, int, int]]:
    return {(int(r), int(g), int(b)) for r, g, b in _colours(pixels)}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> SampleTree:
    """The default tree (12 images, v26, full scale)."""
    return make_celantur_tree(tmp_path_factory.mktemp("default"))


def test_deterministic(tmp_path: Path) -> None:
    a = make_celantur_tree(tmp_path / "a", seed=3, encoding="legacy")
    b = make_celantur_tree(tmp_path / "b", seed=3, encoding="legacy")
    files_a, files_b = _files(a.root), _files(b.root)
    assert files_a == files_b
    assert sorted(files_a) == list(a.files)
    assert a.images == b.images
    c = make_celantur_tree(tmp_path / "c", seed=4, encoding="legacy", write_images=False)
    files_c = _files(c.root)
    assert any(files_c[name] != files_a[name] for name in files_c)


def test_more_images_extend_the_tree(tmp_path: Path) -> None:
    small = make_celantur_tree(tmp_path / "small", images=4, write_images=False)
    large = make_celantur_tree(tmp_path / "large", images=15, write_images=False)
    assert large.images[:4] == small.images
    files_small, files_large = _files(small.root), _files(large.root)
    assert all(files_large[name] == data for name, data in files_small.items())
    assert len(large.images) == 15
    assert all(image.instance_path and image.binary_path for image in large.images[12:])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_only_valid_colours(tmp_path: Path, encoding: Encoding) -> None:
    tree = make_celantur_tree(tmp_path, images=8, encoding=encoding, write_images=False)
    seen = 0
    for image in tree.images:
        if image.instance_path is None:
            continue
        colours = _colours(_rgb(tree.root / image.instance_path))
        _, flags = classify_colours(colours, encoding)
        assert (flags >= 0).all(), (image.instance_path, colours[flags < 0])
        seen += len(colours)
        instances = [obj.instance for obj in image.objects]
        assert len(set(instances)) == len(instances)
        assert all(1 <= g <= 255 for g in instances)
    assert seen > 20


def test_v26_overlaps_or_flags(tree: SampleTree) -> None:
    blues: set[int] = set()
    for image in tree.images:
        if image.instance_path is not None:
            blues |= {b for _, _, b in _colour_set(_rgb(tree.root / image.instance_path))}
    assert {16, 32, 64, 128, 80, 160} <= blues


def test_legacy_top_object_overwrites(tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path, images=3, encoding="legacy-red", write_images=False)
    values: set[int] = set()
    for image in tree.images:
        if image.instance_path is not None:
            values |= {r for r, _, _ in _colour_set(_rgb(tree.root / image.instance_path))}
    assert values == {128, 64, 192, 255}


def test_binary_mask_is_instance_foreground(tree: SampleTree) -> None:
    modes: set[str] = set()
    compared = 0
    for image in tree.images:
        if image.binary_path is None:
            continue
        with Image.open(tree.root / image.binary_path) as binary:
            modes.add(binary.mode)
            assert binary.size == (image.mask_width, image.mask_height)
            white = np.asarray(binary.convert("L"))
        assert set(np.unique(white).tolist()) <= {0, 255}
        if image.instance_path is not None:
            foreground = _rgb(tree.root / image.instance_path).any(axis=-1)
            assert np.array_equal(white == 255, foreground)
            compared += 1
    assert modes == {"L", "RGB"}
    assert compared >= 8


def test_layout_quirks(tree: SampleTree) -> None:
    images = tree.images
    assert len(images) == 12
    assert any(not image.objects and image.instance_path for image in images)
    assert any(image.instance_path and image.binary_path is None for image in images)
    assert any(image.instance_path is None and image.binary_path for image in images)
    assert any(image.instance_path and image.metadata_path is None for image in images)
    assert {image.folder for image in images} >= {"", "site-a/cam.01", "site-b/2024-05-01/run.2"}
    suffixes = {Path(image.instance_path).name[-13:] for image in images if image.instance_path}
    assert suffixes == {"_ins_maks.png", "_ins_mask.png"}
    instance_modes = set()
    for image in images:
        if image.instance_path:
            with Image.open(tree.root / image.instance_path) as mask:
                instance_modes.add(mask.mode)
                if mask.mode == "RGBA":
                    assert np.asarray(mask)[..., 3].min() == 255
    assert instance_modes == {"RGB", "RGBA"}
    assert any(image.image_width == 1920 for image in images)
    assert any(image.stem.count(".") and image.stem.count("-") for image in images)
    types = {obj.type_name for image in images for obj in image.objects}
    assert types == {"person", "face", "license_plate", "vehicle"}
    assert any(
        obj.bbox_image[0] == 0 or obj.bbox_image[2] == image.image_width
        for image in images
        for obj in image.objects
    )


def test_file_names_classify(tree: SampleTree) -> None:
    kinds = {"instance_path": "instance", "binary_path": "binary", "metadata_path": "metadata"}
    for image in tree.images:
        for attribute, kind in kinds.items():
            path = getattr(image, attribute)
            if path is not None:
                named = classify_name(Path(path).name)
                assert named is not None
                assert (named.kind, named.stem) == (kind, image.stem)
        assert image.image_path is not None
        assert classify_name(Path(image.image_path).name) is None


def test_metadata_matches_truth(tree: SampleTree) -> None:
    spellings: set[str] = set()
    repeated = False
    null_colours = with_colours = 0
    for image in tree.images:
        if image.metadata_path is None:
            continue
        document = json.loads((tree.root / image.metadata_path).read_text())
        assert list(document) == ["id", "detections", "size", "duration", "filename", "folder"]
        assert document["filename"] == document["id"] == f"{image.stem}.jpg"
        assert document["folder"] == (image.folder or None)
        assert document["size"] == [image.image_height, image.image_width]
        assert isinstance(document["duration"], float)
        detections = document["detections"]
        assert len(detections) == len(image.objects)
        ids = [det["id"] for det in detections]
        repeated |= len(set(ids)) < len(ids)
        for det, obj in zip(detections, image.objects, strict=True):
            assert det["id"] == obj.detection_id
            assert det["parent_image"] == f"{image.stem}.jpg"
            assert det["bbox"] == list(obj.bbox_image)
            assert det["offset"] == list(obj.bbox_image[:2])
            assert det["type"] == TYPE_CODES[obj.type_name]
            assert 0.5 <= det["score"] <= 1.0
            spellings |= {key for key in det if key.startswith("is_anonym")}
            if det["color"] is None:
                null_colours += 1
            else:
                with_colours += 1
                assert det["color"] == list(obj.colour)
            x1, y1, x2, y2 = obj.bbox_image
            assert 0 <= x1 < x2 <= image.image_width
            assert 0 <= y1 < y2 <= image.image_height
    assert repeated
    assert spellings == {"is_anonymised", "is_anonymized"}
    assert null_colours and with_colours


@pytest.mark.parametrize("colours", [True, False])
def test_colours_in_metadata(tmp_path: Path, colours: bool) -> None:
    tree = make_celantur_tree(tmp_path, images=4, colours_in_metadata=colours, write_images=False)
    values = [
        det["color"]
        for image in tree.images
        if image.metadata_path
        for det in json.loads((tree.root / image.metadata_path).read_text())["detections"]
    ]
    assert values
    assert all((value is not None) == colours for value in values)


@pytest.mark.parametrize("size_order", ["hw", "wh"])
def test_size_order(tmp_path: Path, size_order: SizeOrder) -> None:
    tree = make_celantur_tree(tmp_path, images=3, size_order=size_order, write_images=False)
    proof = False
    for image in tree.images:
        if image.metadata_path is None:
            continue
        document = json.loads((tree.root / image.metadata_path).read_text())
        w, h = image.image_width, image.image_height
        assert document["size"] == ([h, w] if size_order == "hw" else [w, h])
        proof |= any(det["bbox"][2] > document["size"][0] for det in document["detections"])
    assert proof == (size_order == "hw")


def test_mask_scale_halves_masks(tmp_path: Path) -> None:
    full = make_celantur_tree(tmp_path / "full", images=6, write_images=False)
    half = make_celantur_tree(tmp_path / "half", images=6, mask_scale=50, write_images=False)
    for big, small in zip(full.images, half.images, strict=True):
        assert (big.mask_width, big.mask_height) == (big.image_width, big.image_height)
        assert small.mask_width == round(big.image_width / 2)
        assert small.mask_height == round(big.image_height / 2)
        assert [o.bbox_image for o in small.objects] == [o.bbox_image for o in big.objects]
        for path in (small.instance_path, small.binary_path):
            if path is not None:
                with Image.open(half.root / path) as mask:
                    assert mask.size == (small.mask_width, small.mask_height)


@pytest.mark.parametrize(("encoding", "scale"), [("v26", 100), ("legacy", 100), ("v26", 30)])
def test_object_colours_occur(tmp_path: Path, encoding: Encoding, scale: int) -> None:
    tree = make_celantur_tree(
        tmp_path, images=12, encoding=encoding, mask_scale=scale, write_images=False
    )
    checked = 0
    for image in tree.images:
        if image.instance_path is None:
            continue
        pixels = _rgb(tree.root / image.instance_path)
        present = _colour_set(pixels)
        for obj in image.objects:
            if scale == 100:
                assert obj.mask_pixels > 0, obj
            assert (obj.colour in present) == (obj.mask_pixels > 0), obj
            if obj.mask_pixels:
                assert np.all(pixels == obj.colour, axis=-1).sum() == obj.mask_pixels
            checked += 1
    assert checked > 20


def test_tiny_scale_and_placeholders(tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path, images=4, mask_scale=1)
    for image in tree.images:
        assert image.mask_width >= 1 and image.mask_height >= 1
        assert image.image_path is not None
        with Image.open(tree.root / image.image_path) as jpeg:
            assert jpeg.format == "JPEG"
            assert jpeg.size == (image.image_width, image.image_height)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"images": -1},
        {"mask_scale": 0},
        {"mask_scale": 101},
        {"encoding": "auto"},
        {"size_order": "xy"},
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_celantur_tree(tmp_path, **kwargs)  # type: ignore[arg-type]
