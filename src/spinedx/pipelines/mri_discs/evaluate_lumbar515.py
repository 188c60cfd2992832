"""End-to-end evaluation of the MRI disc pipeline on a folder laid out like lumbar515-sagittal.

Every series is analysed exactly as ``spinedx analyze`` would. A reference disc box counts as
found when its centre lies inside a predicted box (this cohort's boxes are tight around the disc,
SPIDER's include the endplates, so IoU would measure the box convention, not the finding); its
level is right when the predicted disc's level equals the box's (derived) level. Each found disc is
scored with the predicted disc that contains it:

- bulging: P(bulging) on lumbar/thoracic-bulge vs normal boxes;
- degeneration: the expected Pfirrmann grade on ``ddd`` vs normal boxes;
- Pfirrmann (L3/L4-L5/S1, pfirrmann.csv): the predicted grade (quadratic-weighted kappa);
- stenosis: the grader's P(stenosis) when it has that head, and ``canal_ap_mm`` (negated: a narrow
  canal means stenosis) when a segmenter measured it;
- spondylolisthesis: P(spondylolisthesis) on discs inside a spondylolisthesis box.

Beside each, the **level-only prior** on the same discs: the grade's prevalence (mean grade for
Pfirrmann) at the disc's level among the *other* patients of this cohort (5 patient folds) — a
baseline that knows the level and this hospital's prevalences but not the image. 95% CIs: bootstrap
over patients.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.data.folds import patient_folds, report_only
from spinedx.evaluation.bootstrap import bootstrap_ci
from spinedx.evaluation.detection import box_holding
from spinedx.evaluation.grading import binary_task_metrics, ordinal_metrics
from spinedx.evaluation.plots import plot_binary_rocs, plot_confusion_matrix
from spinedx.io.atomic import atomic_write_text
from spinedx.io.findings import Disc, Findings
from spinedx.io.lumbar515 import Lumbar515Dataset, read_lumbar515
from spinedx.io.volumes import read_sagittal
from spinedx.pipelines.mri_discs.fused_pfirrmann import fused_pfirrmann_metrics
from spinedx.pipelines.mri_discs.pipeline import MODEL_NAME, MriDiscPipeline
from spinedx.report.html import load_template, png_base64
from spinedx.report.overlay import render_overlay

N_MISSES_SHOWN = 8
PRIOR_FOLDS = 5
BINARY_SCORES = {
    "bulging": "bulging",
    "degeneration": "degenerated",
    "stenosis": "stenosis",
    "spondylolisthesis": "spondylolisthesis",
}
"""Reported finding -> the cohort's label column."""
DEGENERATION_CUT = 3.5
"""Operating point of the expected Pfirrmann grade for "degenerated" (grade 4 or 5: the README's
check of ddd boxes against Pfirrmann >= 4)."""


@dataclass
class CohortEvaluation:
    metrics: dict
    metrics_path: Path
    report_path: Path


def evaluate_lumbar515(
    data_root: Path,
    out_dir: Path,
    pipeline: MriDiscPipeline | None = None,
    n_resamples: int = 1000,
    *,
    split: Path | None = None,
) -> CohortEvaluation:
    """Score ``pipeline`` (default: the bundled models) on every series of a lumbar515 folder, or with
    ``split`` on those of its report patients (:func:`spinedx.data.folds.report_patients`)."""
    dataset = read_lumbar515(data_root)
    if split is not None:
        dataset = report_only(dataset, split, "lumbar515", ("series", "discs", "lesions"))
    pipeline = pipeline or MriDiscPipeline.bundled()
    findings = {
        image_id: pipeline.analyze(read_sagittal(dataset.image_path(image_id)), image_id)
        for image_id in dataset.series["image_id"]
    }
    discs = _matched_discs(dataset, findings)
    metrics = {
        "data": str(data_root),
        "model": {"name": MODEL_NAME, "version": pipeline.version},
        "models": _models_note(pipeline),
        "patients": f"report patients of {split}" if split is not None else "all",
        "localisation": _localisation(discs, n_resamples),
        "grading": _grading(
            discs,
            {**pipeline.operating_points, "degeneration": DEGENERATION_CUT},
            pipeline.grader.pfirrmann_decode,
            n_resamples,
        ),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, default=float))
    report_path = _write_report(out_dir / "report.html", metrics, discs, dataset, findings)
    return CohortEvaluation(metrics, metrics_path, report_path)


def _cohort_use(model: str, config: dict) -> str:
    """Whether the model (from the training config in its meta) saw this cohort, and which patients."""
    if config.get("lumbar515_root") is None:
        return f"the {model} never saw this cohort"
    held_out = config.get("report_split")
    return f"the {model} trained on it" + (
        f" except the report patients of {held_out} (figures on other patients are in-sample)"
        if held_out
        else " (these figures are in-sample)"
    )


def _models_note(pipeline: MriDiscPipeline) -> str:
    note = "one model for all patients; " + "; ".join(
        _cohort_use(name, model.meta.get("config", {}))
        for name, model in (("localiser", pipeline.localizer), ("grader", pipeline.grader))
    )
    if pipeline.stenosis is not None:
        note += (
            "; the bundled stenosis model was trained on it, so its figure here is in-sample "
            "(its out-of-fold figure is in runs/<canal_stenosis run>/cv/metrics.json)"
        )
    return note


def _containing(predicted: list[Disc], x: float, y: float) -> Disc | None:
    """The predicted disc whose box contains (x, y); the nearest centre when several do."""
    holder = box_holding([d.box for d in predicted], x, y)
    return None if holder is None else predicted[holder]


def _matched_discs(dataset: Lumbar515Dataset, findings: dict[str, Findings]) -> pd.DataFrame:
    """Every reference disc box with the predicted disc containing its centre (NaN scores if none)."""
    rows = []
    for row in dataset.discs.itertuples():
        centre_x, centre_y = (row.xmin + row.xmax) / 2, (row.ymin + row.ymax) / 2
        disc = _containing(findings[row.image_id].discs, centre_x, centre_y)
        record = {
            "image_id": row.image_id,
            "weighting": findings[row.image_id].input.weighting,
            "patient": str(row.patient),
            "level": row.level,
            "box": (row.xmin, row.ymin, row.xmax, row.ymax),
            "found": disc is not None,
            "predicted_level": disc.level if disc else None,
            **{column: getattr(row, column) for column in BINARY_SCORES.values()},
            "pfirrmann": row.pfirrmann,
        }
        if disc is not None:
            grades = disc.grades
            probabilities = np.asarray(grades.pfirrmann.probabilities)
            record.update(
                bulging_score=grades.bulging.probability,
                degeneration_score=float(probabilities @ np.arange(1, 6)),
                spondylolisthesis_score=grades.spondylolisthesis.probability,
                pfirrmann_pred=grades.pfirrmann.grade,
                pfirrmann_probabilities=list(grades.pfirrmann.probabilities),
            )
            if grades.stenosis is not None:
                record["stenosis_score"] = grades.stenosis.probability
            canal = getattr(disc.measurements, "canal_ap_mm", None)
            if canal is not None:
                record["canal_ap"] = canal
        rows.append(record)
    return pd.DataFrame(rows)


def level_prior(discs: pd.DataFrame, column: str) -> np.ndarray:
    """Out-of-fold mean of ``column`` at each disc's level over the other folds' patients (the overall
    mean for a level they lack, or a disc without a level); 5 folds, fewer for fewer patients, NaN for one."""
    prior = np.full(len(discs), np.nan)
    labelled = discs[column].notna() & (discs["level"] != "")
    n_folds = min(PRIOR_FOLDS, discs["patient"].nunique())
    if n_folds < 2:  # one patient: no other patients to learn a prior from
        return prior
    folds = patient_folds(discs["patient"].to_numpy(), n_folds, seed=0)
    for fold in range(n_folds):
        train = labelled & (folds != fold)
        means = discs[train].groupby("level")[column].mean().astype(float)
        overall = float(discs.loc[train, column].astype(float).mean())
        test = folds == fold
        prior[test] = discs.loc[test, "level"].map(means).astype(float).fillna(overall).to_numpy()
    return prior


def prior_auroc(truth, prior: np.ndarray, groups: np.ndarray, n_resamples: int) -> dict | None:
    """AUROC (with its CI) of the :func:`level_prior` scores; None when it could not be learned (one patient)."""
    if not np.isfinite(prior).all():
        return None
    return binary_task_metrics(truth, prior, threshold=0.5, groups=groups, n_resamples=n_resamples)["auroc"]


def prior_kappa(truth, prior: np.ndarray, groups: np.ndarray, n_resamples: int) -> dict | None:
    """Quadratic κ (with its CI) of the :func:`level_prior` mean grade, rounded; None as :func:`prior_auroc`."""
    if not np.isfinite(prior).all():
        return None
    predicted = np.clip(np.rint(prior), 1, 5).astype(int)
    return ordinal_metrics(truth, predicted, labels=[1, 2, 3, 4, 5], groups=groups,
                           n_resamples=n_resamples)["kappa_quadratic"]  # fmt: skip


def _localisation(discs: pd.DataFrame, n_resamples: int) -> dict:
    groups = discs["patient"].to_numpy()
    found = discs["found"].to_numpy(dtype=float)
    with_level = discs[discs["found"] & (discs["level"] != "")]
    right_level = (with_level["level"] == with_level["predicted_level"]).to_numpy(dtype=float)

    def rate(values: np.ndarray, by: np.ndarray) -> dict:
        estimate, low, high = bootstrap_ci(np.mean, values, groups=by, n_resamples=n_resamples, seed=0)
        return {"estimate": estimate, "lower": low, "upper": high}

    return {
        "n_series": int(discs["image_id"].nunique()),
        "n_reference_discs": len(discs),
        "disc_recall_centre_in_box": rate(found, groups),
        "level_accuracy_of_found": rate(right_level, with_level["patient"].to_numpy()),
        "series_with_all_discs_found": float(discs.groupby("image_id")["found"].all().mean()),
    }


def _grading(discs: pd.DataFrame, thresholds: dict[str, float], decode: str, n_resamples: int) -> dict:
    """Metrics per finding; ``thresholds`` are the operating points, fixed before seeing this cohort."""
    found = discs[discs["found"]]
    metrics: dict = {"n_found_discs": len(found), "n_patients": int(found["patient"].nunique())}
    for finding, column in BINARY_SCORES.items():
        score = f"{finding}_score"
        if score not in found:
            continue
        values = found[score].to_numpy(dtype=float)
        usable = found[column].notna().to_numpy() & np.isfinite(values)
        if found.loc[usable, column].nunique() < 2:
            continue
        subset = found[usable]
        prior = level_prior(discs, column)[discs["found"].to_numpy()][usable]
        metrics[finding] = binary_task_metrics(
            subset[column].astype(int), values[usable], threshold=thresholds.get(finding, 0.5),
            groups=subset["patient"].to_numpy(), n_resamples=n_resamples,
        )  # fmt: skip
        auroc = prior_auroc(subset[column].astype(int), prior, subset["patient"].to_numpy(), n_resamples)
        if auroc is not None:
            metrics[finding]["level_prior"] = auroc
    if "canal_ap" in found and found["canal_ap"].notna().any():
        usable = found["canal_ap"].notna()
        subset = found[usable]
        metrics["stenosis_from_canal_ap"] = binary_task_metrics(
            subset["stenosis"].astype(int), -subset["canal_ap"].astype(float), threshold=-np.inf,
            groups=subset["patient"].to_numpy(), n_resamples=n_resamples,
        )  # fmt: skip
    graded = found[found["pfirrmann"].notna()]
    if len(graded):
        prior = level_prior(discs, "pfirrmann")[discs["found"].to_numpy()][
            found["pfirrmann"].notna().to_numpy()
        ]
        metrics.update(pfirrmann_metrics(graded, "pfirrmann", prior, decode, n_resamples))
    return metrics


def pfirrmann_metrics(
    graded: pd.DataFrame, truth: str, prior: np.ndarray, decode: str, n_resamples: int
) -> dict:
    """``pfirrmann``: κ and agreement of each series' grade (``pfirrmann_pred``) with column ``truth``,
    beside the level-only ``prior`` of the same discs; ``pfirrmann_fused``: per patient and level as a
    study fuses it (``pfirrmann_probabilities``)."""
    truth_grades, groups = graded[truth].astype(int), graded["patient"].to_numpy()
    metrics = {
        "pfirrmann": ordinal_metrics(
            truth_grades,
            graded["pfirrmann_pred"].astype(int),
            labels=[1, 2, 3, 4, 5],
            groups=groups,
            n_resamples=n_resamples,
        )  # fmt: skip
    }
    kappa = prior_kappa(truth_grades, prior, groups, n_resamples)
    if kappa is not None:
        metrics["pfirrmann"]["level_prior"] = kappa
    metrics["pfirrmann_fused"] = fused_pfirrmann_metrics(
        graded.rename(columns={truth: "reference", "pfirrmann_probabilities": "probabilities"}),
        decode,
        n_resamples,
    )
    return metrics


def _write_report(
    path: Path, metrics: dict, discs: pd.DataFrame, dataset: Lumbar515Dataset, findings: dict[str, Findings]
) -> Path:
    found = discs[discs["found"]]
    figures = {}
    rocs = {
        finding: (
            found.loc[found[column].notna(), column].astype(int),
            found.loc[found[column].notna(), f"{finding}_score"],
        )
        for finding, column in BINARY_SCORES.items()
        if f"{finding}_score" in found
        and found[column].notna().any()
        and found.loc[found[column].notna(), column].nunique() == 2
    }
    if rocs:
        figures["ROC curves per finding"] = plot_binary_rocs(rocs)
    graded = found[found["pfirrmann"].notna()]
    if len(graded):
        confusion = pd.crosstab(
            graded["pfirrmann"].astype(int), graded["pfirrmann_pred"].astype(int)
        ).reindex(index=range(1, 6), columns=range(1, 6), fill_value=0)
        figures["Pfirrmann grade: reference (rows) vs predicted (columns)"] = plot_confusion_matrix(
            confusion.to_numpy(), [str(g) for g in range(1, 6)]
        )
    misses = []
    per_series = discs.groupby("image_id")["found"].agg(["sum", "count"])
    per_series = per_series[per_series["sum"] < per_series["count"]]
    for image_id, counts in per_series.sort_values("sum").head(N_MISSES_SHOWN).iterrows():
        buffer = io.BytesIO()
        pixels = read_sagittal(dataset.image_path(image_id)).pixels
        render_overlay(pixels, findings[image_id].discs, scale=1).save(buffer, format="PNG")
        misses.append(
            (
                f"{image_id}: {int(counts['sum'])}/{int(counts['count'])} reference discs found",
                buffer.getvalue(),
            )
        )
    html = load_template("cohort_evaluation.html.j2").render(
        metrics=metrics,
        findings=[name for name in (*BINARY_SCORES, "stenosis_from_canal_ap") if name in metrics["grading"]],
        figures=[(caption, png_base64(png)) for caption, png in figures.items()],
        misses=[(caption, png_base64(png)) for caption, png in misses],
    )
    atomic_write_text(path, html)
    return path
