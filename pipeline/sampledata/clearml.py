"""Deterministic sample ClearML Hyper-Dataset frames and masks, with ground truth.

:func:`make_clearml_dataset` writes what a ClearML Hyper-Dataset version holds for segmentation
(SPEC 2.5): frames documents whose sources carry mask URIs, the masks themselves in the flavours
seen in the wild, and the version's ``mask_labels``. It returns what it wrote as
:class:`ClearmlDataset`. It serves the tests and the benchmarks, so the same arguments always
give byte-identical files.

Layout under ``root``::

    mask_labels.json                       the version's mask_labels (list form)
    frames-array/frames.json               form "array": one JSON array of frames
    frames-jsonl/frames.jsonl              form "jsonl": one frame per line
    frames-object/frame-NNNN.json          form "object": one frame object per file
    masks/label_ids/<stem>_gtFine_labelIds.png        L: Cityscapes label ids 0..33, plus 34
    masks/instance_ids/<stem>_gtFine_instanceIds.png  16-bit grey: ids, 26001, 26002, 24000
    masks/palette/<stem>_palette.png                   P (one with a transparent entry)
    masks/colour/<stem>_gtFine_color.png               RGBA, alpha 255 everywhere
    masks/panoptic/<stem>_panoptic.png                 RGB, id = R + 256 G + 256^2 B
    masks/panoptic/<stem>_panoptic.json                its COCO-panoptic annotation
    masks/alpha/<stem>_alpha_la.png | _alpha_rgba.png | _alpha_l.png | _alpha_empty.png
    masks/video/<stem>_labels.mkv                      lossless FFV1 colour masks, 4 frames

Mask URIs are written relative to the frames document's folder (``../masks/...``; every form
keeps its document one folder deep, so the three forms name the masks identically), or as
``mask_uri_prefix + <path below root>`` when a prefix is given (e.g. an ``https://`` bucket
host, for ``--uri-map``).

Frames follow eight templates (frame ``i`` uses template ``i % 8``; the first eight frames
cover every case)::

    #  sources (mask ids)                                   what it exercises
    0  left: labelIds, instanceIds (dicts with ids)         L and 16-bit label masks; bare URI
       right: 00 palette, 01 colour (bare URI strings)      strings get ids by position
    1  front: {panoptic, cutout} ({id: uri} mapping)        mapping form; panoptic RGB; LA alpha;
       rear: 5 (numeric id) soft L cut-out                  a numeric id kept as the string "5"
    2  left: seg (labelIds)                                 deprecated rois[].mask links: the
       rois: "debris" -> [34,34,34], road+wet -> [7,7,7]    unmapped value gets a label
    3  left: gone (missing file), cutout (RGBA alpha)       a mask URI with no file behind it
    4  cam: track (video/x-matroska), instances             one mask per video frame (colour
                                                            RGBA mask instead without ``video``)
    5  a: 00 LA, 01 L cut-outs; b: rgba, empty              soft alpha in every mode; a fully
                                                            transparent mask
    6  left: color (RGBA), palette (P with transparency)    colour masks
    7  left: panoptic, labelIds; right: 00 palette           several masks per source

Scenes (drawn per frame from ``seed`` and the frame index): sky, a building band, sidewalk,
road and the ego vehicle's bonnet; a vegetation blob, a pole with a traffic sign, a person (group
id 24000 in ``instanceIds``), two cars (26001 and 26002) and a small square of the value 34, which
``mask_labels`` does not map (its colour in colour masks is :data:`UNMAPPED_COLOUR`). The colour
masks use the Cityscapes colours of the ids. Panoptic ids are the label id for stuff, the
``instanceIds`` value for things, and 0 (void, not in ``segments_info``) for ids 0, 1, 2 and 34.

``mask_labels`` maps every grey id ``v`` in 0..33 as ``[v, v, v]`` to its Cityscapes name
(``person``, ``rider`` and ``car`` carry a second label), the 16-bit value 26001 to
``["car", "car 1"]``, and the colours of the colour masks to the same names. ``[0, 0, 0]`` is
listed twice with the same labels (id 0 and the colour of unlabelled pixels), as real mappings
merged from two schemes do.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "UNMAPPED_COLOUR",
    "UNMAPPED_GREY",
    "ClearmlDataset",
    "ClearmlFrame",
    "ClearmlMask",
    "FramesForm",
    "MaskKind",
    "make_clearml_dataset",
]

FramesForm = Literal["array", "object", "jsonl"]
FRAMES_FORMS: tuple[FramesForm, ...] = get_args(FramesForm)

MaskKind = Literal[
    "label_ids",
    "instance_ids",
    "palette",
    "palette_transparent",
    "colour",
    "panoptic",
    "alpha_la",
    "alpha_rgba",
    "alpha_l",
    "alpha_empty",
    "video",
    "missing",
]

Rgb = tuple[int, int, int]

#: Grey value of the label-id masks that ``mask_labels`` does not map.
UNMAPPED_GREY = 34
#: Colour of that value in the colour masks (not mapped either).
UNMAPPED_COLOUR: Rgb = (250, 0, 250)
#: Frames of each video mask.
VIDEO_FRAMES = 4
#: Content type of the video masks (the container is Matroska; its extension is ``.mkv``).
VIDEO_CONTENT_TYPE = "video/x-matroska"

#: Cityscapes label names of ids 0..33.
CITYSCAPES_NAMES: tuple[str, ...] = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic",
    "ground", "road", "sidewalk", "parking", "rail track", "building", "wall", "fence",
    "guard rail", "bridge", "tunnel", "pole", "polegroup", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "caravan",
    "trailer", "train", "motorcycle", "bicycle",
)  # fmt: skip
_EXTRA_LABELS: dict[int, tuple[str, ...]] = {24: ("human",), 25: ("human",), 26: ("vehicle",)}

#: Ids drawn in the scenes and their Cityscapes colours (ids 0, 1 and 2 are black there).
_SCENE_COLOURS: dict[int, Rgb] = {
    0: (0, 0, 0),
    1: (0, 0, 0),
    2: (0, 0, 0),
    7: (128, 64, 128),
    8: (244, 35, 232),
    11: (70, 70, 70),
    17: (153, 153, 153),
    20: (220, 220, 0),
    21: (107, 142, 35),
    23: (70, 130, 180),
    24: (220, 20, 60),
    26: (0, 0, 142),
    UNMAPPED_GREY: UNMAPPED_COLOUR,
}
#: 16-bit instance values with an entry of their own in ``mask_labels``.
_MAPPED_INSTANCES: dict[int, tuple[str, ...]] = {26001: ("car", "car 1")}
#: Ids that are void (id 0) in the panoptic masks.
_VOID_IDS = (0, 1, 2, UNMAPPED_GREY)
_CITIES = ("frankfurt", "lindau", "munster")
_SIZES: tuple[tuple[int, int], ...] = ((96, 64), (128, 72), (120, 90), (80, 60), (111, 67))


# ---------------------------------------------------------------------------------------------
# Public ground truth
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClearmlMask:
    """One mask reference of one source of one frame.

    Attributes
    ----------
    frame_id, source_id : ids of the frame and the source that reference the mask.
    mask_id : the id the pipeline gives the mask: the given id as a string (a numeric id ``5``
        is ``"5"``), or ``"00"``, ``"01"``, ... by position for bare URI strings.
    uri : the URI exactly as written in the frames document.
    path : POSIX path of the mask file relative to ``root``; ``None`` for the missing mask.
    kind : what the file holds (see the module docstring).
    png_mode : Pillow mode of the written PNG (``"L"``, ``"I;16"``, ``"P"``, ``"RGB"``,
        ``"RGBA"``, ``"LA"``); ``None`` for video and missing masks.
    content_type : the ``content_type`` written for the mask (``None`` for bare URIs).
    width, height : size in pixels (of each frame for a video).
    video_frames : number of frames of a video mask, ``None`` otherwise.
    roi_labels : the deprecated ``rois[].mask`` links to this mask: ((r, g, b), labels) pairs.
    panoptic_json : POSIX path (relative to ``root``) of the COCO-panoptic JSON of a panoptic
        mask, ``None`` otherwise.
    """

    frame_id: str
    source_id: str
    mask_id: str
    uri: str
    path: str | None
    kind: MaskKind
    png_mode: str | None
    content_type: str | None
    width: int
    height: int
    video_frames: int | None = None
    roi_labels: tuple[tuple[Rgb, tuple[str, ...]], ...] = ()
    panoptic_json: str | None = None


@dataclass(frozen=True)
class ClearmlFrame:
    """One frame of the dataset.

    Attributes
    ----------
    id : the frame ``id`` (``frame-NNNN``).
    position : position of the frame in the dataset (and in an array or JSON Lines document).
    template : index of the frame's template in the module docstring's table.
    document : POSIX path (relative to ``root``) of the frames document holding the frame.
    masks : every mask reference of the frame, in document order.
    """

    id: str
    position: int
    template: int
    document: str
    masks: tuple[ClearmlMask, ...]


@dataclass(frozen=True, eq=False)
class ClearmlDataset:
    """A written sample ClearML dataset.

    Attributes
    ----------
    root : the dataset's root folder.
    form : shape of the frames documents: ``"array"``, ``"object"`` or ``"jsonl"``.
    frames_path : what to give the pipeline as FRAMES: the frames document, or for the form
        ``"object"`` with more than one frame the folder of per-frame documents.
    frames : the frames in order.
    mask_labels_path : ``root / "mask_labels.json"`` (the list form).
    mask_labels_list : ``mask_labels`` as written: a list of ``{"value": [r, g, b], "labels":
        [...]}`` (``[0, 0, 0]`` appears twice, with the same labels).
    mask_labels_all : the SDK's wrapped form ``{"_all_": mask_labels_list}``.
    mask_labels_python : the SDK's Python form ``{(r, g, b): [labels]}``.
    video : whether video masks were written.
    files : every file written, as sorted POSIX paths relative to ``root``.
    """

    root: Path
    form: FramesForm
    frames_path: Path
    frames: tuple[ClearmlFrame, ...]
    mask_labels_path: Path
    mask_labels_list: list[dict[str, Any]] = field(default_factory=list)
    mask_labels_all: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    mask_labels_python: dict[Rgb, list[str]] = field(default_factory=dict)
    video: bool = True
    files: tuple[str, ...] = ()

    @property
    def masks(self) -> tuple[ClearmlMask, ...]:
        """Every mask reference of every frame, in order."""
        return tuple(mask for frame in self.frames for mask in frame.masks)

    @property
    def missing(self) -> tuple[ClearmlMask, ...]:
        """The mask references without a file."""
        return tuple(mask for mask in self.masks if mask.path is None)


# ---------------------------------------------------------------------------------------------
# mask_labels
# ---------------------------------------------------------------------------------------------


def _labels_of_id(value: int) -> list[str]:
    return [CITYSCAPES_NAMES[value], *_EXTRA_LABELS.get(value, ())]


def _mask_labels() -> list[dict[str, Any]]:
    """The version's ``mask_labels`` in the list form (with one repeated, consistent value)."""
    entries: list[dict[str, Any]] = [
        {"value": [v, v, v], "labels": _labels_of_id(v)} for v in range(len(CITYSCAPES_NAMES))
    ]
    entries += [{"value": [v, v, v], "labels": list(labels)}
                for v, labels in _MAPPED_INSTANCES.items()]  # fmt: skip
    seen: set[Rgb] = set()
    for value, colour in sorted(_SCENE_COLOURS.items()):
        if value == UNMAPPED_GREY or colour in seen:
            continue
        seen.add(colour)
        entries.append({"value": list(colour), "labels": _labels_of_id(value)})
    return entries


def _python_form(entries: list[dict[str, Any]]) -> dict[Rgb, list[str]]:
    mapping: dict[Rgb, list[str]] = {}
    for entry in entries:
        r, g, b = entry["value"]
        mapping[(int(r), int(g), int(b))] = list(entry["labels"])
    return mapping


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    ids: npt.NDArray[np.uint8]  # (H, W) label ids
    instances: npt.NDArray[np.uint16]  # (H, W) instanceIds values


def _colour_lut() -> npt.NDArray[np.uint8]:
    lut = np.zeros((256, 3), dtype=np.uint8)
    for value, colour in _SCENE_COLOURS.items():
        lut[value] = colour
    return lut


def _ellipse_area(
    width: int, height: int, cx: float, cy: float, rx: float, ry: float
) -> npt.NDArray[np.bool_]:
    ys = (np.arange(height, dtype=np.float64) + 0.5)[:, None]
    xs = (np.arange(width, dtype=np.float64) + 0.5)[None, :]
    return np.asarray(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0)


def _scene(rng: np.random.Generator, width: int, height: int, *, cars: bool = True) -> _Scene:
    """A street scene: label ids and instanceIds values (see the module docstring)."""
    w, h = width, height
    ids = np.full((h, w), 7, dtype=np.uint8)  # road
    ids[: int(0.35 * h)] = 23  # sky
    ids[int(0.35 * h) : int(0.55 * h)] = 11  # building
    ids[int(0.55 * h) : int(0.62 * h)] = 8  # sidewalk
    ids[h - max(2, h // 16) :] = 1  # ego vehicle
    ids[:, 0] = 2  # rectification border
    ids[0:3, 0:3] = 0  # unlabeled
    instances = np.zeros((h, w), dtype=np.uint16)

    def put(area: npt.NDArray[np.bool_], value: int, instance: int = 0) -> None:
        ids[area] = value
        instances[area] = instance

    veg = _ellipse_area(
        w, h, rng.uniform(0.2, 0.8) * w, 0.4 * h, rng.uniform(0.08, 0.15) * w, 0.1 * h
    )
    put(veg, 21)
    pole_x = int(rng.integers(int(0.45 * w), int(0.6 * w)))
    pole = np.zeros((h, w), dtype=np.bool_)
    pole[int(0.25 * h) : int(0.62 * h), pole_x : pole_x + 2] = True
    put(pole, 17)
    sign = np.zeros((h, w), dtype=np.bool_)
    sign[int(0.2 * h) : int(0.28 * h), pole_x - 2 : pole_x + 4] = True
    put(sign, 20)
    person = _ellipse_area(
        w, h, rng.uniform(0.38, 0.44) * w, rng.uniform(0.6, 0.7) * h, 0.04 * w + 1, 0.12 * h
    )
    put(person, 24, 24000)
    if cars:
        for k, (lo, hi) in enumerate(((0.05, 0.2), (0.62, 0.75))):
            x0 = int(rng.uniform(lo, hi) * w)
            y0 = int(rng.uniform(0.64, 0.72) * h)
            car = np.zeros((h, w), dtype=np.bool_)
            car[y0 : y0 + max(3, int(0.14 * h)), x0 : x0 + max(4, int(0.18 * w))] = True
            put(car, 26, 26001 + k)
    x = int(rng.integers(int(0.7 * w), w - 6))
    y = int(rng.integers(3, int(0.3 * h)))
    side = int(rng.integers(3, 6))
    square = np.zeros((h, w), dtype=np.bool_)
    square[y : y + side, x : x + side] = True
    put(square, UNMAPPED_GREY)
    stuff = instances == 0
    instances[stuff] = ids[stuff]
    return _Scene(ids, instances)


def _soft_alpha(rng: np.random.Generator, width: int, height: int) -> npt.NDArray[np.uint8]:
    """A soft elliptic cut-out: opaque inside, a gradient ring, transparent outside."""
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    rx, ry = rng.uniform(0.2, 0.3) * width, rng.uniform(0.2, 0.3) * height
    ys = (np.arange(height, dtype=np.float64) + 0.5)[:, None]
    xs = (np.arange(width, dtype=np.float64) + 0.5)[None, :]
    distance = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    opacity = np.clip((1.4 - distance) / 0.8, 0.0, 1.0)
    return np.asarray(np.rint(opacity * 255), dtype=np.uint8)


def _panoptic(scene: _Scene) -> tuple[npt.NDArray[np.uint8], list[dict[str, Any]]]:
    """The panoptic RGB mask of a scene and its ``segments_info`` (areas and boxes measured)."""
    seg = scene.instances.astype(np.int64)
    seg[np.isin(scene.ids, _VOID_IDS)] = 0
    rgb = np.stack([seg % 256, (seg // 256) % 256, seg // 65536], axis=-1).astype(np.uint8)
    info = []
    for seg_id in sorted(int(v) for v in np.unique(seg) if v != 0):
        ys, xs = np.nonzero(seg == seg_id)
        x, y = int(xs.min()), int(ys.min())
        category = seg_id // 1000 if seg_id >= 1000 else seg_id
        info.append(
            {
                "id": seg_id,
                "category_id": category,
                "iscrowd": 0,
                "area": int(xs.size),
                "bbox": [x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y],
            }
        )
    return rgb, info


def _palette_image(scene: _Scene, lut: npt.NDArray[np.uint8], *, transparent: bool) -> Image.Image:
    """A P image of the scene's colours; index 0 is black (transparent when asked)."""
    height, width = scene.ids.shape
    colours, inverse = np.unique(lut[scene.ids].reshape(-1, 3), axis=0, return_inverse=True)
    found = [(int(c[0]), int(c[1]), int(c[2])) for c in colours]
    palette = [(0, 0, 0)] + [colour for colour in found if colour != (0, 0, 0)]
    slot = np.array([palette.index(colour) for colour in found], dtype=np.uint8)
    indices = np.ascontiguousarray(slot[inverse.reshape(-1)])
    image = Image.frombytes("P", (width, height), indices.tobytes())
    image.putpalette([channel for colour in palette for channel in colour])
    if transparent:
        image.info["transparency"] = 0
    return image


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {"format": "PNG", "optimize": False, "compress_level": 6}
    if "transparency" in image.info:
        params["transparency"] = image.info["transparency"]
    image.save(path, **params)


def _video_bytes(frames: list[npt.NDArray[np.uint8]]) -> bytes:
    """Lossless FFV1 in Matroska (bit-exact muxing: identical bytes for identical frames).

    Raises
    ------
    RuntimeError
        When the frames do not decode back exactly (a PyAV build without a lossless path).
    """
    import av

    buffer = io.BytesIO()
    height, width = frames[0].shape[:2]
    with av.open(buffer, "w", format="matroska", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = buffer.getvalue()
    with av.open(io.BytesIO(data), "r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != len(frames) or any(
        not np.array_equal(a, b) for a, b in zip(decoded, frames, strict=True)
    ):
        raise RuntimeError("PyAV did not round-trip the FFV1 video mask losslessly")
    return data


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------

_SUFFIXES: dict[MaskKind, tuple[str, str]] = {
    "label_ids": ("label_ids", "_gtFine_labelIds.png"),
    "instance_ids": ("instance_ids", "_gtFine_instanceIds.png"),
    "palette": ("palette", "_palette.png"),
    "palette_transparent": ("palette", "_palette_transparent.png"),
    "colour": ("colour", "_gtFine_color.png"),
    "panoptic": ("panoptic", "_panoptic.png"),
    "alpha_la": ("alpha", "_alpha_la.png"),
    "alpha_rgba": ("alpha", "_alpha_rgba.png"),
    "alpha_l": ("alpha", "_alpha_l.png"),
    "alpha_empty": ("alpha", "_alpha_empty.png"),
    "video": ("video", "_labels.mkv"),
    "missing": ("missing", "_gtFine_labelIds.png"),
}

#: Per template: sources as (source id, masks shape, [(mask id or None, kind), ...]).
_Shape = Literal["dicts", "strings", "mapping"]
_TEMPLATES: tuple[tuple[tuple[str, _Shape, tuple[tuple[Any, MaskKind], ...]], ...], ...] = (
    (
        ("left", "dicts", (("labelIds", "label_ids"), ("instanceIds", "instance_ids"))),
        ("right", "strings", ((None, "palette"), (None, "colour"))),
    ),
    (
        ("front", "mapping", (("panoptic", "panoptic"), ("cutout", "alpha_la"))),
        ("rear", "dicts", ((5, "alpha_l"),)),
    ),
    (("left", "dicts", (("seg", "label_ids"),)),),
    (("left", "dicts", (("gone", "missing"), ("cutout", "alpha_rgba"))),),
    (("cam", "dicts", (("track", "video"), ("instances", "instance_ids"))),),
    (
        ("a", "strings", ((None, "alpha_la"), (None, "alpha_l"))),
        ("b", "mapping", (("rgba", "alpha_rgba"), ("empty", "alpha_empty"))),
    ),
    (("left", "dicts", (("color", "colour"), ("palette", "palette_transparent"))),),
    (
        ("left", "dicts", (("panoptic", "panoptic"), ("labelIds", "label_ids"))),
        ("right", "strings", ((None, "palette"),)),
    ),
)
#: Template 2's deprecated ROIs: (roi id, label key, labels, mask id, value).
_ROIS: tuple[tuple[str, str, Any, str, Rgb], ...] = (
    ("roi-0", "label", "debris", "seg", (UNMAPPED_GREY, UNMAPPED_GREY, UNMAPPED_GREY)),
    ("roi-1", "labels", ["road", "wet"], "seg", (7, 7, 7)),
)


def _write_mask(
    kind: MaskKind,
    path: Path,
    scene: _Scene,
    rng: np.random.Generator,
    lut: npt.NDArray[np.uint8],
) -> tuple[str | None, dict[str, Any] | None]:
    """Write one mask; returns its Pillow mode and, for panoptic masks, its annotation."""
    height, width = scene.ids.shape
    if kind == "label_ids":
        _save(Image.fromarray(scene.ids), path)
        return "L", None
    if kind == "instance_ids":
        _save(Image.fromarray(scene.instances), path)
        return "I;16", None
    if kind in ("palette", "palette_transparent"):
        _save(_palette_image(scene, lut, transparent=kind == "palette_transparent"), path)
        return "P", None
    if kind == "colour":
        alpha = np.full((height, width, 1), 255, dtype=np.uint8)
        _save(Image.fromarray(np.concatenate([lut[scene.ids], alpha], axis=-1)), path)
        return "RGBA", None
    if kind == "panoptic":
        rgb, info = _panoptic(scene)
        _save(Image.fromarray(rgb), path)
        return "RGB", {"segments_info": info}
    if kind == "alpha_la":
        alpha = _soft_alpha(rng, width, height)
        grey = np.where(alpha > 0, 255, 0).astype(np.uint8)
        _save(Image.fromarray(np.stack([grey, alpha], axis=-1)), path)
        return "LA", None
    if kind == "alpha_rgba":
        alpha = _soft_alpha(rng, width, height)
        _save(Image.fromarray(np.concatenate([lut[scene.ids], alpha[:, :, None]], axis=-1)), path)
        return "RGBA", None
    if kind == "alpha_l":
        _save(Image.fromarray(_soft_alpha(rng, width, height)), path)
        return "L", None
    if kind == "alpha_empty":
        _save(Image.fromarray(np.zeros((height, width), dtype=np.uint8)), path)
        return "L", None
    raise ValueError(f"not a PNG mask kind: {kind}")


def _video_frames(
    rng: np.random.Generator, width: int, height: int, lut: npt.NDArray[np.uint8]
) -> list[npt.NDArray[np.uint8]]:
    """Colour masks of a short clip: a car drives right, the unmapped square drifts down."""
    base = _scene(rng, width, height, cars=False).ids
    x0, y0 = int(0.1 * width), int(0.66 * height)
    car_w, car_h = max(4, int(0.2 * width)), max(3, int(0.14 * height))
    frames = []
    for t in range(VIDEO_FRAMES):
        ids = base.copy()
        ids[y0 : y0 + car_h, x0 + 5 * t : x0 + 5 * t + car_w] = 26
        ids[3 + 2 * t : 7 + 2 * t, width - 10 : width - 5] = UNMAPPED_GREY
        frames.append(np.ascontiguousarray(lut[ids]))
    return frames


def _frame(
    root: Path,
    position: int,
    *,
    seed: int,
    lut: npt.NDArray[np.uint8],
    video: bool,
    prefix: str | None,
    document: str,
) -> tuple[dict[str, Any], ClearmlFrame, list[str]]:
    """Write one frame's masks; returns its JSON, its ground truth and the files written."""
    rng = np.random.default_rng([seed, position])
    template = position % len(_TEMPLATES)
    width, height = _SIZES[int(rng.integers(len(_SIZES)))]
    scene = _scene(rng, width, height)
    city = _CITIES[position % len(_CITIES)]
    stem = f"{city}_{seed:06d}_{position:06d}"
    frame_id = f"frame-{position:04d}"
    timestamp = 1_700_000_000_000 + 100 * position
    rois = [
        {"id": roi_id, key: labels, "confidence": 0.9, "sources": ["left"],
         "mask": {"id": mask_id, "value": list(value)}}
        for roi_id, key, labels, mask_id, value in _ROIS
    ] if template == 2 else []  # fmt: skip
    written: list[str] = []
    sources: list[dict[str, Any]] = []
    masks: list[ClearmlMask] = []
    for source_id, shape, entries in _TEMPLATES[template]:
        source_masks: list[Any] = []
        mapping_masks: dict[str, str] = {}
        source_type = "image/png"
        for position_in_source, (given_id, planned_kind) in enumerate(entries):
            kind: MaskKind = planned_kind
            if kind == "video" and not video:
                kind = "colour"
            folder, suffix = _SUFFIXES[kind]
            rel = f"masks/{folder}/{stem}_{source_id}{suffix}"
            uri = f"{prefix}{rel}" if prefix is not None else f"../{rel}"
            mask_rng = np.random.default_rng([seed, position, len(masks)])
            png_mode: str | None = None
            panoptic_json: str | None = None
            frames_in_video: int | None = None
            path: str | None = rel
            content_type: str | None = "image/png"
            if kind == "missing":
                path = None
            elif kind == "video":
                data = _video_bytes(_video_frames(mask_rng, width, height, lut))
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
                content_type = source_type = VIDEO_CONTENT_TYPE
                frames_in_video = VIDEO_FRAMES
            else:
                png_mode, annotation = _write_mask(kind, root / rel, scene, mask_rng, lut)
                if annotation is not None:
                    panoptic_json = rel.removesuffix(".png") + ".json"
                    coco = {
                        "images": [{"id": stem, "file_name": f"{stem}_leftImg8bit.png",
                                    "width": width, "height": height}],
                        "annotations": [{"image_id": stem, "file_name": posixpath.basename(rel),
                                         **annotation}],
                        "categories": [{"id": i, "name": name, "isthing": int(i in (24, 26))}
                                       for i, name in enumerate(CITYSCAPES_NAMES)],
                    }  # fmt: skip
                    (root / panoptic_json).write_bytes((json.dumps(coco, indent=2) + "\n").encode())
                    written.append(panoptic_json)
            if path is not None:
                written.append(path)
            if shape == "strings":
                mask_id = f"{position_in_source:02d}"
                source_masks.append(uri)
                content_type = None
            else:
                mask_id = str(given_id)
                entry = {"id": given_id, "uri": uri, "content_type": content_type,
                         "timestamp": timestamp}  # fmt: skip
                if shape == "mapping":
                    mapping_masks[mask_id] = uri
                    content_type = None
                else:
                    source_masks.append(entry)
            roi_labels = tuple(
                (value, (labels,) if isinstance(labels, str) else tuple(labels))
                for _, _, labels, roi_mask, value in (_ROIS if template == 2 else ())
                if roi_mask == mask_id
            )
            masks.append(
                ClearmlMask(
                    frame_id=frame_id, source_id=source_id, mask_id=mask_id, uri=uri,
                    path=path, kind=kind, png_mode=png_mode, content_type=content_type,
                    width=width, height=height, video_frames=frames_in_video,
                    roi_labels=roi_labels, panoptic_json=panoptic_json,
                )
            )  # fmt: skip
        sources.append(
            {
                "id": source_id,
                "uri": f"https://example.com/images/{stem}_{source_id}_leftImg8bit.png",
                "content_type": source_type,
                "timestamp": timestamp,
                "width": width,
                "height": height,
                "masks": mapping_masks if shape == "mapping" else source_masks,
            }
        )
    document_json: dict[str, Any] = {
        "id": frame_id,
        "context_id": f"{city}_drive",
        "timestamp": timestamp,
        "sources": sources,
    }
    if rois:
        document_json["rois"] = rois
    truth = ClearmlFrame(frame_id, position, template, document, tuple(masks))
    return document_json, truth, written


def make_clearml_dataset(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    frames: int = 8,
    form: FramesForm = "array",
    video: bool = True,
    mask_uri_prefix: str | None = None,
) -> ClearmlDataset:
    """Write a deterministic sample ClearML dataset and return its ground truth.

    Parameters
    ----------
    root : folder to write into (created if missing; files of the same names are overwritten,
        others are left alone, so one root can hold the frames documents of every form over
        the same, identical masks).
    seed : non-negative seed; the same arguments always give byte-identical files. Frame ``i``
        depends only on ``seed`` and ``i``, so more frames extend a smaller dataset.
    frames : number of frames (at least 1). The first eight cover every template.
    form : ``"array"`` (``frames-array/frames.json``), ``"jsonl"``
        (``frames-jsonl/frames.jsonl``, one frame per line) or ``"object"``
        (``frames-object/frame-NNNN.json``, one frame object per file; with ``frames=1`` that
        single file is ``frames_path``).
    video : write template 4's mask as a lossless FFV1 video (else a colour PNG mask).
    mask_uri_prefix : write mask URIs as this prefix + the mask's path below ``root`` (e.g.
        ``"https://example-bucket.s3.amazonaws.com/"``) instead of relative to the document.

    Returns
    -------
    ClearmlDataset
        What was written: frames, their masks (with ids as the pipeline names them) and
        ``mask_labels`` in its three forms.

    Raises
    ------
    ValueError
        For a negative seed, fewer than one frame or an unknown form.
    RuntimeError
        When ``video`` is set and PyAV cannot write the video mask losslessly.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if form not in FRAMES_FORMS:
        raise ValueError(f"form must be one of {', '.join(FRAMES_FORMS)}, got {form!r}")
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    lut = _colour_lut()
    entries = _mask_labels()
    labels_path = root_path / "mask_labels.json"
    labels_path.write_bytes((json.dumps(entries, indent=2) + "\n").encode())
    files = ["mask_labels.json"]
    folder = f"frames-{form}"
    documents: list[dict[str, Any]] = []
    truths: list[ClearmlFrame] = []
    for position in range(frames):
        document = {
            "array": f"{folder}/frames.json",
            "jsonl": f"{folder}/frames.jsonl",
            "object": f"{folder}/frame-{position:04d}.json",
        }[form]
        document_json, truth, written = _frame(
            root_path, position, seed=seed, lut=lut, video=video, prefix=mask_uri_prefix,
            document=document,
        )  # fmt: skip
        documents.append(document_json)
        truths.append(truth)
        files += written
    (root_path / folder).mkdir(parents=True, exist_ok=True)
    if form == "array":
        (root_path / folder / "frames.json").write_bytes(
            (json.dumps(documents, indent=2) + "\n").encode()
        )
        frames_path = root_path / folder / "frames.json"
        files.append(f"{folder}/frames.json")
    elif form == "jsonl":
        lines = "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in documents)
        (root_path / folder / "frames.jsonl").write_bytes(lines.encode())
        frames_path = root_path / folder / "frames.jsonl"
        files.append(f"{folder}/frames.jsonl")
    else:
        for truth, document_json in zip(truths, documents, strict=True):
            (root_path / truth.document).write_bytes(
                (json.dumps(document_json, indent=2) + "\n").encode()
            )
            files.append(truth.document)
        frames_path = root_path / truths[0].document if frames == 1 else root_path / folder
    return ClearmlDataset(
        root=root_path,
        form=form,
        frames_path=frames_path,
        frames=tuple(truths),
        mask_labels_path=labels_path,
        mask_labels_list=entries,
        mask_labels_all={"_all_": entries},
        mask_labels_python=_python_form(entries),
        video=video,
        files=tuple(sorted(set(files))),
    )
