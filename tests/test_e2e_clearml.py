"""End-to-end runs of ``mask-pipeline clearml`` on generated ClearML datasets
(:mod:`pipeline.sampledata.clearml`), checked against an independent reference.

The reference decodes every mask with Pillow (videos with PyAV directly) and measures it by brute
force with numpy: per value ``np.unique(..., return_counts=True)`` and ``np.nonzero`` for boxes
and centroids (SPEC 2.5: grey ``v`` is ``[v, v, v]``, palettes are expanded to RGB, alpha is
ignored; alpha masks count the A channel when there is one, else the grey value, else Pillow's
``convert("L")``). Labels come from the generator's Python-form ``mask_labels`` plus the frame's
deprecated ROI links. Nothing here calls the product's kernels.

Feature tests run on the ``object`` form (one document per frame); the ``array`` and ``jsonl``
forms, where many frames share one document, are compared with the reference and with each
other separately.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from reference import region_stats
from storage_helpers import upload_tree

from pipeline import read_run, read_table
from pipeline.api import run_clearml
from pipeline.cli import main
from pipeline.config import ExecutionOptions
from pipeline.kernels.masks import scaled_size
from pipeline.sampledata.clearml import ClearmlDataset, ClearmlMask, make_clearml_dataset

SEED = 5
FRAMES = 10
FORMS = ("array", "jsonl", "object")
BUCKET_HOST = "https://example-bucket.s3.amazonaws.com/"
COMPARED_TABLES = ("masks", "labels", "alpha", "errors")

Key = tuple[Any, ...]


def run(frames: Path | str, out: Path | str, *args: str, scheduler: str | None = "sync") -> int:
    """``mask-pipeline clearml FRAMES OUT ARGS...`` in-process; returns the exit code."""
    argv = ["clearml", str(frames), str(out), "--no-progress", *args]
    if scheduler is not None:
        argv += ["--scheduler", scheduler]
    return main(argv)


def rows(out: Path | str, table: str, storage: dict[str, Any] | None = None) -> list[dict]:
    """The rows of one table of the last committed run (as a reader sees them)."""
    return list(read_table(str(out), table, storage).to_pylist())


def canonical(table_rows: list[dict[str, Any]]) -> list[str]:
    """Rows as sorted JSON strings: a multiset that compares tables exactly."""
    return sorted(json.dumps(row, sort_keys=True) for row in table_rows)


# ---------------------------------------------------------------------------------------------
# The independent reference
# ---------------------------------------------------------------------------------------------


def mask_pixels(path: Path) -> tuple[np.ndarray, bool]:
    """What a pixel-segmentation mask's values are, per SPEC 2.5: ``(values, grey)``, where
    ``values`` is (H, W) grey values (8 or 16 bit) or (H, W, 3) RGB."""
    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            return np.asarray(image.convert("RGB")), False
        array = np.asarray(image)
        if image.mode in ("L", "I;16", "I"):
            return array.astype(np.int64), True
        if image.mode == "LA":
            return array[:, :, 0].astype(np.int64), True
        if image.mode in ("RGB", "RGBA"):
            return array[:, :, :3], False
    raise AssertionError(f"unexpected mode {image.mode} of {path}")


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video mask as RGB, decoded by PyAV directly."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def labels_for(dataset: ClearmlDataset, mask: ClearmlMask) -> dict[tuple[int, int, int], list]:
    """The version's mapping plus the mask's ROI links (labels appended, no repeats)."""
    mapping = {value: list(labels) for value, labels in dataset.mask_labels_python.items()}
    for value, labels in mask.roi_labels:
        known = mapping.setdefault(value, [])
        known += [label for label in labels if label not in known]
    return mapping


def reference_label_rows(
    values: np.ndarray, grey: bool, mapping: dict[tuple[int, int, int], list]
) -> dict[tuple[int, int, int], dict[str, Any]]:
    """Per distinct value: labels, pixel count, bbox (max exclusive) and centroid."""
    keys = (
        values
        if grey
        else (values[:, :, 0].astype(np.int64) << 16)
        | (values[:, :, 1].astype(np.int64) << 8)
        | values[:, :, 2].astype(np.int64)
    )
    distinct, counts = np.unique(keys, return_counts=True)
    result = {}
    for key, count in zip(distinct.tolist(), counts.tolist(), strict=True):
        value = (key, key, key) if grey else (key >> 16, (key >> 8) & 255, key & 255)
        stats = region_stats(keys == key)
        assert stats["pixels"] == count
        result[value] = {"labels": list(mapping.get(value, [])), **stats}
    return result


def reference_opacity(path: Path) -> tuple[np.ndarray, int]:
    """An alpha mask's opacity per pixel and its full value, per SPEC 2.5 (Pillow decode)."""
    with Image.open(path) as image:
        image.load()
        mode = image.mode
        if mode == "P":
            if "transparency" in image.info:
                return np.asarray(image.convert("RGBA"))[:, :, 3].astype(np.int64), 255
            return np.asarray(image.convert("RGB").convert("L")).astype(np.int64), 255
        if mode in ("LA", "RGBA"):
            return np.asarray(image)[:, :, -1].astype(np.int64), 255
        if mode == "RGB":
            return np.asarray(image.convert("L")).astype(np.int64), 255
        if mode == "L":
            return np.asarray(image).astype(np.int64), 255
        if mode in ("I;16", "I"):
            return np.asarray(image).astype(np.int64), 65535
    raise AssertionError(f"unexpected mode {mode} of {path}")


def reference_alpha_row(alpha: np.ndarray, full: int) -> dict[str, Any]:
    ys, xs = np.nonzero(alpha > 0)
    transparent = int(np.sum(alpha == 0))
    opaque = int(np.sum(alpha == full))
    return {
        "mean_opacity": float(alpha.sum()) / (alpha.size * full),
        "transparent_pixels": transparent,
        "opaque_pixels": opaque,
        "partial_pixels": alpha.size - transparent - opaque,
        "x_min": int(xs.min()) if xs.size else None,
        "y_min": int(ys.min()) if xs.size else None,
        "x_max": int(xs.max()) + 1 if xs.size else None,
        "y_max": int(ys.max()) + 1 if xs.size else None,
    }


def expected_label_rows(dataset: ClearmlDataset) -> dict[Key, dict[str, Any]]:
    """Every ``labels/`` row the dataset should give, keyed by (frame, source, mask,
    frame index, value)."""
    expected: dict[Key, dict[str, Any]] = {}
    for mask in dataset.masks:
        if mask.path is None:
            continue
        mapping = labels_for(dataset, mask)
        path = dataset.root / mask.path
        if mask.kind == "video":
            per_frame = [(i, (f, False)) for i, f in enumerate(video_frames(path))]
        else:
            per_frame = [(None, mask_pixels(path))]
        for index, (values, grey) in per_frame:
            for value, row in reference_label_rows(values, grey, mapping).items():
                key = (mask.frame_id, mask.source_id, mask.mask_id, index, value)
                expected[key] = {"uri": mask.uri, **row}
    return expected


def expected_alpha_rows(dataset: ClearmlDataset) -> dict[Key, dict[str, Any]]:
    expected: dict[Key, dict[str, Any]] = {}
    for mask in dataset.masks:
        if mask.path is None:
            continue
        path = dataset.root / mask.path
        if mask.kind == "video":
            for index, frame in enumerate(video_frames(path)):
                luma = np.asarray(Image.fromarray(frame, "RGB").convert("L")).astype(np.int64)
                key = (mask.frame_id, mask.source_id, mask.mask_id, index)
                expected[key] = {"uri": mask.uri, **reference_alpha_row(luma, 255)}
        else:
            key = (mask.frame_id, mask.source_id, mask.mask_id, None)
            expected[key] = {"uri": mask.uri, **reference_alpha_row(*reference_opacity(path))}
    return expected


def actual_label_rows(table_rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    keyed: dict[Key, dict[str, Any]] = {}
    for row in table_rows:
        key = (row["frame_id"], row["source_id"], row["mask_id"], row["frame_index"],
               tuple(row["value"]))  # fmt: skip
        assert key not in keyed, f"duplicate labels/ row {key}"
        keyed[key] = {k: row[k] for k in ("uri", "labels", "pixels", "x_min", "y_min", "x_max",
                                          "y_max", "centroid_x", "centroid_y")}  # fmt: skip
    return keyed


def actual_alpha_rows(table_rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    keyed: dict[Key, dict[str, Any]] = {}
    for row in table_rows:
        key = (row["frame_id"], row["source_id"], row["mask_id"], row["frame_index"])
        assert key not in keyed, f"duplicate alpha/ row {key}"
        keyed[key] = {k: v for k, v in row.items()
                      if k not in ("frame_id", "source_id", "mask_id", "frame_index")}  # fmt: skip
    return keyed


def assert_rows_equal(actual: dict[Key, dict], expected: dict[Key, dict], floats: tuple) -> None:
    missing = sorted(set(expected) - set(actual), key=repr)
    extra = sorted(set(actual) - set(expected), key=repr)
    assert not missing and not extra, f"missing rows {missing[:5]}..., unexpected {extra[:5]}..."
    for key, want in expected.items():
        got = actual[key]
        for name in floats:
            assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (key, name)
        assert {k: v for k, v in got.items() if k not in floats} == {
            k: v for k, v in want.items() if k not in floats
        }, key


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClearmlDataset]:
    """The same masks under one root, with the frames written in each of the three forms."""
    root = tmp_path_factory.mktemp("clearml") / "dataset"
    return {form: make_clearml_dataset(root, seed=SEED, frames=FRAMES, form=form)  # type: ignore[arg-type]
            for form in FORMS}  # fmt: skip


@pytest.fixture(scope="module")
def pixel_runs(
    datasets: dict[str, ClearmlDataset], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, Path]]:
    """Pixel-mode runs with the list-form mask_labels file, one per frames form."""
    runs = {}
    for form, dataset in datasets.items():
        out = tmp_path_factory.mktemp(f"pixel-{form}") / "out"
        code = run(dataset.frames_path, out, "--mask-labels", str(dataset.mask_labels_path))
        runs[form] = (code, out)
    return runs


@pytest.fixture(scope="module")
def dataset(datasets: dict[str, ClearmlDataset]) -> ClearmlDataset:
    return datasets["object"]


@pytest.fixture(scope="module")
def pixel_out(pixel_runs: dict[str, tuple[int, Path]]) -> Path:
    return pixel_runs["object"][1]


# ---------------------------------------------------------------------------------------------
# The generated dataset itself
# ---------------------------------------------------------------------------------------------


def test_dataset_covers_every_case(dataset: ClearmlDataset) -> None:
    kinds = Counter(mask.kind for mask in dataset.masks)
    assert set(kinds) >= {"label_ids", "instance_ids", "palette", "palette_transparent",
                          "colour", "panoptic", "alpha_la", "alpha_rgba", "alpha_l",
                          "alpha_empty", "video", "missing"}  # fmt: skip
    assert kinds["missing"] == 1
    assert any(m.mask_id == "5" for m in dataset.masks)
    assert any(m.mask_id == "01" for m in dataset.masks)
    assert any(m.roi_labels for m in dataset.masks)
    # masks_labels.json is the list form; the three forms hold the same mapping.
    on_disk = json.loads(dataset.mask_labels_path.read_text())
    assert on_disk == dataset.mask_labels_list == dataset.mask_labels_all["_all_"]
    assert {tuple(e["value"]): e["labels"] for e in on_disk} == dataset.mask_labels_python


def test_dataset_is_deterministic(tmp_path: Path, dataset: ClearmlDataset) -> None:
    again = make_clearml_dataset(tmp_path / "again", seed=SEED, frames=FRAMES, form="object")
    assert again.files == dataset.files
    for rel in dataset.files:
        assert (again.root / rel).read_bytes() == (dataset.root / rel).read_bytes(), rel


# ---------------------------------------------------------------------------------------------
# Pixel mode against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_pixel_labels_equal_reference(
    form: str, datasets: dict[str, ClearmlDataset], pixel_runs: dict[str, tuple[int, Path]]
) -> None:
    dataset = datasets[form]
    code, out = pixel_runs[form]
    assert code == 3  # the missing mask
    expected = expected_label_rows(dataset)
    actual = actual_label_rows(rows(out, "labels"))
    assert_rows_equal(actual, expected, floats=("centroid_x", "centroid_y"))
    assert rows(out, "alpha") == []


@pytest.mark.parametrize("form", FORMS)
def test_pixel_masks_rows(
    form: str, datasets: dict[str, ClearmlDataset], pixel_runs: dict[str, tuple[int, Path]]
) -> None:
    """One ``masks/`` row per existing mask; unmapped values and pixels as the reference."""
    dataset = datasets[form]
    _, out = pixel_runs[form]
    expected_labels = expected_label_rows(dataset)
    table = rows(out, "masks")
    by_ref = Counter((r["frame_id"], r["source_id"], r["mask_id"]) for r in table)
    existing = [m for m in dataset.masks if m.path is not None]
    assert by_ref == Counter((m.frame_id, m.source_id, m.mask_id) for m in existing)
    keyed = {(r["frame_id"], r["source_id"], r["mask_id"]): r for r in table}
    for mask in existing:
        row = keyed[(mask.frame_id, mask.source_id, mask.mask_id)]
        mine = [v for k, v in expected_labels.items() if k[:3] == (mask.frame_id, mask.source_id,
                                                                    mask.mask_id)]  # fmt: skip
        unmapped = [v for v in mine if not v["labels"]]
        assert row["kind"] == "pixel"
        assert (row["width"], row["height"]) == (mask.width, mask.height)
        assert row["bytes"] == (dataset.root / mask.path).stat().st_size  # type: ignore[operator]
        assert row["segments"] == len(mine)
        assert row["unmapped_values"] == len(unmapped), mask
        assert row["unmapped_pixels"] == sum(v["pixels"] for v in unmapped), mask
        assert row["video_frames"] == mask.video_frames
        assert row["scaled_path"] is None


def test_unmapped_grey_value_and_roi_link(dataset: ClearmlDataset, pixel_out: Path) -> None:
    """34 is unmapped in label-id masks, except where a deprecated ROI gives it a label;
    an ROI adds its labels after the mapping's."""
    table = rows(pixel_out, "labels")
    for mask in dataset.masks:
        if mask.kind != "label_ids":
            continue
        mine = {tuple(r["value"]): r["labels"] for r in table
                if (r["frame_id"], r["source_id"], r["mask_id"])
                == (mask.frame_id, mask.source_id, mask.mask_id)}  # fmt: skip
        assert (34, 34, 34) in mine
        if mask.roi_labels:
            assert mine[(34, 34, 34)] == ["debris"]
            assert mine[(7, 7, 7)] == ["road", "wet"]
        else:
            assert mine[(34, 34, 34)] == []
            assert mine[(7, 7, 7)] == ["road"]


def test_sixteen_bit_instance_values(dataset: ClearmlDataset, pixel_out: Path) -> None:
    table = rows(pixel_out, "labels")
    for mask in dataset.masks:
        if mask.kind != "instance_ids":
            continue
        mine = {tuple(r["value"]): r["labels"] for r in table
                if (r["frame_id"], r["mask_id"]) == (mask.frame_id, mask.mask_id)}  # fmt: skip
        assert mine[(26001, 26001, 26001)] == ["car", "car 1"]
        assert mine[(26002, 26002, 26002)] == []
        assert mine[(24000, 24000, 24000)] == []
        assert mine[(23, 23, 23)] == ["sky"]


def _sixteen_bit_colours(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint16 label values that differ only below their top byte, or only in red:
    an 8-bit reading would merge them."""
    colours = np.array([[1000, 2, 65535], [1000, 3, 65535], [1001, 2, 65535], [0, 0, 0],
                        [60000, 2, 65535], [61000, 2, 65535]], dtype=np.uint16)  # fmt: skip
    y, x = np.mgrid[0:height, 0:width]
    return colours[(x // 5 + 2 * (y // 4)) % len(colours)]


def test_sixteen_bit_colour_label_masks_are_measured(tmp_path: Path) -> None:
    """16-bit RGB and RGBA pixel masks: one row per 16-bit [r, g, b] value (SPEC 2.5: each
    value is looked up in ``mask_labels``, whose values go to 65535), equal to a brute-force
    reference, and no error row."""
    from corpus import RGB, RGBA, encode

    width, height = 23, 17
    values = _sixteen_bit_colours(width, height)
    alpha = np.full((height, width, 1), 40000, dtype=np.uint16)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "rgb16.png").write_bytes(encode(values, RGB, bit_depth=16))
    rgba = encode(np.concatenate([values, alpha], axis=2), RGBA, bit_depth=16)
    (tmp_path / "m" / "rgba16.png").write_bytes(rgba)
    frames = [{"id": "f1", "sources": [{"id": "cam", "masks": ["m/rgb16.png", "m/rgba16.png"]}]}]
    (tmp_path / "frames.json").write_text(json.dumps(frames))
    mask_labels = [{"value": [1000, 3, 65535], "labels": ["car"]},
                   {"value": [61000, 2, 65535], "labels": ["road"]}]  # fmt: skip
    (tmp_path / "labels.json").write_text(json.dumps(mask_labels))
    out = tmp_path / "out"

    code = run(tmp_path / "frames.json", out, "--mask-labels", str(tmp_path / "labels.json"))

    assert code == 0
    assert rows(out, "errors") == []
    mapping = {tuple(m["value"]): m["labels"] for m in mask_labels}
    keys = (values[:, :, 0].astype(np.int64) << 32) | (values[:, :, 1].astype(np.int64) << 16)
    keys |= values[:, :, 2]
    expected = {}
    for key in np.unique(keys).tolist():
        value = (key >> 32, (key >> 16) & 65535, key & 65535)
        expected[value] = {"labels": mapping.get(value, []), **region_stats(keys == key)}
    assert len(expected) == 6
    table = rows(out, "labels")
    for mask_id in ("00", "01"):
        mine = {tuple(r["value"]): {k: r[k] for k in expected[(0, 0, 0)]}
                for r in table if r["mask_id"] == mask_id}  # fmt: skip
        assert mine == expected, mask_id
    masks = {r["mask_id"]: r for r in rows(out, "masks")}
    assert {m: (r["png_mode"], r["segments"], r["unmapped_values"]) for m, r in masks.items()} == {
        "00": ("rgb16", 6, 4),
        "01": ("rgba16", 6, 4),
    }


def test_panoptic_segments_equal_coco_json(dataset: ClearmlDataset, pixel_out: Path) -> None:
    table = rows(pixel_out, "labels")
    checked = 0
    for mask in dataset.masks:
        if mask.kind != "panoptic":
            continue
        coco = json.loads((dataset.root / mask.panoptic_json).read_text())  # type: ignore[operator]
        (annotation,) = coco["annotations"]
        mine = {tuple(r["value"]): r for r in table
                if (r["frame_id"], r["source_id"], r["mask_id"])
                == (mask.frame_id, mask.source_id, mask.mask_id)}  # fmt: skip
        segment_ids = set()
        for segment in annotation["segments_info"]:
            seg_id = segment["id"]
            segment_ids.add(seg_id)
            value = (seg_id % 256, (seg_id // 256) % 256, seg_id // 65536)
            row = mine[value]
            x, y, w, h = segment["bbox"]
            assert row["pixels"] == segment["area"], segment
            assert (row["x_min"], row["y_min"], row["x_max"], row["y_max"]) == (x, y, x + w, y + h)
            checked += 1
        # Everything else in the mask is void (id 0).
        assert {r + 256 * g + 65536 * b for r, g, b in mine} == segment_ids | {0}
        assert mine[(0, 0, 0)]["labels"] == ["unlabeled"]
    assert checked >= 10


def test_the_three_frames_forms_give_identical_tables(
    pixel_runs: dict[str, tuple[int, Path]],
) -> None:
    snapshots = {
        form: {table: canonical(rows(out, table)) for table in COMPARED_TABLES}
        for form, (_, out) in pixel_runs.items()
    }
    for form in ("array", "jsonl"):
        for table in COMPARED_TABLES:
            assert snapshots[form][table] == snapshots["object"][table], (form, table)
    labels = {
        form: canonical([r for r in rows(out, "summary") if r["scope"] == "mask_label"])
        for form, (_, out) in pixel_runs.items()
    }
    assert labels["array"] == labels["jsonl"] == labels["object"]


def test_the_three_mask_labels_forms_give_identical_tables(
    dataset: ClearmlDataset, pixel_out: Path, tmp_path: Path
) -> None:
    wrapped = tmp_path / "mask_labels_all.json"
    wrapped.write_text(json.dumps(dataset.mask_labels_all))
    out_all = tmp_path / "out-all"
    assert run(dataset.frames_path, out_all, "--mask-labels", str(wrapped)) == 3
    out_python = tmp_path / "out-python"
    result = run_clearml(
        str(dataset.frames_path),
        str(out_python),
        mask_labels=dataset.mask_labels_python,
        execution=ExecutionOptions(scheduler="sync", progress=False),
    )
    assert result.exit_code == 3
    assert result.record["mode"]["used"] == "pixel"
    for table in (*COMPARED_TABLES, "summary"):
        reference = canonical(rows(pixel_out, table))
        assert canonical(rows(out_all, table)) == reference, table
        assert canonical(rows(out_python, table)) == reference, table


# ---------------------------------------------------------------------------------------------
# Alpha mode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["mode-alpha", "auto-without-labels"])
def test_alpha_rows_equal_reference(how: str, dataset: ClearmlDataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if how == "mode-alpha":
        args = ["--mode", "alpha", "--mask-labels", str(dataset.mask_labels_path)]
    else:
        args = []
    assert run(dataset.frames_path, out, *args) == 3
    assert read_run(str(out))["mode"]["used"] == "alpha"
    expected = expected_alpha_rows(dataset)
    actual = actual_alpha_rows(rows(out, "alpha"))
    assert_rows_equal(actual, expected, floats=("mean_opacity",))
    assert rows(out, "labels") == []
    masks = rows(out, "masks")
    assert {r["kind"] for r in masks} == {"alpha"}
    assert len(masks) == sum(1 for m in dataset.masks if m.path is not None)
    assert all(r["segments"] is None and r["unmapped_values"] is None for r in masks)


def test_alpha_soft_masks_have_partial_pixels(dataset: ClearmlDataset) -> None:
    """The generator's cut-outs are soft: transparent, partial and opaque pixels all occur."""
    expected = expected_alpha_rows(dataset)
    for mask in dataset.masks:
        if mask.kind in ("alpha_la", "alpha_rgba", "alpha_l"):
            row = expected[(mask.frame_id, mask.source_id, mask.mask_id, None)]
            assert row["transparent_pixels"] and row["opaque_pixels"] and row["partial_pixels"]
        if mask.kind == "alpha_empty":
            row = expected[(mask.frame_id, mask.source_id, mask.mask_id, None)]
            assert row["mean_opacity"] == 0 and row["x_min"] is None


# ---------------------------------------------------------------------------------------------
# Errors, accounting, usage errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_missing_mask_is_one_error_and_accounted(
    form: str, datasets: dict[str, ClearmlDataset], pixel_runs: dict[str, tuple[int, Path]]
) -> None:
    dataset = datasets[form]
    code, out = pixel_runs[form]
    assert code == 3
    (missing,) = dataset.missing
    errors = rows(out, "errors")
    assert [e["severity"] for e in errors] == ["error"]
    (error,) = errors
    assert error["path"] == missing.uri
    for name in (missing.frame_id, missing.source_id, missing.mask_id):
        assert name in error["message"]
    record = read_run(str(out))
    accounting = record["accounting"]
    assert accounting["found"] == accounting["in_tables"] + accounting["in_errors"]
    documents = len({f.document for f in dataset.frames})
    assert record["inputs"]["found"] == {"frames_document": documents, "mask": len(dataset.masks)}
    assert accounting["in_errors"] == 1
    assert record["exit_code"] == 3
    # Every discovered mask lands exactly once: in masks/ or in errors/ (SPEC 3, accounting).
    assert len(rows(out, "masks")) + len(errors) == len(dataset.masks)
    assert record["tables"]["masks"]["rows"] == len(rows(out, "masks"))
    assert record["tables"]["labels"]["rows"] == len(rows(out, "labels"))


def test_conflicting_mask_labels_is_a_usage_error(
    dataset: ClearmlDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "mask_labels.json"
    bad.write_text(json.dumps([*dataset.mask_labels_list,
                               {"value": [7, 7, 7], "labels": ["street"]}]))  # fmt: skip
    out = tmp_path / "out"
    assert run(dataset.frames_path, out, "--mask-labels", str(bad)) == 2
    err = capsys.readouterr().err
    assert "[7, 7, 7]" in err
    assert "mask_labels" in err
    assert not (out / "_run.json").exists()


# ---------------------------------------------------------------------------------------------
# Rescaled masks
# ---------------------------------------------------------------------------------------------


def _scaled_reference_pixels(path: Path) -> np.ndarray:
    """The input as the scaled file must hold it: palettes expanded, everything else as is."""
    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            return np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))
        return np.asarray(image)


def _tuples(pixels: np.ndarray) -> set[tuple[int, ...]]:
    flat = pixels.reshape(pixels.shape[0] * pixels.shape[1], -1)
    return {tuple(int(v) for v in row) for row in np.unique(flat, axis=0)}


def _files_outside(base: Path, out: Path) -> set[Path]:
    return {p for p in base.rglob("*") if p.is_file() and out not in p.parents}


def test_mask_scale_writes_nearest_neighbour_masks_inside_the_output(
    dataset: ClearmlDataset, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path / "out"
    base = tmp_path_factory.getbasetemp()
    outside_before = _files_outside(base, out)
    assert run(dataset.frames_path, out, "--mask-labels", str(dataset.mask_labels_path),
               "--mask-scale", "50") == 3  # fmt: skip
    assert _files_outside(base, out) == outside_before
    table = {(r["frame_id"], r["source_id"], r["mask_id"]): r for r in rows(out, "masks")}
    scaled_files = {p for p in (out / "scaled").rglob("*") if p.is_file()}
    seen = set()
    for mask in dataset.masks:
        if mask.path is None:
            continue
        row = table[(mask.frame_id, mask.source_id, mask.mask_id)]
        if mask.kind == "video":
            assert row["scaled_path"] is None
            continue
        scaled = out / row["scaled_path"]
        assert scaled.resolve().is_relative_to(out.resolve())
        assert scaled in scaled_files
        seen.add(scaled)
        source = _scaled_reference_pixels(dataset.root / mask.path)
        with Image.open(scaled) as image:
            result = np.asarray(image)
            mode = image.mode
        if mask.png_mode != "P":
            assert mode == mask.png_mode, mask
        assert result.shape[2:] == source.shape[2:], mask
        width, height = scaled_size(mask.width, mask.height, 50)
        assert result.shape[:2] == (height, width)
        assert _tuples(result) <= _tuples(source), mask
    assert seen == scaled_files


def test_mask_scale_with_dot_dot_uris_stays_inside_the_output(
    dataset: ClearmlDataset, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """URIs with ``..`` (relative, absolute and repeated) never place a file outside OUT."""
    label = next(m for m in dataset.masks if m.kind == "label_ids")
    colour = next(m for m in dataset.masks if m.kind == "colour")
    deep = tmp_path / "docs" / "a" / "b"
    deep.mkdir(parents=True)
    absolute = dataset.root / "frames-object" / ".." / colour.path  # type: ignore[operator]
    up = os.path.relpath(dataset.root, deep)
    frame = {
        "id": "dots",
        "sources": [{"id": "s", "masks": [
            f"{up}/masks/../masks/./{label.path.removeprefix('masks/')}",  # type: ignore[union-attr]
            str(absolute),
            f"{up}/../../../../../../../../../../../..{dataset.root}/{label.path}",
        ]}],
    }  # fmt: skip
    (deep / "frames.json").write_text(json.dumps(frame))
    out = tmp_path / "nested" / "out"
    base = tmp_path_factory.getbasetemp()
    before = _files_outside(base, out)
    assert run(deep / "frames.json", out, "--mask-scale", "50", "--mode", "pixel") == 0
    assert _files_outside(base, out) == before
    table = rows(out, "masks")
    assert len(table) == 3
    for row in table:
        scaled = out / row["scaled_path"]
        assert ".." not in Path(row["scaled_path"]).parts
        assert scaled.is_file()
        assert scaled.resolve().is_relative_to(out.resolve())


# ---------------------------------------------------------------------------------------------
# Video masks
# ---------------------------------------------------------------------------------------------


def test_video_mask_rows_per_frame(dataset: ClearmlDataset, pixel_out: Path) -> None:
    (video,) = [m for m in dataset.masks if m.kind == "video"]
    assert video.path is not None
    frames = video_frames(dataset.root / video.path)
    assert len(frames) == video.video_frames == 4
    mapping = labels_for(dataset, video)
    table = [r for r in rows(pixel_out, "labels")
             if (r["frame_id"], r["mask_id"]) == (video.frame_id, video.mask_id)]  # fmt: skip
    assert {r["frame_index"] for r in table} == set(range(len(frames)))
    for index, frame in enumerate(frames):
        expected = {
            (video.frame_id, video.source_id, video.mask_id, index, value): {
                "uri": video.uri,
                **row,
            }
            for value, row in reference_label_rows(frame, False, mapping).items()
        }
        actual = actual_label_rows([r for r in table if r["frame_index"] == index])
        assert_rows_equal(actual, expected, floats=("centroid_x", "centroid_y"))
    # The car moves: the frames differ.
    assert not np.array_equal(frames[0], frames[-1])
    (row,) = [r for r in rows(pixel_out, "masks") if r["mask_id"] == video.mask_id]
    assert row["video_frames"] == 4
    assert (row["width"], row["height"]) == (video.width, video.height)


# ---------------------------------------------------------------------------------------------
# Object storage: --uri-map to a bucket, frames documents in a bucket
# ---------------------------------------------------------------------------------------------


def _normalised(table: str, table_rows: list[dict[str, Any]], prefixes: tuple[str, ...]) -> list:
    """Rows with URIs and paths reduced to the part below the dataset root."""

    def strip(text: str | None) -> str | None:
        if text is None:
            return None
        for prefix in prefixes:
            if text.startswith(prefix):
                return text[len(prefix) :]
        return text

    result = []
    for row in table_rows:
        row = dict(row)
        for name in ("uri", "path", "folder"):
            if name in row:
                row[name] = strip(row[name])
        if table == "errors":
            row.pop("message")
        result.append(row)
    return canonical(result)


def test_uri_map_to_s3_equals_local(
    s3_bucket: tuple[str, dict[str, Any]], pixel_out: Path, dataset: ClearmlDataset,
    tmp_path: Path,
) -> None:  # fmt: skip
    bucket, storage = s3_bucket
    remote = make_clearml_dataset(tmp_path / "remote", seed=SEED, frames=FRAMES, form="object",
                                  mask_uri_prefix=BUCKET_HOST)  # fmt: skip
    assert all(m.uri.startswith(BUCKET_HOST) for m in remote.masks)
    upload_tree(remote.root / "masks", f"{bucket}/masks", storage)
    out = tmp_path / "out"
    code = run(remote.frames_path, out, "--mask-labels", str(remote.mask_labels_path),
               "--uri-map", f"{BUCKET_HOST}={bucket}/",
               "--storage-option", f"endpoint_url={storage['endpoint_url']}")  # fmt: skip
    assert code == 3
    remote_prefixes = (BUCKET_HOST, f"{bucket}/")
    local_prefixes = ("../", f"{dataset.root.as_posix()}/")
    for table in COMPARED_TABLES:
        assert _normalised(table, rows(out, table), remote_prefixes) == _normalised(
            table, rows(pixel_out, table), local_prefixes
        ), table
    assert all(r["path"].startswith(f"{bucket}/masks/") for r in rows(out, "masks"))


def test_frames_documents_in_s3_with_relative_uris(
    s3_bucket: tuple[str, dict[str, Any]], pixel_out: Path, dataset: ClearmlDataset,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Frames documents stored next to their masks in a bucket, with the generator's relative
    URIs (``../masks/...``), read like the same tree on a local disk."""
    bucket, storage = s3_bucket
    upload_tree(dataset.root / "masks", f"{bucket}/data/masks", storage)
    upload_tree(dataset.root / "frames-object", f"{bucket}/data/frames-object", storage)
    out = tmp_path / "out"
    code = run(f"{bucket}/data/frames-object", out,
               "--mask-labels", str(dataset.mask_labels_path),
               "--storage-option", f"endpoint_url={storage['endpoint_url']}")  # fmt: skip
    assert code == 3
    errors = rows(out, "errors")
    assert [e["error"] for e in errors] == ["missing"], errors
    assert len(rows(out, "masks")) == sum(1 for m in dataset.masks if m.path is not None)
    assert canonical(rows(out, "labels")) == canonical(rows(pixel_out, "labels"))


# ---------------------------------------------------------------------------------------------
# Reruns
# ---------------------------------------------------------------------------------------------


def test_rerun_is_idempotent(dataset: ClearmlDataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("--mask-labels", str(dataset.mask_labels_path), "--mask-scale", "50")

    def snapshot() -> dict[str, Any]:
        record = read_run(str(out))
        return {
            "tables": {t: canonical(rows(out, t)) for t in (*COMPARED_TABLES, "summary")},
            "tables_committed": {
                t: (info["files"], info["version"]) for t, info in record["tables"].items()
            },
            "files": sorted(
                (p.relative_to(out).as_posix(), p.read_bytes())
                for p in out.rglob("*")
                if p.is_file() and p.name != "_run.json"
            ),
        }

    assert run(dataset.frames_path, out, *args) == 3
    first = snapshot()
    assert run(dataset.frames_path, out, *args) == 3
    assert snapshot() == first


# ---------------------------------------------------------------------------------------------
# Summary, single-frame documents, generator arguments
# ---------------------------------------------------------------------------------------------


def test_summary_mask_labels_equal_reference(dataset: ClearmlDataset, pixel_out: Path) -> None:
    """Per label: masks holding it, frames holding it, pixels (all video frames summed)."""
    masks: Counter[str] = Counter()
    pixels: Counter[str] = Counter()
    frames: dict[str, set[str]] = {}
    per_mask: dict[Key, set[str]] = {}
    for key, row in expected_label_rows(dataset).items():
        for label in row["labels"]:
            per_mask.setdefault(key[:3], set()).add(label)
            pixels[label] += row["pixels"]
            frames.setdefault(label, set()).add(key[0])
    for labels in per_mask.values():
        masks.update(labels)
    expected = {label: (masks[label], len(frames[label]), pixels[label]) for label in masks}
    actual = {r["name"]: (r["masks"], r["frames"], r["pixels"])
              for r in rows(pixel_out, "summary") if r["scope"] == "mask_label"}  # fmt: skip
    assert actual == expected


@pytest.mark.parametrize("form", FORMS)
def test_single_frame_documents(form: str, tmp_path: Path) -> None:
    """One frame: one object (``object``), an array of one, or JSON Lines of one line."""
    single = make_clearml_dataset(tmp_path / "one", seed=SEED, frames=1, form=form)  # type: ignore[arg-type]
    assert single.frames_path.is_file()
    document = single.frames_path.read_text()
    if form == "object":
        assert isinstance(json.loads(document), dict)
    elif form == "jsonl":
        assert document.count("\n") == 1
    out = tmp_path / "out"
    assert run(single.frames_path, out, "--mask-labels", str(single.mask_labels_path)) == 0
    expected = expected_label_rows(single)
    assert {k[0] for k in expected} == {"frame-0000"}
    assert_rows_equal(actual_label_rows(rows(out, "labels")), expected,
                      floats=("centroid_x", "centroid_y"))  # fmt: skip


def test_generator_without_video_and_bad_arguments(tmp_path: Path) -> None:
    plain = make_clearml_dataset(tmp_path / "plain", seed=1, frames=5, video=False)
    assert not any(m.kind == "video" for m in plain.masks)
    track = next(m for m in plain.masks if m.mask_id == "track")
    assert track.kind == "colour" and track.png_mode == "RGBA"
    with pytest.raises(ValueError, match="seed"):
        make_clearml_dataset(tmp_path / "bad", seed=-1)
    with pytest.raises(ValueError, match="frames"):
        make_clearml_dataset(tmp_path / "bad", frames=0)
    with pytest.raises(ValueError, match="form"):
        make_clearml_dataset(tmp_path / "bad", form="yaml")  # type: ignore[arg-type]
