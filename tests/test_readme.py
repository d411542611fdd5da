"""The README's code blocks run, so they cannot rot.

Every ```python and ```sh/```bash/```console block of README.md runs, in order, in one
empty folder holding links to this repository's ``.venv`` and ``jobs/``: Python blocks as
scripts (``python block.py``, as a user runs them: a cluster needs the ``__main__`` guard),
shell blocks with ``bash -euo pipefail``. A block that cannot run there is preceded by
``<!-- readme-test: skip (why) -->``; any other language is refused, so no example escapes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNNABLE = {"python": "python", "sh": "shell", "bash": "shell", "console": "shell"}
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>\S*)\s*$")
BLOCK_TIMEOUT = 240  # seconds per block (the Python example starts a local cluster)


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, source, first line number and skip reason."""

    language: str
    source: str
    line: int
    skip: str | None


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the skip marker on the line before each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    number = 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if not opening or not opening.group("info"):
            number += 1
            continue
        indent = len(opening.group("indent"))
        end = next(
            i for i in range(number + 1, len(lines)) if lines[i].strip() == "```"
        )  # an unclosed fence is a broken README: StopIteration fails the test
        body = "\n".join(line[indent:] for line in lines[number + 1 : end])
        marker = SKIP.search(lines[number - 1]) if number else None
        blocks.append(
            Block(opening.group("info"), body + "\n", number + 1, marker["why"] if marker else None)
        )
        number = end + 1
    return blocks


def _shell_source(block: Block) -> str:
    """A console block's commands (``$ `` prompts stripped, output lines dropped)."""
    if block.language != "console":
        return block.source
    commands = [line[2:] for line in block.source.splitlines() if line.startswith("$ ")]
    return "\n".join(commands) + "\n"


def test_every_block_runs_or_says_why_not() -> None:
    for block in readme_blocks(README.read_text()):
        assert block.skip or block.language in RUNNABLE, (
            f"README.md line {block.line}: a ```{block.language} block; mark it "
            "<!-- readme-test: skip (why) --> or make it python/sh"
        )


def test_marker_convention() -> None:
    text = "a\n<!-- readme-test: skip (needs S3) -->\n```sh\nx\n```\n  ```python\n  y = 1\n  ```\n"
    assert readme_blocks(text) == [
        Block("sh", "x\n", 3, "needs S3"),
        Block("python", "y = 1\n", 6, None),
    ]


@pytest.mark.timeout(900)
def test_readme_blocks_run(tmp_path: Path) -> None:
    blocks = [b for b in readme_blocks(README.read_text()) if not b.skip]
    assert any(b.language == "python" for b in blocks) and any(b.language == "sh" for b in blocks)
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.executable).parents[1])
    (work / "jobs").symlink_to(ROOT / "jobs")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
        "DASK_TEMPORARY_DIRECTORY": str(tmp_path),
        "MPLBACKEND": "Agg",
    }
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    for number, block in enumerate(blocks):
        if RUNNABLE[block.language] == "python":
            script = work / f"readme_block_{number}.py"
            script.write_text(block.source)
            argv = [sys.executable, script.name]
        else:
            argv = ["bash", "-euo", "pipefail", "-c", _shell_source(block)]
        done = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
        assert done.returncode == 0, (
            f"README.md line {block.line} ({block.language}) exited {done.returncode}:\n"
            f"{block.source}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
