"""Per-label statistics of many videos' detections in one compiled pass.

Pass 2 counts the detections of all of a task's videos at once: done per video with numpy (a
group of positions per label, then its sums) it took some 25 numpy calls per video, which is
most of the cost of a short video.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.kernels import njit_unmanaged


@njit_unmanaged
def segment_label_stats(ends: Any, keys: Any, scores: Any, counts: Any, scored: Any, sums: Any,
                        first: Any, histogram: Any) -> None:  # fmt: skip
    """Count the detections of each segment ``v`` (rows ``ends[v - 1]:ends[v]`` of ``keys``
    and ``scores``, in order) by key: ``counts[v, key]``; the scored ones (finite score)
    ``scored[v, key]`` and ``sums[v, key]``, their scores added one after the other as a plain
    loop would; ``first[v, key]`` the row of the key's first detection. ``histogram[v]``
    counts the segment's scores in 0..1 by bins of 0.001
    (:class:`~pipeline.kernels.quantiles.ScoreHistogram`'s). The outputs start as zeros."""
    start = 0
    for v in range(len(ends)):
        for d in range(start, ends[v]):
            key, score = keys[d], scores[d]
            if counts[v, key] == 0:
                first[v, key] = d
            counts[v, key] += 1
            if math.isfinite(score):
                scored[v, key] += 1
                sums[v, key] += score
            if 0 <= score <= 1:
                histogram[v, math.floor(score * 1000)] += 1
        start = ends[v]
