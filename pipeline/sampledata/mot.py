"""Real pedestrian footage for the gap tracker: MOT ground truth with planted detector misses.

The ``motmetrics`` wheel (a test dependency) ships the MOT Challenge ground truth of two real
sequences, ``TUD-Campus`` (71 frames, 8 people) and ``TUD-Stadtmitte`` (179 frames, 10 people),
both 640x480 at 25 fps. :func:`planted_video` turns one into what Celantur would report for it:
each ground-truth box a ``person`` detection, resampled to another frame rate, with detector
misses planted at random inside visible tracks (1..K consecutive detections of one person
removed while the person stays in view, never in a track's first ``LEAD`` frames nor its last),
so the true gaps are known exactly. :func:`write_chunks` writes it as video metadata chunks,
:func:`track` runs the gap tracker over it, :func:`score_gaps` compares found gaps with the
planted ones and :func:`identity_metrics` scores the tracks (IDF1, MOTA). Nothing is copied from
the wheel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib.resources import files
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.kernels.matching import box_iou
from pipeline.kernels.tracking import GapFinder, Linked

__all__ = [
    "LEAD",
    "MOT_SEQUENCES",
    "NOISE",
    "REGIMES",
    "PlantedVideo",
    "detector_noise",
    "gap_figures",
    "identity_metrics",
    "planted_video",
    "score_gaps",
    "track",
    "write_chunks",
]

#: The sequences with ground truth in ``motmetrics/data``.
MOT_SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")
#: Their frame size (width, height) and frame rate.
FRAME_SIZE = (640, 480)
NATIVE_FPS = 25
#: No miss is planted in a track's first LEAD frames (a tracker confirms a track first).
LEAD = 5

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PlantedVideo:
    """A resampled sequence with misses planted.

    ``frames``: every frame id (all have metadata); ``detections``: (n, 6) rows ``frame, person,
    x1, y1, x2, y2`` in frame order, the planted misses removed (person -1: a false detection);
    ``scores``: (n,) their scores; ``planted``: ``(person, first missing frame, last missing
    frame)``; ``truth``: the ground truth before planting."""

    name: str
    fps: float
    frames: np.ndarray
    detections: np.ndarray
    scores: np.ndarray
    planted: tuple[tuple[int, int, int], ...]
    truth: np.ndarray


def ground_truth(sequence: str) -> np.ndarray:
    """(n, 6) rows ``frame, person, x1, y1, x2, y2`` (x2, y2 exclusive) from the wheel's
    ``gt.txt`` (MOT format: frame, id, left, top, width, height, ...), frames from 0."""
    text = (files("motmetrics") / "data" / sequence / "gt.txt").read_text()
    raw = np.loadtxt(text.splitlines(), delimiter=",", ndmin=2)
    rows = np.column_stack([raw[:, 0] - 1, raw[:, 1], raw[:, 2], raw[:, 3],
                            raw[:, 2] + raw[:, 4], raw[:, 3] + raw[:, 5]])  # fmt: skip
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def resample(truth: np.ndarray, *, every: int = 1, phase: int = 0, upsample: int = 1) -> np.ndarray:
    """Keep every ``every``-th frame from ``phase``, then put ``upsample - 1`` frames between
    consecutive ones with each person's box interpolated linearly; frames renumbered from 0."""
    kept = truth[(truth[:, 0] - phase) % every == 0]
    kept = np.column_stack([(kept[:, 0] - phase) // every, kept[:, 1:]])
    if upsample == 1:
        return kept
    out = []
    for person in np.unique(kept[:, 1]):
        track = kept[kept[:, 1] == person]
        for a, b in pairwise(track):
            steps = int(b[0] - a[0]) * upsample
            for k in range(steps):
                box = a[2:] + (b[2:] - a[2:]) * (k / steps)
                out.append([a[0] * upsample + k, person, *box])
        out.append([track[-1][0] * upsample, person, *track[-1][2:]])
    rows = np.array(out)
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def _visible(box: np.ndarray) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(0 <= cx < FRAME_SIZE[0] and 0 <= cy < FRAME_SIZE[1])


def plant_misses(
    truth: np.ndarray, *, max_gap: int, seed: int, spacing: int = 10
) -> tuple[np.ndarray, tuple[tuple[int, int, int], ...]]:
    """Remove runs of 1..``max_gap`` detections of one person while it stays visible, runs of one
    person at least ``spacing`` frames apart; returns the rows kept and the runs removed."""
    rng = np.random.default_rng(seed)
    planted: list[tuple[int, int, int]] = []
    drop = np.zeros(len(truth), bool)
    for person in np.unique(truth[:, 1]).tolist():
        where = np.flatnonzero(truth[:, 1] == person)
        frames = truth[where, 0].astype(np.int64)
        cursor = int(frames[0]) + LEAD + int(rng.integers(0, spacing))
        while True:
            length = int(rng.integers(1, max_gap + 1))
            first, last = cursor, cursor + length - 1
            if last + 1 > frames[-1] - 1:
                break
            span = (frames >= first) & (frames <= last)
            if span.sum() == length and all(_visible(truth[i, 2:]) for i in where[span]):
                drop[where[span]] = True
                planted.append((int(person), first, last))
            cursor = last + spacing + int(rng.integers(0, spacing))
    return truth[~drop], tuple(sorted(planted, key=lambda p: (p[1], p[0])))


def planted_video(
    sequence: str, *, every: int = 1, phase: int = 0, upsample: int = 1, max_gap: int, seed: int
) -> PlantedVideo:
    """A sequence resampled (see :func:`resample`) with misses planted (:func:`plant_misses`)."""
    truth = resample(ground_truth(sequence), every=every, phase=phase, upsample=upsample)
    spacing = max(2 * max_gap + 4, 10)
    kept, planted = plant_misses(truth, max_gap=max_gap, seed=seed, spacing=spacing)
    frames = np.arange(int(truth[:, 0].max()) + 1, dtype=np.int64)
    fps = NATIVE_FPS / every * upsample
    scores = np.ones(len(kept))
    return PlantedVideo(f"{sequence}@{fps:g}fps", fps, frames, kept, scores, planted, truth)


def detector_noise(
    video: PlantedVideo, *, jitter: float, clutter: float, weak: float, seed: int
) -> PlantedVideo:
    """``video`` as a real detector would report it: each box edge moved by a normal error of
    ``jitter`` times the box's width (x) or height (y), a share ``weak`` of the detections
    scoring 0.3 (the others 0.9), and on average ``clutter`` false detections per frame
    (pedestrian-shaped boxes anywhere, scores uniform in 0.2..0.9)."""
    rng = np.random.default_rng(seed)
    rows = video.detections.copy()
    extent = np.column_stack([rows[:, 4] - rows[:, 2], rows[:, 5] - rows[:, 3]])
    rows[:, 2:] += rng.normal(0, jitter, (len(rows), 4)) * np.tile(extent, 2)
    scores = np.where(rng.random(len(rows)) < weak, 0.3, 0.9)
    false = rng.poisson(clutter * len(video.frames))
    width = rng.uniform(30, 80, false)
    x, y = rng.uniform(0, FRAME_SIZE[0] - 40, false), rng.uniform(50, 300, false)
    noise = np.column_stack([rng.integers(0, len(video.frames), false), np.full(false, -1),
                             x, y, x + width, y + 2.5 * width])  # fmt: skip
    rows = np.concatenate([rows, noise])
    scores = np.concatenate([scores, rng.uniform(0.2, 0.9, false)])
    order = np.argsort(rows[:, 0], kind="stable")
    return replace(video, name=f"{video.name}+noise", detections=rows[order], scores=scores[order])


def write_chunks(root: Path, name: str, video: PlantedVideo, chunk_frames: int = 500) -> None:
    """Write ``video`` as Celantur chunks ``root/<name>-<start>-<end>.json`` (persons)."""
    root.mkdir(parents=True, exist_ok=True)
    frame_of = video.detections[:, 0].astype(np.int64)
    for start in range(0, len(video.frames), chunk_frames):
        end = min(start + chunk_frames, len(video.frames)) - 1
        document = []
        for frame in range(start, end + 1):
            here = frame_of == frame
            detections = [
                {"id": k, "parent_image": frame, "offset": [float(r[2]), float(r[3])],
                 "bbox": [float(v) for v in r[2:]], "type": 102, "type_label": "person",
                 "score": float(score), "is_anonymised": True, "color": None}
                for k, (r, score) in enumerate(zip(video.detections[here], video.scores[here],
                                                   strict=True))
            ]  # fmt: skip
            size = [FRAME_SIZE[1], FRAME_SIZE[0]]
            document.append({"id": frame, "detections": detections, "size": size,
                             "duration": 1 / video.fps})  # fmt: skip
        (root / f"{name}-{start}-{end}.json").write_text(json.dumps(document))


def score_gaps(video: PlantedVideo, gaps: list[tuple[int, int, Box]]) -> tuple[int, int, int]:
    """(planted misses found, gaps reported, misses planted) for gaps given as ``(first
    missing, last missing, box after)``: a gap finds a miss when its frames are the miss's and
    the box it returns to is that person's."""
    returns = {(int(r[0]), tuple(float(v) for v in r[2:])): int(r[1]) for r in video.detections}
    planted = set(video.planted)
    found = {(returns.get((last + 1, tuple(box)), -1), first, last) for first, last, box in gaps}
    return len(found & planted), len(gaps), len(planted)


def track(video: PlantedVideo, **params: Any) -> Linked:
    """One pass of the gap tracker (:class:`~pipeline.kernels.tracking.GapFinder` with
    ``params``) over the whole video."""
    rows = video.detections
    sizes = np.tile(np.asarray(FRAME_SIZE, dtype=np.float64), (len(video.frames), 1))
    finder = GapFinder(**params)
    return finder.feed(rows[:, 0].astype(np.int64), ["person"] * len(rows), rows[:, 2:],
                       video.frames, video.scores, sizes)  # fmt: skip


def identity_metrics(video: PlantedVideo, tracks: np.ndarray) -> dict[str, float]:
    """IDF1 and MOTA (motmetrics, IoU >= 0.5) of the tracks given to ``video.detections``,
    against the ground truth before planting (the planted misses count as missed)."""
    import motmetrics  # a test dependency, as the data

    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    for frame in video.frames.tolist():
        truth = video.truth[video.truth[:, 0] == frame]
        mine = video.detections[:, 0] == frame
        hyp, hyp_ids = video.detections[mine], tracks[mine]
        hyp, hyp_ids = hyp[hyp_ids >= 0], hyp_ids[hyp_ids >= 0]
        # motmetrics' own iou_matrix uses np.asfarray, gone in NumPy 2: same distances here
        overlap = box_iou(truth[:, 2:], hyp[:, 2:])
        distances = np.where(overlap >= 0.5, 1 - overlap, np.nan)
        accumulator.update(truth[:, 1].astype(int).tolist(), hyp_ids.tolist(), distances, frame)
    host = motmetrics.metrics.create()
    summary = host.compute(accumulator, metrics=["idf1", "mota"], name="video")
    return {"idf1": float(summary["idf1"].iloc[0]), "mota": float(summary["mota"].iloc[0])}


#: Frame-rate regimes of the figures: name -> (resampling of :func:`planted_video`, K). 25 fps
#: is the footage itself; 30 fps interpolates its 5 fps subsample (as labelled footage is
#: often made); 5 fps takes every fifth frame, from each of the five phases.
REGIMES: dict[str, tuple[dict[str, int], int]] = {
    "25 fps": ({}, 3),
    "30 fps (5 fps interpolated)": ({"every": 5, "upsample": 6}, 8),
    "5 fps": ({"every": 5}, 3),
}
#: The detector noise of the noisy figures (:func:`detector_noise`).
NOISE = {"jitter": 0.03, "clutter": 0.5, "weak": 0.2}


def gap_figures(
    sequence: str, regime: str, seeds: range, *, noisy: bool = False
) -> tuple[int, int, int]:
    """(planted misses found, gaps reported, misses planted) of the tracker with its default
    options but K (the regime's), over one planted video per seed (and phase)."""
    resampling, max_gap = REGIMES[regime]
    phases = [0] if "upsample" in resampling else range(resampling.get("every", 1))
    totals = np.zeros(3, np.int64)
    for seed in seeds:
        for phase in phases:
            video = planted_video(sequence, **resampling, phase=phase, max_gap=max_gap, seed=seed)
            if noisy:
                video = detector_noise(video, **NOISE, seed=seed + 1000)
            gaps = track(video, max_gap=max_gap).gaps
            keys = [(g.first_missing, g.last_missing, g.box_after) for g in gaps]
            totals += score_gaps(video, keys)
    found, reported, planted = totals.tolist()
    return found, reported, planted
