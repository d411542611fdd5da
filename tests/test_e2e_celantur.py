"""End-to-end runs of ``mask-pipeline celantur`` on generated trees, checked row by row against an
independent reference (Pillow decode, per-colour brute force, SPEC 2.1 tables written out)."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reference import read_output, reference_segments, reference_types

from pipeline.sampledata.celantur import SampleTree, make_celantur_tree

RunCli = Callable[..., tuple[int, Path]]
TYPES = ("person", "license_plate", "face", "vehicle")


def _grey_or_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _instance_images(tree: SampleTree) -> list:
    return [image for image in tree.images if image.instance_path]


def test_instances_and_masks_equal_the_reference(
    celantur_tree: SampleTree, run_cli: RunCli
) -> None:
    encoding = celantur_tree.encoding
    code, out = run_cli(celantur_tree.root, "--encoding", encoding)
    assert code == 0
    instances = read_output(out, "instances")
    masks = {row["path"]: row for row in read_output(out, "masks")}
    checked = 0
    for image in _instance_images(celantur_tree):
        png = (celantur_tree.root / image.instance_path).read_bytes()
        expected = reference_segments(png)
        rows = {(r["r"], r["g"], r["b"]): r for r in instances if r["path"] == image.instance_path}
        assert set(rows) == set(expected), image.instance_path
        per_type = dict.fromkeys(TYPES, 0)
        overlap = 0
        for colour, stats in expected.items():
            row = rows[colour]
            for key, value in stats.items():
                if key.startswith("centroid"):
                    assert row[key] == pytest.approx(value, abs=1e-9)
                else:
                    assert row[key] == value, (image.instance_path, colour, key)
            types = reference_types(colour, encoding)
            assert types is not None, f"generator wrote an invalid colour {colour}"
            assert row["types"] == types and row["valid"] is True
            assert row["overlap"] == (len(types) > 1)
            assert row["instance"] == colour[1]
            assert row["type_bits"] == (colour[0] if encoding == "legacy-red" else colour[2])
            for name in types:
                per_type[name] += stats["pixels"]
            overlap += stats["pixels"] if len(types) > 1 else 0
        mask = masks[image.instance_path]
        assert (mask["width"], mask["height"]) == (image.mask_width, image.mask_height)
        assert mask["kind"] == "instance" and mask["encoding"] == encoding
        assert mask["bytes"] == len(png)
        assert mask["segments"] == len(expected)
        assert mask["foreground_pixels"] == sum(s["pixels"] for s in expected.values())
        assert {t: mask[f"{t}_pixels"] for t in TYPES} == per_type
        assert mask["overlap_pixels"] == overlap
        assert mask["invalid_pixels"] == 0
        assert (mask["stem"], mask["folder"]) == (image.stem, image.folder)
        if image.binary_path:
            instance_fg = _grey_or_rgb(celantur_tree.root / image.instance_path).any(axis=2)
            binary = _grey_or_rgb(celantur_tree.root / image.binary_path).max(axis=2) >= 128
            mismatch = int(np.count_nonzero(instance_fg != binary))
            assert mask["bin_mismatch_pixels"] == mismatch
            assert masks[image.binary_path]["bin_mismatch_pixels"] == mismatch
            assert masks[image.binary_path]["foreground_pixels"] == int(binary.sum())
        checked += 1
    assert checked >= 10
    assert len(instances) == sum(1 for _ in instances)  # no duplicate parts
    assert len({(r["path"], r["r"], r["g"], r["b"]) for r in instances}) == len(instances)


def test_auto_decides_each_encoding_without_warning(
    celantur_tree: SampleTree, run_cli: RunCli
) -> None:
    code, out = run_cli(celantur_tree.root)
    assert code == 0
    record = json.loads((out / "_run.json").read_text())
    assert record["encoding"] == {
        "choice": "auto",
        "used": celantur_tree.encoding,
        "warning": None,
    }
    assert read_output(out, "errors") == []


def test_ambiguous_dataset_uses_v26_with_a_warning(tmp_path: Path, run_cli: RunCli) -> None:
    # Only person (128) and plate (64): valid, with the same meaning, in v26 and legacy alike.
    mask = np.zeros((20, 30, 3), np.uint8)
    mask[2:8, 2:9] = (0, 40, 128)
    mask[10:15, 12:20] = (0, 41, 64)
    (tmp_path / "in").mkdir()
    Image.fromarray(mask).save(tmp_path / "in" / "a_ins_maks.png")
    code, out = run_cli(tmp_path / "in")
    assert code == 0
    errors = read_output(out, "errors")
    assert [(e["path"], e["error"], e["severity"]) for e in errors] == [
        (".", "encoding_ambiguous", "warning")
    ]
    assert json.loads((out / "_run.json").read_text())["encoding"]["used"] == "v26"


def test_metadata_tables(run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=3, images=12, size_order="hw")
    code, out = run_cli(tree.root)
    assert code == 0
    frames = {row["source"]: row for row in read_output(out, "frames")}
    detections = read_output(out, "detections")
    with_metadata = [image for image in tree.images if image.metadata_path]
    assert set(frames) == {image.metadata_path for image in with_metadata}
    for image in with_metadata:
        document = json.loads((tree.root / image.metadata_path).read_text())
        frame = frames[image.metadata_path]
        assert (frame["width"], frame["height"]) == (image.image_width, image.image_height)
        assert frame["size_order"] == "hw"
        assert frame["detections"] == len(document["detections"])
        assert frame["duration"] == document["duration"]
        assert frame["frame"] is None
        rows = sorted(
            (r for r in detections if r["source"] == image.metadata_path),
            key=lambda r: r["detection_index"],
        )
        assert len(rows) == len(document["detections"])
        for row, raw in zip(rows, document["detections"], strict=True):
            assert row["detection_id"] == raw["id"]
            assert [row["x1"], row["y1"], row["x2"], row["y2"]] == raw["bbox"]
            assert [row["offset_x"], row["offset_y"]] == raw["offset"]
            assert row["score"] == raw["score"] and row["type"] == raw["type"]
            assert row["type_label"] == raw["type_label"]
            assert row["type_name"] == raw["type_label"].replace(" ", "_")
            assert row["color"] == raw["color"]
            spelled = raw.get("is_anonymised", raw.get("is_anonymized"))
            assert row["is_anonymised"] is spelled is True
            assert (row["frame_width"], row["frame_height"]) == (
                image.image_width,
                image.image_height,
            )
    ids = [(r["source"], r["detection_id"]) for r in detections]
    assert len(ids) != len(set(ids)), "the generator repeats ids; rows must keep every detection"


def test_size_order_wh_is_resolved_from_the_masks(run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=3, images=6, size_order="wh", mask_scale=50)
    code, out = run_cli(tree.root)
    assert code == 0
    frames = {row["source"]: row for row in read_output(out, "frames")}
    for image in tree.images:
        if image.metadata_path and (image.instance_path or image.binary_path):
            frame = frames[image.metadata_path]
            assert (frame["width"], frame["height"]) == (image.image_width, image.image_height)
            if image.image_width != image.image_height:
                assert (frame["size_order"], frame["size_order_source"]) == ("wh", "mask")


def test_detections_match_segments_by_colour(run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=5, images=8, colours_in_metadata=True)
    code, out = run_cli(tree.root)
    assert code == 0
    instances = read_output(out, "instances")
    matched = 0
    for image in tree.images:
        if not (image.instance_path and image.metadata_path):
            continue
        by_colour = {
            (r["r"], r["g"], r["b"]): r for r in instances if r["path"] == image.instance_path
        }
        for index, obj in enumerate(image.objects):
            if obj.mask_pixels == 0:
                continue
            row = by_colour[obj.colour]
            assert row["match"] == "color"
            assert row["detection_index"] == index
            assert row["type_name"] == obj.type_name  # canonical, whatever the label's spelling
            matched += 1
    assert matched >= 20


def test_detections_match_segments_by_box_without_colours(run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=5, images=8, colours_in_metadata=False)
    code, out = run_cli(tree.root)
    assert code == 0
    instances = read_output(out, "instances")
    box_matches = [r for r in instances if r["match"] == "bbox"]
    assert box_matches and not [r for r in instances if r["match"] == "color"]
    for row in box_matches:
        assert 0 < row["bbox_iou"] <= 1
        assert row["type_name"] in row["types"]


@pytest.mark.parametrize("scale", [50, 100, 7])
def test_rescaled_masks(scale: int, run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=2, images=6)
    code, out = run_cli(tree.root, "--mask-scale", str(scale))
    assert code == 0
    masks = read_output(out, "masks")
    assert masks
    for row in masks:
        source = tree.root / row["path"]
        scaled = out / row["scaled_path"]
        # scaled/<folder>/<digest of the rescaled bytes>/<name>
        *folder, digest, name = row["scaled_path"].split("/")[1:]
        assert ("/".join([*folder, name]), len(digest)) == (row["path"], 16)
        if scale == 100:
            assert scaled.read_bytes() == source.read_bytes()
            continue
        original = np.asarray(Image.open(source))
        result = np.asarray(Image.open(scaled))
        expected_size = (
            max(1, round(original.shape[1] * scale / 100)),
            max(1, round(original.shape[0] * scale / 100)),
        )
        assert (result.shape[1], result.shape[0]) == expected_size
        assert result.shape[2:] == original.shape[2:]
        channels = original.shape[2] if original.ndim == 3 else 1
        before = {tuple(c) for c in original.reshape(-1, channels)}
        after = {tuple(c) for c in result.reshape(-1, channels)}
        assert after <= before, "nearest neighbour must not invent colours"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a size; its image data is a few bytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_bad_inputs_are_reported_once_and_good_ones_processed(
    run_cli: RunCli, tmp_path: Path
) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=1, images=6)
    bad = tree.root / "bad.dir-1"
    bad.mkdir()
    good_png = (tree.root / tree.images[0].instance_path).read_bytes()
    (bad / "cut_ins_maks.png").write_bytes(good_png[: len(good_png) // 2])
    (bad / "tail-cut_ins_maks.png").write_bytes(good_png[:-12])  # IEND missing
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    (bad / "photo_ins_maks.png").write_bytes(jpeg.getvalue())
    (bad / "bomb_ins_maks.png").write_bytes(_png_header_only(60000, 60000))
    (bad / "broken.json").write_text('{"detections": [')
    (bad / "list.json").write_text("[1, 2]")
    (bad / "empty_bin_mask.png").write_bytes(b"")
    expected = {
        "bad.dir-1/cut_ins_maks.png": ("decode", "truncated"),
        "bad.dir-1/tail-cut_ins_maks.png": ("decode", "truncated"),
        "bad.dir-1/photo_ins_maks.png": ("decode", "not_png"),
        "bad.dir-1/bomb_ins_maks.png": ("decode", "too_large"),
        "bad.dir-1/broken.json": ("decode", "json_syntax"),
        "bad.dir-1/list.json": ("validate", "bad_metadata"),
        "bad.dir-1/empty_bin_mask.png": ("decode", "not_png"),
    }

    code, out = run_cli(tree.root)
    assert code == 3
    errors = [e for e in read_output(out, "errors") if e["severity"] == "error"]
    assert {e["path"]: (e["stage"], e["error"]) for e in errors} == expected
    assert len(errors) == len(expected)
    for error in errors:
        assert error["message"].startswith(error["path"] + ": ")
    good_masks = {p for i in tree.images for p in (i.instance_path, i.binary_path) if p}
    assert {row["path"] for row in read_output(out, "masks")} == good_masks
    record = json.loads((out / "_run.json").read_text())
    accounting = record["accounting"]
    assert accounting["found"] == accounting["in_tables"] + accounting["in_errors"]
    assert accounting["in_errors"] == len(expected)


def test_rerun_is_idempotent_and_drops_removed_inputs(run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=8)
    _, out = run_cli(tree.root, "--mask-scale", "50")

    def snapshot() -> dict[str, bytes]:
        return {
            str(p.relative_to(out)): p.read_bytes()
            for p in out.rglob("*")
            if p.is_file() and p.name != "_run.json"
        }

    first = snapshot()
    tables_first = {t: sorted(map(str, read_output(out, t))) for t in ("masks", "instances")}
    _, _ = run_cli(tree.root, "--mask-scale", "50")
    second = snapshot()
    # Nothing written before is changed in place; the rerun adds a new version of each table.
    assert {rel: second[rel] for rel in first} == first
    assert {t: sorted(map(str, read_output(out, t))) for t in tables_first} == tables_first

    removed = next(i for i in tree.images if i.instance_path and i.binary_path)
    (tree.root / removed.instance_path).unlink()
    code, _ = run_cli(tree.root, "--mask-scale", "50")
    assert code == 0
    paths = [row["path"] for row in read_output(out, "masks")]
    assert removed.instance_path not in paths and len(paths) == len(set(paths))
    assert all((out / row["scaled_path"]).exists() for row in read_output(out, "masks"))
    assert not any(r["path"] == removed.instance_path for r in read_output(out, "instances"))
    assert not [p for p in (out / "_work").rglob("*") if p.is_file()]  # parked rows removed


def test_output_inside_input_is_not_read_back(run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=4)
    out = tree.root / "results"
    first, _ = run_cli(tree.root, "--mask-scale", "50", output=out)
    masks_before = read_output(out, "masks")
    second, _ = run_cli(tree.root, "--mask-scale", "50", output=out)
    assert first == second == 0
    assert read_output(out, "masks") == masks_before


def test_usage_errors_exit_2(run_cli: RunCli, tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=2)
    assert run_cli(tree.root, "--mask-scale", "0")[0] == 2
    assert run_cli(tree.root, "--storage-option", "novalue")[0] == 2
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tree.root, "--encoding", "v27")
    assert exit_info.value.code == 2


def test_missing_input_folder_exits_1_without_commit(
    run_cli: RunCli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(tmp_path / "does-not-exist")
    assert code == 1
    assert "does-not-exist" in capsys.readouterr().err
    assert not (out / "_run.json").exists()


def test_local_cluster_and_external_scheduler_equal_sync(run_cli: RunCli, tmp_path: Path) -> None:
    from distributed import LocalCluster

    tree = make_celantur_tree(tmp_path / "in", seed=6, images=10)
    _, sync_out = run_cli(tree.root, "--mask-scale", "50", output=tmp_path / "sync")
    code, local_out = run_cli(
        tree.root, "--mask-scale", "50", "--workers", "2", output=tmp_path / "local", scheduler=None
    )
    assert code == 0
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        code, external_out = run_cli(
            tree.root,
            "--mask-scale",
            "50",
            output=tmp_path / "external",
            scheduler=cluster.scheduler_address,
        )
    assert code == 0
    kinds = {
        out: json.loads((out / "_run.json").read_text())["scheduler"]
        for out in (local_out, external_out)
    }
    assert kinds[local_out]["kind"] == "local" and kinds[local_out]["workers"] == 2
    assert kinds[external_out]["kind"] == "external" and kinds[external_out]["workers"] == 2
    for out in (local_out, external_out):
        for table in ("masks", "instances", "detections", "frames", "errors", "summary"):
            assert _sorted_rows(out, table) == _sorted_rows(sync_out, table), (out, table)
        for scaled in (sync_out / "scaled").rglob("*.png"):
            assert (out / scaled.relative_to(sync_out)).read_bytes() == scaled.read_bytes()


def _sorted_rows(out: Path, table: str) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in read_output(out, table))


def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    assert main(["demo", str(tmp_path / "demo"), "--scheduler", "sync", "--images", "6"]) == 0
    printed = capsys.readouterr().out
    assert "accounting:" in printed and "person" in printed
    assert (tmp_path / "demo" / "_run.json").exists()
    assert main(["summary", str(tmp_path / "demo")]) == 0
    assert "accounting:" in capsys.readouterr().out


def test_copy_of_tree_gives_same_part_names(run_cli: RunCli, tmp_path: Path) -> None:
    """Staged part names derive from relative paths, sizes and versions, not from the absolute
    root (so an incremental run over a moved tree reuses its work)."""
    tree = make_celantur_tree(tmp_path / "in", seed=8, images=3)
    _, first = run_cli(tree.root, output=tmp_path / "a")
    copy = tmp_path / "copy"
    shutil.copytree(tree.root, copy, copy_function=shutil.copy2)
    _, second = run_cli(copy, output=tmp_path / "b")
    assert sorted(p.name for p in (first / "_staged").glob("part-*.arrow")) == sorted(
        p.name for p in (second / "_staged").glob("part-*.arrow")
    )


def test_unreachable_scheduler_exits_1_naming_it(
    run_cli: RunCli,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=1)
    code, out = run_cli(tree.root, scheduler="tcp://127.0.0.1:9")
    assert code == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9 (from option 'scheduler')" in (
        capsys.readouterr().err
    )
    assert not (out / "_run.json").exists()


def test_small_run_without_scheduler_stays_in_process(
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No scheduler and no worker count: a small input runs in-process, says so in the log and
    records the choice and its reason in _run.json; a worker count still starts a cluster, and
    so does an input over the limit."""
    from pipeline import graph
    from pipeline.config import ExecutionOptions
    from pipeline.graph import InputSize, open_executor

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=3)
    files = sum(1 for p in tree.root.rglob("*") if p.is_file())
    code, out = run_cli(tree.root, scheduler=None)
    assert code == 0
    assert "running in-process, no local cluster started" in capsys.readouterr().err
    recorded = json.loads((out / "_run.json").read_text())["scheduler"]
    assert recorded["kind"] == "sync" and recorded["workers"] == 1
    assert recorded["reason"].startswith(f"small run: {files} input files, ")
    monkeypatch.setattr(graph, "SMALL_RUN_FILES", files)  # the same tree, now over the limit
    assert not InputSize(files, 0).small()
    assert InputSize(files - 1, graph.SMALL_RUN_BYTES - 1).small()
    assert not InputSize(1, graph.SMALL_RUN_BYTES).small()
    with open_executor(ExecutionOptions(workers=1), inputs=InputSize(1, 1)) as executor:
        assert executor.description["kind"] == "local"


def test_dashboard_link_is_printed_when_the_cluster_starts(
    run_cli: RunCli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=2)
    code, _ = run_cli(tree.root, "--workers", "1", scheduler=None)
    assert code == 0
    captured = capsys.readouterr()
    assert "Dask dashboard: http://127.0.0.1:" in captured.err
    assert "Dask dashboard" not in captured.out


MALLOC_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def test_started_cluster_gets_the_malloc_settings_and_its_configuration():
    """Workers of the LocalCluster a run starts have WORKER_MALLOC_ENV in their environment
    (Dask's own MALLOC_TRIM_THRESHOLD_ stays) and run no statistical profiler; workers and
    scheduler tick and sample the system as LOCAL_CLUSTER_CONFIG says; the client's own
    configuration is left as it was."""
    import dask
    import distributed  # noqa: F401  (its configuration defaults)

    from pipeline.config import ExecutionOptions
    from pipeline.graph import WORKER_MALLOC_ENV, open_executor

    profiling = dask.config.get("distributed.worker.profile.enabled")
    with open_executor(ExecutionOptions(workers=1, progress=False)) as executor:
        assert executor.client is not None
        # A lambda travels by value: a worker cannot import this test module by name.
        seen = executor.client.run(lambda: {k: os.environ.get(k) for k in MALLOC_KEYS})
        callbacks = executor.client.run(
            lambda dask_worker: {
                k: c.callback_time for k, c in dask_worker.periodic_callbacks.items()
            }
        )
        scheduler = executor.client.cluster.scheduler.periodic_callbacks
        assert scheduler["tick"].callback_time == 200 and scheduler["monitor"].callback_time == 2000
    assert list(seen.values()) == [
        {"MALLOC_MMAP_THRESHOLD_": WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"],
         "MALLOC_TRIM_THRESHOLD_": "65536"}
    ]  # fmt: skip
    [times] = callbacks.values()
    assert "heartbeat" in times and "profile" not in times and "profile-cycle" not in times
    assert times["tick"] == 200 and times["monitor"] == 2000
    assert dask.config.get("distributed.worker.profile.enabled") == profiling
