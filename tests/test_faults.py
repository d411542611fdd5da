"""Resilience: a worker process killed mid-run, and S3 failing 30 % of requests (503 SlowDown,
connections dropped before or after the request was applied, answers cut off) must change
nothing in the result — every table identical to a clean in-process run (row for row), rescaled
masks byte for byte, every part listed once, no part on storage that ``_run.json`` does not list,
every work item counted once. Storage that stays unusable (missing bucket, access denied) ends
the run with exit code 1, a message naming the URL and no ``_run.json``.

The fault injectors are in ``tests/faulty_proxy.py`` (importable by worker processes).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from faulty_proxy import FaultPlan, FaultyProxy, KillWorkerOnce, RecordTransitions
from reference import read_output
from storage_helpers import upload_tree

from pipeline import read_run, read_table
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet
from pipeline.tables import TABLES

pytestmark = pytest.mark.timeout(150)

RunCli = Callable[..., tuple[int, Any]]
#: Encoding ``auto`` (two passes over the cluster) and rescaled masks: every kind of output.
ARGS = ("--mask-scale", "50")
#: One image group or video chunk per batch: ~30 tasks per pass, so a death lands mid-pass.
SMALL_BATCHES = ("--batch-bytes", "1")
#: Transient faults: 503 SlowDown; connection reset before the request reaches storage; reset
#: after storage applied it (the answer lost); answer cut off halfway through its body.
TRANSIENT = ("slowdown", "reset", "lost_answer", "truncated")


def _make_tree(root: Path, images: int, videos: int) -> Path:
    """Images and videos of 3 chunks each, all regular (a clean run exits 0)."""
    make_celantur_tree(root / "images", seed=5, images=images)
    make_video_fleet(root / "videos", seed=5, videos=videos, frames_per_video=1100, quirks=False)
    return root


def _clean_run(tree: Path, out: Path, *args: str) -> dict[str, Any]:
    """The reference: an in-process (``sync``) run on local folders, no faults."""
    from pipeline.cli import main

    argv = ["celantur", str(tree), str(out), "--scheduler", "sync", "--no-progress", *args]
    assert main(argv) == 0
    snapshot = _snapshot(str(out), {})
    assert all(snapshot["tables"][t] for t in ("masks", "instances", "detections", "gaps"))
    assert {table: sorted(map(_row_key, read_output(out, table))) for table in TABLES} == (
        snapshot["tables"]
    )
    return snapshot


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 images and 2 videos: ~30 tasks per pass with one input per batch."""
    return _make_tree(tmp_path_factory.mktemp("faults") / "in", images=24, videos=2)


@pytest.fixture(scope="module")
def clean(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The clean run of ``tree``."""
    return _clean_run(tree, tmp_path_factory.mktemp("clean") / "out", *ARGS)


@pytest.fixture(scope="module")
def s3_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 images and 1 video: every kind of input, and few enough requests (~150 to ~300 a run)
    that 30 % of them failing — each costing botocore's backoff, 0.5 s on average at the first
    retry, 1 s at the second — keeps a run within seconds."""
    return _make_tree(tmp_path_factory.mktemp("s3-faults") / "in", images=4, videos=1)


@pytest.fixture(scope="module")
def s3_clean(
    s3_tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., dict[str, Any]]:
    """The clean run of ``s3_tree`` with the given arguments (each run once per module)."""
    runs: dict[tuple[str, ...], dict[str, Any]] = {}

    def clean_run(*args: str) -> dict[str, Any]:
        if args not in runs:
            runs[args] = _clean_run(s3_tree, tmp_path_factory.mktemp("s3-clean") / "out", *args)
        return runs[args]

    return clean_run


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def _snapshot(out: str, storage: dict[str, Any]) -> dict[str, Any]:
    """Every table's rows (sorted; the versions ``_run.json`` records), rescaled masks,
    accounting."""
    record = read_run(out, storage)
    tables = {
        table: sorted(map(_row_key, read_table(out, table, storage).to_pylist()))
        for table in TABLES
    }
    fs, root = fsspec.core.url_to_fs(out, **storage)
    fs.invalidate_cache()
    scaled_root = f"{root.rstrip('/')}/scaled"
    scaled = {p[len(scaled_root) :]: fs.cat_file(p) for p in fs.find(scaled_root)}
    return {
        "tables": tables,
        "scaled": scaled,
        "rows": {table: info["rows"] for table, info in record["tables"].items()},
        "accounting": record["accounting"],
        "found": record["inputs"]["found"],
    }


def _assert_exact(out: str, storage: dict[str, Any], clean: dict[str, Any]) -> dict[str, Any]:
    """The output equals the clean run's, and every data file its ``_run.json`` lists is there."""
    got = _snapshot(out, storage)
    for table in TABLES:
        assert got["tables"][table] == clean["tables"][table], f"table {table} differs"
    assert got == clean
    record = read_run(out, storage)
    assert record["exit_code"] == 0
    assert record["accounting"]["in_tables"] == record["accounting"]["found"]
    fs, root = fsspec.core.url_to_fs(out, **storage)
    fs.invalidate_cache()
    root = root.rstrip("/")
    for table in TABLES:
        listed = record["tables"][table]["files"]
        assert len(listed) == len(set(listed)), f"{table}: a data file listed twice"
        on_storage = {
            path[len(root) + 1 :]
            for path in fs.find(f"{root}/{table}")
            if path.endswith(".parquet") and "/_delta_log/" not in path
        }
        # A retried assembling task may leave a file no version references (vacuum's job).
        assert set(listed) <= on_storage, f"{table}: a listed data file is missing"
        assert len(got["tables"][table]) == record["tables"][table]["rows"]
    assert not [p for p in fs.ls(root, detail=False) if p.endswith(".partial")]
    assert not [p for p in fs.find(f"{root}/_work") if not p.endswith("/")]
    # One ledger entry per work item, and one summary merged per work item: a task that ran
    # twice (its first worker died, or its answer was lost) was counted once.
    assert len(fs.find(f"{root}/_ledger")) == record["work"]["done"] + record["work"]["reused"]
    return record


@contextlib.contextmanager
def _cluster(workers: int) -> Iterator[tuple[Any, Any]]:
    """A cluster of ``workers`` single-threaded worker processes (Nannies) and its client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        yield cluster, client


# --- a worker process dies mid-run -------------------------------------------------------------


def test_worker_killed_mid_pass_changes_nothing(
    tree: Path, clean: dict[str, Any], run_cli: RunCli, tmp_path: Path
) -> None:
    """Three Nanny workers; the first worker to finish its second pass-1 task exits
    (``os._exit(1)``) then — parts and ledger entry written, result not yet reported — so that
    task runs again elsewhere and the tasks queued on the dead worker move. The Nanny restarts
    the worker; the marker keeps any worker from dying again."""
    marker = tmp_path / "worker-killed"
    with _cluster(3) as (cluster, client):
        assert len(client.scheduler_info()["workers"]) == 3
        client.register_plugin(KillWorkerOnce("pass 1", after=2, marker=str(marker)))
        code, out = run_cli(tree, *ARGS, *SMALL_BATCHES, scheduler=cluster.scheduler_address)
        died, victim = marker.read_text().splitlines() if marker.exists() else (None, None)
        restarted = len(client.scheduler_info()["workers"])
    assert died is not None and died.startswith("pass 1-"), "no worker was killed"
    assert code == 0
    record = _assert_exact(str(out), {}, clean)
    assert record["scheduler"]["workers"] == 3
    assert record["inputs"]["batches"] >= 20
    assert record["work"]["reused"] == 0
    # Every part on disk, listed or not, read back: nothing stray, nothing twice.
    for table in TABLES:
        on_disk = sorted(map(_row_key, read_output(Path(out), table)))
        assert on_disk == clean["tables"][table], f"{table}: rows on disk differ"
    print(
        f"\nworker {victim} killed after finishing {died}; workers after the run: {restarted}; "
        f"batches {record['inputs']['batches']}, work items {record['work']['done']}; "
        f"rows compared: {sum(clean['rows'].values())}"
    )


# --- S3 faults through a proxy -------------------------------------------------------------------


@pytest.fixture
def faulty_proxy(s3_endpoint: str) -> Iterator[Callable[[FaultPlan], FaultyProxy]]:
    """Starts fault-injecting proxies in front of moto's server; stops them after the test."""
    started: list[FaultyProxy] = []

    def start(plan: FaultPlan) -> FaultyProxy:
        proxy = FaultyProxy(s3_endpoint, plan).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def _describe(counters: Any) -> str:
    return (
        f"{counters.faults} faults in {counters.requests} requests "
        f"({dict(counters.injected)}; {dict(sorted(counters.by_method.items()))})"
    )


@pytest.mark.parametrize(
    ("scheduler", "encoding"),
    [
        # In-process: one request at a time, the fault sequence replays exactly.
        ("sync", "v26"),
        # Two worker processes; encoding auto: pass 1 types the batches whose own evidence
        # decides (parking the others' rows under _work/ for pass 2), so those requests meet
        # faults too.
        ("local-2", "auto"),
    ],
)
def test_s3_faults_change_nothing(
    scheduler: str,
    encoding: str,
    s3_tree: Path,
    s3_clean: Callable[..., dict[str, Any]],
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    faulty_proxy: Callable[[FaultPlan], FaultyProxy],
) -> None:
    """30 % of requests (listing, reads, part and ledger writes, the commit, the clean-up) get
    ``503 SlowDown``, a dropped connection (the request applied or not) or a cut-off answer;
    botocore's adaptive retries (and s3fs's own, for bodies) must absorb them."""
    bucket, storage = s3_bucket
    upload_tree(s3_tree, f"{bucket}/in", storage)
    proxy = faulty_proxy(FaultPlan(rate=0.3, kinds=TRANSIENT, seed=11))
    where = ("--scheduler", "sync") if scheduler == "sync" else ("--workers", "2")
    args = (*ARGS, "--encoding", encoding)
    code, _ = run_cli(
        f"{bucket}/in", *args, "--storage-option", f"endpoint_url={proxy.url}", *where,
        output=f"{bucket}/out", scheduler=None,
    )  # fmt: skip
    proxy.enabled = False
    print(f"\n{scheduler}: {_describe(proxy.counters)}")
    assert all(proxy.counters.injected[kind] > 0 for kind in TRANSIENT)
    assert code == 0
    record = _assert_exact(f"{bucket}/out", storage, s3_clean(*args))
    assert record["scheduler"]["kind"] == ("sync" if scheduler == "sync" else "local")


def test_s3_faults_while_batches_step_aside_change_nothing(
    s3_tree: Path,
    s3_clean: Callable[..., dict[str, Any]],
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    faulty_proxy: Callable[[FaultPlan], FaultyProxy],
    tmp_path: Path,
) -> None:
    """On remote output a task steps aside once only its last writes and its ledger entry are
    left (``pipeline.graph.step_aside``), so a worker's next batch runs meanwhile: with 30 %
    transient faults on every request, one input per batch and two single-threaded workers,
    tasks did step aside (the workers say so) and the output is exactly the clean run's."""
    bucket, storage = s3_bucket
    upload_tree(s3_tree, f"{bucket}/in", storage)
    proxy = faulty_proxy(FaultPlan(rate=0.3, kinds=TRANSIENT, seed=17))
    aside = tmp_path / "stepped-aside"
    with _cluster(2) as (cluster, client):
        client.register_plugin(RecordTransitions("long-running", str(aside)))
        code, _ = run_cli(
            f"{bucket}/in", *ARGS, *SMALL_BATCHES, "--storage-option",
            f"endpoint_url={proxy.url}", output=f"{bucket}/out",
            scheduler=cluster.scheduler_address,
        )  # fmt: skip
    proxy.enabled = False
    stepped = aside.read_text().splitlines() if aside.exists() else []
    print(f"\n{_describe(proxy.counters)}; tasks stepped aside: {len(stepped)}")
    assert code == 0
    assert any(key.startswith("pass 1-") for key in stepped), "no task stepped aside"
    assert all(proxy.counters.injected[kind] > 0 for kind in TRANSIENT)
    record = _assert_exact(f"{bucket}/out", storage, s3_clean(*ARGS))
    assert record["inputs"]["batches"] >= 6


def test_worker_killed_while_a_task_stands_aside_changes_nothing(
    s3_tree: Path,
    s3_clean: Callable[..., dict[str, Any]],
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The first worker whose pass-1 task steps aside exits that moment — its parts possibly
    still being written, its ledger entry not yet — so the task runs again elsewhere: the
    output is exactly the clean run's, each work item counted once."""
    bucket, storage = s3_bucket
    upload_tree(s3_tree, f"{bucket}/in", storage)
    marker = tmp_path / "worker-killed"
    with _cluster(2) as (cluster, client):
        client.register_plugin(
            KillWorkerOnce("pass 1", after=1, marker=str(marker), state="long-running")
        )
        code, _ = run_cli(
            f"{bucket}/in", *ARGS, *SMALL_BATCHES, "--storage-option",
            f"endpoint_url={storage['endpoint_url']}", output=f"{bucket}/out",
            scheduler=cluster.scheduler_address,
        )  # fmt: skip
    died = marker.read_text().splitlines()[0] if marker.exists() else None
    assert died is not None and died.startswith("pass 1-"), "no worker was killed"
    assert code == 0
    record = _assert_exact(f"{bucket}/out", storage, s3_clean(*ARGS))
    assert record["work"]["reused"] == 0


def test_missing_bucket_behind_faults_exits_1(
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    faulty_proxy: Callable[[FaultPlan], FaultyProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, storage = s3_bucket
    proxy = faulty_proxy(FaultPlan(rate=0.3, kinds=TRANSIENT, seed=3))
    source = "s3://no-such-bucket/in"
    code, _ = run_cli(
        source, "--storage-option", f"endpoint_url={proxy.url}", output=f"{bucket}/out"
    )
    err = capsys.readouterr().err
    print(f"\n{_describe(proxy.counters)}; {err.strip().splitlines()[-1]}")
    assert code == 1
    assert source in err
    _assert_no_commit(f"{bucket}/out", storage)


def test_access_denied_exits_1(
    s3_tree: Path,
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    faulty_proxy: Callable[[FaultPlan], FaultyProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, storage = s3_bucket
    upload_tree(s3_tree / "images", f"{bucket}/in", storage)
    proxy = faulty_proxy(FaultPlan(rate=1.0, kinds=("denied",)))
    code, _ = run_cli(
        f"{bucket}/in", "--storage-option", f"endpoint_url={proxy.url}", output=f"{bucket}/out"
    )
    err = capsys.readouterr().err
    print(f"\n{_describe(proxy.counters)}; {err.strip().splitlines()[-1]}")
    assert code == 1
    assert f"{bucket}/in" in err
    assert proxy.counters.injected["denied"] == proxy.counters.requests > 0
    _assert_no_commit(f"{bucket}/out", storage)


def test_output_access_denied_exits_1_naming_the_output(
    s3_tree: Path,
    run_cli: RunCli,
    s3_bucket: tuple[str, dict[str, Any]],
    faulty_proxy: Callable[[FaultPlan], FaultyProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Inputs readable, every request under the output refused: exit 1, the output named."""
    bucket, storage = s3_bucket
    upload_tree(s3_tree / "images", f"{bucket}/in", storage)
    output = f"{bucket}/out"
    refuse = "/" + output.removeprefix("s3://")
    proxy = faulty_proxy(FaultPlan(rate=1.0, kinds=("denied",), prefixes=(refuse,)))
    code, _ = run_cli(
        f"{bucket}/in", "--storage-option", f"endpoint_url={proxy.url}", output=output
    )
    err = capsys.readouterr().err
    print(f"\n{_describe(proxy.counters)}; {err.strip().splitlines()[-1]}")
    assert code == 1
    _assert_no_commit(output, storage)
    assert output in err


def _assert_no_commit(out: str, storage: dict[str, Any]) -> None:
    fs, root = fsspec.core.url_to_fs(out, **storage)
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/_run.json")
