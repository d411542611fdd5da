"""Seed corpora for the fuzzers, generated from the product's own sample data."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.clearml import make_clearml_dataset
from pipeline.sampledata.video import make_video_fleet

#: Seeds larger than this are left out: the fuzzers' inputs stay small.
MAX_SEED_BYTES = 200_000
JOBS = Path(__file__).parent.parent / "jobs"


def write_seeds(target: str, folder: Path) -> int:
    """Write seed inputs for ``target`` (a name in :data:`fuzz.targets.TARGETS`) into
    ``folder``; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        seeds = [data for data in _seeds(target, Path(scratch)) if len(data) < MAX_SEED_BYTES]
    for index, data in enumerate(seeds):
        (folder / f"seed-{index:03d}").write_bytes(data)
    return len(seeds)


def _png_flavours() -> list[bytes]:
    """Small PNGs of the flavours the sample data lacks (palette, 1-bit, 16-bit grey, grey +
    alpha): the decode paths beyond the fused one."""
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    images = [
        Image.fromarray(pixels).convert("P"),
        Image.fromarray(pixels).convert("1"),
        Image.fromarray(pixels.astype(np.uint16) * 257),
        Image.fromarray(np.dstack([pixels, pixels[::-1]]), "LA"),
    ]
    seeds = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        seeds.append(buffer.getvalue())
    return seeds


def _seeds(target: str, root: Path) -> list[bytes]:
    if target == "jobfile":
        return [path.read_bytes() for path in sorted(JOBS.glob("*.toml"))]
    if target == "frames":
        for form in ("array", "jsonl"):
            make_clearml_dataset(root / form, seed=3, frames=4, form=form, video=False)
        return [p.read_bytes() for p in sorted(root.rglob("*.json*")) if "mask" not in p.name]
    make_celantur_tree(root / "images", seed=3, images=6, write_images=False)
    if target in ("chunk", "json"):
        make_video_fleet(root / "videos", seed=3, videos=1, frames_per_video=1100, quirks=True)
    if target == "png":
        return [p.read_bytes() for p in sorted(root.rglob("*.png"))] + _png_flavours()
    if target == "chunk":
        # The file's name, a newline, its content: how the chunk target splits its input.
        return [p.name.encode() + b"\n" + p.read_bytes()
                for p in sorted((root / "videos").rglob("*.json"))]  # fmt: skip
    return [p.read_bytes() for p in sorted(root.rglob("*.json"))]
