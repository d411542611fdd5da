"""``python -m pipeline``: the same door as the ``mask-pipeline`` console script."""

from pipeline.cli import entry

entry()
