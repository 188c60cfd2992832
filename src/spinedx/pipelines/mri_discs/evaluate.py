"""End-to-end evaluation of the MRI disc pipeline on a folder laid out like spider-sagittal.

Every series is analysed exactly as ``spinedx analyze`` would. Localisation is scored against
``discs.csv`` (disc recall and precision at IoU >= 0.5, level accuracy of matched discs); grades
are matched by patient and predicted level against ``gradings.csv`` for every series. CIs are
bootstrap over patients. The disc height ratio is also scored as a stand-alone narrowing marker.

The models are the bundled ones, a given pipeline, or (``cv_run``) the fold models of a
cross-validated training run, chosen per patient so that every patient is analysed by models
that never saw them (:mod:`spinedx.pipelines.mri_discs.out_of_fold`): the end-to-end cross-validation
figures of the model card.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.data.folds import report_only
from spinedx.errors import InputError
from spinedx.evaluation.bootstrap import bootstrap_ci
from spinedx.evaluation.detection import count_detections
from spinedx.evaluation.grading import binary_task_metrics
from spinedx.evaluation.plots import plot_binary_rocs, plot_confusion_matrix, plot_reliability
from spinedx.io.atomic import atomic_write_text
from spinedx.io.findings import Findings
from spinedx.io.lumbar515 import is_lumbar515
from spinedx.io.spider import read_spider
from spinedx.io.volumes import read_sagittal
from spinedx.pipelines.mri_discs.evaluate_lumbar515 import (
    evaluate_lumbar515,
    level_prior,
    pfirrmann_metrics,
    prior_auroc,
)
from spinedx.pipelines.mri_discs.out_of_fold import OutOfFoldModels
from spinedx.pipelines.mri_discs.pipeline import MriDiscPipeline
from spinedx.pipelines.mri_discs.report import write_disc_evaluation_report
from spinedx.report.overlay import render_overlay
from spinedx.tasks.disc_grading.network import BINARY_TASKS

N_FAILURES_SHOWN = 6


@dataclass
class DiscEvaluation:
    metrics: dict
    metrics_path: Path
    report_path: Path


PipelineForPatient = Callable[[str], MriDiscPipeline]


def _analyse_all(dataset, pipeline_for: PipelineForPatient) -> dict[str, Findings]:
    findings = {}
    for image_id, patient in dataset.series[["image_id", "patient"]].itertuples(index=False):
        image = read_sagittal(dataset.image_path(image_id))
        spacing = dataset.pixel_spacing(image_id)
        if spacing is not None:
            image.pixel_spacing_mm = spacing
        findings[image_id] = pipeline_for(str(patient)).analyze(image, image_id)
    return findings


def _localisation(dataset, findings: dict[str, Findings], n_resamples: int) -> tuple[dict, pd.DataFrame]:
    rows = []
    for image_id, reference in dataset.discs.groupby("image_id"):
        predicted = findings[image_id].discs
        counts = count_detections(
            [disc.box for disc in predicted],
            reference[["xmin", "ymin", "xmax", "ymax"]].to_numpy(dtype=float),
            [disc.ivd_label for disc in predicted],
            reference["ivd_label"].astype(int).tolist(),
        )
        rows.append({"image_id": image_id, "patient": str(reference["patient"].iloc[0]), **vars(counts)})
    table = pd.DataFrame(rows)
    if table.empty:
        return {"n_series": 0}, table
    groups = table["patient"].to_numpy()
    n_pred, n_ref = table["n_pred"].to_numpy(), table["n_ref"].to_numpy()
    matched, correct = table["n_matched"].to_numpy(), table["n_level_correct"].to_numpy()

    def interval(numerator: np.ndarray, denominator: np.ndarray) -> dict:
        estimate, low, high = bootstrap_ci(
            lambda a, b: a.sum() / b.sum() if b.sum() else float("nan"),
            numerator, denominator, groups=groups, n_resamples=n_resamples, seed=0,
        )  # fmt: skip
        return {"estimate": estimate, "lower": low, "upper": high}

    metrics = {
        "n_series": len(table),
        "n_reference_discs": int(n_ref.sum()),
        "disc_recall_iou50": interval(matched, n_ref),
        "disc_precision_iou50": interval(matched, n_pred),
        "level_accuracy_of_matched": interval(correct, matched),
        "series_with_all_discs_found": float(np.mean(matched == n_ref)),
    }
    table["recall"] = np.where(n_ref > 0, matched / np.maximum(n_ref, 1), np.nan)
    return metrics, table


def _graded_discs(dataset, findings: dict[str, Findings], pipeline_for: PipelineForPatient) -> pd.DataFrame:
    """One row per predicted disc whose (patient, level) has a reference grading, with the
    operating point of the grader that graded it."""
    series = dataset.series.set_index("image_id")
    gradings = dataset.gradings.assign(ivd_label=dataset.gradings["ivd_label"].astype(int))
    gradings = gradings.set_index(["patient", "ivd_label"])
    rows = []
    for image_id, result in findings.items():
        patient = str(series.loc[image_id, "patient"])
        thresholds = pipeline_for(patient).operating_points
        for disc in result.discs:
            key = (patient, disc.ivd_label)
            if key not in gradings.index:
                continue
            reference = gradings.loc[key]
            row = {"image_id": image_id, "patient": patient, "level": disc.level}
            for name in BINARY_TASKS:
                row[f"{name}_true"] = int(reference[name])
                row[f"{name}_prob"] = getattr(disc.grades, name).probability
                row[f"{name}_threshold"] = thresholds.get(name, 0.5)
            row["pfirrmann_true"] = int(reference["pfirrmann"])
            row["pfirrmann_pred"] = disc.grades.pfirrmann.grade
            row["pfirrmann_probabilities"] = list(disc.grades.pfirrmann.probabilities)
            row["weighting"] = result.input.weighting
            row["height_ratio"] = disc.measurements.height_ratio
            rows.append(row)
    return pd.DataFrame(rows)


def _grading(table: pd.DataFrame, pipeline_for: PipelineForPatient, n_resamples: int) -> dict:
    if table.empty:
        return {}
    # Every fold model of a CV run decodes Pfirrmann alike (one recipe): any patient's grader tells how.
    decode = pipeline_for(str(table["patient"].iloc[0])).grader.pfirrmann_decode
    groups = table["patient"].to_numpy()
    metrics = {"n_discs": len(table), "n_patients": int(table["patient"].nunique())}
    for name in BINARY_TASKS:
        metrics[name] = binary_task_metrics(
            table[f"{name}_true"], table[f"{name}_prob"], threshold=table[f"{name}_threshold"].to_numpy(),
            groups=groups, n_resamples=n_resamples,
        )  # fmt: skip
        if table[f"{name}_true"].nunique() == 2:
            auroc = prior_auroc(
                table[f"{name}_true"], level_prior(table, f"{name}_true"), groups, n_resamples
            )
            if auroc is not None:
                metrics[name]["level_prior"] = auroc
    metrics.update(
        pfirrmann_metrics(table, "pfirrmann_true", level_prior(table, "pfirrmann_true"), decode, n_resamples)
    )
    with_ratio = table.dropna(subset=["height_ratio"])
    if len(with_ratio) and with_ratio["narrowing_true"].nunique() == 2:
        # A lower ratio means narrowing, so score the negated ratio.
        metrics["height_ratio_as_narrowing_marker"] = binary_task_metrics(
            with_ratio["narrowing_true"], -with_ratio["height_ratio"], threshold=-0.9,
            groups=with_ratio["patient"].to_numpy(), n_resamples=n_resamples,
        )  # fmt: skip
    return metrics


def evaluate_discs(data_root: Path, out_dir: Path, pipeline: MriDiscPipeline | None = None,
                   n_resamples: int = 1000, cv_run: Path | None = None,
                   split: Path | None = None) -> DiscEvaluation:  # fmt: skip
    """Score ``pipeline`` (default: the bundled models), or with ``cv_run`` each patient with the
    fold models of that run which held the patient out. A lumbar515-sagittal folder is scored by
    :func:`~spinedx.pipelines.mri_discs.evaluate_lumbar515.evaluate_lumbar515` (its own measures).
    With ``split`` only the cohort's report patients of that split file are scored
    (:func:`spinedx.data.folds.report_patients`)."""
    if is_lumbar515(data_root):
        if cv_run is not None:
            raise InputError(
                f"{data_root}: --cv-run applies to SPIDER-layout folders; no fold model saw this cohort"
            )
        result = evaluate_lumbar515(Path(data_root), Path(out_dir), pipeline, n_resamples, split=split)
        return DiscEvaluation(result.metrics, result.metrics_path, result.report_path)
    dataset = read_spider(Path(data_root))
    if split is not None:
        dataset = report_only(dataset, split, "spider", ("series", "discs", "gradings"))
    if cv_run is not None:
        out_of_fold = OutOfFoldModels(cv_run)
        pipeline_for, version = out_of_fold.pipeline_for, out_of_fold.version
    else:
        pipeline = pipeline or MriDiscPipeline.bundled()
        pipeline_for, version = (lambda patient: pipeline), pipeline.version
    findings = _analyse_all(dataset, pipeline_for)
    localisation, per_series = _localisation(dataset, findings, n_resamples)
    graded = _graded_discs(dataset, findings, pipeline_for)
    grading = _grading(graded, pipeline_for, n_resamples)
    metrics = {
        "data": str(data_root),
        "model": {"name": findings and next(iter(findings.values())).model.name, "version": version},
        "models": "out-of-fold models of " + str(cv_run)
        if cv_run is not None
        else "one model for all patients",
        "patients": f"report patients of {split}" if split is not None else "all",
        "localisation": localisation,
        "grading": grading,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, default=float))

    figures = {}
    if not graded.empty:
        confusion = pd.crosstab(graded["pfirrmann_true"], graded["pfirrmann_pred"]).reindex(
            index=range(1, 6), columns=range(1, 6), fill_value=0
        )
        figures["Pfirrmann grade: reference (rows) vs predicted (columns)"] = plot_confusion_matrix(
            confusion.to_numpy(), [str(g) for g in range(1, 6)]
        )
        tasks = {name: (graded[f"{name}_true"], graded[f"{name}_prob"]) for name in BINARY_TASKS}
        figures["ROC curves per finding"] = plot_binary_rocs(tasks)
        figures["Calibration: observed frequency vs predicted probability"] = plot_reliability(tasks)
    failures = []
    if not per_series.empty:
        for row in per_series.sort_values("recall").head(N_FAILURES_SHOWN).itertuples():
            buffer = io.BytesIO()
            pixels = read_sagittal(dataset.image_path(row.image_id)).pixels
            render_overlay(pixels, findings[row.image_id].discs, scale=1).save(buffer, format="PNG")
            failures.append((f"{row.image_id}: {row.n_matched}/{row.n_ref} discs found", buffer.getvalue()))
    report_path = write_disc_evaluation_report(out_dir / "report.html", metrics, graded, figures, failures)
    return DiscEvaluation(metrics, metrics_path, report_path)


def evaluate_run(run_dir: Path, *, data: Path | None = None, images: Path | None = None,
                 out_dir: Path | None = None, n_resamples: int = 1000) -> DiscEvaluation:  # fmt: skip
    """``spinedx evaluate RUN`` of an mri-discs run: :func:`evaluate_discs` with the run's fold models
    (``cv_run``, every patient analysed by models that never saw it), on ``data`` or else the
    spider-sagittal folder its recipe trained on, into ``out_dir`` (default ``RUN/evaluation``)."""
    from spinedx.recipes import recorded_recipe

    run_dir = Path(run_dir)
    if images is not None:
        raise InputError("--images: an mri-discs run is scored on --data, a spider-sagittal folder")
    if data is None:
        data = Path(recorded_recipe(run_dir)["grader"]["data_root"])
    return evaluate_discs(Path(data), Path(out_dir or run_dir / "evaluation"), n_resamples=n_resamples,
                          cv_run=run_dir)  # fmt: skip
