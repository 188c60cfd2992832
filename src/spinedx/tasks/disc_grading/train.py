"""Train and cross-validate the per-disc MRI grader (:mod:`spinedx.tasks.disc_grading.network`).

:func:`cross_validate_grader` runs a patient-grouped K-fold CV (t1/t2/t2_SPACE of one patient
always in one fold; folds stratified by herniation, the rarest graded finding) on the boxed discs
of a spider-sagittal folder and writes to ``out_dir``:

``cv_metrics.json``
    model and level-only baseline side by side (AUROC, AP, sensitivity/specificity at the
    operating point and at specificity 0.88, Pfirrmann kappa/balanced accuracy, Modic accuracy,
    95 % patient-bootstrap CIs), ECE before/after calibration, time per fold, and the calibrators
    and operating points fitted on *all* out-of-fold predictions (used by :func:`train_grader`).
``oof_predictions.csv``
    one row per disc: identifiers, fold, grades, raw logits, calibrated and baseline probabilities.
``fold_k/``
    the layout of :mod:`spinedx.training.cross_validation`: per-epoch checkpoints (``last.pt``,
    written atomically) so a killed run resumes where it stopped, ``predictions.npz`` (held-out
    logits) and ``fold.json`` once the fold is done, and ``disc_grader.pt``, the fold's deployable
    grader with its cross-fitted calibration (for end-to-end out-of-fold evaluation).

Honesty rules: the test fold is never used for training, early stopping, calibration or
thresholds. Calibrators for fold k are fitted on the out-of-fold predictions of the *other*
folds (cross-fitting) and the operating point (Youden) is chosen on them too. The level-only
baseline uses the grade prevalence per level in the training folds.

``GraderConfig.localizer_boxes`` adds the series without reference boxes, boxed by the bundled disc
localiser (which never sees grades) and graded from gradings.csv by (patient, ivd_label); the
detections are cached in ``localizer_boxes.csv`` in ``out_dir``. Those discs only train: the
headline metrics stay on the reference-boxed discs (whose folds are the same as without the
option), and the same metrics on all discs go under ``all_discs``.

:func:`train_grader` trains the final model on all boxed discs with the same recipe and saves it
with the calibrators of the CV run; :class:`spinedx.tasks.disc_grading.model.DiscGrader` loads it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from spinedx.data.folds import patient_folds as assign_patient_folds
from spinedx.data.folds import report_patients
from spinedx.errors import InputError
from spinedx.evaluation.calibration import expected_calibration_error
from spinedx.evaluation.grading import (
    binary_task_metrics,
    multiclass_metrics,
    ordinal_metrics,
    youden_threshold,
)
from spinedx.io.atomic import atomic_path, atomic_write_text
from spinedx.io.images import read_image
from spinedx.io.lumbar515 import centres_inside, read_lumbar515
from spinedx.io.spider import level_name, read_spider
from spinedx.models.calibration import PlattScaler, TemperatureScaler
from spinedx.models.model_file import save_model_file
from spinedx.models.precision import half_precision
from spinedx.models.registry import resolve_weights, sha256_of
from spinedx.tasks.disc_grading.config import GraderConfig
from spinedx.tasks.disc_grading.model import (
    FORMAT,
    NETWORK_SETTINGS,
    DiscGrader,
    apply_calibration,
    init_path,
    pfirrmann_probs_np,
    predict_logits,
)
from spinedx.tasks.disc_grading.network import (
    BINARY_TASKS,
    MODIC_GRADES,
    PFIRRMANN_GRADES,
    PFIRRMANN_WIDTH,
    DiscGraderNet,
    disc_crops,
    jitter_intensity,
    level_index,
    pfirrmann_grade,
    view_crops,
)
from spinedx.training.cross_validation import Fold, cross_validate, natural_key
from spinedx.training.loop import EpochLoop, StepResult, TrainingHooks, trained_weights

logger = logging.getLogger(__name__)

CV_METRICS = "cv_metrics.json"
OOF_PREDICTIONS = "oof_predictions.csv"
FOLD_PREDICTIONS = "predictions.npz"
GRADER_NAME = "disc_grader.pt"


# --------------------------------------------------------------------------- data


REFERENCE = "reference"
LOCALIZER = "localizer"
LOCALIZER_CACHE = "localizer_boxes.csv"
LUMBAR515 = "lumbar515"
"""Cohort name of lumbar515 discs; their ``patient`` and ``image_id`` carry it as a prefix
(``lumbar515/<id>``), so they never collide with SPIDER's."""
LUMBAR515_GRADES = ("bulging", "spondylolisthesis", "pfirrmann")
"""What lumbar515 labels of the grader's outputs; the rest of its grades are NaN (masked)."""
_DETECTION_COLUMNS = ["image_id", "ivd_label", "level", "xmin", "ymin", "xmax", "ymax", "score"]


@dataclass
class GradingData:
    table: pd.DataFrame
    """One row per disc (discs.csv columns + ``box_source``: "reference" or "localizer", + ``cohort``
    and ``image_path``),
    index 0..N-1; a grade a disc's cohort does not label is NaN."""
    crops: np.ndarray
    """(N, P, P) float32 padded, normalised crops."""


def load_grading_data(
    config: GraderConfig, cache_dir: Path | None = None, *, with_crops: bool = True
) -> GradingData:
    """Read the boxed discs of ``config.data_root`` (and ``config.lumbar515_root``) and cut their crops.

    With ``config.localizer_boxes`` the discs the localiser (``config.localizer``, else the bundled
    one) finds on every series without
    reference boxes are added (``box_source`` "localizer"), graded from gradings.csv by
    (patient, ivd_label); discs without a grading row are left out. The localiser never sees
    grades. Its detections are cached in ``cache_dir/localizer_boxes.csv`` (per localiser sha256).
    lumbar515 discs are all localiser-boxed (see :func:`_lumbar515_rows`). ``config.report_split``
    leaves its report patients out. Without ``with_crops`` the table alone is read (``crops`` is empty).
    """
    dataset = read_spider(config.data_root)
    table = dataset.discs.reset_index(drop=True)
    if table.empty:
        raise InputError(f"{config.data_root / 'discs.csv'}: no boxed discs to grade")
    table["box_source"] = REFERENCE
    if config.localizer_boxes:
        extra = _localizer_rows(dataset, table, cache_dir, config.localizer)
        if not extra.empty:
            table = pd.concat([table, extra[table.columns]], ignore_index=True)
    table["cohort"] = "spider"
    image_paths = {str(image_id): dataset.image_path(image_id) for image_id in table["image_id"]}
    if config.lumbar515_root is not None:
        extra, extra_paths = _lumbar515_rows(
            config.lumbar515_root, table.columns, cache_dir, config.localizer
        )
        table = pd.concat([table, extra], ignore_index=True)
        image_paths.update(extra_paths)
    if config.report_split is not None:
        table = table[~_report_patients(table, config.report_split)].reset_index(drop=True)
    if config.max_patients is not None:
        keep = sorted(table["patient"].unique(), key=natural_key)[: config.max_patients]
        table = table[table["patient"].isin(keep)].reset_index(drop=True)
    table["image_path"] = [str(image_paths[str(image_id)]) for image_id in table["image_id"]]
    if not with_crops:
        return GradingData(table, np.zeros((0, 0, 0), dtype=np.float32))
    parts: list[np.ndarray] = []
    order: list[np.ndarray] = []
    for image_path, rows in table.groupby("image_path", sort=False):
        pixels = read_image(image_path).pixels
        boxes = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy()
        parts.append(disc_crops(pixels, boxes, config.crop_size, config.margin, config.pad))
        order.append(rows.index.to_numpy())
    crops = np.empty((len(table),) + parts[0].shape[1:], dtype=np.float32)
    for index, part in zip(order, parts, strict=True):
        crops[index] = part
    return GradingData(table, crops)


def _load_localizer(path: Path | None):
    """The localiser file ``path`` (else the bundled one) and its sha256."""
    from spinedx.tasks.disc_localization.model import DiscLocalizer

    if path is None:
        entry = resolve_weights("disc_localizer")
        return DiscLocalizer.load(entry.path), entry.sha256
    if not Path(path).is_file():
        raise InputError(f"{path}: grader.localizer: no such localiser file")
    return DiscLocalizer.load(Path(path)), sha256_of(Path(path))


def _report_patients(table: pd.DataFrame, split_path: Path) -> np.ndarray:
    """Rows whose patient is a report patient of ``split_path`` (:func:`spinedx.data.folds.report_patients`)."""
    report = report_patients(split_path)
    keys = [
        patient if cohort == LUMBAR515 else f"{cohort}/{patient}"
        for cohort, patient in zip(table["cohort"], table["patient"].astype(str), strict=True)
    ]
    return np.array([key in report for key in keys], dtype=bool)


def _lumbar515_rows(
    root: Path, columns, cache_dir: Path | None, localizer: Path | None
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The discs the localiser finds on every lumbar515 series, graded from the one reference
    disc box whose centre they hold (detections holding none or two are left out), as analysis would
    box them; and each (prefixed) image id's file."""
    dataset = read_lumbar515(root)
    image_ids = dataset.series["image_id"].astype(str).tolist()
    cache = Path(cache_dir) / f"{LUMBAR515}_{LOCALIZER_CACHE}" if cache_dir is not None else None
    detections = _detections(image_ids, dataset.image_path, cache, localizer)
    reference = dataset.discs.astype({"image_id": str})
    by_image = {image_id: rows for image_id, rows in reference.groupby("image_id")}
    rows = []
    for detection in detections.itertuples():
        discs = by_image.get(detection.image_id)
        if discs is None:
            continue
        inside = centres_inside(discs, (detection.xmin, detection.ymin, detection.xmax, detection.ymax))
        if inside.sum() != 1:  # none, or two reference discs in one box: no clean label
            continue
        disc = discs.iloc[int(np.flatnonzero(inside)[0])]
        rows.append(
            {"image_id": f"{LUMBAR515}/{detection.image_id}", "patient": f"{LUMBAR515}/{disc['patient']}"}
            | {"sequence": disc["sequence"], "ivd_label": int(detection.ivd_label)}
            | {"level": level_name(int(detection.ivd_label))}
            | {name: float(getattr(detection, name)) for name in ("xmin", "ymin", "xmax", "ymax")}
            | {name: np.nan if pd.isna(disc[name]) else float(disc[name]) for name in LUMBAR515_GRADES}
            | {"box_source": LOCALIZER, "cohort": LUMBAR515}
        )
    table = pd.DataFrame(rows).reindex(columns=list(columns))
    paths = {f"{LUMBAR515}/{image_id}": dataset.image_path(image_id) for image_id in image_ids}
    return table, paths


def _detections(
    image_ids: list[str], image_path, cache: Path | None, localizer_path: Path | None
) -> pd.DataFrame:
    """Localiser detections (:data:`_DETECTION_COLUMNS`) on each image, cached in ``cache`` per
    localiser sha256, so a rerun only localises new series; no rows with ``ivd_label`` < 1."""
    localizer, sha = _load_localizer(localizer_path)
    detections = pd.DataFrame(columns=[*_DETECTION_COLUMNS, "localizer_sha256"])
    if cache is not None and cache.is_file():
        detections = pd.read_csv(cache, dtype={"image_id": str, "localizer_sha256": str})
        detections = detections[detections["localizer_sha256"] == sha]
    done = set(detections["image_id"].astype(str))
    todo = [i for i in image_ids if i not in done]
    if todo:
        rows = []
        began = time.perf_counter()
        for image_id in tqdm(todo, desc="localise", unit="series", disable=None):
            found, _ = localizer.detect(read_image(image_path(image_id)).pixels)
            if not found:  # remember the series was looked at
                rows.append({"image_id": image_id, "ivd_label": -1, "level": "", "score": 0.0})
            for d in found:
                xmin, ymin, xmax, ymax = d.box
                rows.append(
                    dict(image_id=image_id, ivd_label=d.ivd_label, level=d.level, xmin=xmin, ymin=ymin)
                    | dict(xmax=xmax, ymax=ymax, score=d.score)
                )
        logger.info("localiser: %d series in %.0fs", len(todo), time.perf_counter() - began)
        new = pd.DataFrame(rows, columns=_DETECTION_COLUMNS).assign(localizer_sha256=sha)
        detections = pd.concat([detections, new], ignore_index=True) if len(detections) else new
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                detections.to_csv(tmp, index=False, float_format="%.3f")
    detections = detections[
        detections["image_id"].astype(str).isin(set(image_ids)) & (detections["ivd_label"].astype(int) > 0)
    ].copy()
    detections["image_id"] = detections["image_id"].astype(str)
    detections["ivd_label"] = detections["ivd_label"].astype(int)
    # One box per (series, level): the strongest, should the localiser ever repeat a label.
    return detections.sort_values("score", ascending=False).drop_duplicates(["image_id", "ivd_label"])


def _localizer_rows(
    dataset, reference: pd.DataFrame, cache_dir: Path | None, localizer: Path | None
) -> pd.DataFrame:
    """Graded localiser discs on the series of ``dataset`` that have no reference boxes."""
    boxed = set(reference["image_id"].astype(str))
    graded = set(dataset.gradings["patient"].astype(str))
    series = dataset.series[
        ~dataset.series["image_id"].astype(str).isin(boxed)
        & dataset.series["patient"].astype(str).isin(graded)
    ]
    if series.empty:
        return pd.DataFrame(columns=reference.columns)
    cache = Path(cache_dir) / LOCALIZER_CACHE if cache_dir is not None else None
    detections = _detections(series["image_id"].astype(str).tolist(), dataset.image_path, cache, localizer)
    meta = series[["image_id", "patient", "sequence"]].astype({"image_id": str})
    gradings = dataset.gradings.drop(columns=["level"]).astype({"patient": str})
    rows = detections.drop(columns=["level"]).merge(meta.astype({"patient": str}), on="image_id")
    rows = rows.merge(gradings, on=["patient", "ivd_label"], how="inner")
    rows["level"] = [level_name(int(label)) for label in rows["ivd_label"]]
    rows["box_source"] = LOCALIZER
    for column in reference.columns:
        if column not in rows.columns:
            rows[column] = np.nan
    rows = rows.astype({c: reference[c].dtype for c in reference.columns if c in ("patient", "image_id")})
    order = rows["image_id"].map(natural_key).tolist()
    rows = rows.iloc[sorted(range(len(rows)), key=lambda i: (order[i], -int(rows["ivd_label"].iloc[i])))]
    return rows[reference.columns].reset_index(drop=True)


def _reference_mask(table: pd.DataFrame) -> np.ndarray:
    if "box_source" not in table.columns:
        return np.ones(len(table), dtype=bool)
    return (table["box_source"] == REFERENCE).to_numpy()


def patient_folds(table: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row: patient-grouped, stratified by herniation (every series of a patient together).

    Patients with reference boxes are split as if the table held only the reference-boxed discs
    (so a run with localiser boxes tests the reference discs in the same folds as one without);
    the patients that only have localiser boxes are then split on their own, and localiser rows of
    a patient with reference boxes follow that patient's fold.
    """
    reference = _reference_mask(table)
    folds = np.full(len(table), -1, dtype=np.int64)
    folds[reference] = _grouped_folds(table[reference], n_folds, seed)
    if reference.all():
        return folds
    fold_of = dict(zip(table["patient"].astype(str)[reference], folds[reference], strict=True))
    patients = table["patient"].astype(str)
    known = patients.isin(fold_of).to_numpy()
    folds[~reference & known] = patients[~reference & known].map(fold_of).to_numpy()
    rest = ~reference & ~known
    if rest.any():
        others = table[rest]
        if others["patient"].nunique() >= n_folds:
            folds[rest] = _grouped_folds(others, n_folds, seed)
        else:
            names = sorted(others["patient"].astype(str).unique(), key=natural_key)
            rank = {name: i % n_folds for i, name in enumerate(names)}
            folds[rest] = others["patient"].astype(str).map(rank).to_numpy()
    return folds


def _grouped_folds(table: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Stratified by cohort and herniation (the rarest finding; unlabelled where the cohort lacks it)."""
    herniation = table["herniation"].fillna(-1).astype(int).astype(str)
    strata = _cohorts(table) + ":" + herniation
    return assign_patient_folds(table["patient"], n_folds, seed, strata=strata, what="grader CV")


def _cohorts(table: pd.DataFrame) -> pd.Series:
    return table["cohort"] if "cohort" in table.columns else pd.Series("spider", index=table.index)


def _targets(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Float targets, NaN where the disc's cohort does not label the grade."""
    return {
        "binary": np.array(table[list(BINARY_TASKS)].to_numpy(np.float32)),
        "pfirrmann": np.array(table["pfirrmann"].to_numpy(np.float32)),
        "modic": np.array(table["modic"].to_numpy(np.float32)),
        "level": np.array(level_index(table["ivd_label"])),
    }


# --------------------------------------------------------------------------- training


def build_model(config: GraderConfig, *, pretrained: str | None = None) -> DiscGraderNet:
    start = None if config.init == "none" else _initial_weights(config.init)
    model = DiscGraderNet(
        config.backbone,
        pretrained="none" if start is not None else config.pretrained if pretrained is None else pretrained,
        hidden=config.hidden,
        dropout=config.dropout,
        descriptors=config.descriptors,
        margin=config.margin,
        level_input=config.level_input,
        pfirrmann_head=config.pfirrmann_head,
    )
    if start is not None:
        try:
            model.load_state_dict(start)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise InputError(
                f"grader.init: '{config.init}' does not fit grader.backbone/hidden/descriptors ({first})"
            ) from None
    model.set_frozen_blocks(config.freeze_blocks)
    return model


def _initial_weights(init: str) -> dict[str, torch.Tensor]:
    """The network weights of the grader named by ``grader.init`` ('bundled' or a grader file)."""
    return DiscGrader.load(init_path(init)).eager_network().state_dict()


def _pos_weight(binary: np.ndarray, power: float) -> torch.Tensor:
    positives = np.nansum(binary, 0)
    negatives = (~np.isnan(binary)).sum(0) - positives
    ratio = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return torch.tensor(np.maximum(ratio, 1e-3) ** power, dtype=torch.float32)


def grader_loss(
    outputs: dict[str, torch.Tensor],
    binary: torch.Tensor,
    pfirrmann: torch.Tensor,
    modic: torch.Tensor,
    *,
    pos_weight: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 0.5),
    pfirrmann_head: str = "coral",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of: binary BCE (pos_weight), Pfirrmann (CORAL BCE on ``grade > k``, or 5-class
    cross-entropy), Modic cross-entropy; each over the labelled targets only (NaN = not labelled)."""
    labelled = ~torch.isnan(binary)
    each = F.binary_cross_entropy_with_logits(
        outputs["binary"], torch.nan_to_num(binary), pos_weight=pos_weight, reduction="none"
    )
    bce = (each * labelled).sum() / labelled.sum().clamp_min(1)
    graded = ~torch.isnan(pfirrmann)
    grade = pfirrmann[graded].long()
    if pfirrmann_head == "softmax":
        pfirrmann_loss = _masked_mean(
            F.cross_entropy, outputs["pfirrmann"][graded], grade - PFIRRMANN_GRADES[0]
        )
    else:
        levels = torch.arange(PFIRRMANN_GRADES[0], PFIRRMANN_GRADES[-1], device=pfirrmann.device)
        above = (grade[:, None] > levels[None, :]).float()
        pfirrmann_loss = _masked_mean(F.binary_cross_entropy_with_logits, outputs["pfirrmann"][graded], above)
    typed = ~torch.isnan(modic)
    ce = _masked_mean(F.cross_entropy, outputs["modic"][typed], modic[typed].long() - MODIC_GRADES[0])
    total = weights[0] * bce + weights[1] * pfirrmann_loss + weights[2] * ce
    return total, {"binary": bce.item(), "pfirrmann": pfirrmann_loss.item(), "modic": ce.item()}


def _masked_mean(loss, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``loss(logits, target)`` (mean), or 0 for a batch without a labelled row."""
    return loss(logits, target) if len(logits) else logits.sum() * 0.0


def _optimizer(model: DiscGraderNet, config: GraderConfig) -> torch.optim.Optimizer:
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    own = {id(p) for p in model.backbone.parameters()}
    heads = [p for p in model.parameters() if id(p) not in own]
    groups = [{"params": heads, "lr": config.lr}]
    if backbone and config.backbone_lr > 0:
        groups.append({"params": backbone, "lr": config.backbone_lr})
    else:
        for parameter in backbone:
            parameter.requires_grad = False
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def _schedule(config: GraderConfig, steps_per_epoch: int):
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = config.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    return factor


class _GraderHooks(TrainingHooks):
    """One grader epoch: a permutation of the discs, augmented views, the multi-task loss."""

    def __init__(self, model: DiscGraderNet, config: GraderConfig, crops: np.ndarray, table: pd.DataFrame,
                 generator: torch.Generator, log_prefix: str) -> None:  # fmt: skip
        self.model, self.config, self.generator, self.log_prefix = model, config, generator, log_prefix
        targets = _targets(table)
        self.pos_weight = _pos_weight(targets["binary"], config.pos_weight_power)
        self.weights = (config.binary_weight, config.pfirrmann_weight, config.modic_weight)
        self.crops = torch.from_numpy(np.ascontiguousarray(crops))
        self.binary = torch.from_numpy(targets["binary"])
        self.pfirrmann = torch.from_numpy(targets["pfirrmann"])
        self.modic = torch.from_numpy(targets["modic"])
        self.level = torch.from_numpy(targets["level"])
        self.steps_per_epoch = max(len(table) // config.batch_size, 1)

    def on_resume(self, epoch: int) -> None:
        logger.info("%sresuming after epoch %d", self.log_prefix, epoch)

    def on_epoch_start(self, epoch: int) -> list[torch.Tensor]:
        order = torch.randperm(len(self.crops), generator=self.generator)
        size = self.config.batch_size
        return [order[step * size : (step + 1) * size] for step in range(self.steps_per_epoch)]

    def train_step(self, index: torch.Tensor) -> StepResult:
        aug = self.config.augment
        images = view_crops(self.crops[index], self.config.crop_size, generator=self.generator,
                            rotation_deg=aug.rotation_deg, scale=aug.scale, translate=aug.translate)  # fmt: skip
        images = jitter_intensity(images, generator=self.generator, gamma=aug.gamma, contrast=aug.contrast,
                                  brightness=aug.brightness, noise=aug.noise)  # fmt: skip
        outputs = self.model(images, self.level[index])
        loss, parts = grader_loss(outputs, self.binary[index], self.pfirrmann[index], self.modic[index],
                                  pos_weight=self.pos_weight, weights=self.weights,
                                  pfirrmann_head=self.config.pfirrmann_head)  # fmt: skip
        return StepResult(loss, len(index), parts)


def fit_grader(
    config: GraderConfig,
    crops: np.ndarray,
    table: pd.DataFrame,
    work_dir: Path,
    *,
    seed: int,
    log_prefix: str = "",
) -> tuple[DiscGraderNet, dict]:
    """Train on ``crops``/``table``; checkpoints ``work_dir/last.pt`` each epoch and resumes from it
    (:class:`~spinedx.training.loop.EpochLoop`: the same recipe and discs, else a one-line error)."""
    torch.manual_seed(seed)
    model = build_model(config)
    optimizer = _optimizer(model, config)
    generator = torch.Generator().manual_seed(seed)
    hooks = _GraderHooks(model, config, crops, table, generator, log_prefix)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, hooks.steps_per_epoch))
    discs = [
        f"{image_id}:{label}" for image_id, label in zip(table["image_id"], table["ivd_label"], strict=True)
    ]
    loop = EpochLoop(model, optimizer, config.epochs, Path(work_dir),
                     identity={"recipe": config.fingerprint(), "seed": seed, "discs": discs},
                     scheduler=scheduler, generator=generator, label=log_prefix, log=logger.info)  # fmt: skip
    result = loop.run(hooks)
    return model, {"history": result.history, "resumed_from_epoch": result.resumed_from_epoch}


# --------------------------------------------------------------------------- calibration


def fit_calibration(logits: dict, table: pd.DataFrame, pfirrmann_head: str = "coral") -> dict:
    """Platt scaling per binary task, temperature for Pfirrmann and Modic, Youden operating points;
    each fitted on the discs that label it (identity and 0.5 for a grade no disc labels)."""
    targets = _targets(table)
    binary = {}
    thresholds = {}
    for j, task in enumerate(BINARY_TASKS):
        labelled = ~np.isnan(targets["binary"][:, j])
        y = targets["binary"][labelled, j].astype(np.int64)
        scaler = PlattScaler.fit(logits["binary"][labelled, j], y)
        binary[task] = scaler.as_dict()
        thresholds[task] = youden_threshold(y, scaler.apply(logits["binary"][labelled, j]))
    graded = ~np.isnan(targets["pfirrmann"])
    pfirrmann = TemperatureScaler.fit(
        logits["pfirrmann"][graded],
        targets["pfirrmann"][graded].astype(np.int64) - PFIRRMANN_GRADES[0],
        lambda values: pfirrmann_probs_np(values, pfirrmann_head),
    )
    typed = ~np.isnan(targets["modic"])
    modic = TemperatureScaler.fit(
        logits["modic"][typed], targets["modic"][typed].astype(np.int64) - MODIC_GRADES[0]
    )
    return {
        "binary": binary,
        "pfirrmann": pfirrmann.as_dict(),
        "modic": modic.as_dict(),
        "thresholds": thresholds,
    }


# --------------------------------------------------------------------------- level-only baseline


def level_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Grade prevalence per (cohort, level) in ``train``: a baseline that knows the level and each
    hospital's prevalences but not the image (the cohort's overall prevalence for a level ``train``
    lacks, else the overall one)."""
    train_levels = level_index(train["ivd_label"])
    test_levels = level_index(test["ivd_label"])
    train_cohorts = _cohorts(train).to_numpy()
    test_cohorts = _cohorts(test).to_numpy()

    def distribution(values: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
        labelled = ~np.isnan(values)

        def shares(rows: np.ndarray) -> np.ndarray | None:
            inside = values[rows & labelled]
            return np.array([(inside == c).mean() for c in classes]) if len(inside) else None

        overall = shares(np.ones(len(values), dtype=bool))
        uniform = np.full(len(classes), 1.0 / len(classes))
        out = np.empty((len(test), len(classes)))
        for i, (cohort, level) in enumerate(zip(test_cohorts, test_levels, strict=True)):
            same_cohort = train_cohorts == cohort
            for found in (
                shares(same_cohort & (train_levels == level)),
                shares(same_cohort),
                overall,
                uniform,
            ):
                if found is not None:
                    out[i] = found
                    break
        return out

    binary = (
        np.stack([distribution(train[task].to_numpy(np.float64), (0, 1))[:, 1] for task in BINARY_TASKS], 1)
        if BINARY_TASKS
        else np.zeros((len(test), 0))
    )
    return {
        "binary": binary,
        "pfirrmann": distribution(train["pfirrmann"].to_numpy(np.float64), PFIRRMANN_GRADES),
        "modic": distribution(train["modic"].to_numpy(np.float64), MODIC_GRADES),
    }


# --------------------------------------------------------------------------- metrics


def _metrics(
    probs: dict[str, np.ndarray],
    thresholds: np.ndarray,
    table: pd.DataFrame,
    config: GraderConfig,
    *,
    pfirrmann_pred: np.ndarray,
) -> dict:
    """Metrics of every grade the discs of ``table`` label (a binary grade needs both classes)."""
    groups = table["patient"].astype(str).to_numpy()
    targets = _targets(table)
    out: dict = {}
    for j, task in enumerate(BINARY_TASKS):
        labelled = ~np.isnan(targets["binary"][:, j])
        if len(np.unique(targets["binary"][labelled, j])) < 2:
            continue
        out[task] = binary_task_metrics(
            targets["binary"][labelled, j].astype(np.int64),
            probs["binary"][labelled, j],
            threshold=thresholds[labelled, j],
            groups=groups[labelled],
            n_resamples=config.bootstrap_resamples,
            seed=config.seed,
            specificity_target=config.specificity_target,
        )
    graded = ~np.isnan(targets["pfirrmann"])
    if graded.any():
        truth = targets["pfirrmann"][graded].astype(np.int64)
        out["pfirrmann"] = ordinal_metrics(
            truth,
            pfirrmann_pred[graded],
            labels=PFIRRMANN_GRADES,
            groups=groups[graded],
            n_resamples=config.bootstrap_resamples,
            seed=config.seed,
        )
        out["pfirrmann"]["ece"] = expected_calibration_error(
            probs["pfirrmann"][graded], truth - PFIRRMANN_GRADES[0]
        )
    typed = ~np.isnan(targets["modic"])
    if typed.any():
        truth = targets["modic"][typed].astype(np.int64)
        modic_pred = probs["modic"][typed].argmax(1) + MODIC_GRADES[0]
        out["modic"] = multiclass_metrics(
            truth, modic_pred, groups=groups[typed], n_resamples=config.bootstrap_resamples, seed=config.seed
        )
        out["modic"]["ece"] = expected_calibration_error(probs["modic"][typed], truth - MODIC_GRADES[0])
    return out


def _summary(metrics: dict) -> dict[str, float]:
    """Point estimates only, for a one-glance comparison (of the grades ``metrics`` holds)."""
    out = {}
    for task in BINARY_TASKS:
        if task in metrics:
            out[f"{task}_auroc"] = metrics[task]["auroc"]["estimate"]
            out[f"{task}_ap"] = metrics[task]["average_precision"]["estimate"]
    if "pfirrmann" in metrics:
        out["pfirrmann_kappa"] = metrics["pfirrmann"]["kappa_quadratic"]["estimate"]
        out["pfirrmann_balanced_accuracy"] = metrics["pfirrmann"]["balanced_accuracy"]["estimate"]
    if "modic" in metrics:
        out["modic_accuracy"] = metrics["modic"]["accuracy"]["estimate"]
    return out


# --------------------------------------------------------------------------- CV


def _set_threads(config: GraderConfig) -> None:
    if config.threads is not None:
        torch.set_num_threads(config.threads)


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def cross_validate_grader(config: GraderConfig, out_dir: Path) -> dict:
    """Patient-grouped K-fold CV of model and level-only baseline; returns what ``cv_metrics.json`` holds."""
    _set_threads(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_grading_data(config, cache_dir=out_dir)
    table = data.table
    folds = patient_folds(table, config.folds, config.seed)
    n = len(table)
    head = config.pfirrmann_head
    logits = {
        "binary": np.zeros((n, len(BINARY_TASKS))),
        "pfirrmann": np.zeros((n, PFIRRMANN_WIDTH[head])),
        "modic": np.zeros((n, len(MODIC_GRADES))),
    }
    discs = [
        f"{image_id}:{label}" for image_id, label in zip(table["image_id"], table["ivd_label"], strict=True)
    ]

    def train_fold(fold: Fold) -> dict:
        began = time.perf_counter()
        train = table.iloc[fold.train].reset_index(drop=True)
        model, fit = fit_grader(config, data.crops[fold.train], train, fold.dir,
                                seed=config.seed * 1000 + fold.index, log_prefix=f"fold {fold.index}: ")  # fmt: skip
        train_seconds = time.perf_counter() - began
        predicted = predict_logits(
            model,
            data.crops[fold.test],
            table["ivd_label"].iloc[fold.test],
            config.crop_size,
            pfirrmann_head=head,
        )
        _save_npz(fold.dir / FOLD_PREDICTIONS, **predicted)
        return {"train_seconds": train_seconds, "resumed_from_epoch": fit["resumed_from_epoch"],
                "history": fit["history"]}  # fmt: skip

    runs = cross_validate(folds, table["patient"], discs, out_dir, train_fold, n_folds=config.folds,
                          identity={"recipe": config.fingerprint()})  # fmt: skip
    fold_info = []
    for run in runs:
        cached = np.load(run.fold.dir / FOLD_PREDICTIONS)
        for key in logits:
            logits[key][run.fold.test] = cached[key]
        info = run.info
        fold_info.append({key: info[key] for key in ("fold", "n_train", "n_test", "train_seconds")})
        fold_info[-1]["n_test_patients"] = len(info["test_patients"])
        fold_info[-1]["seconds_per_epoch"] = float(np.mean([h["seconds"] for h in info["history"]]))

    # Cross-fitted calibration, thresholds and level baseline: fold k only sees the other folds.
    raw = apply_calibration(logits, None, head)
    calibrated = {key: np.zeros_like(value) for key, value in raw.items()}
    thresholds = np.zeros((n, len(BINARY_TASKS)))
    baseline = {key: np.zeros_like(value) for key, value in raw.items()}
    baseline_thresholds = np.zeros((n, len(BINARY_TASKS)))
    targets = _targets(table)
    for run in runs:
        test = folds == run.fold.index
        train = ~test
        calibration = fit_calibration({key: v[train] for key, v in logits.items()}, table[train], head)
        probs = apply_calibration({key: v[test] for key, v in logits.items()}, calibration, head)
        for key in calibrated:
            calibrated[key][test] = probs[key]
        thresholds[test] = [calibration["thresholds"][task] for task in BINARY_TASKS]
        _save_grader(run.fold.dir / GRADER_NAME, config, trained_weights(run.fold.dir), calibration,
                     {"fold": run.fold.index, "test_patients": run.info["test_patients"]})  # fmt: skip
        base_test = level_baseline(table[train], table[test])
        base_train = level_baseline(table[train], table[train])
        for key in baseline:
            baseline[key][test] = base_test[key]
        for j in range(len(BINARY_TASKS)):
            labelled = ~np.isnan(targets["binary"][train, j])
            y = targets["binary"][train, j][labelled].astype(np.int64)
            baseline_thresholds[test, j] = youden_threshold(y, base_train["binary"][labelled, j])

    # Headline metrics on the reference-boxed discs only (comparable with runs without localiser
    # boxes); with localiser boxes the same metrics on all discs go under "all_discs".
    decode = config.pfirrmann_decode

    def evaluate(rows: np.ndarray) -> dict:
        sub = table[rows].reset_index(drop=True)
        cal = {key: value[rows] for key, value in calibrated.items()}
        base = {key: value[rows] for key, value in baseline.items()}
        model_metrics = _metrics(
            cal, thresholds[rows], sub, config, pfirrmann_pred=pfirrmann_grade(cal["pfirrmann"], decode)
        )
        baseline_metrics = _metrics(
            base,
            baseline_thresholds[rows],
            sub,
            config,
            # The level's mean grade, rounded, as the end-to-end evaluations' prior (the most frequent
            # grade is the same at most levels of two pooled cohorts, which makes a straw man of kappa).
            pfirrmann_pred=pfirrmann_grade(base["pfirrmann"], "expected"),
        )
        ece = {}
        for j, task in enumerate(BINARY_TASKS):
            y = targets["binary"][rows, j]
            labelled = ~np.isnan(y)
            if labelled.any():
                ece[task] = {
                    "raw": expected_calibration_error(raw["binary"][rows, j][labelled], y[labelled]),
                    "calibrated": expected_calibration_error(cal["binary"][labelled, j], y[labelled]),
                }
        for task, offset in (("pfirrmann", PFIRRMANN_GRADES[0]), ("modic", MODIC_GRADES[0])):
            y = targets[task][rows]
            labelled = ~np.isnan(y)
            if labelled.any():
                y = y[labelled].astype(np.int64) - offset
                ece[task] = {
                    "raw": expected_calibration_error(raw[task][rows][labelled], y),
                    "calibrated": expected_calibration_error(cal[task][labelled], y),
                }
        graded = ~np.isnan(targets["pfirrmann"][rows])
        alternatives = {
            rule: float(
                ordinal_metrics(
                    targets["pfirrmann"][rows][graded].astype(np.int64),
                    pfirrmann_grade(cal["pfirrmann"][graded], rule),
                    labels=PFIRRMANN_GRADES,
                    n_resamples=0,
                )["kappa_quadratic"]["estimate"]
            )
            for rule in ("expected", "argmax")
            if graded.any()
        }
        return {
            "data": {
                "n_discs": int(rows.sum()),
                "n_series": int(sub["image_id"].nunique()),
                "n_patients": int(sub["patient"].nunique()),
            },
            "summary": {"model": _summary(model_metrics), "level_baseline": _summary(baseline_metrics)},
            "model": model_metrics,
            "level_baseline": baseline_metrics,
            "ece": ece,
            "pfirrmann_kappa_by_decode": alternatives,
        }

    reference = _reference_mask(table)
    headline = evaluate(reference)
    result = {
        "config": config.model_dump(mode="json"),
        "data": headline["data"],
        "folds": fold_info,
        **{key: value for key, value in headline.items() if key != "data"},
        "deploy_calibration": fit_calibration(logits, table, head),
    }
    if not reference.all():
        result["data"]["n_localizer_discs"] = int((~reference).sum())
        result["data"]["n_training_discs"] = n
        result["all_discs"] = evaluate(np.ones(n, dtype=bool))
    cohorts = _cohorts(table)
    if cohorts.nunique() > 1:  # every disc of each cohort, localiser-boxed ones included
        result["cohorts"] = {
            name: evaluate((cohorts == name).to_numpy()) for name in sorted(cohorts.unique())
        }
    atomic_write_text(out_dir / CV_METRICS, json.dumps(_finite(result), indent=2) + "\n")
    _write_oof(out_dir / OOF_PREDICTIONS, table, folds, logits, calibrated, baseline)
    return result


def _finite(value):
    """JSON-safe copy: NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_oof(path: Path, table: pd.DataFrame, folds, logits, calibrated, baseline) -> None:
    frame = table[
        [
            "image_id",
            "patient",
            "sequence",
            "ivd_label",
            "level",
            *BINARY_TASKS,
            "pfirrmann",
            "modic",
            "box_source",
        ]
    ].copy()
    frame.insert(1, "cohort", _cohorts(table))
    frame.insert(0, "fold", folds)
    for j, task in enumerate(BINARY_TASKS):
        frame[f"{task}_logit"] = logits["binary"][:, j]
        frame[f"{task}_prob"] = calibrated["binary"][:, j]
        frame[f"{task}_baseline"] = baseline["binary"][:, j]
    coral = logits["pfirrmann"].shape[1] == PFIRRMANN_WIDTH["coral"]
    for j in range(logits["pfirrmann"].shape[1]):
        name = f"gt{PFIRRMANN_GRADES[j]}" if coral else str(PFIRRMANN_GRADES[j])
        frame[f"pfirrmann_{name}_logit"] = logits["pfirrmann"][:, j]
    for j, grade in enumerate(PFIRRMANN_GRADES):
        frame[f"pfirrmann_p{grade}"] = calibrated["pfirrmann"][:, j]
    for j, grade in enumerate(MODIC_GRADES):
        frame[f"modic_logit{grade}"] = logits["modic"][:, j]
        frame[f"modic_p{grade}"] = calibrated["modic"][:, j]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


# --------------------------------------------------------------------------- final model


def train_grader(
    config: GraderConfig, out_path: Path, *, cv_dir: Path | None = None, work_dir: Path | None = None
) -> Path:
    """Train on all boxed discs and save the grader with the calibration of a CV run.

    ``cv_dir`` holds a finished :func:`cross_validate_grader` run of the same config; when None the
    CV runs (or resumes) in ``<out_path stem>_cv`` beside ``out_path``. Epoch checkpoints of the
    final training go to ``work_dir`` (default ``.<out_path stem>_train`` beside ``out_path``).
    """
    _set_threads(config)
    out_path = Path(out_path)
    cv_dir = Path(cv_dir) if cv_dir is not None else out_path.parent / f"{out_path.stem}_cv"
    metrics_path = cv_dir / CV_METRICS
    if metrics_path.is_file():
        cv = json.loads(metrics_path.read_text())
        if GraderConfig(**cv["config"]).fingerprint() != config.fingerprint():
            raise InputError(f"{metrics_path}: CV run of another config; rerun it or pass a matching cv_dir")
    else:
        cv = _finite(cross_validate_grader(config, cv_dir))
    data = load_grading_data(config, cache_dir=cv_dir)
    work = Path(work_dir) if work_dir is not None else out_path.parent / f".{out_path.stem}_train"
    began = time.perf_counter()
    model, fit = fit_grader(
        config, data.crops, data.table, work, seed=config.seed * 1000 + 999, log_prefix="final: "
    )
    meta = {
        "config": config.model_dump(mode="json"),
        "train_seconds": time.perf_counter() - began,
        "n_discs": len(data.table),
        "n_patients": int(data.table["patient"].nunique()),
        "cv_summary": cv["summary"],
        "history": fit["history"],
    }
    return _save_grader(out_path, config, model.state_dict(), cv["deploy_calibration"], meta)


def _save_grader(path: Path, config: GraderConfig, state_dict: dict, calibration: dict, meta: dict) -> Path:
    """The file :meth:`spinedx.tasks.disc_grading.model.DiscGrader.load` reads (weights in float16)."""
    weights = half_precision(state_dict)
    payload = {
        "format": FORMAT,
        "model": {"backbone": config.backbone} | {name: getattr(config, name) for name in NETWORK_SETTINGS},
        "crop": {"size": config.crop_size, "margin": config.margin, "pad": config.pad},
        "pfirrmann_decode": config.pfirrmann_decode,
        "state_dict": weights,
        "calibration": calibration,
        "meta": meta,
    }
    save_model_file(path, payload)
    return path
