"""Segmentation metrics per image and class (MONAI), and their means with bootstrap CIs over images.

:func:`image_metrics` scores one predicted label map against its reference, for the classes the
reference labels: Dice, IoU, precision, recall, sensitivity, specificity, pixel accuracy (from the
confusion matrix), HD95 and average symmetric surface distance (in mm when the pixel spacing is
known, else pixels). Pixels marked :data:`~spinedx.io.masks.IGNORE` in the reference are left out.

Conventions for empty masks: Dice and IoU are 1 when prediction and reference are both empty and 0
when only one is; a distance is undefined (``None``) when either mask is empty, and precision is
undefined when nothing is predicted. Undefined values are left out of the means (each mean says
how many images it has in ``n``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from spinedx.evaluation.bootstrap import bootstrap_many
from spinedx.io.masks import IGNORE, SEG_LABELS

OVERLAP_METRICS = ("dice", "iou")
CONFUSION_METRICS = ("precision", "recall", "sensitivity", "specificity", "accuracy")
DISTANCE_METRICS = ("hd95", "asd")
METRICS = (*OVERLAP_METRICS, *CONFUSION_METRICS, *DISTANCE_METRICS)


def _one_hot(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    tensor = torch.from_numpy(labels.astype(np.int64))
    return torch.nn.functional.one_hot(tensor, n_classes).permute(2, 0, 1)[None].float()


def _defined(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def image_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    classes: Sequence[int],
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> dict[int, dict[str, float | None]]:
    """``{class: {metric: value or None}}`` for ``classes`` (foreground class values)."""
    from monai.metrics import (
        DiceMetric,
        HausdorffDistanceMetric,
        MeanIoU,
        SurfaceDistanceMetric,
        compute_confusion_matrix_metric,
        get_confusion_matrix,
    )

    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    n_classes = len(SEG_LABELS)
    ignored = reference == IGNORE
    y = _one_hot(np.where(ignored, 0, reference), n_classes)
    y_pred = _one_hot(np.where(ignored, 0, prediction), n_classes)
    values: dict[str, torch.Tensor] = {}
    values["dice"] = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(y_pred, y)
    values["iou"] = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(y_pred, y)
    confusion = get_confusion_matrix(y_pred, y, include_background=True)
    with warnings.catch_warnings():
        # MONAI warns for empty masks; they are reported as undefined instead.
        warnings.simplefilter("ignore")
        for name in CONFUSION_METRICS:
            values[name] = compute_confusion_matrix_metric(name, confusion)
        spacing = list(pixel_spacing_mm) if pixel_spacing_mm else None
        values["hd95"] = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
            y_pred, y, spacing=spacing
        )
        values["asd"] = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")(
            y_pred, y, spacing=spacing
        )
    result = {}
    for c in classes:
        empty = not bool(y[0, c].any()) or not bool(y_pred[0, c].any())
        result[int(c)] = {
            name: None if name in DISTANCE_METRICS and empty else _defined(values[name][0, c].item())
            for name in METRICS
        }
    return result


def summarize_images(
    per_image: list[dict[int, dict[str, float | None]]],
    groups: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """``{class name: {metric: {estimate, lower, upper, n}}}``: mean over the images that label the
    class (and where the value is defined), 95% percentile bootstrap CI over patients."""
    summary: dict[str, dict[str, dict]] = {}
    groups = np.asarray(groups)
    for value, name in SEG_LABELS.items():
        scored = [i for i, entry in enumerate(per_image) if value in entry]
        if not scored:
            continue
        table = np.array(
            [
                [np.nan if per_image[i][value][m] is None else per_image[i][value][m] for m in METRICS]
                for i in scored
            ]
        )
        functions = {m: (lambda v, j=j: _nanmean(v[:, j])) for j, m in enumerate(METRICS)}
        results = bootstrap_many(functions, table, groups=groups[scored], n_resamples=n_resamples, seed=seed)
        summary[name] = {
            m: {
                "estimate": _defined(r.estimate),
                "lower": _defined(r.lower),
                "upper": _defined(r.upper),
                "n": int(np.isfinite(table[:, j]).sum()),
            }
            for j, (m, r) in enumerate(results.items())
        }
    return summary


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan
