"""Tests of :func:`pipeline.stages.summary.merge_all`: the summaries of a real run's work items,
merged as a binary counter, equal their left fold (``functools.reduce``), in any order of
arrival; the JSON form compares every field the run uses (counts, exact sums, sketches, part
references, typed batches, video rows, failed inputs)."""

from __future__ import annotations

import functools
import json
import random

import pytest

from pipeline import api
from pipeline.config import ExecutionOptions
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet
from pipeline.stages.summary import BatchSummary, merge_all, summary_from_json, summary_to_json

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def summaries(tmp_path_factory: pytest.TempPathFactory) -> list[BatchSummary]:
    """Every work item's summary of a run over images and videos, one input per batch."""
    root = tmp_path_factory.mktemp("fold")
    make_celantur_tree(root / "in" / "images", seed=5, images=12)
    make_video_fleet(root / "in" / "videos", seed=5, videos=3, frames_per_video=1100)
    result = api.run_celantur(
        str(root / "in"), str(root / "out"),
        execution=ExecutionOptions(scheduler="sync", progress=False, batch_bytes=1),
    )  # fmt: skip
    assert result.exit_code == 3  # the fleet has a broken chunk: failed inputs merge too
    entries = sorted((root / "out" / "_ledger").glob("*.json"))
    return [summary_from_json(json.loads(e.read_text())["summary"]) for e in entries]


def _json(summary: BatchSummary) -> str:
    return json.dumps(summary_to_json(summary), sort_keys=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_as_they_come_equals_the_left_fold(summaries: list[BatchSummary], seed: int) -> None:
    assert len(summaries) > 20
    arrived = random.Random(seed).sample(summaries, len(summaries))
    folded = functools.reduce(BatchSummary.merge, arrived, BatchSummary())
    assert _json(merge_all(arrived)) == _json(folded)
    assert merge_all(arrived).typed == folded.typed


def test_merging_nothing_or_one() -> None:
    assert _json(merge_all([])) == _json(BatchSummary())
    one = BatchSummary(frames=3)
    one.parts["masks"] = ["b", "a"]
    assert _json(merge_all([one])) == _json(BatchSummary().merge(one))
