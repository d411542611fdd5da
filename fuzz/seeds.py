"""Seed corpora for the fuzzers, generated from the product's own sample data."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet


def write_seeds(target: str, folder: Path) -> int:
    """Write seed inputs for ``target`` (png or json) into ``folder``; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_celantur_tree(root / "images", seed=3, images=6, write_images=False)
        if target == "json":
            make_video_fleet(root / "videos", seed=3, videos=1, frames_per_video=1100, quirks=True)
        suffix = ".png" if target == "png" else ".json"
        seeds = sorted(p for p in root.rglob(f"*{suffix}") if p.stat().st_size < 200_000)
        for index, path in enumerate(seeds):
            (folder / f"seed-{index:03d}{suffix}").write_bytes(path.read_bytes())
    return len(seeds)
