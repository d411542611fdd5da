"""What an unattended run tells: timestamped log lines with levels on stderr, as text or JSON
Lines, phases with counts, progress, warnings naming failed inputs, and the final line; the
printed summary names the first failed inputs and where the rest are."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.logs import PROGRESS_STEPS, configure_logging, progress
from pipeline.sampledata.celantur import make_celantur_tree

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) [\w.]+: "
)


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    configure_logging()  # the default a later test's main() would set anyway


def _tree_with_failures(tmp_path: Path):
    tree = make_celantur_tree(tmp_path / "in", seed=3, images=4)
    (tree.root / "broken_ins_mask.png").write_bytes(b"not a png")
    (tree.root / "zz_bad.json").write_bytes(b"{not json")
    return tree


def test_text_log_tells_phases_warnings_and_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _tree_with_failures(tmp_path)
    out = tmp_path / "out"
    assert main(["celantur", str(tree.root), str(out), "--scheduler", "sync"]) == 3
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    text = "\n".join(lines)
    for phase in ("list: ", "plan: ", "pass 1: ", "pass 2: ", "commit: ", "finished with exit"):
        assert phase in text, phase
    assert re.search(r"list: \d+ inputs in .*in \(instance \d+, binary \d+", text)
    warnings = [line for line in lines if " WARNING " in line]
    assert any("inputs failed, e.g. broken_ins_mask.png" in line for line in warnings)
    final = lines[-1]
    assert "WARNING pipeline.runner: finished with exit code 3" in final
    assert "broken_ins_mask.png (" in final and "zz_bad.json (" in final
    assert f"all in {out}/errors" in final
    # stdout: the summary names the failed inputs and where all of them are
    assert "failed inputs (first by path):\n  broken_ins_mask.png: " in captured.out
    assert f"{out}/errors/" in captured.out
    # the record names them too, so `summary OUT` prints the same
    record = json.loads((out / "_run.json").read_text())
    assert [f["path"] for f in record["first_failed"]] == ["broken_ins_mask.png", "zz_bad.json"]
    assert main(["summary", str(out)]) == 0
    assert "  zz_bad.json: " in capsys.readouterr().out


def test_json_lines_and_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _tree_with_failures(tmp_path)
    argv = ["celantur", str(tree.root), str(tmp_path / "out"), "--scheduler", "sync"]
    assert main([*argv, "--log-format", "json"]) == 3
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    listed = next(r for r in records if r.get("phase") == "list")
    assert listed["inputs"]["instance"] == 5 and listed["seconds"] >= 0
    final = records[-1]
    assert final["phase"] == "finish" and final["exit_code"] == 3
    assert final["first_failed"][0] == {"path": "broken_ins_mask.png", "error": "not_png"}

    assert main([*argv, "--log-level", "warning"]) == 3
    levels = {line.split(" ")[1] for line in capsys.readouterr().err.splitlines()}
    assert levels == {"WARNING"}


def test_progress_is_logged_without_a_bar(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    monkeypatch.setattr("pipeline.logs.PROGRESS_MIN_SECONDS", 0.0)
    meter = progress(40, "pass 1", bar=False)
    for _ in range(40):
        meter.update()
    meter.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    # one line per tenth, not for the last batch (the phase's own line reports the end)
    assert len(lines) == PROGRESS_STEPS - 1
    assert lines[0].startswith("pass 1: 4/40 batches (10%), ")

    caplog.clear()  # by default, batches finishing together make no line per tenth
    monkeypatch.undo()
    meter = progress(40, "pass 1", bar=False)
    meter.update(39)
    meter.close()
    assert not [r for r in caplog.records if r.name == "pipeline.progress"]

    caplog.clear()
    meter = progress(40, "pass 1", bar=True)
    meter.update(40)
    meter.close()
    assert not [r for r in caplog.records if r.name == "pipeline.progress"]


def test_run_takes_the_execution_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=1, images=2)
    job = tmp_path / "job.toml"
    job.write_text(
        f'command = "celantur"\nsource = "{tree.root}"\noutput = "{tmp_path / "out"}"\n'
        '[execution]\nworkers = 2\nlog_format = "json"\n'
    )
    argv = ["run", str(job), "--scheduler", "sync", "--no-progress", "--log-level", "warning"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert record["scheduler"]["kind"] == "sync"
    assert record["options"]["execution"]["progress"] is False
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["message"] for r in lines] == [
        "option 'workers' (2) is ignored: scheduler 'sync' starts no local cluster"
    ]


def test_unknown_flag_prints_the_subcommand_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["celantur", "a", "b", "--colour", "red"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mask-pipeline celantur ")
    assert "unrecognized arguments: --colour red" in err


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["celantur", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.3)" in text and "(default: 3)" in text
    assert "--progress draw a progress bar on stderr" in text
    assert "--log-format {text,json}" in text


def test_summary_shows_reuse_and_only_tables_with_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.sampledata.clearml import make_clearml_dataset

    dataset = make_clearml_dataset(tmp_path / "clearml", seed=1, frames=2, video=False)
    out = tmp_path / "out"
    argv = ["clearml", str(dataset.frames_path), str(out), "--scheduler", "sync"]
    argv += ["--mask-labels", str(dataset.mask_labels_path)]
    assert main(argv) in (0, 3)  # the sample holds missing masks on purpose
    main([*argv, "--incremental"])
    printed = capsys.readouterr().out.split("output: ")[1]
    assert "work items: 0 done, " in printed and " reused (--incremental)" in printed
    rows = next(line for line in printed.splitlines() if line.startswith("rows: "))
    assert "labels " in rows and "masks " in rows
    for celantur in ("instances", "detections", "frames", "chunks", "gaps", "alpha"):
        assert celantur not in rows, rows
