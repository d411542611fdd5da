"""Run a fuzzer: ``python -m fuzz {png|metadata|chunk|frames|jobfile|json} [libFuzzer options]``.

Seeds come from the product's sample data (written to ``fuzz-corpus/<target>/`` on first
use); findings are written by libFuzzer as ``crash-*`` files in the working directory.
Examples: ``-max_total_time=60`` (one minute), ``-runs=5000`` (a bounded smoke, as CI runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

# The numba kernels are compiled from their bytecode: instrumented bytecode would not compile.
NUMBA_MODULES = [
    "pipeline.kernels.segments", "pipeline.kernels.scanlines", "pipeline.kernels.rows",
    "pipeline.kernels.chunkscan", "pipeline.kernels.labelstats",
]  # fmt: skip
with atheris.instrument_imports(include=["pipeline"], exclude=NUMBA_MODULES):
    from fuzz.seeds import write_seeds
    from fuzz.targets import TARGETS


def main() -> None:
    """Parse the target name, prepare its seed corpus, hand the rest to libFuzzer."""
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: python -m fuzz {{{'|'.join(TARGETS)}}} [libFuzzer options]")
    target = sys.argv[1]
    corpus = Path("fuzz-corpus") / target
    if not corpus.exists():
        write_seeds(target, corpus)
    argv = [sys.argv[0], *sys.argv[2:], str(corpus)]
    atheris.Setup(argv, TARGETS[target])
    atheris.Fuzz()


main()
