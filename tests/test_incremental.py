"""Incremental runs: only new or changed inputs are processed, and the tables equal a full run."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reference import output_tables, read_output

from pipeline import runner
from pipeline.io.storage import Location
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet
from pipeline.stages import work

RunCli = Callable[..., tuple[int, Any]]


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "_run.json").read_text())


def _data_objects(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every file but the run record, with its modification time and bytes."""
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "_run.json"
    }


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    make_celantur_tree(root / "images", seed=21, images=24)
    make_video_fleet(root / "videos", seed=21, videos=3, frames_per_video=1100, quirks=False)
    return root


@pytest.mark.parametrize("encoding", ["auto", "v26"])
def test_unchanged_inputs_do_no_work_and_write_nothing(
    encoding: str, tree: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    args = ("--encoding", encoding, "--mask-scale", "50", "--batch-bytes", "20000")
    _, out = run_cli(tree, *args, output=tmp_path / "out")
    first = _record(out)
    assert first["work"]["done"] > 4 and first["work"]["reused"] == 0
    objects = _data_objects(out)
    tables = output_tables(out)

    code, _ = run_cli(tree, *args, "--incremental", output=out)
    assert code == 0
    again = _record(out)
    assert again["work"] == {"done": 0, "reused": first["work"]["done"]}
    assert output_tables(out) == tables
    assert _data_objects(out) == objects, "no data object may be rewritten"


@pytest.mark.parametrize("encoding", ["auto", "v26"])
def test_changes_redo_only_their_batches_and_equal_a_full_run(
    encoding: str, tree: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    args = ("--encoding", encoding, "--mask-scale", "50", "--batch-bytes", "20000")
    _, out = run_cli(tree, *args, output=tmp_path / "out")
    batches = _record(out)["inputs"]["batches"]

    # Add two images, change one mask, remove one image's files, change one video chunk.
    extra = make_celantur_tree(tmp_path / "extra", seed=99, images=2)
    for image in extra.images:
        for rel in (image.instance_path, image.binary_path, image.metadata_path):
            if rel:
                target = tree / "images" / "added" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(extra.root / rel, target)
    masks = sorted((tree / "images").rglob("*_ins_ma*.png"))
    changed, removed = masks[3], masks[10]
    shutil.copyfile(masks[0], changed)
    stem = removed.name.split("_ins_ma")[0]
    for path in removed.parent.glob(f"{stem}*"):
        path.unlink()
    chunk = sorted((tree / "videos").rglob("*.json"))[1]
    frames = json.loads(chunk.read_text())
    frames[7]["detections"] = []
    chunk.write_text(json.dumps(frames))

    code, _ = run_cli(tree, *args, "--incremental", output=out)
    assert code == 0
    work = _record(out)["work"]
    assert work["reused"] > 0
    assert batches >= 15
    # Five changes touch at most two batches each (their image or chunk batch, a track task).
    assert work["done"] <= 8, f"{work} of {batches} batches for five changed inputs"

    code, full = run_cli(tree, *args, output=tmp_path / "full")
    assert code == 0
    assert output_tables(out) == output_tables(full)
    assert sorted(_record(out)["tables"]["masks"]["staged"]) == sorted(
        _record(full)["tables"]["masks"]["staged"]
    )
    removed_rel = removed.relative_to(tree).as_posix()
    assert not any(row["scaled_path"].endswith(removed_rel) for row in read_output(out, "masks"))


def test_ledger_entries_fingerprint_the_parts_as_written_without_reading_them(
    tree: Path, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saving = []
    reads_while_saving: list[str] = []
    save_entry = work.save_entry

    def counting_save(output: Location, name: str, summary: Any) -> None:
        saving.append(name)
        try:
            save_entry(output, name, summary)
        finally:
            saving.remove(name)

    def read_many(self: Location, rels: Any, *args: Any, **kwargs: Any) -> Any:
        rels = list(rels)
        if saving:
            reads_while_saving.extend(rels)
        return original_many(self, rels, *args, **kwargs)

    def read_bytes(self: Location, rel: str) -> bytes:
        if saving:
            reads_while_saving.append(rel)
        return original_bytes(self, rel)

    original_many, original_bytes = Location.read_many, Location.read_bytes
    monkeypatch.setattr(work, "save_entry", counting_save)
    monkeypatch.setattr(Location, "read_many", read_many)
    monkeypatch.setattr(Location, "read_bytes", read_bytes)

    args = ("--encoding", "auto", "--mask-scale", "50", "--batch-bytes", "20000")
    code, out = run_cli(tree, *args, output=tmp_path / "out")
    assert code == 0
    assert reads_while_saving == [], "saving a ledger entry reads nothing back"

    entries = sorted((out / "_ledger").glob("*.json"))
    assert len(entries) == _record(out)["work"]["done"]
    fingerprinted = 0
    for entry in entries:
        recorded = json.loads(entry.read_text())["parts"]
        for part, (size, digest) in recorded.items():
            data = (out / part).read_bytes()
            assert [size, digest] == [len(data), hashlib.sha256(data).hexdigest()], part
            fingerprinted += 1
    staged = {str(p.relative_to(out)) for p in (out / "_staged").rglob("*.arrow")}
    assert fingerprinted > 10
    # every part a work item staged is in exactly one entry (the client's summary part is not)
    in_entries = [part for e in entries for part in json.loads(e.read_text())["parts"]]
    assert len(in_entries) == len(set(in_entries))
    assert set(in_entries) == {p for p in staged if not p.startswith("_staged/summary/")}


def test_summaries_reaching_the_client_carry_no_part_fingerprints(
    tree: Path, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts' sizes and SHA-256 go to the ledger entries only: no summary a work item
    returns to the client holds one, done or reused, and reuse still checks them."""
    reaching: list[bytes] = []
    pass_results = runner._pass_results

    def recording(*args: Any, **kwargs: Any) -> Any:
        for summary in pass_results(*args, **kwargs):
            reaching.append(pickle.dumps(summary))
            yield summary

    monkeypatch.setattr(runner, "_pass_results", recording)
    args = ("--encoding", "auto", "--mask-scale", "50", "--batch-bytes", "20000")
    code, out = run_cli(tree, *args, output=tmp_path / "out")
    assert code == 0
    done = _record(out)["work"]["done"]
    code, _ = run_cli(tree, *args, "--incremental", output=out)
    assert code == 0
    assert _record(out)["work"] == {"done": 0, "reused": done}

    digests = {
        digest
        for entry in (out / "_ledger").glob("*.json")
        for _, digest in json.loads(entry.read_text())["parts"].values()
    }
    assert len(digests) > 10 and len(reaching) == 2 * done
    assert not [s for s in reaching if any(d.encode() in s for d in digests)]
