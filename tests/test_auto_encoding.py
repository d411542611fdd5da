"""``--encoding auto`` types every image batch whose own evidence decides an encoding in pass 1,
parks only the others' measured rows for pass 2, and measures again only the batches a
conflicting dataset decided otherwise. Whatever the dataset, its tables are those of the
explicit encoding ``auto`` decides, and those of ``auto`` with every batch parked (the two-pass
way, whose results are not in question); a decisive dataset does no pass-2 image work and writes
nothing under ``_work/`` (checked on S3 too); incremental reruns reuse exactly what still holds
when the dataset's decision flips and flips back."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import fsspec
import numpy as np
import pytest
from faulty_proxy import FaultPlan, FaultyProxy
from PIL import Image
from reference import output_tables
from storage_helpers import upload_tree

from pipeline import read_run, read_table
from pipeline.formats.celantur import Encoding, EncodingEvidence
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.tables import TABLES

RunCli = Callable[..., tuple[int, Any]]
#: About 20 KB of input per batch: 6 to 14 batches per dataset.
ARGS = ("--mask-scale", "50", "--batch-bytes", "20000")


def _write_ambiguous(root: Path, images: int) -> None:
    """Instance masks holding only 128, 64 and 192 in B: valid in v26 and legacy alike (192 is
    person + plate in one, face in the other), so no colour tells the encodings apart."""
    rng = np.random.default_rng(3)
    for index in range(images):
        mask = np.zeros((60 + index, 90, 3), np.uint8)
        for instance, value in enumerate((128, 64, 192)[: 1 + index % 3]):
            x, y = rng.integers(0, 60, 2)
            mask[y : y + 12, x : x + 20] = (0, 10 + instance, value)
        folder = root / f"f{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(folder / f"img{index:02d}_ins_maks.png")


def _make_dataset(kind: str, root: Path) -> Path:
    if kind in ("v26", "legacy", "legacy-red"):
        encoding = cast(Encoding, kind)
        make_celantur_tree(root, seed=5, images=24, encoding=encoding, write_images=False)
    elif kind == "ambiguous":
        _write_ambiguous(root, 24)
    elif kind == "conflicting":
        # v26 batches outvote legacy ones; some batches of each hold no vote at all.
        make_celantur_tree(root / "new", seed=5, images=24, encoding="v26", write_images=False)
        make_celantur_tree(root / "old", seed=6, images=12, encoding="legacy", write_images=False)
        _write_ambiguous(root / "plain", 8)
    else:
        raise ValueError(kind)
    return root


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "_run.json").read_text())


def _ledger(out: Path, prefix: str) -> dict[str, dict[str, Any]]:
    """The ledger entries named ``<prefix>-...``: name -> summary."""
    return {
        path.stem: json.loads(path.read_text())["summary"]
        for path in (out / "_ledger").glob(f"{prefix}-*.json")
    }


def _without_warning(tables: dict[str, list[str]]) -> dict[str, list[str]]:
    """The tables minus the run-level ``encoding_ambiguous`` row only ``auto`` writes."""
    errors = [row for row in tables["errors"] if json.loads(row)["error"] != "encoding_ambiguous"]
    return {**tables, "errors": errors}


#: dataset -> (the encoding auto decides, the start of its warning or None)
DATASETS = {
    "v26": ("v26", None),
    "legacy": ("legacy", None),
    "legacy-red": ("legacy-red", None),
    "ambiguous": ("v26", "encoding auto: no colour"),
    "conflicting": ("v26", "encoding auto: conflicting evidence"),
}


@pytest.mark.parametrize("kind", DATASETS)
def test_auto_equals_explicit_and_parked(
    kind: str, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided, warning = DATASETS[kind]
    src = _make_dataset(kind, tmp_path / "in")
    code, auto = run_cli(src, *ARGS, output=tmp_path / "auto")
    assert code == 0
    record = _record(auto)
    assert record["encoding"]["used"] == decided
    if warning is None:
        assert record["encoding"]["warning"] is None
    else:
        assert record["encoding"]["warning"].startswith(warning)
    tables = output_tables(auto)
    assert all(tables[t] for t in ("masks", "instances", "summary"))

    # Pass 1 typed each batch whose evidence is decisive, under that encoding; pass 2 did the
    # parked batches and those typed under another encoding than the dataset's, nothing else.
    first = _ledger(auto, "auto")
    batches = record["inputs"]["batches"]
    assert len(first) == batches >= 6
    typed = {key: enc for summary in first.values() for key, enc in summary["typed"].items()}
    for summary in first.values():
        evidence = EncodingEvidence(**summary["evidence"])
        assert list(summary["typed"].values()) == [e for e in [evidence.decisive()] if e]
    redone = {key for key, enc in typed.items() if enc != decided}
    parked = batches - len(typed)
    second = _ledger(auto, "images")
    assert sorted(second) == sorted(
        f"images-{key}-{decided}" for key in [*redone, *_parked_keys(first)]
    )
    assert record["work"] == {"done": batches + len(redone) + parked, "reused": 0}
    if kind == "conflicting":
        assert redone and parked and len(typed) > len(redone)
    if kind in ("v26", "legacy-red"):
        assert not second and not redone and not parked
    if kind == "ambiguous":
        assert not typed
    assert not [p for p in (auto / "_work").rglob("*") if p.is_file()]

    # The same inputs with every batch parked, as before pass 1 could type any.
    with monkeypatch.context() as patched:
        patched.setattr(EncodingEvidence, "decisive", lambda self: None)
        code, parked_out = run_cli(src, *ARGS, output=tmp_path / "parked")
    assert code == 0
    assert all(not summary["typed"] for summary in _ledger(parked_out, "auto").values())
    assert output_tables(parked_out) == tables
    assert _record(parked_out)["encoding"] == record["encoding"]

    code, explicit = run_cli(src, *ARGS, "--encoding", decided, output=tmp_path / "explicit")
    assert code == 0
    assert output_tables(explicit) == _without_warning(tables)
    assert (_without_warning(tables) == tables) == (warning is None)


def _parked_keys(first: dict[str, dict[str, Any]]) -> list[str]:
    """Batch keys of the ``auto-<key>`` entries that typed nothing (parked)."""
    return [name.removeprefix("auto-") for name, summary in first.items() if not summary["typed"]]


def test_incremental_reruns_when_the_decision_flips_and_back(
    run_cli: RunCli, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    make_celantur_tree(src / "new", seed=5, images=12, encoding="v26", write_images=False)
    _write_ambiguous(src / "plain", 6)
    # One image per batch: batches stay put whatever is added (larger ones are cut by content,
    # at a size that follows the mean input size).
    args = ("--mask-scale", "50", "--batch-bytes", "1")
    incremental = (*args, "--incremental")

    def full(name: str) -> dict[str, list[str]]:
        code, out = run_cli(src, *args, output=tmp_path / name)
        assert code == 0
        return output_tables(out)

    code, out = run_cli(src, *incremental, output=tmp_path / "out")
    assert code == 0 and _record(out)["encoding"]["used"] == "v26"
    v26_tables = output_tables(out)
    first = _ledger(out, "auto")
    typed_v26 = {k for s in first.values() for k in s["typed"]}
    v26_batches = _record(out)["inputs"]["batches"]
    assert typed_v26 and len(typed_v26) < v26_batches  # typed and parked batches

    # Legacy images outvote the v26 ones: every batch is typed as legacy, none reused as v26
    # (the tables equal a full run's, whose masks/ rows name their encoding).
    make_celantur_tree(src / "old", seed=6, images=36, encoding="legacy", write_images=False)
    code, _ = run_cli(src, *incremental, output=out)
    assert code == 0
    record = _record(out)
    assert record["encoding"]["used"] == "legacy"
    assert record["encoding"]["warning"].startswith("encoding auto: conflicting evidence")
    added = {name: s for name, s in _ledger(out, "auto").items() if name not in first}
    assert len(added) == record["inputs"]["batches"] - v26_batches > 0
    assert {e for s in added.values() for e in s["typed"].values()} == {"legacy"}
    # pass 1: the added batches; pass 2: the added batches parked and every earlier one
    added_parked = len(_parked_keys(added))
    assert record["work"] == {
        "done": len(added) + added_parked + v26_batches, "reused": v26_batches,
    }  # fmt: skip
    assert output_tables(out) == full("full-flipped")
    flipped_tables = output_tables(out)

    # Unchanged: nothing is done again (neither pass 1 nor the redone batches).
    code, _ = run_cli(src, *incremental, output=out)
    assert code == 0
    assert _record(out)["work"]["done"] == 0
    assert output_tables(out) == flipped_tables

    # The legacy images gone: the decision flips back, and the v26 results of the first run
    # (pass-1 typed and pass-2 finished parts alike) are all still valid.
    shutil.rmtree(src / "old")
    code, _ = run_cli(src, *incremental, output=out)
    assert code == 0
    assert _record(out)["encoding"]["used"] == "v26"
    assert _record(out)["work"] == {"done": 0, "reused": len(typed_v26) + 2 * (
        v26_batches - len(typed_v26))}  # fmt: skip
    assert output_tables(out) == v26_tables == full("full-back")


@pytest.mark.timeout(150)
def test_incremental_measures_a_batch_parked_by_an_earlier_run_without_looking_for_its_rows(
    tmp_path: Path,
    run_cli: RunCli,
    s3_endpoint: str,
    s3_bucket: tuple[str, dict[str, Any]],
) -> None:
    """A rerun that reuses pass 1 of batches an earlier run parked (that run stopped before
    pass 2 recorded anything: its ``images-*`` ledger entries are gone) measures them again at
    once. Their parked rows were under the earlier run's ``_work/`` folder: the rerun sends no
    request under ``_work/`` at all (it used to GET each batch's 6 parked files, not found),
    and its tables are the first run's."""
    bucket, storage = s3_bucket
    src = tmp_path / "in"
    _write_ambiguous(src, 8)
    upload_tree(src, f"{bucket}/in", storage)
    with FaultyProxy(s3_endpoint, FaultPlan(rate=0.0)) as proxy:
        argv = (f"{bucket}/in", *ARGS, "--incremental", "--storage-option",
                f"endpoint_url={proxy.url}")  # fmt: skip

        def under_work() -> list[tuple[str, str]]:
            seen, proxy.counters.seen = proxy.counters.seen, []
            return [(method, path) for method, path in seen if "/_work/" in path]

        code, out = run_cli(*argv, output=f"{bucket}/out")
        assert code == 0
        batches = read_run(out, storage)["inputs"]["batches"]
        # Every batch ambiguous, so every one parked: 6 files written and read back each.
        assert Counter(method for method, _ in under_work()) == {
            "PUT": 6 * batches,
            "GET": 6 * batches,
        }
        tables = {t: read_table(out, t, storage).to_pylist() for t in TABLES}

        fs, root = fsspec.core.url_to_fs(f"{out}/_ledger", **storage)
        finished = fs.glob(f"{root}/images-*")
        assert len(finished) == batches
        fs.rm(finished)
        code, _ = run_cli(*argv, output=out)
        assert code == 0
        assert under_work() == []
    assert read_run(out, storage)["work"] == {"done": batches, "reused": batches}
    assert {t: read_table(out, t, storage).to_pylist() for t in TABLES} == tables


#: Transient faults (see tests/faulty_proxy.py): what botocore's and s3fs's retries absorb.
TRANSIENT = ("slowdown", "reset", "lost_answer", "truncated")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["v26", "ambiguous"])
def test_s3_parks_only_ambiguous_batches(
    kind: str,
    tmp_path: Path,
    run_cli: RunCli,
    s3_endpoint: str,
    s3_bucket: tuple[str, dict[str, Any]],
) -> None:
    """On S3 a decisive dataset sends no request under ``_work/``; an ambiguous one parks its
    rows, reads them back and removes them, through 30 % transient faults for those requests,
    and its tables equal a local run's."""
    bucket, storage = s3_bucket
    src = tmp_path / "in"
    if kind == "v26":
        _make_dataset(kind, src)
    else:
        _write_ambiguous(src, 8)
    upload_tree(src, f"{bucket}/in", storage)
    rate = 0.0 if kind == "v26" else 0.3
    plan = FaultPlan(rate=rate, kinds=TRANSIENT, seed=4, prefixes=("/test-bucket/out/_work/",))
    with FaultyProxy(s3_endpoint, plan) as proxy:
        code, out = run_cli(
            f"{bucket}/in", *ARGS, "--storage-option", f"endpoint_url={proxy.url}",
            output=f"{bucket}/out",
        )  # fmt: skip
    assert code == 0
    under_work = [(method, path) for method, path in proxy.counters.seen if "/_work/" in path]
    if kind == "v26":
        assert under_work == []
    else:
        # The check sees parking where there is some: rows written and read back (and removed
        # by one POST to the bucket, which names no key in its path).
        assert {method for method, _ in under_work} == {"PUT", "GET"}
        assert proxy.counters.faults > 0
    fs, root = fsspec.core.url_to_fs(f"{out}/_work", **storage)
    assert not fs.find(root)
    _, local = run_cli(src, *ARGS, output=tmp_path / "local")
    assert {
        table: sorted(
            json.dumps(row, sort_keys=True) for row in read_table(out, table, storage).to_pylist()
        )
        for table in TABLES
    } == output_tables(local)
