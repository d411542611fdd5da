"""``python -m benchmarks``: run every section, print the tables, write the figures as JSON.

Everything the run reads is generated under a temporary folder (deterministic seed) that is
removed at the end, including numba's cache: ``NUMBA_CACHE_DIR`` points into that folder for this
process and the cluster workers it starts, so the kernel's compile time is measured from scratch
and nothing is written into the source tree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("mask-pipeline", "numpy", "numba", "pyspng", "pillow", "scikit-image", "imageio",
            "dask", "distributed", "pyarrow", "msgspec", "orjson", "pandas", "pycocotools",
            "dask-image", "scipy")  # fmt: skip


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--images", type=int, default=200, help="images in the end-to-end tree")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generated input")
    parser.add_argument("--output", default="bench-output", help="folder for the JSON figures")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small tree, few repeats, no 18 MP mask"
    )
    parser.add_argument(
        "--section", action="append", default=None, metavar="NAME",
        help="run only this section (repeatable; names as in the JSON, e.g. storage)",
    )  # fmt: skip
    parser.add_argument(
        "--storage-images", type=int, default=None,
        help="images in the object-storage section (default 100; 24 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--scale-masks", type=int, default=None,
        help="tiny masks in the scale section (default 100,000; 10,000 with --quick)",
    )  # fmt: skip
    return parser.parse_args(argv)


def _environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "git_commit": commit,
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the process exit code (1 when the contenders disagree)."""
    args = _parse(argv)
    started = datetime.now(timezone.utc)
    environment = _environment()  # load average before the run starts
    clock = time.perf_counter()
    previous_cache = os.environ.get("NUMBA_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="mask-bench-") as tmp:
        scratch = Path(tmp)
        # Before numba is first imported: a private cache, so the first call really compiles
        # (the table says "cache load" instead if numba was imported earlier by a caller).
        os.environ["NUMBA_CACHE_DIR"] = str(scratch / "numba-cache")
        from benchmarks.timing import BenchmarkError

        try:
            figures = _run_sections(scratch, args)
        except BenchmarkError as exc:
            print(f"\nBENCHMARK INVALID: {exc}", file=sys.stderr)
            return 1
        finally:
            if previous_cache is None:
                os.environ.pop("NUMBA_CACHE_DIR", None)
            else:
                os.environ["NUMBA_CACHE_DIR"] = previous_cache
    total_s = time.perf_counter() - clock
    document = {
        "created": started.isoformat(),
        "total_s": total_s,
        "arguments": vars(args),
        "environment": environment,
        "sections": figures,
    }
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nTotal {total_s:.0f} s. Figures written to {path}")
    return 0


def _run_sections(scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import (
        decode,
        encode,
        endtoend,
        fullhd,
        gaps,
        kernels,
        memory,
        peers,
        scale,
        spread,
        storage,
        video,
    )
    from benchmarks.data import celantur_scene
    from pipeline.io.png import encode_png

    sizes = {"full-hd": (1920, 1080)} if args.quick else {
        "full-hd": (1920, 1080), "18mp": (5184, 3456)}  # fmt: skip
    masks = {name: celantur_scene(w, h, seed=args.seed) for name, (w, h) in sizes.items()}
    if args.quick:
        kernel_repeats = {
            "full-hd": {**dict.fromkeys(kernels.CONTENDERS, 1), "colour_stats (ours)": 5}
        }
        peer_repeats = {"full-hd": {peers.OURS: 5, peers.COCO: 1, peers.DASK: 1}}
        peer_decode_repeats = {"full-hd": 3}
        decode_repeats, encode_repeats, run_repeats, images = {"full-hd": 3}, 3, 1, 24
        video_chunks, video_repeats = 2, 2
        fullhd_images, fullhd_repeats, memory_mask, memory_images = 8, 1, "full-hd", 2
        fullhd_scaling_images = 24
        scale_masks, scale_chunks = 10_000, 1
        storage_images, storage_repeats = 24, 1
        spread_repeats, spread_runs, spread_copies = 3, 1, 2
    else:
        kernel_repeats = {
            "full-hd": {"colour_stats (ours)": 50, "per-colour numpy loop": 3,
                        "skimage regionprops_table": 5, kernels.LOOP_WITHOUT_UNIQUE: 3},
            "18mp": {"colour_stats (ours)": 10, "per-colour numpy loop": 1,
                     "skimage regionprops_table": 2},
        }  # fmt: skip
        peer_repeats = {
            "full-hd": {peers.OURS: 20, peers.COCO: 3, peers.COCO_PREP: 3, peers.DASK: 3,
                        peers.DASK_PREP: 3},
            "18mp": {peers.OURS: 5, peers.COCO: 1, peers.DASK: 1},
        }  # fmt: skip
        peer_decode_repeats = {"full-hd": 10, "18mp": 3}
        decode_repeats, encode_repeats, run_repeats = {"full-hd": 30, "18mp": 5}, 20, 3
        images = args.images
        video_chunks, video_repeats = 12, 5
        fullhd_images, fullhd_repeats, memory_mask, memory_images = 40, 3, "18mp", 3
        fullhd_scaling_images = 300
        scale_masks, scale_chunks = 100_000, 3
        storage_images, storage_repeats = 100, 2
        # 16 and 80 masks: both runs are cut into batches of several masks, as any run of more
        # than a few dozen masks is, so a mask's marginal cost carries little of a batch's fixed
        # cost (4 and 20 masks were 4 batches against ~10, ~0.4 of a batch per mask).
        spread_repeats, spread_runs, spread_copies = 11, 3, 16
    if args.storage_images is not None:
        storage_images = args.storage_images
    if args.scale_masks is not None:
        scale_masks = args.scale_masks

    # Encoded as the sample data is: Pillow's PNG writer at its default level (6).
    encoded = {name: encode_png(rgb, compress_level=6) for name, rgb in masks.items()}
    sections: dict[str, Callable[[], Any]] = {
        "kernel": lambda: kernels.run(masks, kernel_repeats),
        "kernel_peers": lambda: peers.run(masks, encoded, peer_repeats, peer_decode_repeats),
        "decode": lambda: decode.run(encoded, masks, decode_repeats),
        "end_to_end": lambda: endtoend.run(
            scratch, images=images, seed=args.seed, mask_scale=50, repeats=run_repeats
        ),
        "encode": lambda: encode.run(masks["full-hd"], 50, encode_repeats),
        "video": lambda: video.run(
            scratch, chunks=video_chunks, seed=args.seed, repeats=video_repeats
        ),
        "gaps": lambda: gaps.run(seeds=2 if args.quick else 6, repeats=2 if args.quick else 5),
        "full_hd_targets": lambda: fullhd.run(
            scratch,
            images=fullhd_images,
            scaling_images=fullhd_scaling_images,
            seed=args.seed,
            repeats=fullhd_repeats,
        ),
        "worker_memory": lambda: memory.run(
            scratch,
            name=memory_mask,
            rgb=masks[memory_mask],
            png=encoded[memory_mask],
            images=memory_images,
        ),
        "scale": lambda: scale.run(scratch, masks=scale_masks, seed=args.seed, chunks=scale_chunks),
        "storage": lambda: storage.run(
            scratch, images=storage_images, seed=args.seed, repeats=storage_repeats
        ),
        "spread": lambda: spread.run(
            scratch,
            seed=args.seed,
            repeats=spread_repeats,
            run_repeats=spread_runs,
            copies=spread_copies,
        ),
    }
    unknown = set(args.section or ()) - set(sections)
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    figures: dict[str, Any] = {"section_s": {}}
    for name, section in sections.items():
        if args.section and name not in args.section:
            continue
        start = time.perf_counter()
        figures[name] = section()
        figures["section_s"][name] = time.perf_counter() - start
    return figures


if __name__ == "__main__":  # guarded: cluster workers re-import this module when spawned
    raise SystemExit(main())
