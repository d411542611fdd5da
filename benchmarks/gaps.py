"""Section: the anonymisation-gap tracker on real footage, and its linking throughput.

Figures: recall and precision of planted detector misses on the MOT ground truth the
``motmetrics`` wheel ships (:mod:`pipeline.sampledata.mot`; defaults tuned on TUD-Campus,
TUD-Stadtmitte held out) at 25 fps, at 30 fps (5 fps interpolated) and at 5 fps (every phase),
also with detector noise (:data:`~pipeline.sampledata.mot.NOISE`: box jitter, weak scores,
false detections); IDF1 / MOTA of the tracks at 25 fps; detections linked per second on one core
(:meth:`GapFinder.feed` over a whole video, best of ``repeats``, after a first feed that
compiles the numba kernel, timed alone; the 4x video puts four copies of TUD-Stadtmitte side by
side, about 23 detections per frame).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.timing import print_table
from pipeline.kernels.tracking import GapFinder
from pipeline.sampledata.mot import (
    MOT_SEQUENCES,
    REGIMES,
    gap_figures,
    identity_metrics,
    planted_video,
    track,
)

#: The issue's target for the linking pass, detections per second on one core.
TARGET_DETECTIONS_PER_S = 300_000


def _quality(seeds: range) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    rows = []
    for noisy in (False, True):
        for sequence in MOT_SEQUENCES:
            for regime, (_, max_gap) in REGIMES.items():
                found, reported, planted = gap_figures(sequence, regime, seeds, noisy=noisy)
                recall, precision = found / max(planted, 1), found / max(reported, 1)
                name = f"{sequence} {regime}{' + detector noise' if noisy else ''}"
                figures[name] = {"recall": recall, "precision": precision, "planted": planted,
                                 "reported": reported}  # fmt: skip
                rows.append([f"{name} K={max_gap}", str(planted), str(reported),
                             f"{recall:.3f}", f"{precision:.3f}"])  # fmt: skip
    header = ["sequence, frame rate", "planted", "reported", "recall", "precision"]
    print_table("Gap tracker on real footage (planted misses, default options)", header, rows)
    ids = []
    for sequence in MOT_SEQUENCES:
        video = planted_video(sequence, max_gap=3, seed=0)
        metrics = identity_metrics(video, track(video).tracks)
        figures[f"{sequence} identities"] = metrics
        ids.append([sequence, f"{metrics['idf1']:.3f}", f"{metrics['mota']:.3f}"])
    print_table("Tracks at 25 fps (motmetrics)", ["sequence", "IDF1", "MOTA"], ids)
    return figures


def _throughput(repeats: int) -> dict[str, Any]:
    video = planted_video("TUD-Stadtmitte", max_gap=3, seed=0)
    copies = []
    for k in range(4):
        shifted = video.detections.copy()
        shifted[:, [2, 4]] += 700 * k
        copies.append(shifted)
    tiled = np.concatenate(copies)
    tiled = tiled[np.argsort(tiled[:, 0], kind="stable")]
    start = time.perf_counter()
    GapFinder().feed(np.zeros(1, np.int64), ["person"], video.detections[:1, 2:], np.zeros(1))
    figures: dict[str, Any] = {"first_feed_s": time.perf_counter() - start}
    print(
        f"\nGap tracker: first feed {figures['first_feed_s']:.1f} s (numba compile or cache load)"
    )
    rows = []
    for name, detections in (("TUD-Stadtmitte", video.detections), ("TUD-Stadtmitte 4x", tiled)):
        frames = detections[:, 0].astype(np.int64)
        labels = ["person"] * len(detections)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            GapFinder().feed(frames, labels, detections[:, 2:], video.frames)
            best = min(best, time.perf_counter() - start)
        rate = len(detections) / best
        per_frame = len(detections) / len(video.frames)
        figures[name] = {"detections_per_s": rate, "detections_per_frame": per_frame}
        rows.append([name, f"{per_frame:.1f}", f"{rate:,.0f}",
                     "met" if rate >= TARGET_DETECTIONS_PER_S else "NOT met"])  # fmt: skip
    print_table(f"Linking throughput, one core (target {TARGET_DETECTIONS_PER_S:,} det/s)",
                ["video", "det/frame", "det/s", "target"], rows)  # fmt: skip
    return figures


def run(*, seeds: int, repeats: int) -> dict[str, Any]:
    """Print and return the section's figures."""
    throughput = _throughput(repeats)  # first: its first feed compiles the kernel
    return {"quality": _quality(range(seeds)), "throughput": throughput}
