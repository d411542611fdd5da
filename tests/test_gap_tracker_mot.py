"""The gap tracker on real footage: MOT ground truth of real pedestrian sequences (shipped in the
``motmetrics`` wheel) with detector misses planted inside visible tracks
(:mod:`pipeline.sampledata.mot`), at video frame rates and at 5 fps, as labelled and through
simulated detector noise.

Defaults were tuned on ``TUD-Campus``; ``TUD-Stadtmitte`` was held out. The thresholds are the
issue's targets; the measured figures (README, ``make bench``) sit above them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from reference import read_output

from pipeline.cli import main
from pipeline.sampledata.mot import (
    MOT_SEQUENCES,
    NOISE,
    REGIMES,
    detector_noise,
    gap_figures,
    identity_metrics,
    planted_video,
    score_gaps,
    track,
    write_chunks,
)

SEEDS = range(6)
#: regime: (recall, precision) the issue asks for; with detector noise at video rates 0.85 each
#: (measured 0.91..0.98; at 5 fps TUD-Campus falls to 0.62 / 0.80 with noise: not asserted).
TARGETS = {"25 fps": (0.9, 0.9), "30 fps (5 fps interpolated)": (0.9, 0.9), "5 fps": (0.8, 0.7)}
NOISY_TARGETS = {"25 fps": (0.85, 0.85), "30 fps (5 fps interpolated)": (0.85, 0.85)}


def _keys(gaps: Any) -> list[tuple[int, int, tuple[float, ...]]]:
    return [(g.first_missing, g.last_missing, g.box_after) for g in gaps]


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("sequence", MOT_SEQUENCES)
def test_planted_misses_are_found(sequence: str, regime: str) -> None:
    found, reported, planted = gap_figures(sequence, regime, SEEDS)
    assert planted >= 50  # enough planted misses for the figures to mean something
    want_recall, want_precision = TARGETS[regime]
    assert found / planted >= want_recall
    assert found / reported >= want_precision


@pytest.mark.parametrize("regime", NOISY_TARGETS)
@pytest.mark.parametrize("sequence", MOT_SEQUENCES)
def test_planted_misses_are_found_through_detector_noise(sequence: str, regime: str) -> None:
    found, reported, planted = gap_figures(sequence, regime, SEEDS, noisy=True)
    want_recall, want_precision = NOISY_TARGETS[regime]
    assert found / planted >= want_recall
    assert found / reported >= want_precision


@pytest.mark.parametrize("sequence", MOT_SEQUENCES)
def test_tracks_keep_identities(sequence: str) -> None:
    """IDF1 and MOTA of the tracks (planted misses count as missed) at 25 fps."""
    video = planted_video(sequence, max_gap=3, seed=0)
    metrics = identity_metrics(video, track(video).tracks)
    assert metrics["idf1"] >= 0.75
    assert metrics["mota"] >= 0.8


@pytest.mark.parametrize(
    ("sequence", "resampling", "noisy"),
    [("TUD-Stadtmitte", {}, True), ("TUD-Campus", {"every": 5}, False)],
)
def test_chunked_run_equals_one_pass(
    tmp_path: Path, sequence: str, resampling: dict[str, int], noisy: bool
) -> None:
    """Written as Celantur chunks of 17 frames (scores, jitter and false detections included)
    and run through the CLI in several tracking batches, the ``gaps/`` rows are those of one
    pass over the whole video."""
    video = planted_video(sequence, **resampling, max_gap=3, seed=1)
    if noisy:
        video = detector_noise(video, **NOISE, seed=2)
    write_chunks(tmp_path / "in", "clip.mp4", video, chunk_frames=17)
    out = tmp_path / "out"
    argv = ["celantur", str(tmp_path / "in"), str(out), "--no-progress", "--scheduler", "sync",
            "--batch-bytes", "20000"]  # fmt: skip
    assert main(argv) == 0
    rows = read_output(out, "gaps")
    expected = track(video).gaps
    got = [
        (r["track"], r["first_missing_frame"], r["last_missing_frame"], r["confidence"],
         tuple(zip(*(r[f"predicted_{c}"] for c in ("x1", "y1", "x2", "y2")), strict=True)))
        for r in rows
    ]  # fmt: skip
    assert sorted(got) == sorted(
        (g.track, g.first_missing, g.last_missing, g.confidence, g.predicted) for g in expected
    )
    assert len(expected) >= 3
    found, reported, _ = score_gaps(video, _keys(expected))
    assert found >= 0.8 * reported
