"""Shared fixtures.

Fixture groups:

* generated Celantur trees (session-scoped, one per encoding): ``celantur_tree``;
* running the pipeline: ``run_cli`` (the CLI's ``main`` in-process, returns exit code and output
  folder) — in-process ``sync`` scheduler unless a test asks for a cluster;
The independent reference (Pillow decode, per-colour brute force, SPEC tables written out) is the
module ``tests/reference.py``, importable from tests as ``reference``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.sampledata import SampleTree, make_celantur_tree

# Keep tests independent of any cluster the developer's shell points at.
os.environ.pop("DASK_SCHEDULER_ADDRESS", None)


@pytest.fixture(scope="session", params=["v26", "legacy", "legacy-red"])
def celantur_tree(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> SampleTree:
    """A generated Celantur output tree (12 images, nested folders, all quirks) per encoding."""
    root = tmp_path_factory.mktemp(f"tree-{request.param}")
    return make_celantur_tree(root / "in", seed=7, images=12, encoding=request.param)


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., tuple[int, Path]]:
    """Run ``mask-pipeline celantur SRC OUT ARGS...`` in-process; returns (exit code, OUT).

    ``scheduler=None`` leaves the option out (the embedded LocalCluster)."""

    def run(
        source: Path | str, *args: str, output: Path | None = None, scheduler: str | None = "sync"
    ) -> tuple[int, Path]:
        out = output or tmp_path / "out"
        argv = ["celantur", str(source), str(out), "--no-progress", *args]
        if scheduler is not None:
            argv += ["--scheduler", scheduler]
        return main(argv), out

    return run
