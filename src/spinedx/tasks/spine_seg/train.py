"""``spinedx train configs/spine_seg.yaml``: the spine segmenter, cross-validated by patient, then
trained on everything.

Data: the real sources in ``sources`` (each folder as read by :mod:`spinedx.tasks.spine_seg.data`) and
``synthetic_patients`` synthetic patients generated under the run folder (``synth-train``; always
in training, never scored). :func:`cross_validate` splits the real images into ``folds`` groups of
patients, trains one model per fold and segments its held-out images; ``cv/metrics.json`` and
``cv/report.html`` hold the per-class metrics with 95% bootstrap CIs over patients
(:mod:`spinedx.tasks.spine_seg.evaluate`). :func:`train_final` trains on all images and writes
``spine_segmenter.pt``, then scores it on ``synthetic_test_patients`` new synthetic patients
(``synth-test``, another seed): the canal is only labelled there.

Partially labelled sources (:class:`PartialLabelLoss`): for an image whose mask does not label the
classes U, a pixel labelled background is supervised as "background or any class in U" (the log of
the summed probabilities), and Dice terms are computed only for the labelled foreground classes.
A finished fold leaves ``cv/fold_k/{spine_segmenter.pt, fold.json}``
(:mod:`spinedx.training.cross_validation`) and is not retrained when the call is repeated on the
same folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from spinedx.data.letterbox import letterbox_geometry, normalize_intensity
from spinedx.io.atomic import atomic_write_text
from spinedx.io.masks import IGNORE
from spinedx.models.registry import bundle_model
from spinedx.tasks.spine_seg.config import Loss, SpineSegRecipe
from spinedx.tasks.spine_seg.data import SegSample, load_seg_source, patient_folds
from spinedx.tasks.spine_seg.model import REGISTRY_NAME, WEIGHTS_NAME
from spinedx.tasks.spine_seg.network import (
    N_CLASSES,
    build_spine_segmenter,
    compile_segmenter,
    save_segmenter,
    segment_pixels,
)
from spinedx.training.cross_validation import Fold
from spinedx.training.cross_validation import cross_validate as run_folds
from spinedx.training.loop import EpochLoop, StepResult, TrainingHooks, trained_weights

CERTAIN_BACKGROUND = 254
"""Training target value: background that is known even where the mask leaves classes unlabelled."""


# --------------------------------------------------------------------------- loss


class PartialLabelLoss(torch.nn.Module):
    """Cross-entropy, Dice or their sum for masks that label only some classes.

    ``forward(logits (B, C, H, W), targets (B, H, W) long, labelled (B, C) bool)``: ``labelled[b, c]``
    says whether image b's mask labels class c (background always). Targets equal to
    :data:`~spinedx.io.masks.IGNORE` are not supervised; :data:`CERTAIN_BACKGROUND` is background
    even where the mask leaves classes unlabelled (see :func:`letterbox_sample`).
    """

    def __init__(self, kind: Loss = "dice_ce") -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.kind = kind
        self.dice = DiceLoss(include_background=False, reduction="none")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        valid = targets != IGNORE
        certain = targets == CERTAIN_BACKGROUND
        clean = torch.where(valid & ~certain, targets, 0)
        one_hot = F.one_hot(clean, logits.shape[1]).permute(0, 3, 1, 2).float()
        loss = logits.new_zeros(())
        if self.kind in ("ce", "dice_ce"):
            # Allowed classes per pixel: its label; for background also every class the mask does not label.
            maybe = (clean == 0) & ~certain
            allowed = one_hot.bool() | (maybe[:, None] & ~labelled[:, :, None, None])
            log_p = torch.log_softmax(logits, dim=1).masked_fill(~allowed, -torch.inf)
            nll = -torch.logsumexp(log_p, dim=1)
            loss = loss + nll[valid].mean() if valid.any() else loss
        if self.kind in ("dice", "dice_ce"):
            weight = valid[:, None].float()
            per_class = self.dice(torch.softmax(logits, dim=1) * weight, one_hot * weight)
            per_class = per_class.reshape(per_class.shape[0], -1)
            mask = labelled[:, 1:]
            loss = loss + (per_class * mask).sum() / mask.sum().clamp(min=1)
        return loss


# --------------------------------------------------------------------------- data


def letterbox_sample(
    sample: SegSample, size: int, unlabelled_reach: float = 0.12
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (1, S, S), target (S, S) long, labelled (C,) bool) of ``sample`` at network size.

    When the mask leaves classes unlabelled, background farther than ``unlabelled_reach`` x S from
    any labelled vertebra or disc becomes :data:`CERTAIN_BACKGROUND`: the canal and the discs lie
    next to the vertebrae, so far from them "background" is known. Without this, the marginal
    loss would let the network paint canal anywhere on the real images.
    """
    geometry = letterbox_geometry(*sample.pixels.shape, size)
    shape = (geometry.resized_h, geometry.resized_w)
    image = torch.from_numpy(normalize_intensity(sample.pixels))[None, None]
    image = F.interpolate(image, size=shape, mode="bilinear", antialias=True, align_corners=False)
    labels = torch.from_numpy(sample.labels.astype(np.int64))[None, None].float()
    labels = F.interpolate(labels, size=shape, mode="nearest-exact")[0, 0].long()
    oy, ox = int(geometry.offset_y), int(geometry.offset_x)
    padded_image = torch.zeros((1, size, size))
    padded_image[:, oy : oy + shape[0], ox : ox + shape[1]] = image[0].clamp(0.0, 1.0)
    target = torch.zeros((size, size), dtype=torch.long)
    target[oy : oy + shape[0], ox : ox + shape[1]] = labels
    labelled = torch.zeros(N_CLASSES, dtype=torch.bool)
    labelled[[0, *sample.labelled]] = True
    if not labelled.all():
        foreground = ((target > 0) & (target != IGNORE)).numpy()
        far = (
            ndimage.distance_transform_edt(~foreground) > unlabelled_reach * size
            if foreground.any()
            else True
        )
        target[torch.from_numpy(np.asarray(far & (target == 0).numpy()))] = CERTAIN_BACKGROUND
    return padded_image, target, labelled


def augment(images: torch.Tensor, targets: torch.Tensor, recipe: SpineSegRecipe, gen: torch.Generator):
    """Random rotation, scale and shift (never flipped: anterior stays left), gamma, contrast, noise."""
    n, _, size, _ = images.shape

    def uniform(low: float, high: float, shape=(n,)) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=gen)

    angle = uniform(-recipe.rotation_deg, recipe.rotation_deg) * math.pi / 180
    scale = torch.exp(uniform(*(math.log(s) for s in recipe.scale_range)))
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, :, 2] = uniform(-0.1, 0.1, (n, 2))
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    targets = F.grid_sample(targets[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].long()
    gamma = torch.exp(uniform(*(math.log(g) for g in recipe.gamma_range)))[:, None, None, None]
    images = images.clamp(0.0, 1.0) ** gamma * uniform(0.85, 1.15)[:, None, None, None]
    noise = uniform(0.0, recipe.noise_std)[:, None, None, None] * torch.randn(images.shape, generator=gen)
    return images + noise, targets


class _SegmenterHooks(TrainingHooks):
    """One segmenter epoch: a seeded permutation, augmented batches, the partial-label loss."""

    def __init__(self, samples: list[SegSample], recipe: SpineSegRecipe, model: torch.nn.Module,
                 log: Callable[[str], None]) -> None:  # fmt: skip
        prepared = [letterbox_sample(s, recipe.image_size, recipe.unlabelled_reach) for s in samples]
        self.images = torch.stack([p[0] for p in prepared])
        self.targets = torch.stack([p[1] for p in prepared])
        self.labelled = torch.stack([p[2] for p in prepared])
        self.recipe, self.model, self.log = recipe, model, log
        self.loss_fn = PartialLabelLoss(recipe.loss)
        self.steps = math.ceil(len(samples) / recipe.batch_size)

    def on_resume(self, epoch: int) -> None:
        self.log(f"resuming after epoch {epoch}")

    def on_epoch_start(self, epoch: int) -> list[torch.Tensor]:
        # One generator per epoch (seeded by it), so a resumed run draws what an uninterrupted one would.
        self.generator = torch.Generator().manual_seed(self.recipe.seed * 100_003 + epoch)
        order = torch.randperm(len(self.images), generator=self.generator)
        size = self.recipe.batch_size
        return [order[b * size : (b + 1) * size] for b in range(self.steps)]

    def train_step(self, index: torch.Tensor) -> StepResult:
        images, targets = augment(self.images[index], self.targets[index], self.recipe, self.generator)
        return StepResult(self.loss_fn(self.model(images), targets, self.labelled[index]), len(index))


def fit(
    samples: list[SegSample], recipe: SpineSegRecipe, log: Callable[[str], None], work_dir: Path
) -> torch.nn.Module:
    """Train a new segmenter on ``samples`` (AdamW, one-cycle learning rate).

    Every epoch ends with ``work_dir/last.pt`` (written atomically); a killed run called again with
    the same recipe and samples resumes after its last finished epoch
    (:class:`~spinedx.training.loop.EpochLoop`).
    """
    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    model = build_spine_segmenter(recipe.channels, recipe.num_res_units)
    hooks = _SegmenterHooks(samples, recipe, model, log)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, recipe.lr, total_steps=hooks.steps * recipe.epochs
    )
    identity = {"recipe": recipe.model_dump(mode="json"), "images": [sample.image_id for sample in samples]}
    loop = EpochLoop(model, optimizer, recipe.epochs, Path(work_dir), identity, scheduler=schedule,
                     log_every=10, log=log)  # fmt: skip
    loop.run(hooks)
    return model


def _settings(recipe: SpineSegRecipe) -> dict:
    return {
        "channels": list(recipe.channels),
        "num_res_units": recipe.num_res_units,
        "input_size": recipe.image_size,
    }


def _synthetic(recipe: SpineSegRecipe, folder: Path, n_patients: int, seed: int) -> list[SegSample]:
    from spinedx.synth.mri import generate_mri_dataset

    if n_patients == 0:
        return []
    if not (folder / "masks" / "labels.json").is_file():
        size = recipe.synthetic_size
        # The synthetic field of view must cover 240 mm; small images get larger pixels.
        generate_mri_dataset(
            folder,
            n_patients=n_patients,
            seed=seed,
            image_size=(size, size),
            pixel_spacing_mm=max(0.9, 240 / size),
        )
    return load_seg_source(folder)


def real_samples(recipe: SpineSegRecipe) -> list[SegSample]:
    return [s for root in recipe.sources for s in load_seg_source(root, limit=recipe.source_limit)]


# --------------------------------------------------------------------------- runs


def cross_validate(recipe: SpineSegRecipe, run_dir: Path, log: Callable[[str], None] = print,
                   only_folds: Sequence[int] | None = None) -> dict:  # fmt: skip
    """Per-fold models on the real images; metrics of the held-out images (``cv/metrics.json``).

    ``only_folds``: train and score just these folds (quick comparisons of recipes)."""
    from spinedx.tasks.spine_seg.evaluate import score_and_report

    run_dir = Path(run_dir)
    samples = real_samples(recipe)
    synthetic = _synthetic(recipe, run_dir / "synth-train", recipe.synthetic_patients, recipe.seed + 1)
    folds = patient_folds(samples, recipe.folds, recipe.seed)

    def train_fold(fold: Fold) -> dict:
        train = [samples[i] for i in fold.train] + synthetic
        log(f"fold {fold.index}: training on {len(train)} images ({len(synthetic)} synthetic)")
        model = fit(train, recipe, lambda line: log(f"fold {fold.index}: {line}"), fold.dir)
        save_segmenter(fold.dir / WEIGHTS_NAME, model, _settings(recipe), {"fold": fold.index})
        return {"n_synthetic": len(synthetic)}

    identity = {"recipe": recipe.model_dump(mode="json"), "synthetic": [s.image_id for s in synthetic]}
    runs = run_folds(folds, [s.group for s in samples], [s.image_id for s in samples], run_dir / "cv",
                     train_fold, n_folds=recipe.folds, identity=identity, only=only_folds)  # fmt: skip
    predictions: list[np.ndarray | None] = [None] * len(samples)
    for run in runs:
        # The network as trained (its last checkpoint, full precision), whether trained now or before.
        model = build_spine_segmenter(recipe.channels, recipe.num_res_units)
        model.load_state_dict(trained_weights(run.fold.dir))
        model.eval()
        for i in run.fold.test:
            predictions[i] = segment_pixels(model, samples[i].pixels, recipe.image_size)
    scored = [i for i, p in enumerate(predictions) if p is not None]
    outcome = score_and_report([samples[i] for i in scored], [predictions[i] for i in scored], run_dir / "cv",
                               recipe.bootstrap_resamples,
                               title="cross-validation (held-out patients)")  # fmt: skip
    return outcome.metrics


def train_final(recipe: SpineSegRecipe, run_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The deployable model on all images, then its score on new synthetic patients."""
    from spinedx.tasks.spine_seg.evaluate import score_and_report

    run_dir = Path(run_dir)
    weights = run_dir / WEIGHTS_NAME
    synthetic = _synthetic(recipe, run_dir / "synth-train", recipe.synthetic_patients, recipe.seed + 1)
    if not weights.is_file():
        model = fit(
            real_samples(recipe) + synthetic, recipe, lambda line: log(f"final: {line}"), run_dir / "final"
        )
        save_segmenter(weights, model, _settings(recipe), {"recipe": recipe.model_dump(mode="json")})
    test = _synthetic(recipe, run_dir / "synth-test", recipe.synthetic_test_patients, recipe.seed + 1000)
    if test:
        from spinedx.tasks.spine_seg.network import load_segmenter

        model, _ = load_segmenter(weights)
        predictions = [segment_pixels(model, s.pixels, recipe.image_size) for s in test]
        score_and_report(test, predictions, run_dir / "synthetic_test", recipe.bootstrap_resamples,
                         title="final model on new synthetic patients")  # fmt: skip
    return weights


def train_spine_seg(
    recipe: SpineSegRecipe, run_dir: Path, *, register_into: Path | None = None
) -> dict[str, Path]:
    """Cross-validate (when there are real sources), train the final model, optionally bundle it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.json", json.dumps(recipe.model_dump(mode="json"), indent=2))
    paths: dict[str, Path] = {}
    if recipe.sources:
        cross_validate(recipe, run_dir)
        paths["cv_metrics"] = run_dir / "cv" / "metrics.json"
    paths[REGISTRY_NAME] = train_final(recipe, run_dir)
    if register_into is not None:
        bundle_model(
            REGISTRY_NAME, paths[REGISTRY_NAME], recipe.version, Path(register_into), compile_segmenter
        )
    return paths
