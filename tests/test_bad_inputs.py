"""Untrusted input (SPEC 5): a bad-input corpus generated from valid files, in ONE tree next to
good files, run once through the CLI (sync scheduler).

Every must-fail case yields exactly one ``errors/`` row (path, stage, code, severity; the message
names the file and the problem); every case the format allows is processed to the same rows as
the plain version of the same input; the good files' rows equal those of a clean run of the good
files alone; nothing is written outside the output root. Peak RSS of the heavy cases is measured
in subprocesses, one one-file tree each.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus import (
    GREY,
    GREY_ALPHA,
    PALETTE,
    RGB,
    RGBA,
    SIGNATURE,
    apng,
    chunk,
    chunk_data,
    decode_rgb,
    encode,
    encode_rows,
    find_chunk,
    flip_crc,
    ihdr,
    insert_before,
    replace_chunk,
    text_chunk,
    to_palette,
    with_size,
)
from reference import read_output, reference_segments

from pipeline.cli import main
from pipeline.config import RunOptions
from pipeline.formats.metadata import MAX_DETECTIONS
from pipeline.io.jsonio import MAX_JSON_CONTAINERS, MAX_JSON_VALUES
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet

#: A small JSON cap, so "just over the cap" and "just under it" stay cheap.
JSON_CAP = 2_000_000
ARGS = ("--encoding", "v26", "--mask-scale", "50", "--max-json-bytes", str(JSON_CAP))
#: Tables whose rows of good inputs must not change when bad inputs sit beside them.
ROW_TABLES = ("masks", "instances", "detections", "frames", "chunks", "gaps")
#: Mask statistics that must not depend on how the PNG is encoded.
MASK_STATS = (
    "width", "height", "encoding", "segments", "invalid_segments", "foreground_pixels",
    "person_pixels", "license_plate_pixels", "face_pixels", "vehicle_pixels", "overlap_pixels",
    "invalid_pixels", "bin_mismatch_pixels", "matched_detections",
)  # fmt: skip
RSS_LIMIT_MIB = 256
#: Heavy-case subprocesses run at once (each may peak at a few hundred MiB).
RSS_PARALLEL = 3
#: Detections that make a metadata file just under JSON_CAP (189 bytes each).
NEAR_CAP_DETECTIONS = 10_500


@dataclass(frozen=True)
class Row:
    """An expected ``errors/`` row; ``says`` must occur in the message after ``<path>: ``."""

    stage: str
    error: str
    severity: str = "error"
    says: str = ""


@dataclass
class Corpus:
    good: Path  # the good files alone
    mixed: Path  # the same good files plus the corpus under bad/
    expected: dict[str, list[Row]] = field(default_factory=dict)  # every row of every path
    flavours: dict[str, tuple[str, str]] = field(default_factory=dict)  # variant -> plain, mode
    separate: dict[str, list[Row]] = field(default_factory=dict)  # asserted by their own tests
    outside: list[Path] = field(default_factory=list)  # paths that metadata tries to reach

    def must_fail(self, rel: str, row: Row) -> None:
        self.expected[rel] = [row]


@dataclass(frozen=True)
class Runs:
    corpus: Corpus
    good_out: Path
    mixed_out: Path
    good_code: int
    mixed_code: int
    new_files: frozenset[Path]  # files that appeared around the output during the mixed run


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

IMAGE0 = ("images/street.view-0001_ins_maks.png", "images/street.view-0001_bin_mask.png",
          "images/street.view-0001.json")  # fmt: skip
CHUNK0 = "videos/fleet-a/day.1/cam-02-0-99.json"

#: A standalone image-metadata document whose rows are written out below by hand.
SOLO_DETECTIONS: list[dict[str, Any]] = [
    {"id": 0, "parent_image": "solo.jpg", "offset": [300, 20], "bbox": [300, 20, 420, 200],
     "type": 102, "score": 0.75, "is_anonymised": True, "type_label": "person",
     "color": [0, 9, 128]},
    {"id": 1, "parent_image": "solo.jpg", "offset": [310, 25], "bbox": [310, 25, 350, 60],
     "type": 103, "score": 0.5, "is_anonymised": False, "type_label": "face",
     "color": [0, 9, 160]},
]  # fmt: skip
SOLO: dict[str, Any] = {
    "id": "solo.jpg", "detections": SOLO_DETECTIONS, "size": [240, 640], "duration": 0.25,
    "filename": "solo.jpg", "folder": None,
}  # fmt: skip


def _solo_rows(source: str, **changes: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Expected frames row and detection rows of SOLO as written to ``source``.

    ``size`` [240, 640] is [height, width]: the boxes reach x = 420 > 240 (SPEC 2.3).
    ``changes``: ``det<i>_<column>`` or ``frame_<column>`` overrides.
    """
    media = posixpath.join(posixpath.dirname(source), "solo.jpg")  # folder-qualified
    frame = {"source": source, "media": media, "frame": None, "detections": 2,
             "width": 640, "height": 240, "size_order": "hw", "size_order_source": "bbox",
             "duration": 0.25, "chunk_start": None, "chunk_end": None}  # fmt: skip
    detections = []
    for index, det in enumerate(SOLO_DETECTIONS):
        x1, y1, x2, y2 = (float(v) for v in det["bbox"])
        detections.append(
            {"source": source, "media": media, "frame": None, "detection_index": index,
             "detection_id": det["id"], "type": det["type"], "type_label": det["type_label"],
             "type_name": det["type_label"], "score": det["score"],
             "is_anonymised": det["is_anonymised"],
             "x1": x1, "y1": y1, "x2": x2, "y2": y2, "offset_x": x1, "offset_y": y1,
             "color": det["color"], "frame_width": 640, "frame_height": 240}
        )  # fmt: skip
    for key, value in changes.items():
        target, column = key.split("_", 1)
        if target == "frame":
            frame[column] = value
        else:
            detections[int(target.removeprefix("det"))][column] = value
    return frame, detections


def _solo(**top: Any) -> dict[str, Any]:
    return json.loads(json.dumps({**SOLO, **top}))


def _write(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def _png_cases(c: Corpus, plain: bytes, rgb: np.ndarray, jpeg: bytes) -> None:
    """PNG files that must each give one error row (instance masks unless named otherwise)."""
    root = c.mixed
    height, width = rgb.shape[:2]
    size = len(plain)
    idat_at, idat_length = find_chunk(plain, b"IDAT")
    offsets = sorted({1, 7, 8, 20, 32, 33, 37, idat_at + 20, idat_at + idat_length // 2,
                      size - 16, size - 12, size - 8, size - 1})  # fmt: skip
    for offset in offsets:
        rel = _write(root, f"bad/png/trunc-{offset:05d}_ins_maks.png", plain[:offset])
        if offset < len(SIGNATURE):
            c.must_fail(rel, Row("decode", "not_png", says="not a PNG file"))
        else:
            c.must_fail(rel, Row("decode", "truncated", says="truncated"))

    def fail(name: str, data: bytes, row: Row) -> None:
        c.must_fail(_write(root, f"bad/png/{name}", data), row)

    fail("crc-ihdr_ins_maks.png", flip_crc(plain, b"IHDR"), Row("decode", "corrupt", says="CRC"))
    fail("crc-idat_ins_maks.png", flip_crc(plain, b"IDAT"),
         Row("decode", "corrupt", says=f"'IDAT' at offset {idat_at} has a bad CRC"))  # fmt: skip
    fail("crc-iend_ins_maks.png", flip_crc(plain, b"IEND"),
         Row("decode", "corrupt", says="'IEND'"))  # fmt: skip
    # The deflate stream's header broken, CRCs recomputed: on both decoders' paths.
    idat = chunk_data(plain, b"IDAT")
    fail("zlib-header_ins_maks.png", replace_chunk(plain, b"IDAT", b"\x00" + idat[1:]),
         Row("decode", "corrupt", says="could not be decoded"))  # fmt: skip
    interlaced = encode(rgb, RGB, interlace=True)
    broken = b"\x00" + chunk_data(interlaced, b"IDAT")[1:]
    fail("zlib-header-interlaced_ins_maks.png", replace_chunk(interlaced, b"IDAT", broken),
         Row("decode", "corrupt", says="could not be decoded"))  # fmt: skip
    fail(
        "huge-ihdr_ins_maks.png",
        with_size(plain, 100_000, 100_000),
        Row("decode", "too_large", says="100000x100000 = 10000000000 pixels, over the limit"),
    )
    fail("zero-width_ins_maks.png", with_size(plain, 0, height),
         Row("decode", "corrupt", says=f"impossible size 0x{height}"))  # fmt: skip
    depth = bytearray(chunk_data(plain, b"IHDR"))
    depth[8] = 4  # RGB at 4 bits per sample does not exist
    fail("bad-depth_ins_maks.png", replace_chunk(plain, b"IHDR", bytes(depth)),
         Row("decode", "corrupt", says="colour type 2 with bit depth 4"))  # fmt: skip
    fail("taller_ins_maks.png", with_size(plain, width, height + 1),
         Row("decode", "corrupt", says="could not be decoded"))  # fmt: skip
    # Plain RGB whose complete deflate stream holds only half of the rows (libspng's path).
    fail("short-rows-rgb_ins_maks.png", with_size(encode(rgb[: height // 2], RGB), width, height),
         Row("decode", "corrupt", says="could not be decoded"))  # fmt: skip
    fail("no-idat_ins_maks.png", SIGNATURE + ihdr(5, 5, 8, RGB, False) + chunk(b"IEND", b""),
         Row("decode", "corrupt", says="no IDAT"))  # fmt: skip
    lying_text = struct.pack(">I", 0x7FFF_FFF0) + b"tEXt" + b"Comment\x00" + b"x" * 64
    fail("text-length-lies_ins_maks.png", insert_before(plain, b"IDAT", [lying_text]),
         Row("decode", "truncated", says="inside chunk b'tEXt'"))  # fmt: skip
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)  # 64 MiB of text in a 64 KB zTXt chunk
    fail("ztxt-bomb_ins_maks.png",
         encode(rgb, RGB, before_idat=[chunk(b"zTXt", b"Comment\x00\x00" + bomb)]),
         Row("decode", "too_large", says="zTXt chunk at offset 33 inflates"))  # fmt: skip
    fail("itxt-bomb_bin_mask.png",
         encode(rgb[:, :, 0], GREY, before_idat=[
             chunk(b"iTXt", b"Comment\x00\x01\x00en\x00Kommentar\x00" + bomb)]),
         Row("decode", "too_large", says="iTXt chunk at offset 33 inflates"))  # fmt: skip
    # A 1x1 PNG whose image data inflates to 64 MiB: refused after the slack, not inflated.
    bomb_stream = zlib.compress(b"\x00" * (64 << 20), 9)
    bomb = SIGNATURE + ihdr(1, 1, 8, RGB, False) + chunk(b"IDAT", bomb_stream)
    fail("data-bomb_ins_maks.png", bomb + chunk(b"IEND", b""),
         Row("decode", "too_large", says="beyond the 4 bytes its 1x1 pixels need"))  # fmt: skip
    fail("apng_ins_maks.png", apng([rgb, rgb[::-1].copy()]),
         Row("decode", "animated", says="animated PNG"))  # fmt: skip
    grey = rgb[:, :, 1].astype(np.uint16) * 256  # 16-bit values that are no widened 8-bit values
    fail("grey16-not-widened_ins_maks.png", encode(grey, GREY, bit_depth=16),
         Row("decode", "unsupported", says="not widened 8-bit values"))  # fmt: skip
    fail("zero-bytes_ins_maks.png", b"", Row("decode", "not_png", says="an empty file"))
    fail("jpeg_ins_maks.png", jpeg, Row("decode", "not_png", says="a JPEG"))
    fail("text_bin_mask.png", b"this is not a mask\n", Row("decode", "not_png", says="text"))
    fail("json_ins_mask.png", b'{"detections": []}', Row("decode", "not_png", says="JSON"))


def _flavour_cases(c: Corpus, rgb: np.ndarray) -> None:
    """Valid PNG flavours of one mask: processed to the plain version's statistics."""
    root = c.mixed
    rng = np.random.default_rng(5)
    alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)  # SPEC 2.1: alpha is ignored
    indices, palette = to_palette(rgb)
    big_text = [text_chunk("Comment", 8 << 20)]
    variants = {
        "interlaced": (encode(rgb, RGB, interlace=True), "rgb8"),
        "palette": (encode(indices, PALETTE, palette=palette), "palette8"),
        "palette-interlaced": (encode(indices, PALETTE, palette=palette, interlace=True),
                               "palette8"),
        "palette-trns": (encode(indices, PALETTE, palette=palette,
                                transparency=bytes(range(len(palette)))), "palette8"),
        "rgba": (encode(np.dstack([rgb, alpha]), RGBA), "rgba8"),
        "rgba-interlaced": (encode(np.dstack([rgb, alpha]), RGBA, interlace=True), "rgba8"),
        "text-8mib": (encode(rgb, RGB, before_idat=big_text), "rgb8"),
        "text-8mib-interlaced": (encode(rgb, RGB, interlace=True, before_idat=big_text), "rgb8"),
        "bytes-after-iend": (encode(rgb, RGB, after_iend=b"trailing garbage" * 64), "rgb8"),
    }  # fmt: skip
    plain = _write(root, "bad/flavours/plain_ins_maks.png", encode(rgb, RGB))
    c.expected[plain] = []
    for name, (data, mode) in variants.items():
        rel = _write(root, f"bad/flavours/{name}_ins_maks.png", data)
        c.expected[rel] = []
        c.flavours[rel] = (plain, mode)
    # 16-bit colour, every value an 8-bit value widened (v * 257): its own test.
    rel = _write(root, "bad/flavours/rgb16_ins_maks.png",
                 encode(rgb.astype(np.uint16) * 257, RGB, bit_depth=16))  # fmt: skip
    c.separate[rel] = []
    c.flavours[rel] = (plain, "rgb16")

    # Grey masks mean (v, v, v); under v26 such colours are invalid (R != 0): a warning each.
    grey = rgb[:, :, 1]
    invalid = [Row("validate", "invalid_pixels", "warning", "invalid under encoding v26")]
    grey_plain = _write(root, "bad/flavours/grey-as-rgb_ins_maks.png",
                        encode(np.dstack([grey] * 3), RGB))  # fmt: skip
    c.expected[grey_plain] = invalid
    grey_variants = {
        "grey8": (encode(grey, GREY), "grey8"),
        "grey8-interlaced": (encode(grey, GREY, interlace=True), "grey8"),
        "grey16-widened": (encode(grey.astype(np.uint16) * 257, GREY, bit_depth=16), "grey16"),
        "grey-alpha8": (encode(np.dstack([grey, alpha]), GREY_ALPHA), "grey+alpha8"),
    }
    for name, (data, mode) in grey_variants.items():
        rel = _write(root, f"bad/flavours/{name}_ins_maks.png", data)
        c.expected[rel] = invalid
        c.flavours[rel] = (grey_plain, mode)


def _short_idat_cases(c: Corpus, rgb: np.ndarray) -> None:
    """Complete files (valid CRCs, IEND) whose deflate stream ends before the declared image:
    the rows it lacks must not be silently decoded as background (SPEC 5)."""
    height, width = rgb.shape[:2]
    indices, palette = to_palette(rgb)
    cases = {
        "palette-half-rows": with_size(encode(indices[: height // 2], PALETTE, palette=palette),
                                       width, height),
        "interlaced-one-row-short": with_size(encode(rgb, RGB, interlace=True), width,
                                              height + 1),
        "grey16-one-row-short": with_size(
            encode(rgb[:, :, 1].astype(np.uint16) * 257, GREY, bit_depth=16), width, height + 1
        ),
    }  # fmt: skip
    for name, data in cases.items():
        rel = _write(c.mixed, f"bad/short-idat/{name}_ins_maks.png", data)
        c.separate[rel] = [Row("decode", "truncated|corrupt")]


def _json_cases(c: Corpus) -> None:
    """Standalone image metadata (no mask beside it)."""
    root = c.mixed

    def fail(name: str, data: bytes, row: Row) -> None:
        c.must_fail(_write(root, f"bad/json/{name}", data), row)

    text = json.dumps(SOLO)
    fail("not-utf8.json", text.replace("solo.jpg", "s\u00f6lo.jpg").encode("latin-1"),
         Row("decode", "json_encoding", says="not UTF-8"))  # fmt: skip
    fail("utf16.json", text.encode("utf-16"), Row("decode", "json_encoding", says="not UTF-8"))
    fail("invalid.json", text[: len(text) // 2].encode(),
         Row("decode", "json_syntax", says="invalid JSON"))  # fmt: skip
    fail("zero-bytes.json", b"", Row("decode", "json_syntax", says="invalid JSON"))
    depth = 100_000
    fail("nested.json", b'{"detections": ' + b"[" * depth + b"]" * depth + b"}",
         Row("decode", "json_syntax", says="nested too deeply"))  # fmt: skip
    over = json.dumps(_solo(id="x" * JSON_CAP)).encode()
    fail("over-cap.json", over,
         Row("decode", "json_too_large", says=f"JSON of {len(over)} bytes exceeds the cap of "
                                              f"{JSON_CAP}"))  # fmt: skip
    empty_objects = b'{"detections": [' + b",".join([b"{}"] * 300_000) + b"]}"
    complex_row = Row("decode", "json_too_complex", says="up to 300002 objects and arrays, over")
    fail("empty-objects.json", empty_objects, complex_row)
    many = json.dumps(_solo(detections=[{}] * (MAX_DETECTIONS + 1))).encode()
    many_row = Row("validate", "too_many_detections", says=f"more than {MAX_DETECTIONS} detections")
    fail("many-detections.json", many, many_row)
    fail("array.json", b"[1, 2]", Row("validate", "bad_metadata", says="must be a JSON object"))
    fail("no-detections.json", json.dumps({"id": "a.jpg", "size": [10, 20]}).encode(),
         Row("validate", "bad_metadata", says="no 'detections' list"))  # fmt: skip
    fail("detections-string.json", json.dumps(_solo(detections="none")).encode(),
         Row("validate", "bad_detections", says="'detections' is str, not a list"))  # fmt: skip

    # Processed: unusable values become nulls, each with one warning.
    def warn(name: str, document: Any, row: Row | None) -> None:
        text = json.dumps(document)  # writes NaN / Infinity literals as Python does
        c.expected[_write(root, f"bad/json/{name}", text.encode())] = [row] if row else []

    nan = _solo()
    nan["detections"][1]["score"] = math.nan
    warn("nan-score.json", nan, Row("validate", "bad_score", "warning", "score nan not in 0..1"))
    infinite = _solo(duration=math.inf)
    warn("infinite-duration.json", infinite,
         Row("validate", "bad_field", "warning", "duration is not a finite number"))  # fmt: skip
    typed = _solo()
    typed["detections"][0]["score"] = "0.75"
    warn("score-string.json", typed, Row("validate", "bad_score", "warning", "score '0.75'"))
    flag = _solo()
    flag["detections"][1]["is_anonymised"] = "yes"
    warn("anonymised-string.json", flag,
         Row("validate", "bad_field", "warning", "is_anonymised not a boolean"))  # fmt: skip
    warn(
        "size-string.json",
        _solo(size="big"),
        Row("validate", "bad_size", "warning", "size 'big' is not two positive integers"),
    )
    missing = _solo()
    missing["detections"][1] = {"id": 1}
    warn("missing-fields.json", missing, None)
    near = json.dumps(
        _solo(detections=[dict(SOLO_DETECTIONS[0], id=i) for i in range(NEAR_CAP_DETECTIONS)])
    ).encode()
    assert JSON_CAP - 20_000 < len(near) <= JSON_CAP, len(near)
    c.expected[_write(root, "bad/json/near-cap.json", near)] = []


def _image_copy_cases(c: Corpus) -> None:
    """Copies of image 0's files: with a NaN score, beside a broken mask, with escaping paths."""
    good, root = c.good, c.mixed
    instance, binary, metadata = (good / rel for rel in IMAGE0)
    document = json.loads(metadata.read_text())

    nan = json.loads(json.dumps(document))
    nan["detections"][0]["score"] = math.nan
    for rel in IMAGE0[:2]:
        c.expected[_write(root, f"bad/nan/{Path(rel).name}", (good / rel).read_bytes())] = []
    rel = _write(root, "bad/nan/street.view-0001.json", json.dumps(nan).encode())
    c.expected[rel] = [Row("validate", "bad_score", "warning", "detection 0: score nan")]

    c.must_fail(
        _write(root, "bad/mixed/street.view-0001_ins_maks.png",
               flip_crc(instance.read_bytes(), b"IDAT")),
        Row("decode", "corrupt", says="bad CRC"),
    )  # fmt: skip
    c.expected[_write(root, "bad/mixed/street.view-0001_bin_mask.png", binary.read_bytes())] = []
    c.expected[_write(root, "bad/mixed/street.view-0001.json", metadata.read_bytes())] = []

    # Metadata naming places outside the output root: they are values, never write targets.
    absolute = root.parent / "escaped-absolute" / "evil.jpg"
    escaping = dict(document, folder="../../x", filename=str(absolute), id="../../../../x/y.jpg")
    c.outside += [absolute.parent, root.parent / "x", root.parent.parent / "x",
                  Path.cwd().parent.parent / "x"]  # fmt: skip
    c.expected[_write(root, "bad/escape/evil_ins_maks.png", instance.read_bytes())] = []
    c.expected[_write(root, "bad/escape/evil.json", json.dumps(escaping).encode())] = []


def _video_cases(c: Corpus) -> None:
    root = c.mixed
    frames = json.loads((c.good / CHUNK0).read_text())
    ten = frames[:10]
    text = json.dumps(ten)

    def fail(name: str, data: bytes, row: Row) -> None:
        c.must_fail(_write(root, f"bad/videos/{name}", data), row)

    fail("trunc-0-9.json", text[: len(text) // 2].encode(),
         Row("decode", "json_syntax", says="invalid JSON"))  # fmt: skip
    fail("empty-0-9.json", b"", Row("decode", "json_syntax", says="invalid JSON"))
    fail(
        "object-0-9.json",
        json.dumps({"frames": ten}).encode(),
        Row("validate", "bad_video_metadata", says="must be a JSON array of frames, got dict"),
    )
    fail("latin1-0-9.json", text.replace('"face"', '"f\u00e4ce"').encode("latin-1"),
         Row("decode", "json_encoding", says="not UTF-8"))  # fmt: skip
    nan = json.loads(json.dumps(frames))
    first = next(f for f in nan if f["detections"])
    first["detections"][0]["score"] = math.nan
    c.expected[_write(root, "bad/videos/nan-0-99.json", json.dumps(nan).encode())] = [
        Row("validate", "bad_score", "warning", f"frame {first['id']}: detection 0: score nan")
    ]
    wrong = [dict(f, id=str(f["id"])) for f in ten]
    c.expected[_write(root, "bad/videos/wrongtypes-0-9.json", json.dumps(wrong).encode())] = [
        Row("validate", "bad_frame", "warning", "10x frame at position 0 has no integer id")
    ]


def build_corpus(base: Path) -> Corpus:
    good = base / "good"
    tree = make_celantur_tree(good / "images", seed=3, images=12)
    make_video_fleet(good / "videos", seed=3, videos=2, frames_per_video=300, chunk_frames=100,
                     quirks=False)  # fmt: skip
    mixed = base / "mixed"
    shutil.copytree(good, mixed)
    c = Corpus(good, mixed)
    plain_file = (good / IMAGE0[0]).read_bytes()
    rgb = decode_rgb(plain_file)
    jpeg = (good / "images" / (tree.images[0].image_path or "")).read_bytes()
    _png_cases(c, encode(rgb, RGB), rgb, jpeg)
    _flavour_cases(c, rgb)
    _short_idat_cases(c, rgb)
    _json_cases(c)
    _image_copy_cases(c)
    _video_cases(c)
    return c


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    base = tmp_path_factory.mktemp("bad-inputs")
    c = build_corpus(base)
    good_out, mixed_out = base / "out-good", base / "out-mixed"
    good_code = main(["celantur", str(c.good), str(good_out), "--scheduler", "sync",
                      "--no-progress", *ARGS])  # fmt: skip
    around = base.parent
    before = _files(around)
    mixed_code = main(["celantur", str(c.mixed), str(mixed_out), "--scheduler", "sync",
                       "--no-progress", *ARGS])  # fmt: skip
    new_files = frozenset(_files(around) - before)
    return Runs(c, good_out, mixed_out, good_code, mixed_code, new_files)


def _errors_by_path(out: Path) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in read_output(out, "errors"):
        grouped.setdefault(row["path"], []).append(row)
    return grouped


def _key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def _rows_of(out: Path, table: str, column: str, value: str) -> list[dict[str, Any]]:
    return [row for row in read_output(out, table) if row[column] == value]


# ---------------------------------------------------------------------------------------------
# Tests on the one corpus run
# ---------------------------------------------------------------------------------------------


def test_exit_codes_and_accounting(runs: Runs) -> None:
    assert runs.good_code == 0
    assert read_output(runs.good_out, "errors") == []
    assert runs.mixed_code == 3
    record = json.loads((runs.mixed_out / "_run.json").read_text())
    accounting = record["accounting"]
    failed = {row["path"] for row in read_output(runs.mixed_out, "errors")
              if row["severity"] == "error"}  # fmt: skip
    assert accounting["in_errors"] == len(failed)
    assert accounting["found"] == accounting["in_tables"] + accounting["in_errors"]


def test_every_bad_input_gives_exactly_its_error_rows(runs: Runs) -> None:
    """The exact errors/ rows of every path (good paths: none), bar the cases tested apart."""
    found = _errors_by_path(runs.mixed_out)
    separate = set(runs.corpus.separate)
    actual = {
        path: sorted((r["stage"], r["error"], r["severity"]) for r in rows)
        for path, rows in found.items()
        if path not in separate
    }
    expected = {
        path: sorted((r.stage, r.error, r.severity) for r in rows)
        for path, rows in runs.corpus.expected.items()
        if rows
    }
    assert actual == expected
    for path, rows in runs.corpus.expected.items():
        got_rows = sorted(found.get(path, []), key=lambda r: r["error"])
        for want, got in zip(sorted(rows, key=lambda r: r.error), got_rows, strict=True):
            assert got["message"].startswith(f"{path}: "), got
            assert want.says in got["message"], (path, want.says, got["message"])


def test_failed_inputs_are_in_no_other_table(runs: Runs) -> None:
    failed = {path for path, rows in runs.corpus.expected.items()
              if any(r.severity == "error" for r in rows)}  # fmt: skip
    assert failed
    masks = {row["path"] for row in read_output(runs.mixed_out, "masks")}
    sources = {row["source"] for t in ("detections", "frames", "chunks")
               for row in read_output(runs.mixed_out, t)}  # fmt: skip
    assert failed.isdisjoint(masks | sources)


def test_good_inputs_rows_equal_a_clean_run(runs: Runs) -> None:
    for table in ROW_TABLES:
        clean = read_output(runs.good_out, table)
        mixed = [
            row for row in read_output(runs.mixed_out, table)
            if not str(row.get("path") or row.get("source") or row.get("media")).startswith("bad/")
        ]  # fmt: skip
        assert clean, table
        assert sorted(map(_key, mixed)) == sorted(map(_key, clean)), table


def _stats(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in MASK_STATS}


def _segments(out: Path, path: str) -> list[str]:
    rows = _rows_of(out, "instances", "path", path)
    return sorted(_key({k: v for k, v in r.items() if k not in ("path", "stem")}) for r in rows)


@pytest.mark.parametrize("variant", ["flavours", "rgb16"])
def test_png_flavours_give_the_plain_masks_statistics(runs: Runs, variant: str) -> None:
    """Interlaced, palette (also with tRNS), RGBA with random alpha, grey 8/16-bit, grey+alpha,
    an 8 MiB tEXt chunk, bytes after IEND; and (separately) 16-bit RGB whose values are 8-bit
    values widened: the same statistics as the plain RGB version."""
    masks = {row["path"]: row for row in read_output(runs.mixed_out, "masks")}
    errors = _errors_by_path(runs.mixed_out)
    cases = {
        rel: plain
        for rel, plain in runs.corpus.flavours.items()
        if (rel in runs.corpus.separate) == (variant == "rgb16")
    }
    assert cases
    for rel, (plain, mode) in cases.items():
        assert rel in masks, (rel, errors.get(rel))
        assert masks[rel]["png_mode"] == mode
        assert _stats(masks[rel]) == _stats(masks[plain]), rel
        assert _segments(runs.mixed_out, rel) == _segments(runs.mixed_out, plain), rel
        plain_messages = [r["message"].split(": ", 1)[1] for r in errors.get(plain, [])]
        assert [r["message"].split(": ", 1)[1] for r in errors.get(rel, [])] == plain_messages


def test_plain_flavour_equals_the_brute_force_reference(runs: Runs) -> None:
    rel = "bad/flavours/plain_ins_maks.png"
    expected = reference_segments((runs.corpus.mixed / rel).read_bytes())
    rows = _rows_of(runs.mixed_out, "instances", "path", rel)
    assert len(rows) == len(expected) > 3
    for row in rows:
        stats = expected[(row["r"], row["g"], row["b"])]
        assert {k: row[k] for k in stats} == pytest.approx(stats)


def test_truncated_image_data_is_never_decoded_as_background(runs: Runs) -> None:
    """Palette / interlaced / 16-bit grey PNGs (Pillow's path) whose complete deflate stream
    holds fewer rows than IHDR declares: one decode error each, like libspng's path gives."""
    errors = _errors_by_path(runs.mixed_out)
    masks = {row["path"] for row in read_output(runs.mixed_out, "masks")}
    cases = sorted(p for p in runs.corpus.separate if p.startswith("bad/short-idat/"))
    assert len(cases) == 3

    def outcome(rel: str) -> tuple[bool, list[tuple[str, str, str]]]:
        rows = [(r["stage"], r["error"], r["severity"]) for r in errors.get(rel, [])]
        # Either code names the problem; what matters is one error row and no mask row.
        rows = [(s, "truncated|corrupt" if e in ("truncated", "corrupt") else e, v)
                for s, e, v in rows]  # fmt: skip
        return rel in masks, rows

    assert {rel: outcome(rel) for rel in cases} == {
        rel: (False, [("decode", "truncated|corrupt", "error")]) for rel in cases
    }


def test_unusable_metadata_values_become_nulls(runs: Runs) -> None:
    out = runs.mixed_out
    cases = {
        "bad/json/nan-score.json": {"det1_score": None},
        "bad/json/infinite-duration.json": {"frame_duration": None},
        "bad/json/score-string.json": {"det0_score": None},
        "bad/json/anonymised-string.json": {"det1_is_anonymised": None},
        "bad/json/size-string.json": {
            "frame_width": None, "frame_height": None, "frame_size_order": None,
            "frame_size_order_source": None, "det0_frame_width": None, "det0_frame_height": None,
            "det1_frame_width": None, "det1_frame_height": None,
        },
        "bad/json/missing-fields.json": {
            "det1_type": None, "det1_type_label": None, "det1_type_name": None,
            "det1_score": None, "det1_is_anonymised": None, "det1_x1": None, "det1_y1": None,
            "det1_x2": None, "det1_y2": None, "det1_offset_x": None, "det1_offset_y": None,
            "det1_color": None,
        },
    }  # fmt: skip
    for source, changes in cases.items():
        frame, detections = _solo_rows(source, **changes)
        assert _rows_of(out, "frames", "source", source) == [frame], source
        got = sorted(_rows_of(out, "detections", "source", source),
                     key=lambda r: r["detection_index"])  # fmt: skip
        assert got == detections, source
    near = _rows_of(out, "detections", "source", "bad/json/near-cap.json")
    assert sorted(r["detection_id"] for r in near) == list(range(NEAR_CAP_DETECTIONS))


#: Columns that say where a file sits; they differ between copies in other folders.
WHERE = ("path", "folder", "scaled_path", "metadata_path")


def _without(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in names}


def test_nan_score_gives_a_warning_and_a_null_score(runs: Runs) -> None:
    """Image 0's files copied, its metadata's first score NaN: rows equal the original's, with
    that score null."""
    good, out = runs.good_out, runs.mixed_out
    instance, binary, metadata = IMAGE0
    copy = {rel: f"bad/nan/{Path(rel).name}" for rel in IMAGE0}
    for rel in (instance, binary):
        want = _without(_rows_of(good, "masks", "path", rel)[0], *WHERE)
        got = _rows_of(out, "masks", "path", copy[rel])
        assert [_without(r, *WHERE) for r in got] == [want]
    want_segments = []
    for row in _rows_of(good, "instances", "path", instance):
        row = _without(row, *WHERE)
        if row["detection_index"] == 0:
            row["score"] = None
        want_segments.append(_key(row))
    got_segments = [_key(_without(r, *WHERE))
                    for r in _rows_of(out, "instances", "path", copy[instance])]  # fmt: skip
    assert any(json.loads(k)["detection_index"] == 0 for k in want_segments)
    assert sorted(got_segments) == sorted(want_segments)
    want_detections = []
    for row in _rows_of(good, "detections", "source", metadata):
        row = _without(row, "source", "media")
        if row["detection_index"] == 0:
            row["score"] = None
        want_detections.append(_key(row))
    got_detections = [_key(_without(r, "source", "media"))
                      for r in _rows_of(out, "detections", "source", copy[metadata])]  # fmt: skip
    assert sorted(got_detections) == sorted(want_detections)
    frames = [
        _without(r, "source", "media") for r in _rows_of(out, "frames", "source", copy[metadata])
    ]
    assert frames == [
        _without(r, "source", "media") for r in _rows_of(good, "frames", "source", metadata)
    ]


def test_a_broken_mask_leaves_its_neighbours_processed(runs: Runs) -> None:
    good, out = runs.good_out, runs.mixed_out
    _, binary, metadata = IMAGE0
    want = _without(
        _rows_of(good, "masks", "path", binary)[0], "path", "folder", "scaled_path", "metadata_path"
    )
    want["bin_mismatch_pixels"] = None  # no instance mask to compare with
    got = _rows_of(out, "masks", "path", "bad/mixed/street.view-0001_bin_mask.png")
    assert [_without(r, *WHERE) for r in got] == [want]
    for table in ("detections", "frames"):
        mine = _rows_of(out, table, "source", "bad/mixed/street.view-0001.json")
        want_rows = sorted(
            _key(_without(r, "source", "media")) for r in _rows_of(good, table, "source", metadata)
        )
        got_rows = sorted(_key(_without(r, "source", "media")) for r in mine)
        assert got_rows == want_rows, table


def test_video_chunk_with_nan_score_is_tabled_with_a_null_score(runs: Runs) -> None:
    good, out = runs.good_out, runs.mixed_out
    source = "bad/videos/nan-0-99.json"
    frames = json.loads((runs.corpus.good / CHUNK0).read_text())
    nan_frame = next(f["id"] for f in frames if f["detections"])
    want = []
    for row in _rows_of(good, "detections", "source", CHUNK0):
        row = _without(row, "source", "media")
        if (row["frame"], row["detection_index"]) == (nan_frame, 0):
            row["score"] = None
        want.append(_key(row))
    got = [_key(_without(r, "source", "media")) for r in _rows_of(out, "detections", "source",
                                                                  source)]  # fmt: skip
    assert len(got) == len(want) > 0
    assert sorted(got) == sorted(want)
    assert {r["media"] for r in _rows_of(out, "detections", "source", source)} == {"bad/videos/nan"}
    chunk_row = _rows_of(out, "chunks", "source", "bad/videos/wrongtypes-0-9.json")
    assert [_without(r, "source") for r in chunk_row] == [
        {"media": "bad/videos/wrongtypes", "chunk_start": 0, "chunk_end": 9, "frames": 0,
         "detections": 0, "missing_frames": 10, "duplicate_frames": 0, "out_of_range_frames": 0}
    ]  # fmt: skip


def test_metadata_paths_never_become_write_targets(runs: Runs) -> None:
    stray = sorted(str(p) for p in runs.new_files if runs.mixed_out not in p.parents)
    assert stray == []
    for place in runs.corpus.outside:
        assert not place.exists(), place
    frames = _rows_of(runs.mixed_out, "frames", "source", "bad/escape/evil.json")
    assert [r["media"] for r in frames] == [str(runs.corpus.mixed.parent / "escaped-absolute" /
                                                "evil.jpg")]  # fmt: skip
    scaled = {p.relative_to(runs.mixed_out).as_posix() for p in runs.new_files
              if "escape" in p.as_posix()}  # fmt: skip
    # scaled/<folder>/<digest of the rescaled bytes>/<name>, inside the output
    assert [re.sub("/[0-9a-f]{16}/", "/<digest>/", p) for p in scaled] == [
        "scaled/bad/escape/<digest>/evil_ins_maks.png"
    ]


# ---------------------------------------------------------------------------------------------
# Values no table column can hold: one input each, beside two good images
# ---------------------------------------------------------------------------------------------

_UNHOLDABLE: dict[str, tuple[Any, str, str]] = {
    # image metadata: invalid Unicode (a lone surrogate escape), integers beyond int64 / int32
    "surrogate-id.json": (_solo(id="\ud800.jpg", filename=None), "warning", "bad_text"),
    "huge-detection-id.json": (
        _solo(detections=[dict(SOLO_DETECTIONS[0], id=10**30)]), "warning", "bad_field"),
    "huge-type.json": (_solo(detections=[dict(SOLO_DETECTIONS[0], type=2**64)]), "warning",
                       "bad_field"),
    "huge-size.json": (_solo(size=[10**10, 5]), "warning", "bad_size"),
    # video chunks: the same problems in the typed (msgspec) path
    "surrogate-label-0-0.json": ([{"id": 0, "detections": [{"type_label": "\ud800"}]}],
                                 "warning", "bad_text"),
    "huge-frame-id-0-0.json": ([{"id": 2**63, "detections": []}], "warning", "bad_frame"),
    "huge-negative-frame-id-0-0.json": ([{"id": -(2**63) - 1, "detections": []}], "warning",
                                        "bad_frame"),
    "huge-size-0-0.json": ([{"id": 0, "size": [10**10, 5], "detections": []}], "warning",
                           "bad_size"),
    "size-over-int32-0-0.json": ([{"id": 0, "size": [2**31, 5], "detections": []}], "warning",
                                 "bad_size"),
    "huge-detection-id-0-0.json": ([{"id": 0, "detections": [{"id": 2**63}]}], "warning",
                                   "bad_field"),
    "huge-type-0-0.json": ([{"id": 0, "detections": [{"type": 2**64 - 1}]}], "warning",
                           "bad_field"),
    "huge-bbox.json": (_solo(detections=[dict(SOLO_DETECTIONS[0], bbox=[10**400, 0, 1, 1])]),
                       "warning", "bad_bbox"),
    "huge-bbox-0-0.json": ([{"id": 0, "detections": [{"bbox": [10**400, 0, 1, 1]}]}], "warning",
                           "bad_bbox"),
    # a chunk name whose frame numbers (23 digits) no frame column can hold
    "cam-12345678901234567890123-12345678901234567890124.json": ([], "error", "bad_chunk_name"),
    "cam-0-99999999999999999999.json": ([], "error", "bad_chunk_name"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_UNHOLDABLE))
def test_values_no_column_can_hold_fail_one_input_not_the_run(name: str, tmp_path: Path) -> None:
    """JSON that parses but holds a value Parquet cannot store (a lone UTF-16 surrogate, an
    integer beyond the column's range, in the file or in its name): exactly its one errors/ row
    with a named code (an error, or a warning with the file still tabled), the run commits, the
    good images are all processed."""
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=2, write_images=False)
    source = f"bad/{name}"
    document, severity, code = _UNHOLDABLE[name]
    text = json.dumps(document).replace(str(10**400), "1" + "0" * 400)  # ASCII: \ud800 escaped
    _write(tree.root, source, text.encode())
    out = tmp_path / "out"
    exit_code = main(["celantur", str(tree.root), str(out), "--scheduler", "sync",
                      "--no-progress", "--encoding", "v26"])  # fmt: skip
    assert exit_code == (3 if severity == "error" else 0)
    assert (out / "_run.json").exists()
    masks = {row["path"] for row in read_output(out, "masks")}
    assert masks == {p for i in tree.images for p in (i.instance_path, i.binary_path) if p}
    rows = [(r["severity"], r["error"], r["message"]) for r in read_output(out, "errors")]
    assert [(s, e) for s, e, _ in rows] == [(severity, code)], rows
    assert rows[0][2].startswith(f"{source}: ")
    tabled = {row["source"] for t in ("frames", "chunks") for row in read_output(out, t)}
    assert (source in tabled) == (severity == "warning")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names of any bytes")
def test_file_names_of_any_bytes_are_processed_under_escaped_paths(tmp_path: Path) -> None:
    """Names that are not UTF-8 (bytes 0xff, 0xfe) are inputs like any other: processed, their
    paths in every table written with each such byte as the text ``\\xNN``, rescaled masks
    written under that text; the same rows as the same files under valid names."""
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=1, write_images=False)
    image = tree.images[0]
    root = os.fsencode(tree.root)
    for rel, odd in ((image.instance_path, b"\xffodd_ins_maks.png"),
                     (image.binary_path, b"\xffodd_bin_mask.png"),
                     (image.metadata_path, b"\xffodd.json")):  # fmt: skip
        data = (tree.root / str(rel)).read_bytes()
        _write(tree.root, f"plain/{odd.decode('latin-1')}", data)  # the same file, valid name
        os.makedirs(root + b"/bad", exist_ok=True)
        with open(root + b"/bad/" + odd, "wb") as handle:
            handle.write(data)
    os.makedirs(root + b"/v\xfe")
    with open(root + b"/v\xfe/cam\xff-0-0.json", "wb") as handle:
        handle.write(json.dumps([{"id": 0, "detections": [SOLO_DETECTIONS[0]]}]).encode())
    out = tmp_path / "out"
    code = main(["celantur", str(tree.root), str(out), "--scheduler", "sync", "--no-progress",
                 "--encoding", "v26", "--mask-scale", "50"])  # fmt: skip
    assert code == 0
    assert read_output(out, "errors") == []
    masks = {row["path"]: row for row in read_output(out, "masks")}
    for suffix in ("_ins_maks.png", "_bin_mask.png"):
        odd, plain = masks[f"bad/\\xffodd{suffix}"], masks[f"plain/\xffodd{suffix}"]
        assert _without(odd, *WHERE, "stem") == _without(plain, *WHERE, "stem")
        assert odd["stem"] == "\\xffodd"
        digest = odd["scaled_path"].split("/")[2]  # scaled/<folder>/<digest>/<name>
        assert odd["scaled_path"] == f"scaled/bad/{digest}/\\xffodd{suffix}"
        assert (out / odd["scaled_path"]).read_bytes() == (out / plain["scaled_path"]).read_bytes()
    frames = {row["source"] for row in read_output(out, "frames")}
    assert {"bad/\\xffodd.json", "v\\xfe/cam\\xff-0-0.json"} <= frames
    chunks = read_output(out, "chunks")
    assert [(r["source"], r["media"]) for r in chunks] == [
        ("v\\xfe/cam\\xff-0-0.json", "v\\xfe/cam\\xff")
    ]


# ---------------------------------------------------------------------------------------------
# Peak RSS of the heavy cases, one one-file tree per subprocess
# ---------------------------------------------------------------------------------------------

_RSS_CHILD = """
import json, resource, sys
code = None
if len(sys.argv) > 1:
    from pipeline.cli import main
    code = main(sys.argv[1:])
else:
    import pipeline, pipeline.cli  # noqa: F401  (the baseline: the interpreter and the package)
# VmHWM is this process image's own peak: Linux carries ru_maxrss over from the forking parent
# across exec, so a child of a big pytest process would report the parent's peak.
with open("/proc/self/status") as status:
    hwm = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")]
print("RSS " + json.dumps({"code": code, "peak_kib": hwm[0]}))
"""
#: The default caps, as a user gets them.
DEFAULT_JSON_CAP = RunOptions(output="-").max_json_bytes
DEFAULT_MAX_PIXELS = RunOptions(output="-").max_pixels
#: The largest square mask the default pixel limit admits.
LIMIT_SIDE = math.isqrt(DEFAULT_MAX_PIXELS)
JSON_HEAVY_CASES = (
    "JSON nested to 16 MiB",
    "1e6 empty detections (3 MB)",
    "13 MB of objects nested 10 deep",
    "16 MiB of full detections (over the container cap)",
    f"{MAX_DETECTIONS} detections in 16 MiB (the detection cap)",
    f"{MAX_DETECTIONS} empty detections",
    f"video chunk of {MAX_DETECTIONS} detections",
    "objects beside the detections (the container cap)",
    "short strings beside the detections (the value cap)",
)
PNG_HEAVY_CASES = (
    "16-bit RGBA 5000x5000 mask",
    "16-bit RGBA 7000x7000 mask",
    f"16-bit grey {LIMIT_SIDE}x{LIMIT_SIDE} mask",
    f"palette {LIMIT_SIDE}x{LIMIT_SIDE} mask",
    f"1-bit grey {LIMIT_SIDE}x{LIMIT_SIDE} binary mask",
    f"16-bit RGBA {LIMIT_SIDE}x{LIMIT_SIDE} binary mask",
    f"interlaced RGBA {LIMIT_SIDE}x{LIMIT_SIDE} mask",
    f"interlaced 16-bit RGBA {LIMIT_SIDE}x{LIMIT_SIDE} binary mask",
    "1x1 PNG inflating to 1 GiB",
)
#: ClearML masks (the pixel and alpha modes, rescaled), run by ``mask-pipeline clearml``.
CLEARML_HEAVY_CASES = {
    f"ClearML 16-bit grey {LIMIT_SIDE}x{LIMIT_SIDE} label mask": "pixel",
    f"ClearML 16-bit grey {LIMIT_SIDE}x{LIMIT_SIDE} alpha mask": "alpha",
}
HEAVY_CASES = (
    "huge IHDR (100000x100000)",
    "valid 3840x2160 mask",
    f"valid {LIMIT_SIDE}x{LIMIT_SIDE} mask (the default pixel limit)",
    *PNG_HEAVY_CASES,
    *JSON_HEAVY_CASES,
    *CLEARML_HEAVY_CASES,
)


def _instances(height: int, width: int, count: int, seed: int) -> np.ndarray:
    """A v26 instance mask with ``count`` rectangles of all four types and overlaps."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    flags = (128, 64, 32, 16, 160, 80)
    for i in range(count):
        h, w = rng.integers(20, min(400, height // 2), 2)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        rgb[y : y + h, x : x + w] = (0, i % 255 + 1, flags[i % len(flags)])
    return rgb


#: A detection with every field, as Celantur writes it (~190 bytes of JSON).
FULL_DETECTION = {
    "id": 0, "parent_image": "x.jpg", "offset": [10, 20], "bbox": [10, 20, 110, 220],
    "type": 102, "score": 0.91234, "is_anonymised": True, "type_label": "person", "color": None,
}  # fmt: skip


def _image_metadata(detections: Any, **more: Any) -> bytes:
    document = {"id": "x.jpg", "detections": detections, "size": [2160, 3840], "duration": 0.5,
                "filename": "x.jpg", "folder": None, **more}  # fmt: skip
    return json.dumps(document).encode()


def _rectangles_rows(
    width: int, height: int, pixel: Callable[[int], bytes]
) -> Callable[[int], bytes]:
    """Rows of a mask of a few rectangles (``pixel(i)`` is rectangle i's packed pixel, 0 the
    background), one row object per distinct row."""
    background = pixel(0) * width
    boxes = [(i, height * i // 9, height * i // 9 + height // 5, width * i // 11,
              width * i // 11 + width // 4) for i in range(1, 8)]  # fmt: skip
    cache: dict[tuple[int, ...], bytes] = {}

    def row(y: int) -> bytes:
        inside = tuple(i for i, top, bottom, _, _ in boxes if top <= y < bottom)
        if inside not in cache:
            line = bytearray(background)
            size = len(pixel(0))
            for i, _, _, left, right in boxes:
                if i in inside:
                    line[left * size : right * size] = pixel(i) * (right - left)
            cache[inside] = bytes(line)
        return cache[inside]

    return row


def _png_heavy_cases() -> list[tuple[str, bytes, str | None]]:
    """Large PNGs of the flavours the fused path does not take, and a 1x1 bomb, in the order
    of :data:`PNG_HEAVY_CASES`."""
    side = LIMIT_SIDE

    def rgba16(i: int) -> bytes:  # v26 colours widened to 16 bits (v * 257)
        return (
            bytes([0, 0, i, i, (16 << i % 4) & 255, (16 << i % 4) & 255, 255, 255])
            if i
            else bytes(8)
        )

    def grey16(i: int) -> bytes:
        return bytes([i * 30, i * 30])

    palette = bytes(c for i in range(8) for c in (0, i, (16 << i % 4) & 255))
    bomb = zlib.compressobj(9)
    stream = (
        bomb.compress(b"\x00\x00\x00\x00")
        + b"".join(bomb.compress(bytes(1 << 20)) for _ in range(1024))
        + bomb.flush()
    )
    return [
        ("x_ins_maks.png", encode_rows(5000, 5000, RGBA, 16, _rectangles_rows(5000, 5000, rgba16)),
         None),
        ("x_ins_maks.png", encode_rows(7000, 7000, RGBA, 16, _rectangles_rows(7000, 7000, rgba16)),
         None),
        ("x_ins_maks.png", encode_rows(side, side, GREY, 16, _rectangles_rows(side, side, grey16)),
         "invalid_pixels"),
        ("x_ins_maks.png", encode_rows(side, side, PALETTE, 8, _rectangles_rows(
            side, side, lambda i: bytes([i])), before_idat=[chunk(b"PLTE", palette)]), None),
        ("x_bin_mask.png", encode_rows(side, side, GREY, 1, lambda y: bytes([0x0F]) * (side // 8)
                                       + bytes([0x80])), None),
        ("x_bin_mask.png", encode_rows(side, side, RGBA, 16, _rectangles_rows(side, side, rgba16)),
         None),
        ("x_ins_maks.png", encode_rows(side, side, RGBA, 8, _rectangles_rows(
            side, side, lambda i: rgba16(i)[::2]), interlace=True), None),
        ("x_bin_mask.png", encode_rows(side, side, RGBA, 16, _rectangles_rows(side, side, rgba16),
                                       interlace=True), None),
        ("x_ins_maks.png", SIGNATURE + ihdr(1, 1, 8, RGB, False) + chunk(b"IDAT", stream)
         + chunk(b"IEND", b""), "too_large"),
    ]  # fmt: skip


def _json_heavy_cases() -> list[tuple[str, bytes, str | None]]:
    """Metadata at and beyond every JSON bound, as (file name, bytes, error code) in the order
    of :data:`JSON_HEAVY_CASES`."""
    depth = (DEFAULT_JSON_CAP - 4096) // 2
    count = (DEFAULT_JSON_CAP - 4096) // (len(json.dumps(FULL_DETECTION)) + 2)
    under_cap = _image_metadata([FULL_DETECTION] * count)
    assert DEFAULT_JSON_CAP - 8192 < len(under_cap) <= DEFAULT_JSON_CAP
    # At the detection cap, each detection as long as 16 MiB allows (a long type_label).
    padding = (DEFAULT_JSON_CAP - 4096) // MAX_DETECTIONS - len(json.dumps(FULL_DETECTION)) - 2
    at_cap = _image_metadata([dict(FULL_DETECTION, type_label="p" * padding)] * MAX_DETECTIONS)
    assert DEFAULT_JSON_CAP - 2**19 < len(at_cap) <= DEFAULT_JSON_CAP, len(at_cap)
    per_frame = MAX_DETECTIONS // 500
    frames = [{"id": f, "size": [2160, 3840], "duration": 0.04,
               "detections": [FULL_DETECTION] * per_frame} for f in range(500)]  # fmt: skip
    nested: Any = 1
    for _ in range(10):
        nested = [{"k": nested}]
    unit = json.dumps(nested, separators=(",", ":")).encode()
    nested_document = b'{"detections": [], "x": [' + b",".join([unit] * (13_000_000 // len(unit)))
    return [
        ("x.json", b"[" * depth + b"]" * depth, "json_too_complex"),
        ("x.json", _image_metadata([{}] * 1_000_000), "json_too_complex"),
        ("x.json", nested_document + b"]}", "json_too_complex"),
        ("x.json", under_cap, "json_too_complex"),
        ("x.json", at_cap, None),
        ("x.json", _image_metadata([{}] * MAX_DETECTIONS), None),
        ("v-0-499.json", json.dumps(frames).encode(), None),
        ("x.json", _image_metadata([], x=[{"a": 0}] * (MAX_JSON_CONTAINERS - 8)), None),
        ("x.json", _image_metadata([], x=["ab"] * (MAX_JSON_VALUES - 64)), None),
    ]


def _heavy_cases() -> dict[str, tuple[str, bytes, str | None]]:
    """name -> (file name, bytes, the one error code expected, or None for a clean run)."""
    uhd = encode(_instances(2160, 3840, 300, seed=1), RGB)
    limit = encode(_instances(LIMIT_SIDE, LIMIT_SIDE, 300, seed=2), RGB)
    side = LIMIT_SIDE

    def label_id(i: int) -> bytes:  # 16-bit label ids, high bytes used too
        return (i * 4099).to_bytes(2, "big")

    grey16 = encode_rows(side, side, GREY, 16, _rectangles_rows(side, side, label_id))
    cases = (
        ("x_ins_maks.png", with_size(uhd, 100_000, 100_000), "too_large"),
        ("x_ins_maks.png", uhd, None),
        ("x_ins_maks.png", limit, None),
        *_png_heavy_cases(),
        *_json_heavy_cases(),
        *[("mask.png", grey16, None) for _ in CLEARML_HEAVY_CASES],
    )
    return dict(zip(HEAVY_CASES, cases, strict=True))


def _clearml_command(source: Path, out: Path, mode: str) -> list[str]:
    """A one-frame ClearML frames document beside ``source/mask.png``, and the command that
    measures it in ``mode``, rescaled to 50 %."""
    frame = {"id": "f", "sources": [{"id": "s", "masks": [{"id": "m", "uri": "mask.png"}]}]}
    (source / "frames.json").write_text(json.dumps(frame))
    return ["clearml", str(source / "frames.json"), str(out), "--scheduler", "sync",
            "--no-progress", "--mode", mode, "--mask-scale", "50"]  # fmt: skip


@pytest.fixture(scope="module")
def peak_rss(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Peak RSS (KiB) of every heavy case and of the baseline, a few processes at a time (the
    machine is shared); each run's exit code and error rows are checked on the way."""
    base = tmp_path_factory.mktemp("rss")
    commands: dict[str, list[str]] = {"baseline": []}
    expected: dict[str, str | None] = {"baseline": None}
    outputs: dict[str, Path] = {}
    for index, (name, (file_name, data, error)) in enumerate(_heavy_cases().items()):
        source = base / f"case{index}" / "in"
        _write(source, file_name, data)
        outputs[name] = source.parent / "out"
        commands[name] = ["celantur", str(source), str(outputs[name]), "--scheduler", "sync",
                          "--no-progress", "--encoding", "v26"]  # fmt: skip
        if name in CLEARML_HEAVY_CASES:
            commands[name] = _clearml_command(source, outputs[name], CLEARML_HEAVY_CASES[name])
        expected[name] = error
    env = {k: v for k, v in os.environ.items() if k != "MASK_PIPELINE_STORAGE_OPTIONS"}
    names = list(commands)
    results = {}
    for start in range(0, len(names), RSS_PARALLEL):
        wave = names[start : start + RSS_PARALLEL]
        processes = {
            name: subprocess.Popen([sys.executable, "-c", _RSS_CHILD, *commands[name]], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in wave
        }  # fmt: skip
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=240)
            lines = [line for line in stdout.splitlines() if line.startswith("RSS ")]
            assert process.returncode == 0 and lines, (name, stderr[-3000:])
            results[name] = json.loads(lines[-1][4:])
    for name, error in expected.items():
        if name == "baseline":
            continue
        rows = read_output(outputs[name], "errors")
        assert [row["error"] for row in rows] == ([] if error is None else [error]), name
        failed = any(row["severity"] == "error" for row in rows)
        assert results[name]["code"] == (3 if failed else 0), (name, results[name])
    baseline = results["baseline"]["peak_kib"]
    for result in results.values():
        result["above_baseline_mib"] = round((result["peak_kib"] - baseline) / 1024, 1)
    print("\npeak RSS (MiB above the import-only baseline of "
          f"{baseline / 1024:.0f} MiB):")  # fmt: skip
    for name, result in results.items():
        print(f"  {name}: {result['above_baseline_mib']}")
    return results


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("name", HEAVY_CASES)
def test_peak_rss_per_case_stays_under_256_mib(
    name: str, peak_rss: dict[str, dict[str, Any]]
) -> None:
    assert peak_rss[name]["above_baseline_mib"] < RSS_LIMIT_MIB, peak_rss[name]
