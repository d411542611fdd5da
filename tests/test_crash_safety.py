"""Crash safety (SPEC 3 and 5): a run killed at any step leaves every Delta table reading as one
run's complete rows, ``read_table`` (pinned by ``_run.json``) reading the previous complete run,
and the rescaled masks that run points at unchanged; the next run finishes the job.

Run A completes; run B, over changed inputs, runs in a subprocess and is killed with SIGKILL at a
deterministic point (the kill is planted by patching the subprocess's own modules): mid-way
through its image batches, before it writes any data file, after its data files but before any
commit, between two table commits, before ``_run.json``, or after staging its record but before
the move that commits it. Run C then runs over B's inputs.
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
from deltalake import DeltaTable
from reference import output_tables, read_output

from pipeline import read_run, read_table
from pipeline.cli import main
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet
from pipeline.tables import TABLES

#: auto encoding: the first pass types the batches its evidence decides (parks the others'
#: measured rows under _work/ for the second).
ARGS = ("--scheduler", "sync", "--no-progress", "--mask-scale", "50")

_KILLED_RUN = """
import os, signal, sys

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

import pipeline.io.runrecord
import pipeline.runner as runner

where = sys.argv[1]
if where == "before-record":
    pipeline.io.runrecord.write_run_record = die
    runner.write_run_record = die  # bound by ``from ... import`` when the runner was imported
elif where == "before-data-files":
    runner.assemble_files = die
elif where == "before-commit":
    runner.commit_table = die
elif where == "between-tables":
    import threading

    commit_table = runner.commit_table
    done = []
    one_at_a_time = threading.Lock()  # the runner commits tables at once: two land, then die

    def commit_two(*args, **kwargs):
        with one_at_a_time:
            if len(done) == 2:
                die()
            version = commit_table(*args, **kwargs)
            done.append(args[1])
            return version

    runner.commit_table = commit_two
elif where == "record-staged":
    from fsspec.implementations.local import LocalFileSystem

    move = LocalFileSystem.mv

    def mv(self, path1, path2, *args, **kwargs):
        if "_run.json." in str(path1) and str(path1).endswith(".partial"):
            die()
        return move(self, path1, path2, *args, **kwargs)

    LocalFileSystem.mv = mv
elif where == "mid-pass":
    run_work = runner.run_work
    finished = []

    def killing_run_work(work, ctx):
        images = work.step in ("auto", "finish")
        if images and finished:
            die()  # one image batch finished (its parts and ledger entry written), the rest not
        result = run_work(work, ctx)
        if images:
            finished.append(work)
        return result

    runner.run_work = killing_run_work
else:
    raise SystemExit(f"unknown kill point {where}")

from pipeline.cli import main

sys.exit(main(sys.argv[2:]))
"""

#: How many tables each kill point leaves committed by run B (the runner commits tables at
#: once, so which two of them "between-tables" leaves is up to the threads); ``None``: every
#: table whose rows B changes (B does not recommit a table whose staged parts are unchanged).
COMMITTED_BY_B = {"mid-pass": 0, "before-data-files": 0, "before-commit": 0,
                  "between-tables": 2, "before-record": None,
                  "record-staged": None}  # fmt: skip


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
    """Every table as the Python API reads it (the versions the last _run.json records)."""
    return {
        table: sorted(
            json.dumps(row, sort_keys=True) for row in read_table(str(out), table).to_pylist()
        )
        for table in TABLES
    }


def _latest_version(out: Path, table: str) -> int:
    return DeltaTable(str(out / table)).version()


def _scaled_bytes(out: Path) -> dict[str, bytes]:
    """The rescaled masks the committed masks/ rows point at, with their bytes."""
    return {
        row["scaled_path"]: (out / row["scaled_path"]).read_bytes()
        for row in read_table(str(out), "masks").to_pylist()
        if row["scaled_path"]
    }


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
    scaled = {
        row["path"]: (out / row["scaled_path"]).read_bytes()
        for row in read_table(str(out), "masks").to_pylist()
    }
    return {"tables": _tables(out), "scaled": scaled}


@pytest.mark.parametrize(
    ("where", "incremental"),
    [("mid-pass", False), ("mid-pass", True), ("before-data-files", False),
     ("before-commit", True), ("between-tables", False), ("between-tables", True),
     ("before-record", False), ("record-staged", True)],
)  # fmt: skip
def test_killed_run_is_invisible_and_finished_by_the_next(
    where: str, incremental: bool, template: Path, fresh_b: dict[str, Any], tmp_path: Path
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(template, src)
    assert main(["celantur", str(src), str(out), *ARGS]) == 0
    record_a = (out / "_run.json").read_bytes()
    run_a = read_run(str(out))
    tables_a = _tables(out)
    scaled_a = _scaled_bytes(out)
    assert all(tables_a[t] for t in ("masks", "instances", "detections", "frames", "summary"))

    # Run B over changed inputs, killed with SIGKILL at one step.
    _change_inputs(src, tmp_path / "extra")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, where, "celantur", str(src), str(out), *ARGS],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # read_table still reads run A, whatever B left on disk.
    assert (out / "_run.json").read_bytes() == record_a
    assert read_run(str(out))["run_id"] == run_a["run_id"]
    if where == "record-staged":
        assert list(out.glob("_run.json.*.partial")), "the staged record should be left behind"
    changed = [table for table in TABLES if _tables(out)[table] != tables_a[table]]
    assert changed == [], f"after the crash these tables no longer read as run A: {changed}"
    # A plain Delta reader sees, per table, exactly one run's rows: B's where B committed.
    plain = output_tables(out)
    committed_by_b = [t for t in TABLES if _latest_version(out, t) != run_a["tables"][t]["version"]]
    expected_count = COMMITTED_BY_B[where]
    if expected_count is None:
        changed_by_b = [t for t in TABLES if fresh_b["tables"][t] != tables_a[t]]
        assert set(changed_by_b) <= set(committed_by_b), (changed_by_b, committed_by_b)
    else:
        assert len(committed_by_b) == expected_count, committed_by_b
    for table in TABLES:
        expected = fresh_b["tables"] if table in committed_by_b else tables_a
        assert plain[table] == expected[table], (where, table)
    # The rescaled masks run A points at are untouched.
    assert {rel: (out / rel).read_bytes() for rel in scaled_a} == scaled_a

    # Run C over B's inputs: the tables of a fresh full run.
    args = (*ARGS, "--incremental") if incremental else ARGS
    assert main(["celantur", str(src), str(out), *args]) == 0
    run_c = read_run(str(out))
    assert run_c["run_id"] != run_a["run_id"]
    assert _tables(out) == fresh_b["tables"]
    assert output_tables(out) == fresh_b["tables"]
    scaled_c = {
        row["path"]: (out / row["scaled_path"]).read_bytes()
        for row in read_table(str(out), "masks").to_pylist()
    }
    assert scaled_c == fresh_b["scaled"]

    # Vacuum (no retention) leaves exactly what the committed run reads.
    assert main(["vacuum", str(out), "--retention-hours", "0"]) == 0
    for table in TABLES:
        on_disk = {p.name for p in (out / table).glob("*.parquet")}
        assert on_disk == {Path(u).name for u in DeltaTable(str(out / table)).file_uris()}, table
    assert not [p for p in (out / "_work").rglob("*") if p.is_file()]
    scaled_files = {p.relative_to(out).as_posix() for p in (out / "scaled").rglob("*.png")}
    assert scaled_files == {row["scaled_path"] for row in read_output(out, "masks")}
    assert _tables(out) == fresh_b["tables"]


def test_a_crash_before_any_commit_leaves_nothing_readable(tmp_path: Path) -> None:
    """No earlier run: the killed run leaves no table and no _run.json, and readers say so."""
    src = _make_inputs(tmp_path / "src")
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, "before-commit", "celantur", str(src), str(out),
         *ARGS],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / "_run.json").exists()
    assert not list(out.glob("*/_delta_log"))
    assert list(out.glob("*/part-*.parquet")), "the killed run should have written data files"
    with pytest.raises(FileNotFoundError, match="no committed run"):
        read_table(str(out), "masks")
    assert os.path.isdir(out)
