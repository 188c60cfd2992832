"""The Python API behind every CLI command, in one place for notebooks and scripts.

>>> from spinedx import api
>>> api.synth_xray("data/synth-xray", n_images=300)
>>> run = api.train("configs/xray_lesions.yaml", "runs/xray", overrides=["train.epochs=5"])
>>> api.evaluate(run).metrics["macro_avg"]["f1"]
>>> api.predict(run, ["image.png"]).records
>>> [result.findings for result in api.analyze(["slice.png"], "out", task="mri-discs")]
>>> api.evaluate_discs("../shared/data/spider-sagittal", "runs/eval", cv_run="runs/spider_discs").metrics
"""

from __future__ import annotations

from pathlib import Path

from spinedx.data.check import DatasetReport, check_dataset
from spinedx.evaluation.disc_study import DiscEvaluation
from spinedx.evaluation.disc_study import evaluate_discs as _evaluate_discs
from spinedx.evaluation.run_evaluation import EvaluationOutcome, evaluate_run
from spinedx.inference.predict import Predictions, predict_images
from spinedx.inference.roi_classifier import TrainedClassifier
from spinedx.io.vindr import read_vindr_csv
from spinedx.pipelines.analyze import AnalyzedInput, analyze_inputs
from spinedx.synth.mri import generate_mri_dataset
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


def synth_mri(out_dir: str | Path, n_patients: int = 40, seed: int = 42, image_size: int = 384) -> Path:
    """Synthetic sagittal lumbar MRI in the spider-sagittal layout (with masks); returns the folder."""
    return generate_mri_dataset(
        Path(out_dir), n_patients=n_patients, seed=seed, image_size=(image_size, image_size)
    )


def analyze(inputs: list[str | Path], out_dir: str | Path, task: str | None = None) -> list[AnalyzedInput]:
    """Findings per input with the bundled models (files as ``spinedx analyze`` writes them);
    an input that fails has ``error`` set and the others go on."""
    return list(analyze_inputs([Path(p) for p in inputs], Path(out_dir), task))


def evaluate_discs(data: str | Path, out_dir: str | Path, cv_run: str | Path | None = None,
                   n_resamples: int = 1000) -> DiscEvaluation:  # fmt: skip
    """End-to-end disc evaluation against a spider-layout folder (bundled models, or the fold
    models of ``cv_run`` for out-of-fold figures)."""
    return _evaluate_discs(Path(data), Path(out_dir), n_resamples=n_resamples,
                           cv_run=Path(cv_run) if cv_run else None)  # fmt: skip
