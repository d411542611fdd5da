"""A bounded smoke of the fuzz harnesses (``make fuzz`` runs them for longer): each target (every
door untrusted bytes come through: PNG, image metadata, video chunks with their names, ClearML
frames, job files, all JSON doors at once) runs a few thousand generated inputs under atheris in
a subprocess and must find nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("target", ["png", "metadata", "chunk", "frames", "jobfile", "json"])
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fuzz", target, "-runs=4000", "-seed=1", "-max_len=65536"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 4000 runs" in result.stderr
    assert not list(tmp_path.glob("crash-*")), result.stderr[-3000:]


def test_the_harness_reports_an_undeclared_exception(tmp_path: Path) -> None:
    """The smoke above can fail: a target raising an undeclared error is a finding."""
    script = (
        "import atheris, sys\n"
        "def target(data):\n"
        "    if data[:1] == b'x': raise KeyError('finding')\n"
        "atheris.Setup([sys.argv[0], '-runs=100000', '-seed=1'], target)\n"
        "atheris.Fuzz()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Uncaught Python exception" in result.stdout + result.stderr
    assert len(list(tmp_path.glob("crash-*"))) == 1
