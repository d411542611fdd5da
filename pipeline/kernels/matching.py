"""Match metadata detections to mask segments: by colour first, else by best same-type IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATCH_NONE, MATCH_COLOUR, MATCH_BBOX = 0, 1, 2
MATCH_NAMES = {MATCH_NONE: None, MATCH_COLOUR: "color", MATCH_BBOX: "bbox"}


@dataclass(frozen=True)
class Matches:
    """For each segment: the matched detection's position (-1 for none), how, and the box IoU."""

    detection: np.ndarray  # (n_segments,) int64
    kind: np.ndarray  # (n_segments,) int8: MATCH_NONE / MATCH_COLOUR / MATCH_BBOX
    iou: np.ndarray  # (n_segments,) float64, NaN where unmatched


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (n, 4) and (m, 4) boxes ``x_min, y_min, x_max, y_max`` (max exclusive)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, np.newaxis, :]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[np.newaxis, :, :]
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_detections(
    segment_colours: np.ndarray,
    segment_flags: np.ndarray,
    segment_boxes: np.ndarray,
    detection_colours: list[tuple[int, int, int] | None],
    detection_flags: np.ndarray,
    detection_boxes: np.ndarray,
    min_iou: float = 0.0,
) -> Matches:
    """One-to-one matching of detections to segments.

    Parameters
    ----------
    segment_colours : (n, 3) colours of the mask's segments.
    segment_flags : (n,) compact type flags of each segment (-1 invalid).
    segment_boxes : (n, 4) segment boxes in mask pixels.
    detection_colours : per detection its ``color`` or ``None``.
    detection_flags : (m,) compact flag of each detection's type (0 when the label is unknown).
    detection_boxes : (m, 4) detection boxes already scaled to mask pixels; NaN rows for none.
    min_iou : pairs at or below this IoU are never matched by box.

    Returns
    -------
    Matches. A detection whose ``color`` equals a segment's colour takes it (first detection
    wins). Remaining segments and detections are paired greedily by descending IoU among pairs
    whose segment carries the detection's type; ties go to the lower segment, then detection,
    position, so the result is deterministic.
    """
    n = len(segment_flags)
    detection = np.full(n, -1, dtype=np.int64)
    kind = np.zeros(n, dtype=np.int8)
    taken = np.zeros(len(detection_flags), dtype=bool)
    colour_index = {tuple(int(c) for c in colour): i for i, colour in enumerate(segment_colours)}
    for d, colour in enumerate(detection_colours):
        s = colour_index.get(colour) if colour is not None else None
        if s is not None and detection[s] < 0:
            detection[s], kind[s], taken[d] = d, MATCH_COLOUR, True

    iou_all = box_iou(segment_boxes, detection_boxes)
    iou_all = np.nan_to_num(iou_all, nan=0.0)
    same_type = (segment_flags[:, np.newaxis] > 0) & (
        (segment_flags[:, np.newaxis] & detection_flags[np.newaxis, :]) != 0
    )
    candidates = np.where(same_type & (iou_all > min_iou), iou_all, -1.0)
    candidates[detection >= 0, :] = -1.0
    candidates[:, taken] = -1.0
    seg_idx, det_idx = np.nonzero(candidates > 0)
    order = np.lexsort((det_idx, seg_idx, -candidates[seg_idx, det_idx]))
    for s, d in zip(seg_idx[order], det_idx[order], strict=True):
        if detection[s] < 0 and not taken[d]:
            detection[s], kind[s], taken[d] = d, MATCH_BBOX, True

    matched = detection >= 0
    iou = np.full(n, np.nan)
    if matched.any():
        iou[matched] = iou_all[np.flatnonzero(matched), detection[matched]]
    return Matches(detection=detection, kind=kind, iou=iou)
