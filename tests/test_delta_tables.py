"""Delta Lake tables under load (SPEC 3): plain readers (deltalake, polars) read in a loop while a
rerun and two concurrent runs write into one output, on local disk and on S3 (moto's server);
few data files per table; incremental reruns on another cluster size; time travel, history and
clean interpreter exits of API scripts.

Runs happen in subprocesses (the CLI, as users start it) while the test reads; every read must
give exactly the rows of one complete run: the one before, or one of the runs under way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable
from storage_helpers import upload_tree
from test_crash_safety import _change_inputs, _make_inputs

from pipeline import read_run, read_table
from pipeline.cli import main
from pipeline.io.delta import delta_storage_options
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.tables import TABLES

ARGS = ("--scheduler", "sync", "--no-progress", "--mask-scale", "50")
#: Tables read in the loops: one of images, one of videos (the readers' cost bounds the loop).
WATCHED = ("masks", "detections")


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)


def _tables(out: str, storage: dict[str, Any] | None = None) -> dict[str, list[str]]:
    return {t: _keys(read_table(out, t, storage).to_pylist()) for t in TABLES}


def _delta_options(out: str, storage: dict[str, Any]) -> dict[str, str]:
    return delta_storage_options(out, storage)


def _plain_reads(out: str, storage: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """Per watched table: the rows deltalake sees and the ``path``/``source`` keys polars sees."""
    options = _delta_options(out, storage)
    seen = {}
    for table in WATCHED:
        uri = f"{out}/{table}"
        rows = DeltaTable(uri, storage_options=options or None).to_pyarrow_table().to_pylist()
        frame = pl.read_delta(uri, storage_options=options or None)
        key = "path" if table == "masks" else "source"
        seen[table] = (_keys(rows), sorted(frame[key].to_list()))
    return seen


def _keys_of(expected: dict[str, list[str]], table: str) -> list[str]:
    key = "path" if table == "masks" else "source"
    return sorted(json.loads(row)[key] for row in expected[table])


def _check_reads(
    out: str, storage: dict[str, Any], runs: dict[str, dict[str, list[str]]]
) -> set[str]:
    """One round of reads: every table as plain readers see it, and both tables as
    ``read_table`` sees them pinned by one ``_run.json``, are each exactly one run's rows.
    Returns the runs seen."""
    seen = set()
    for table, (rows, keys) in _plain_reads(out, storage).items():
        matches = [name for name, tables in runs.items() if tables[table] == rows]
        assert matches, f"deltalake read {len(rows)} {table} rows of no complete run"
        # polars reads a moment later: perhaps another run's version, but one run's whole rows.
        assert any(_keys_of(tables, table) == keys for tables in runs.values()), f"polars {table}"
        seen.update(matches)
    record = read_run(out, storage)
    pinned = {
        t: _keys(read_table(out, t, storage, version=record["tables"][t]["version"]).to_pylist())
        for t in WATCHED
    }
    assert any(all(tables[t] == pinned[t] for t in WATCHED) for tables in runs.values())
    return seen


def _cli(src: str, out: str, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "pipeline", "celantur", src, out, *ARGS, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_while(
    running: list[subprocess.Popen[str]],
    out: str,
    storage: dict[str, Any],
    runs: dict[str, dict[str, list[str]]],
) -> tuple[int, set[str]]:
    rounds, seen = 0, set()
    while any(p.poll() is None for p in running):
        seen |= _check_reads(out, storage, runs)
        rounds += 1
    for process in running:
        process.wait(timeout=120)
    return rounds, seen


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Inputs A and B (B: A changed) and the tables of fresh complete runs over each, and of
    a run over A with another scale (for the concurrent runs)."""
    base = tmp_path_factory.mktemp("delta-trees")
    a = _make_inputs(base / "a")
    b = base / "b"
    shutil.copytree(a, b)
    _change_inputs(b, base / "extra")
    expected = {}
    for name, src, scale in (("A", a, "50"), ("B", b, "50"), ("A25", a, "25")):
        out = base / f"fresh-{name}"
        args = [*ARGS[:-1], scale]
        assert main(["celantur", str(src), str(out), *args]) == 0
        expected[name] = _tables(str(out))
    return {"a": a, "b": b, "expected": expected}


def _output(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, dict]:
    if kind == "local":
        return str(tmp_path / "out"), {}
    bucket, storage = request.getfixturevalue("s3_bucket")
    return f"{bucket}/out", storage


def _inputs(kind: str, trees: dict[str, Any], out: str, storage: dict[str, Any]) -> dict[str, str]:
    if kind == "local":
        return {"a": str(trees["a"]), "b": str(trees["b"])}
    root = out.rsplit("/", 1)[0]
    upload_tree(trees["a"], f"{root}/in-a", storage)
    upload_tree(trees["b"], f"{root}/in-b", storage)
    return {"a": f"{root}/in-a", "b": f"{root}/in-b"}


def _run_a(
    kind: str, trees: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[str, dict[str, Any], dict[str, str], tuple[str, ...]]:
    """A complete run over inputs A on ``kind`` storage: output, storage options, input URLs
    and the CLI's storage arguments."""
    out, storage = _output(kind, tmp_path, request)
    src = _inputs(kind, trees, out, storage)
    extra = ("--storage-option", f"endpoint_url={storage['endpoint_url']}") if storage else ()
    first = _cli(src["a"], out, *extra)
    assert first.wait(timeout=240) == 0, first.stderr.read()[-3000:]
    return out, storage, src, extra


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_readers_see_one_complete_run_during_a_rerun(
    kind: str, trees: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out, storage, src, extra = _run_a(kind, trees, tmp_path, request)
    expected = {name: trees["expected"][name] for name in ("A", "B")}
    assert _check_reads(out, storage, expected) == {"A"}

    rerun = _cli(src["b"], out, *extra)
    rounds, seen = _read_while([rerun], out, storage, expected)
    assert rerun.returncode == 0, rerun.stderr.read()[-3000:]
    assert rounds >= 2, "the readers should have read while the rerun ran"
    print(f"\n{kind}: {rounds} read rounds during the rerun saw runs {sorted(seen)}")
    assert _check_reads(out, storage, expected) == {"B"}
    assert _tables(out, storage) == expected["B"]
    assert "A" in seen


@pytest.mark.parametrize("kind", ["local", "local", "s3"])
def test_concurrent_runs_land_consistently_or_one_names_the_conflict(
    kind: str, trees: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out, storage, src, extra = _run_a(kind, trees, tmp_path, request)
    expected = trees["expected"]

    # Two runs with different options (and inputs) into the same output, at the same time.
    runs = {
        "B": _cli(src["b"], out, *extra),
        "A25": _cli(src["a"], out, *extra, "--mask-scale", "25"),
    }
    rounds, seen = _read_while(list(runs.values()), out, storage, expected)
    codes = {name: process.returncode for name, process in runs.items()}
    print(f"\n{kind}: exit codes {codes}; {rounds} read rounds saw runs {sorted(seen)}")
    errors = {name: process.stderr.read() for name, process in runs.items()}
    assert sorted(codes.values()) in ([0, 0], [0, 1]), (codes, errors)
    for name, code in codes.items():
        if code == 1:
            assert "another run committed" in errors[name], errors[name][-2000:]
    record = read_run(out, storage)
    winner = "A25" if record["options"]["mask_scale"] == 25 else "B"
    assert codes[winner] == 0
    # read_table (pinned by _run.json) and plain readers (latest versions) agree: one run.
    assert _tables(out, storage) == expected[winner]
    plain = {t: rows for t, (rows, _) in _plain_reads(out, storage).items()}
    assert plain == {t: expected[winner][t] for t in WATCHED}


def test_small_run_makes_few_files_and_reruns_on_another_cluster_redo_nothing(
    tmp_path: Path,
) -> None:
    """A few hundred inputs: at most 4 data files per table (in fact one); an incremental rerun
    on a local cluster of another size reuses every work item and commits nothing new."""
    tree = make_celantur_tree(tmp_path / "in", seed=5, images=80)
    out = tmp_path / "out"
    base = ["celantur", str(tree.root), str(out), "--no-progress", "--mask-scale", "50"]
    assert main([*base, "--workers", "1"]) == 0
    first = read_run(str(out))
    assert sum(first["inputs"]["found"].values()) >= 200
    for table in TABLES:
        files = DeltaTable(str(out / table)).file_uris()
        assert 1 <= len(files) <= 4, (table, len(files))
    assert main([*base, "--workers", "2", "--incremental"]) == 0
    again = read_run(str(out))
    assert again["work"] == {"done": 0, "reused": first["work"]["done"]}
    assert {t: i["version"] for t, i in again["tables"].items()} == {
        t: i["version"] for t, i in first["tables"].items()
    }
    assert main([*base, "--scheduler", "sync", "--incremental"]) == 0
    assert read_run(str(out))["work"]["done"] == 0


def test_time_travel_pushdown_and_history(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=6, images=6)
    out = tmp_path / "out"
    assert main(["celantur", str(tree.root), str(out), *ARGS]) == 0
    before = read_table(str(out), "masks")
    (tree.root / tree.images[0].instance_path).unlink()
    assert main(["celantur", str(tree.root), str(out), *ARGS]) == 0
    record = read_run(str(out))
    assert record["tables"]["masks"]["version"] == 1
    assert read_table(str(out), "masks").num_rows == before.num_rows - 1
    assert read_table(str(out), "masks", version=0).to_pylist() == before.to_pylist()
    instances = read_table(
        str(out), "masks", columns=["path", "kind"], filters=[("kind", "=", "instance")]
    )
    assert instances.column_names == ["path", "kind"]
    assert set(instances["kind"].to_pylist()) == {"instance"}
    capsys.readouterr()
    assert main(["history", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if "celantur  run " in line]
    assert runs[0].rsplit(" ", 1)[-1] == record["run_id"]
    assert len(runs) == 2
    assert f"masks {before.num_rows - 1} (v1)" in "\n".join(lines)


_READ_SCRIPT = """
import sys
from pipeline import read_run, read_table
for table in ("masks", "instances", "detections", "summary"):
    read_table(sys.argv[1], table).to_pylist()
print(read_run(sys.argv[1])["run_id"])
"""


def test_a_script_reading_tables_exits_cleanly(tmp_path: Path) -> None:
    """Reads go by path through Arrow's native filesystems, never through Python file objects
    (whose thread pools can abort the interpreter at exit)."""
    tree = make_celantur_tree(tmp_path / "in", seed=7, images=4)
    out = tmp_path / "out"
    assert main(["celantur", str(tree.root), str(out), *ARGS]) == 0
    run_id = read_run(str(out))["run_id"]
    for _ in range(6):
        done = subprocess.run(
            [sys.executable, "-c", _READ_SCRIPT, str(out)], capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert (done.returncode, done.stdout.strip()) == (0, run_id), done.stderr[-2000:]


def test_memory_output_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=8, images=1)
    assert main(["celantur", str(tree.root), "memory://out", *ARGS]) == 2
    assert "option 'output': memory:// cannot hold Delta tables" in capsys.readouterr().err


def test_vacuum_keeps_what_is_younger_than_the_retention(tmp_path: Path) -> None:
    """The default retention, and one of half an hour, keep everything of a fresh rerun (time
    travel still works); no retention removes the superseded data files and unused staged
    parts, never what the committed run reads."""
    tree = make_celantur_tree(tmp_path / "in", seed=9, images=6)
    out = tmp_path / "out"
    assert main(["celantur", str(tree.root), str(out), *ARGS]) == 0
    (tree.root / tree.images[0].instance_path).unlink()
    assert main(["celantur", str(tree.root), str(out), *ARGS]) == 0
    tables = _tables(str(out))
    files = {p for p in out.rglob("*") if p.is_file()}
    assert main(["vacuum", str(out)]) == 0
    assert {p for p in out.rglob("*") if p.is_file()} == files
    # Half an hour (delta-rs takes whole hours) keeps them too: every file is minutes old.
    assert main(["vacuum", str(out), "--retention-hours", "0.5"]) == 0
    assert {p for p in out.rglob("*") if p.is_file() and "_delta_log" not in p.parts} == {
        p for p in files if "_delta_log" not in p.parts
    }
    assert read_table(str(out), "masks", version=0).num_rows == len(tables["masks"]) + 1
    assert main(["vacuum", str(out), "--retention-hours", "0"]) == 0
    # (delta-rs logs a vacuum as two commits of its own: only data files are compared)
    left = {p for p in out.rglob("*") if p.is_file() and "_delta_log" not in p.parts}
    assert left < {p for p in files if "_delta_log" not in p.parts}
    assert _tables(str(out)) == tables
    # (a part reference names its bundle, then its byte range: ``<bundle>#<start>-<end>``)
    staged = {
        s.split("#")[0] for info in read_run(str(out))["tables"].values() for s in info["staged"]
    }
    assert {p.relative_to(out).as_posix() for p in (out / "_staged").rglob("*.arrow")} == staged
    for table in TABLES:
        on_disk = {p.name for p in (out / table).glob("*.parquet")}
        assert on_disk == {Path(u).name for u in DeltaTable(str(out / table)).file_uris()}


def test_delta_rs_retries_end_with_the_runs_storage_timeout() -> None:
    """delta-rs gives up on a failing request once the run's ``storage_timeout`` has passed
    (the watchdog has stopped the run by then; a read retrying in the background would hold
    the process's exit), and never waits longer for one answer than that either."""
    storage = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"}
    assert {
        key: value
        for key, value in delta_storage_options("s3://b/out", storage, 2.5).items()
        if "timeout" in key
    } == {"timeout": "2500ms", "connect_timeout": "2500ms", "retry_timeout": "2500ms"}
    defaults = delta_storage_options("s3://b/out", storage)
    assert (defaults["timeout"], defaults["retry_timeout"]) == ("10000ms", "60000ms")


def _empty_folders(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_dir() and not any(p.iterdir())
    )


def test_vacuum_removes_the_folders_it_emptied(tmp_path: Path) -> None:
    """On local disk vacuum leaves no folder empty that it emptied (a crashed run's ``_work/``
    folder, a dropped mask's ``scaled/`` folder), keeps every folder with anything left (a run
    under way's ``_work/`` folder, younger than the retention) and the output itself; a dry run
    removes no folder."""
    tree = make_celantur_tree(tmp_path / "in", seed=9, images=6)
    out = tmp_path / "out"
    assert main(["celantur", str(tree.root), str(out), *ARGS]) == 0
    dropped = read_table(str(out), "masks").to_pylist()
    (tree.root / tree.images[0].instance_path).unlink()
    assert main(["celantur", str(tree.root), str(out), *ARGS]) == 0
    kept = {row["scaled_path"] for row in read_table(str(out), "masks").to_pylist()}
    dropped_scaled = {row["scaled_path"] for row in dropped if row["scaled_path"]} - kept
    assert len(dropped_scaled) == 1
    crashed, under_way = out / "_work" / "crashed" / "masks", out / "_work" / "under-way" / "masks"
    for folder in (crashed, under_way):
        folder.mkdir(parents=True)
        (folder / "b.parquet").write_bytes(b"parked")
    hours_ago = time.time() - 2 * 3600
    for path in out.rglob("*"):
        if path.is_file() and under_way not in path.parents:
            os.utime(path, (hours_ago, hours_ago))
    tables = _tables(str(out))
    assert _empty_folders(out) == []
    folders = {p for p in out.rglob("*") if p.is_dir()}

    assert main(["vacuum", str(out), "--retention-hours", "1", "--dry-run"]) == 0
    assert {p for p in out.rglob("*") if p.is_dir()} == folders
    assert main(["vacuum", str(out), "--retention-hours", "1"]) == 0
    assert _empty_folders(out) == []
    assert (under_way / "b.parquet").read_bytes() == b"parked"
    gone = {p for p in folders if not p.exists()}
    assert gone == {crashed, crashed.parent}
    # No retention: the first version's rescaled mask goes (no kept version points at it).
    assert main(["vacuum", str(out), "--retention-hours", "0"]) == 0
    assert _empty_folders(out) == []
    gone = {p for p in folders if not p.exists()}
    assert {out / "_work", *(out / Path(rel).parent for rel in dropped_scaled)} <= gone
    assert all(any(p.iterdir()) for p in folders - gone) and out.is_dir()
    assert _tables(str(out)) == tables
