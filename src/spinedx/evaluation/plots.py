"""Evaluation figures rendered to PNG bytes.

Every function builds a stand-alone :class:`matplotlib.figure.Figure` drawn by the Agg canvas, so
nothing is registered with pyplot's global figure manager (nothing to leak, safe in worker
threads) and the process-wide backend is left untouched. Figures are cleared after saving.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import ConfusionMatrixDisplay, roc_auc_score, roc_curve

from spinedx.errors import InputError

_DPI = 110
_CORRECT_COLOUR = "#1a7f37"
_WRONG_COLOUR = "#cf222e"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    finally:
        fig.clear()
    return buffer.getvalue()


def _placeholder(message: str, width: float = 6.0, height: float = 3.0) -> bytes:
    fig = _new_figure(width, height)
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#555555")
    ax.set_axis_off()
    return _to_png(fig)


def plot_training_curves(history: list[dict]) -> bytes:
    """Accuracy (left) and loss (right) per epoch, training vs validation.

    ``history`` rows look like ``{"epoch", "train_loss", "val_loss", "train_accuracy",
    "val_accuracy", ...}``; missing keys or ``None`` values are simply not drawn.
    """
    if not history:
        return _placeholder("No training history was recorded.")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    fig = _new_figure(10.0, 4.0)
    panels = (("accuracy", "Accuracy (proportion correct)"), ("loss", "Loss (lower is better)"))
    for position, (metric, ylabel) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, position)
        drawn = False
        for split, label, style in (("train", "Training", "-o"), ("val", "Validation", "-s")):
            key = f"{split}_{metric}"
            points = [
                (e, float(row[key]))
                for e, row in zip(epochs, history, strict=True)
                if row.get(key) is not None and math.isfinite(float(row[key]))
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, markersize=3, label=label)
                drawn = True
        ax.set_title(metric.capitalize())
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if metric == "accuracy" and drawn:
            ax.set_ylim(-0.02, 1.02)
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", transform=ax.transAxes, ha="center", color="#555555")
    return _to_png(fig)


def plot_confusion_matrix(matrix, class_names: Sequence[str], normalize: bool = False) -> bytes:
    """Confusion matrix heat map: rows = true class, columns = predicted class.

    With ``normalize=True`` each row is divided by its total, so the diagonal shows the
    sensitivity (recall) of each class; rows without samples stay 0.
    """
    m = np.asarray(matrix, dtype=float)
    k = len(class_names)
    if m.shape != (k, k):
        raise InputError(f"confusion matrix has shape {m.shape}, expected ({k}, {k}) for {list(class_names)}")
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
        values_format = ".2f"
    else:
        m = m.astype(int)
        values_format = "d"
    size = max(4.5, 1.1 * k + 2.5)
    fig = _new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    display = ConfusionMatrixDisplay(confusion_matrix=m, display_labels=list(class_names))
    display.plot(ax=ax, cmap="Blues", values_format=values_format, colorbar=True, xticks_rotation=30)
    if normalize:
        display.im_.set_clim(0.0, 1.0)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Proportion of each true class" if normalize else "Number of cases")
    return _to_png(fig)


def plot_roc_curves(y_true, probabilities, class_names: Sequence[str]) -> bytes:
    """One-vs-rest ROC curves with the AUC of each class in the legend.

    For two classes only the curve of the positive class (index 1) is drawn. Classes whose AUC is
    undefined (no positive or no negative cases) are listed in the legend but not drawn.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probabilities, dtype=float)
    if y.size == 0:
        return _placeholder("No samples: ROC curves cannot be drawn.")
    if p.ndim != 2 or p.shape != (len(y), len(class_names)):
        raise InputError(f"probabilities must have shape ({len(y)}, {len(class_names)}), got {p.shape}")
    classes = [1] if len(class_names) == 2 else list(range(len(class_names)))
    fig = _new_figure(6.0, 5.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", label="Chance (AUC 0.50)")
    for k in classes:
        positive = (y == k).astype(int)
        if positive.min() == positive.max():
            ax.plot([], [], " ", label=f"{class_names[k]} (AUC undefined: one class only)")
            continue
        fpr, tpr, _ = roc_curve(positive, p[:, k])
        auc = roc_auc_score(positive, p[:, k])
        ax.plot(fpr, tpr, linewidth=2, label=f"{class_names[k]} (AUC {auc:.2f})")
    _finish_unit_square(
        ax,
        "False positive rate (1 − specificity)",
        "True positive rate (sensitivity)",
        "ROC curves (each class vs. the rest)" if len(classes) > 1 else f"ROC curve: {class_names[1]}",
    )
    return _to_png(fig)


def _finish_unit_square(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)


def plot_binary_rocs(tasks: dict[str, tuple]) -> bytes:
    """One ROC curve per binary finding, ``tasks`` = {name: (labels 0/1, probabilities)}."""
    fig = _new_figure(6.0, 5.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", label="Chance (AUC 0.50)")
    for name, (y_true, scores) in tasks.items():
        y = np.asarray(y_true).astype(int)
        if y.size == 0 or y.min() == y.max():
            ax.plot([], [], " ", label=f"{name} (AUC undefined: one class only)")
            continue
        fpr, tpr, _ = roc_curve(y, scores)
        ax.plot(
            fpr, tpr, linewidth=2, label=f"{name} (AUC {roc_auc_score(y, scores):.2f}, {y.sum()} positive)"
        )
    _finish_unit_square(
        ax,
        "False positive rate (1 − specificity)",
        "True positive rate (sensitivity)",
        "ROC curve per finding",
    )
    return _to_png(fig)


def plot_reliability(tasks: dict[str, tuple], n_bins: int = 10) -> bytes:
    """Reliability diagram: observed frequency per bin of predicted probability, one line per finding.

    Bins are quantiles of the predictions, so rare findings still get populated bins.
    """
    fig = _new_figure(6.0, 5.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", label="Perfect calibration")
    for name, (y_true, probabilities) in tasks.items():
        y = np.asarray(y_true).astype(int)
        if y.size == 0 or y.min() == y.max():
            continue
        observed, predicted = calibration_curve(y, probabilities, n_bins=n_bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", linewidth=1.5, label=name)
    _finish_unit_square(
        ax, "Predicted probability (bin mean)", "Observed frequency", "Calibration per finding"
    )
    return _to_png(fig)


def plot_class_counts(counts: dict[str, dict[str, int]]) -> bytes:
    """Grouped bars: number of cases per class, one bar per split (e.g. train / val / test)."""
    splits = [s for s in counts if counts[s]]
    classes: list[str] = []
    for split in splits:
        classes.extend(c for c in counts[split] if c not in classes)
    if not classes:
        return _placeholder("No class counts available.")
    x = np.arange(len(classes))
    width = 0.8 / len(splits)
    fig = _new_figure(max(6.0, 1.2 * len(classes) + 3.0), 4.0)
    ax = fig.add_subplot()
    for i, split in enumerate(splits):
        heights = [int(counts[split].get(c, 0)) for c in classes]
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, heights, width, label=split)
        ax.bar_label(bars, fontsize=8, padding=2)
    ax.set_xticks(x, classes, rotation=20 if len(classes) > 4 else 0)
    ax.set_ylabel("Number of cases")
    ax.set_title("Cases per class in each data split")
    ax.margins(y=0.12)
    ax.legend(title="Split")
    ax.grid(axis="y", alpha=0.3)
    return _to_png(fig)


def _displayable(crop: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(image, cmap) for imshow: grayscale 2-D, or RGB(A) channels-last scaled to 0..1."""
    img = np.asarray(crop)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)  # channels-first (C, H, W) -> (H, W, C)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
        raise InputError(f"crop has shape {np.asarray(crop).shape}: expected (H, W), (H, W, 3) or (3, H, W)")
    if img.ndim == 2:
        return img, "gray"
    img = img.astype(float)
    lo, hi = np.nanmin(img), np.nanmax(img)
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img), None


def plot_sample_predictions(
    crops: list[np.ndarray],
    true_labels: list[str],
    predicted_labels: list[str],
    probabilities: list[float],
) -> bytes:
    """Grid of image crops titled ``"true / pred (p)"``; titles of wrong predictions are red.

    ``probabilities[i]`` is the model's probability for the predicted class of crop ``i``.
    """
    n = len(crops)
    if not (len(true_labels) == len(predicted_labels) == len(probabilities) == n):
        raise InputError(
            "plot_sample_predictions: crops, true_labels, predicted_labels and probabilities must have "
            f"the same length, got {n}, {len(true_labels)}, {len(predicted_labels)}, {len(probabilities)}"
        )
    if n == 0:
        return _placeholder("No sample predictions to show.")
    ncols = min(n, 5)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(2.6 * ncols, 2.9 * nrows)
    for i, (crop, true, pred, prob) in enumerate(
        zip(crops, true_labels, predicted_labels, probabilities, strict=True)
    ):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        img, cmap = _displayable(crop)
        ax.imshow(img, cmap=cmap)
        correct = str(true) == str(pred)
        title = f"{true} / {pred} ({float(prob):.2f})"
        if len(title) > 30:
            title = f"{true} /\n{pred} ({float(prob):.2f})"
        ax.set_title(
            title,
            fontsize=9,
            color=_CORRECT_COLOUR if correct else _WRONG_COLOUR,
            fontweight="normal" if correct else "bold",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(_CORRECT_COLOUR if correct else _WRONG_COLOUR)
            spine.set_linewidth(1.0 if correct else 2.5)
    fig.suptitle("Sample predictions: true / predicted (probability); red = wrong", fontsize=10)
    return _to_png(fig)
