"""Generated benchmark inputs: dense Celantur-style v26 instance masks drawn with numpy.

A scene is a street: a band of persons (each with a face that overlaps the head and sticks out
sideways) above a band of vehicles (each with a plate that overlaps the body and reaches below
it). Persons are drawn first, then every face on top, so with v26 flag OR-ing each person/face
pair gives exactly three colours: the person ``(0, G, 128)``, the face ``(0, G', 32)`` and their
overlap ``(0, G', 160)``; each vehicle/plate pair gives ``(0, G, 16)``, ``(0, G', 64)`` and
``(0, G', 80)``. Persons overlap each other (a crowd) without adding colours. The scene is laid
out in relative coordinates, so every resolution shows the same picture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.formats.celantur import V26_FLAGS

#: Default scene: 11 persons with faces and 4 vehicles with plates = 45 colours.
PERSONS = 11
VEHICLES = 4


@dataclass(frozen=True)
class _Shape:
    kind: str  # "rect" or "ellipse"
    x1: float
    y1: float
    x2: float
    y2: float


def _coverage(shape: _Shape, width: int, height: int) -> tuple[slice, slice, np.ndarray]:
    """Window of the image the shape touches and the shape's pixels in it (pixel centres)."""
    c0, c1 = max(0, int(shape.x1)), min(width, int(np.ceil(shape.x2)))
    r0, r1 = max(0, int(shape.y1)), min(height, int(np.ceil(shape.y2)))
    xs = np.arange(c0, c1, dtype=np.float64) + 0.5
    ys = np.arange(r0, r1, dtype=np.float64) + 0.5
    if shape.kind == "rect":
        inside = ((ys >= shape.y1) & (ys < shape.y2))[:, None] & (
            (xs >= shape.x1) & (xs < shape.x2)
        )[None, :]
    else:
        rx, ry = (shape.x2 - shape.x1) / 2, (shape.y2 - shape.y1) / 2
        dx = ((xs - shape.x1 - rx) / rx) ** 2
        dy = ((ys - shape.y1 - ry) / ry) ** 2
        inside = (dy[:, None] + dx[None, :]) <= 1.0
    return slice(r0, r1), slice(c0, c1), inside


def _draw(g: np.ndarray, flags: np.ndarray, shapes: list[_Shape], instance: int, flag: int) -> None:
    height, width = g.shape
    for shape in shapes:
        rows, cols, inside = _coverage(shape, width, height)
        g[rows, cols][inside] = instance
        flags[rows, cols][inside] |= flag


def celantur_scene(
    width: int, height: int, *, seed: int = 0, persons: int = PERSONS, vehicles: int = VEHICLES
) -> np.ndarray:
    """A v26 instance mask (H, W, 3) uint8 with ``3 * (persons + vehicles)`` distinct colours.

    Parameters
    ----------
    width, height : mask size in pixels.
    seed : the same seed gives the same layout (in relative coordinates) at every size.
    persons, vehicles : groups to draw; G values are distinct, so at most 85 groups.
    """
    rng = np.random.default_rng(seed)
    instances = [int(v) + 1 for v in rng.choice(255, size=2 * (persons + vehicles), replace=False)]
    g = np.zeros((height, width), dtype=np.uint8)
    flags = np.zeros((height, width), dtype=np.uint8)
    w, h = float(width), float(height)

    faces: list[tuple[list[_Shape], int]] = []
    for index in range(persons):
        ph = h * rng.uniform(0.3, 0.45)
        pw = ph * rng.uniform(0.38, 0.45)
        x1 = (index + rng.uniform(0.0, 0.4)) * (w - pw) / persons
        y1 = h * rng.uniform(0.02, 0.12)
        cx = x1 + pw / 2
        head = _Shape("ellipse", cx - 0.22 * pw, y1, cx + 0.22 * pw, y1 + 0.24 * ph)
        body = _Shape("rect", x1, y1 + 0.2 * ph, x1 + pw, y1 + ph)
        _draw(g, flags, [head, body], instances.pop(), V26_FLAGS["person"])
        fcx = cx + (1 if rng.random() < 0.5 else -1) * 0.1 * pw
        fcy = y1 + 0.13 * ph
        face = _Shape("ellipse", fcx - 0.18 * pw, fcy - 0.09 * ph, fcx + 0.18 * pw, fcy + 0.09 * ph)
        faces.append(([face], instances.pop()))
    for shapes, instance in faces:
        _draw(g, flags, shapes, instance, V26_FLAGS["face"])

    plates: list[tuple[list[_Shape], int]] = []
    slot = w / vehicles
    for index in range(vehicles):
        vw = slot * rng.uniform(0.7, 0.9)
        vh = min(vw * rng.uniform(0.45, 0.55), 0.38 * h)
        x1 = index * slot + rng.uniform(0.0, slot - vw)
        y1 = h * 0.99 - vh
        cx = x1 + vw / 2
        shapes = [
            _Shape("rect", x1 + 0.22 * vw, y1, x1 + 0.8 * vw, y1 + 0.45 * vh),
            _Shape("rect", x1, y1 + 0.35 * vh, x1 + vw, y1 + 0.85 * vh),
            _Shape("ellipse", x1 + 0.1 * vw, y1 + 0.65 * vh, x1 + 0.3 * vw, y1 + vh),
            _Shape("ellipse", x1 + 0.7 * vw, y1 + 0.65 * vh, x1 + 0.9 * vw, y1 + vh),
        ]
        _draw(g, flags, shapes, instances.pop(), V26_FLAGS["vehicle"])
        plate = _Shape("rect", cx - 0.12 * vw, y1 + 0.72 * vh, cx + 0.12 * vw, y1 + 0.95 * vh)
        plates.append(([plate], instances.pop()))
    for shapes, instance in plates:
        _draw(g, flags, shapes, instance, V26_FLAGS["license_plate"])

    return np.stack([np.zeros_like(g), g, flags], axis=-1)


def distinct_colours(rgb: np.ndarray) -> int:
    """Number of distinct non-background colours (for labelling the inputs)."""
    flat = rgb.reshape(-1, rgb.shape[-1]).astype(np.int64)
    keys = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2])
    return int(np.count_nonzero(keys))


#: Metadata ``type`` code and ``type_label`` of each v26 own-colour flag, as the product writes;
#: in the order an instance's type is read from its flags (objects drawn on top first).
_DETECTION_TYPES = {32: (103, "face"), 64: (104, "license plate"), 128: (102, "person"),
                    16: (105, "vehicle")}  # fmt: skip


def scene_detections(rgb: np.ndarray, stem: str) -> list[dict[str, object]]:
    """Metadata detections of a :func:`celantur_scene` mask, one per instance (G value).

    An instance's type is read from the smallest B value among its pixels (its own flag, plus
    the flags of what it covers when all its pixels overlap: faces and plates, drawn on top, win),
    its ``color`` is the own colour ``(0, G, flag)`` and its ``bbox`` the box of its visible
    pixels in mask pixels (the image is the mask's size), ``offset`` the box's corner.
    """
    height, width = rgb.shape[:2]
    g = rgb[..., 1].ravel()
    lowest = np.full(256, 255, dtype=np.uint8)
    np.minimum.at(lowest, g, rgb[..., 2].ravel())
    in_row = np.zeros((height, 256), dtype=bool)
    in_row[np.repeat(np.arange(height), width), g] = True
    in_col = np.zeros((width, 256), dtype=bool)
    in_col[np.tile(np.arange(width), height), g] = True
    detections: list[dict[str, object]] = []
    for instance in np.flatnonzero(in_row.any(axis=0)):
        if instance == 0:
            continue
        rows, cols = np.flatnonzero(in_row[:, instance]), np.flatnonzero(in_col[:, instance])
        box = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
        flag = next(f for f in _DETECTION_TYPES if int(lowest[instance]) & f)
        code, label = _DETECTION_TYPES[flag]
        detections.append({
            "id": len(detections), "parent_image": f"{stem}.jpg", "offset": box[:2], "bbox": box,
            "type": code, "score": 0.5 + (int(instance) % 50) / 100, "is_anonymised": True,
            "type_label": label, "color": [0, int(instance), flag],
        })  # fmt: skip
    return detections


def write_scene_files(
    root: Path, rel_stem: str, rgb: np.ndarray, instance_png: bytes | None = None
) -> list[str]:
    """Write one image's Celantur files under ``root``: ``<rel_stem>_ins_maks.png`` (``rgb``, or
    the given PNG bytes of it), ``<rel_stem>_bin_mask.png`` (grey, 255 where any instance) and
    ``<rel_stem>.json`` (:func:`scene_detections`, ``size`` as [height, width]). PNGs at level 6,
    as section 2's inputs. Returns the written paths relative to ``root``.
    """
    from pipeline.io.png import encode_png

    stem = rel_stem.rsplit("/", 1)[-1]
    (root / rel_stem).parent.mkdir(parents=True, exist_ok=True)
    binary = np.where(rgb[..., 1] != 0, 255, 0).astype(np.uint8)
    document = {
        "id": f"{stem}.jpg", "detections": scene_detections(rgb, stem),
        "size": [int(rgb.shape[0]), int(rgb.shape[1])], "duration": 0.25,
        "filename": f"{stem}.jpg", "folder": None,
    }  # fmt: skip
    files = {
        f"{rel_stem}_ins_maks.png": instance_png or encode_png(rgb, compress_level=6),
        f"{rel_stem}_bin_mask.png": encode_png(binary, compress_level=6),
        f"{rel_stem}.json": (json.dumps(document, indent=2) + "\n").encode(),
    }
    for rel, payload in files.items():
        (root / rel).write_bytes(payload)
    return list(files)


def write_scene_tree(root: Path, *, images: int, seed: int, width: int, height: int) -> list[str]:
    """``images`` Celantur images of ``width`` x ``height`` under ``root``, each a different
    :func:`celantur_scene` written by :func:`write_scene_files`, in four camera folders
    (``cam-<i % 4>/frame-<i>``); returns every written path relative to ``root``, sorted."""
    files: list[str] = []
    for index in range(images):
        rgb = celantur_scene(width, height, seed=seed * 100_000 + index)
        files += write_scene_files(root, f"cam-{index % 4}/frame-{index:05d}", rgb)
    return sorted(files)
