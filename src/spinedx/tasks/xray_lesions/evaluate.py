"""Evaluate a finished training run on its held-out test studies (or on another dataset)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.errors import InputError
from spinedx.evaluation.classification import classification_metrics
from spinedx.evaluation.plots import (
    plot_class_counts,
    plot_confusion_matrix,
    plot_roc_curves,
    plot_sample_predictions,
    plot_training_curves,
)
from spinedx.io.atomic import atomic_write_text
from spinedx.tasks.xray_lesions.data import RoiData, load_labelled_crops, restrict_to_studies
from spinedx.tasks.xray_lesions.model import TrainedClassifier
from spinedx.tasks.xray_lesions.report import write_evaluation_report
from spinedx.tasks.xray_lesions.train import SPLITS_FILE, SUMMARY_FILE

N_SAMPLE_CROPS = 10


@dataclass
class EvaluationOutcome:
    metrics: dict
    metrics_path: Path
    report_path: Path


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def _sample_indices(correct: np.ndarray, seed: int) -> np.ndarray:
    """Mostly correct examples plus up to half wrong ones, so a reader sees both."""
    rng = np.random.default_rng(seed)
    wrong, right = np.flatnonzero(~correct), np.flatnonzero(correct)
    n_wrong = min(len(wrong), N_SAMPLE_CROPS // 2)
    chosen = np.concatenate(
        [
            rng.choice(wrong, n_wrong, replace=False),
            rng.choice(right, min(len(right), N_SAMPLE_CROPS - n_wrong), replace=False),
        ]
    )
    return np.sort(chosen.astype(int))


def evaluate_run(
    run_dir: Path,
    *,
    data: Path | None = None,
    images: Path | None = None,
    out_dir: Path | None = None,
    n_resamples: int = 1000,
) -> EvaluationOutcome:
    """Metrics with bootstrap CIs (resampled by study) and a self-contained report.html (in ``out_dir``,
    default the run folder).

    Without ``data`` the run's own test studies are used (see ``splits.csv``); with ``data`` (an
    annotation CSV) and ``images`` every crop of that dataset is evaluated.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    classifier = TrainedClassifier.load(run_dir)
    data_config = classifier.config.data
    group_by = data_config.split.group_by
    if (data is None) != (images is None):
        raise InputError("--data and --images go together: give both or neither")
    crop_set = load_labelled_crops(data_config, data, images)
    if data is None:
        splits_path = run_dir / SPLITS_FILE
        if not splits_path.is_file():
            raise InputError(f"{splits_path}: missing; cannot tell which studies were held out")
        held_out = restrict_to_studies(
            crop_set, classifier.class_names, pd.read_csv(splits_path, dtype=str), "test", group_by
        )
        dataset_name = f"{data_config.csv} (held-out test studies)"
    else:
        rows = crop_set.rows.assign(split="test")
        held_out = RoiData(crop_set.crops, rows, classifier.class_names, crop_set.skipped)
        dataset_name = str(data)
    if len(held_out.crops) == 0:
        raise InputError(f"{dataset_name}: no crops to evaluate")

    probabilities = classifier.predict_crops(held_out.crops)
    labels = held_out.rows["label"].to_numpy()
    groups = held_out.rows[group_by].astype(str).to_numpy()
    metrics = classification_metrics(
        labels,
        probabilities,
        classifier.class_names,
        groups=groups,
        n_resamples=n_resamples,
        seed=classifier.config.seed,
    )
    metrics["skipped_images"] = held_out.skipped
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, allow_nan=False))

    summary = _read_json(run_dir / SUMMARY_FILE, {})
    predictions = probabilities.argmax(1)
    samples = _sample_indices(predictions == labels, classifier.config.seed)
    names = classifier.class_names
    figures = {
        "training_curves": plot_training_curves(_read_json(run_dir / "history.json", [])),
        "confusion_matrix": plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), names),
        "roc_curves": plot_roc_curves(labels, probabilities, names),
        "class_counts": plot_class_counts(summary.get("counts") or held_out.counts()),
        "sample_predictions": plot_sample_predictions(
            [held_out.crops[i] for i in samples],
            [names[labels[i]] for i in samples],
            [names[predictions[i]] for i in samples],
            [float(probabilities[i, predictions[i]]) for i in samples],
        ),
    }
    info = _read_json(run_dir / "run_info.json", {})
    counts = summary.get("counts", {})
    run_info = {
        "config_name": classifier.config.name,
        "backbone": f"{classifier.config.model.backbone} ({summary.get('weights_source', 'unknown weights')})",
        "dataset": dataset_name,
        "n_per_split": {split: sum(per_class.values()) for split, per_class in counts.items()},
        "best_epoch": classifier.epoch,
        "git_commit": info.get("git_commit"),
        "date": info.get("started_utc"),
    }
    report_path = write_evaluation_report(
        out_dir / "report.html",
        title=f"spinedx evaluation: {classifier.config.name}",
        metrics=metrics,
        figures=figures,
        run_info=run_info,
    )
    return EvaluationOutcome(metrics, metrics_path, report_path)
