"""The same runs on ``file://``, ``memory://`` (input only: Delta tables cannot live there) and
``s3://`` (moto's server), with identical tables; runs through an external ``dask scheduler``
with two ``dask worker`` processes; storage failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from faulty_proxy import FaultPlan, FaultyProxy
from storage_helpers import upload_tree

from pipeline import read_run, read_table
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet
from pipeline.tables import TABLES

RunCli = Callable[..., tuple[int, Any]]
ARGS = ("--mask-scale", "50", "--encoding", "v26")


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images and videos under one root (with a corrupt chunk: exit code 3 everywhere)."""
    root = tmp_path_factory.mktemp("storage") / "in"
    make_celantur_tree(root / "images", seed=11, images=8)
    make_video_fleet(root / "videos", seed=11, videos=2, frames_per_video=1100)
    return root


@pytest.fixture(scope="module")
def baseline(local_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tables and rescaled masks of a run on plain local paths."""
    from pipeline.cli import main

    out = tmp_path_factory.mktemp("baseline") / "out"
    code = main(
        ["celantur", str(local_tree), str(out), "--scheduler", "sync", "--no-progress", *ARGS]
    )
    assert code == 3
    return _snapshot(str(out), {})


def _snapshot(out: str, storage: dict[str, Any]) -> dict[str, Any]:
    tables = {
        table: sorted(
            json.dumps(row, sort_keys=True) for row in read_table(out, table, storage).to_pylist()
        )
        for table in TABLES
    }
    fs, root = fsspec.core.url_to_fs(out, **storage)
    scaled_root = f"{root.rstrip('/')}/scaled"
    scaled = {p[len(scaled_root) :]: fs.cat_file(p) for p in fs.find(scaled_root)}
    return {"tables": tables, "scaled": scaled}


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"memory://mask-pipeline-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    fs.rm(root.removeprefix("memory://"), recursive=True)


def test_file_url_equals_local_paths(
    local_tree: Path, baseline: dict[str, Any], run_cli: RunCli, tmp_path: Path
) -> None:
    out = f"file://{tmp_path / 'out'}"
    code, _ = run_cli(f"file://{local_tree}", *ARGS, output=out)
    assert code == 3
    assert _snapshot(out, {}) == baseline


def test_memory_input_equals_local_paths_and_memory_output_is_refused(
    local_tree: Path,
    baseline: dict[str, Any],
    run_cli: RunCli,
    memory_root: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upload_tree(local_tree, f"{memory_root}/in", {})
    code, out = run_cli(f"{memory_root}/in", *ARGS, output=tmp_path / "out")
    assert code == 3
    assert _snapshot(str(out), {}) == baseline
    # Delta tables are written by delta-rs, which cannot see fsspec's in-process memory.
    code, _ = run_cli(f"{memory_root}/in", *ARGS, output=f"{memory_root}/out")
    assert code == 2
    assert "option 'output': memory:// cannot hold Delta tables" in capsys.readouterr().err


def test_s3_equals_local_paths_and_reruns_write_nothing_new(
    local_tree: Path,
    baseline: dict[str, Any],
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
) -> None:
    bucket, storage = s3_bucket
    upload_tree(local_tree, f"{bucket}/in", storage)
    endpoint = ("--storage-option", f"endpoint_url={storage['endpoint_url']}")
    code, _ = run_cli(f"{bucket}/in", *ARGS, *endpoint, output=f"{bucket}/out")
    assert code == 3
    assert _snapshot(f"{bucket}/out", storage) == baseline

    fs, _ = fsspec.core.url_to_fs(bucket, **storage)

    def objects() -> dict[str, str]:
        fs.invalidate_cache()
        found = fs.find(f"{bucket}/out", detail=True)
        return {key: info["ETag"] for key, info in found.items() if not key.endswith("_run.json")}

    before = objects()
    code, _ = run_cli(f"{bucket}/in", *ARGS, *endpoint, output=f"{bucket}/out")
    assert code == 3
    assert objects() == before, "a rerun over unchanged inputs must write no new data objects"


def test_s3_run_reads_each_input_once_and_asks_nothing_per_object(
    local_tree: Path,
    baseline: dict[str, Any],
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    s3_endpoint: str,
) -> None:
    """Every request of a run, counted by a proxy: one GET per input file, one PUT per
    rescaled mask, and no HEAD (or other per-object question) about any input or output
    object — sizes come from the listing, reads are single GETs, writes single PUTs. A work
    item stages all its tables' rows in one object, with one PUT; an ``--incremental`` rerun
    over unchanged inputs reads each of them once, in one GET (the ledger's check of its
    bytes), and nothing else below ``_staged/``."""
    bucket, storage = s3_bucket
    upload_tree(local_tree, f"{bucket}/in", storage)
    inputs = sorted(  # what a run reads: masks and metadata, not the anonymised images
        p.relative_to(local_tree).as_posix()
        for p in local_tree.rglob("*")
        if p.is_file() and p.suffix in (".png", ".json")
    )
    with FaultyProxy(s3_endpoint, FaultPlan(rate=0.0)) as proxy:
        args = (f"{bucket}/in", *ARGS, "--storage-option", f"endpoint_url={proxy.url}")
        code, _ = run_cli(*args, "--io-concurrency", "4", output=f"{bucket}/out")
        seen = proxy.counters.seen
        proxy.reset_counters()
        rerun_code, _ = run_cli(*args, "--incremental", output=f"{bucket}/out")
        rerun = proxy.counters.seen
    assert code == rerun_code == 3
    assert _snapshot(f"{bucket}/out", storage) == baseline
    prefix = "/" + bucket.removeprefix("s3://")
    reads = Counter(path for method, path in seen if method == "GET" and "?" not in path)
    read_inputs = {p.removeprefix(f"{prefix}/in/"): n for p, n in reads.items() if "/in/" in p}
    assert read_inputs == {rel: 1 for rel in inputs}, "each input read once, in one GET"
    scaled = Counter(p for m, p in seen if m == "PUT" and p.startswith(f"{prefix}/out/scaled/"))
    masks = [rel for rel in inputs if rel.endswith(".png")]
    rows = read_table(f"{bucket}/out", "masks", storage).to_pylist()
    assert sorted(r["path"] for r in rows if r["scaled_path"]) == masks
    assert scaled == Counter({f"{prefix}/out/{r['scaled_path']}": 1 for r in rows})
    heads = [path for method, path in seen if method == "HEAD"]
    per_object = ("/in/", "/scaled/", "/_ledger/", "/_work/")
    assert not [p for p in heads if any(marker in p and p.endswith((".png", ".json", ".parquet"))
                                        for marker in per_object)]  # fmt: skip
    # The client looks before writing its own content-named parts (summary, run errors) only.
    assert len([p for p in heads if "/_staged/" in p]) <= 2
    assert len(heads) <= len(TABLES) + 3, f"HEADs beyond a constant per run: {heads}"

    staged = f"{prefix}/out/_staged/"
    fs, _ = fsspec.core.url_to_fs(bucket, **storage)
    fs.invalidate_cache()
    bundles = {"/" + p for p in fs.glob(f"{bucket}/out/_staged/part-*.arrow")}
    assert len(bundles) >= 10
    staged_puts = Counter(p for m, p in seen if m == "PUT" and p.startswith(staged))
    content = {p: n for p, n in staged_puts.items() if p not in bundles}  # summary, run errors
    assert staged_puts == Counter({p: 1 for p in bundles}) + Counter(content)
    assert len(content) <= 2 and all(n == 1 for n in content.values())
    assert read_run(f"{bucket}/out", storage)["work"]["done"] == 0
    rerun_staged = [(m, p) for m, p in rerun if p.startswith(staged)]
    assert sorted(rerun_staged) == sorted(("GET", p) for p in bundles)


def test_storage_options_from_the_environment(
    local_tree: Path,
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket, storage = s3_bucket
    upload_tree(local_tree / "images", f"{bucket}/in", storage)
    monkeypatch.setenv("MASK_PIPELINE_STORAGE_OPTIONS", json.dumps(storage))
    code, _ = run_cli(f"{bucket}/in", output=f"{bucket}/out")
    assert code == 0
    assert read_run(f"{bucket}/out")["accounting"]["in_errors"] == 0


def test_missing_bucket_exits_1_naming_the_url(
    run_cli: RunCli, s3_bucket: tuple[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, storage = s3_bucket
    endpoint = f"endpoint_url={storage['endpoint_url']}"
    code, _ = run_cli(
        "s3://no-such-bucket/in", "--storage-option", endpoint, output="s3://test-bucket/out"
    )
    assert code == 1
    assert "s3://no-such-bucket/in" in capsys.readouterr().err
    fs, _ = fsspec.core.url_to_fs("s3://test-bucket", **storage)
    fs.invalidate_cache()
    assert not fs.exists("test-bucket/out/_run.json")


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_external_scheduler_and_worker_processes_on_s3(
    local_tree: Path,
    baseline: dict[str, Any],
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """A real ``dask scheduler`` and two ``dask worker`` processes; workers read and write S3."""
    bucket, storage = s3_bucket
    upload_tree(local_tree, f"{bucket}/in", storage)
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    processes = [
        _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)], env)
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            processes.append(
                _start([sys.executable, "-m", "distributed.cli.dask_worker", address,
                        "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"], env)
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        endpoint = ("--storage-option", f"endpoint_url={storage['endpoint_url']}")
        code, _ = run_cli(
            f"{bucket}/in", *ARGS, *endpoint, output=f"{bucket}/out", scheduler=address
        )
        assert code == 3
        record = read_run(f"{bucket}/out", storage)
        assert record["scheduler"]["kind"] == "external"
        assert record["scheduler"]["workers"] == 2
        assert _snapshot(f"{bucket}/out", storage) == baseline
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


#: The requests a run makes on one table's ``_delta_log/`` on S3, in order (``LIST``: a listing;
#: ``N.json``: the commit file of version N). Once the inputs are listed the table is opened
#: (delta-rs reads ``_last_checkpoint``, lists the log and reads the latest commit file twice);
#: once the data files are assembled, one GET asks for the next commit file (someone else's
#: commit). The commit itself is delta-rs's: a listing for a newer version, the conditional
#: PUT, then its own reload of the state it just wrote — once after an overwrite, twice after
#: creating a table — and nothing of ours after it.
OPEN_NEW = ["GET _last_checkpoint", "LIST"]
OPEN_V0 = ["GET _last_checkpoint", "LIST", "GET 0.json", "GET 0.json"]
RELOAD_V0 = OPEN_V0
CREATE = ["LIST", "PUT 0.json", *RELOAD_V0, *RELOAD_V0]
OVERWRITE_V1 = ["LIST", "PUT 1.json", "LIST", "GET 1.json", "GET 1.json"]


def _delta_log_requests(seen: list[tuple[str, str]], root: str) -> dict[str, list[str]]:
    """Per table below ``root`` (``/bucket/out``), the ``_delta_log`` requests in order."""
    from urllib.parse import parse_qs, urlsplit

    found: dict[str, list[str]] = {table: [] for table in TABLES}
    for method, target in seen:
        parts = urlsplit(target)
        if "list-type" in parts.query:
            path, name = "/" + parts.path.strip("/") + "/" + parse_qs(parts.query)["prefix"][0], ""
        else:
            path, name = parts.path, parts.path.rsplit("/", 1)[-1]
        table, _, rest = path.removeprefix(f"{root}/").partition("/")
        if not rest.startswith("_delta_log") or table not in found:
            continue
        if not name:
            found[table].append("LIST")
        else:
            short = f"{int(name.split('.')[0])}.json" if name[0].isdigit() else name
            found[table].append(f"{method} {short}")
    return found


def test_s3_commit_takes_few_requests_per_table_and_run_record_one_put(
    local_tree: Path,
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    s3_endpoint: str,
) -> None:
    """Every request of a run on each table's log and on ``_run.json``, counted by a proxy: a
    first run creates every table (10 requests per commit), a rerun without one image
    overwrites the tables that changes (5 per commit) and leaves the video tables alone;
    ``_run.json`` is read once at the start and written in one PUT."""
    bucket, storage = s3_bucket
    upload_tree(local_tree, f"{bucket}/in", storage)
    root = "/" + bucket.removeprefix("s3://") + "/out"
    with FaultyProxy(s3_endpoint, FaultPlan(rate=0.0)) as proxy:
        options = ("--storage-option", f"endpoint_url={proxy.url}")
        code, _ = run_cli(f"{bucket}/in", *ARGS, *options, output=f"{bucket}/out")
        first = proxy.reset_counters().seen
        fs, _ = fsspec.core.url_to_fs(bucket, **storage)
        mask = sorted(p for p in fs.find(f"{bucket}/in/images") if "_ins_ma" in p)[0]
        fs.rm(fs.glob(mask.split("_ins_ma")[0] + "*"))
        code_again, _ = run_cli(f"{bucket}/in", *ARGS, *options, output=f"{bucket}/out")
        again = proxy.reset_counters().seen
    assert (code, code_again) == (3, 3)

    assert len(CREATE) == 10 and len(OVERWRITE_V1) == 5
    assert _delta_log_requests(first, root) == {
        table: [*OPEN_NEW, "GET 0.json", *CREATE] for table in TABLES
    }
    record = read_run(f"{bucket}/out", storage)
    overwritten = [t for t in TABLES if record["tables"][t]["version"] == 1]
    assert "masks" in overwritten and not {"chunks", "gaps"} & set(overwritten)
    assert _delta_log_requests(again, root) == {
        table: [*OPEN_V0, "GET 1.json", *(OVERWRITE_V1 if table in overwritten else [])]
        for table in TABLES
    }
    for seen in (first, again):
        assert [m for m, p in seen if "_run.json" in p] == ["GET", "PUT"]
        assert not [p for m, p in seen if "_run.json" in p and "?" in p]
