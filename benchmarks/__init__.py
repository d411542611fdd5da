"""Benchmarks (``make bench``, ``python -m benchmarks``): the pipeline against the tools a user
would otherwise pick, on data generated in a temporary folder, in one process run.

Sections: 1. the per-colour kernel, 2. PNG decode, 3. end-to-end runs, 4. rescaled-mask encode,
5. video metadata chunks to Parquet.
Tables are printed; the figures are written to ``bench-output/bench-<UTC timestamp>.json``.
See ``benchmarks/README.md`` for how to read them.
"""
