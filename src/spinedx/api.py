"""The Python API behind every CLI command, in one place for notebooks and scripts.

>>> from spinedx import api
>>> api.synth_xray("data/synth-xray", n_images=300)
>>> run = api.train("configs/xray_lesions.yaml", "runs/xray", overrides=["train.epochs=5"])
>>> api.evaluate(run).metrics["macro_avg"]["f1"]
>>> api.predict(run, ["image.png"]).records
"""

from __future__ import annotations

from pathlib import Path

from spinedx.data.check import DatasetReport, check_dataset
from spinedx.evaluation.run_evaluation import EvaluationOutcome, evaluate_run
from spinedx.inference.predict import Predictions, predict_images
from spinedx.inference.roi_classifier import TrainedClassifier
from spinedx.io.vindr import read_vindr_csv
from spinedx.synth.xray import generate_xray_dataset
from spinedx.training.config import load_config
from spinedx.training.experiment import train_experiment


def synth_xray(out_dir: str | Path, n_images: int = 300, seed: int = 42, image_size: int = 512) -> Path:
    """Synthetic radiographs; returns the annotation CSV."""
    return generate_xray_dataset(Path(out_dir), n_images=n_images, seed=seed, image_size=image_size)


def check(csv: str | Path, images: str | Path) -> DatasetReport:
    return check_dataset(csv, images)


def train(config: str | Path, run_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Train (or resume) a recipe; returns the run folder."""
    return train_experiment(load_config(Path(config), overrides), Path(run_dir)).run_dir


def evaluate(run_dir: str | Path, csv: str | Path | None = None, images: str | Path | None = None,
             n_resamples: int = 1000) -> EvaluationOutcome:  # fmt: skip
    return evaluate_run(
        Path(run_dir),
        csv=Path(csv) if csv else None,
        images=Path(images) if images else None,
        n_resamples=n_resamples,
    )


def predict(
    run_dir: str | Path, images: list[str | Path], boxes_csv: str | Path | None = None
) -> Predictions:
    boxes = read_vindr_csv(boxes_csv) if boxes_csv else None
    return predict_images(TrainedClassifier.load(Path(run_dir)), [Path(p) for p in images], boxes)
