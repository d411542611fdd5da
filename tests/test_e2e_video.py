"""End-to-end runs of ``mask-pipeline celantur`` on video metadata fleets, checked against the
fleets' ground truth (:mod:`pipeline.sampledata.video`), the chunk files themselves (read with
``json.loads``) and an independent whole-video reference of the linking rule
(``tests/video_reference.py``)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from reference import read_output
from video_reference import (
    RefGap,
    chunk_of,
    fleet_chunks,
    gap_key,
    iou,
    reference_gaps,
    row_key,
    video_frames,
)

from pipeline import runner
from pipeline.cli import main
from pipeline.formats import video as video_format
from pipeline.sampledata import mot
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import SampleVideo, VideoFleet, make_video_fleet

RunCli = Callable[..., tuple[int, Path]]
FLEET_VIDEOS = 6


def _run(source: Path, out: Path, *args: str, scheduler: str | None = "sync") -> int:
    argv = ["celantur", str(source), str(out), "--no-progress", *args]
    if scheduler is not None:
        argv += ["--scheduler", scheduler]
    return main(argv)


def _media(video: SampleVideo) -> str:
    return f"{video.folder}/{video.name}" if video.folder else video.name


def _docs(fleet: VideoFleet, video: SampleVideo) -> dict[str, list[dict[str, Any]]]:
    """The frames of each readable chunk, by path (``json.loads`` accepts the NaN score)."""
    return {
        chunk.path: json.loads((fleet.root / chunk.path).read_text())
        for chunk in video.chunks
        if not chunk.corrupt
    }


def _first_copies(frames: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    kept: dict[int, dict[str, Any]] = {}
    for frame in frames:
        kept.setdefault(frame["id"], frame)
    return kept


def _by_media(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["media"], []).append(row)
    return grouped


def _sorted_rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((tuple(sorted(r.items())) for r in rows), key=repr)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> VideoFleet:
    """Six videos: every quirk in a video of its own."""
    return make_video_fleet(tmp_path_factory.mktemp("fleet") / "in", videos=FLEET_VIDEOS)


@pytest.fixture(scope="module")
def fleet_run(fleet: VideoFleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """One default run (in-process scheduler) over the fleet."""
    out = tmp_path_factory.mktemp("fleet-run") / "out"
    return _run(fleet.root, out), out


# ---------------------------------------------------------------------------------------------
# a. chunks/, detections/, frames/, errors/, exit code, accounting
# ---------------------------------------------------------------------------------------------


def test_fleet_has_every_quirk(fleet: VideoFleet) -> None:
    """The layout the other tests rely on (each quirk in exactly one video)."""
    assert sum(1 for v in fleet.videos for c in v.chunks if c.corrupt) == 1
    assert sum(len(v.missing_ranges) for v in fleet.videos) == 1
    assert sum(len(v.duplicate_frames) for v in fleet.videos) == 1
    assert sum(len(v.out_of_range_frames) for v in fleet.videos) == 1
    assert sum(v.nan_scores for v in fleet.videos) == 1
    assert sum(1 for v in fleet.videos for c in v.chunks if len(c.frames) > 500) == 1


def test_chunk_rows_equal_the_ground_truth(fleet: VideoFleet, fleet_run: tuple[int, Path]) -> None:
    _, out = fleet_run
    expected = {}
    for video in fleet.videos:
        docs = _docs(fleet, video)
        for chunk in video.chunks:
            if chunk.corrupt:
                continue
            named = chunk_of(chunk.path)
            assert named is not None and (named.start, named.end) == (chunk.start, chunk.end)
            ids = set(chunk.frames)
            in_range = {f for f in ids if chunk.start <= f <= chunk.end}
            kept = _first_copies(docs[chunk.path])
            assert set(kept) == ids
            expected[chunk.path] = {
                "source": chunk.path,
                "media": _media(video),
                "chunk_start": chunk.start,
                "chunk_end": chunk.end,
                "frames": len(chunk.frames),
                "detections": sum(len(f["detections"]) for f in kept.values()),
                "missing_frames": (chunk.end - chunk.start + 1) - len(in_range),
                "duplicate_frames": len(chunk.frames) - len(ids),
                "out_of_range_frames": len(ids - in_range),
            }
    rows = read_output(out, "chunks")
    assert len(rows) == len(expected)
    assert {row["source"]: row for row in rows} == expected
    # The quirks show up where they were planted (the duplicate and the out-of-range frame).
    quirks = Counter(
        (r["duplicate_frames"], r["out_of_range_frames"], r["missing_frames"])
        for r in expected.values()
    )
    assert quirks == {(0, 0, 0): len(expected) - 2, (1, 0, 0): 1, (0, 1, 0): 1}


def test_detection_and_frame_rows_equal_the_json(
    fleet: VideoFleet, fleet_run: tuple[int, Path]
) -> None:
    _, out = fleet_run
    detections = _by_media(read_output(out, "detections"))
    frames = _by_media(read_output(out, "frames"))
    for video in fleet.videos:
        media = _media(video)
        docs = _docs(fleet, video)
        dropped = 0
        expected_detections = []
        expected_frames = []
        for path, frame_list in docs.items():
            kept = _first_copies(frame_list)
            dropped += sum(len(f["detections"]) for f in frame_list if kept[f["id"]] is not f)
            chunk = chunk_of(path)
            assert chunk is not None
            for frame in kept.values():
                height, width = frame["size"]
                expected_frames.append(
                    (path, frame["id"], len(frame["detections"]), width, height,
                     frame["duration"], chunk.start, chunk.end)
                )  # fmt: skip
                for index, d in enumerate(frame["detections"]):
                    score = None if math.isnan(d["score"]) else d["score"]
                    expected_detections.append(
                        (path, frame["id"], index, d["id"], d["type"], d["type_label"], score,
                         d[video.anonymised_key], tuple(map(float, d["bbox"])),
                         tuple(map(float, d["offset"])), None, width, height)
                    )  # fmt: skip
        assert len(detections[media]) == video.detections - dropped
        assert (dropped > 0) == bool(video.duplicate_frames)
        got_detections = [
            (r["source"], r["frame"], r["detection_index"], r["detection_id"], r["type"],
             r["type_label"], r["score"], r["is_anonymised"],
             (r["x1"], r["y1"], r["x2"], r["y2"]), (r["offset_x"], r["offset_y"]), r["color"],
             r["frame_width"], r["frame_height"])
            for r in detections[media]
        ]  # fmt: skip
        assert sorted(got_detections, key=repr) == sorted(expected_detections, key=repr)
        assert len(frames[media]) == sum(len(set(c.frames)) for c in video.chunks)
        got_frames = [
            (r["source"], r["frame"], r["detections"], r["width"], r["height"], r["duration"],
             r["chunk_start"], r["chunk_end"])
            for r in frames[media]
        ]  # fmt: skip
        assert sorted(got_frames) == sorted(expected_frames)


def test_errors_exit_code_and_accounting(fleet: VideoFleet, fleet_run: tuple[int, Path]) -> None:
    code, out = fleet_run
    assert code == 3  # the corrupt chunk
    expected: list[tuple[str, str, str, str]] = []
    must_contain: dict[tuple[str, str], str] = {}
    for video in fleet.videos:
        docs = _docs(fleet, video)
        for chunk in video.chunks:
            if chunk.corrupt:
                expected.append((chunk.path, "decode", "json_syntax", "error"))
                continue
            if len(chunk.frames) > 500:
                expected.append((chunk.path, "validate", "too_many_frames", "warning"))
                must_contain[(chunk.path, "too_many_frames")] = f"{len(chunk.frames)} frames"
            outside = [f for f in chunk.frames if not chunk.start <= f <= chunk.end]
            if outside:
                expected.append((chunk.path, "validate", "frame_out_of_range", "warning"))
                must_contain[(chunk.path, "frame_out_of_range")] = (
                    f"{len(outside)} frame ids outside {chunk.start}-{chunk.end} "
                    f"(e.g. {outside[0]})"
                )
            repeated = [f for f, n in Counter(chunk.frames).items() if n > 1]
            if repeated:
                expected.append((chunk.path, "validate", "duplicate_frame", "warning"))
                must_contain[(chunk.path, "duplicate_frame")] = f"frame id {repeated[0]} "
            nan_frames = [
                frame["id"]
                for frame in docs[chunk.path]
                if any(math.isnan(d["score"]) for d in frame["detections"])
            ]
            if nan_frames:
                expected.append((chunk.path, "validate", "bad_score", "warning"))
                must_contain[(chunk.path, "bad_score")] = f"frame {nan_frames[0]}: detection 0"
        ordered = sorted(video.chunks, key=lambda c: c.start)
        for previous, current in pairwise(ordered):
            if current.start > previous.end + 1:
                expected.append((current.path, "validate", "chunk_gap", "warning"))
                must_contain[(current.path, "chunk_gap")] = (
                    f"frames {previous.end + 1}-{current.start - 1} of video {_media(video)}"
                )
    rows = read_output(out, "errors")
    got = [(r["path"], r["stage"], r["error"], r["severity"]) for r in rows]
    assert sorted(got) == sorted(expected)
    # the missing chunk and the out-of-range frame each leave one hole between name ranges
    assert sum(1 for e in expected if e[2] == "chunk_gap") == 2
    for row in rows:
        assert row["message"].startswith(row["path"] + ": "), row
        needle = must_contain.get((row["path"], row["error"]))
        if needle is not None:
            assert needle in row["message"], row
    record = json.loads((out / "_run.json").read_text())
    accounting = record["accounting"]
    assert accounting["found"] == accounting["in_tables"] + accounting["in_errors"]
    assert accounting["found"] == len(fleet.files)
    assert accounting["in_errors"] == 1
    assert record["inputs"]["found"]["video_metadata"] == len(fleet.files)
    assert record["errors"] == {"error": 1, "warning": len(expected) - 1}
    assert record["exit_code"] == 3


# ---------------------------------------------------------------------------------------------
# b. gaps/ equals the planted gaps
# ---------------------------------------------------------------------------------------------


def _unlinked_frame_blinks(fleet: VideoFleet, video: SampleVideo) -> list[tuple[Any, ...]]:
    """Blinks an out-of-range frame causes when it is not linked: only when its first copy sits
    in a chunk that starts after it (README's rule); every object seen around it then blinks
    there for one frame."""
    docs = _docs(fleet, video)
    first_chunk: dict[int, Any] = {}
    merged: dict[int, dict[str, Any]] = {}
    for chunk in sorted((c for c in video.chunks if not c.corrupt), key=lambda c: c.start):
        for frame in docs[chunk.path]:
            first_chunk.setdefault(frame["id"], chunk)
            merged.setdefault(frame["id"], frame)
    blinks = []
    for f in video.out_of_range_frames:
        if f >= first_chunk[f].start:
            continue  # linked
        for before in merged[f - 1]["detections"]:
            after = [
                d
                for d in merged[f + 1]["detections"]
                if d["type_label"] == before["type_label"] and iou(d["bbox"], before["bbox"]) > 0.5
            ]
            if after:
                assert len(after) == 1
                blinks.append(
                    (before["type_label"], f, f, tuple(before["bbox"]), tuple(after[0]["bbox"]), 1)
                )
    return blinks


def _expected_gaps(fleet: VideoFleet) -> dict[str, list[tuple[Any, ...]]]:
    expected = {}
    for video in fleet.videos:
        planted = [
            (g.type_label, g.first_missing_frame, g.last_missing_frame, g.bbox_before,
             g.bbox_after, 0)
            for g in video.gaps
        ]  # fmt: skip
        expected[_media(video)] = sorted(planted + _unlinked_frame_blinks(fleet, video))
    return expected


def _gap_rows(out: Path) -> dict[str, list[tuple[Any, ...]]]:
    got: dict[str, list[tuple[Any, ...]]] = {}
    for row in read_output(out, "gaps"):
        before = tuple(int(row[f"before_{c}"]) for c in ("x1", "y1", "x2", "y2"))
        after = tuple(int(row[f"after_{c}"]) for c in ("x1", "y1", "x2", "y2"))
        assert row["missing_frames"] == row["last_missing_frame"] - row["first_missing_frame"] + 1
        got.setdefault(row["media"], []).append(
            (row["type_label"], row["first_missing_frame"], row["last_missing_frame"], before,
             after, row["frames_without_metadata"])
        )  # fmt: skip
    return {media: sorted(rows) for media, rows in got.items()}


def test_gaps_equal_the_planted_gaps(fleet: VideoFleet, fleet_run: tuple[int, Path]) -> None:
    _, out = fleet_run
    expected = _expected_gaps(fleet)
    got = _gap_rows(out)
    assert {m: g for m, g in got.items() if g} == {m: g for m, g in expected.items() if g}
    # every planted gap (none without metadata) was found, among them ones across chunk files
    straddling = [
        g
        for video in fleet.videos
        for g in video.gaps
        if any(g.first_missing_frame - 1 <= c.end <= g.last_missing_frame for c in video.chunks)
    ]
    assert len(straddling) >= 3
    assert sum(len(v.gaps) for v in fleet.videos) == sum(
        1 for rows in got.values() for r in rows if r[5] == 0
    )


# ---------------------------------------------------------------------------------------------
# f. summary/ per video
# ---------------------------------------------------------------------------------------------


def test_video_summary_rows_equal_the_ground_truth(
    fleet: VideoFleet, fleet_run: tuple[int, Path]
) -> None:
    _, out = fleet_run
    expected_gaps = _expected_gaps(fleet)
    expected = {}
    for video in fleet.videos:
        docs = _docs(fleet, video)
        readable = [c for c in video.chunks if not c.corrupt]
        linked: dict[int, dict[str, Any]] = {}  # first copy of each frame: it counts
        for chunk in sorted(readable, key=lambda c: c.start):
            for frame in docs[chunk.path]:
                linked.setdefault(frame["id"], frame)
        span = max(c.end for c in readable) - min(c.start for c in readable) + 1
        ordered = sorted(video.chunks, key=lambda c: c.start)
        expected[_media(video)] = {
            "frames": len(linked),
            "frames_with_detections": sum(1 for f in linked.values() if f["detections"]),
            "detections": sum(len(f["detections"]) for f in linked.values()),
            "chunk_gaps": sum(1 for a, b in pairwise(ordered) if b.start > a.end + 1),
            "chunk_overlaps": 0,
            "missing_frames": span - len(linked),
            "duplicate_frames": len(video.duplicate_frames),
            "anonymisation_gaps": len(expected_gaps[_media(video)]),
        }
    rows = [r for r in read_output(out, "summary") if r["scope"] == "video"]
    assert sorted(r["name"] for r in rows) == sorted(expected)
    differences = {
        row["name"]: {
            field: {"got": row[field], "expected": value}
            for field, value in expected[row["name"]].items()
            if row[field] != value
        }
        for row in rows
    }
    assert {media: d for media, d in differences.items() if d} == {}


# ---------------------------------------------------------------------------------------------
# c. independence from batching and scheduler
# ---------------------------------------------------------------------------------------------


def test_tables_do_not_depend_on_batching_or_scheduler(
    fleet: VideoFleet, fleet_run: tuple[int, Path], tmp_path: Path
) -> None:
    _, default_out = fleet_run
    runs = {
        "sync, one chunk per batch": (("--batch-bytes", "1"), "sync"),
        "local cluster, 2 workers": (("--workers", "2"), None),
        "local cluster, 2 workers, one chunk per batch": (
            ("--workers", "2", "--batch-bytes", "1"),
            None,
        ),
    }
    outputs = {"sync, default batches": default_out}
    for index, (name, (args, scheduler)) in enumerate(runs.items()):
        out = tmp_path / f"out-{index}"
        assert _run(fleet.root, out, *args, scheduler=scheduler) == 3, name
        outputs[name] = out
    chunk_files = len(fleet.files)
    batches = {
        name: json.loads((out / "_run.json").read_text())["inputs"]["batches"]
        for name, out in outputs.items()
    }
    assert batches["sync, one chunk per batch"] == chunk_files
    assert batches["sync, default batches"] < chunk_files
    kinds = {
        name: json.loads((out / "_run.json").read_text())["scheduler"]["kind"]
        for name, out in outputs.items()
    }
    assert kinds["sync, default batches"] == "sync"
    assert kinds["local cluster, 2 workers"] != "sync"
    # Both ways of linking are compared: videos within one batch, linked by that batch's pass-1
    # task (ledger entries chunks-<batch>-tracks-<videos>), and videos over several, in pass 2.
    linking = {name: _linking(out) for name, out in outputs.items()}
    assert linking["sync, default batches"]["in pass 1"] > 0
    assert linking["sync, one chunk per batch"]["in pass 2"] > 0
    baseline = {
        table: _sorted_rows(read_output(default_out, table))
        for table in ("gaps", "chunks", "summary", "errors")
    }
    assert baseline["gaps"] and baseline["chunks"]
    for name, out in outputs.items():
        for table, rows in baseline.items():
            assert _sorted_rows(read_output(out, table)) == rows, (name, table)


def _linking(out: Path) -> Counter[str]:
    """How many of a run's tasks linked videos: pass-1 chunk batches and pass-2 tasks, by their
    ledger entries."""
    names = [path.stem for path in (out / "_ledger").iterdir()]
    return Counter(
        "in pass 1" if name.startswith("chunks-") else "in pass 2"
        for name in names
        if name.startswith("tracks-") or (name.startswith("chunks-") and "-tracks-" in name)
    )


# ---------------------------------------------------------------------------------------------
# d. equality with one sequential pass over each whole video
# ---------------------------------------------------------------------------------------------


def _perturbed_detection(
    detection: dict[str, Any], rng: np.random.Generator
) -> dict[str, Any] | None:
    if rng.random() < 0.15:
        return None
    roll = rng.random()
    if roll < 0.01:
        return {**detection, "bbox": None}
    if roll < 0.02:
        return {**detection, "score": float("nan")}
    return detection


def _crossing_frame(
    frame: int, objects: list[dict[str, Any]], rng: np.random.Generator
) -> dict[str, Any]:
    detections = []
    for obj in objects:
        if not obj["first"] <= frame <= obj["last"]:
            continue
        t = frame - obj["first"]
        x1, y1 = obj["x"] + obj["vx"] * t, obj["y"] + obj["vy"] * t
        detection: dict[str, Any] = {
            "id": 0,
            "parent_image": frame,
            "offset": [x1, y1],
            "bbox": [x1, y1, x1 + obj["w"], y1 + obj["h"]],
            "type": 103,
            "score": round(float(rng.uniform(0.5, 1)), 4),
            "is_anonymised": True,
            "color": None,
        }
        if obj["label"] is not None:
            detection["type_label"] = obj["label"]
        perturbed = _perturbed_detection(detection, rng)
        if perturbed is not None:
            detections.append(perturbed)
    order = rng.permutation(len(detections))
    detections = [{**detections[i], "id": n} for n, i in enumerate(order)]
    return {"id": frame, "detections": detections, "size": [1000, 1000], "duration": 0.25}


def _crossing_objects(rng: np.random.Generator, frames: int) -> list[dict[str, Any]]:
    """Same-label objects that cross each other, identical twins (exact IoU ties), fast movers
    (IoU across a blink falls below the thresholds as the blink grows), an unlabelled one and
    plates moving at exactly the IoU thresholds."""
    objects = []
    for row, label in enumerate(("face", "person", "face")):
        speed = int(rng.integers(1, 4))
        size = int(rng.integers(24, 40))
        y = 40 + 160 * row
        objects.append({"label": label, "x": 10, "y": y, "vx": speed, "vy": 0, "w": size,
                        "h": size + 6, "first": 0, "last": frames - 1})  # fmt: skip
        late = int(rng.integers(0, 10))
        objects.append({"label": label, "x": 10 + speed * (frames - 1),
                        "y": y + int(rng.integers(-5, 6)), "vx": -speed, "vy": 0, "w": size,
                        "h": size + 6, "first": late, "last": frames - 1})  # fmt: skip
    twin_first = int(rng.integers(0, frames // 2))
    for _ in range(2):
        objects.append({"label": "face", "x": 600, "y": 600, "vx": 0, "vy": 0, "w": 30, "h": 30,
                        "first": twin_first, "last": frames - 1})  # fmt: skip
    for label in ("person", None):
        objects.append({"label": label, "x": 700, "y": 100 + (0 if label else 300),
                        "vx": int(rng.integers(-6, 7)), "vy": int(rng.integers(2, 7)),
                        "w": 30, "h": 40, "first": 0, "last": frames - 1})  # fmt: skip
    # Plates at exactly the IoU thresholds (the thresholds are inclusive): 40 px wide moving
    # 10 px a frame (IoU 0.6 between consecutive frames), 40 px at 5 px (0.6 across a one-frame
    # blink) and 26 px at 7 px (0.3 across a one-frame blink).
    for y, (width, speed) in ((860, (40, 10)), (900, (40, 5)), (940, (26, 7))):
        objects.append({"label": "license plate", "x": 0, "y": y, "vx": speed, "vy": 0,
                        "w": width, "h": 20, "first": 0, "last": frames - 1})  # fmt: skip
    return objects


def write_crossing_fleet(root: Path, seed: int, frames: int = 200, chunk: int = 50) -> None:
    """Three videos of crossing objects with random drops, chunked with every linking quirk:
    a chunk in reverse frame order and a repeated frame with a different second copy (video 0),
    overlapping chunks whose overlapped frames differ (video 1), a frame outside its chunk's
    name range and a missing chunk (video 2); whole frames without metadata in every video."""
    rng = np.random.default_rng(seed)
    for video, folder in enumerate(("", "cam.a", "cam.b/x-1")):
        objects = _crossing_objects(rng, frames)
        name = f"cross-{video}.mp4"
        (root / folder).mkdir(parents=True, exist_ok=True)
        ranges = [(s, min(s + chunk, frames) - 1) for s in range(0, frames, chunk)]
        for index, (start, end) in enumerate(ranges):
            name_start, name_end = start, end
            ids = list(range(start, end + 1))
            if video == 1 and index == 2:
                name_start = start - 5  # overlaps the previous chunk, which holds all of them
                ids = list(range(name_start, end + 1))
            if video == 2 and index == 0:
                name_end = end - 1  # the last frame is outside the name's range
            if video == 2 and index == 2:
                continue  # a missing chunk
            keep_all = video == 1 and index == 1
            docs = [
                _crossing_frame(f, objects, rng)
                for f in ids
                if (keep_all and f > end - 5) or rng.random() > 0.02
            ]
            if video == 0 and index == 1:
                docs.reverse()
            if video == 0 and index == 2:
                position = len(docs) // 2
                docs.insert(position + 1, _crossing_frame(docs[position]["id"], objects, rng))
            path = root / folder / f"{name}-{name_start}-{name_end}.json"
            path.write_text(json.dumps(docs, allow_nan=True))


def _perturb_fleet(fleet: VideoFleet, seed: int) -> None:
    """Drop random detections from every readable chunk (every copy of a frame on its own)."""
    rng = np.random.default_rng(seed)
    for path in fleet.files:
        file = fleet.root / path
        try:
            frames = json.loads(file.read_text())
        except ValueError:
            continue  # the corrupt chunk
        for frame in frames:
            frame["detections"] = [d for d in frame["detections"] if rng.random() >= 0.1]
        file.write_text(json.dumps(frames, allow_nan=True))


@pytest.fixture(scope="module")
def perturbed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("perturbed") / "in"
    write_crossing_fleet(root / "crossing", seed=11)
    planted = make_video_fleet(root / "planted", seed=3, videos=4)
    _perturb_fleet(planted, seed=12)
    return root


def _assert_same_tracks(rows: list[dict[str, Any]], reference: dict[str, list[RefGap]]) -> None:
    """The pipeline's track numbers and the reference's name the same tracks (a bijection)."""
    by_key: dict[tuple[Any, ...], set[int]] = {}
    for media, gaps in reference.items():
        for g in gaps:
            by_key.setdefault(gap_key(media, g), set()).add(g.track)
    mapping: dict[tuple[str, int], int] = {}
    for row in rows:
        candidates = by_key[row_key(row)]
        if len(candidates) > 1:
            continue  # identical gaps of twin tracks: either numbering fits
        (ref_track,) = candidates
        assert mapping.setdefault((row["media"], row["track"]), ref_track) == ref_track
    assert len(mapping) == len({(media, ref) for (media, _), ref in mapping.items()})


def _straddles(root: Path, gaps: dict[str, list[RefGap]]) -> int:
    """Reference gaps whose frames before and after lie in different chunk files."""
    count = 0
    for media, chunks in fleet_chunks(root).items():
        chunk_at = {frame: chunk.path for frame, _, chunk, _ in video_frames(root, chunks)}
        count += sum(
            1 for g in gaps.get(media, []) if chunk_at[g.first - 1] != chunk_at[g.last + 1]
        )
    return count


@pytest.mark.parametrize(
    ("min_iou", "max_gap", "min_hits", "high_score"),
    [(0.3, 1, 3, 0.5), (0.3, 3, 3, 0.5), (0.3, 5, 1, 0.8), (0.6, 3, 2, 0.5), (0.1, 5, 3, 0.7)],
)
def test_gaps_equal_one_sequential_pass(
    perturbed_root: Path,
    tmp_path: Path,
    min_iou: float,
    max_gap: int,
    min_hits: int,
    high_score: float,
) -> None:
    out = tmp_path / "out"
    args = (
        "--gap-iou",
        str(min_iou),
        "--gap-max-frames",
        str(max_gap),
        "--batch-bytes",
        "60000",
        "--gap-min-hits",
        str(min_hits),
        "--gap-high-score",
        str(high_score),
    )
    assert _run(perturbed_root, out, *args) == 3  # the planted fleet's corrupt chunk
    reference = reference_gaps(
        perturbed_root, min_iou=min_iou, max_gap=max_gap, min_hits=min_hits, high_score=high_score
    )
    rows = read_output(out, "gaps")
    expected = sorted((gap_key(m, g) for m, gaps in reference.items() for g in gaps), key=repr)
    assert sorted(map(row_key, rows), key=repr) == expected
    _assert_same_tracks(rows, reference)
    # the comparison is not vacuous: many gaps, across chunk files, with and without metadata
    assert len(expected) > 100
    assert _straddles(perturbed_root, reference) >= 10
    assert any(g.unprocessed for gaps in reference.values() for g in gaps)
    record = json.loads((out / "_run.json").read_text())
    assert record["inputs"]["batches"] > 4


def test_a_frame_only_a_later_overlapping_chunk_holds_is_linked(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """Chunk ``v-0-19`` lacks frame 10, chunk ``v-10-29`` overlaps it and holds frame 10: the
    only copy of frame 10 is linked (README: the first copy counts; one sequential pass)."""
    source = tmp_path / "in"
    source.mkdir()

    def frame(f: int) -> dict[str, Any]:
        box = [10, 10, 40, 40]
        detection = {"id": 0, "bbox": box, "offset": box[:2], "type": 103, "type_label": "face",
                     "score": 0.9, "is_anonymised": True, "color": None}  # fmt: skip
        return {"id": f, "detections": [detection], "size": [100, 200], "duration": 0.25}

    (source / "v-0-19.json").write_text(json.dumps([frame(f) for f in range(20) if f != 10]))
    (source / "v-10-29.json").write_text(json.dumps([frame(f) for f in range(10, 30)]))
    code, out = run_cli(source)
    assert code == 0
    assert reference_gaps(source) == {"v": []}
    video = next(r for r in read_output(out, "summary") if r["scope"] == "video")
    got = {k: video[k] for k in ("frames", "missing_frames", "duplicate_frames")}
    got["gaps"] = [row_key(row) for row in read_output(out, "gaps")]
    assert got == {
        "frames": 30,
        "missing_frames": 0,
        "duplicate_frames": 9,  # frames 11-19 are held twice
        "gaps": [],
    }


# ---------------------------------------------------------------------------------------------
# e. a mixed tree: images and videos in one run
# ---------------------------------------------------------------------------------------------


def test_images_and_videos_in_one_run(run_cli: RunCli, tmp_path: Path) -> None:
    root = tmp_path / "in"
    tree = make_celantur_tree(root, seed=7, images=12)
    fleet = make_video_fleet(root, videos=4)
    code, out = run_cli(root)
    assert code == 3
    masks = read_output(out, "masks")
    assert {r["path"] for r in masks} == {
        p for i in tree.images for p in (i.instance_path, i.binary_path) if p
    }
    assert len(read_output(out, "instances")) > 0
    detections = read_output(out, "detections")
    image_detections = [r for r in detections if r["frame"] is None]
    expected_image = sum(
        len(json.loads((root / i.metadata_path).read_text())["detections"])
        for i in tree.images
        if i.metadata_path
    )
    assert len(image_detections) == expected_image
    video_detections = Counter(r["media"] for r in detections if r["frame"] is not None)
    for video in fleet.videos:
        docs = _docs(fleet, video)
        expected = sum(
            len(f["detections"]) for frames in docs.values() for f in _first_copies(frames).values()
        )
        assert video_detections[_media(video)] == expected
    image_frames = [r for r in read_output(out, "frames") if r["chunk_start"] is None]
    assert len(image_frames) == sum(1 for i in tree.images if i.metadata_path)
    assert len(read_output(out, "chunks")) == sum(
        1 for v in fleet.videos for c in v.chunks if not c.corrupt
    )
    assert _gap_rows(out) == {m: g for m, g in _expected_gaps(fleet).items() if g}
    errors = [r for r in read_output(out, "errors") if r["severity"] == "error"]
    assert [(r["path"], r["error"]) for r in errors] == [
        (c.path, "json_syntax") for v in fleet.videos for c in v.chunks if c.corrupt
    ]
    record = json.loads((out / "_run.json").read_text())
    found = record["inputs"]["found"]
    assert found["video_metadata"] == len(fleet.files)
    assert found["instance"] == sum(1 for i in tree.images if i.instance_path)
    assert found["binary"] == sum(1 for i in tree.images if i.binary_path)
    assert found["metadata"] == sum(1 for i in tree.images if i.metadata_path)
    accounting = record["accounting"]
    assert accounting["found"] == sum(found.values())
    assert accounting["found"] == accounting["in_tables"] + accounting["in_errors"]
    assert accounting["in_errors"] == 1
    scopes = Counter(r["scope"] for r in read_output(out, "summary"))
    assert scopes["video"] == len(fleet.videos)
    assert scopes["type"] > 0


def test_a_fault_on_one_chunk_fails_that_chunk_alone(tmp_path: Path) -> None:
    """Chunks are parsed a batch at a time, yet an unexpected exception on one chunk gives its
    error row (``internal``) and leaves the other chunks of its batch in the tables."""
    video = mot.planted_video("TUD-Campus", max_gap=3, seed=0)
    mot.write_chunks(tmp_path / "in", "clip.mp4", video, chunk_frames=10)
    paths = sorted((tmp_path / "in").glob("*.json"))
    faulty = paths[1]
    frames = json.loads(faulty.read_text())
    frames[0]["detections"][0]["color"] = [1, 2, 3]  # refused by the scanner: msgspec's path
    faulty.write_text(json.dumps(frames))
    with (
        mock.patch.object(video_format, "_parse_typed", side_effect=RuntimeError("a fault")),
        mock.patch.object(runner, "MIN_BATCHES", 1),  # chunks batched together
    ):
        assert _run(tmp_path / "in", tmp_path / "out") == 3
    batches = json.loads((tmp_path / "out" / "_run.json").read_text())["inputs"]["batches"]
    assert batches < len(paths) // 2  # so the faulty chunk shares its batch
    errors = read_output(tmp_path / "out", "errors")
    assert [(e["path"], e["error"], e["message"]) for e in errors if e["severity"] == "error"] == [
        (faulty.name, "internal", f"{faulty.name}: unexpected RuntimeError: a fault")
    ]
    chunks = read_output(tmp_path / "out", "chunks")
    assert sorted(c["source"] for c in chunks) == sorted(p.name for p in paths if p != faulty)
    detections = read_output(tmp_path / "out", "detections")
    assert {d["source"] for d in detections} == {p.name for p in paths if p != faulty}
