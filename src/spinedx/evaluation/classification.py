"""Classification metrics with bootstrap confidence intervals, as a JSON-serialisable dict.

All numbers come from scikit-learn; this module only validates input, arranges the results and
adds percentile-bootstrap 95% confidence intervals (see :mod:`spinedx.evaluation.bootstrap`).

Output schema of :func:`classification_metrics` (``None`` wherever a value is undefined)::

    {
      "n": int, "class_names": [str, ...],
      "accuracy":          {"value": float, "ci95": [lo, hi]},
      "balanced_accuracy": {"value": float, "ci95": [lo, hi]},
      "roc_auc":           {"value": float | None, "ci95": [lo, hi], "kind": "binary" | "macro_ovr"},
      "macro_avg":    {"precision": float, "recall": float, "f1": {"value": float, "ci95": [lo, hi]}},
      "weighted_avg": {"precision": float, "recall": float, "f1": float},
      "per_class": {name: {"precision", "recall", "f1", "support", "sensitivity", "specificity",
                           "roc_auc": {"value", "ci95"}, "average_precision"}},
      "confusion_matrix": [[int, ...], ...],   # rows = true class, columns = predicted class
      "classification_report_text": str,
      "bootstrap": {"method", "n_resamples", "seed", "unit", "n_units", "ci_level"},
      "warnings": [str, ...]
    }

Conventions: the prediction is the argmax of ``probabilities``. Macro/weighted averages use
``zero_division=0`` (as sklearn's text report does); per-class precision is ``None`` for a class
that is never predicted, and recall/sensitivity/AUC/AP are ``None`` for a class with no samples.
The binary ROC-AUC is that of class 1 (the positive class); with more classes it is the macro
average of the one-vs-rest AUCs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from spinedx.errors import InputError
from spinedx.evaluation.bootstrap import BootstrapResult, bootstrap_many

CI_LEVEL = 0.95
_ALPHA = 1.0 - CI_LEVEL
_ROW_SUM_TOLERANCE = 1e-3


def _validate(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str], groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probabilities)
    if y.size == 0 or p.size == 0:
        raise InputError("no samples to evaluate")
    if y.ndim != 1:
        raise InputError(f"y_true must be one-dimensional, got shape {y.shape}")
    n_classes = len(class_names)
    if n_classes < 2:
        raise InputError(f"class_names must name at least 2 classes, got {list(class_names)}")
    if len(set(class_names)) != n_classes:
        raise InputError(f"class_names contains duplicates: {list(class_names)}")
    if p.ndim != 2 or p.shape != (len(y), n_classes):
        raise InputError(
            f"probabilities must have shape (n_samples, n_classes) = ({len(y)}, {n_classes}), got {p.shape}"
        )
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise InputError("y_true must contain integer class indices")
    y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        raise InputError(
            f"y_true row {int(bad[0])}: class index {int(y[bad[0]])} is outside 0..{n_classes - 1}"
        )
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InputError("probabilities must be finite and non-negative")
    row_sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(row_sums - 1.0) > _ROW_SUM_TOLERANCE)
    if off.size:
        raise InputError(
            f"probabilities row {int(off[0])} sums to {row_sums[off[0]]:.4f}, "
            "expected 1 (apply softmax first)"
        )
    if groups is not None and len(groups) != len(y):
        raise InputError(f"groups has length {len(groups)} but there are {len(y)} samples")
    # Renormalise so sklearn's strict multi-class sum check never trips on float32 rounding.
    return y, p / row_sums[:, None]


def _num(value: Any) -> float | None:
    """A plain float, or None where undefined (NaN/inf)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _with_ci(result: BootstrapResult) -> dict[str, Any]:
    return {"value": _num(result.estimate), "ci95": [_num(result.lower), _num(result.upper)]}


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    n_classes = p.shape[1]
    if len(np.unique(y)) < 2:
        return math.nan
    if n_classes == 2:
        return roc_auc_score(y, p[:, 1])
    return roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(n_classes)))


def _class_auc(k: int):
    def metric(y: np.ndarray, _pred: np.ndarray, p: np.ndarray) -> float:
        positive = (y == k).astype(int)
        if positive.min() == positive.max():
            return math.nan
        return roc_auc_score(positive, p[:, k])

    return metric


def classification_metrics(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    *,
    groups: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Metrics of argmax predictions against ``y_true``, with 95% percentile-bootstrap CIs.

    ``y_true``: (n,) int class indices; ``probabilities``: (n, C) rows summing to 1, columns in
    ``class_names`` order; ``groups``: optional (n,) patient/study ids so the bootstrap resamples
    whole groups. See the module docstring for the returned dict.
    """
    class_names = [str(c) for c in class_names]
    y, p = _validate(y_true, probabilities, class_names, groups)
    n, n_classes = p.shape
    labels = list(range(n_classes))
    pred = p.argmax(axis=1)
    warnings_out: list[str] = []

    present = np.unique(y)
    if present.size < 2:
        warnings_out.append(
            f"Only one class ('{class_names[int(present[0])]}') is present in the true labels: "
            "ROC-AUC and balanced accuracy are not meaningful."
        )

    def macro_f1(yt: np.ndarray, yp: np.ndarray, _p: np.ndarray) -> float:
        return precision_recall_fscore_support(yt, yp, labels=labels, average="macro", zero_division=0)[2]

    metric_fns = {
        "accuracy": lambda yt, yp, _p: accuracy_score(yt, yp),
        "balanced_accuracy": lambda yt, yp, _p: balanced_accuracy_score(yt, yp),
        "macro_f1": macro_f1,
        "roc_auc": lambda yt, _yp, pp: _roc_auc(yt, pp),
    }
    for k in labels:
        metric_fns[f"roc_auc_class_{k}"] = _class_auc(k)

    groups_arr = None if groups is None else np.asarray(groups)
    boot = bootstrap_many(
        metric_fns, y, pred, p, groups=groups_arr, n_resamples=n_resamples, seed=seed, alpha=_ALPHA
    )

    # Per-class numbers straight from sklearn.
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=np.nan
    )
    mcm = multilabel_confusion_matrix(y, pred, labels=labels)  # per class [[tn, fp], [fn, tp]]
    per_class: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(class_names):
        tn, fp = int(mcm[k, 0, 0]), int(mcm[k, 0, 1])
        specificity = tn / (tn + fp) if (tn + fp) else math.nan
        has_samples = bool(support[k])
        average_precision = (
            average_precision_score((y == k).astype(int), p[:, k]) if has_samples else math.nan
        )
        per_class[name] = {
            "precision": _num(precision[k]),
            "recall": _num(recall[k]),
            "f1": _num(f1[k]),
            "support": int(support[k]),
            "sensitivity": _num(recall[k]),
            "specificity": _num(specificity),
            "roc_auc": _with_ci(boot[f"roc_auc_class_{k}"]),
            "average_precision": _num(average_precision),
        }
        if not has_samples:
            warnings_out.append(
                f"Class '{name}' has no samples in the evaluated data: its recall (sensitivity), "
                "ROC-AUC and average precision are not defined."
            )
        elif not np.any(pred == k):
            warnings_out.append(f"Class '{name}' was never predicted: its precision is not defined.")

    macro = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(y, pred, labels=labels, average="weighted", zero_division=0)

    roc = _with_ci(boot["roc_auc"])
    roc["kind"] = "binary" if n_classes == 2 else "macro_ovr"
    if roc["value"] is None and present.size >= 2:
        missing = [class_names[k] for k in labels if not support[k]]
        warnings_out.append(
            f"ROC-AUC is not defined because these classes have no samples: {', '.join(missing)}."
        )
    elif roc["value"] is None:
        warnings_out.append("ROC-AUC is not defined: the true labels contain a single class.")

    readable = {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced accuracy",
        "macro_f1": "macro F1",
        "roc_auc": "ROC-AUC",
    }
    for key, label in readable.items():
        res = boot[key]
        if math.isfinite(res.estimate) and n_resamples and res.n_valid < n_resamples:
            if res.n_valid == 0:
                warnings_out.append(f"No confidence interval for {label}: undefined in every resample.")
            else:
                warnings_out.append(
                    f"The 95% CI for {label} uses {res.n_valid} of {n_resamples} resamples "
                    "(the others lacked a class)."
                )

    n_units = n if groups_arr is None else len(np.unique(groups_arr))
    report_text = classification_report(
        y, pred, labels=labels, target_names=class_names, digits=3, zero_division=0
    )

    return {
        "n": int(n),
        "class_names": class_names,
        "accuracy": _with_ci(boot["accuracy"]),
        "balanced_accuracy": _with_ci(boot["balanced_accuracy"]),
        "roc_auc": roc,
        "macro_avg": {
            "precision": _num(macro[0]),
            "recall": _num(macro[1]),
            "f1": _with_ci(boot["macro_f1"]),
        },
        "weighted_avg": {
            "precision": _num(weighted[0]),
            "recall": _num(weighted[1]),
            "f1": _num(weighted[2]),
        },
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).astype(int).tolist(),
        "classification_report_text": report_text,
        "bootstrap": {
            "method": "percentile",
            "n_resamples": int(n_resamples),
            "seed": int(seed),
            "unit": "sample" if groups_arr is None else "group",
            "n_units": int(n_units),
            "ci_level": CI_LEVEL,
        },
        "warnings": warnings_out,
    }
