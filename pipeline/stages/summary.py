"""Small, mergeable per-batch summaries: what tasks send back instead of rows.

Batches complete in any order, so every merge must be exact and order-independent: sums of
floats are kept as exact fractions (float addition is not associative in its last bit, and a
cluster run must give the very bytes of an in-process run).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.formats.celantur import (
    TYPE_NAMES,
    EncodingEvidence,
    classify_name,
    normalise_type_label,
)
from pipeline.io.parquet import StagedBundle
from pipeline.kernels.quantiles import AreaSketch

#: Failed inputs a summary names (the first by path; ``errors/`` has them all).
FAILED_NAMED = 5


@dataclass
class LabelStats:
    """Detections of one label: count, anonymised count, score sum and count."""

    detections: int = 0
    anonymised: int = 0
    score_sum: Fraction = Fraction(0)
    scored: int = 0

    def merge(self, other: LabelStats) -> LabelStats:
        """Sum of both."""
        return LabelStats(
            self.detections + other.detections,
            self.anonymised + other.anonymised,
            self.score_sum + other.score_sum,
            self.scored + other.scored,
        )

    @property
    def mean_score(self) -> float | None:
        """Mean of the finite scores, ``None`` without any."""
        return float(self.score_sum / self.scored) if self.scored else None


@dataclass
class TypeStats:
    """Segments of one type: count, pixels and an area sketch."""

    segments: int = 0
    pixels: int = 0
    areas: AreaSketch = field(default_factory=AreaSketch)

    def merge(self, other: TypeStats) -> TypeStats:
        """Sum of both."""
        return TypeStats(
            self.segments + other.segments,
            self.pixels + other.pixels,
            self.areas.merge(other.areas),
        )


@dataclass
class MaskLabelStats:
    """A ClearML label: masks and frames holding it, and its pixels."""

    masks: int = 0
    frames: int = 0
    pixels: int = 0

    def merge(self, other: MaskLabelStats) -> MaskLabelStats:
        """Sum of both (frames are disjoint across batches: a frame is never split)."""
        return MaskLabelStats(
            self.masks + other.masks, self.frames + other.frames, self.pixels + other.pixels
        )


def _merge_maps(a: Mapping[str, Any], b: Mapping[str, Any], empty: Any) -> dict[str, Any]:
    return {key: a.get(key, empty()).merge(b.get(key, empty())) for key in sorted({*a, *b})}


@dataclass
class BatchSummary:
    """What a batch task returns: counts, sketches, the parts it wrote. Never rows."""

    masks: Counter[str] = field(default_factory=Counter)
    types: dict[str, TypeStats] = field(default_factory=dict)
    labels: dict[str, LabelStats] = field(default_factory=dict)
    frames: int = 0
    duration_sum: Fraction = Fraction(0)
    durations: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by severity
    landed: Counter[str] = field(default_factory=Counter)  # inputs in their table, by kind
    failed_inputs: Counter[str] = field(default_factory=Counter)  # by input kind
    rows: Counter[str] = field(default_factory=Counter)
    #: per table, the part references of its staged rows (:func:`pipeline.io.parquet.staged_span`)
    parts: dict[str, list[str]] = field(default_factory=dict)
    evidence: EncodingEvidence = field(default_factory=EncodingEvidence.empty)
    video_rows: list[dict[str, Any]] = field(default_factory=list)  # summary rows, one per video
    work: Counter[str] = field(default_factory=Counter)  # work items done / reused from the ledger
    mask_labels: dict[str, MaskLabelStats] = field(default_factory=dict)  # ClearML labels
    #: the first :data:`FAILED_NAMED` failed inputs by path, as ``[path, error]``
    failed: list[list[str]] = field(default_factory=list)
    #: image batches whose typed rows this summary holds: batch key -> the encoding that typed
    #: them (pass 1 of ``auto`` may type a batch under another encoding than the dataset's)
    typed: dict[str, str] = field(default_factory=dict)
    #: image batches whose measured rows this run's ``auto`` pass 1 parked for pass 2 to finish
    #: (not in the summary's JSON: a summary reused from the ledger parked nothing in this run)
    parked: set[str] = field(default_factory=set)
    #: size and SHA-256 of each staged bundle this summary's work wrote, taken from the bytes as
    #: written: for its ledger entry only (not in the summary's JSON, dropped by
    #: :func:`~pipeline.stages.work.run_work` once the entry is saved, so never merged)
    written: dict[str, tuple[int, str]] = field(default_factory=dict)

    def merge(self, other: BatchSummary) -> BatchSummary:
        """The summary of both batches (associative: reduce in any grouping)."""
        parts = {
            t: self.parts.get(t, []) + other.parts.get(t, []) for t in {*self.parts, *other.parts}
        }
        return BatchSummary(
            masks=self.masks + other.masks,
            types=_merge_maps(self.types, other.types, TypeStats),
            labels=_merge_maps(self.labels, other.labels, LabelStats),
            frames=self.frames + other.frames,
            duration_sum=self.duration_sum + other.duration_sum,
            durations=self.durations + other.durations,
            errors=self.errors + other.errors,
            landed=self.landed + other.landed,
            failed_inputs=self.failed_inputs + other.failed_inputs,
            rows=self.rows + other.rows,
            parts={t: sorted(p) for t, p in parts.items()},
            evidence=self.evidence.merge(other.evidence),
            work=self.work + other.work,
            mask_labels=_merge_maps(self.mask_labels, other.mask_labels, MaskLabelStats),
            failed=sorted(self.failed + other.failed)[:FAILED_NAMED],
            video_rows=sorted(
                self.video_rows + other.video_rows,
                key=lambda r: (r["scope"], r["name"], r.get("value") or ""),
            ),
            typed={**self.typed, **other.typed},
            parked=self.parked | other.parked,
        )

    def add_bundle(self, bundle: StagedBundle) -> None:
        """Record the staged bundle this work wrote: its tables' parts, and its fingerprint."""
        for table, ref in bundle.parts.items():
            self.parts.setdefault(table, []).append(ref)
        self.written[bundle.rel] = (bundle.size, bundle.sha256)

    def add_mask(self, kind: str) -> None:
        """Count one mask written to ``masks/``."""
        self.masks[kind] += 1
        self.landed[kind] += 1

    def add_segments(self, flags: np.ndarray, pixels: np.ndarray) -> None:
        """Add typed segments: each type gets the segments with its flag; ``invalid`` the rest."""
        flags = np.asarray(flags, dtype=np.int64)
        pixels = np.asarray(pixels, dtype=np.int64)
        selections = {
            name: (flags >= 0) & ((flags >> bit) & 1 == 1) for bit, name in enumerate(TYPE_NAMES)
        }
        selections["invalid"] = flags < 0
        for name, selected in selections.items():
            if not selected.any():
                continue
            stats = self.types.setdefault(name, TypeStats())
            stats.segments += int(selected.sum())
            stats.pixels += int(pixels[selected].sum())
            stats.areas.add(pixels[selected])

    def add_detections(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add detection rows, per raw ``type_label``."""
        rows = list(rows)
        self.add_detection_columns(
            [row.get("type_label") for row in rows],
            [row.get("score") for row in rows],
            [row.get("is_anonymised") for row in rows],
        )

    def add_detection_columns(
        self, labels: Any, scores: Any, anonymised: Any, *, files: Any = None
    ) -> None:
        """Add detections given as columns (Arrow arrays or lists), per raw ``type_label``
        (a missing label counts as ``"None"``).

        A label's scores are summed with ``math.fsum`` (exactly rounded) per file and kept as
        the exact value of those sums: batches are fixed by the plan, so the total is the same
        whichever worker ran which batch, in whatever order. ``files``: the file of each row
        (non-decreasing numbers; one file when not given), so that the columns of several files
        add as each file's columns added alone.
        """
        if not len(labels):  # converting no columns costs ~0.1 ms: an image batch's fixed cost
            return
        values = pa.array(scores, pa.float64()).to_numpy(zero_copy_only=False)  # null: NaN
        flags = pa.array(anonymised, pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
        of_file = np.zeros(len(values), np.int64) if files is None else np.asarray(files)
        for key, selected in label_groups(labels):
            scored = selected & ~np.isnan(values)
            finite, where = values[scored], of_file[scored]
            per_file = np.split(finite, np.flatnonzero(np.diff(where)) + 1)
            stats = self.labels.setdefault(key, LabelStats())
            stats.detections += int(selected.sum())
            stats.anonymised += int(flags[selected].sum())
            stats.score_sum += sum((Fraction(math.fsum(s.tolist())) for s in per_file), Fraction(0))
            stats.scored += len(finite)

    def add_frames(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add the frame rows of image metadata (one per metadata file, which thereby landed)."""
        for row in rows:
            self.frames += 1
            self.landed["metadata"] += 1
            if row.get("duration") is not None:
                self.duration_sum += Fraction(row["duration"])
                self.durations += 1

    def add_errors(self, rows: Iterable[Mapping[str, Any]], kind: str | None = None) -> None:
        """Count error rows; an ``error`` row means its input is not in any table. The input's
        kind is ``kind``, else read from its Celantur file name."""
        for row in rows:
            self.errors[row["severity"]] += 1
            if row["severity"] == "error":
                named = classify_name(str(row["path"]).rsplit("/", 1)[-1])
                self.failed_inputs[kind or (named.kind if named else "other")] += 1
                self.failed.append([str(row["path"]), str(row["error"])])
        self.failed = sorted(self.failed)[:FAILED_NAMED]

    def summary_rows(self, encoding: str | None) -> list[dict[str, Any]]:
        """Rows of the ``summary/`` table."""
        all_labels = LabelStats()
        for stats in self.labels.values():
            all_labels = all_labels.merge(stats)
        rows: list[dict[str, Any]] = [
            {
                "scope": "run",
                "name": "total",
                "value": encoding,
                "masks": sum(self.masks.values()),
                "segments": self.rows.get("instances", 0),
                "detections": all_labels.detections,
                "anonymised": all_labels.anonymised,
                "mean_score": all_labels.mean_score,
                "frames": self.frames,
                "mean_duration": float(self.duration_sum / self.durations)
                if self.durations
                else None,
            }
        ]
        for kind, count in sorted(self.masks.items()):
            rows.append({"scope": "kind", "name": kind, "masks": count})
        per_type_labels: dict[str, LabelStats] = {}
        for label, stats in self.labels.items():
            name = normalise_type_label(label)
            if name is not None:
                per_type_labels[name] = per_type_labels.get(name, LabelStats()).merge(stats)
        for type_name in (*TYPE_NAMES, "invalid"):
            typed = self.types.get(type_name, TypeStats())
            detected = per_type_labels.get(type_name, LabelStats())
            rows.append(
                {
                    "scope": "type",
                    "name": type_name,
                    "segments": typed.segments,
                    "pixels": typed.pixels,
                    "area_min": typed.areas.minimum,
                    "area_p50": typed.areas.quantile(0.5),
                    "area_p90": typed.areas.quantile(0.9),
                    "area_max": typed.areas.maximum,
                    "detections": detected.detections if type_name != "invalid" else None,
                    "anonymised": detected.anonymised if type_name != "invalid" else None,
                    "mean_score": detected.mean_score,
                }
            )
        for label, stats in sorted(self.labels.items()):
            rows.append(
                {
                    "scope": "label",
                    "name": label,
                    "detections": stats.detections,
                    "anonymised": stats.anonymised,
                    "mean_score": stats.mean_score,
                }
            )
        for label, held in sorted(self.mask_labels.items()):
            rows.append(
                {
                    "scope": "mask_label",
                    "name": label,
                    "masks": held.masks,
                    "frames": held.frames,
                    "pixels": held.pixels,
                }
            )
        return rows + self.video_rows


class SummaryFold:
    """Summaries merged as they arrive (:meth:`add`), into one (:meth:`result`).

    Merged like a binary counter: two partial results of as many summaries are merged as soon
    as both exist, so each summary is copied about log2(n) times and at most log2(n) partial
    results are held. A left fold (``reduce(BatchSummary.merge, ...)``) copies everything
    merged so far at every step: quadratic in the work items (16,000 took 7 s of the client's
    time). The result is the same: :meth:`BatchSummary.merge` is associative and its sums are
    exact, and the order of arrival is kept.
    """

    def __init__(self) -> None:
        self._partial: list[tuple[int, BatchSummary]] = []  # (summaries merged, their merge)

    def add(self, summary: BatchSummary) -> None:
        """Merge one more summary."""
        count = 1
        while self._partial and self._partial[-1][0] == count:
            earlier_count, earlier = self._partial.pop()
            summary = earlier.merge(summary)
            count += earlier_count
        self._partial.append((count, summary))

    def result(self) -> BatchSummary:
        """The merge of every summary added (an empty summary for none)."""
        merged = BatchSummary()
        for _, partial in self._partial:
            merged = merged.merge(partial)
        return merged


def merge_all(summaries: Iterable[BatchSummary]) -> BatchSummary:
    """The merge of ``summaries``, taken as they come (see :class:`SummaryFold`)."""
    fold = SummaryFold()
    for summary in summaries:
        fold.add(summary)
    return fold.result()


# ---------------------------------------------------------------------------------------------
# JSON form, for the ledger of incremental runs (never pickle: the output root is shared storage)
# ---------------------------------------------------------------------------------------------


def _fraction_text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def label_groups(labels: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Each distinct ``str(label)`` of a label column (an Arrow array or a list; a missing
    label is ``"None"``) with the boolean mask of its positions, in order of first appearance:
    one hashing pass in Arrow (none for a dictionary array), no Python code per label value."""
    if isinstance(labels, pa.DictionaryArray):
        encoded = labels
    else:
        encoded = pa.array(labels, pa.string()).dictionary_encode()
    names = [str(label) for label in [*encoded.dictionary.to_pylist(), None]]
    keys = list(dict.fromkeys(names))  # a label "None" and missing labels are one key
    key_of = np.array([keys.index(name) for name in names], dtype=np.int64)
    indices = encoded.indices
    if indices.null_count:
        indices = indices.fill_null(len(names) - 1)
    grouped = key_of[indices.to_numpy(zero_copy_only=False)]
    present = np.flatnonzero(np.bincount(grouped, minlength=len(keys)))
    firsts = np.full(len(keys), len(grouped))
    np.minimum.at(firsts, grouped, np.arange(len(grouped)))
    for index in present[np.argsort(firsts[present])].tolist():
        yield keys[index], grouped == index


def summary_to_json(summary: BatchSummary) -> dict[str, Any]:
    """A JSON-able form of a summary; :func:`summary_from_json` inverts it exactly."""
    return {
        "masks": dict(summary.masks),
        "types": {
            name: {
                "segments": t.segments,
                "pixels": t.pixels,
                "areas": {
                    "counts": {str(k): v for k, v in t.areas.counts.items()},
                    "minimum": t.areas.minimum,
                    "maximum": t.areas.maximum,
                },
            }
            for name, t in summary.types.items()
        },
        "labels": {
            name: {
                "detections": s.detections,
                "anonymised": s.anonymised,
                "score_sum": _fraction_text(s.score_sum),
                "scored": s.scored,
            }
            for name, s in summary.labels.items()
        },
        "frames": summary.frames,
        "duration_sum": _fraction_text(summary.duration_sum),
        "durations": summary.durations,
        "errors": dict(summary.errors),
        "landed": dict(summary.landed),
        "failed_inputs": dict(summary.failed_inputs),
        "rows": dict(summary.rows),
        "parts": summary.parts,
        "evidence": {
            "votes": summary.evidence.votes,
            "colours_seen": summary.evidence.colours_seen,
        },
        "video_rows": summary.video_rows,
        "mask_labels": {
            name: [s.masks, s.frames, s.pixels] for name, s in summary.mask_labels.items()
        },
        "failed": summary.failed,
        "typed": summary.typed,
    }


def summary_from_json(data: dict[str, Any]) -> BatchSummary:
    """The summary :func:`summary_to_json` wrote."""
    return BatchSummary(
        masks=Counter(data["masks"]),
        types={
            name: TypeStats(
                t["segments"],
                t["pixels"],
                AreaSketch(
                    {int(k): v for k, v in t["areas"]["counts"].items()},
                    t["areas"]["minimum"],
                    t["areas"]["maximum"],
                ),
            )
            for name, t in data["types"].items()
        },
        labels={
            name: LabelStats(
                s["detections"], s["anonymised"], Fraction(s["score_sum"]), s["scored"]
            )
            for name, s in data["labels"].items()
        },
        frames=data["frames"],
        duration_sum=Fraction(data["duration_sum"]),
        durations=data["durations"],
        errors=Counter(data["errors"]),
        landed=Counter(data["landed"]),
        failed_inputs=Counter(data["failed_inputs"]),
        rows=Counter(data["rows"]),
        parts={table: list(parts) for table, parts in data["parts"].items()},
        evidence=EncodingEvidence(
            votes=dict(data["evidence"]["votes"]), colours_seen=data["evidence"]["colours_seen"]
        ),
        video_rows=list(data["video_rows"]),
        mask_labels={name: MaskLabelStats(*values) for name, values in data["mask_labels"].items()},
        failed=[list(pair) for pair in data["failed"]],
        typed=dict(data["typed"]),
    )
