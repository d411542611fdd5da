"""Kernels compiled without numba's reference counting (:data:`pipeline.kernels.njit_unmanaged`)
compile on a machine that has never compiled them.

Numba compiles a kernel's callees with the caller's flags when they set none themselves, so a
callee that allocates (an array, even a slice copy) fails inside an unmanaged caller with
"NRT required but not enabled" — but only when the caller is compiled first: a callee already
compiled, or loaded from numba's cache, hides the fault. Each case therefore runs in a process of
its own with an empty cache folder, as a user's first run after installing does, and together the
cases must compile every unmanaged kernel (a new one needs a case here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

#: Run after a case: every unmanaged kernel of every module of ``pipeline.kernels`` (all imported,
#: which compiles nothing), and whether the case compiled it, as a JSON object.
_REPORT = """
import importlib, json, pkgutil
import pipeline.kernels
from numba.core.registry import CPUDispatcher
kernels = {}
for info in pkgutil.iter_modules(pipeline.kernels.__path__, "pipeline.kernels."):
    module = importlib.import_module(info.name)
    for value in vars(module).values():
        if isinstance(value, CPUDispatcher) and value.targetoptions.get("_nrt") is False:
            kernels[f"{value.py_func.__module__}.{value.py_func.__name__}"] = bool(value.signatures)
print(json.dumps(kernels))
"""

CASES = {
    # A user's first run: images (instance and binary masks, rescaled) and video chunks.
    "run": """
        from pipeline.api import run_celantur
        from pipeline.config import ExecutionOptions
        from pipeline.sampledata.celantur import make_celantur_tree
        from pipeline.sampledata.video import make_video_fleet
        make_celantur_tree(root / "tree", images=6)
        make_video_fleet(root / "tree" / "videos", videos=2, frames_per_video=1100, quirks=False)
        result = run_celantur(str(root / "tree"), str(root / "out"), mask_scale=50,
                              execution=ExecutionOptions(scheduler="sync", progress=False))
        assert result.exit_code == 0, result.record
    """,
    "instance": """
        from pipeline.sampledata.styles import encode_as, style_mask
        from pipeline.stages.measure import measure_instance
        for scale in (50, None):
            measure_instance(encode_as(style_mask("dense", seed=0), "pillow"),
                             max_pixels=10**9, scale=scale)
    """,
    # Other PNG flavours take the checked decoder and the row-by-row accumulator.
    "checked": """
        import io
        import numpy as np
        from PIL import Image
        from pipeline.io.png import encode_png
        from pipeline.sampledata.styles import style_mask
        from pipeline.stages.measure import measure_instance
        mask = style_mask("dense", seed=0)
        palette = io.BytesIO()
        Image.fromarray(mask).convert("P", palette=Image.Palette.ADAPTIVE).save(palette, "PNG")
        for data in (encode_png(mask.astype(np.uint16) * 257), palette.getvalue()):
            measure_instance(data, max_pixels=10**9, scale=50)
    """,
    "binary": """
        from pipeline.sampledata.styles import encode_as, style_mask
        from pipeline.stages.measure import measure_binary
        measure_binary(encode_as(style_mask("binary", seed=0), "pillow"), max_pixels=10**9,
                       scale=50, foreground=None)
    """,
    "video": """
        from pipeline.formats.video import parse_chunk
        from pipeline.sampledata.mot import planted_video, track, write_chunks
        video = planted_video("TUD-Campus", max_gap=3, seed=0)
        write_chunks(root, "mot", video, chunk_frames=60)
        for path in sorted(root.glob("mot-*.json")):
            parse_chunk(path.read_bytes(), max_bytes=2**30)
        track(video)
    """,
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bool]]:
    """Each case run in a fresh interpreter with an empty numba cache: every unmanaged kernel,
    and whether the case compiled it."""
    found: dict[str, dict[str, bool]] = {}
    for case, body in CASES.items():
        root = tmp_path_factory.mktemp(case)
        script = f"from pathlib import Path\nroot = Path({str(root)!r})\n"
        script += textwrap.dedent(body) + _REPORT
        env = {**os.environ, "NUMBA_CACHE_DIR": str(root / "numba-cache")}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"case {case}:\n{done.stderr[-4000:]}"
        found[case] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.fixture(scope="module")
def compiled(reports: dict[str, dict[str, bool]]) -> dict[str, set[str]]:
    """The unmanaged kernels each case compiled."""
    return {
        case: {name for name, done in kernels.items() if done} for case, kernels in reports.items()
    }


def test_every_unmanaged_kernel_compiles_first_in_a_fresh_process(
    reports: dict[str, dict[str, bool]], compiled: dict[str, set[str]]
) -> None:
    every = set(reports["run"])
    assert len(every) > 40  # the modules were found
    assert set().union(*compiled.values()) == every


def test_a_first_run_compiles_the_image_and_video_kernels(compiled: dict[str, set[str]]) -> None:
    assert compiled["run"] >= compiled["instance"] | compiled["binary"]
    assert {name for name in compiled["run"] if ".chunkscan." in name}
