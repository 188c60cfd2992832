"""Train the canal stenosis classifier on lumbar515-sagittal: patient cross-validation, calibration, final model.

Training samples are the discs the bundled localiser finds (as analysis finds them), each labelled by
the reference disc box whose centre it contains: stenosis when a stenosis box sits behind that disc
(:mod:`spinedx.io.lumbar515`). Found discs that match no reference box are left out (unlabelled).

``run_dir`` receives the cached samples and crops, ``cv/fold_<k>/{model.pt, fold.json}`` (each
fold's deployable model and its held-out patients, :mod:`spinedx.training.cross_validation`),
``cv/metrics.json`` (out-of-fold AUROC with 95% CIs over patients, beside the
level-only prior on the same discs), and the final ``canal_stenosis.pt`` with a Platt calibrator and
operating point fitted on the out-of-fold predictions. A killed fold resumes from its last epoch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spinedx.data.folds import patient_folds, report_patients
from spinedx.evaluation.grading import binary_task_metrics, youden_threshold
from spinedx.io.atomic import atomic_path, atomic_write_text
from spinedx.io.lumbar515 import centres_inside, read_lumbar515
from spinedx.io.volumes import read_sagittal
from spinedx.models.calibration import PlattScaler
from spinedx.models.model_file import save_model_file
from spinedx.models.registry import bundle_model, resolve_weights
from spinedx.tasks.canal_stenosis.config import CanalStenosisRecipe
from spinedx.tasks.canal_stenosis.model import FORMAT, REGISTRY_NAME, CanalStenosis
from spinedx.tasks.canal_stenosis.network import StenosisNet, level_index, posterior_crops
from spinedx.tasks.disc_localization.model import REGISTRY_NAME as LOCALIZER_NAME
from spinedx.tasks.disc_localization.model import DiscLocalizer
from spinedx.training.cross_validation import Fold, cross_validate
from spinedx.training.loop import EpochLoop, StepResult, TrainingHooks, identity_digest, trained_weights

logger = logging.getLogger(__name__)


def _data_key(recipe: CanalStenosisRecipe) -> str:
    """Names the caches by the data they came from, so one made from other data is never read."""
    return identity_digest({"data_root": recipe.data_root, "series_limit": recipe.series_limit})[:12]


def found_discs(recipe: CanalStenosisRecipe, run_dir: Path) -> dict[str, list]:
    """Localiser discs matched to reference discs (cached in ``run_dir``, named by the data they came from)."""
    cache = run_dir / f"samples-{_data_key(recipe)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    dataset = read_lumbar515(recipe.data_root)
    localizer = DiscLocalizer.load(resolve_weights(LOCALIZER_NAME).path)
    samples: dict[str, list] = {"image_id": [], "patient": [], "box": [], "ivd_label": [], "stenosis": []}
    series = dataset.series["image_id"].tolist()[: recipe.series_limit]
    for index, image_id in enumerate(series):
        detections, _ = localizer.detect(read_sagittal(dataset.image_path(image_id)).pixels)
        reference = dataset.discs[dataset.discs["image_id"] == image_id]
        for detection in detections:
            inside = reference[centres_inside(reference, detection.box)]
            if len(inside) != 1:  # none, or two reference discs in one box: no clean label
                continue
            samples["image_id"].append(image_id)
            samples["patient"].append(str(inside["patient"].iloc[0]))
            samples["box"].append([float(v) for v in detection.box])
            samples["ivd_label"].append(int(detection.ivd_label))
            samples["stenosis"].append(int(inside["stenosis"].iloc[0]))
        if (index + 1) % 100 == 0:
            logger.info("canal stenosis: localised %d/%d series", index + 1, len(series))
    atomic_write_text(cache, json.dumps(samples))
    return samples


def sample_crops(recipe: CanalStenosisRecipe, samples: dict[str, list], run_dir: Path) -> np.ndarray:
    """Posterior-margin crops of every sample (cached in ``run_dir``)."""
    # Named by the crop settings: a cache made under other settings is never read as this one.
    cache = run_dir / f"crops-{_data_key(recipe)}-{recipe.crop_size}-{recipe.crop_scale:g}.npy"
    if cache.is_file():
        return np.load(cache)
    dataset = read_lumbar515(recipe.data_root)
    crops = np.zeros((len(samples["box"]), recipe.crop_size, recipe.crop_size), dtype=np.float32)
    order = np.argsort(samples["image_id"], kind="stable")
    current, pixels = None, None
    for row in order:
        image_id = samples["image_id"][row]
        if image_id != current:
            current, pixels = image_id, read_sagittal(dataset.image_path(image_id)).pixels
        crops[row] = posterior_crops(pixels, [samples["box"][row]], recipe.crop_size, recipe.crop_scale)[0]
    with atomic_path(cache) as temporary, open(temporary, "wb") as handle:
        np.save(handle, crops)
    return crops


class _Hooks(TrainingHooks):
    def __init__(self, model: StenosisNet, crops: torch.Tensor, levels: torch.Tensor, labels: torch.Tensor,
                 batch_size: int, generator: torch.Generator) -> None:  # fmt: skip
        self.model, self.crops, self.levels, self.labels = model, crops, levels, labels
        self.batch_size, self.generator = batch_size, generator
        positives = float(labels.sum())
        self.pos_weight = torch.tensor((len(labels) - positives) / max(positives, 1.0))

    def on_epoch_start(self, epoch: int):
        order = torch.randperm(len(self.labels), generator=self.generator)
        return [
            order[i : i + self.batch_size]
            for i in range(0, len(order), self.batch_size)
            if len(order) - i > 1
        ]

    def train_step(self, batch) -> StepResult:
        images = self.crops[batch][:, None]
        # Augment: vertical flips (the canal runs cranio-caudally), small shifts, gamma. Never a
        # left-right flip: the canal must stay posterior.
        flip = torch.rand(len(batch), generator=self.generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(2), images)
        shift = int(torch.randint(-3, 4, (1,), generator=self.generator))
        images = images.roll(shift, dims=2)
        gamma = torch.exp((torch.rand(len(batch), 1, 1, 1, generator=self.generator) - 0.5) * 0.6)
        images = images.clamp_min(0) ** gamma
        logits = self.model(images, self.levels[batch])
        loss = F.binary_cross_entropy_with_logits(logits, self.labels[batch], pos_weight=self.pos_weight)
        return StepResult(loss, len(batch))


def _fit(recipe: CanalStenosisRecipe, crops: np.ndarray, levels: np.ndarray, labels: np.ndarray,
         work_dir: Path, identity: dict, label: str) -> StenosisNet:  # fmt: skip
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = StenosisNet(recipe.backbone, pretrained=recipe.pretrained)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * max(len(labels) // recipe.batch_size, 1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=steps + recipe.epochs
    )
    hooks = _Hooks(
        model, torch.from_numpy(crops), torch.from_numpy(levels), torch.from_numpy(labels.astype(np.float32)),
        recipe.batch_size, generator,
    )  # fmt: skip
    EpochLoop(model, optimizer, recipe.epochs, work_dir, identity, scheduler, generator, label=label).run(
        hooks
    )
    return model.eval()


def _predict(model: StenosisNet, crops: np.ndarray, levels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(crops)[:, None], torch.from_numpy(levels)).numpy().astype(np.float64)


def _save(model: StenosisNet, recipe: CanalStenosisRecipe, path: Path, calibration: PlattScaler,
          threshold: float, meta: dict) -> Path:  # fmt: skip
    return save_model_file(
        path,
        {
            "format": FORMAT,
            "architecture": {"backbone": recipe.backbone},
            "state_dict": model.state_dict(),
            "crop": {"size": recipe.crop_size, "scale": recipe.crop_scale},
            "calibration": calibration.as_dict(),
            "threshold": threshold,
            "meta": meta,
        },
    )


def train_canal_stenosis(
    recipe: CanalStenosisRecipe, run_dir: Path, *, register_into: Path | None = None
) -> dict[str, Path]:
    """Cross-validate by patient, fit the calibrator on out-of-fold logits, train the final model."""
    torch.set_num_threads(recipe.threads)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.json", json.dumps(recipe.model_dump(mode="json"), indent=2))
    samples = found_discs(recipe, run_dir)
    crops = sample_crops(recipe, samples, run_dir)
    if recipe.report_split is not None:  # after the caches, which hold every patient
        report = report_patients(recipe.report_split)
        keep = [f"lumbar515/{patient}" not in report for patient in samples["patient"]]
        samples = {key: [value for value, kept in zip(values, keep, strict=True) if kept]
                   for key, values in samples.items()}  # fmt: skip
        crops = crops[np.asarray(keep, dtype=bool)]
    labels = np.asarray(samples["stenosis"], dtype=np.int64)
    levels = level_index(samples["ivd_label"])
    patients = np.asarray(samples["patient"])
    unchanging = {"threads", "bootstrap_resamples", "name", "version"}
    if recipe.report_split is None:
        unchanging.add("report_split")  # so runs from before the option still resume
    training = recipe.model_dump(mode="json", exclude=unchanging)
    folds = patient_folds(patients, recipe.folds, recipe.seed, what="canal stenosis cross-validation")

    def train_fold(fold: Fold) -> dict:
        train = fold.train
        identity = {
            "recipe": training,
            "fold": fold.index,
            "samples": len(train),
            "positives": int(labels[train].sum()),
        }
        model = _fit(recipe, crops[train], levels[train], labels[train], fold.dir, identity,
                     f"fold {fold.index + 1}/{recipe.folds} ")  # fmt: skip
        # Fold models rank (their AUROC is what cross-validation reports); only the final model is calibrated.
        _save(
            model,
            recipe,
            fold.dir / "model.pt",
            PlattScaler(),
            0.5,
            {"fold": fold.index, "calibrated": False},
        )
        return {}

    sample_ids = [
        f"{image_id}:{label}"
        for image_id, label in zip(samples["image_id"], samples["ivd_label"], strict=True)
    ]
    runs = cross_validate(folds, patients, sample_ids, run_dir / "cv", train_fold, n_folds=recipe.folds,
                          identity={"recipe": training})  # fmt: skip
    out_of_fold = np.zeros(len(labels))
    prior = np.zeros(len(labels))
    for run in runs:
        train, test = folds != run.fold.index, folds == run.fold.index
        # The network as trained (its last checkpoint), whether trained now or before.
        model = StenosisNet(recipe.backbone)
        model.load_state_dict(trained_weights(run.fold.dir))
        out_of_fold[test] = _predict(model.eval(), crops[test], levels[test])
        rates = {level: labels[train & (levels == level)].mean() for level in np.unique(levels[train])}
        prior[test] = [rates.get(level, labels[train].mean()) for level in levels[test]]
    calibration = PlattScaler.fit(out_of_fold, labels)
    calibrated = calibration.apply(out_of_fold)
    threshold = youden_threshold(labels, calibrated)
    groups = patients
    metrics = {
        "data": str(recipe.data_root),
        "n_discs": len(labels),
        "n_patients": len(set(patients)),
        "n_positive": int(labels.sum()),
        "model": binary_task_metrics(
            labels, calibrated, threshold=threshold, groups=groups, n_resamples=recipe.bootstrap_resamples
        ),  # fmt: skip
        "level_prior": binary_task_metrics(
            labels,
            prior,
            threshold=float(labels.mean()),
            groups=groups,
            n_resamples=recipe.bootstrap_resamples,
        ),  # fmt: skip
        "note": "out of fold (patient folds); the operating point and calibrator were fitted on these same "
        "out-of-fold predictions, so sensitivity/specificity at it are optimistic; AUROC is not affected",
    }
    atomic_write_text(run_dir / "cv" / "metrics.json", json.dumps(metrics, indent=2, default=float))
    identity = {"recipe": training, "fold": "final", "samples": len(labels), "positives": int(labels.sum())}
    final = _fit(recipe, crops, levels, labels, run_dir / "final", identity, "final ")
    path = _save(final, recipe, run_dir / f"{REGISTRY_NAME}.pt", calibration, threshold,
                 {"version": recipe.version, "cv_auroc": metrics["model"]["auroc"]})  # fmt: skip
    paths = {REGISTRY_NAME: path, "cv_metrics": run_dir / "cv" / "metrics.json"}
    if register_into is not None:
        bundle_model(REGISTRY_NAME, path, recipe.version, Path(register_into),
                     lambda target: CanalStenosis.load(target).compile(target))  # fmt: skip
    return paths
