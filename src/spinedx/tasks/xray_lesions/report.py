"""Self-contained HTML evaluation report (inline CSS, figures embedded as base64 data URIs).

The Jinja2 template ships as package data: ``spinedx/report/templates/evaluation.html.j2``.
``metrics`` is the dict returned by :func:`spinedx.evaluation.classification.classification_metrics`
(missing entries are shown as "—"); ``figures`` maps a figure key to PNG bytes (known keys such
as ``"confusion_matrix"`` get a plain-language caption; see :data:`FIGURE_CAPTIONS`).
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text
from spinedx.report.html import load_template, png_base64

TEMPLATE_NAME = "evaluation.html.j2"

#: key -> (title, caption). Unknown keys get their key as the title and no caption.
FIGURE_CAPTIONS: dict[str, tuple[str, str]] = {
    "training_curves": (
        "Training curves",
        "Accuracy (left) and loss (right) after each pass over the training data (epoch), on the "
        "training cases and on the separate validation cases. Validation accuracy that stops improving "
        "while training accuracy keeps rising suggests over-fitting.",
    ),
    "confusion_matrix": (
        "Confusion matrix",
        "Rows are the true class, columns the predicted class; each cell counts the test cases. "
        "The diagonal holds the correct predictions.",
    ),
    "confusion_matrix_normalized": (
        "Confusion matrix (proportions)",
        "As the confusion matrix, but each row is divided by the number of cases of that true class, "
        "so the diagonal shows the sensitivity of each class.",
    ),
    "roc_curves": (
        "ROC curves",
        "Each curve shows the trade-off between sensitivity (vertical) and false positives "
        "(1 − specificity, horizontal) as the decision threshold changes. Curves nearer the top-left "
        "corner are better; the dashed diagonal is chance. The area under the curve (AUC) is in the legend.",
    ),
    "class_counts": (
        "Cases per class",
        "How many cases of each class were used for training, validation and testing. "
        "Classes with few test cases have wide confidence intervals.",
    ),
    "sample_predictions": (
        "Example predictions",
        "Image crops from the test set with the true and predicted class and the model's probability "
        "for its prediction. Red titles mark wrong predictions.",
    ),
}

_RUN_INFO_LABELS: dict[str, str] = {
    "config_name": "Configuration",
    "config": "Configuration",
    "backbone": "Model (backbone network)",
    "dataset": "Data set",
    "n_per_split": "Cases per split",
    "splits": "Cases per split",
    "git_commit": "Software version (git commit)",
    "commit": "Software version (git commit)",
    "date": "Date of run",
}

_HEADLINE = (
    ("accuracy", "Accuracy", "Share of all test cases given the correct class."),
    (
        "balanced_accuracy",
        "Balanced accuracy",
        "Average of the per-class sensitivities, so that rare classes count as much as common ones.",
    ),
    (
        "macro_f1",
        "Macro-F1",
        "Average over classes of the F1 score, which combines precision and sensitivity.",
    ),
    (
        "roc_auc",
        "ROC-AUC",
        "Chance that the model scores a random case of a class above a random case of another class "
        "(0.5 = chance, 1 = perfect ranking).",
    ),
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MISSING = "—"


def _number(value: Any, digits: int = 2) -> str:
    if value is None or isinstance(value, bool):
        return _MISSING
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{x:.{digits}f}" if math.isfinite(x) else _MISSING


def _split_ci(entry: Any) -> tuple[Any, Any]:
    """(value, ci95) from ``{"value", "ci95"}`` or a bare number."""
    if isinstance(entry, dict):
        return entry.get("value"), entry.get("ci95")
    return entry, None


def _ci_text(ci: Any) -> str:
    if not ci or len(ci) != 2 or _number(ci[0]) == _MISSING or _number(ci[1]) == _MISSING:
        return "95% CI not available"
    return f"95% CI {_number(ci[0])}–{_number(ci[1])}"


def _value_with_ci(entry: Any) -> str:
    value, ci = _split_ci(entry)
    if _number(value) == _MISSING:
        return "not defined"
    return f"{_number(value)} ({_ci_text(ci)})"


def _run_value(value: Any) -> str:
    if isinstance(value, dict):
        return " · ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _run_rows(run_info: dict, metrics: dict) -> list[tuple[str, str]]:
    info = dict(run_info)
    rows: list[tuple[str, str]] = []
    seen_labels: set[str] = set()
    for key in _RUN_INFO_LABELS:
        if key in info and info[key] not in (None, "") and _RUN_INFO_LABELS[key] not in seen_labels:
            rows.append((_RUN_INFO_LABELS[key], _run_value(info[key])))
            seen_labels.add(_RUN_INFO_LABELS[key])
    for key, value in info.items():
        if key not in _RUN_INFO_LABELS and value not in (None, ""):
            rows.append((key.replace("_", " ").capitalize(), _run_value(value)))
    boot = metrics.get("bootstrap") or {}
    if boot.get("n_resamples"):
        unit = "patients/studies" if boot.get("unit") == "group" else "cases"
        rows.append(
            (
                "Confidence intervals",
                f"95% percentile bootstrap, {boot['n_resamples']} resamples "
                f"of {boot.get('n_units', '?')} {unit}",
            )
        )
    return rows


def _headline(metrics: dict) -> list[dict[str, str]]:
    sources = {
        "accuracy": metrics.get("accuracy"),
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "macro_f1": (metrics.get("macro_avg") or {}).get("f1"),
        "roc_auc": metrics.get("roc_auc"),
    }
    rows = []
    for key, name, explanation in _HEADLINE:
        value, ci = _split_ci(sources[key])
        defined = _number(value) != _MISSING
        if key == "roc_auc" and isinstance(sources[key], dict) and sources[key].get("kind") == "macro_ovr":
            name = "ROC-AUC (average over classes)"
        rows.append(
            {
                "name": name,
                "value": _number(value) if defined else "not defined",
                "ci": _ci_text(ci) if defined else "",
                "explanation": explanation,
            }
        )
    return rows


def _per_class(metrics: dict) -> list[dict[str, str]]:
    rows = []
    for name, m in (metrics.get("per_class") or {}).items():
        auc_value, auc_ci = _split_ci(m.get("roc_auc"))
        auc = _number(auc_value)
        if auc != _MISSING and auc_ci:
            ci = _ci_text(auc_ci).replace("95% CI ", "")
            auc = f"{auc} ({ci})"
        rows.append(
            {
                "name": name,
                "precision": _number(m.get("precision")),
                "sensitivity": _number(m.get("sensitivity", m.get("recall"))),
                "specificity": _number(m.get("specificity")),
                "f1": _number(m.get("f1")),
                "auc": auc,
                "average_precision": _number(m.get("average_precision")),
                "support": str(m.get("support", _MISSING)),
            }
        )
    return rows


def _confusion(metrics: dict) -> dict | None:
    matrix = metrics.get("confusion_matrix")
    names = metrics.get("class_names") or list(metrics.get("per_class") or {})
    if not matrix or len(matrix) != len(names):
        return None
    rows = []
    for i, (name, counts) in enumerate(zip(names, matrix, strict=True)):
        cells = [
            {"count": int(c), "kind": "diag" if i == j else ("off" if c else "")}
            for j, c in enumerate(counts)
        ]
        rows.append({"name": name, "cells": cells, "total": int(sum(counts))})
    return {"class_names": names, "rows": rows}


def _figures(figures: dict[str, bytes]) -> list[dict[str, str]]:
    out = []
    for key, data in figures.items():
        if not isinstance(data, bytes | bytearray) or not data.startswith(_PNG_SIGNATURE):
            raise InputError(f"figure '{key}' is not PNG image bytes")
        title, caption = FIGURE_CAPTIONS.get(key, (key.replace("_", " ").capitalize(), ""))
        out.append(
            {"title": title, "caption": caption, "data_uri": f"data:image/png;base64,{png_base64(data)}"}
        )
    return out


def render_evaluation_report(*, title: str, metrics: dict, figures: dict[str, bytes], run_info: dict) -> str:
    """The report as an HTML string (see :func:`write_evaluation_report`)."""
    boot = metrics.get("bootstrap") or {}
    grouped = boot.get("unit") == "group"
    n = metrics.get("n")
    run_rows = _run_rows(run_info, metrics)
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    context = {
        "title": title,
        "n_text": str(n) if n is not None else "the",
        "generated": generated,
        "run_rows": run_rows,
        "headline": _headline(metrics),
        "per_class": _per_class(metrics),
        "confusion": _confusion(metrics),
        "figures": _figures(figures),
        "report_text": metrics.get("classification_report_text", ""),
        "warnings": list(metrics.get("warnings") or []),
        "n_resamples": boot.get("n_resamples", "many"),
        "grouped": grouped,
        "unit_plural": "patients/studies" if grouped else "cases",
        "unit_singular": "patient/study",
    }
    return load_template(TEMPLATE_NAME, strict=True).render(**context)


def write_evaluation_report(
    path: Path, *, title: str, metrics: dict, figures: dict[str, bytes], run_info: dict
) -> Path:
    """Write a self-contained HTML report and return its path.

    ``path`` is the output file (e.g. ``out/report.html``); if it is an existing directory the
    report is written to ``path / "report.html"``. Parent folders are created. The write is atomic
    (temporary file in the same folder, then ``os.replace``), so readers never see a partial file.
    ``run_info`` keys shown with friendly labels: config_name, backbone, dataset, n_per_split
    (a dict such as ``{"train": 800, "val": 100, "test": 100}``), git_commit, date; other keys are
    listed as they are. The footer states when the report itself was generated.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.html"
    html = render_evaluation_report(title=title, metrics=metrics, figures=figures, run_info=run_info)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, html)
    return path
