"""``spinedx train configs/spider_discs.yaml``: the disc localiser and the disc grader, each
cross-validated by patient, then trained on all data, and (when the recipe has one) the input
check; all registered as bundled weights with ``--bundle``.

With ``canal_fusion`` the grader's herniation also takes the logit of a canal stenosis model
(:func:`fit_canal_fusion`): that model crops the posterior disc margin and canal, where a herniation
shows, at a higher resolution than the grader's whole-disc view.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.errors import InputError
from spinedx.evaluation.grading import binary_task_metrics, youden_threshold
from spinedx.io.atomic import atomic_write_text
from spinedx.io.images import read_image
from spinedx.models.calibration import LogitStack
from spinedx.models.model_file import read_model_file, save_model_file
from spinedx.models.registry import bundle_model
from spinedx.tasks.canal_stenosis.model import CanalStenosis
from spinedx.tasks.disc_grading.config import GraderConfig
from spinedx.tasks.disc_grading.model import FORMAT as GRADER_FORMAT
from spinedx.tasks.disc_grading.model import DiscGrader
from spinedx.tasks.disc_grading.train import (
    OOF_PREDICTIONS,
    cross_validate_grader,
    load_grading_data,
    train_grader,
)
from spinedx.tasks.disc_localization.model import DiscLocalizer
from spinedx.tasks.disc_localization.train import cross_validate_localizer, train_localizer
from spinedx.tasks.input_check.model import InputCheck
from spinedx.tasks.input_check.train import train_input_check
from spinedx.tasks.mri_discs.config import MriDiscsRecipe

log = logging.getLogger(__name__)

FUSED_FINDINGS: tuple[str, ...] = ("herniation",)
"""Grader findings that take the canal model's logit. Chosen on the development patients' out-of-fold
predictions: stacking raised SPIDER herniation by 0.06 AUROC, bulging and narrowing by 0.01 each."""
CANAL_FUSION_METRICS = "canal_fusion.json"


def train_mri_discs(
    recipe: MriDiscsRecipe, run_dir: Path, *, register_into: Path | None = None
) -> dict[str, Path]:
    """Cross-validate and train both models into ``run_dir``; optionally register them as bundled weights."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # `spinedx evaluate RUN_DIR` reads the task and the data from it.
    atomic_write_text(run_dir / "recipe.json", json.dumps(recipe.model_dump(mode="json"), indent=2))
    cross_validate_localizer(recipe.localizer, run_dir / "localizer_cv", train_final=False)
    train_localizer(recipe.localizer, run_dir / "localizer")
    localizer_path = run_dir / "localizer" / "disc_localizer.pt"
    # The grader learns from the boxes of the localiser it will be bundled with.
    grader_config = recipe.grader.model_copy(update={"localizer": localizer_path})
    cross_validate_grader(grader_config, run_dir / "grader_cv")
    grader_path = train_grader(
        grader_config, run_dir / "grader" / "disc_grader.pt", cv_dir=run_dir / "grader_cv"
    )
    if recipe.canal_fusion is not None:
        canal = (
            CanalStenosis.bundled()
            if recipe.canal_fusion == "bundled"
            else CanalStenosis.load(recipe.canal_fusion)
        )
        fit_canal_fusion(grader_config, grader_path, run_dir / "grader_cv", canal)
    trained = {"disc_localizer": localizer_path, "disc_grader": grader_path}
    if recipe.input_check is not None:
        trained["input_check"] = train_input_check(recipe.input_check, run_dir / "input_check")
    if register_into is not None:
        for name, path in trained.items():
            bundle_model(name, path, recipe.version, Path(register_into), _COMPILE[name])
    return trained


_COMPILE = {
    "disc_localizer": lambda path: DiscLocalizer.load(path).compile(path),
    "disc_grader": lambda path: DiscGrader.load(path).compile(path),
    "input_check": lambda path: InputCheck.load(path).compile(path),
}
"""How each model file is compiled to its traced program when it is bundled."""


def fit_canal_fusion(
    config: GraderConfig, grader_path: Path, cv_dir: Path, canal: CanalStenosis, *, n_resamples: int = 1000
) -> dict:
    """Fit the grader's canal fusion on the out-of-fold predictions of its CV in ``cv_dir`` and write
    it into the grader file at ``grader_path``; its cross-fitted metrics go to ``canal_fusion.json``.

    Per fused finding: a :class:`~spinedx.models.calibration.LogitStack` over (grader logit, canal
    logit). The canal model must not have trained on the discs the fusion is fitted on (the bundled one
    trains on lumbar515, which labels no herniation): its logits are then out of sample like the
    grader's. The metrics fit the stack on the other folds of each fold (cross-fitting) and show the
    grader alone, the canal model alone and the level-only prior on the same discs.
    """
    oof_path = Path(cv_dir) / OOF_PREDICTIONS
    if not oof_path.is_file():
        raise InputError(f"{oof_path}: no out-of-fold predictions; run the grader CV first")
    oof = pd.read_csv(oof_path, dtype={"image_id": str, "patient": str})
    table = load_grading_data(config, cache_dir=Path(cv_dir), with_crops=False).table
    same_discs = len(table) == len(oof) and (
        (table["image_id"].astype(str).to_numpy() == oof["image_id"].to_numpy()).all()
        and (table["ivd_label"].to_numpy() == oof["ivd_label"].to_numpy()).all()
    )
    if not same_discs:
        raise InputError(f"{oof_path}: its discs are not the grader config's; rerun the grader CV")
    labelled = oof[list(FUSED_FINDINGS)].notna().any(axis=1).to_numpy()
    canal_logits = np.full(len(oof), np.nan)
    for image_path, rows in table[labelled].groupby("image_path", sort=False):
        pixels = read_image(image_path).pixels
        boxes = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy()
        canal_logits[rows.index] = canal.logits(pixels, boxes, rows["ivd_label"].tolist())
    fusion: dict = {"canal_sha256": canal.sha256, "findings": {}}
    report: dict = {"canal_sha256": canal.sha256, "oof_predictions": str(oof_path), "findings": {}}
    for name in FUSED_FINDINGS:
        usable = oof[name].notna().to_numpy()
        y = oof.loc[usable, name].to_numpy().astype(int)
        features = np.column_stack([oof.loc[usable, f"{name}_logit"], canal_logits[usable]])
        folds = oof.loc[usable, "fold"].to_numpy()
        fused, cuts = np.zeros(len(y)), np.zeros(len(y))
        for fold in np.unique(folds):
            held_out = folds == fold
            stack = LogitStack.fit(features[~held_out], y[~held_out])
            fused[held_out] = stack.apply(features[held_out])
            cuts[held_out] = youden_threshold(y[~held_out], stack.apply(features[~held_out]))
        stack = LogitStack.fit(features, y)
        fusion["findings"][name] = stack.as_dict() | {"threshold": youden_threshold(y, fused)}
        groups = oof.loc[usable, "patient"].to_numpy()
        scores = {
            "fused": fused,
            "grader": oof.loc[usable, f"{name}_prob"].to_numpy(),
            "canal": canal.calibrated(features[:, 1]),
            "level_prior": oof.loc[usable, f"{name}_baseline"].to_numpy(),
        }
        metrics = {
            source: binary_task_metrics(y, values, threshold=cuts, groups=groups, n_resamples=n_resamples)
            for source, values in scores.items()
        }
        # Sensitivity and specificity at an operating point belong to the fused score alone: the
        # others are compared threshold-free (AUROC, AP, sensitivity at specificity 0.88).
        for source in ("grader", "canal", "level_prior"):
            for key in ("sensitivity", "specificity", "threshold"):
                metrics[source].pop(key)
        report["findings"][name] = {
            "n": int(len(y)),
            "n_patients": int(len(set(groups))),
            "cohorts": sorted(oof.loc[usable, "cohort"].unique().tolist()),
            **metrics,
        }
        log.info(
            "canal fusion, %s out of fold: AUROC fused %.3f, grader %.3f, canal %.3f, level prior %.3f",
            name,
            *(report["findings"][name][source]["auroc"]["estimate"] for source in scores),
        )
    state = read_model_file(Path(grader_path), GRADER_FORMAT, "a disc grader")
    state["canal_fusion"] = fusion
    save_model_file(Path(grader_path), state)
    atomic_write_text(Path(cv_dir) / CANAL_FUSION_METRICS, json.dumps(report, indent=2))
    return report
