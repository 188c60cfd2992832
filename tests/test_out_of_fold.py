"""End-to-end cross-validation: a tiny `spider_discs` run scored by `evaluate-discs --cv-run`."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import InputError
from spinedx.pipelines.mri_discs.out_of_fold import FINAL, OutOfFoldModels
from spinedx.tasks.disc_grading.model import DiscGrader
from spinedx.tasks.disc_grading.train import GraderConfig
from spinedx.tasks.disc_localization.train import LocalizerConfig
from spinedx.tasks.input_check.train import InputCheckConfig
from spinedx.tasks.mri_discs.train import MriDiscsRecipe, train_mri_discs


@pytest.fixture(scope="module")
def tiny_cv_run(tmp_path_factory) -> tuple[Path, Path]:
    from spinedx.synth.mri import generate_mri_dataset

    torch.set_num_threads(1)
    root = generate_mri_dataset(
        tmp_path_factory.mktemp("mri"), n_patients=6, seed=7, image_size=(128, 128), pixel_spacing_mm=2.0
    )
    recipe = MriDiscsRecipe(
        name="tiny",
        version="test",
        localizer=LocalizerConfig(
            data_root=root, image_size=64, channels=(8, 16, 32), epochs=2, batch_size=4, folds=2,
            threads=1, bootstrap_resamples=20,
        ),
        grader=GraderConfig(
            data_root=root, crop_size=40, epochs=1, folds=2, batch_size=16, pretrained="none", hidden=16,
            freeze_blocks=0, bootstrap_resamples=20, threads=1,
        ),
        input_check=InputCheckConfig(
            positives=[root], negatives=[], synthetic_mri_patients=0, synthetic_xray_images=0,
            procedural_images=8, max_per_folder=8, image_size=64, folds=2,
        ),
    )  # fmt: skip
    run = tmp_path_factory.mktemp("run")
    trained = train_mri_discs(recipe, run)
    assert set(trained) == {"disc_localizer", "disc_grader", "input_check"}
    assert all(path.is_file() for path in trained.values())
    # The grader learned from the boxes of the localiser the run trained, not the bundled one.
    grader_config = DiscGrader.load(trained["disc_grader"]).meta["config"]
    assert grader_config["localizer"] == str(trained["disc_localizer"])
    return root, run


def test_each_patient_gets_the_folds_that_held_it_out(tiny_cv_run):
    root, run = tiny_cv_run
    models = OutOfFoldModels(run)
    stages = (
        ("localizer_cv", "disc_localizer.pt", "result.json"),
        ("grader_cv", "disc_grader.pt", "fold.json"),
    )
    for position, (stage, weights_name, info_name) in enumerate(stages):
        for fold_dir in sorted((run / stage).glob("fold_*")):
            assert (fold_dir / weights_name).is_file()
            for patient in json.loads((fold_dir / info_name).read_text())["test_patients"]:
                assert models.folds_of(str(patient))[position] == fold_dir.name
    assert models.folds_of("not-in-the-run") == (FINAL, FINAL)
    pipeline = models.pipeline_for("not-in-the-run")
    assert pipeline.grader is models.pipeline_for("still-not-in-the-run").grader  # loaded once


def test_evaluate_discs_cv_run_scores_every_series_out_of_fold(tiny_cv_run, tmp_path):
    root, run = tiny_cv_run
    result = CliRunner().invoke(
        app,
        ["evaluate-discs", "--data", str(root), "--cv-run", str(run), "--out", str(tmp_path / "e"),
         "--bootstrap", "20"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["models"].startswith("out-of-fold models of")
    assert metrics["localisation"]["n_series"] == 12
    assert metrics["model"]["version"].endswith("+cv." + run.name)
    report = (tmp_path / "e" / "report.html").read_text()
    assert "ROC curves per finding" in report and "Calibration: observed frequency" in report


def test_a_run_without_fold_models_is_refused(tiny_cv_run, tmp_path):
    _, run = tiny_cv_run
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "grader_cv" / "fold_1" / "disc_grader.pt").unlink()
    with pytest.raises(InputError, match="fold_1: missing"):
        OutOfFoldModels(broken)
    with pytest.raises(InputError, match="no fold_k"):
        OutOfFoldModels(tmp_path)
