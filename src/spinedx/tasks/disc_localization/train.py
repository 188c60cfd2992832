"""Train the MRI disc localiser and measure it with patient-grouped cross-validation.

The training series are the boxed series of a spider-sagittal folder and, with ``lumbar515_root``,
every series of a lumbar515-sagittal folder, whose tight disc boxes are widened to SPIDER's
convention (:func:`load_training_series`); a ``report_split``'s report patients stay out.

:func:`cross_validate_localizer` splits the training series into
``folds`` groups of patients (:func:`spinedx.data.folds.patient_folds`, shuffled by ``seed``),
trains one model per fold on the other folds (plus synthetic series when ``use_synthetic``),
calibrates its boxes on its own training images, and detects discs on the held-out patients.
``cv_metrics.json`` holds per fold, pooled and per cohort: disc recall, precision and level
accuracy of matched discs, each with a 95% bootstrap interval over patients. A SPIDER disc is
matched at IoU >= 0.5, a lumbar515 disc when its centre lies inside a predicted box. It then trains the
final model on all series and writes ``disc_localizer.pt`` (:func:`train_localizer`).

The folds follow :mod:`spinedx.training.cross_validation`: every epoch ends with an atomic
checkpoint (``fold_k/last.pt``, ``final/last.pt``); a finished fold leaves ``fold_k/fold.json``,
``fold_k/result.json`` (per-image detections and counts) and its deployable model
``fold_k/disc_localizer.pt``. Running the same call again on the same ``out_dir`` resumes where
training stopped (finished folds are only re-evaluated); a different config on a used ``out_dir``
is refused.

Example::

    from spinedx.tasks.disc_localization.config import LocalizerConfig
    from spinedx.tasks.disc_localization.train import cross_validate_localizer
    cross_validate_localizer(LocalizerConfig(data_root="../shared/data/spider-sagittal"), "runs/discs")
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from spinedx.data.folds import patient_folds, report_patients
from spinedx.data.letterbox import letterbox
from spinedx.errors import InputError
from spinedx.evaluation.bootstrap import bootstrap_many
from spinedx.evaluation.detection import (
    count_centres_found,
    count_detections,
    level_accuracy,
    precision,
    recall,
)
from spinedx.io.atomic import atomic_write_text
from spinedx.io.lumbar515 import read_lumbar515
from spinedx.io.spider import read_spider
from spinedx.io.volumes import read_sagittal
from spinedx.tasks.disc_localization.config import LocalizerConfig
from spinedx.tasks.disc_localization.model import DiscLocalizer, LocalizerSettings
from spinedx.tasks.disc_localization.network import (
    N_CLASSES,
    UNKNOWN_LEVEL_DISC,
    build_disc_localizer,
    render_targets,
)
from spinedx.training.cross_validation import Fold, cross_validate
from spinedx.training.loop import EpochLoop, StepResult, TrainingHooks, trained_weights

WEIGHTS_NAME = "disc_localizer.pt"
METRICS_NAME = "cv_metrics.json"
SPIDER, LUMBAR515 = "spider", "lumbar515"


@dataclass
class _Record:
    image_id: str
    patient: str
    pixels: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    cohort: str = SPIDER
    """Which matching rule scores it: IoU for SPIDER's boxes, centre in box for lumbar515's tight ones."""
    levels_known: bool = True
    """Whether training may read its labels as L5/S1 vs other disc (else its discs are either)."""


@dataclass
class _Sample:
    image_id: str
    image: torch.Tensor  # (1, S, S)
    target: torch.Tensor  # (S, S) int64


def _config_hash(config: LocalizerConfig) -> str:
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _settings(config: LocalizerConfig) -> LocalizerSettings:
    return LocalizerSettings(
        input_size=config.image_size,
        model={"channels": list(config.channels), "num_res_units": config.num_res_units},
    )


# --------------------------------------------------------------------------- data


def load_boxed_series(root: Path, max_images: int | None = None, prefix: str = "") -> list[_Record]:
    """Every series of a spider-layout folder that has disc boxes, with its pixels."""
    dataset = read_spider(root)
    records = []
    image_ids = sorted(dataset.discs["image_id"].unique().tolist())
    if max_images is not None:
        image_ids = image_ids[:max_images]
    for image_id in image_ids:
        rows = dataset.discs[dataset.discs["image_id"] == image_id]
        pixels = read_sagittal(dataset.image_path(image_id)).pixels
        records.append(
            _Record(
                image_id=prefix + str(image_id),
                patient=prefix + str(rows["patient"].iloc[0]),
                pixels=pixels,
                boxes=rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(np.float64),
                labels=rows["ivd_label"].to_numpy(np.int64),
            )
        )
    if not records:
        raise InputError(f"{root / 'discs.csv'}: no disc boxes to train on")
    return records


def load_lumbar515_series(
    root: Path, box_scale: tuple[float, float], max_images: int | None = None, *, levels_known: bool = False
) -> list[_Record]:
    """Every series of a lumbar515-sagittal folder with its disc boxes widened about their centres by
    ``box_scale`` (width, height) to SPIDER's convention; ids are ``lumbar515/<id>``, so they never
    collide with SPIDER's. A series with a disc box of unknown level is left out (its L5/S1 is unsure).
    Its labels always score levels; ``levels_known`` lets training read them too."""
    dataset = read_lumbar515(root)
    unknown_level = set(dataset.discs.loc[dataset.discs["ivd_label"].isna(), "image_id"])
    image_ids = sorted(set(dataset.discs["image_id"]) - unknown_level)[:max_images]
    records = []
    for image_id, rows in dataset.discs[dataset.discs["image_id"].isin(image_ids)].groupby("image_id"):
        boxes = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(np.float64)
        centres, halves = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
        halves = halves * np.asarray(box_scale)
        records.append(
            _Record(
                image_id=f"{LUMBAR515}/{image_id}",
                patient=f"{LUMBAR515}/{rows['patient'].iloc[0]}",
                pixels=read_sagittal(dataset.image_path(image_id)).pixels,
                boxes=np.hstack([centres - halves, centres + halves]),
                labels=rows["ivd_label"].to_numpy(np.int64),
                cohort=LUMBAR515,
                levels_known=levels_known,
            )
        )
    return records


def load_training_series(config: LocalizerConfig) -> list[_Record]:
    """SPIDER's boxed series, lumbar515's series when the config names the folder, less the report
    patients of ``report_split``."""
    records = load_boxed_series(Path(config.data_root), config.max_images)
    if config.lumbar515_root is not None:
        records += load_lumbar515_series(
            Path(config.lumbar515_root),
            config.lumbar515_box_scale,
            config.max_images,
            levels_known=config.lumbar515_levels,
        )
    if config.report_split is not None:
        report = report_patients(config.report_split)
        records = [r for r in records if split_key(r) not in report]
    if not records:
        raise InputError(f"{config.data_root}: no training series left outside the report patients")
    return records


def split_key(record: _Record) -> str:
    """The record's ``<cohort>/<patient>`` key in a split.json."""
    return record.patient if record.cohort == LUMBAR515 else f"{SPIDER}/{record.patient}"


def _synthetic_records(config: LocalizerConfig, out_dir: Path) -> list[_Record]:
    root = config.synthetic_root
    if root is None:
        from spinedx.synth.mri import generate_mri_dataset

        root = out_dir / "synthetic"
        if not (root / "discs.csv").is_file():
            generate_mri_dataset(root, n_patients=config.synthetic_patients, seed=config.seed + 1000)
    return load_boxed_series(Path(root), prefix="synth-")


def _prepare(records: list[_Record], size: int) -> list[_Sample]:
    samples = []
    for record in records:
        image, geometry = letterbox(record.pixels, size)
        target = render_targets(record.boxes, record.labels, geometry, levels_known=record.levels_known)
        samples.append(_Sample(record.image_id, image=image[0], target=torch.from_numpy(target)))
    return samples


# --------------------------------------------------------------------------- augmentation


def _augment(images: torch.Tensor, targets: torch.Tensor, config: LocalizerConfig, gen: torch.Generator):
    """Random affine (rotation, scale, shift; up-down never flipped), partial field of view, intensity."""
    n, _, size, _ = images.shape

    def uniform(low: float, high: float, shape=(n,)) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=gen)

    angle = uniform(-config.rotation_deg, config.rotation_deg) * math.pi / 180
    low, high = config.scale_range
    scale = torch.exp(uniform(math.log(low), math.log(high)))
    aspect = torch.exp(uniform(-0.08, 0.08))
    sx, sy = scale * aspect, scale / aspect
    flip = torch.where(torch.rand(n, generator=gen) < config.hflip_probability, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / sx * flip
    theta[:, 0, 1] = -sin / sy
    theta[:, 1, 0] = sin / sx * flip
    theta[:, 1, 1] = cos / sy
    theta[:, :, 2] = uniform(-2 * config.translate, 2 * config.translate, (n, 2))
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    targets = (
        F.grid_sample(
            targets[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[:, 0]
        .round()
        .long()
    )

    # Partial field of view: blank everything below (or above) a random row.
    rows = torch.arange(size)[None, :, None]
    cut = torch.rand(n, generator=gen) < config.cut_probability
    below = torch.rand(n, generator=gen) < 0.7
    at = (uniform(0.35, 0.95) * size).long()
    blank = torch.where(below[:, None, None], rows >= at[:, None, None], rows < (size - at)[:, None, None])
    blank = blank & cut[:, None, None]
    blank = blank.expand(n, size, size)
    images = images.masked_fill(blank[:, None], 0.0)
    targets = targets.masked_fill(blank, 0)

    # Intensity: gamma, contrast/brightness, noise.
    g_low, g_high = config.gamma_range
    gamma = torch.exp(uniform(math.log(g_low), math.log(g_high)))[:, None, None, None]
    images = images.clamp(0.0, 1.0) ** gamma
    contrast = uniform(0.8, 1.2)[:, None, None, None]
    brightness = uniform(-0.08, 0.08)[:, None, None, None]
    images = images * contrast + brightness
    sigma = uniform(0.0, config.noise_std)[:, None, None, None]
    images = images + sigma * torch.randn(images.shape, generator=gen)
    return images, targets


# --------------------------------------------------------------------------- training


def _lr_at(step: int, total: int, config: LocalizerConfig) -> float:
    warmup = max(1, int(config.warmup_fraction * total))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class _LocalizerHooks(TrainingHooks):
    """One localiser epoch: a seeded permutation, augmented batches, Dice + cross-entropy, a warm-up/cosine lr."""

    def __init__(self, samples: list[_Sample], config: LocalizerConfig, optimizer: torch.optim.Optimizer,
                 model: torch.nn.Module, log: Callable[[str], None], name: str) -> None:  # fmt: skip
        self.config, self.optimizer, self.model, self.log, self.name = config, optimizer, model, log, name
        self.images = torch.stack([s.image for s in samples])
        self.targets = torch.stack([s.target for s in samples])
        self.steps_per_epoch = math.ceil(len(samples) / config.batch_size)
        self.loss_fn = PartialLevelLoss()

    def on_epoch_start(self, epoch: int):
        # One generator per epoch (seeded by it), so a resumed run draws what an uninterrupted one would.
        self.generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.images), generator=self.generator)
        size = self.config.batch_size
        total = self.steps_per_epoch * self.config.epochs
        return [(epoch * self.steps_per_epoch + b, order[b * size : (b + 1) * size], total)
                for b in range(self.steps_per_epoch)]  # fmt: skip

    def on_resume(self, epoch: int) -> None:
        self.log(f"{self.name}: resumed after epoch {epoch}")

    def train_step(self, batch) -> StepResult:
        step, index, total = batch
        images, targets = _augment(self.images[index], self.targets[index], self.config, self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(step, total, self.config)
        return StepResult(self.loss_fn(self.model(images), targets), len(index))


class PartialLevelLoss(torch.nn.Module):
    """Cross-entropy + Dice for targets whose discs may be of unknown level (:data:`UNKNOWN_LEVEL_DISC`).

    Such a pixel's cross-entropy is that of "a disc", the summed probability of L5/S1 and other disc
    (the marginal likelihood of a partial label), and the per-class Dice (MONAI ``MaskedDiceLoss``,
    batch-wise) skips it. A Dice on "any disc" over all pixels makes those discs count as foreground.
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss, MaskedDiceLoss

        self.class_dice = MaskedDiceLoss(include_background=False, batch=True)
        self.disc_dice = DiceLoss(batch=True)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = logits.log_softmax(1)
        known = targets != UNKNOWN_LEVEL_DISC
        known_classes = torch.where(known, targets, 0)
        cross_entropy = torch.where(
            known,
            -log_p.gather(1, known_classes[:, None])[:, 0],
            -torch.logsumexp(log_p[:, 1:], dim=1),
        ).mean()
        p = log_p.exp()
        one_hot = F.one_hot(known_classes, N_CLASSES).permute(0, 3, 1, 2).float()
        disc = (targets > 0).float()[:, None]
        dice = (
            2 * self.class_dice(p, one_hot, mask=known[:, None].float())
            + self.disc_dice(p[:, 1:].sum(1, keepdim=True), disc)
        ) / 3
        return cross_entropy + dice


def _fit(
    samples: list[_Sample],
    config: LocalizerConfig,
    run_dir: Path,
    log: Callable[[str], None],
) -> tuple[torch.nn.Module, float]:
    """Train on ``samples`` with per-epoch checkpoints in ``run_dir``; (model, training seconds).

    A killed run resumes after its last finished epoch (:class:`~spinedx.training.loop.EpochLoop`)."""
    torch.manual_seed(config.seed)
    model = build_disc_localizer(config.channels, config.num_res_units)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    name = Path(run_dir).name
    hooks = _LocalizerHooks(samples, config, optimizer, model, log, name)
    identity = {"recipe": _config_hash(config), "images": [sample.image_id for sample in samples]}
    loop = EpochLoop(model, optimizer, config.epochs, Path(run_dir), identity, label=f"{name}: ", log_every=10,
                     log=log)  # fmt: skip
    return model, loop.run(hooks).seconds


def _localizer(model: torch.nn.Module, config: LocalizerConfig, records: list[_Record]) -> DiscLocalizer:
    localizer = DiscLocalizer(model, _settings(config), meta={"config": config.model_dump(mode="json")})
    localizer.calibrate([r.pixels for r in records], [r.boxes for r in records])
    return localizer


def fit_localizer(
    records: list[_Record],
    config: LocalizerConfig,
    run_dir: Path,
    log: Callable[[str], None] = print,
    synthetic: list[_Record] = (),
) -> DiscLocalizer:
    """Train a localiser on ``records`` and ``synthetic`` ones (checkpoints in ``run_dir``, so a killed
    run resumes); its boxes are calibrated on the real ``records``."""
    train = [*records, *synthetic]
    model, seconds = _fit(_prepare(train, config.image_size), config, run_dir, log)
    localizer = _localizer(model, config, records)
    localizer.meta.update({"train_images": len(train), "train_seconds": round(seconds, 1)})
    return localizer


def train_localizer(
    config: LocalizerConfig, out_dir: str | Path, log: Callable[[str], None] = print
) -> DiscLocalizer:
    """Train on every training series (plus synthetic ones if asked); write ``out_dir/disc_localizer.pt``."""
    torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    synthetic = _synthetic_records(config, out_dir) if config.use_synthetic else []
    localizer = fit_localizer(load_training_series(config), config, out_dir / "final", log, synthetic)
    localizer.save(out_dir / WEIGHTS_NAME)
    log(f"final model: {out_dir / WEIGHTS_NAME}")
    return localizer


# --------------------------------------------------------------------------- evaluation


def evaluate_series(localizer: DiscLocalizer, records: list[_Record], iou_threshold: float) -> list[dict]:
    """Detect the discs of each record and count hits by its cohort's rule (one row per series)."""
    rows = []
    for record in records:
        started = time.perf_counter()
        detections, warnings = localizer.detect(record.pixels)
        seconds = time.perf_counter() - started
        found = (
            [d.box for d in detections],
            record.boxes,
            [d.ivd_label for d in detections],
            record.labels.tolist(),
        )
        counts = (
            count_detections(*found, iou_threshold)
            if record.cohort == SPIDER
            else count_centres_found(*found)
        )
        rows.append(
            {
                "image_id": record.image_id,
                "patient": record.patient,
                "cohort": record.cohort,
                "n_pred": counts.n_pred,
                "n_ref": counts.n_ref,
                "n_matched": counts.n_matched,
                "n_level_correct": counts.n_level_correct,
                "seconds": round(seconds, 4),
                "detections": [
                    {
                        "box": [round(v, 1) for v in d.box],
                        "score": round(d.score, 3),
                        "ivd_label": d.ivd_label,
                    }
                    for d in detections
                ],
                "warnings": warnings,
            }
        )
    return rows


def summarize(rows: list[dict], n_resamples: int = 1000, seed: int = 0) -> dict:
    """Pooled recall, precision and level accuracy with 95% bootstrap intervals over patients."""
    if not rows:
        return {}
    column = {k: np.array([r[k] for r in rows]) for k in ("n_pred", "n_ref", "n_matched", "n_level_correct")}
    groups = np.array([r["patient"] for r in rows])
    results = bootstrap_many(
        {
            "recall": lambda m, r, p, c: recall(m, r),
            "precision": lambda m, r, p, c: precision(m, p),
            "level_accuracy": lambda m, r, p, c: level_accuracy(c, m),
        },
        column["n_matched"],
        column["n_ref"],
        column["n_pred"],
        column["n_level_correct"],
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
    )
    summary = {
        name: {"estimate": res.estimate, "ci95": [res.lower, res.upper]} for name, res in results.items()
    }
    summary.update(
        n_images=len(rows),
        n_patients=len(set(groups.tolist())),
        n_ref=int(column["n_ref"].sum()),
        n_pred=int(column["n_pred"].sum()),
        n_matched=int(column["n_matched"].sum()),
        n_level_correct=int(column["n_level_correct"].sum()),
        images_all_levels_right=int(
            sum(r["n_matched"] == r["n_ref"] == r["n_level_correct"] == r["n_pred"] for r in rows)
        ),
        mean_detect_seconds=float(np.mean([r["seconds"] for r in rows])),
    )
    return summary


def cross_validate_localizer(
    config: LocalizerConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    *,
    train_final: bool = True,
) -> dict:
    """Patient-grouped K-fold CV; writes ``cv_metrics.json`` (and the final model unless told not to)."""
    torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_out_dir(config, out_dir)
    records = load_training_series(config)
    synthetic = _synthetic_records(config, out_dir) if config.use_synthetic else []
    assigned = patient_folds(
        [r.patient for r in records], config.folds, config.seed, what=str(config.data_root)
    )

    def train_fold(fold: Fold) -> dict:
        train = [records[i] for i in fold.train]
        _, seconds = _fit(_prepare(train + synthetic, config.image_size), config, fold.dir, log)
        return {"train_images": len(train) + len(synthetic), "train_seconds": round(seconds, 1)}

    identity = {"recipe": _config_hash(config), "synthetic": [r.image_id for r in synthetic]}
    runs = cross_validate(assigned, [r.patient for r in records], [r.image_id for r in records], out_dir,
                          train_fold, n_folds=config.folds, identity=identity)  # fmt: skip
    folds, all_rows = [], []
    for run in runs:
        fold = run.fold
        train = [records[i] for i in fold.train]
        test = [records[i] for i in fold.test]
        # Evaluation always reruns (seconds), so the figures follow the current post-processing code;
        # the network is the fold's as trained (its last checkpoint, full precision).
        model = build_disc_localizer(config.channels, config.num_res_units)
        model.load_state_dict(trained_weights(fold.dir))
        localizer = _localizer(model.eval(), config, train)
        # The fold's deployable model lets `spinedx evaluate-discs --cv-run` score every patient
        # end to end with a localiser that never saw them.
        localizer.save(fold.dir / WEIGHTS_NAME)
        result = {
            "fold": fold.index,
            "train_images": run.info["train_images"],
            "test_images": len(test),
            "test_patients": fold.test_patients,
            "train_seconds": run.info["train_seconds"],
            "calibration": localizer.calibration.as_dict(),
            "images": evaluate_series(localizer, test, config.iou_threshold),
        }
        atomic_write_text(fold.dir / "result.json", json.dumps(result, indent=1) + "\n")
        summary = summarize(result["images"], config.bootstrap_resamples, config.seed)
        log(
            f"fold {fold.index}: recall {summary['recall']['estimate']:.3f} precision "
            f"{summary['precision']['estimate']:.3f} level acc {summary['level_accuracy']['estimate']:.3f}"
        )
        folds.append(
            {
                "fold": fold.index,
                "train_images": result["train_images"],
                "train_seconds": result["train_seconds"],
                "calibration": result["calibration"],
                **summary,
            }
        )
        all_rows.extend(result["images"])
    metrics = {
        "config": config.model_dump(mode="json"),
        "iou_threshold": config.iou_threshold,
        "pooled": summarize(all_rows, config.bootstrap_resamples, config.seed),
        "by_cohort": {
            cohort: summarize(
                [r for r in all_rows if r["cohort"] == cohort], config.bootstrap_resamples, config.seed
            )
            for cohort in sorted({r["cohort"] for r in all_rows})
        },  # fmt: skip
        "folds": folds,
    }
    atomic_write_text(out_dir / METRICS_NAME, json.dumps(metrics, indent=1) + "\n")
    pooled = metrics["pooled"]
    log(
        "pooled: "
        + ", ".join(
            f"{name} {pooled[name]['estimate']:.3f} [{pooled[name]['ci95'][0]:.3f}, {pooled[name]['ci95'][1]:.3f}]"
            for name in ("recall", "precision", "level_accuracy")
        )
    )
    if train_final:
        train_localizer(config, out_dir, log)
    return metrics


def _check_out_dir(config: LocalizerConfig, out_dir: Path) -> None:
    """Record the config in ``out_dir``; refuse a folder used with a different one."""
    path = out_dir / "config.yaml"
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=True)
    if path.is_file() and path.read_text() != text:
        raise InputError(f"{path}: {out_dir} was used with a different config; use a new out_dir")
    if not path.is_file():
        atomic_write_text(path, text)
