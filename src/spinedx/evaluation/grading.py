"""Metrics of per-disc grading: binary tasks, ordinal grades (Pfirrmann), multi-class (Modic).

Pure functions of labels and predictions. Confidence intervals are percentile bootstraps over
patients (:func:`spinedx.evaluation.bootstrap.bootstrap_many` with ``groups``), so the t1 and t2
crops of one patient move together. Each interval is reported as
``{"estimate": ..., "lower": ..., "upper": ...}``; undefined values (a single class) are NaN.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    roc_auc_score,
    roc_curve,
)

from spinedx.errors import InputError
from spinedx.evaluation.bootstrap import bootstrap_many
from spinedx.evaluation.calibration import expected_calibration_error


def _interval(result) -> dict[str, float]:
    return {"estimate": result.estimate, "lower": result.lower, "upper": result.upper}


def _binary(y) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise InputError("binary metrics: labels must be 0 or 1")
    return y.astype(np.int64)


def sensitivity(y_true, y_pred) -> float:
    """TP / (TP + FN); raises ``ZeroDivisionError`` without positives."""
    y_true, y_pred = _binary(y_true), _binary(y_pred)
    positives = int((y_true == 1).sum())
    if positives == 0:
        raise ZeroDivisionError("sensitivity without positives")
    return float(((y_pred == 1) & (y_true == 1)).sum() / positives)


def specificity(y_true, y_pred) -> float:
    """TN / (TN + FP); raises ``ZeroDivisionError`` without negatives."""
    y_true, y_pred = _binary(y_true), _binary(y_pred)
    negatives = int((y_true == 0).sum())
    if negatives == 0:
        raise ZeroDivisionError("specificity without negatives")
    return float(((y_pred == 0) & (y_true == 0)).sum() / negatives)


def youden_threshold(y_true, scores) -> float:
    """The score threshold (predict positive when ``score >= threshold``) maximising sens + spec - 1.

    Ties go to the highest threshold. With a single class present it returns 0.5.
    """
    y_true = _binary(y_true)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y_true, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0)) if np.isfinite(thresholds[best]) else 1.0


def sensitivity_at_specificity(y_true, scores, target: float) -> float:
    """The highest sensitivity on the ROC curve whose specificity is at least ``target``."""
    y_true = _binary(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError("sensitivity at specificity needs both classes")
    fpr, tpr, _ = roc_curve(y_true, np.asarray(scores, dtype=np.float64).reshape(-1))
    allowed = fpr <= 1.0 - target + 1e-12
    return float(tpr[allowed].max())


def binary_task_metrics(
    y_true,
    probabilities,
    *,
    threshold,
    groups=None,
    n_resamples: int = 1000,
    seed: int = 0,
    specificity_target: float = 0.88,
) -> dict:
    """AUROC, AP, sensitivity/specificity at ``threshold`` and at ``specificity_target`` (with CIs), ECE.

    ``threshold`` (a number, or one per sample when each CV fold has its own operating point) must
    come from elsewhere (e.g. the training folds), never from these labels; a sample is called
    positive when its probability is ``>= threshold``.
    """
    y = _binary(y_true)
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(p) != len(y):
        raise InputError(f"binary metrics: {len(p)} predictions but {len(y)} labels")
    cut = np.broadcast_to(np.asarray(threshold, dtype=np.float64), p.shape).copy()
    fns = {
        "auroc": lambda t, s, c: roc_auc_score(t, s) if len(np.unique(t)) == 2 else math.nan,
        "average_precision": lambda t, s, c: average_precision_score(t, s) if t.any() else math.nan,
        "sensitivity": lambda t, s, c: sensitivity(t, (s >= c).astype(np.int64)),
        "specificity": lambda t, s, c: specificity(t, (s >= c).astype(np.int64)),
        f"sensitivity_at_specificity_{specificity_target:g}": lambda t, s, c: sensitivity_at_specificity(
            t, s, specificity_target
        ),
    }
    results = bootstrap_many(fns, y, p, cut, groups=groups, n_resamples=n_resamples, seed=seed)
    out = {name: _interval(result) for name, result in results.items()}
    out["threshold"] = float(threshold) if np.ndim(threshold) == 0 else [float(v) for v in np.unique(cut)]
    out["ece"] = expected_calibration_error(p, y) if len(y) else math.nan
    out["n"] = int(len(y))
    out["n_positive"] = int(y.sum())
    return out


def quadratic_kappa(y_true, y_pred, labels=None) -> float:
    """Cohen's kappa with quadratic weights (sklearn); ``labels`` fixes the grade scale."""
    return float(cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=labels))


def ordinal_metrics(y_true, y_pred, *, labels, groups=None, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Quadratic-weighted kappa, balanced accuracy, accuracy, mean absolute error and +-1 accuracy."""
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if len(y) != len(pred):
        raise InputError(f"ordinal metrics: {len(pred)} predictions but {len(y)} labels")
    labels = list(labels)
    fns = {
        "kappa_quadratic": lambda t, s: quadratic_kappa(t, s, labels),
        "balanced_accuracy": _balanced_accuracy,
        "accuracy": lambda t, s: float(np.mean(t == s)),
        "mae": lambda t, s: float(np.mean(np.abs(t - s))),
        "within_one": lambda t, s: float(np.mean(np.abs(t - s) <= 1)),
    }
    results = bootstrap_many(fns, y, pred, groups=groups, n_resamples=n_resamples, seed=seed)
    out = {name: _interval(result) for name, result in results.items()}
    out["n"] = int(len(y))
    return out


def multiclass_metrics(y_true, y_pred, *, groups=None, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Accuracy and balanced accuracy (over the classes present in ``y_true``) with CIs."""
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if len(y) != len(pred):
        raise InputError(f"multi-class metrics: {len(pred)} predictions but {len(y)} labels")
    fns = {"accuracy": lambda t, s: float(np.mean(t == s)), "balanced_accuracy": _balanced_accuracy}
    results = bootstrap_many(fns, y, pred, groups=groups, n_resamples=n_resamples, seed=seed)
    out = {name: _interval(result) for name, result in results.items()}
    out["n"] = int(len(y))
    return out


def _balanced_accuracy(t, s) -> float:
    """Mean recall over the classes present in ``t`` (sklearn's balanced accuracy)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(t, s))
