"""What a run lists: an empty input is refused unless allowed; outputs of earlier runs found
anywhere under the input are never read as inputs (warned about, counted as ignored)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.io.storage import InputFile
from pipeline.runner import earlier_outputs
from pipeline.sampledata.celantur import make_celantur_tree


def test_empty_input_exits_1_naming_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "photo.jpg").write_bytes(b"jpeg")
    out = tmp_path / "out"
    assert main(["celantur", str(empty), str(out), "--scheduler", "sync"]) == 1
    err = capsys.readouterr().err
    assert f"mask-pipeline: cannot proceed: no inputs found in {empty} (1 other files)" in err
    assert "--allow-empty" in err
    assert not (out / "_run.json").exists()

    assert main(["celantur", str(empty), str(out), "--scheduler", "sync", "--allow-empty"]) == 0
    record = json.loads((out / "_run.json").read_text())
    assert record["accounting"]["found"] == 0 and record["inputs"]["ignored_files"] == 1


def test_empty_frames_folder_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    assert main(["clearml", str(frames), str(tmp_path / "out"), "--scheduler", "sync"]) == 1
    assert f"no inputs found in {frames} (0 frames documents, no mask)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("paths", "roots"),
    [
        (["a/x_ins_mask.png", "old/_run.json", "old/masks/part-1.parquet"], ["old"]),
        (["runs/r1/masks/_delta_log/00000.json", "runs/r1/scaled/a_ins_mask.png"], ["runs/r1"]),
        (["t/_delta_log/00000.json", "t/part-0.parquet", "x.json"], ["t"]),
        (["o/_ledger/ab.json", "o/_run.json", "o/inner/_run.json"], ["o"]),
        (["_run.json", "masks/part.parquet", "a_ins_mask.png"], [""]),
        (["a_ins_mask.png", "a.json"], []),
    ],
)
def test_earlier_outputs_are_recognised(paths: list[str], roots: list[str]) -> None:
    assert earlier_outputs([InputFile(p, 1, "") for p in paths]) == roots


def test_earlier_output_under_the_input_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=4, images=4)
    first = tmp_path / "first"
    argv = ["--scheduler", "sync", "--mask-scale", "50"]
    assert main(["celantur", str(tree.root), str(first), *argv]) == 0
    reference = json.loads((first / "_run.json").read_text())
    # a user copies that run's output into the input tree under another name
    shutil.copytree(first, tree.root / "archive" / "stats-old")
    capsys.readouterr()
    second = tmp_path / "second"
    assert main(["celantur", str(tree.root), str(second), *argv]) == 0
    err = capsys.readouterr().err
    assert "output folders of earlier runs are ignored, never read as inputs" in err
    assert str(tree.root / "archive" / "stats-old") in err
    record = json.loads((second / "_run.json").read_text())
    assert record["inputs"]["found"] == reference["inputs"]["found"]
    assert record["errors"] == {"warning": 1}
    copied = sum(1 for p in (tree.root / "archive").rglob("*") if p.is_file())
    assert record["inputs"]["ignored_files"] == reference["inputs"]["ignored_files"] + copied


def test_recorded_source_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_celantur_tree(tmp_path / "in", seed=4, images=1)
    monkeypatch.chdir(tmp_path)
    assert main(["celantur", "in", "out", "--scheduler", "sync"]) == 0
    options = json.loads((tmp_path / "out" / "_run.json").read_text())["options"]
    assert options["source"] == str(tmp_path / "in")
    assert options["output"] == str(tmp_path / "out")
