"""Deterministic sample Celantur container output trees, with ground truth.

:func:`make_celantur_tree` writes a folder tree that looks like the output of the Celantur
container (SPEC 2.1-2.3): instance masks, binary masks, image metadata JSON and small anonymised
placeholder images, and returns what it drew as :class:`SampleTree`. It serves ``mask-pipeline
demo``, the tests and the benchmarks, so the same arguments always give byte-identical files.

Layout of the default tree (``images=12``; the first ``images`` entries of this table are written,
any further images go to random folders with every file present)::

    #   folder                   stem                  size       scene    quirks
    0   (root)                   street.view-0001      641x479    street   -
    1   site-a/cam.01            cam.01.frame-000017   1003x333   wide     RGBA instance mask,
                                                                           RGB binary mask,
                                                                           repeated detection id
    2   site-a/cam.01            cam.01.frame-000018   480x640    crowd    no binary mask,
                                                                           "is_anonymized"
    3   site-b/2024-05-01/run.2  img.0003-left         257x199    empty    no objects at all
    4   site-b/2024-05-01/run.2  img.0004-left         400x301    street   no instance mask
    5   (root)                   street.view-0002      361x481    closeup  no metadata,
                                                                           "_ins_mask.png"
    6   site-a/cam.02-north      north.cam-0001.a      523x389    crowd    "is_anonymized"
    7   site-a/cam.02-north      north.cam-0002.a      640x360    street   RGBA, repeated id
    8   site-b/2024-05-01/run.2  img.0005-right        299x401    closeup  RGB binary mask
    9   site-b/2024-05-01        drive.full-hd.0001    1920x1080  street   -
    10  (root)                   street.view-0003      777x555    wide     "is_anonymized"
    11  site-a/cam.01            cam.01.frame-000019   321x239    mixed    "_ins_mask.png"

With ``colours_in_metadata=None`` the metadata of images 2, 8 and 11 (every third image) has
``"color": null``; the others carry the colours. Instance masks are named ``<stem>_ins_maks.png``
(sic, as the product writes them) unless noted.

Scenes: *street* has persons (with a face overlapping the head) and a vehicle with a license
plate overlapping its body; *wide* has two vehicles and a person, the right vehicle cut by the
right border (so with ``size_order="hw"`` a bbox ``x2`` exceeds ``size[0]``); *crowd* has two
overlapping persons cut by the bottom border plus one more person; *closeup* has a large lone face
cut by the top-left corner and a lone plate; *mixed* is a random choice of these groups.

Geometry: a person is a head ellipse plus a body rectangle; its face is an ellipse shifted sideways
on the head so that part of it sticks out (the face has pixels of its own as well as pixels that
overlap the person). A vehicle is a cabin and a body rectangle plus two wheel ellipses; its plate
is a rectangle reaching from the body down between the wheels. Shapes are sampled at the pixel
centres of the mask grid (mask pixel ``(i, j)`` covers image point ``((j + 0.5) * w / mw,
(i + 0.5) * h / mh)``), so scaled masks contain only exact, valid colours.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from pipeline.formats.celantur import ENCODINGS, LEGACY_VALUES, V26_FLAGS, Encoding

__all__ = ["SampleImage", "SampleObject", "SampleTree", "SizeOrder", "make_celantur_tree"]

SizeOrder = Literal["hw", "wh"]
Scene = Literal["street", "wide", "crowd", "closeup", "mixed", "empty"]
GroupKind = Literal["person", "pair", "vehicle", "face", "plate"]

#: Metadata ``type`` code of each type name (102 person and 103 face are seen in real files).
TYPE_CODES: dict[str, int] = {"person": 102, "face": 103, "license_plate": 104, "vehicle": 105}
#: Metadata ``type_label`` of each type name.
TYPE_LABELS: dict[str, str] = {
    "person": "person",
    "face": "face",
    "license_plate": "license plate",
    "vehicle": "vehicle",
}


# ---------------------------------------------------------------------------------------------
# Public ground truth
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleObject:
    """One drawn object (one metadata detection).

    Attributes
    ----------
    type_name : one of ``"person"``, ``"license_plate"``, ``"face"``, ``"vehicle"``.
    instance : the object's G value (distinct within its image, random in 1..255).
    colour : the (r, g, b) colour of the object's own pixels in the instance mask: the pixels it
        is drawn on and that no other object covers or shares (``(0, G, flag)`` for ``v26``,
        ``(0, G, value)`` for ``legacy``, ``(value, G, 0)`` for ``legacy-red``). In ``v26`` the
        pixels where it overlaps an object below it have other flags ORed in; in the legacy
        encodings all its visible pixels have this colour. The colour occurs in the mask exactly
        when ``mask_pixels > 0``; at 100 % scale every object of the default layouts has own
        pixels, at small scales a thin part may vanish.
    bbox_image : (x1, y1, x2, y2) in image pixels, max exclusive: the tight box of the object's
        whole shape (including parts covered by others) clipped to the image. This is the
        metadata ``bbox``; ``offset`` is ``(x1, y1)``.
    detection_id : the metadata detection ``id`` (sequential from 0, but repeated in some files;
        assigned even when the image has no metadata file).
    mask_pixels : number of pixels of ``colour`` in the instance mask at the written mask scale
        (counted even when the instance mask file itself was not written).
    """

    type_name: str
    instance: int
    colour: tuple[int, int, int]
    bbox_image: tuple[int, int, int, int]
    detection_id: int
    mask_pixels: int


@dataclass(frozen=True)
class SampleImage:
    """One image of the tree and the files written for it.

    Attributes
    ----------
    stem : file stem shared by the image's files.
    folder : POSIX folder relative to the tree root, ``""`` for the root itself.
    instance_path, binary_path, metadata_path : POSIX paths relative to the root of
        ``<stem>_ins_maks.png`` (or ``_ins_mask.png``), ``<stem>_bin_mask.png`` and
        ``<stem>.json``; ``None`` when that file was not written.
    image_width, image_height : size of the (anonymised) image in pixels.
    mask_width, mask_height : size of both masks (``mask_scale`` percent of the image size).
    objects : the drawn objects in drawing order (later objects are on top).
    image_path : POSIX path of the placeholder ``<stem>.jpg`` or ``None`` when not written.
    """

    stem: str
    folder: str
    instance_path: str | None
    binary_path: str | None
    metadata_path: str | None
    image_width: int
    image_height: int
    mask_width: int
    mask_height: int
    objects: tuple[SampleObject, ...]
    image_path: str | None = None


@dataclass(frozen=True)
class SampleTree:
    """A written sample tree.

    Attributes
    ----------
    root : the tree's root folder.
    images : one entry per image, in generation order.
    encoding : the instance-mask encoding used.
    mask_scale : the mask scale in percent.
    size_order : order of the metadata ``size`` field (``"hw"`` = [height, width]).
    files : every file written, as sorted POSIX paths relative to ``root``.
    """

    root: Path
    images: tuple[SampleImage, ...]
    encoding: Encoding = "v26"
    mask_scale: int = 100
    size_order: SizeOrder = "hw"
    files: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Layout plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    folder: str
    stem: str
    width: int
    height: int
    scene: Scene
    instance: bool = True
    binary: bool = True
    metadata: bool = True
    rgba: bool = False
    ins_suffix: str = "_ins_maks.png"
    binary_rgb: bool = False
    repeat_id: bool = False
    anonymized: bool = False  # spell the flag "is_anonymized"


_FIXED_PLANS: tuple[_Plan, ...] = (
    _Plan("", "street.view-0001", 641, 479, "street"),
    _Plan(
        "site-a/cam.01",
        "cam.01.frame-000017",
        1003,
        333,
        "wide",
        rgba=True,
        binary_rgb=True,
        repeat_id=True,
    ),
    _Plan("site-a/cam.01", "cam.01.frame-000018", 480, 640, "crowd", binary=False, anonymized=True),
    _Plan("site-b/2024-05-01/run.2", "img.0003-left", 257, 199, "empty"),
    _Plan("site-b/2024-05-01/run.2", "img.0004-left", 400, 301, "street", instance=False),
    _Plan("", "street.view-0002", 361, 481, "closeup", metadata=False, ins_suffix="_ins_mask.png"),
    _Plan("site-a/cam.02-north", "north.cam-0001.a", 523, 389, "crowd", anonymized=True),
    _Plan("site-a/cam.02-north", "north.cam-0002.a", 640, 360, "street", rgba=True, repeat_id=True),
    _Plan("site-b/2024-05-01/run.2", "img.0005-right", 299, 401, "closeup", binary_rgb=True),
    _Plan("site-b/2024-05-01", "drive.full-hd.0001", 1920, 1080, "street"),
    _Plan("", "street.view-0003", 777, 555, "wide", anonymized=True),
    _Plan("site-a/cam.01", "cam.01.frame-000019", 321, 239, "mixed", ins_suffix="_ins_mask.png"),
)

_EXTRA_FOLDERS: tuple[str, ...] = (
    "",
    "site-a/cam.01",
    "site-a/cam.02-north",
    "site-b/2024-05-01",
    "site-b/2024-05-01/run.2",
)
_EXTRA_SIZES: tuple[tuple[int, int], ...] = (
    (321, 239),
    (257, 199),
    (400, 301),
    (299, 401),
    (513, 287),
    (641, 479),
)
_EXTRA_SCENES: tuple[Scene, ...] = (
    "street",
    "street",
    "wide",
    "crowd",
    "closeup",
    "mixed",
    "empty",
)


def _extra_plan(index: int, rng: np.random.Generator) -> _Plan:
    """Plan of an image beyond the fixed layout: every file present, random variants."""
    folder = _EXTRA_FOLDERS[int(rng.integers(len(_EXTRA_FOLDERS)))]
    width, height = _EXTRA_SIZES[int(rng.integers(len(_EXTRA_SIZES)))]
    scene = _EXTRA_SCENES[int(rng.integers(len(_EXTRA_SCENES)))]
    return _Plan(
        folder,
        f"extra.{index:04d}-cam",
        width,
        height,
        scene,
        rgba=bool(rng.random() < 0.2),
        ins_suffix="_ins_mask.png" if rng.random() < 0.2 else "_ins_maks.png",
        binary_rgb=bool(rng.random() < 0.3),
        repeat_id=bool(rng.random() < 0.2),
        anonymized=bool(rng.random() < 0.3),
    )


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """A filled rectangle or ellipse given by its box in image coordinates (max exclusive)."""

    kind: Literal["rect", "ellipse"]
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class _Obj:
    type_name: str
    shapes: tuple[_Shape, ...]


def _rect(x1: float, y1: float, x2: float, y2: float) -> _Shape:
    return _Shape("rect", x1, y1, x2, y2)


def _ellipse(x1: float, y1: float, x2: float, y2: float) -> _Shape:
    return _Shape("ellipse", x1, y1, x2, y2)


def _person(x1: float, y1: float, pw: float, ph: float, face: bool, facing: int) -> list[_Obj]:
    """A person (head ellipse + body rectangle) and optionally a face sticking out of the head."""
    cx = x1 + pw / 2
    head = _ellipse(cx - 0.22 * pw, y1, cx + 0.22 * pw, y1 + 0.24 * ph)
    body = _rect(x1, y1 + 0.2 * ph, x1 + pw, y1 + ph)
    objs = [_Obj("person", (head, body))]
    if face:
        fcx = cx + facing * 0.1 * pw
        fcy = y1 + 0.13 * ph
        shape = _ellipse(fcx - 0.18 * pw, fcy - 0.09 * ph, fcx + 0.18 * pw, fcy + 0.09 * ph)
        objs.append(_Obj("face", (shape,)))
    return objs


def _vehicle(x1: float, y1: float, vw: float, vh: float) -> list[_Obj]:
    """A vehicle (cabin, body, two wheels) and its plate reaching below the body."""
    cx = x1 + vw / 2
    shapes = (
        _rect(x1 + 0.22 * vw, y1, x1 + 0.8 * vw, y1 + 0.45 * vh),
        _rect(x1, y1 + 0.35 * vh, x1 + vw, y1 + 0.85 * vh),
        _ellipse(x1 + 0.1 * vw, y1 + 0.65 * vh, x1 + 0.3 * vw, y1 + vh),
        _ellipse(x1 + 0.7 * vw, y1 + 0.65 * vh, x1 + 0.9 * vw, y1 + vh),
    )
    plate = _rect(cx - 0.12 * vw, y1 + 0.72 * vh, cx + 0.12 * vw, y1 + 0.95 * vh)
    return [_Obj("vehicle", shapes), _Obj("license_plate", (plate,))]


@dataclass
class _Group:
    kind: GroupKind
    width: float
    height: float
    cut: frozenset[str] = frozenset()  # borders the group reaches past: left/right/top/bottom


def _group(kind: GroupKind, w: int, h: int, rng: np.random.Generator, *cut: str) -> _Group:
    """A group of objects with its size drawn relative to the image size."""
    if kind in ("person", "pair"):
        ph = h * rng.uniform(0.45, 0.7)
        pw = ph * rng.uniform(0.38, 0.45)
        if kind == "pair":
            return _Group(kind, 1.6 * pw, 1.1 * ph, frozenset(cut))
        return _Group(kind, pw, ph, frozenset(cut))
    if kind == "vehicle":
        vw = w * rng.uniform(0.22, 0.35)
        vh = vw * rng.uniform(0.45, 0.55)
        if vh > 0.6 * h:
            vw, vh = vw * 0.6 * h / vh, 0.6 * h
        return _Group(kind, vw, vh, frozenset(cut))
    if kind == "face":
        fh = min(w, h) * rng.uniform(0.35, 0.5)
        return _Group(kind, 0.8 * fh, fh, frozenset(cut))
    pw = w * rng.uniform(0.12, 0.2)
    return _Group(kind, pw, 0.25 * pw, frozenset(cut))


def _scene_groups(scene: Scene, w: int, h: int, rng: np.random.Generator) -> list[_Group]:
    if scene == "empty":
        return []
    if scene == "street":
        groups = [_group("person", w, h, rng), _group("vehicle", w, h, rng)]
        if rng.random() < 0.6:
            groups.append(_group("person", w, h, rng))
        order = rng.permutation(len(groups))
        groups = [groups[int(i)] for i in order]
        if rng.random() < 0.5:
            groups[0].cut = frozenset({"left"})
        return groups
    if scene == "wide":
        return [
            _group("vehicle", w, h, rng),
            _group("person", w, h, rng),
            _group("vehicle", w, h, rng, "right"),
        ]
    if scene == "crowd":
        return [_group("pair", w, h, rng, "bottom"), _group("person", w, h, rng)]
    if scene == "closeup":
        return [_group("face", w, h, rng, "left", "top"), _group("plate", w, h, rng)]
    kinds: tuple[GroupKind, ...] = ("person", "pair", "vehicle", "face", "plate")
    count = int(rng.integers(2, 4))
    return [_group(kinds[int(rng.integers(len(kinds)))], w, h, rng) for _ in range(count)]


def _layout(groups: list[_Group], w: int, h: int, rng: np.random.Generator) -> list[_Obj]:
    """Place groups left to right without unintended overlaps and build their objects."""
    if not groups:
        return []
    gaps = [float(w * rng.uniform(0.02, 0.06)) for _ in range(len(groups) + 1)]
    total = sum(g.width for g in groups) + sum(gaps)
    scale = min(1.0, 0.95 * w / total)
    objs: list[_Obj] = []
    cursor = gaps[0]
    for index, group in enumerate(groups):
        gw, gh = group.width * scale, group.height * scale
        x1 = cursor
        if "left" in group.cut and index == 0:
            x1 = -0.12 * gw
        if "right" in group.cut:
            x1 = max(x1, w - 0.88 * gw)
        cursor = x1 + gw + gaps[index + 1]
        if "bottom" in group.cut:
            y1 = h + 0.06 * gh - gh
        elif "top" in group.cut:
            y1 = -0.1 * gh
        else:
            y1 = max(0.0, h * rng.uniform(0.82, 0.97) - gh)
        x1, y1, gw, gh = float(round(x1)), float(round(y1)), float(round(gw)), float(round(gh))
        facing = 1 if rng.random() < 0.5 else -1
        if group.kind == "person":
            objs += _person(x1, y1, gw, gh, face=bool(rng.random() < 0.85), facing=facing)
        elif group.kind == "pair":
            pw, ph = gw / 1.6, gh / 1.1
            objs += _person(x1, y1, pw, ph, face=True, facing=facing)
            objs += _person(x1 + 0.6 * pw, y1 + 0.1 * ph, pw, ph, face=True, facing=facing)
        elif group.kind == "vehicle":
            objs += _vehicle(x1, y1, gw, gh)
        elif group.kind == "face":
            objs.append(_Obj("face", (_ellipse(x1, y1, x1 + gw, y1 + gh),)))
        else:
            objs.append(_Obj("license_plate", (_rect(x1, y1, x1 + gw, y1 + gh),)))
    return objs


def _cover(
    shapes: tuple[_Shape, ...], width: int, height: int, grid_w: int, grid_h: int
) -> tuple[int, int, npt.NDArray[np.bool_]] | None:
    """Pixels of a ``grid_w`` x ``grid_h`` grid over the image covered by a union of shapes.

    Returns ``(row0, col0, coverage)`` for the window of the grid that holds the shapes, or
    ``None`` when the shapes miss the grid entirely.
    """
    fx, fy = width / grid_w, height / grid_h
    c0 = max(0, math.floor(min(s.x1 for s in shapes) / fx - 1))
    c1 = min(grid_w, math.ceil(max(s.x2 for s in shapes) / fx + 1))
    r0 = max(0, math.floor(min(s.y1 for s in shapes) / fy - 1))
    r1 = min(grid_h, math.ceil(max(s.y2 for s in shapes) / fy + 1))
    if c0 >= c1 or r0 >= r1:
        return None
    xs = (np.arange(c0, c1, dtype=np.float64) + 0.5) * fx
    ys = (np.arange(r0, r1, dtype=np.float64) + 0.5) * fy
    cov = np.zeros((r1 - r0, c1 - c0), dtype=np.bool_)
    for s in shapes:
        if s.kind == "rect":
            cov |= ((ys >= s.y1) & (ys < s.y2))[:, None] & ((xs >= s.x1) & (xs < s.x2))[None, :]
        else:
            rx, ry = (s.x2 - s.x1) / 2, (s.y2 - s.y1) / 2
            dx = ((xs - (s.x1 + rx)) / rx) ** 2
            dy = ((ys - (s.y1 + ry)) / ry) ** 2
            cov |= (dy[:, None] + dx[None, :]) <= 1.0
    if not cov.any():
        return None
    return r0, c0, cov


# ---------------------------------------------------------------------------------------------
# Rendering and writing
# ---------------------------------------------------------------------------------------------


def _mask_size(width: int, height: int, mask_scale: int) -> tuple[int, int]:
    return max(1, round(width * mask_scale / 100)), max(1, round(height * mask_scale / 100))


def _own_colour(type_name: str, instance: int, encoding: Encoding) -> tuple[int, int, int]:
    if encoding == "v26":
        return (0, instance, V26_FLAGS[type_name])
    if encoding == "legacy":
        return (0, instance, LEGACY_VALUES[type_name])
    return (LEGACY_VALUES[type_name], instance, 0)


def _save_png(array: npt.NDArray[np.uint8], path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(array)).save(
        path, format="PNG", optimize=False, compress_level=6
    )


def _placeholder(width: int, height: int, anonymised: npt.NDArray[np.bool_]) -> Image.Image:
    """A flat "anonymised" street picture: a sky-to-ground gradient, grey blobs for objects."""
    shade = np.linspace(200.0, 90.0, height)
    rows = np.stack([shade * 0.9, shade * 0.95, shade], axis=-1).astype(np.uint8)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[...] = rows[:, None, :]
    rgb[anonymised] = (110, 110, 110)
    return Image.fromarray(rgb)


def _write_image(
    root: Path,
    index: int,
    plan: _Plan,
    *,
    seed: int,
    encoding: Encoding,
    mask_scale: int,
    size_order: SizeOrder,
    colours: bool,
    write_images: bool,
) -> tuple[SampleImage, list[str]]:
    rng = np.random.default_rng([seed, index])
    w, h = plan.width, plan.height
    mw, mh = _mask_size(w, h, mask_scale)

    # Keep the objects that are inside the image and record their full-resolution boxes.
    drawn: list[tuple[_Obj, tuple[int, int, int, int]]] = []
    anonymised = np.zeros((h, w), dtype=np.bool_) if write_images else None
    for obj in _layout(_scene_groups(plan.scene, w, h, rng), w, h, rng):
        full = _cover(obj.shapes, w, h, w, h)
        if full is None:
            continue
        r0, c0, cov = full
        rows = np.flatnonzero(cov.any(axis=1))
        cols = np.flatnonzero(cov.any(axis=0))
        bbox = (
            c0 + int(cols[0]),
            r0 + int(rows[0]),
            c0 + int(cols[-1]) + 1,
            r0 + int(rows[-1]) + 1,
        )
        drawn.append((obj, bbox))
        if anonymised is not None:
            anonymised[r0 : r0 + cov.shape[0], c0 : c0 + cov.shape[1]] |= cov

    instances = [int(v) + 1 for v in rng.choice(255, size=len(drawn), replace=False)]
    detection_ids = list(range(len(drawn)))
    if plan.repeat_id and len(drawn) >= 2:
        detection_ids[-1] = detection_ids[-2]

    # Draw at mask resolution: G, OR-ed v26 flags and the top object's legacy value.
    g = np.zeros((mh, mw), dtype=np.uint8)
    flags = np.zeros((mh, mw), dtype=np.uint8)
    value = np.zeros((mh, mw), dtype=np.uint8)
    for (obj, _), instance in zip(drawn, instances, strict=True):
        hit = _cover(obj.shapes, w, h, mw, mh)
        if hit is None:
            continue
        r0, c0, cov = hit
        window = (slice(r0, r0 + cov.shape[0]), slice(c0, c0 + cov.shape[1]))
        g[window][cov] = instance
        flags[window][cov] |= V26_FLAGS[obj.type_name]
        value[window][cov] = LEGACY_VALUES[obj.type_name]
    zero = np.zeros_like(g)
    if encoding == "v26":
        rgb = np.stack([zero, g, flags], axis=-1)
    elif encoding == "legacy":
        rgb = np.stack([zero, g, value], axis=-1)
    else:
        rgb = np.stack([value, g, zero], axis=-1)
    foreground = g != 0

    objects: list[SampleObject] = []
    for (obj, bbox), instance, det_id in zip(drawn, instances, detection_ids, strict=True):
        colour = _own_colour(obj.type_name, instance, encoding)
        if encoding == "v26":
            own = (g == instance) & (flags == V26_FLAGS[obj.type_name])
        else:
            own = g == instance
        objects.append(
            SampleObject(obj.type_name, instance, colour, bbox, det_id, int(np.count_nonzero(own)))
        )

    folder_path = root / plan.folder if plan.folder else root
    folder_path.mkdir(parents=True, exist_ok=True)
    prefix = f"{plan.folder}/" if plan.folder else ""
    written: list[str] = []

    instance_path = None
    if plan.instance:
        name = plan.stem + plan.ins_suffix
        if plan.rgba:
            alpha = np.full((mh, mw, 1), 255, dtype=np.uint8)
            _save_png(np.concatenate([rgb, alpha], axis=-1), folder_path / name)
        else:
            _save_png(rgb, folder_path / name)
        instance_path = prefix + name
        written.append(instance_path)

    binary_path = None
    if plan.binary:
        name = plan.stem + "_bin_mask.png"
        grey = np.where(foreground, 255, 0).astype(np.uint8)
        _save_png(np.stack([grey] * 3, axis=-1) if plan.binary_rgb else grey, folder_path / name)
        binary_path = prefix + name
        written.append(binary_path)

    metadata_path = None
    if plan.metadata:
        name = plan.stem + ".json"
        anonymised_key = "is_anonymized" if plan.anonymized else "is_anonymised"
        detections = []
        for sample in objects:
            x1, y1, x2, y2 = sample.bbox_image
            detections.append(
                {
                    "id": sample.detection_id,
                    "parent_image": plan.stem + ".jpg",
                    "offset": [x1, y1],
                    "bbox": [x1, y1, x2, y2],
                    "type": TYPE_CODES[sample.type_name],
                    "score": round(float(rng.uniform(0.5, 1.0)), 4),
                    anonymised_key: True,
                    "type_label": TYPE_LABELS[sample.type_name],
                    "color": list(sample.colour) if colours else None,
                }
            )
        document = {
            "id": plan.stem + ".jpg",
            "detections": detections,
            "size": [h, w] if size_order == "hw" else [w, h],
            "duration": round(float(rng.uniform(0.05, 0.8)), 4),
            "filename": plan.stem + ".jpg",
            "folder": plan.folder or None,
        }
        (folder_path / name).write_bytes((json.dumps(document, indent=2) + "\n").encode())
        metadata_path = prefix + name
        written.append(metadata_path)

    image_path = None
    if anonymised is not None:
        name = plan.stem + ".jpg"
        _placeholder(w, h, anonymised).save(
            folder_path / name, format="JPEG", quality=50, optimize=False, progressive=False
        )
        image_path = prefix + name
        written.append(image_path)

    sample_image = SampleImage(
        stem=plan.stem,
        folder=plan.folder,
        instance_path=instance_path,
        binary_path=binary_path,
        metadata_path=metadata_path,
        image_width=w,
        image_height=h,
        mask_width=mw,
        mask_height=mh,
        objects=tuple(objects),
        image_path=image_path,
    )
    return sample_image, written


def make_celantur_tree(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    images: int = 12,
    encoding: Encoding = "v26",
    mask_scale: int = 100,
    size_order: SizeOrder = "hw",
    colours_in_metadata: bool | None = None,
    write_images: bool = True,
) -> SampleTree:
    """Write a deterministic sample Celantur output tree and return its ground truth.

    Parameters
    ----------
    root : folder to write into (created if missing; existing files of the same names are
        overwritten, other files are left alone).
    seed : non-negative seed; the same arguments always give byte-identical files. Image ``i``
        depends only on ``seed`` and ``i``, so a larger ``images`` extends a smaller tree.
    images : number of images. The first 12 follow the fixed layout of the module docstring
        (which covers every quirk within the first 6); further images go to random folders.
    encoding : instance-mask encoding, ``"v26"``, ``"legacy"`` or ``"legacy-red"`` (SPEC 2.1).
    mask_scale : percent of the image size at which both masks are drawn (1..100); the mask size
        is ``(max(1, round(w * scale / 100)), max(1, round(h * scale / 100)))``.
    size_order : order of the metadata ``size``: ``"hw"`` ([height, width], as the product's own
        examples) or ``"wh"`` ([width, height], as its docs).
    colours_in_metadata : ``True`` gives every detection its ``color``, ``False`` writes ``null``
        everywhere, ``None`` mixes (every third image has ``null`` colours).
    write_images : also write the anonymised placeholder ``<stem>.jpg`` next to the masks (not a
        pipeline input: the pipeline must ignore it).

    Returns
    -------
    SampleTree
        What was written and drawn: per image its files and objects.

    Raises
    ------
    ValueError
        For a negative seed or image count, an unknown encoding or size order, or a mask scale
        outside 1..100.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    if not 1 <= mask_scale <= 100:
        raise ValueError(f"mask_scale must be in 1..100, got {mask_scale}")
    if size_order not in ("hw", "wh"):
        raise ValueError(f"size_order must be 'hw' or 'wh', got {size_order!r}")

    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    samples: list[SampleImage] = []
    files: list[str] = []
    for index in range(images):
        if index < len(_FIXED_PLANS):
            plan = _FIXED_PLANS[index]
        else:
            plan = _extra_plan(index, np.random.default_rng([seed, index, 1]))
        colours = index % 3 != 2 if colours_in_metadata is None else colours_in_metadata
        sample, written = _write_image(
            root_path,
            index,
            plan,
            seed=seed,
            encoding=encoding,
            mask_scale=mask_scale,
            size_order=size_order,
            colours=colours,
            write_images=write_images,
        )
        samples.append(sample)
        files += written
    return SampleTree(
        root=root_path,
        images=tuple(samples),
        encoding=encoding,
        mask_scale=mask_scale,
        size_order=size_order,
        files=tuple(sorted(files)),
    )
