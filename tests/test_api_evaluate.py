"""`spinedx evaluate RUN` / api.evaluate score a run folder of any task through the task registry."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spinedx import api
from spinedx.cli import app
from spinedx.errors import InputError
from spinedx.tasks.disc_grading.config import GraderConfig
from spinedx.tasks.disc_localization.config import LocalizerConfig
from spinedx.tasks.mri_discs.config import MriDiscsRecipe
from spinedx.tasks.mri_discs.train import train_mri_discs


@pytest.fixture(scope="module")
def tiny_spider(tmp_path_factory) -> Path:
    from spinedx.synth.mri import generate_mri_dataset

    return generate_mri_dataset(
        tmp_path_factory.mktemp("spider"), n_patients=4, seed=3, image_size=(128, 128), pixel_spacing_mm=2.0
    )


@pytest.fixture(scope="module")
def seg_run(tiny_spider, tmp_path_factory) -> Path:
    """A spine-seg run cross-validated on the synthetic folder as its one real source."""
    folder = tmp_path_factory.mktemp("seg")
    recipe = folder / "seg.yaml"
    recipe.write_text(
        f"task: spine-seg\nname: tiny\nsources: [{tiny_spider}]\nsynthetic_patients: 0\n"
        "synthetic_test_patients: 0\nimage_size: 64\nchannels: [8, 16, 32]\nepochs: 1\nfolds: 2\n"
        "batch_size: 4\nthreads: 1\nbootstrap_resamples: 20\n"
    )
    api.train(recipe, folder / "run")
    return folder / "run"


def test_spine_seg_run_gives_its_cross_validation_or_scores_a_folder(seg_run, tiny_spider, tmp_path):
    cv = api.evaluate(seg_run)
    assert cv.metrics_path == seg_run / "cv" / "metrics.json"
    assert cv.metrics["title"].startswith("cross-validation") and cv.metrics["n_patients"] == 4
    scored = api.evaluate(seg_run, data=tiny_spider, out_dir=tmp_path / "scored", n_resamples=10)
    assert scored.metrics_path == tmp_path / "scored" / "metrics.json" and scored.report_path.is_file()
    assert set(scored.metrics["classes"]) >= {"vertebra", "disc"}
    with pytest.raises(InputError, match="--images"):
        api.evaluate(seg_run, data=tiny_spider, images=tiny_spider / "images")


def test_cli_evaluate_prints_where_the_figures_are(seg_run):
    result = CliRunner().invoke(app, ["evaluate", str(seg_run)])
    assert result.exit_code == 0, result.output
    assert f"metrics: {seg_run / 'cv' / 'metrics.json'}" in result.output


def test_canal_stenosis_run_gives_its_out_of_fold_figures(tmp_path):
    run = tmp_path / "run"
    (run / "cv").mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({"task": "canal-stenosis", "folds": 2}))
    figures = {
        "n_discs": 10,
        "model": {"auroc": {"estimate": 0.7}},
        "level_prior": {"auroc": {"estimate": 0.6}},
    }
    (run / "cv" / "metrics.json").write_text(json.dumps(figures))
    outcome = api.evaluate(run)
    assert outcome.metrics == figures and outcome.report_path is None
    with pytest.raises(InputError, match="evaluate-discs"):
        api.evaluate(run, data=tmp_path)


def test_mri_discs_run_is_scored_end_to_end_with_its_fold_models(tiny_spider, tmp_path):
    torch.set_num_threads(1)
    recipe = MriDiscsRecipe(
        name="tiny",
        version="test",
        localizer=LocalizerConfig(data_root=tiny_spider, image_size=64, channels=(8, 16, 32), epochs=1,
                                  batch_size=4, folds=2, threads=1, bootstrap_resamples=10),
        grader=GraderConfig(data_root=tiny_spider, crop_size=40, epochs=1, folds=2, batch_size=16,
                            pretrained="none", hidden=16, freeze_blocks=0, bootstrap_resamples=10, threads=1),
    )  # fmt: skip
    run = tmp_path / "run"
    train_mri_discs(recipe, run)
    outcome = api.evaluate(run, n_resamples=10)  # the data folder comes from the recorded recipe
    assert outcome.metrics_path == run / "evaluation" / "metrics.json" and outcome.report_path.is_file()
    assert "fold models" in outcome.metrics["models"]
    assert outcome.metrics["localisation"]["n_series"] == 8


def test_a_folder_without_a_recorded_recipe_is_read_as_a_radiograph_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "spinedx", "evaluate", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'best.pt'}: checkpoint file not found"]
