"""Train and cross-validate the input check (:mod:`spinedx.tasks.input_check.network`).

Examples come from image folders (every PNG/JPEG below a folder named ``images``):

* ``sagittal_spine_mr``: the slices of the ``positives`` folders (spider-sagittal, mri-seg-small,
  spider-vertebra-masks) and synthetic slices from :mod:`spinedx.synth.mri`, as stored;
* ``reoriented_spine_mr``: the same slices turned by ``reorientations`` (default: rotated by
  90/180/270 degrees; mirrored slices are available but measured to be often confused with the
  originals, which would put a false warning on correct slices);
* ``other``: the ``negatives`` folders (spine radiographs), synthetic lateral radiographs from
  :mod:`spinedx.synth.xray` and procedural images (noise, gradients, shapes).

Every image is read as ``spinedx analyze`` reads it (:func:`spinedx.io.volumes.read_sagittal`).
Cross-validation groups by source and patient (file-name prefix), so a slice and its rotations,
or two slices of one patient, never straddle folds. The final head is fitted on everything.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, roc_auc_score

from spinedx.data.folds import patient_folds
from spinedx.errors import InputError
from spinedx.io.atomic import atomic_write_text
from spinedx.io.volumes import read_sagittal
from spinedx.models.model_file import save_model_file
from spinedx.tasks.input_check.config import InputCheckConfig
from spinedx.tasks.input_check.model import FORMAT
from spinedx.tasks.input_check.network import INPUT_CLASSES, InputCheckHead, SliceFeatures, resize_slices

WEIGHTS_NAME = "input_check.pt"
SAGITTAL, REORIENTED, OTHER = range(3)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
REORIENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rot90": lambda pixels: np.rot90(pixels, 1),
    "rot180": lambda pixels: np.rot90(pixels, 2),
    "rot270": lambda pixels: np.rot90(pixels, 3),
    "mirror_left_right": lambda pixels: pixels[:, ::-1],
    "mirror_up_down": lambda pixels: pixels[::-1],
}


def _image_files(root: Path, limit: int | None) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"{root}: input-check source folder not found")
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.parent.name == "images"
    )
    if not files:
        raise InputError(f"{root}: no PNG/JPEG files in an images/ folder")
    return files[:limit] if limit else files


def _patient(path: Path) -> str:
    """Patient part of a file name: '101_t2' -> '101', '10009_7' -> '10009', '11_jpg.rf.ab' -> '11'."""
    return path.stem.split("_")[0].split(".")[0]


def _procedural(n: int, seed: int, size: int = 256) -> Iterator[np.ndarray]:
    """Images no scanner makes: smoothed noise, gradients, random shapes."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        kind = i % 3
        if kind == 0:
            image = ndimage.gaussian_filter(rng.random((size, size)), sigma=rng.uniform(0, 6))
        elif kind == 1:
            angle = rng.uniform(0, 2 * np.pi)
            image = np.cos(angle) * cols + np.sin(angle) * rows + 0.05 * rng.standard_normal((size, size))
        else:
            image = np.zeros((size, size))
            for _ in range(rng.integers(3, 15)):
                cy, cx, ry, rx = rng.uniform(0, 1, 2).tolist() + rng.uniform(0.03, 0.25, 2).tolist()
                image[((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1] = rng.uniform(0.2, 1)
            image = ndimage.gaussian_filter(image, 1.0) + 0.05 * rng.standard_normal((size, size))
        low, high = image.min(), image.max()
        yield ((image - low) / (high - low + 1e-9)).astype(np.float32)


def _examples(config: InputCheckConfig, work: Path) -> Iterator[tuple[np.ndarray, int, str, str]]:
    """(pixels, class, group, variant) for every training example."""
    from spinedx.synth.mri import generate_mri_dataset
    from spinedx.synth.xray import generate_xray_dataset

    positives = [(root, str(root)) for root in config.positives]
    negatives = [(root, str(root)) for root in config.negatives]
    if config.synthetic_mri_patients:
        root = generate_mri_dataset(
            work / "synth-mri", n_patients=config.synthetic_mri_patients, seed=config.seed
        )
        positives.append((root, "synthetic mri"))
    if config.synthetic_xray_images:
        generate_xray_dataset(
            work / "synth-xray", n_images=config.synthetic_xray_images, seed=config.seed, image_size=384
        )
        negatives.append((work / "synth-xray", "synthetic xray"))
    for (root, source), label in [*((p, SAGITTAL) for p in positives), *((n, OTHER) for n in negatives)]:
        for path in _image_files(Path(root), config.max_per_folder):
            pixels = read_sagittal(path).pixels
            group = f"{source}:{_patient(path)}"
            yield pixels, label, group, "as stored"
            if label == SAGITTAL:
                for name in config.reorientations:
                    yield np.ascontiguousarray(REORIENTATIONS[name](pixels)), REORIENTED, group, name
    for i, pixels in enumerate(_procedural(config.procedural_images, config.seed)):
        yield pixels, OTHER, f"procedural:{i}", "as stored"


def _features(config: InputCheckConfig, work: Path, batch_size: int = 32) -> tuple[np.ndarray, pd.DataFrame]:
    network = SliceFeatures(config.image_size)
    features, rows, batch = [], [], []
    for pixels, label, group, variant in _examples(config, work):
        batch.append(pixels)
        rows.append({"label": label, "group": group, "variant": variant, "source": group.rsplit(":", 1)[0]})
        if len(batch) == batch_size:
            features.append(network(resize_slices(batch, config.image_size)).numpy())
            batch = []
    if batch:
        features.append(network(resize_slices(batch, config.image_size)).numpy())
    return np.concatenate(features), pd.DataFrame(rows)


def _balanced_weights(table: pd.DataFrame) -> np.ndarray:
    """Every class, and within it every source, weighs the same in total (a small source of hard
    examples, like synthetic lateral radiographs, is not drowned by a large one)."""
    per_source = table.groupby(["label", "source"])["label"].transform("size").to_numpy(dtype=float)
    sources_in_class = table.groupby("label")["source"].transform("nunique").to_numpy(dtype=float)
    weights = 1.0 / (per_source * sources_in_class)
    return weights * len(table) / weights.sum()


def _fit(features: np.ndarray, table: pd.DataFrame, config: InputCheckConfig) -> InputCheckHead:
    mean, scale = features.mean(0), features.std(0) + 1e-6
    model = LogisticRegression(C=config.regularisation, max_iter=3000)
    model.fit((features - mean) / scale, table["label"].to_numpy(), sample_weight=_balanced_weights(table))
    head = InputCheckHead(features.shape[1])
    with torch.no_grad():
        head.feature_mean.copy_(torch.from_numpy(mean))
        head.feature_scale.copy_(torch.from_numpy(scale))
        head.linear.weight.copy_(torch.from_numpy(model.coef_))
        head.linear.bias.copy_(torch.from_numpy(model.intercept_))
    return head.eval()


def _probabilities(head: InputCheckHead, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head(torch.from_numpy(features).float()), 1).numpy()


def _cv_metrics(table: pd.DataFrame, probabilities: np.ndarray, refuse_threshold: float) -> dict:
    labels = table["label"].to_numpy()
    predicted = probabilities.argmax(1)
    is_sagittal = (labels == SAGITTAL).astype(int)
    refused = probabilities[:, OTHER] >= refuse_threshold
    by_variant = (
        table.assign(correct=predicted == labels, refused=refused)
        .groupby(["source", "variant"])
        .agg(n=("correct", "size"), accuracy=("correct", "mean"), refused=("refused", "mean"))
        .reset_index()
    )
    return {
        "n_images": len(table),
        "n_groups": int(table["group"].nunique()),
        "accuracy": float((predicted == labels).mean()),
        "recall_per_class": {
            name: float((predicted[labels == k] == k).mean())
            for k, name in enumerate(INPUT_CLASSES)
            if (labels == k).any()
        },
        "auroc_sagittal_vs_rest": float(roc_auc_score(is_sagittal, probabilities[:, SAGITTAL])),
        "confusion_matrix": confusion_matrix(
            labels, predicted, labels=list(range(len(INPUT_CLASSES)))
        ).tolist(),
        "refuse_threshold": refuse_threshold,
        "sagittal_refused": float(refused[labels == SAGITTAL].mean()),
        "other_refused": float(refused[labels == OTHER].mean()),
        "by_source_and_variant": by_variant.to_dict(orient="records"),
    }


def train_input_check(config: InputCheckConfig, out_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Group K-fold CV (``cv_metrics.json``), then the final head on all examples (``input_check.pt``)."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        features, table = _features(config, Path(work))
    log(f"input check: features of {len(table)} images in {time.perf_counter() - began:.0f} s")
    labels = table["label"].to_numpy()
    assigned = patient_folds(table["group"], config.folds, config.seed, strata=labels, what="input check CV")
    out_of_fold = np.zeros((len(table), len(INPUT_CLASSES)))
    for k in range(config.folds):
        train, test = np.flatnonzero(assigned != k), np.flatnonzero(assigned == k)
        head = _fit(features[train], table.iloc[train], config)
        out_of_fold[test] = _probabilities(head, features[test])
    metrics = {
        "config": config.model_dump(mode="json"),
        **_cv_metrics(table, out_of_fold, config.refuse_threshold),
    }
    atomic_write_text(out_dir / "cv_metrics.json", json.dumps(metrics, indent=1) + "\n")
    log(
        f"input check CV: accuracy {metrics['accuracy']:.3f}, AUROC sagittal vs rest "
        f"{metrics['auroc_sagittal_vs_rest']:.3f}, sagittal refused {metrics['sagittal_refused']:.3f}, "
        f"other refused {metrics['other_refused']:.3f}"
    )
    head = _fit(features, table, config)
    path = out_dir / WEIGHTS_NAME
    save_model_file(
        path,
        {
            "format": FORMAT,
            "classes": list(INPUT_CLASSES),
            "image_size": config.image_size,
            "refuse_threshold": config.refuse_threshold,
            "head": {k: v.detach().clone() for k, v in head.state_dict().items()},
            "meta": {key: metrics[key] for key in ("n_images", "n_groups", "accuracy", "recall_per_class",
                                                   "auroc_sagittal_vs_rest", "sagittal_refused", "other_refused")},
        },
    )  # fmt: skip
    return path
