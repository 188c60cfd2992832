"""Box detection metrics: IoU, one-to-one matching, recall, precision and level accuracy.

Boxes are ``(xmin, ymin, xmax, ymax)`` in continuous pixel coordinates (area
``(xmax - xmin) * (ymax - ymin)``, as :func:`torchvision.ops.box_iou`). A prediction matches a
reference when the one-to-one assignment that maximises total IoU (Hungarian,
:func:`scipy.optimize.linear_sum_assignment`) pairs them with IoU >= the threshold.

Dataset-level metrics pool counts over images (micro average): recall = matched / references,
precision = matched / predictions, level accuracy = matched with the right label / matched.
References boxed tighter than the predictions are matched by centre instead (:func:`count_centres_found`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou as _torch_box_iou


def _as_boxes(boxes) -> np.ndarray:
    array = np.array(boxes, dtype=np.float64)  # a writable copy (torch.from_numpy wants one)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4), got {array.shape}")
    return array


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Pairwise IoU, shape ``(len(a), len(b))``."""
    a, b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    return _torch_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def match_boxes(pred_boxes, ref_boxes, iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(pred_index, ref_index, iou)`` with IoU >= ``iou_threshold``.

    The assignment maximises the summed IoU over pairs that reach the threshold; the result
    is sorted by reference index.
    """
    iou = box_iou(pred_boxes, ref_boxes)
    if iou.size == 0:
        return []
    gain = np.where(iou >= iou_threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    matches = [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols, strict=True)]
    matches = [m for m in matches if m[2] >= iou_threshold and m[2] > 0.0]
    return sorted(matches, key=lambda m: m[1])


@dataclass(frozen=True)
class ImageDetectionCounts:
    """Counts for one image; sum them over images for the pooled metrics."""

    n_pred: int
    n_ref: int
    n_matched: int
    n_level_correct: int


def count_detections(
    pred_boxes,
    ref_boxes,
    pred_labels=None,
    ref_labels=None,
    iou_threshold: float = 0.5,
) -> ImageDetectionCounts:
    """Match one image's predictions to its references and count hits (and correct labels)."""
    pred, ref = _as_boxes(pred_boxes), _as_boxes(ref_boxes)
    matches = match_boxes(pred, ref, iou_threshold)
    correct = 0
    if pred_labels is not None and ref_labels is not None:
        pred_labels, ref_labels = list(pred_labels), list(ref_labels)
        correct = sum(int(pred_labels[p] == ref_labels[r]) for p, r, _ in matches)
    return ImageDetectionCounts(
        n_pred=len(pred), n_ref=len(ref), n_matched=len(matches), n_level_correct=correct
    )


def box_holding(boxes, x: float, y: float) -> int | None:
    """Index of the box that contains the point (x, y), the one with the nearest centre when several
    do; None when none does."""
    array = _as_boxes(boxes)
    inside = np.flatnonzero((array[:, 0] <= x) & (x <= array[:, 2]) & (array[:, 1] <= y) & (y <= array[:, 3]))
    if len(inside) == 0:
        return None
    centres = 0.5 * (array[inside, :2] + array[inside, 2:])
    return int(inside[np.argmin(((centres - (x, y)) ** 2).sum(axis=1))])


def count_centres_found(pred_boxes, ref_boxes, pred_labels=None, ref_labels=None) -> ImageDetectionCounts:
    """Counts for references boxed tighter than the predictions (lumbar515's disc boxes leave out the
    endplates that a SPIDER-style box holds, so IoU would understate them): a reference is found when
    its centre lies inside a predicted box (:func:`box_holding`); its level is right when that box's
    label is the reference's."""
    pred, ref = _as_boxes(pred_boxes), _as_boxes(ref_boxes)
    found = correct = 0
    for index, box in enumerate(ref):
        holder = box_holding(pred, 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])) if len(pred) else None
        if holder is None:
            continue
        found += 1
        if pred_labels is not None and ref_labels is not None:
            correct += int(list(pred_labels)[holder] == list(ref_labels)[index])
    return ImageDetectionCounts(n_pred=len(pred), n_ref=len(ref), n_matched=found, n_level_correct=correct)


def _ratio(numerator, denominator) -> float:
    total = float(np.sum(denominator))
    if total == 0:
        raise ZeroDivisionError("no denominator counts")
    return float(np.sum(numerator)) / total


def recall(n_matched, n_ref) -> float:
    """Pooled recall: ``sum(n_matched) / sum(n_ref)`` (arrays of per-image counts or scalars)."""
    return _ratio(n_matched, n_ref)


def precision(n_matched, n_pred) -> float:
    """Pooled precision: ``sum(n_matched) / sum(n_pred)``."""
    return _ratio(n_matched, n_pred)


def level_accuracy(n_level_correct, n_matched) -> float:
    """Share of matched discs whose predicted level equals the reference level."""
    return _ratio(n_level_correct, n_matched)
