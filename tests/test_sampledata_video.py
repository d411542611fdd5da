"""Tests of the sample video metadata generator (:mod:`pipeline.sampledata.video`)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from pipeline.formats.celantur import classify_name
from pipeline.sampledata.video import (
    OVERSIZED_FRAMES,
    QUIRK_MARGIN,
    PlantedGap,
    SampleVideo,
    VideoFleet,
    make_video_fleet,
)

TYPE_CODES = {"face": 103, "license plate": 104, "person": 102}
SIZE = (320, 178)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _iou(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _frames(fleet: VideoFleet, video: SampleVideo) -> list[list[dict[str, Any]]]:
    """The frames of each readable chunk of a video, in chunk order."""
    return [
        json.loads((fleet.root / chunk.path).read_text())
        for chunk in video.chunks
        if not chunk.corrupt
    ]


def _frames_by_id(fleet: VideoFleet, video: SampleVideo) -> dict[int, dict[str, Any]]:
    merged: dict[int, dict[str, Any]] = {}
    for frames in _frames(fleet, video):
        for frame in frames:
            if frame["id"] in merged:
                assert merged[frame["id"]] == frame  # the duplicate is identical
            merged[frame["id"]] = frame
    return merged


@dataclass
class _Track:
    label: str
    boxes: dict[int, list[int]] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return max(self.boxes)


def _link(frames: dict[int, dict[str, Any]]) -> tuple[list[_Track], list[PlantedGap]]:
    """Brute-force linking: a detection belongs to the track whose box (seen at most 4 frames
    earlier) overlaps it at IoU >= 0.1; the generator promises there is never more than one."""
    tracks: list[_Track] = []
    gaps: list[PlantedGap] = []
    for frame_id in sorted(frames):
        taken: set[int] = set()
        for det in frames[frame_id]["detections"]:
            label, box = det["type_label"], det["bbox"]
            candidates = [
                i
                for i, track in enumerate(tracks)
                if track.label == label
                and frame_id - 4 <= track.last < frame_id
                and _iou(track.boxes[track.last], box) >= 0.1
            ]
            same_frame = [
                other["bbox"]
                for other in frames[frame_id]["detections"]
                if other is not det and other["type_label"] == label
            ]
            assert all(_iou(box, other) < 0.1 for other in same_frame), frame_id
            assert len(candidates) <= 1, (frame_id, box)
            if not candidates:
                tracks.append(_Track(label, {frame_id: box}))
                continue
            track = tracks[candidates[0]]
            assert candidates[0] not in taken
            taken.add(candidates[0])
            last = track.last
            assert _iou(track.boxes[last], box) > 0.5, (frame_id, box)
            if last < frame_id - 1:
                gaps.append(
                    PlantedGap(label, last + 1, frame_id - 1, tuple(track.boxes[last]), tuple(box))
                )
            track.boxes[frame_id] = box
    return tracks, gaps


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> VideoFleet:
    """The default fleet (4 videos of 1300 frames, every quirk)."""
    return make_video_fleet(tmp_path_factory.mktemp("fleet"), seed=5)


@pytest.fixture(scope="module")
def wide_fleet(tmp_path_factory: pytest.TempPathFactory) -> VideoFleet:
    """Seven short videos in small chunks: each quirk in a video of its own."""
    root = tmp_path_factory.mktemp("wide")
    return make_video_fleet(root, seed=11, videos=7, frames_per_video=700, chunk_frames=100)


@pytest.fixture(scope="module", params=["default", "wide"])
def any_fleet(request: pytest.FixtureRequest, fleet: VideoFleet, wide_fleet: VideoFleet) -> Any:
    return fleet if request.param == "default" else wide_fleet


def test_deterministic(tmp_path: Path) -> None:
    a = make_video_fleet(tmp_path / "a", seed=3)
    b = make_video_fleet(tmp_path / "b", seed=3)
    files_a, files_b = _files(a.root), _files(b.root)
    assert files_a == files_b
    assert sorted(files_a) == list(a.files)
    assert a.videos == b.videos
    c = make_video_fleet(tmp_path / "c", seed=4)
    files_c = _files(c.root)
    assert any(files_c.get(name) != files_a[name] for name in files_a)


def test_default_layout(fleet: VideoFleet) -> None:
    assert [(v.folder, v.name) for v in fleet.videos] == [
        ("fleet-a/day.1", "cam-02"),
        ("fleet-a/day.1", "my-clip.mp4"),
        ("fleet-b/2024-05-01", "drive-2024-05-01"),
        ("fleet-b/run.2", "v1-1-1"),
    ]
    cam, clip, drive, v111 = fleet.videos
    assert cam.missing_ranges == ((500, 999),)
    assert [(c.start, c.end, c.corrupt) for c in cam.chunks] == [
        (0, 499, False),
        (1000, 1299, False),
        (1300, 1799, True),
    ]
    assert len(clip.duplicate_frames) == 1 and clip.nan_scores == 1
    assert [(c.start, c.end, len(c.frames)) for c in drive.chunks] == [
        (0, 499, 500),
        (500, 1009, OVERSIZED_FRAMES),
        (1010, 1299, 290),
    ]
    assert v111.out_of_range_frames == (499,)
    assert v111.chunks[0].path == "fleet-b/run.2/v1-1-1-0-498.json"
    assert [v.anonymised_key for v in fleet.videos] == ["is_anonymised"] * 3 + ["is_anonymized"]
    for video in fleet.videos:
        assert video.frame_count == 1300
        assert 2 <= video.objects <= 6
        assert 2 <= len(video.gaps) <= 4


def test_file_names_classify(any_fleet: VideoFleet) -> None:
    chunks = {chunk.path: (video, chunk) for video in any_fleet.videos for chunk in video.chunks}
    assert sorted(chunks) == list(any_fleet.files)
    for path, (video, chunk) in chunks.items():
        folder, _, name = path.rpartition("/")
        assert folder == video.folder
        named = classify_name(name)
        assert named is not None and named.kind == "video_metadata", path
        assert (named.video, named.chunk_start, named.chunk_end) == (
            video.name,
            chunk.start,
            chunk.end,
        )


def test_chunks_parse_and_hold_recorded_frames(any_fleet: VideoFleet) -> None:
    for video in any_fleet.videos:
        seen: Counter[int] = Counter()
        out_of_range: list[int] = []
        detections = nan_scores = 0
        for chunk in video.chunks:
            text = (any_fleet.root / chunk.path).read_text()
            if chunk.corrupt:
                assert chunk.start >= video.frame_count
                with pytest.raises(json.JSONDecodeError):
                    json.loads(text)
                continue
            frames = json.loads(text)
            assert isinstance(frames, list)
            ids = [frame["id"] for frame in frames]
            assert tuple(ids) == chunk.frames
            assert ids == sorted(ids)
            out_of_range += [i for i in ids if not chunk.start <= i <= chunk.end]
            seen.update(ids)
            for frame in frames:
                detections += len(frame["detections"])
                nan_scores += sum(math.isnan(det["score"]) for det in frame["detections"])
        assert tuple(out_of_range) == video.out_of_range_frames
        assert tuple(i for i, n in seen.items() if n > 1) == video.duplicate_frames
        assert all(n <= 2 for n in seen.values())
        missing = {f for s, e in video.missing_ranges for f in range(s, e + 1)}
        assert set(seen) | missing == set(range(video.frame_count))
        assert not set(seen) & missing
        assert detections == video.detections
        assert nan_scores == video.nan_scores


def test_frames_and_detections_are_well_formed(any_fleet: VideoFleet) -> None:
    width, height = SIZE
    for video in any_fleet.videos:
        other_key = "is_anonymized" if video.anonymised_key == "is_anonymised" else "is_anonymised"
        for frames in _frames(any_fleet, video):
            for frame in frames:
                assert list(frame) == ["id", "detections", "size", "duration"]
                assert frame["size"] == [height, width]
                assert 0.2 <= frame["duration"] <= 0.5
                for index, det in enumerate(frame["detections"]):
                    assert det["id"] == index
                    assert det["parent_image"] == frame["id"]
                    x1, y1, x2, y2 = det["bbox"]
                    assert all(isinstance(v, int) for v in det["bbox"])
                    assert det["offset"] == [x1, y1]
                    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
                    assert 20 <= x2 - x1 <= 60 and 20 <= y2 - y1 <= 60
                    assert det["type"] == TYPE_CODES[det["type_label"]]
                    assert math.isnan(det["score"]) or 0.5 <= det["score"] <= 1.0
                    assert det[video.anonymised_key] is True and other_key not in det
                    assert det["color"] is None


def test_planted_gaps_are_the_only_gaps(any_fleet: VideoFleet) -> None:
    """Brute force: link every detection, compare the gaps found with the planted ones."""
    for video in any_fleet.videos:
        tracks, gaps = _link(_frames_by_id(any_fleet, video))
        assert gaps == list(video.gaps), video.name
        if not video.missing_ranges:
            assert len(tracks) == video.objects
        for gap in video.gaps:
            assert 1 <= gap.last_missing_frame - gap.first_missing_frame + 1 <= 3


def test_gaps_keep_clear_of_quirks(any_fleet: VideoFleet) -> None:
    for video in any_fleet.videos:
        quirk_frames = [*video.duplicate_frames, *video.out_of_range_frames]
        spans = [(g.first_missing_frame - 1, g.last_missing_frame + 1) for g in video.gaps]
        for lo, hi in spans:
            assert all(f < lo - QUIRK_MARGIN or f > hi + QUIRK_MARGIN for f in quirk_frames)
            for s, e in video.missing_ranges:
                assert hi + QUIRK_MARGIN < s or lo - QUIRK_MARGIN > e
        for (_, hi), (lo, _) in pairwise(spans):
            assert hi + QUIRK_MARGIN < lo


def _straddles(video: SampleVideo, gap: PlantedGap) -> bool:
    readable = [chunk for chunk in video.chunks if not chunk.corrupt]
    return any(
        gap.first_missing_frame <= before.frames[-1] < after.frames[0] <= gap.last_missing_frame
        for before, after in pairwise(readable)
    )


def test_a_gap_straddles_a_chunk_boundary(any_fleet: VideoFleet) -> None:
    assert any(_straddles(video, gap) for video in any_fleet.videos for gap in video.gaps)


def test_each_quirk_in_its_own_video(wide_fleet: VideoFleet) -> None:
    flags = [
        (
            bool(v.missing_ranges),
            bool(v.duplicate_frames),
            any(len(c.frames) > 500 for c in v.chunks),
            bool(v.out_of_range_frames),
            any(c.corrupt for c in v.chunks),
            v.nan_scores > 0,
        )
        for v in wide_fleet.videos
    ]
    expected = [tuple(i == k for i in range(6)) for k in range(6)] + [(False,) * 6]
    assert flags == expected
    assert wide_fleet.videos[6].name == "extra.cam-006"


def test_without_quirks_or_folders(tmp_path: Path) -> None:
    fleet = make_video_fleet(
        tmp_path,
        seed=2,
        videos=3,
        frames_per_video=250,
        chunk_frames=100,
        quirks=False,
        folder_names=False,
    )
    assert all("/" not in path for path in fleet.files)
    for video in fleet.videos:
        assert video.folder == ""
        assert [(c.start, c.end) for c in video.chunks] == [(0, 99), (100, 199), (200, 249)]
        assert all(c.frames == tuple(range(c.start, c.end + 1)) for c in video.chunks)
        assert not (video.missing_ranges or video.duplicate_frames or video.out_of_range_frames)
        assert video.nan_scores == 0 and video.anonymised_key == "is_anonymised"
        _, gaps = _link(_frames_by_id(fleet, video))
        assert gaps == list(video.gaps) and 2 <= len(gaps) <= 4
    assert any(_straddles(video, gap) for video in fleet.videos for gap in video.gaps)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"videos": -1},
        {"chunk_frames": 501},
        {"chunk_frames": 5},
        {"frames_per_video": 1061},
        {"frames_per_video": 99, "quirks": False},
        {"size": (90, 178)},
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_video_fleet(tmp_path, **kwargs)
