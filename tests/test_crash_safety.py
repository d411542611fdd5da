"""Crash safety (SPEC 3 and 5): a run killed before its commit leaves no ``_run.json`` of its own;
readers (``pipeline.read_table``) read only what a ``_run.json`` lists, so they keep seeing the
previous complete run; the next complete run cleans up what the killed one left.

Run A completes; run B, over changed inputs, runs in a subprocess and is killed with SIGKILL at a
deterministic point (the kill is planted by patching the subprocess's own modules): mid-way
through its second pass, right before its commit, or after staging its record but before the
move that commits it. Run C then runs over B's inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from reference import read_output

from pipeline import read_run, read_table
from pipeline.cli import main
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet
from pipeline.tables import TABLES

#: auto encoding: the first pass parks measured rows under _work/ for the second.
ARGS = ("--scheduler", "sync", "--no-progress", "--mask-scale", "50")

_KILLED_RUN = """
import os, signal, sys

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

import pipeline.io.runrecord
import pipeline.runner as runner

where = sys.argv[1]
if where == "before-commit":
    pipeline.io.runrecord.write_run_record = die
    runner.write_run_record = die  # bound by ``from ... import`` when the runner was imported
elif where == "record-staged":
    from fsspec.implementations.local import LocalFileSystem

    move = LocalFileSystem.mv

    def mv(self, path1, path2, *args, **kwargs):
        if str(path1).endswith(".partial"):
            die()
        return move(self, path1, path2, *args, **kwargs)

    LocalFileSystem.mv = mv
elif where == "mid-pass":
    run_work = runner.run_work
    finished = []

    def killing_run_work(work, ctx):
        if work.step == "finish" and finished:
            die()  # one image batch finished under the decided encoding, the rest still parked
        result = run_work(work, ctx)
        if work.step == "finish":
            finished.append(work)
        return result

    runner.run_work = killing_run_work
else:
    raise SystemExit(f"unknown kill point {where}")

from pipeline.cli import main

sys.exit(main(sys.argv[2:]))
"""


def _make_inputs(root: Path) -> Path:
    make_celantur_tree(root / "images", seed=31, images=8)
    make_video_fleet(root / "videos", seed=31, videos=1, frames_per_video=300, chunk_frames=100,
                     quirks=False)  # fmt: skip
    return root


def _change_inputs(src: Path, extra: Path) -> None:
    """B's inputs: two images added, one mask replaced, one image removed, one chunk edited."""
    added = make_celantur_tree(extra, seed=77, images=2, write_images=False)
    for image in added.images:
        for rel in (image.instance_path, image.binary_path, image.metadata_path):
            if rel:
                target = src / "images" / "added" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(added.root / rel, target)
    masks = sorted((src / "images").rglob("*_ins_ma*.png"))
    shutil.copyfile(masks[0], masks[2])
    removed = masks[4]
    stem = removed.name.split("_ins_ma")[0]
    for path in removed.parent.glob(f"{stem}*"):
        path.unlink()
    chunk = sorted((src / "videos").rglob("*.json"))[1]
    frames = json.loads(chunk.read_text())
    for frame in frames[10:20]:
        frame["detections"] = []
    chunk.write_text(json.dumps(frames))


def _tables(out: Path) -> dict[str, list[str]]:
    """Every table as the Python API reads it (only the parts the last _run.json lists)."""
    return {
        table: sorted(
            json.dumps(row, sort_keys=True) for row in read_table(str(out), table).to_pylist()
        )
        for table in TABLES
    }


def _parts_on_disk(out: Path) -> set[str]:
    return {
        p.relative_to(out).as_posix()
        for table in TABLES
        if (out / table).is_dir()
        for p in (out / table).iterdir()
        if p.is_file()
    }


def _listed(record: dict[str, Any]) -> set[str]:
    return {part for info in record["tables"].values() for part in info["parts"]}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_inputs(tmp_path_factory.mktemp("crash-inputs") / "src")


@pytest.fixture(scope="module")
def fresh_b(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tables and rescaled masks of a fresh, complete run over B's inputs."""
    base = tmp_path_factory.mktemp("crash-fresh")
    src = base / "src"
    shutil.copytree(template, src)
    _change_inputs(src, base / "extra")
    out = base / "out"
    assert main(["celantur", str(src), str(out), *ARGS]) == 0
    scaled = sorted(p.relative_to(out).as_posix() for p in (out / "scaled").rglob("*.png"))
    return {"tables": _tables(out), "scaled": scaled}


@pytest.mark.parametrize(
    ("where", "incremental"),
    [("mid-pass", False), ("mid-pass", True), ("before-commit", False), ("record-staged", False)],
)
def test_killed_run_is_invisible_and_cleaned_up(
    where: str, incremental: bool, template: Path, fresh_b: dict[str, Any], tmp_path: Path
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(template, src)
    assert main(["celantur", str(src), str(out), *ARGS]) == 0
    record_a = (out / "_run.json").read_bytes()
    run_a = read_run(str(out))
    tables_a = _tables(out)
    assert all(tables_a[t] for t in ("masks", "instances", "detections", "frames", "summary"))

    # Run B over changed inputs, killed with SIGKILL before it commits.
    _change_inputs(src, tmp_path / "extra")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, where, "celantur", str(src), str(out), *ARGS],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # The previous complete run is what a reader sees, although B's parts are on disk.
    assert (out / "_run.json").read_bytes() == record_a
    assert read_run(str(out))["run_id"] == run_a["run_id"]
    orphans = _parts_on_disk(out) - _listed(run_a)
    assert orphans, "the killed run should have left parts of its own"
    if where == "record-staged":
        assert list(out.glob("_run.json.*.partial")), "the staged record should be left behind"
    changed = [table for table in TABLES if _tables(out)[table] != tables_a[table]]
    assert changed == [], f"after the crash these tables no longer read as run A: {changed}"

    # Run C over B's inputs: the tables of a fresh full run, and nothing left over.
    args = (*ARGS, "--incremental") if incremental else ARGS
    assert main(["celantur", str(src), str(out), *args]) == 0
    run_c = read_run(str(out))
    assert run_c["run_id"] != run_a["run_id"]
    assert _tables(out) == fresh_b["tables"]
    assert _parts_on_disk(out) == _listed(run_c)
    assert not (out / "_work").exists()
    assert not list(out.glob("_run.json.*"))
    scaled = sorted(p.relative_to(out).as_posix() for p in (out / "scaled").rglob("*.png"))
    assert scaled == fresh_b["scaled"]
    # What is on disk is exactly what the record lists: reading every part gives the same rows.
    for table in TABLES:
        on_disk = sorted(json.dumps(row, sort_keys=True) for row in read_output(out, table))
        assert on_disk == fresh_b["tables"][table], table


def test_a_crash_before_any_commit_leaves_nothing_readable(tmp_path: Path) -> None:
    """No earlier run: the killed run leaves no _run.json, and readers say so."""
    src = _make_inputs(tmp_path / "src")
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, "before-commit", "celantur", str(src), str(out),
         *ARGS],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / "_run.json").exists()
    assert _parts_on_disk(out), "the killed run should have written parts"
    with pytest.raises(FileNotFoundError, match="no committed run"):
        read_table(str(out), "masks")
    assert os.path.isdir(out)
