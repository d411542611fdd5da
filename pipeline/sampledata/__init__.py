"""Deterministic sample data for the demo, the tests and the benchmarks.

One generator per input family: :mod:`~pipeline.sampledata.celantur` (image trees: instance and
binary masks, image metadata), :mod:`~pipeline.sampledata.video` (video metadata chunk fleets with
planted gaps and chunk quirks) and :mod:`~pipeline.sampledata.clearml` (Hyper-Dataset frames
with pixel and alpha masks). Each knows its own ground truth, which the tests check against.
"""

from __future__ import annotations

from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.clearml import make_clearml_dataset
from pipeline.sampledata.video import make_video_fleet

__all__ = ["make_celantur_tree", "make_clearml_dataset", "make_video_fleet"]
